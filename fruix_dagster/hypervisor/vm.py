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

XAPI answers and what they lead to:

=============================================  =========================================
``HOST_NOT_ENOUGH_FREE_MEMORY``,               retried with backoff (1, 2, 4 … 15 s)
``NO_HOSTS_AVAILABLE``,                        until the deadline, then one message
``OTHER_OPERATION_IN_PROGRESS``                naming the code and what to do
``VM_BAD_POWER_STATE``                         the state is read again and the state
                                               machine continues (bounded by the deadline)
``VM_IS_TEMPLATE``, ``VM_IS_SNAPSHOT``,        fatal at once, with the code and what
``OPERATION_NOT_ALLOWED``,                     to check
``SESSION_AUTHENTICATION_FAILED``, others
=============================================  =========================================

Plain Python; no dagster import.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from fruix_dagster.errors import ConfigError, FruixError, HypervisorError
from fruix_dagster.hypervisor.xapi import XapiCallError, XapiClient, XapiTimeout

__all__ = [
    "AFTER_POLICIES",
    "FATAL_CODES",
    "RETRY_CODES",
    "BuildVM",
    "pick_address",
]

NULL_REF = "OpaqueRef:NULL"
AFTER_POLICIES = ("keep-running", "shutdown", "revert")

#: Transient pool conditions: retried with backoff up to the deadline.
RETRY_CODES = ("HOST_NOT_ENOUGH_FREE_MEMORY", "NO_HOSTS_AVAILABLE", "OTHER_OPERATION_IN_PROGRESS")
#: Refusals no amount of waiting fixes.
FATAL_CODES = ("VM_IS_TEMPLATE", "VM_IS_SNAPSHOT", "OPERATION_NOT_ALLOWED", "SESSION_AUTHENTICATION_FAILED")

_ADVICE = {
    "HOST_NOT_ENOUGH_FREE_MEMORY": "the pool has not enough free memory for the VM; stop other VMs, "
                                   "lower the VM's memory, or raise boot_timeout to wait longer",
    "NO_HOSTS_AVAILABLE": "no host of the pool can run the VM (hosts disabled or in maintenance, "
                          "storage or network not attached); check `xe host-list params=enabled` "
                          "and the VM's SRs and networks",
    "OTHER_OPERATION_IN_PROGRESS": "another operation is running on the VM; wait for it or cancel "
                                   "it (`xe task-list`, `xe task-cancel uuid=…`)",
    "VM_IS_TEMPLATE": "the object is a template, which cannot be started; check that xcpng.vm_uuid / "
                      "vm_name names a VM (`xe vm-list is-a-template=false`), not a template",
    "VM_IS_SNAPSHOT": "the object is a snapshot, which cannot be started; check that xcpng.vm_uuid / "
                      "vm_name names the VM itself, and put the snapshot's name in revert_to",
    "OPERATION_NOT_ALLOWED": "the pool does not allow this operation on the VM; check the VM's "
                             "blocked-operations (`xe vm-param-get uuid=… param-name=blocked-operations`), "
                             "HA / maintenance mode, and the account's RBAC role (VM power admin)",
    "SESSION_AUTHENTICATION_FAILED": "the pool refused the login (the password changed, or the "
                                     "account was locked during the run); check xcpng.username and "
                                     "the password variable named by xcpng.password_env",
}

_NET_KEY = re.compile(r"(\d+)/(?:ip|ipv4/(\d+))")
_PV_FALLBACK = ("VM_MISSING_PV_DRIVERS",)

PowerOff = Callable[[], None]
Log = Callable[[str], None]


def pick_address(networks: dict[str, str], cidr: str | None = None) -> str | None:
    """The first ``N/ip`` or ``N/ipv4/M`` address (lowest N, then ``ip``, then lowest M).

    Only addresses inside ``cidr`` count when it is given; link-local and
    unspecified addresses never count.
    """
    net = ipaddress.ip_network(cidr, strict=False) if cidr else None
    found: list[tuple[tuple[int, int], str]] = []
    for key, value in (networks or {}).items():
        m = _NET_KEY.fullmatch(str(key))
        if not m:
            continue
        try:
            ip = ipaddress.ip_address(str(value).strip())
        except ValueError:
            continue
        if ip.is_link_local or ip.is_unspecified:
            continue
        if net is not None and (ip.version != net.version or ip not in net):
            continue
        found.append(((int(m.group(1)), -1 if m.group(2) is None else int(m.group(2))), str(ip)))
    return min(found)[1] if found else None


