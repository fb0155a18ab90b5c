"""Power operations on a build VM, and what each XAPI answer to them leads to.

:class:`PowerOps` is the part of :class:`~fruix_dagster.hypervisor.vm.BuildVM`
that changes the power state: revert to a snapshot, bring the VM up (start,
unpause, resume or reuse), shut it down (clean, then power-off over SSH,
then hard), each bounded by a deadline.  It uses the VM's ``client``,
``ref``, ``xs``, ``snapshot_ref``, ``label``, ``log``, ``retry_first``,
``poll``, ``shutdown_timeout``, ``action`` and ``operations``.

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

import time
from dataclasses import dataclass
from typing import Any, Callable

from fruix_dagster.errors import FruixError, HypervisorError
from fruix_dagster.hypervisor.xapi import XapiCallError, XapiClient, XapiTimeout

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

_PV_FALLBACK = ("VM_MISSING_PV_DRIVERS",)

#: ``poweroff()`` asks the guest to power itself off over SSH.  It reports failure as a
#: FruixError (the SSH transport translates paramiko's errors); OSError and EOFError are what a
#: socket of a guest that is going down can still raise past that.  Any of them means: go hard.
#: Anything else is a bug and is raised.
PowerOff = Callable[[], None]
POWEROFF_SOCKET_ERRORS = (OSError, EOFError)


@dataclass
class _Backoff:
    first: float
    cap: float = 15.0
    attempt: int = 0

    def next(self) -> float:
        d = min(self.cap, self.first * (2 ** self.attempt))
        self.attempt += 1
        return d


class PowerOps:
    """Power operations of a :class:`~fruix_dagster.hypervisor.vm.BuildVM` (see the module docstring)."""

    client: XapiClient
    ref: str | None
    xs: Any
    snapshot_ref: str | None
    label: str
    log: Callable[[str], None]
    retry_first: float
    poll: float
    shutdown_timeout: float
    action: str | None
    operations: list[str]

    def power_state(self) -> str:
        assert self.ref is not None
        return str(self.client.call("VM.get_power_state", self.ref))

    def _operate(self, name: str, method: str, *args: Any, deadline: float, what: str) -> None:
        """Run the task ``method`` within what is left until ``deadline`` (at least 1 s); record ``name``."""
        self.client.run_task(method, *args, timeout=max(1.0, deadline - time.monotonic()), what=what)
        self.operations.append(name)

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

    def revert(self, deadline: float, limit: str, before: bool) -> None:
        assert self.snapshot_ref is not None
        name = self.xs.revert_to
        backoff = _Backoff(self.retry_first)
        self.log(f"xcpng: reverting {self.label} to snapshot {name!r}"
                 f"{'' if before else ' (after-run policy)'}")
        t0 = time.monotonic()
        while True:
            try:
                self._operate("revert", "VM.revert", self.snapshot_ref, deadline=deadline,
                              what=f"revert {self.label} to {name!r}")
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
                self._operate(op_verb, op, self.ref, *args, deadline=deadline, what=f"{op_verb} {self.label}")
                action = verb
            except XapiCallError as exc:
                last = exc
                self._retry_or_raise(exc, op_verb, deadline, backoff, limit)
            except XapiTimeout as exc:
                raise HypervisorError(
                    f"{self.label}: {op} did not finish within {limit} ({exc}); check the VM's console "
                    f"and the pool") from None

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
                self._operate("clean_shutdown", "VM.clean_shutdown", self.ref, deadline=deadline,
                              what=f"clean shutdown of {self.label}")
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
            except POWEROFF_SOCKET_ERRORS as exc:  # any of these just means: go hard
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
                self._operate("hard_shutdown", "VM.hard_shutdown", self.ref, deadline=deadline,
                              what=f"hard shutdown of {self.label}")
            except XapiCallError as exc:
                self._retry_or_raise(exc, "hard-shut-down", deadline, backoff, limit)
            except XapiTimeout as exc:
                raise HypervisorError(
                    f"{self.label}: hard_shutdown did not finish within {limit} ({exc}); the VM may "
                    f"still be running — check it on the pool") from None
