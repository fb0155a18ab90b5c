"""A session with one configured guest: open its transport, close it once.

This is where the guest kinds meet: ``local`` runs here, ``ssh`` connects to
a running guest, ``xcpng`` boots the VM first and applies its after-run policy
when the session closes.  Plain Python; the Dagster resource holds one session
per target for the length of a run.

``xcpng``: the first use of :attr:`GuestSession.transport` logs in to the pool
(:class:`~fruix_dagster.hypervisor.XapiClient`), finds the VM, reverts it to
``revert_to`` if set, brings it up and waits for its address and SSH port
(:class:`~fruix_dagster.hypervisor.BuildVM`), then connects over SSH exactly
like an ``ssh`` guest.  That happens at most once per session: a failed boot
is remembered and raised again, never retried behind the operator's back.
:meth:`GuestSession.close` applies the after-run policy once — on success and
on failure alike, also when the boot itself failed after the VM was found —
then logs out.  ``facts`` records ``vm_uuid``, ``vm_name_label`` and
``guest_address``.
"""

from __future__ import annotations

import threading
from typing import Callable

from fruix_dagster.errors import ConfigError, FruixError
from fruix_dagster.fruix.devenv import DevEnvReport, needs_root, require_development_environment
from fruix_dagster.guest import buildroot_gc
from fruix_dagster.guest.buildroot_gc import Removal
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.guest.srcsync import build_path_for
from fruix_dagster.guest.ssh import SshTransport
from fruix_dagster.guest.transport import Transport
from fruix_dagster.hypervisor import BuildVM, XapiClient
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
        self._lock = threading.RLock()
        #: xcpng: the pool client and the VM (None for local/ssh, or before the first use)
        self.xapi: XapiClient | None = None
        self.vm: BuildVM | None = None
        self._open_error: Exception | None = None
        self._closed_vm = False

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            with self._lock:
                if self._transport is None:
                    if self._open_error is not None:
                        raise self._open_error
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
        if kind == "xcpng":
            try:
                return self._xcpng()
            except Exception as exc:
                self._open_error = exc  # one boot per session: never boot again behind the error
                raise
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

    def _where(self) -> str:
        return f"{self.settings.source_file}: guest {self.guest.name!r}"

    def _xcpng(self) -> SshTransport:
        g = self.guest
        xs = g.xcpng
        if xs is None:
            raise ConfigError(f"{self._where()}: kind 'xcpng' needs an xcpng = {{ url = …, "
                              f"password_env = …, vm_uuid = … }} table, found none")
        self.xapi = XapiClient.from_settings(xs, log=self.log, where=self._where())
        self.vm = BuildVM(self.xapi, xs, guest_name=g.name, source_file=self.settings.source_file,
                          log=self.log)
        self.vm.find()
        self.facts["vm_uuid"] = self.vm.uuid or ""
        self.facts["vm_name_label"] = self.vm.name_label or ""
        address = self.vm.prepare(g.host, g.port or 22, ssh_timeout=min(g.connect_timeout, 5.0))
        return self._ssh(address)

    def _poweroff_over_ssh(self) -> None:
        """``shutdown -p now`` on the guest, on a fresh connection that is never retried."""
        g = self.guest
        address = self.vm.address if self.vm is not None else None
        if not address or g.known_hosts is None:
            raise ConfigError(f"{self._where()}: no address known to reach the guest over SSH")
        t = SshTransport(
            host=address, port=g.port or 22, user=g.user or "root", known_hosts=g.known_hosts,
            private_key=g.private_key, passphrase_env=g.passphrase_env, password_env=g.password_env,
            connect_timeout=min(g.connect_timeout, 10.0), keepalive=0, io_timeout=15.0, retries=0)
        try:
            t.connect()
            res = t.run(["shutdown", "-p", "now"], timeout=15.0)
            if not res.ok:
                self.log(f"`shutdown -p now` on {t.description} exited {res.status}: "
                         f"{res.stderr.decode(errors='replace').strip()[:200]}")
        except FruixError as exc:
            # the guest dropping the connection while it powers off is the expected outcome
            self.log(f"`shutdown -p now` on {t.description}: {exc}")
        finally:
            t.close()

    def require_devenv(self) -> DevEnvReport:
        """Check the guest once per session; raise naming every missing piece."""
        if self._devenv is None:
            b = self.settings.build
            self._devenv = require_development_environment(
                self.transport, system=self.guest.system, build_root=b.build_root,
                min_free_gib=b.min_free_gib, make=b.make, need_root=needs_root(b),
                meta_mode=b.build_conf().meta_mode)
        return self._devenv

    def gc_build_root(self, dry_run: bool = False) -> list[Removal]:
        """Remove what no current target of this guest needs from the build root."""
        s, b = self.settings, self.settings.build
        path = build_path_for(s.source.from_, s.source.path, b.build_root)
        mine = [t for t in (s.target(n) for n in s.target_names) if s.guest_for(t.name).name == self.guest.name]
        keep = [(path, f"{t.target}.{t.target_arch}") for t in mine]
        return buildroot_gc.collect(self.transport, b.build_root, keep, b.keep_steps,
                                    targets=[t.name for t in mine], dry_run=dry_run)

    def close(self, failed: bool = False) -> None:
        """Close the transport; for ``xcpng`` apply the after-run policy (once) and log out.

        ``failed`` only changes what is logged: the policy is the same after a
        failed run.  A policy that cannot be applied raises HypervisorError
        after the transport is closed and the XAPI sessions are logged out; a
        transport that fails to close does not skip the policy (with both
        failing, one FruixError names both).
        """
        with self._lock:
            errors: list[BaseException] = []
            if self._transport is not None:
                transport, self._transport = self._transport, None
                try:
                    transport.close()
                except Exception as exc:  # noqa: BLE001 - the after-run policy must still run
                    errors.append(exc)
                    self.log(f"closing {transport.description} failed: {exc}")
            try:
                if self.vm is not None and not self._closed_vm:
                    self._closed_vm = True
                    if self.vm.ref is not None:
                        poweroff = self._poweroff_over_ssh if self.vm.address else None
                        self.vm.apply_after(poweroff, failed=failed or self._open_error is not None)
            except BaseException as exc:  # noqa: BLE001 - re-raised after the logout below
                errors.append(exc)
                if isinstance(exc, FruixError):
                    self.log(f"xcpng: after-run policy failed: {exc}")
            finally:
                if self.xapi is not None:
                    self.xapi.close()
            interrupt = next((e for e in errors if not isinstance(e, Exception)), None)
            if interrupt is not None:
                raise interrupt
            if len(errors) == 1:
                raise errors[0]
            if errors:
                raise FruixError(
                    f"{self._where()}: closing the session failed {len(errors)} times: "
                    + "; ".join(str(e).splitlines()[0] if str(e) else type(e).__name__ for e in errors)
                ) from errors[0]
