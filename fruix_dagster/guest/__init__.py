"""Where commands run: the Transport ABC, its kinds, detached steps, fencing."""

from fruix_dagster.guest.transport import CommandResult, Transport

__all__ = ["CommandResult", "Transport"]
