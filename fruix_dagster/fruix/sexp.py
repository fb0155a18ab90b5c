"""A bounded, non-evaluating reader for Guile-style S-expressions.

Fruix writes its system metadata (``/run/current-system/metadata/*.scm``) as
Scheme data.  This module *reads* such data into plain Python values; nothing
is ever evaluated, and no Guile is needed.

What is read
============

=========================  ===========================================
syntax                     Python value
=========================  ===========================================
``"text"``                 ``str`` (the only ``str`` values produced)
``foo``, ``#{a b}#``       :class:`Symbol`
``#:name``                 :class:`Keyword`
``#\\a``, ``#\\space``,    :class:`Char`
``#\\x41``
``42``, ``-1.5e3``,        ``int``, ``float``, ``fractions.Fraction``
``1/3``, ``#x1F``,
``+inf.0``
``#t #f #true #false``     ``bool``
``(a b)``, ``[a b]``       ``list`` (``()`` is ``[]``)
``(a . b)``                :class:`DottedList` (``(a . (b))`` is ``[a, b]``)
``#(a b)``, ``#u8(1 2)``   :class:`Vector`
``'x`` `````x`` ``,x``     ``[Symbol("quote"), x]`` etc. (also
``,@x`` ``#'x`` …          quasiquote, unquote, unquote-splicing,
                           syntax, quasisyntax, unsyntax,
                           unsyntax-splicing)
=========================  ===========================================

Comments: ``; …`` to end of line, ``#| … |#`` (nesting) and ``#;`` (skips the
next datum; ``#; #; a b`` skips two).

String escapes: ``\\" \\\\ \\| \\a \\b \\t \\n \\v \\f \\r \\0``, line
continuation (backslash, optional blanks, newline, optional blanks),
``\\uHHHH``, ``\\UHHHHHH`` and ``\\x``: the R7RS form ``\\xH…;`` (hex digits
ended by ``;``) and Guile's default form ``\\xHH`` (exactly two hex digits when
no ``;`` follows the hex run).  Anything else after a backslash is an error.

Limits: the input is at most ``max_bytes`` bytes of UTF-8 (default 1 MiB) and
lists, vectors, quote shorthands and datum comments nest at most
``max_depth`` deep (default 200).  The reader is iterative (an explicit
stack), so hostile nesting can neither overflow Python's stack nor run long.

Every error is a :class:`SexpError` (a :class:`~fruix_dagster.errors.SourceError`)
whose message reads ``SOURCE:LINE:COL: expected …, found …; HINT``.

All top-level data of the input are returned (:func:`read_all`); whether more
than one is acceptable is the caller's decision.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator, Union

from fruix_dagster.errors import SourceError

MAX_BYTES = 1 << 20
MAX_DEPTH = 200
DEFAULT_HINT = "the file must be a well-formed S-expression; fix or regenerate it"


# -- values --------------------------------------------------------------------

@dataclass(frozen=True)
class Symbol:
    name: str

    def __repr__(self) -> str:
        return f"Symbol({self.name!r})"


@dataclass(frozen=True)
class Keyword:
    name: str

    def __repr__(self) -> str:
        return f"Keyword({self.name!r})"


@dataclass(frozen=True)
class Char:
    value: str

    def __repr__(self) -> str:
        return f"Char({self.value!r})"


@dataclass(frozen=True)
class Vector:
    items: tuple


@dataclass(frozen=True)
class DottedList:
    """An improper list: ``(items… . tail)`` where ``tail`` is not a list."""
    items: tuple
    tail: Any


Datum = Union[str, Symbol, Keyword, Char, int, float, Fraction, bool, list, Vector, DottedList]


class SexpError(SourceError):
    """Malformed, hostile or oversized S-expression input."""

    def __init__(self, message: str, *, source: str, line: int | None = None,
                 column: int | None = None):
        super().__init__(message)
        self.source = source
        self.line = line
        self.column = column


# -- lexical pieces --------------------------------------------------------------

_WS = re.compile(r"[\s\ufeff]+")
_LINE_COMMENT = re.compile(r";[^\n]*")
_ATOM = re.compile(r"[^\s()\[\]\";]+")
_STR_PLAIN = re.compile(r'[^"\\]+')
_HEX_RUN = re.compile(r"[0-9A-Fa-f]*")
_INTRALINE_WS = re.compile(r"[ \t]*")
_BLOCK_TOKENS = re.compile(r"#\||\|#")

_STRING_ESCAPES = {
    '"': '"', "\\": "\\", "|": "|", "a": "\a", "b": "\b", "t": "\t", "n": "\n",
    "v": "\v", "f": "\f", "r": "\r", "0": "\0",
}
_CHAR_NAMES = {
    "space": " ", "newline": "\n", "linefeed": "\n", "nl": "\n", "tab": "\t",
    "return": "\r", "nul": "\0", "null": "\0", "alarm": "\a", "backspace": "\b",
    "delete": "\x7f", "del": "\x7f", "rubout": "\x7f", "escape": "\x1b", "esc": "\x1b",
    "altmode": "\x1b", "page": "\f", "vtab": "\v",
}
_QUOTES = {
    "'": "quote", "`": "quasiquote", ",": "unquote", ",@": "unquote-splicing",
    "#'": "syntax", "#`": "quasisyntax", "#,": "unsyntax", "#,@": "unsyntax-splicing",
}
_DEC_INT = re.compile(r"[+-]?[0-9]+\Z")
_DEC_RAT = re.compile(r"([+-]?[0-9]+)/([0-9]+)\Z")
_DEC_REAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_SPECIAL_REALS = {"+inf.0": float("inf"), "-inf.0": float("-inf"),
                  "+nan.0": float("nan"), "-nan.0": float("nan")}
_RADIX_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}

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
                    self._emit(stack, self._atom(token, pos), pos)
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
        if frame.kind == "vector":
            return Vector(tuple(frame.items))
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
                if len(digits) != width or not all(d in _RADIX_DIGITS[16] for d in digits):
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
        for prefix in ("#u8(", "#vu8("):
            if text.startswith(prefix, pos):
                self._push(stack, _Frame("vector", pos, opener=prefix, closer=")", items=[]))
                return pos + len(prefix)
        if nxt in "'`,":
            q = "#,@" if text.startswith("#,@", pos) else "#" + nxt
            self._push(stack, _Frame("quote", pos, opener=q, symbol=_QUOTES[q]))
            return pos + len(q)
        if nxt == "\\":
            value, end = self._read_char(pos)
            self._emit(stack, value, pos)
            return end
        if nxt == ":":
            m = _ATOM.match(text, pos + 2)
            if not m:
                raise self.fail(pos + 2, "a keyword name after `#:`")
            self._emit(stack, Keyword(m.group()), pos)
            return m.end()
        if nxt == "{":
            end = text.find("}#", pos + 2)
            if end < 0:
                raise self.fail(n, f"`}}#` to close the symbol opened with `#{{` at {self.at(pos)}")
            self._emit(stack, Symbol(text[pos + 2:end]), pos)
            return end + 2
        m = _ATOM.match(text, pos)
        token = m.group() if m else "#"
        low = token.lower()
        if low in ("#t", "#true"):
            value: Any = True
        elif low in ("#f", "#false"):
            value = False
        elif len(low) >= 2 and low[1] in "xbodei":
            value = self._number(token, pos)
            if value is None:
                raise self.fail(pos, "a number after a radix or exactness prefix", self.found(pos, len(token)))
        elif token.startswith("#<"):
            raise self.fail(pos, "readable data",
                            f"the unreadable object `{token}` at {self.at(pos)} (printed by Guile, cannot be read back)")
        else:
            raise self.fail(pos, "a known `#` syntax (#t #f #( #\\ #: #| #; #' #{ or a number prefix)",
                            self.found(pos, max(len(token), 2)))
        self._emit(stack, value, pos)
        return pos + len(token)

    def _read_char(self, pos: int) -> tuple[Char, int]:
        text, n = self.text, self.n
        first = pos + 2
        if first >= n:
            raise self.fail(first, "a character after `#\\`")
        m = _ATOM.match(text, first + 1)
        token = text[first] + (m.group() if m else "")
        end = first + len(token)
        if len(token) == 1:
            return Char(token), end
        if token[0] in "xX" and all(d in _RADIX_DIGITS[16] for d in token[1:]):
            return Char(self._code_point(token[1:], pos)), end
        named = _CHAR_NAMES.get(token.lower())
        if named is None:
            raise self.fail(pos, "a character (#\\a, #\\x41 or a name such as #\\space, #\\newline, #\\tab, #\\nul)",
                            self.found(pos, 2 + len(token)))
        return Char(named), end

    def _atom(self, token: str, pos: int) -> Datum:
        value = self._number(token, pos)
        return Symbol(token) if value is None else value

    def _number(self, token: str, pos: int) -> int | float | Fraction | None:
        """The number ``token`` spells, or None if it is not a number."""
        body = token
        radix = 10
        exact: bool | None = None
        while len(body) >= 2 and body[0] == "#":
            p = body[1].lower()
            if p in "xbod":
                radix = {"x": 16, "b": 2, "o": 8, "d": 10}[p]
            elif p in "ei":
                exact = p == "e"
            else:
                return None
            body = body[2:]
        try:
            value = self._number_value(body, radix, token, pos)
        except ValueError:  # e.g. Python's limit on int() digits
            raise self.fail(pos, "a number of a sensible size (at most 4300 decimal digits)",
                            f"a {len(body)}-character number at {self.at(pos)}") from None
        if value is None:
            return None
        if exact is True and isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise self.fail(pos, "a finite number after `#e`", self.found(pos, len(token)))
            value = Fraction(value)
            if value.denominator == 1:
                value = int(value)
        elif exact is False:
            value = float(value)
        return value

    def _number_value(self, body: str, radix: int, token: str, pos: int) -> int | float | Fraction | None:
        value: int | float | Fraction | None = None
        if radix == 10:
            if body in _SPECIAL_REALS:
                value = _SPECIAL_REALS[body]
            elif _DEC_INT.match(body):
                value = int(body)
            elif (r := _DEC_RAT.match(body)):
                if int(r.group(2)) == 0:
                    raise self.fail(pos, "a rational with a non-zero denominator", self.found(pos, len(token)))
                value = Fraction(int(r.group(1)), int(r.group(2)))
            elif _DEC_REAL.match(body):
                value = float(body)
        else:
            digits = _RADIX_DIGITS[radix]
            sign, rest = (body[0], body[1:]) if body[:1] in ("+", "-") else ("", body)
            num, slash, den = rest.partition("/")
            if num and all(d in digits for d in num) and (not slash or (den and all(d in digits for d in den))):
                value = int(sign + num, radix)
                if slash:
                    if int(den, radix) == 0:
                        raise self.fail(pos, "a rational with a non-zero denominator", self.found(pos, len(token)))
                    value = Fraction(value, int(den, radix))
        return value


# -- entry points -----------------------------------------------------------------

def decode(data: bytes | str, *, source: str = "<input>", max_bytes: int = MAX_BYTES,
           hint: str = DEFAULT_HINT) -> str:
    """Check the size limit and decode UTF-8, with clear errors."""
    if isinstance(data, str):
        size = len(data.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise _too_big(source, size, max_bytes, hint)
        return data
    if len(data) > max_bytes:
        raise _too_big(source, len(data), max_bytes, hint)
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


def read_one(data: bytes | str, **kwargs: Any) -> Datum:
    """Read exactly one datum; anything else is an error."""
    data_list = read_all(data, **kwargs)
    source = kwargs.get("source", "<input>")
    hint = kwargs.get("hint", DEFAULT_HINT)
    if len(data_list) != 1:
        raise SexpError(f"{source}: expected exactly one datum, found {len(data_list)}; {hint}", source=source)
    return data_list[0]


def walk(data: Any) -> Iterator[Any]:
    """Every datum in ``data`` and in everything it contains, depth first, in
    document order (iterative: no recursion)."""
    todo: list[Any] = [data]
    while todo:
        d = todo.pop()
        yield d
        if isinstance(d, list):
            todo.extend(reversed(d))
        elif isinstance(d, Vector):
            todo.extend(reversed(d.items))
        elif isinstance(d, DottedList):
            todo.append(d.tail)
            todo.extend(reversed(d.items))


def strings(data: Any) -> Iterator[str]:
    """Every string atom in ``data`` (symbols, keywords and chars are not strings)."""
    for d in walk(data):
        if isinstance(d, str):
            yield d
