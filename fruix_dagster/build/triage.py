"""Failure triage: what went wrong in a failed make step, most useful first.

:class:`Triage` is the stable interface (the step's error message, its
failure metadata in the UI, notifications read it):

* ``first_errors`` -- the first real error lines, causes first: compiler
  diagnostics (``file:line:col: error: ...``, ``fatal error:``, ``ld: error:``),
  bmake ``.error`` lines (``make[1]: "/usr/src/Makefile.inc1" line N: ...``
  before bmake 2024, ``make[1]: /usr/src/Makefile.inc1:N: ...`` since),
  ``ERROR:`` lines and ``install: ...`` failures; then make's own
  ``*** [target] Error code N`` / ``*** Error code N`` lines (job.c, compat.c),
  each group in log order;
* ``stopped_in`` -- the innermost directory where make stopped: the first
  ``make[N]: stopped in DIR`` / ``stopped making "T" in DIR`` after the
  first error (the outer makes print theirs later);
* ``stage`` -- the last boxed stage header before the failure;
* ``log_path`` and the 40-line ``tail``.

:class:`ErrorScanner` collects it from big chunks of output with
``bytes.find`` (as build/markers.py does): no per-line Python work, so it
costs nothing for the bulk of a 300 MB log, and it keeps the *first* errors
however far they are from the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from fruix_dagster.build.markers import Marker

MAX_ERRORS = 20
TAIL_LINES = 40

# Needles that find candidate lines; each candidate is then classified.
_NEEDLES = (b"error:", b"Error code", b"ERROR:", b"install: ", b"make[", b"make: ")
_STOPPED = (b": stopped in ", b": stopped making ")

_COMPILER = re.compile(r"^(?:\S+:\d+(?::\d+)?: (?:fatal )?error: |(?:cc|c\+\+|clang|gcc|ld(?:\.lld)?|ar): (?:fatal )?error: )")
_DIRECTIVE = re.compile(r'^\S*make(?:\[\d+\])?: (?:"[^"]+" line \d+|/\S+:\d+): (?!warning: )(?P<msg>.*)$')
_MAKE_ERROR = re.compile(r"^\*\*\* (?:\[[^\]]+\] )?Error code \d+(?! \(ignored\))")
_STOPPED_LINE = re.compile(r'^\S*make(?:\[\d+\])?: stopped (?:making "[^"]*" )?in (?P<dir>\S.*)$')
_INSTALL = re.compile(r"^install: \S+: ")


def classify_error(line: str) -> str | None:
    """'cause' for a line naming the cause, 'make' for make's own error line,
    'directive' for a make .info/.error line (an .error when make stops right
    after it), 'stopped' for make's stopped line, else None."""
    if line.startswith("ERROR:") or _COMPILER.match(line) or _INSTALL.match(line):
        return "cause"
    if _MAKE_ERROR.match(line):
        return "make"
    if _STOPPED_LINE.match(line):
        return "stopped"
    if _DIRECTIVE.match(line):
        return "directive"
    return None


@dataclass(frozen=True)
class Triage:
    """The summary of a failed make step (see the module docstring)."""

    first_errors: tuple[str, ...]
    stopped_in: str | None
    stage: str | None
    log_path: str
    tail: tuple[str, ...] = ()
    exit_status: int | None = None

    def summary(self, errors: int = 10) -> str:
        """The text people read first: errors, where, which stage, log, tail."""
        parts = []
        if self.first_errors:
            parts.append("first errors:\n  " + "\n  ".join(self.first_errors[:errors]))
        else:
            parts.append("first errors: none recognised in the log (see its tail)")
        parts.append(f"stopped in: {self.stopped_in or 'unknown'}")
        parts.append(f"stage: {self.stage or 'before the first stage header'}")
        parts.append(f"log: {self.log_path}")
        parts.append(f"last {len(self.tail)} lines:\n  " + "\n  ".join(self.tail))
        return "\n".join(parts)

    def metadata(self) -> dict[str, Any]:
        """Plain JSON-able values for the step's failure metadata."""
        return {
            "first_errors": "\n".join(self.first_errors) or "none recognised",
            "stopped_in": self.stopped_in or "unknown",
            "stage": self.stage or "none",
            "log_path": self.log_path,
            "log_tail": "\n".join(self.tail),
            "exit_status": self.exit_status if self.exit_status is not None else -1,
        }


@dataclass
class ErrorScanner:
    """Feed it the complete lines of each chunk (and the markers found in them)."""

    causes: list[str] = field(default_factory=list)
    make_errors: list[str] = field(default_factory=list)
    stopped_in: str | None = None
    stage: str | None = None
    _directive: str | None = None   # a .info/.error line waiting to see whether make stops
    _directive_next: int = 0        # where its "stopped" line must start

    def scan(self, buf: bytes, end: int) -> None:
        """Look at the complete lines ``buf[:end]`` (``end`` just after a newline)."""
        full = len(self.causes) >= MAX_ERRORS and len(self.make_errors) >= MAX_ERRORS
        if full and self.stopped_in is not None:
            return
        hits: dict[int, tuple[int, str]] = {}
        for needle in (() if full else _NEEDLES) + _STOPPED:
            for start, nl, line in _lines_containing(buf, end, needle):
                hits.setdefault(start, (nl, line))
        for start, (nl, line) in sorted(hits.items()):
            kind = classify_error(line)
            if kind == "stopped":
                # An .error line is the one make prints just before stopping
                # ("make[1]: ...: message", an empty line, "make[1]: stopped in
                # DIR"); an .info line looks the same but make goes on.
                if self._directive is not None and start == self._directive_next:
                    self._add("cause", self._directive)
                if self.stopped_in is None and (self.causes or self.make_errors):
                    self.stopped_in = _STOPPED_LINE.match(line)["dir"]  # type: ignore[index]
                self._directive = None
            elif kind == "directive":
                self._directive, self._directive_next = line, nl + 2
            elif kind is not None:
                self._add(kind, line)
        if self._directive is not None:
            # continue the adjacency test in the next buffer, whose offsets
            # start at this one's end
            self._directive_next -= end

    def _add(self, kind: str, line: str) -> None:
        target = self.causes if kind == "cause" else self.make_errors
        if len(target) < MAX_ERRORS:
            target.append(line)

    def marker(self, m: Marker) -> None:
        if m.kind == "stage" or (m.kind == "header" and " completed" not in m.label):
            self.stage = m.text

    @property
    def first_errors(self) -> tuple[str, ...]:
        return tuple(self.causes + self.make_errors)[:MAX_ERRORS]

    def triage(self, log_path: str, tail: list[str], exit_status: int | None) -> Triage:
        return Triage(self.first_errors, self.stopped_in, self.stage, log_path,
                      tuple(tail[-TAIL_LINES:]), exit_status)


def _lines_containing(buf: bytes, end: int, needle: bytes) -> Iterable[tuple[int, int, str]]:
    """(start offset, newline offset, text) of each line of ``buf[:end]`` holding ``needle``."""
    pos = buf.find(needle, 0, end)
    while pos >= 0:
        start = buf.rfind(b"\n", 0, pos) + 1
        nl = buf.find(b"\n", pos, end)
        nl = end if nl < 0 else nl
        yield start, nl, buf[start:nl].decode("utf-8", "replace").rstrip("\r")
        pos = buf.find(needle, nl, end)