def ssh_banner(host: str, port: int, timeout: float) -> str | None:
    """``None`` when an SSH server answers on host:port; else what happened instead."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(4)
            if data.startswith(b"SSH-"):
                return None
            return f"a connection, but no SSH banner (got {data!r})"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"


@dataclass
class _Backoff:
    first: float
    cap: float = 15.0
    attempt: int = 0

    def next(self) -> float:
        d = min(self.cap, self.first * (2 ** self.attempt))
        self.attempt += 1
        return d


class BuildVM:
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

    # -- state -------------------------------------------------------------------
    def power_state(self) -> str:
        assert self.ref is not None
        return str(self.client.call("VM.get_power_state", self.ref))

    def _retry_or_raise(self, exc: XapiCallError, what: str, deadline: float, backoff: _Backoff,
                        limit_name: str) -> None:
        """Sleep before the next attempt of ``what`` or raise the one clear message."""
        code = exc.code
        args = ", ".join(exc.details[1:])
        if code in RETRY_CODES:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                delay = min(backoff.next(), remaining)
                self.log(f"xcpng: {what} {self.label}: XAPI answered {code}"
                         f"{f' ({args})' if args else ''}; retrying in {delay:.1f} s")
                time.sleep(delay)
                return
            raise HypervisorError(
                f"{self.label}: could not {what} it within {limit_name}: XAPI kept answering {code}"
                f"{f' ({args})' if args else ''}; {_ADVICE[code]}") from None
        if code == "VM_BAD_POWER_STATE":
            if time.monotonic() < deadline:
                self.log(f"xcpng: {what} {self.label}: VM_BAD_POWER_STATE ({args}); reading the state again")
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                return
            raise HypervisorError(
                f"{self.label}: could not {what} it within {limit_name}: its power state kept changing "
                f"under us (last: VM_BAD_POWER_STATE {args}); check who else operates the VM") from None
        advice = _ADVICE.get(code, "see the XAPI error code in the XenServer/XCP-ng API reference "
                                   "and the pool's log (/var/log/xensource.log)")
        raise HypervisorError(
            f"{self.label}: XAPI refused to {what} it: {code}{f' ({args})' if args else ''}; {advice}") from None

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

    def revert(self, deadline: float, limit: str, before: bool) -> None:
        assert self.snapshot_ref is not None
        name = self.xs.revert_to
        backoff = _Backoff(self.retry_first)
        self.log(f"xcpng: reverting {self.label} to snapshot {name!r}"
                 f"{'' if before else ' (after-run policy)'}")
        t0 = time.monotonic()
        while True:
            try:
                self.client.run_task("VM.revert", self.snapshot_ref,
                                     timeout=max(1.0, deadline - time.monotonic()),
                                     what=f"revert {self.label} to {name!r}")
                self.operations.append("revert")
                break
            except XapiCallError as exc:
                self._retry_or_raise(exc, f"revert to snapshot {name!r}", deadline, backoff, limit)
            except XapiTimeout as exc:
                raise HypervisorError(
                    f"{self.label}: reverting to snapshot {name!r} did not finish within {limit} "
                    f"({exc}); check the pool's storage") from None
        state = self.power_state()
        self.log(f"xcpng: {self.label} reverted to {name!r} in {time.monotonic() - t0:.1f} s; now {state}")
        if state != "Halted":
            self.log(f"xcpng: note: expected {self.label} to be Halted after the revert, found {state} "
                     f"(the snapshot {name!r} is a checkpoint?)")

    def bring_up(self, deadline: float, limit: str) -> str:
        """Make the VM Running: start, unpause, resume or reuse. Returns the action taken."""
        backoff = _Backoff(self.retry_first)
        action: str | None = None
        last: XapiCallError | None = None
        op_verb = "start"
        t0 = time.monotonic()
        while True:
            state = self.power_state()
            if state == "Running":
                self.action = action or "reused"
                if action is None:
                    self.log(f"xcpng: {self.label} is already Running: reusing it")
                else:
                    self.log(f"xcpng: {self.label} {action} in {time.monotonic() - t0:.1f} s")
                return self.action
            if action is not None:
                raise HypervisorError(
                    f"{self.label}: XAPI reported it {action}, but it is {state} again right after; "
                    f"expected it Running — check the VM's console in XO/XCP-ng Center (does the "
                    f"guest crash or power itself off while booting?)")
            if time.monotonic() >= deadline:
                if last is not None:
                    self._retry_or_raise(last, op_verb, deadline, backoff, limit)  # raises at the deadline
                raise HypervisorError(
                    f"{self.label}: expected it Running within {limit}, found it {state}; check the VM's "
                    f"console in XO/XCP-ng Center")
            op, args, verb = {
                "Halted": ("VM.start", (False, False), "started"),
                "Paused": ("VM.unpause", (), "unpaused"),
                "Suspended": ("VM.resume", (False, False), "resumed"),
            }.get(state, (None, (), ""))
            if op is None:
                raise HypervisorError(
                    f"{self.label}: expected a power state of Halted, Paused, Suspended or Running, "
                    f"found {state!r}; check the VM on the pool")
            op_verb = op.split(".")[1]
            self.log(f"xcpng: {self.label} is {state}: {op_verb}")
            try:
                self.client.run_task(op, self.ref, *args, timeout=max(1.0, deadline - time.monotonic()),
                                     what=f"{op_verb} {self.label}")
                self.operations.append(op_verb)
                action = verb
            except XapiCallError as exc:
                last = exc
                self._retry_or_raise(exc, op_verb, deadline, backoff, limit)
            except XapiTimeout as exc:
                raise HypervisorError(
                    f"{self.label}: {op} did not finish within {limit} ({exc}); check the VM's console "
                    f"and the pool") from None

    def wait_for_address(self, static_host: str | None, port: int, deadline: float, *,
                         ssh_timeout: float = 5.0) -> str:
        """The static host, or the guest-metrics address; then an SSH banner on ``port``."""
        limit = f"boot_timeout = {self.boot_timeout:g} s"
        t0 = time.monotonic()
        if static_host:
            address = static_host
            self.log(f"xcpng: using the static address {address} of guest {self.guest_name!r}")
        else:
            address = self._address_from_metrics(deadline, limit)
            self.log(f"xcpng: {self.label} reports address {address} "
                     f"(after {time.monotonic() - t0:.1f} s)")
        last = "nothing tried yet"
        pause = min(0.2, self.poll)
        while True:
            problem = ssh_banner(address, port, timeout=max(0.2, min(ssh_timeout, deadline - time.monotonic())))
            if problem is None:
                self.log(f"xcpng: SSH answers on {address}:{port}")
                return address
            last = problem
            if time.monotonic() >= deadline:
                raise HypervisorError(
                    f"{self.label}: expected an SSH server on {address}:{port} within {limit}, waited "
                    f"{time.monotonic() - t0:.0f} s and got {last}; check that sshd runs in the guest, "
                    f"that port {port} is right and that no firewall is in the way")
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, self.poll)

    def _address_from_metrics(self, deadline: float, limit: str) -> str:
        assert self.ref is not None
        cidr = self.xs.address_cidr
        t0 = time.monotonic()
        seen = "guest metrics: none (VM.guest_metrics is OpaqueRef:NULL)"
        pause = min(0.2, self.poll)
        next_note = t0 + 30
        while True:
            gm = self.client.call("VM.get_guest_metrics", self.ref)
            if gm and gm != NULL_REF:
                try:
                    nets = dict(self.client.call("VM_guest_metrics.get_networks", gm) or {})
                except XapiCallError as exc:
                    if exc.code != "HANDLE_INVALID":  # metrics replaced while we looked: look again
                        raise
                    nets = None
                if nets is not None:
                    address = pick_address(nets, cidr)
                    if address:
                        return address
                    shown = ", ".join(f"{k}={v}" for k, v in sorted(nets.items())) or "no addresses"
                    seen = (f"guest metrics networks: {shown}"
                            + (f" — none inside address_cidr {cidr}" if cidr and nets else ""))
            waited = time.monotonic() - t0
            if time.monotonic() >= deadline:
                state = self.power_state()
                raise HypervisorError(
                    f"{self.label}: expected an IPv4 address in its guest metrics (N/ip or N/ipv4/M"
                    f"{f' inside {cidr}' if cidr else ''}) within {limit}, waited {waited:.0f} s and saw "
                    f"{seen}; the VM is {state}. FreeBSD guests without xe-guest-utilities never "
                    f"report an address: install xe-guest-utilities in the guest, or set a static "
                    f"host = \"<address>\" in the [[guest]] named {self.guest_name!r}")
            if time.monotonic() >= next_note:
                self.log(f"xcpng: still waiting for an address of {self.label} ({waited:.0f} s; {seen})")
                next_note = time.monotonic() + 30
            state_check = self.power_state()
            if state_check not in ("Running",):
                raise HypervisorError(
                    f"{self.label}: expected it to stay Running while waiting for its address, found it "
                    f"{state_check} after {waited:.0f} s; check the VM's console (did the guest power "
                    f"itself off or crash?)")
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, self.poll)

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

    def shutdown(self, poweroff: PowerOff | None = None) -> None:
        """Bring the VM to Halted: clean, then power-off over SSH, then hard."""
        limit = f"{self.shutdown_timeout:g} s"
        deadline = time.monotonic() + self.shutdown_timeout
        backoff = _Backoff(self.retry_first)
        fallback_reason: str | None = None
        while True:
            state = self.power_state()
            if state == "Halted":
                return
            if state in ("Paused", "Suspended"):
                fallback_reason = f"it is {state} (a clean shutdown needs a Running guest)"
                break
            try:
                self.client.run_task("VM.clean_shutdown", self.ref,
                                     timeout=max(1.0, deadline - time.monotonic()),
                                     what=f"clean shutdown of {self.label}")
                self.operations.append("clean_shutdown")
                continue
            except XapiCallError as exc:
                if exc.code in _PV_FALLBACK or exc.code.startswith("VM_LACKS_FEATURE"):
                    fallback_reason = f"XAPI answered {exc.code} to clean_shutdown"
                    break
                if exc.code in ("VM_BAD_POWER_STATE", "OTHER_OPERATION_IN_PROGRESS") and \
                        time.monotonic() < deadline:
                    self._retry_or_raise(exc, "shut down", deadline, backoff, limit)
                    continue
                if exc.code == "OTHER_OPERATION_IN_PROGRESS":
                    fallback_reason = f"another operation kept running for {limit}"
                    break
                self._retry_or_raise(exc, "shut down", deadline, backoff, limit)
            except XapiTimeout:
                fallback_reason = f"clean_shutdown did not finish within {limit}"
                break
        self.log(f"xcpng: {self.label}: {fallback_reason}; falling back")
        if poweroff is not None and self.power_state() == "Running":
            self.log(f"xcpng: asking the guest to power off (`shutdown -p now` over SSH)")
            try:
                poweroff()
                self.operations.append("ssh-poweroff")
            except FruixError as exc:
                self.log(f"xcpng: power-off over SSH failed: {exc}")
            except Exception as exc:  # noqa: BLE001 - any failure here just means: go hard
                self.log(f"xcpng: power-off over SSH failed: {type(exc).__name__}: {exc}")
            wait_until = time.monotonic() + self.shutdown_timeout
            pause = 0.1
            while time.monotonic() < wait_until:
                if self.power_state() == "Halted":
                    self.log(f"xcpng: {self.label} powered itself off")
                    return
                time.sleep(min(pause, max(0.0, wait_until - time.monotonic())))
                pause = min(pause * 1.5, self.poll)
        self.hard_shutdown()

    def hard_shutdown(self) -> None:
        limit = f"{self.shutdown_timeout:g} s"
        deadline = time.monotonic() + self.shutdown_timeout
        backoff = _Backoff(self.retry_first)
        while True:
            state = self.power_state()
            if state == "Halted":
                return
            self.log(f"xcpng: hard shutdown of {self.label} ({state})")
            try:
                self.client.run_task("VM.hard_shutdown", self.ref,
                                     timeout=max(1.0, deadline - time.monotonic()),
                                     what=f"hard shutdown of {self.label}")
                self.operations.append("hard_shutdown")
            except XapiCallError as exc:
                self._retry_or_raise(exc, "hard-shut-down", deadline, backoff, limit)
            except XapiTimeout as exc:
                raise HypervisorError(
                    f"{self.label}: hard_shutdown did not finish within {limit} ({exc}); the VM may "
                    f"still be running — check it on the pool") from None
