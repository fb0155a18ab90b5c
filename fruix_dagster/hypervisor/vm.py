"""One build VM on an XCP-ng pool: find it, bring it up, reach it, leave it per policy.

:class:`BuildVM` is the lifecycle of the ``xcpng`` guest kind, on top of
:class:`~fruix_dagster.hypervisor.xapi.XapiClient`:

``find()``
    by ``vm_uuid`` (``UUID_INVALID`` → ConfigError) or by ``vm_name``, which
    must name exactly one VM (templates and snapshots are not VMs here); with
    ``revert_to`` the snapshot is resolved too, so a missing snapshot is a
    configuration error before anything is changed or built.
``prepare(static_host, port)`` → address
    under one deadline of ``boot_timeout`` seconds: optionally revert to
    ``revert_to``; then start a Halted VM (``Async.VM.start``), unpause a
    Paused one, resume a Suspended one, reuse a Running one; then the address
    (the static ``host``, or the first ``N/ip`` / ``N/ipv4/M`` of the guest
    metrics, optionally inside ``address_cidr``) and an SSH banner on the port.
``apply_after(poweroff)``
    the after-run policy, once: ``keep-running``; ``shutdown``
    (``clean_shutdown``; when the VM has no PV drivers / lacks the feature /
    does not finish in time, ``poweroff()`` — the session runs
    ``shutdown -p now`` over SSH — then ``hard_shutdown`` if it is still not
    Halted); ``revert`` (that shutdown, then revert to ``revert_to``).

The power operations and what each XAPI answer leads to live in
:mod:`~fruix_dagster.hypervisor.power`; finding the address and waiting for
SSH in :mod:`~fruix_dagster.hypervisor.address`.

Plain Python; no dagster import.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from fruix_dagster.errors import ConfigError, HypervisorError
from fruix_dagster.hypervisor.address import AddressDiscovery, pick_address, ssh_banner
from fruix_dagster.hypervisor.power import FATAL_CODES, RETRY_CODES, PowerOff, PowerOps
from fruix_dagster.hypervisor.xapi import XapiCallError, XapiClient

__all__ = [
    "AFTER_POLICIES",
    "FATAL_CODES",
    "RETRY_CODES",
    "BuildVM",
    "pick_address",
    "ssh_banner",
]

AFTER_POLICIES = ("keep-running", "shutdown", "revert")

Log = Callable[[str], None]


class BuildVM(PowerOps, AddressDiscovery):
    """One VM's lifecycle for a build (see the module docstring).

    ``xs`` is a :class:`fruix_dagster.settings.XcpngSettings`; ``guest_name``
    and ``source_file`` only make messages point at the right ``[[guest]]``.
    ``shutdown_timeout`` bounds ``clean_shutdown``, the wait after the SSH
    power-off, ``hard_shutdown`` and the after-revert each (default:
    ``boot_timeout`` clamped to 30…300 s).
    """

    def __init__(self, client: XapiClient, xs: Any, *, guest_name: str = "guest",
                 source_file: str = "", log: Log | None = None,
                 shutdown_timeout: float | None = None, retry_first: float = 1.0,
                 poll: float = 1.0) -> None:
        self.client = client
        self.xs = xs
        self.guest_name = guest_name
        self.where = f"{source_file}: guest {guest_name!r}" if source_file else f"guest {guest_name!r}"
        self.log: Log = log or (lambda _m: None)
        self.boot_timeout = float(xs.boot_timeout)
        self.shutdown_timeout = float(shutdown_timeout if shutdown_timeout is not None
                                      else min(300.0, max(30.0, self.boot_timeout)))
        self.retry_first = retry_first
        self.poll = poll
        self.ref: str | None = None
        self.uuid: str | None = None
        self.name_label: str | None = None
        self.snapshot_ref: str | None = None
        self.address: str | None = None
        #: what prepare() did: "started", "resumed", "unpaused" or "reused"
        self.action: str | None = None
        self.after_applied: str | None = None
        #: calls that changed the power state, e.g. ["revert", "start"]
        self.operations: list[str] = []

    # -- naming ------------------------------------------------------------------
    @property
    def label(self) -> str:
        if self.uuid:
            return f"VM {self.name_label!r} ({self.uuid})"
        return f"VM {self.xs.vm_uuid or self.xs.vm_name!r}"

    # -- find --------------------------------------------------------------------
    def find(self) -> str:
        """Resolve the VM (and the ``revert_to`` snapshot); returns the VM's ref."""
        if self.ref is not None:
            return self.ref
        xs = self.xs
        url = self.client.display
        if xs.vm_uuid:
            try:
                ref = self.client.call("VM.get_by_uuid", xs.vm_uuid)
            except XapiCallError as exc:
                if exc.code in ("UUID_INVALID", "HANDLE_INVALID"):
                    raise ConfigError(
                        f"{self.where}: xcpng.vm_uuid: expected a VM with uuid {xs.vm_uuid} on {url}, "
                        f"found none ({exc.code}); check the uuid with `xe vm-list uuid={xs.vm_uuid}` "
                        f"on the pool") from None
                raise
        else:
            refs = list(self.client.call("VM.get_by_name_label", xs.vm_name) or [])
            vms, others = [], []
            for r in refs:
                rec = self._vm_flags(r)
                (others if rec["is_a_template"] or rec["is_a_snapshot"] else vms).append((r, rec["uuid"]))
            if len(vms) != 1:
                if vms:
                    found = f"{len(vms)} VMs (uuids {', '.join(u for _r, u in vms)})"
                    todo = "set xcpng.vm_uuid to the one to build in (or rename the others)"
                else:
                    found = "none" + (f" (only {len(others)} template(s)/snapshot(s) of that name)"
                                      if others else "")
                    todo = "check the name with `xe vm-list name-label=…` or use xcpng.vm_uuid"
                raise ConfigError(
                    f"{self.where}: xcpng.vm_name: expected exactly one VM named {xs.vm_name!r} on {url}, "
                    f"found {found}; {todo}")
            ref = vms[0][0]
        self.ref = ref
        self.uuid = self.client.call("VM.get_uuid", ref)
        self.name_label = self.client.call("VM.get_name_label", ref)
        if xs.revert_to:
            self.snapshot_ref = self._find_snapshot(xs.revert_to)
        return ref

    def _vm_flags(self, ref: str) -> dict[str, Any]:
        return {"uuid": self.client.call("VM.get_uuid", ref),
                "is_a_template": bool(self.client.call("VM.get_is_a_template", ref)),
                "is_a_snapshot": bool(self.client.call("VM.get_is_a_snapshot", ref))}

    def _find_snapshot(self, name: str) -> str:
        assert self.ref is not None
        snaps = list(self.client.call("VM.get_snapshots", self.ref) or [])
        names = {s: self.client.call("VM.get_name_label", s) for s in snaps}
        matches = [s for s, n in names.items() if n == name]
        if len(matches) != 1:
            if matches:
                uuids = ", ".join(self.client.call("VM.get_uuid", s) for s in matches)
                found = f"{len(matches)} snapshots of that name (uuids {uuids}); rename all but one"
            else:
                have = ", ".join(repr(n) for n in sorted(names.values())) or "no snapshots at all"
                found = (f"none (the VM has {have}); take one with "
                         f"`xe vm-snapshot uuid={self.uuid} new-name-label={name}` or fix revert_to")
            raise ConfigError(
                f"{self.where}: xcpng.revert_to: expected exactly one snapshot named {name!r} of "
                f"{self.label}, found {found}")
        return matches[0]

    # -- before the build ----------------------------------------------------------
    def prepare(self, static_host: str | None, port: int, *, ssh_timeout: float = 5.0) -> str:
        """Revert (optional), bring the VM up and wait for SSH; returns the address.

        Everything happens within ``boot_timeout`` seconds from the call.
        """
        deadline = time.monotonic() + self.boot_timeout
        limit = f"boot_timeout = {self.boot_timeout:g} s"
        self.find()
        if self.snapshot_ref is not None:
            self.revert(deadline, limit, before=True)
        self.bring_up(deadline, limit)
        self.address = self.wait_for_address(static_host, port, deadline, ssh_timeout=ssh_timeout)
        return self.address

    # -- after the run -------------------------------------------------------------
    def apply_after(self, poweroff: PowerOff | None = None, *, failed: bool = False) -> str:
        """Apply ``xs.after`` once; returns the VM's final power state (or the policy again)."""
        if self.after_applied is not None:
            return self.after_applied
        policy = self.xs.after
        self.after_applied = policy
        if self.ref is None:
            self.log(f"xcpng: after-run policy {policy!r} not applied: the VM was never found")
            return "unknown"
        why = "after a failed run" if failed else "after the run"
        if policy == "keep-running":
            state = self.power_state()
            self.log(f"xcpng: after-run policy keep-running: leaving {self.label} {state} {why}")
            return state
        if policy not in AFTER_POLICIES:
            raise HypervisorError(f"{self.label}: unknown after-run policy {policy!r}; "
                                  f"expected one of {', '.join(AFTER_POLICIES)}")
        self.log(f"xcpng: after-run policy {policy}: shutting {self.label} down {why}")
        self.shutdown(poweroff)
        if policy == "revert":
            if self.snapshot_ref is None:
                raise HypervisorError(f"{self.label}: after = \"revert\" needs xcpng.revert_to; "
                                      f"the VM was shut down but not reverted")
            deadline = time.monotonic() + self.shutdown_timeout
            self.revert(deadline, f"{self.shutdown_timeout:g} s", before=False)
        state = self.power_state()
        self.log(f"xcpng: after-run policy {policy} applied: {self.label} is {state}")
        return state
