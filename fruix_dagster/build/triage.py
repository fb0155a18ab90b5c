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

# Needles that find candidate lines (each a pass of bytes.find over the
# chunk, so few): "error:" the compiler's and linker's diagnostics, "Error
# code" make's error lines (job.c, compat.c), "ERROR:" the Makefile.inc1
# checks, "stopped" make's stopped lines.  A .error line is found as the
# line make prints just before stopping, and a failing command's message
# (install: ...) as the line before "*** Error code N".  Not "rror": every
# compile line of a real buildworld carries -Werror and -Wno-error=...
# (share/mk/bsd.sys.mk adds -Werror to CWARNFLAGS for WARNS >= 1 unless
# MK_WERROR is no), so it would send every line through the regexes.
_NEEDLES = (b"error:", b"Error code", b"ERROR:")
_STOPPED = (b"stopped",)

_COMPILER = re.compile(r"^(?:\S+:\d+(?::\d+)?: (?:fatal )?error: |(?:cc|c\+\+|clang|gcc|ld(?:\.lld)?|ar): (?:fatal )?error: )")
_DIRECTIVE = re.compile(r'^\S*make(?:\[\d+\])?: (?:"[^"]+" line \d+|/\S+:\d+): (?!warning: )(?P<msg>.*)$')
_MAKE_ERROR = re.compile(r"^\*\*\* (?:\[[^\]]+\] )?Error code \d+(?! \(ignored\))")
_STOPPED_LINE = re.compile(r'^\S*make(?:\[\d+\])?: stopped (?:making "[^"]*" )?in (?P<dir>\S.*)$')
_INSTALL = re.compile(r"^install: \S+: ")
# "prog: object: message", the usual shape of a failing tool's last line
_FAILED_CMD = re.compile(r"^[A-Za-z0-9_.+-]+: \S.*: \S")


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
    _prev: bytes = b""   # the end of the previous buffer, for looking one line back

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
                before = _previous_line(self._context(buf, start), skip_blank=True)
                if before is not None and classify_error(before) == "directive":
                    self._add("cause", before)
                if self.stopped_in is None and (self.causes or self.make_errors):
                    self.stopped_in = _STOPPED_LINE.match(line)["dir"]  # type: ignore[index]
            elif kind == "make":
                # compat mode: the failing command's last words come just
                # before "*** Error code N" (install: /x: No space left...)
                before = (_previous_line(self._context(buf, start))
                          if line.startswith("*** Error code") else None)
                if before and classify_error(before) is None and _FAILED_CMD.match(before):
                    self._add("cause", before)
                self._add(kind, line)
            elif kind is not None and kind != "directive":
                self._add(kind, line)
        if end >= _CONTEXT:
            self._prev = buf[end - _CONTEXT:end]
        else:
            self._prev = (self._prev + buf[:end])[-_CONTEXT:]

    def _context(self, buf: bytes, start: int) -> bytes:
        """The bytes before ``start``, reaching back into the previous buffer."""
        ctx = buf[max(0, start - _CONTEXT):start]
        return self._prev + ctx if start < _CONTEXT else ctx

    def _add(self, kind: str, line: str) -> None:
        target = self.causes if kind == "cause" else self.make_errors
        if len(target) < MAX_ERRORS and not (kind == "cause" and line in target):
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


_CONTEXT = 4096


def _previous_line(ctx: bytes, skip_blank: bool = False) -> str | None:
    """The last line of ``ctx`` (bytes ending with a newline), or the one
    before it when ``skip_blank`` and the last is empty."""
    end = len(ctx) - 1
    if end < 0:
        return None
    if skip_blank and end > 0 and ctx[end - 1] == 0x0A:
        end -= 1  # one empty line
    begin = ctx.rfind(b"\n", 0, end) + 1
    return ctx[begin:end].decode("utf-8", "replace").rstrip("\r")


def _lines_containing(buf: bytes, end: int, needle: bytes) -> Iterable[tuple[int, int, str]]:
    """(start offset, newline offset, text) of each line of ``buf[:end]`` holding ``needle``."""
    pos = buf.find(needle, 0, end)
    while pos >= 0:
        start = buf.rfind(b"\n", 0, pos) + 1
        nl = buf.find(b"\n", pos, end)
        nl = end if nl < 0 else nl
        yield start, nl, buf[start:nl].decode("utf-8", "replace").rstrip("\r")
        pos = buf.find(needle, nl, end)
