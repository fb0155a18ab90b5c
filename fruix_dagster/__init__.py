"""fruix_dagster: FreeBSD base builds inside Fruix guests as Dagster assets."""

__version__ = "0.1.0"
