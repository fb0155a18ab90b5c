"""FreeBSD's '>>> ' progress markers, found in big chunks of build output.

The scanner never iterates lines in Python for the bulk of the log: it looks
for ``>>> `` and error patterns with ``bytes.find`` in each chunk, keeps the
last few KiB for a failure tail, and carries a partial last line across
chunk boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

_CARRY_MAX = 64 * 1024
_TAIL_KEEP = 256 * 1024

_STAGE = re.compile(r"^>>> stage (?P<id>[0-9][0-9.]*[a-z]?): (?P<what>.*)$")
_WORLD_DONE = re.compile(r"^>>> World build completed on (?P<when>.*)$")
_WORLD_START = re.compile(r"^>>> World build started on (?P<when>.*)$")
_KERNEL_DONE = re.compile(r"^>>> Kernel build for (?P<conf>\S+) completed on (?P<when>.*)$")
_KERNEL_START = re.compile(r"^>>> Kernel build for (?P<conf>\S+) started on (?P<when>.*)$")
_BUILT_IN = re.compile(r"^>>> (?:World|Kernel\(s\)\s+(?P<confs>.*?)) built in (?P<secs>\d+) seconds?")
# reinstall / installkernel of main and 15.0 (Makefile.inc1)
_COMPLETED_IN = re.compile(r"^>>> Install (?:world|kernel\(s\) .*?) completed in (?P<secs>\d+) seconds?")
# Boxed headers that are not numbered stages (Makefile.inc1): they start a
# stretch of time of their own.  Everything else ('>>> Deleting stale
# dependencies...', '>>> ... built in N seconds') is an unboxed line inside
# the current stage.
_HEADER = re.compile(
    r"^>>> (?P<what>Cleaning up the temporary build tree|Rebuilding the temporary build tree"
    r"|Making hierarchy|Making distribution|Install check (?:world|kernel)"
    r"|Installing everything(?= started)|Installing everything(?= completed)"
    r"|Installing kernel \S+(?= on | completed on |$))")
# tools/build/depend-cleanup.sh (main, 15.0), clean_world: the line it
# prints (unboxed, no ">>> ") when the world's object tree has no
# .clean_build_epoch or an other one than the source tree's and it runs
# CLEANMK (make cleandir) there -- an incremental build that has become a
# clean one.  (Its other form, "Cleaning up the temporary build tree", is the
# bootstrap tools' own tree: the world's objects stay.)  The guest's step
# wrapper records the line in the markers file next to the '>>> ' lines
# (guest/detached.py), so a reused step knows it too.
EPOCH_CLEAN_LINE = "Cleaning up the object tree"
_DATES = re.compile(r"(?: started)? on [A-Z][a-z]{2} [A-Z][a-z]{2} .*$")
_NUMBERS = re.compile(r"\d+")


@dataclass(frozen=True)
class Marker:
    """One '>>> ' line, classified."""

    text: str
    #: stage | world-started | world-completed | kernel-started | kernel-completed |
    #: header (another boxed header) | built-in | completed-in | other (unboxed) |
    #: epoch-clean (depend-cleanup.sh cleaned the object tree)
    kind: str
    stage: str | None = None   # "4.2" for stage markers
    seconds: int | None = None # for "built in N seconds" / "completed in N seconds"

    @property
    def label(self) -> str:
        """A name for the marker without its date: "stage 4.4", "Installing kernel GENERIC"."""
        if self.kind == "stage" and self.stage:
            return f"stage {self.stage}"
        if self.kind == "epoch-clean":
            return "Cleaning up the object tree (.clean_build_epoch)"
        text = _DATES.sub("", self.text[4:] if self.text.startswith(">>> ") else self.text)
        return _NUMBERS.sub("N", text) if self.kind in ("built-in", "completed-in") else text

    @property
    def is_header(self) -> bool:
        """A boxed header: it ends the stage before it (unboxed lines do not)."""
        return self.kind not in ("built-in", "completed-in", "other", "epoch-clean")


def classify(line: str) -> Marker:
    line = line.rstrip("\r")
    if m := _STAGE.match(line):
        return Marker(line, "stage", stage=m["id"])
    if _WORLD_START.match(line):
        return Marker(line, "world-started")
    if _WORLD_DONE.match(line):
        return Marker(line, "world-completed")
    if _KERNEL_START.match(line):
        return Marker(line, "kernel-started")
    if _KERNEL_DONE.match(line):
        return Marker(line, "kernel-completed")
    if m := _BUILT_IN.match(line):
        return Marker(line, "built-in", seconds=int(m["secs"]))
    if m := _COMPLETED_IN.match(line):
        return Marker(line, "completed-in", seconds=int(m["secs"]))
    if _HEADER.match(line):
        return Marker(line, "header")
    if line == EPOCH_CLEAN_LINE:
        return Marker(line, "epoch-clean")
    return Marker(line, "other")


class LogScanner:
    """Feed build output chunk by chunk; collect markers, the failure triage
    (build/triage.py: first errors, where make stopped, stage) and the tail."""

    def __init__(self, errors: bool = True) -> None:
        """``errors=False``: markers and the tail only (one ``bytes.find`` pass
        per chunk), for following a build whose triage, if it fails, is read
        afterwards from the whole log (build/run.py)."""
        from fruix_dagster.build.triage import ErrorScanner

        self._errors = errors
        self._carry = b""
        self._tail = bytearray()
        self.triage_scanner = ErrorScanner()
        self.bytes_seen = 0

    @property
    def errors(self) -> list[str]:
        """The first error lines, causes first (see build/triage.py)."""
        return list(self.triage_scanner.first_errors)

    def triage(self, log_path: str, exit_status: int | None = None):
        """The :class:`~fruix_dagster.build.triage.Triage` of what was fed."""
        from fruix_dagster.build.triage import TAIL_LINES

        return self.triage_scanner.triage(log_path, self.tail(TAIL_LINES), exit_status)

    def feed(self, chunk: bytes) -> list[Marker]:
        self.bytes_seen += len(chunk)
        self._tail += chunk
        if len(self._tail) > 2 * _TAIL_KEEP:
            del self._tail[:-_TAIL_KEEP]
        buf = self._carry + chunk if self._carry else chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._carry = buf[-_CARRY_MAX:]
            return []
        self._carry = buf[cut + 1:][-_CARRY_MAX:]
        return self._scan(buf, cut + 1)

    def finish(self) -> list[Marker]:
        """Scan a final line without a newline."""
        rest, self._carry = self._carry, b""
        return self._scan(rest + b"\n", len(rest) + 1) if rest else []

    def _scan(self, buf: bytes, end: int) -> list[Marker]:
        found: list[Marker] = []
        for line in _lines_starting_with(buf, end, b">>> "):
            found.append(classify(line))
        # Errors after the last stage header of this buffer still belong to
        # it; a failure's stage is the last header seen before the end.
        for m in found:
            self.triage_scanner.marker(m)
        if self._errors:
            self.triage_scanner.scan(buf, end)
        return found

    def tail(self, lines: int = 40) -> list[str]:
        text = bytes(self._tail[-_TAIL_KEEP:]).decode("utf-8", "replace")
        return text.splitlines()[-lines:]


def _lines_starting_with(buf: bytes, end: int, prefix: bytes) -> Iterable[str]:
    pos = buf.find(prefix, 0, end)
    while pos >= 0:
        if pos == 0 or buf[pos - 1] == 0x0A:
            nl = buf.find(b"\n", pos, end)
            nl = end if nl < 0 else nl
            yield buf[pos:nl].decode("utf-8", "replace")
            pos = buf.find(prefix, nl, end)
        else:
            pos = buf.find(prefix, pos + 1, end)


def stage_durations(markers: list[tuple[float, str]], finished: float | None) -> dict[str, float]:
    """Seconds per stage from timestamped markers (the guest's ``markers`` file).

    Time after a boxed header belongs to it until the next boxed header (or
    ``finished``); unboxed lines ('>>> Deleting stale dependencies...') do not
    end a stage.  Keys are the headers' labels ("stage 4.4", "Installing
    everything"); the closing headers ("World build completed", "Kernel build
    for K completed") end the last stage and get no time of their own.
    """
    out: dict[str, float] = {}
    heads = [(ts, classify(text)) for ts, text in markers]
    heads = [(ts, m) for ts, m in heads if m.is_header]
    for i, (ts, m) in enumerate(heads):
        if m.kind in ("world-completed", "kernel-completed") or " completed" in m.label:
            continue
        nxt = heads[i + 1][0] if i + 1 < len(heads) else finished
        if nxt is not None:
            out[m.label] = round(out.get(m.label, 0) + max(0, nxt - ts), 3)
    return out


def marker_offsets(markers: list[tuple[float, str]], started: float | None) -> dict[str, float]:
    """Seconds from the step's start to each marker, one key per marker: a
    label seen again gets " (2)", " (3)"... so repeated lines stay distinct."""
    out: dict[str, float] = {}
    if started is None:
        return out
    seen: dict[str, int] = {}
    for ts, text in markers:
        label = classify(text).label
        seen[label] = seen.get(label, 0) + 1
        key = label if seen[label] == 1 else f"{label} ({seen[label]})"
        out[key] = round(ts - started, 3)   # sub-second stamps: keep milliseconds
    return out


def reported_seconds(markers: list[tuple[float, str]]) -> int | None:
    """What make itself reported: 'World built in N seconds', 'Install world
    completed in N seconds' (main, 15.0), summed over the step's markers."""
    secs = [classify(t).seconds for _, t in markers]
    found = [s for s in secs if s is not None]
    return sum(found) if found else None


def epoch_cleaned(markers: list[tuple[float, str]]) -> bool:
    """depend-cleanup.sh cleaned the world's object tree (a new .clean_build_epoch):
    the step was a clean build whatever its WITH_CLEAN/WITHOUT_CLEAN said."""
    return any(classify(t).kind == "epoch-clean" for _, t in markers)
