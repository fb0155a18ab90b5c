"""The one exception family of fruix_dagster.

Every message says what was expected, what was found and what to do.  The CLI
prints ``str(error)`` without a traceback for any ``FruixError``.
"""

from __future__ import annotations


class FruixError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(FruixError):
    """The settings file (or a value derived from it) is invalid."""


class GuestError(FruixError):
    """A guest could not be reached or did not behave as a Fruix guest must."""


class TransportError(GuestError):
    """The connection to a guest failed; retrying may help."""


class HostKeyError(GuestError):
    """The guest presented a host key that is not trusted; never retried."""


class FenceError(FruixError):
    """A delete or write was aimed outside the build root and was refused."""


class BuildError(FruixError):
    """A make step failed on the guest.  Build failures are never retried."""

    def __init__(self, message: str, *, exit_status: int | None = None, log_path: str | None = None,
                 triage: object | None = None):
        super().__init__(message)
        self.exit_status = exit_status
        self.log_path = log_path
        #: a fruix_dagster.build.triage.Triage when the log was read
        self.triage = triage


class StepTimeout(BuildError):
    """A make step exceeded its wall-clock limit or went silent for too long."""


class TreeError(FruixError):
    """A staged tree, tar stream or slice spec is malformed or hostile."""


class StoreError(FruixError):
    """The host artifact store refused or failed an operation."""


class SourceError(FruixError):
    """The FreeBSD source store could not be determined from the guest."""


class HypervisorError(FruixError):
    """XenAPI refused or failed an operation."""
