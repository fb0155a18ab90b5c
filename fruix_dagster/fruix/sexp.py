"""A bounded, non-evaluating reader of Guile S-expressions, cut to what store-layout reading needs.

Fruix writes its system metadata (``/run/current-system/metadata/*.scm``) as
Scheme data.  :mod:`fruix_dagster.fruix.store_layout` needs every *string* in
such a file and the shape of its ``(store-root "…")`` entries, so this reads
structure and strings exactly, other atoms only as far as needed to know
where they end, and evaluates nothing.  (``sexpdata`` was considered: it has
no size or nesting limit and does not document Guile's ``#|``, ``#;``, ``#{}#``.)

* ``"text"`` is a ``str`` (the only ``str`` values produced);
* ``(a b)``, ``[a b]`` and vectors ``#(a b)`` are ``list`` (``()`` is ``[]``);
  ``(a . b)`` is a :class:`DottedList` (``(a . (b))`` is ``[a, b]``);
* ``'x`` ```x`` ``,x`` ``,@x`` ``#'x`` ``#`x`` ``#,x`` ``#,@x`` are
  ``[Symbol("quote"), x]``, ``quasiquote``, ``unquote`` … ``unsyntax-splicing``;
* ``#{a b}#`` is ``Symbol("a b")``; any other atom is a :class:`Symbol`
  holding its text, unparsed: ``foo``, ``42``, ``1/2``, ``#t``, ``#:key``,
  ``#x1F``, and character literals, read as one atom even when they are
  ``#\\"``, ``#\\(`` or ``#\\;`` so that they hide no string or list.

Comments: ``; …`` to end of line, ``#| … |#`` (nesting) and ``#;`` (skips the
next datum; ``#; #; a b`` skips two).  String escapes: ``\\" \\\\ \\| \\a \\b
\\t \\n \\v \\f \\r \\0``, line continuation (backslash, optional blanks,
newline, optional blanks), ``\\uHHHH``, ``\\UHHHHHH``, the R7RS ``\\xH…;`` and
Guile's ``\\xHH`` (two hex digits when no ``;`` follows the hex run); any
other escape, and a code point that is not a Unicode scalar value, is an error.

Refused: input over ``max_bytes`` (default 1 MiB) or not UTF-8, nesting of
lists, vectors, quotes and datum comments deeper than ``max_depth`` (default
200; the reader is iterative, so hostile nesting can neither overflow
Python's stack nor run long), unbalanced or mismatched brackets, a misplaced
``.``, unterminated strings, block comments and ``#{`` symbols, a quote or
``#;`` with no datum after it, and Guile's unreadable ``#<…>`` objects.
Every error is a :class:`SexpError` (a :class:`~fruix_dagster.errors.SourceError`)
whose message reads ``SOURCE:LINE:COL: expected …, found …; HINT``.

:func:`read_all` returns every top-level datum (how many are acceptable is
the caller's decision); :func:`walk` and :func:`strings` visit them.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Iterator, Union

from fruix_dagster.errors import SourceError

MAX_BYTES = 1 << 20
MAX_DEPTH = 200
DEFAULT_HINT = "the file must be a well-formed S-expression; fix or regenerate it"


@dataclass(frozen=True)
class Symbol:
    """Any atom that is not a string, as its text."""
    name: str

    def __repr__(self) -> str:
        return f"Symbol({self.name!r})"


@dataclass(frozen=True)
class DottedList:
    """An improper list: ``(items… . tail)`` where ``tail`` is not a list."""
    items: tuple
    tail: Any


Datum = Union[str, Symbol, list, DottedList]


class SexpError(SourceError):
    """Malformed, hostile or oversized S-expression input."""

    def __init__(self, message: str, *, source: str, line: int | None = None,
                 column: int | None = None):
        super().__init__(message)
        self.source = source
        self.line = line
        self.column = column


_WS = re.compile(r"[\s\ufeff]+")
_LINE_COMMENT = re.compile(r";[^\n]*")
_ATOM = re.compile(r"[^\s()\[\]\";]+")
_STR_PLAIN = re.compile(r'[^"\\]+')
_HEX_RUN = re.compile(r"[0-9A-Fa-f]*")
_HEX_DIGITS = "0123456789abcdefABCDEF"
_INTRALINE_WS = re.compile(r"[ \t]*")
_BLOCK_TOKENS = re.compile(r"#\||\|#")

_STRING_ESCAPES = {
    '"': '"', "\\": "\\", "|": "|", "a": "\a", "b": "\b", "t": "\t", "n": "\n",
    "v": "\v", "f": "\f", "r": "\r", "0": "\0",
}
_QUOTES = {
    "'": "quote", "`": "quasiquote", ",": "unquote", ",@": "unquote-splicing",
    "#'": "syntax", "#`": "quasisyntax", "#,": "unsyntax", "#,@": "unsyntax-splicing",
}

_NO_TAIL = object()


@dataclass
class _Frame:
    kind: str            # "top" | "list" | "vector" | "quote" | "comment"
    start: int           # offset of the opening syntax
    opener: str = ""     # the opening text, for messages
    closer: str = ""     # ")" or "]" for lists and vectors
    symbol: str = ""     # for "quote" frames
    items: list | None = None
    tail: Any = _NO_TAIL
    dot: int = 0         # 0: no dot yet, 1: dot read, tail expected, 2: tail read
    dot_at: int = 0


class _Reader:
    def __init__(self, text: str, source: str, max_depth: int, hint: str):
        self.text = text
        self.n = len(text)
        self.source = source
        self.max_depth = max_depth
        self.hint = hint
        self._line_starts: list[int] | None = None

    # -- positions and errors ---------------------------------------------------
    def where(self, pos: int) -> tuple[int, int]:
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        i = bisect.bisect_right(self._line_starts, pos) - 1
        return i + 1, pos - self._line_starts[i] + 1

    def at(self, pos: int) -> str:
        line, col = self.where(pos)
        return f"{line}:{col}"

    def found(self, pos: int, length: int = 1) -> str:
        if pos >= self.n:
            return f"end of input at {self.at(pos)}"
        piece = self.text[pos:pos + length]
        shown = repr(piece)[1:-1] if not piece.isprintable() else piece
        return f"`{shown}` at {self.at(pos)}"

    def fail(self, pos: int, expected: str, found: str | None = None) -> SexpError:
        line, col = self.where(pos)
        found = found if found is not None else self.found(pos)
        return SexpError(
            f"{self.source}:{line}:{col}: expected {expected}, found {found}; {self.hint}",
            source=self.source, line=line, column=col)

    # -- the reader ---------------------------------------------------------------
    def read_all(self) -> list[Datum]:
        text, n = self.text, self.n
        top = _Frame("top", 0, items=[])
        stack: list[_Frame] = [top]
        pos = 0
        while True:
            m = _WS.match(text, pos)
            if m:
                pos = m.end()
            if pos >= n:
                break
            c = text[pos]
            nxt = text[pos + 1] if pos + 1 < n else ""
            if c == ";":
                pos = _LINE_COMMENT.match(text, pos).end()
            elif c == "#" and nxt == "|":
                pos = self._skip_block_comment(pos)
            elif c == "#" and nxt == ";":
                self._push(stack, _Frame("comment", pos, opener="#;"))
                pos += 2
            elif c in "([":
                self._push(stack, _Frame("list", pos, opener=c, closer=")" if c == "(" else "]", items=[]))
                pos += 1
            elif c in ")]":
                frame = stack[-1]
                if frame.kind == "top":
                    raise self.fail(pos, "a datum or end of input", f"`{c}` at {self.at(pos)} with no list open")
                if frame.kind in ("quote", "comment"):
                    raise self.fail(pos, f"a datum after `{frame.opener}` (at {self.at(frame.start)})")
                if c != frame.closer:
                    raise self.fail(pos, f"`{frame.closer}` to close the `{frame.opener}` opened at {self.at(frame.start)}")
                if frame.dot == 1:
                    raise self.fail(pos, f"a datum after the `.` at {self.at(frame.dot_at)}")
                stack.pop()
                self._emit(stack, self._finish(frame), pos)
                pos += 1
            elif c == '"':
                value, pos = self._read_string(pos)
                self._emit(stack, value, pos)
            elif c in "'`,":
                q = ",@" if c == "," and nxt == "@" else c
                self._push(stack, _Frame("quote", pos, opener=q, symbol=_QUOTES[q]))
                pos += len(q)
            elif c == "#":
                pos = self._read_hash(stack, pos)
            else:
                m = _ATOM.match(text, pos)
                token = m.group()
                if token == ".":
                    self._dot(stack, pos)
                else:
                    self._emit(stack, Symbol(token), pos)
                pos = m.end()
        if len(stack) > 1:
            frame = stack[-1]
            if frame.kind in ("list", "vector"):
                raise self.fail(n, f"`{frame.closer}` to close the `{frame.opener}` opened at {self.at(frame.start)}")
            raise self.fail(n, f"a datum after `{frame.opener}` (at {self.at(frame.start)})")
        assert top.items is not None
        return top.items

    def _push(self, stack: list[_Frame], frame: _Frame) -> None:
        if len(stack) > self.max_depth:
            raise self.fail(frame.start, f"data nested at most {self.max_depth} levels deep",
                            f"nesting deeper than that at {self.at(frame.start)}")
        stack.append(frame)

    def _emit(self, stack: list[_Frame], datum: Any, pos: int) -> None:
        while True:
            frame = stack[-1]
            if frame.kind == "quote":
                stack.pop()
                datum = [Symbol(frame.symbol), datum]
                continue
            if frame.kind == "comment":
                stack.pop()
                return
            assert frame.items is not None
            if frame.dot == 0:
                frame.items.append(datum)
            elif frame.dot == 1:
                frame.tail = datum
                frame.dot = 2
            else:
                raise self.fail(pos, f"`{frame.closer}` after the tail of the dotted list at {self.at(frame.dot_at)}",
                                f"another datum at {self.at(pos)}")
            return

    def _dot(self, stack: list[_Frame], pos: int) -> None:
        frame = stack[-1]
        if frame.kind != "list":
            raise self.fail(pos, "a datum (a lone `.` is only allowed inside a list, after an element)")
        if not frame.items:
            raise self.fail(pos, "an element before `.` in the list opened at " + self.at(frame.start))
        if frame.dot:
            raise self.fail(pos, f"one `.` per list (the first is at {self.at(frame.dot_at)})")
        frame.dot = 1
        frame.dot_at = pos

    @staticmethod
    def _finish(frame: _Frame) -> Datum:
        assert frame.items is not None
        tail = frame.tail
        if tail is _NO_TAIL:
            return frame.items
        if isinstance(tail, list):
            return frame.items + tail
        if isinstance(tail, DottedList):
            return DottedList(tuple(frame.items) + tail.items, tail.tail)
        return DottedList(tuple(frame.items), tail)

    def _skip_block_comment(self, pos: int) -> int:
        start = pos
        depth = 0
        while True:
            m = _BLOCK_TOKENS.search(self.text, pos)
            if m is None:
                raise self.fail(self.n, f"`|#` to close the block comment opened at {self.at(start)}")
            depth += 1 if m.group() == "#|" else -1
            pos = m.end()
            if depth == 0:
                return pos

    def _read_string(self, pos: int) -> tuple[str, int]:
        text, n = self.text, self.n
        start = pos
        pos += 1
        out: list[str] = []
        while True:
            m = _STR_PLAIN.match(text, pos)
            if m:
                out.append(m.group())
                pos = m.end()
            if pos >= n:
                raise self.fail(n, f'`"` to close the string opened at {self.at(start)}')
            if text[pos] == '"':
                return "".join(out), pos + 1
            # a backslash
            esc_at = pos
            pos += 1
            if pos >= n:
                raise self.fail(n, f'`"` to close the string opened at {self.at(start)}')
            e = text[pos]
            if e in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[e])
                pos += 1
            elif e in "xX":
                run = _HEX_RUN.match(text, pos + 1).group()
                end = pos + 1 + len(run)
                if run and end < n and text[end] == ";":
                    out.append(self._code_point(run, esc_at))
                    pos = end + 1
                elif len(run) >= 2:
                    out.append(chr(int(run[:2], 16)))
                    pos += 3
                else:
                    raise self.fail(esc_at, r"hex digits ended by `;` after `\x` (e.g. `\x41;`)",
                                    self.found(esc_at, 2 + len(run) + 1))
            elif e in "uU":
                width = 4 if e == "u" else 6
                digits = text[pos + 1:pos + 1 + width]
                if len(digits) != width or not all(d in _HEX_DIGITS for d in digits):
                    raise self.fail(esc_at, f"exactly {width} hex digits after `\\{e}`",
                                    self.found(esc_at, 2 + width))
                out.append(self._code_point(digits, esc_at))
                pos += 1 + width
            elif e in " \t\n\r":
                # line continuation: \ <blanks> newline <blanks>
                p = _INTRALINE_WS.match(text, pos).end()
                if p < n and text[p] == "\r":
                    p += 1
                if p >= n or text[p] != "\n":
                    raise self.fail(esc_at, "a newline after `\\` and blanks (a line continuation)",
                                    self.found(p))
                pos = _INTRALINE_WS.match(text, p + 1).end()
            else:
                raise self.fail(
                    esc_at,
                    'a string escape (one of \\" \\\\ \\| \\a \\b \\t \\n \\v \\f \\r \\0 '
                    "\\xHH; \\uHHHH \\UHHHHHH or a line continuation)",
                    self.found(esc_at, 2))

    def _code_point(self, digits: str, pos: int) -> str:
        if len(digits) > 8:
            raise self.fail(pos, "at most 8 hex digits in a character escape", self.found(pos, 2 + len(digits)))
        cp = int(digits, 16)
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            raise self.fail(pos, "a Unicode scalar value (not a surrogate, at most 10FFFF)",
                            f"code point {cp:X} at {self.at(pos)}")
        return chr(cp)

    def _read_hash(self, stack: list[_Frame], pos: int) -> int:
        text, n = self.text, self.n
        nxt = text[pos + 1] if pos + 1 < n else ""
        if nxt == "(":
            self._push(stack, _Frame("vector", pos, opener="#(", closer=")", items=[]))
            return pos + 2
        if nxt in "'`,":
            q = "#,@" if text.startswith("#,@", pos) else "#" + nxt
            self._push(stack, _Frame("quote", pos, opener=q, symbol=_QUOTES[q]))
            return pos + len(q)
        if nxt == "\\":
            # A character: `#\` and the next character whatever it is (`#\(`, `#\"`, `#\;`),
            # then the rest of a name (`#\space`, `#\x41`).
            first = pos + 2
            if first >= n:
                raise self.fail(first, "a character after `#\\`")
            m = _ATOM.match(text, first + 1)
            end = m.end() if m else first + 1
            self._emit(stack, Symbol(text[pos:end]), pos)
            return end
        if nxt == "{":
            end = text.find("}#", pos + 2)
            if end < 0:
                raise self.fail(n, f"`}}#` to close the symbol opened with `#{{` at {self.at(pos)}")
            self._emit(stack, Symbol(text[pos + 2:end]), pos)
            return end + 2
        m = _ATOM.match(text, pos)
        token = m.group() if m else "#"
        if token.startswith("#<"):
            raise self.fail(pos, "readable data",
                            f"the unreadable object `{token}` at {self.at(pos)} (printed by Guile, cannot be read back)")
        # #t, #f, #:keyword, #x1F, #e1.5 …: an atom, kept as its text.
        self._emit(stack, Symbol(token), pos)
        return pos + len(token)


# -- entry points -----------------------------------------------------------------

def decode(data: bytes | str, *, source: str = "<input>", max_bytes: int = MAX_BYTES,
           hint: str = DEFAULT_HINT) -> str:
    """Check the size limit and decode UTF-8, with clear errors."""
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise _too_big(source, size, max_bytes, hint)
    if isinstance(data, str):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        off = exc.start
        line = data.count(b"\n", 0, off) + 1
        line_start = data.rfind(b"\n", 0, off) + 1
        col = len(data[line_start:off].decode("utf-8", "replace")) + 1
        raise SexpError(
            f"{source}:{line}:{col}: expected UTF-8 text, found the byte 0x{data[off]:02x} at byte "
            f"offset {off}, which is not valid UTF-8 ({exc.reason}); re-encode the file as UTF-8 "
            f"or regenerate it", source=source, line=line, column=col) from None
    return text


def _too_big(source: str, size: int, max_bytes: int, hint: str) -> SexpError:
    return SexpError(
        f"{source}: expected at most {max_bytes} bytes ({_human(max_bytes)}), found {size} bytes "
        f"({_human(size)}); refusing to read it. {hint[0].upper() + hint[1:]}", source=source)


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"


def read_all(data: bytes | str, *, source: str = "<input>", max_bytes: int = MAX_BYTES,
             max_depth: int = MAX_DEPTH, hint: str = DEFAULT_HINT) -> list[Datum]:
    """Read every top-level datum of ``data``.

    ``source`` names the input in messages (a path); ``hint`` ends every error
    message and says what to do.  Raises :class:`SexpError`.
    """
    text = decode(data, source=source, max_bytes=max_bytes, hint=hint)
    if text.startswith("\ufeff"):
        text = " " + text[1:]  # a byte-order mark; keep columns stable
    return _Reader(text, source, max_depth, hint).read_all()


def walk(data: Any) -> Iterator[Any]:
    """Every datum in ``data`` and in everything it contains, depth first, in
    document order (iterative: no recursion)."""
    todo: list[Any] = [data]
    while todo:
        d = todo.pop()
        yield d
        if isinstance(d, list):
            todo.extend(reversed(d))
        elif isinstance(d, DottedList):
            todo.append(d.tail)
            todo.extend(reversed(d.items))


def strings(data: Any) -> Iterator[str]:
    """Every string atom in ``data`` (symbols, and so keywords and characters, are not strings)."""
    for d in walk(data):
        if isinstance(d, str):
            yield d
