"""A session with one configured guest: open its transport, close it once.

This is where the guest kinds meet: ``local`` runs here, ``ssh`` connects to
a running guest, ``xcpng`` boots the VM first and applies its after-run policy
when the session closes.  Plain Python; the Dagster resource holds one session
per target for the length of a run.
"""

from __future__ import annotations

from typing import Callable

from fruix_dagster.errors import ConfigError
from fruix_dagster.fruix.devenv import DevEnvReport, require_development_environment
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.guest.ssh import SshTransport
from fruix_dagster.guest.transport import Transport
from fruix_dagster.settings import Guest, Settings

Log = Callable[[str], None]


class GuestSession:
    """One guest, opened lazily, closed once."""

    def __init__(self, settings: Settings, guest: Guest, log: Log | None = None):
        self.settings = settings
        self.guest = guest
        self.log: Log = log or (lambda _m: None)
        self._transport: Transport | None = None
        self._devenv: DevEnvReport | None = None
        #: facts worth recording in metadata (address, VM uuid, …)
        self.facts: dict[str, str] = {}

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = self._open()
        return self._transport

    @property
    def steps(self) -> DetachedSteps:
        return DetachedSteps(self.transport, self.settings.build.build_root)

    def _open(self) -> Transport:
        kind = self.guest.kind
        if kind == "local":
            self.facts["guest_address"] = "local"
            return LocalTransport()
        if kind == "ssh":
            return self._ssh(self.guest.host)
        raise ConfigError(
            f"{self.settings.source_file}: guest {self.guest.name!r}: kind {kind!r} "
            f"is not supported by this version of fruix_dagster; use kind = \"local\"")

    def _ssh(self, host: str | None) -> SshTransport:
        g = self.guest
        assert host is not None and g.known_hosts is not None
        self.facts["guest_address"] = f"{host}:{g.port or 22}"
        transport = SshTransport(
            host=host, port=g.port or 22, user=g.user or "root", known_hosts=g.known_hosts,
            private_key=g.private_key, passphrase_env=g.passphrase_env, password_env=g.password_env,
            connect_timeout=g.connect_timeout, keepalive=g.keepalive, io_timeout=g.io_timeout,
            retries=self.settings.build.retries,
            on_reconnect=lambda n: self.log(f"reconnected to {transport.description} (#{n})"))
        transport.connect()
        return transport

    def require_devenv(self) -> DevEnvReport:
        """Check the guest once per session; raise naming every missing piece."""
        if self._devenv is None:
            b = self.settings.build
            self._devenv = require_development_environment(
                self.transport, system=self.guest.system, build_root=b.build_root,
                min_free_gib=b.min_free_gib, make=b.make)
        return self._devenv

    def close(self, failed: bool = False) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
