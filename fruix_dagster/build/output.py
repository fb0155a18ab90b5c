"""Where a make step's output goes on the host while the step is followed.

The orchestrator already reads the guest's step log in big chunks (one
stream per follow, pieces of up to 8 MiB, see guest/detached.py ``stream``) to find the ``>>>`` markers.
:class:`StepOutput` hands each chunk, as it arrives, to

* the **host copy** of the full log, ``<store.root>/logs/<target>/<step dir>.log``
  next to the stored artifacts (written as ``….log.partial``, renamed into
  place when the step has finished, so the named file is always complete);
* the **live stream** — the run's captured stdout when Dagster runs the step
  (the UI's log viewer shows it while the build runs) — one ``write`` per
  chunk, never per line, up to ``cap_bytes`` per step; past the cap one line
  says so and names the host copy.

Plain Python (no dagster import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable



def host_log_path(store_root: str | os.PathLike, target: str, step_dirname: str) -> Path:
    return Path(store_root) / "logs" / target / f"{step_dirname}.log"


@dataclass(frozen=True)
class LiveLog:
    """Where one step's output should go: the host copy, and the live stream with its cap."""

    host_log: Path
    stream: BinaryIO | None = None
    cap_bytes: int = 0

    def open(self, header: str = "") -> "StepOutput":
        return StepOutput(self.host_log, self.stream, self.cap_bytes, header)


class StepOutput:
    """The host copy and the capped live stream of one step's log."""

    def __init__(self, host_log: Path, stream: BinaryIO | None, cap_bytes: int, header: str = ""):
        self.host_log = host_log
        self.stream = stream if cap_bytes > 0 else None
        self.cap_bytes = cap_bytes
        self.streamed = 0
        self.capped = False
        self._partial = host_log.with_name(host_log.name + ".partial")
        host_log.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = open(self._partial, "wb")
        if self.stream is not None and header:
            self._emit(header.encode())

    def write(self, data: bytes) -> None:
        """One chunk of the step's log, in order, from byte 0."""
        if not data:
            return
        assert self._file is not None, "write after close"
        self._file.write(data)
        if self.stream is None or self.capped:
            return
        room = self.cap_bytes - self.streamed
        if len(data) > room:
            cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            self._emit(data[:cut])
            self.streamed += cut
            self.capped = True
            self._emit(f"\n[fruix] live output stopped at build.stdout_max_mib = "
                       f"{self.cap_bytes / (1 << 20):g} MiB; the full log is {self.host_log}\n".encode())
            return
        self._emit(data)
        self.streamed += len(data)

    def _emit(self, data: bytes) -> None:
        assert self.stream is not None
        self.stream.write(data)
        self.stream.flush()

    def close(self) -> Path:
        """Finish the host copy (renamed into place); returns its path."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._partial, self.host_log)
        return self.host_log

    def abandon(self) -> None:
        """Drop an unfinished host copy (the step could not be followed to its end)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._partial.unlink(missing_ok=True)


def copy_log(chunks: Callable[[], Iterable[bytes]], dest: Path) -> Path:
    """Copy a finished step's whole log to ``dest`` (if it is not there yet).

    ``chunks()`` is called only when the copy is needed; it yields the log in
    big pieces (run.py streams it over one guest command)."""
    if dest.exists():
        return dest
    out = StepOutput(dest, None, 0)
    try:
        for data in chunks():
            out.write(data)
    except BaseException:
        out.abandon()
        raise
    return out.close()
