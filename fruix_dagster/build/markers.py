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
_ERROR_PATTERNS = (b"*** Error", b"ERROR:")
_MAX_ERRORS = 20

_STAGE = re.compile(r"^>>> stage (?P<id>[0-9][0-9.]*[a-z]?): (?P<what>.*)$")
_WORLD_DONE = re.compile(r"^>>> World build completed on (?P<when>.*)$")
_WORLD_START = re.compile(r"^>>> World build started on (?P<when>.*)$")
_KERNEL_DONE = re.compile(r"^>>> Kernel build for (?P<conf>\S+) completed on (?P<when>.*)$")
_KERNEL_START = re.compile(r"^>>> Kernel build for (?P<conf>\S+) started on (?P<when>.*)$")
_BUILT_IN = re.compile(r"^>>> (?:World|Kernel\(s\)\s+(?P<confs>.*?)) built in (?P<secs>\d+) seconds?")


@dataclass(frozen=True)
class Marker:
    """One '>>> ' line, classified."""

    text: str
    kind: str                  # stage | world-started | world-completed | kernel-started | kernel-completed | built-in | other
    stage: str | None = None   # "4.2" for stage markers
    seconds: int | None = None # for "built in N seconds"

    @property
    def label(self) -> str:
        if self.kind == "stage" and self.stage:
            return f"stage {self.stage}"
        return self.kind


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
    return Marker(line, "other")


class LogScanner:
    """Feed build output chunk by chunk; collect markers, first errors, tail."""

    def __init__(self) -> None:
        self._carry = b""
        self._tail = bytearray()
        self.errors: list[str] = []
        self.bytes_seen = 0

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
        if len(self.errors) < _MAX_ERRORS:
            hits: list[tuple[int, str]] = []
            for pattern in _ERROR_PATTERNS:
                hits.extend(_lines_containing(buf, end, pattern))
            for _, line in sorted(hits):
                if len(self.errors) >= _MAX_ERRORS:
                    break
                self.errors.append(line)
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


def _lines_containing(buf: bytes, end: int, needle: bytes) -> Iterable[tuple[int, str]]:
    pos = buf.find(needle, 0, end)
    while pos >= 0:
        start = buf.rfind(b"\n", 0, pos) + 1
        nl = buf.find(b"\n", pos, end)
        nl = end if nl < 0 else nl
        yield start, buf[start:nl].decode("utf-8", "replace").rstrip("\r")
        pos = buf.find(needle, nl, end)


def stage_durations(markers: list[tuple[int, str]], finished: int | None) -> dict[str, int]:
    """Seconds per stage from timestamped markers (the guest's ``markers`` file).

    A stage lasts from its marker to the next marker (or to ``finished``).
    """
    out: dict[str, int] = {}
    for i, (ts, text) in enumerate(markers):
        m = classify(text)
        if m.kind != "stage":
            continue
        nxt = markers[i + 1][0] if i + 1 < len(markers) else finished
        if nxt is not None:
            out[f"stage {m.stage}"] = out.get(f"stage {m.stage}", 0) + max(0, nxt - ts)
    return out
