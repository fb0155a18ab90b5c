"""The host's content-addressed artifact store."""

from fruix_dagster.store.store import ArtifactStore, StoredTree

__all__ = ["ArtifactStore", "StoredTree"]
