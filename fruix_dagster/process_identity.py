"""Which process a run worker is, and whether that very process still runs.

A pid alone is not an identity: after the worker dies, the kernel may hand its
number to any new process, and after a reboot every number starts over. So a
worker is recorded as

* ``pid`` and ``starttime`` — field 22 of ``/proc/<pid>/stat``, the clock
  ticks since boot at which the process started (proc(5)); two processes with
  the same pid on one boot never share it;
* ``boot_id`` — ``/proc/sys/kernel/random/boot_id``, a new random UUID at each
  boot, so a starttime is only compared within the boot it was taken in;
* ``pidns`` — the inode of ``/proc/self/ns/pid``: pids of another pid
  namespace (a container) are other processes, even on the same kernel;
* ``host`` and ``machine_id`` (``/etc/machine-id``) — which machine's process
  table the numbers belong to.

:func:`judge` compares a record with this host and answers ``alive``,
``dead`` or ``unseen`` (another host or namespace: this host cannot tell, and
must not guess).  Linux only: on a system without ``/proc/self/stat`` (FreeBSD
without linprocfs) :func:`current` raises and :func:`judge` answers
``unseen``.  psutil was considered; its ``create_time()`` is wall-clock
seconds derived from the boot time, which moves when the clock is stepped,
whereas the raw tick count and the boot id are exact, so the two files are
read directly.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    starttime: int
    boot_id: str
    pidns: int
    host: str
    machine_id: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ProcessIdentity:
        data = json.loads(text)
        return cls(pid=int(data["pid"]), starttime=int(data["starttime"]), boot_id=str(data["boot_id"]),
                   pidns=int(data["pidns"]), host=str(data["host"]), machine_id=str(data["machine_id"]))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class Verdict:
    state: str  # "alive" | "dead" | "unseen"
    reason: str


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def host_facts() -> dict:
    return {"boot_id": _read(PROC / "sys/kernel/random/boot_id"),
            "pidns": os.stat(PROC / "self/ns/pid").st_ino if (PROC / "self/ns/pid").exists() else 0,
            "host": socket.gethostname(), "machine_id": _read(Path("/etc/machine-id"))}


def can_see_processes() -> bool:
    """Whether this host has Linux /proc with start times (FreeBSD without linprocfs: no)."""
    return (PROC / "self/stat").exists() and (PROC / "stat").exists()


def current() -> ProcessIdentity:
    """This process's identity; OSError where /proc is missing."""
    pid = os.getpid()
    fields = _stat_fields(pid)
    if fields is None:
        raise OSError(f"{PROC}/{pid}/stat is missing: process start times need Linux /proc")
    # fields[0] is field 3 (state) of proc(5); starttime is field 22
    return ProcessIdentity(pid=pid, starttime=int(fields[19]), **host_facts())


def judge(recorded: ProcessIdentity) -> Verdict:
    """Is the recorded process still running, as seen from this host?"""
    here = host_facts()
    who = recorded.describe()
    if recorded.host != here["host"] or (recorded.machine_id and here["machine_id"]
                                          and recorded.machine_id != here["machine_id"]):
        return Verdict("unseen", f"{who}: a process on another host than {here['host']}, which cannot "
                                 "see it")
    if not here["boot_id"] or not recorded.boot_id:
        return Verdict("unseen", f"{who}: no boot id on this host (not Linux /proc); cannot tell")
    if recorded.boot_id != here["boot_id"]:
        return Verdict("dead", f"{who}: the host rebooted since it started (boot id {recorded.boot_id}, "
                               f"now {here['boot_id']})")
    if recorded.pidns != here["pidns"]:
        return Verdict("unseen", f"{who}: in another pid namespace than this process (a container?); "
                                 "cannot tell")
    fields = _stat_fields(recorded.pid)
    if fields is None:
        return Verdict("dead", f"{who}: no such process")
    if int(fields[19]) != recorded.starttime:
        return Verdict("dead", f"{who}: that pid now belongs to another process (started at tick "
                               f"{fields[19]}, the worker at {recorded.starttime})")
    if fields[0] in ("Z", "X", "x"):
        return Verdict("dead", f"{who}: exited (state {fields[0]}, not yet reaped)")
    return Verdict("alive", f"{who}: running")


def started_after(pid: int, wall_time: float, slack: float = 2.0) -> bool | None:
    """Did the process now holding ``pid`` start later than ``wall_time`` (+ slack)?

    None when no such process runs.  For records without a start time (a pid
    from Dagster's own "Started process for run" event): a process that
    started after the worker wrote that event cannot be the worker.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return None
    btime = next(int(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                 if line.startswith("btime "))
    started = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started > wall_time + slack
