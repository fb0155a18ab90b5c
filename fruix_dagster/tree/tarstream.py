"""Streaming, refusing-by-default tar reader for staged trees.

A staged tree arrives as ONE ``tar cf - -C DIR .`` stream (bsdtar on the
FreeBSD guest, or GNU tar locally) read from any object with ``read(n) ->
bytes``; short reads are fine and ``b""`` means end of stream.  The reader
never seeks, reads in big chunks (``chunk_size``, 1 MiB by default) and hands
file data out as ``memoryview`` slices of those chunks, so no Python code runs
per 512-byte block of file data.

API::

    iter_members(stream, *, chunk_size=1 MiB, require_parents=True,
                 drain=True, max_member_size=1 TiB) -> Iterator[Member]
    TarReader(stream, **same options)        # iterable once; iter_members wraps it
    ReadAhead(stream, *, chunk_size=1 MiB, depth=8)   # a stream read by a thread
    widen_pipe(pipe, size=1 MiB) -> int | None       # Linux F_SETPIPE_SZ, best effort

For speed over a local pipe, widen the pipe and read ahead (as
``manifest_from_tar`` does by default): the sender then runs while we hash.

``Member`` (one per entry, in stream order):

* ``path: bytes`` normalized: leading ``./`` and ``.`` components dropped, no
  trailing ``/``, never absolute, never a ``..`` component.  The root entry
  (``.`` / ``./``) IS yielded, as a ``"dir"`` with ``path == b""``, so a
  consumer can see the root's mode; skip it if you do not care.
* ``kind``: ``"file"``, ``"dir"``, ``"symlink"`` or ``"hardlink"``.
* ``mode``: permission bits (``& 0o7777``), ``size`` (data bytes; 0 for all
  but files), ``mtime`` (int seconds; informational only).
* ``link``: the symlink target exactly as stored (raw bytes, may be absolute
  or dangling: it is data, never followed), or for a hardlink the normalized
  path of an earlier file entry; ``None`` otherwise.
* ``chunks()``: for a file, an iterator of ``memoryview`` pieces of its data
  (empty for other kinds).  Iterate it at most once and before advancing the
  member iterator; data left unconsumed is skipped by the reader.  The pieces
  stay valid after the reader moves on (each chunk is an immutable ``bytes``),
  but resuming ``chunks()`` after moving on raises ``TreeError``.
  ``read()`` returns the whole data as ``bytes`` (for small files and tests).

Formats: ustar (with its 155-byte prefix), GNU (``L``/``K`` long names and
links, base-256 numbers) and pax (``x`` headers: ``path``, ``linkpath``,
``size``, ``mtime`` are used, other keys ignored; ``g`` global headers are
ignored, except that ``path``, ``linkpath`` or ``size`` in one is refused
because it would change how every following entry is read).  Types: regular
``0``/``\\0``/``7`` (``\\0`` with a trailing ``/`` is an old-style directory),
hardlink ``1``, symlink ``2``, directory ``5``.  Header checksums are verified
(unsigned, or the historic signed sum).

Refused with ``TreeError`` naming the entry and its stream offset: absolute
paths, ``..`` components, NUL bytes in names, device nodes, FIFOs, GNU sparse
or multi-volume entries (also pax ``GNU.sparse.*``), any unknown type,
hardlinks to anything not a file seen earlier in the stream, paths whose
parent is a symlink or a file seen earlier (``link -> /etc`` then
``link/passwd``), with ``require_parents`` (the default) paths whose parent
directory was not seen earlier, duplicate paths, non-zero sizes on
directories/symlinks/hardlinks (their data framing would be ambiguous), sizes
that are negative or above ``max_member_size``, oversized extended headers,
bad checksums, a stream that ends before the two zero blocks or mid-entry,
and (with ``drain``) non-zero bytes after the end-of-archive blocks.

Names are raw bytes throughout: non-UTF-8 bytes, newlines and spaces survive.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from typing import Iterator, Protocol

from fruix_dagster.errors import TreeError

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_SIZE",
    "MAX_MEMBER_SIZE",
    "Member",
    "ReadAhead",
    "Readable",
    "TarReader",
    "iter_members",
    "widen_pipe",
]

BLOCK_SIZE = 512
CHUNK_SIZE = 1 << 20
MAX_MEMBER_SIZE = 1 << 40  # 1 TiB: nothing in a FreeBSD base tree comes close
MAX_NAME_SIZE = 64 * 1024  # GNU L/K payload (FreeBSD PATH_MAX is 1024)
MAX_PAX_SIZE = 1 << 20  # one pax extended header

_ZERO = bytes(BLOCK_SIZE)
_OCTAL = b"01234567"
_DIGITS = b"0123456789"
_FILE_TYPES = frozenset(b"07\0")
# An octal number field: optional spaces, octal digits, optional spaces, then NUL and anything (or the end).
_OCTAL_FIELD = re.compile(rb" *([0-7]*) *(?:\0.*)?", re.DOTALL).fullmatch

_HOW_TO_FIX = "re-create the stream on the guest with `tar cf - -C DIR .` from a clean staged tree"


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


def _show(name: bytes | None) -> str:
    """A readable, escaped, bounded rendering of a raw name for messages."""
    if name is None:
        return "<none>"
    text = name.decode("utf-8", "backslashreplace")
    if len(text) > 200:
        text = text[:120] + "..." + text[-60:]
    return repr(text)


class Member:
    """One tar entry; see the module docstring for the meaning of each field."""

    __slots__ = ("path", "kind", "mode", "size", "link", "mtime", "offset", "_reader", "_generation", "_started")

    def __init__(self, path, kind, mode, size, link, mtime, offset, reader, generation):
        self.path: bytes = path
        self.kind: str = kind
        self.mode: int = mode
        self.size: int = size
        self.link: bytes | None = link
        self.mtime: int = mtime
        self.offset: int = offset  # stream offset of this entry's own header
        self._reader = reader
        self._generation = generation
        self._started = False

    def __repr__(self) -> str:
        return (
            f"Member(path={self.path!r}, kind={self.kind!r}, mode={oct(self.mode)}, "
            f"size={self.size}, link={self.link!r})"
        )

    def chunks(self) -> Iterator[memoryview]:
        """Iterate this file's data as memoryview pieces (once, before moving on)."""
        if self.kind != "file" or self.size == 0:
            return iter(())
        if self._started:
            raise TreeError(
                f"tar stream: chunks() of {_show(self.path)} was called twice; expected the data to be "
                "iterated once; keep the pieces (or a hash) from the first pass"
            )
        self._started = True
        return self._reader._data(self)

    def read(self) -> bytes:
        """The whole data of this member as bytes (b"" for non-files)."""
        return b"".join(self.chunks())


class TarReader:
    """Iterate the members of one tar stream; see the module docstring."""

    def __init__(
        self,
        stream: Readable,
        *,
        chunk_size: int = CHUNK_SIZE,
        require_parents: bool = True,
        drain: bool = True,
        max_member_size: int = MAX_MEMBER_SIZE,
    ):
        if chunk_size < BLOCK_SIZE:
            raise ValueError(f"chunk_size must be at least {BLOCK_SIZE}, got {chunk_size}")
        self._read = stream.read
        self._chunk = chunk_size
        self._require_parents = require_parents
        self._drain = drain
        self._max_size = max_member_size
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]
        self._remaining = 0  # data bytes of the current member not yet handed out
        self._padding = 0
        self._generation = 0
        self._current: Member | None = None
        self._started_iter = False
        # path -> "dir" | "file" | "hardlink" | "symlink" | "implicit" (dir never named)
        self._kinds: dict[bytes, str] = {b"": "dir"}
        self._root_seen = False

    # ------------------------------------------------------------------ buffer

    def _offset(self) -> int:
        return self._base + self._pos

    def _refill(self) -> bool:
        data = self._read(self._chunk)
        if not data:
            return False
        self._base += len(self._buf)
        self._buf = data
        self._view = memoryview(data)
        self._pos = 0
        return True

    def _take(self, n: int, what: str) -> bytes:
        """Exactly n bytes (a copy); TreeError if the stream ends first."""
        buf, pos = self._buf, self._pos
        end = pos + n
        if end <= len(buf):
            self._pos = end
            return buf[pos:end]
        parts = [buf[pos:]]
        have = len(buf) - pos
        self._pos = len(buf)
        while have < n:
            if not self._refill():
                raise TreeError(
                    f"tar stream truncated at byte {self._base + len(self._buf)}: expected {n} bytes of {what}, "
                    f"found only {have} before end of stream; the sender died or the connection dropped — "
                    f"check the guest side and {_HOW_TO_FIX}"
                )
            take = min(n - have, len(self._buf))
            parts.append(self._buf[:take])
            self._pos = take
            have += take
        return b"".join(parts)

    def _skip(self, n: int, what: str) -> None:
        while n:
            avail = len(self._buf) - self._pos
            if avail >= n:
                self._pos += n
                return
            n -= avail
            self._pos = len(self._buf)
            if not self._refill():
                raise TreeError(
                    f"tar stream truncated at byte {self._base + len(self._buf)}: expected {n} more bytes of "
                    f"{what} before end of stream; the sender died or the connection dropped — check the guest "
                    f"side and {_HOW_TO_FIX}"
                )

    def _data(self, member: Member) -> Iterator[memoryview]:
        generation = member._generation
        if generation != self._generation:
            raise TreeError(
                f"tar stream: chunks() of {_show(member.path)} was started after the reader moved on to a later "
                "entry; expected file data to be consumed before advancing the member iterator"
            )
        while self._remaining:
            pos = self._pos
            avail = len(self._buf) - pos
            if avail <= 0:
                if not self._refill():
                    raise TreeError(
                        f"tar stream truncated inside the data of {_show(member.path)}: expected {member.size} "
                        f"bytes, {self._remaining} were still missing at end of stream (byte "
                        f"{self._base + len(self._buf)}); the sender died or the connection dropped — "
                        f"{_HOW_TO_FIX}"
                    )
                continue
            take = self._remaining if avail > self._remaining else avail
            self._pos = pos + take
            self._remaining -= take
            yield self._view[pos : pos + take]
            if self._generation != generation:
                raise TreeError(
                    f"tar stream: chunks() of {_show(member.path)} was resumed after the reader moved on; "
                    "expected file data to be consumed before advancing the member iterator"
                )

    # ----------------------------------------------------------------- parsing

    def __iter__(self) -> Iterator[Member]:
        if self._started_iter:
            raise TreeError("tar stream: a TarReader can be iterated only once; expected one pass over one stream")
        self._started_iter = True
        return self._members()

    def _fail(self, offset: int, name: bytes | None, found: str, expected: str, todo: str = _HOW_TO_FIX):
        entry = f"entry {_show(name)}" if name is not None else "entry"
        return TreeError(f"tar stream {entry} at byte {offset}: {found}; expected {expected}; {todo}")

    def _num(self, field: bytes, what: str, offset: int, name: bytes) -> int:
        m = _OCTAL_FIELD(field)
        if m is not None:
            digits = m.group(1)
            return int(digits, 8) if digits else 0
        if field and field[0] & 0x80:
            if field[0] == 0xFF:
                raise self._fail(offset, name, f"negative base-256 {what}", f"a non-negative {what}")
            return int.from_bytes(field[1:], "big") + ((field[0] & 0x7F) << (8 * (len(field) - 1)))
        raise self._fail(offset, name, f"{what} field {field!r} is not octal", f"an octal {what}", _HOW_TO_FIX)

    def _normalize(self, raw: bytes, offset: int, what: str) -> bytes:
        if b"\0" in raw:
            raise self._fail(offset, raw, f"{what} contains a NUL byte", "names without NUL bytes")
        if raw.startswith(b"/"):
            raise self._fail(
                offset, raw, f"{what} is absolute", "paths relative to the staged tree",
                "create the stream with `tar cf - -C DIR .` (never with absolute paths or -P)",
            )
        parts = [p for p in raw.split(b"/") if p and p != b"."]
        if b".." in parts:
            raise self._fail(offset, raw, f"{what} has a '..' component", "paths inside the staged tree")
        return b"/".join(parts)

    def _parse_pax(self, data: bytes, offset: int) -> dict[bytes, bytes]:
        records: dict[bytes, bytes] = {}
        pos, n = 0, len(data)
        while pos < n:
            if data[pos] == 0 and not data[pos:].strip(b"\0"):
                break  # NUL padding after the last record
            sp = data.find(b" ", pos, pos + 21)
            length_s = data[pos:sp] if sp > pos else b""
            if not length_s or length_s.translate(None, _DIGITS):
                raise self._fail(offset, None, f"malformed pax record at byte {pos} of the extended header",
                                 "records of the form '<len> <key>=<value>\\n'")
            end = pos + int(length_s)
            if end <= sp + 1 or end > n or data[end - 1] != 0x0A:
                raise self._fail(offset, None, f"pax record at byte {pos} has a bad length {int(length_s)}",
                                 "a length that covers the record up to its newline")
            key, eq, value = data[sp + 1 : end - 1].partition(b"=")
            if not eq or not key:
                raise self._fail(offset, None, f"pax record at byte {pos} has no key=value",
                                 "records of the form '<len> <key>=<value>\\n'")
            records[key] = value
            pos = end
        return records

    def _ext_data(self, size: int, limit: int, what: str, offset: int) -> bytes:
        if size > limit:
            raise self._fail(offset, None, f"{what} of {size} bytes", f"at most {limit} bytes")
        data = self._take(size, what)
        self._skip(-size % BLOCK_SIZE, f"padding of {what}")
        return data

    def _members(self) -> Iterator[Member]:
        kinds = self._kinds
        pax: dict[bytes, bytes] | None = None
        long_name: bytes | None = None
        long_link: bytes | None = None
        ext_offset = 0
        while True:
            # Finish the previous member: skip whatever its consumer left unread.
            if self._current is not None:
                self._generation += 1
                self._current = None
                self._skip(self._remaining + self._padding, "file data")
                self._remaining = self._padding = 0

            offset = self._offset()
            try:
                header = self._take(BLOCK_SIZE, "a tar header")
            except TreeError as exc:
                if offset == 0 and len(self._buf) == 0:
                    raise TreeError(
                        "tar stream is empty: expected a tar archive of the staged tree, found 0 bytes; "
                        "check that the sender ran `tar cf - -C DIR .` and that it did not fail before writing"
                    ) from None
                raise TreeError(
                    f"tar stream ended without its end-of-archive blocks (at byte {offset}): {exc}"
                ) from None

            if header == _ZERO:
                second = self._take(BLOCK_SIZE, "the second end-of-archive block")
                if second != _ZERO:
                    raise self._fail(offset + BLOCK_SIZE, None, "a lone zero block followed by more data",
                                     "two zero blocks at the end of the archive only")
                if pax is not None or long_name is not None or long_link is not None:
                    raise self._fail(ext_offset, None, "an extended header not followed by any entry",
                                     "every extended header to precede an entry")
                if self._drain:
                    self._drain_rest()
                return

            # ---- checksum
            stored = header[148:156]
            digits = stored.split(b"\0", 1)[0].strip(b" ")
            unsigned = sum(header) - sum(stored) + 8 * 32
            if not digits or digits.translate(None, _OCTAL) or int(digits, 8) != unsigned:
                signed = unsigned - 256 * (sum(1 for b in header if b >= 0x80) - sum(1 for b in stored if b >= 0x80))
                if not digits or digits.translate(None, _OCTAL) or int(digits, 8) != signed:
                    raise self._fail(
                        offset, header[:100].split(b"\0", 1)[0],
                        f"header checksum {stored!r} does not match the computed {unsigned:o}",
                        "a valid tar header (data corrupted or the stream is out of step)",
                    )

            typeflag = header[156]
            raw_name = header[:100].split(b"\0", 1)[0]
            if header[257:263] == b"ustar\0":
                prefix = header[345:500].split(b"\0", 1)[0]
                if prefix:
                    raw_name = prefix + b"/" + raw_name
            size = self._num(header[124:136], "size", offset, raw_name)

            # ---- extended headers: they describe the next entry
            if typeflag == 0x78 or typeflag == 0x67:  # 'x', 'g'
                records = self._parse_pax(self._ext_data(size, MAX_PAX_SIZE, "pax header", offset), offset)
                if typeflag == 0x67:
                    bad = sorted(k for k in records if k in (b"path", b"linkpath", b"size"))
                    if bad:
                        raise self._fail(offset, None, f"a global pax header setting {bad!r}",
                                         "global headers without path, linkpath or size")
                    continue
                if pax is not None:
                    raise self._fail(offset, None, "two pax headers in a row", "one pax header per entry")
                pax, ext_offset = records, offset
                continue
            if typeflag == 0x4C or typeflag == 0x4B:  # 'L', 'K'
                data = self._ext_data(size, MAX_NAME_SIZE, "GNU long name", offset).rstrip(b"\0")
                if typeflag == 0x4C:
                    if long_name is not None:
                        raise self._fail(offset, None, "two GNU long-name headers in a row", "one per entry")
                    long_name = data
                else:
                    if long_link is not None:
                        raise self._fail(offset, None, "two GNU long-link headers in a row", "one per entry")
                    long_link = data
                ext_offset = offset
                continue

            # ---- a real entry
            link_raw = header[157:257].split(b"\0", 1)[0]
            mtime = self._num(header[136:148], "mtime", offset, raw_name)
            if long_name is not None:
                raw_name = long_name
            if long_link is not None:
                link_raw = long_link
            if pax is not None:
                if b"path" in pax and pax[b"path"]:
                    raw_name = pax[b"path"]
                if b"linkpath" in pax and pax[b"linkpath"]:
                    link_raw = pax[b"linkpath"]
                if b"size" in pax and pax[b"size"]:
                    s = pax[b"size"]
                    if s.translate(None, _DIGITS) or len(s) > 20:
                        raise self._fail(offset, raw_name, f"pax size {s[:40]!r} is not a decimal number "
                                         "of at most 20 digits", "a non-negative decimal size")
                    size = int(s)
                if b"mtime" in pax:
                    try:
                        mtime = int(float(pax[b"mtime"]))
                    except ValueError:
                        pass  # informational only
                if any(k.startswith(b"GNU.sparse.") for k in pax):
                    raise self._fail(
                        offset, raw_name, "a GNU sparse file (pax GNU.sparse.* keys)", "plain regular files",
                        "make the file non-sparse on the guest (or create the stream with bsdtar --no-read-sparse)",
                    )
            pax = long_name = long_link = None

            if b"\0" in raw_name:
                raise self._fail(offset, raw_name, "name contains a NUL byte", "names without NUL bytes")
            if not raw_name:
                raise self._fail(offset, raw_name, "an empty name", "a relative path")
            if size > self._max_size:
                raise self._fail(offset, raw_name, f"size {size}", f"at most {self._max_size} bytes")

            if typeflag in _FILE_TYPES:
                if typeflag == 0 and raw_name.endswith(b"/"):
                    kind = "dir"  # pre-POSIX directory
                else:
                    kind = "file"
                    if raw_name.endswith(b"/"):
                        raise self._fail(offset, raw_name, "a regular file whose name ends in '/'",
                                         "'/' only at the end of directory names")
            elif typeflag == 0x35:  # '5'
                kind = "dir"
            elif typeflag == 0x32:  # '2'
                kind = "symlink"
            elif typeflag == 0x31:  # '1'
                kind = "hardlink"
            else:
                described = {
                    0x33: "a character device", 0x34: "a block device", 0x36: "a FIFO",
                    0x53: "a GNU sparse file", 0x4D: "a GNU multi-volume continuation",
                    0x56: "a GNU volume label", 0x44: "a GNU dump directory", 0x4E: "an old GNU long name",
                }.get(typeflag, f"an unknown entry type {chr(typeflag)!r}")
                raise self._fail(
                    offset, raw_name, f"{described} (type {chr(typeflag)!r})",
                    "only regular files, directories, symlinks and hardlinks in a staged tree",
                    "remove it from the staged tree on the guest (devices and FIFOs are never part of a tree)",
                )
            if kind != "file" and size:
                raise self._fail(offset, raw_name, f"a {kind} entry with size {size}",
                                 f"size 0 for a {kind} (its data framing would be ambiguous)")

            path = self._normalize(raw_name, offset, "name")
            if not path:
                if kind != "dir":
                    raise self._fail(offset, raw_name, f"the tree root is a {kind}", "the root to be a directory")
                if self._root_seen:
                    raise self._fail(offset, raw_name, "the tree root appears twice", "each path once")
                self._root_seen = True
            else:
                previous = kinds.get(path)
                if previous is not None and not (previous == "implicit" and kind == "dir"):
                    what = "a directory implied by an earlier path" if previous == "implicit" else f"a {previous}"
                    raise self._fail(offset, raw_name, f"a duplicate path (already {what} earlier in the stream)",
                                     "each path once")
                self._check_parents(path, raw_name, offset)

            link = None
            if kind == "symlink":
                if not link_raw:
                    raise self._fail(offset, raw_name, "a symlink with an empty target", "a non-empty target")
                if b"\0" in link_raw:
                    raise self._fail(offset, raw_name, "a symlink target with a NUL byte", "targets without NUL")
                link = link_raw
            elif kind == "hardlink":
                if not link_raw:
                    raise self._fail(offset, raw_name, "a hardlink with an empty target",
                                     "the path of an earlier file")
                link = self._normalize(link_raw, offset, f"hardlink target {_show(link_raw)}")
                target_kind = kinds.get(link)
                if target_kind not in ("file", "hardlink"):
                    found = ("a hardlink to a path not seen earlier in the stream" if target_kind is None
                             else f"a hardlink to a {target_kind if target_kind != 'implicit' else 'dir'}")
                    raise self._fail(offset, raw_name, f"{found} ({_show(link_raw)})",
                                     "hardlinks only to regular files that appear earlier in the same stream")

            if path:
                kinds[path] = kind
            mode = self._num(header[100:108], "mode", offset, raw_name) & 0o7777
            member = Member(path, kind, mode, size, link, mtime, offset, self, self._generation)
            if kind == "file":
                self._remaining = size
                self._padding = -size % BLOCK_SIZE
            self._current = member
            yield member

    def _check_parents(self, path: bytes, raw_name: bytes, offset: int) -> None:
        kinds = self._kinds
        parent = path.rpartition(b"/")[0]
        pk = kinds.get(parent)
        if pk == "dir" or pk == "implicit":
            return
        if pk is None:
            if self._require_parents:
                raise self._fail(
                    offset, raw_name, f"its parent directory {_show(parent)} did not appear earlier in the stream",
                    "every directory before its contents (as `tar cf - -C DIR .` writes them)",
                )
            # Walk the ancestors: none may be a non-directory; record missing ones as implicit dirs.
            parts = parent.split(b"/")
            for i in range(1, len(parts) + 1):
                prefix = b"/".join(parts[:i])
                k = kinds.get(prefix)
                if k is None:
                    kinds[prefix] = "implicit"
                elif k not in ("dir", "implicit"):
                    self._parent_is(k, prefix, raw_name, offset)
            return
        self._parent_is(pk, parent, raw_name, offset)

    def _parent_is(self, kind: str, parent: bytes, raw_name: bytes, offset: int):
        if kind == "symlink":
            raise self._fail(
                offset, raw_name, f"the path goes through the symlink {_show(parent)} seen earlier in the stream",
                "no entry below a symlink (writing it would follow the link out of the tree)",
            )
        raise self._fail(offset, raw_name, f"its parent {_show(parent)} is a {kind}, not a directory",
                         "entries only below directories")

    def _drain_rest(self) -> None:
        rest = self._buf[self._pos :]
        while True:
            if rest.strip(b"\0"):
                raise TreeError(
                    f"tar stream has non-zero data after its end-of-archive blocks (near byte {self._offset()}); "
                    "expected only zero padding; the stream holds more than one archive or trailing garbage — "
                    f"{_HOW_TO_FIX}"
                )
            self._pos = len(self._buf)
            if not self._refill():
                return
            rest = self._buf


def iter_members(stream: Readable, **options) -> Iterator[Member]:
    """Iterate the members of the tar stream ``stream`` (see the module docstring for options)."""
    return iter(TarReader(stream, **options))


class ReadAhead:
    """Read a blocking stream in a background thread, up to ``depth`` chunks ahead.

    Parsing and hashing then overlap with the sender producing the stream
    (over a local pipe the two are otherwise serialized by the pipe's small
    buffer).  ``read(n)`` returns at most ``n`` bytes; an exception raised by
    the wrapped stream's ``read`` is re-raised from ``read`` here, unchanged.
    The thread reads until end of stream, so do not wrap a stream whose bytes
    after the archive you still need.  ``close()`` (or leaving the ``with``
    block) stops the thread once its current ``read`` returns: to unblock it
    at once, also close the underlying channel or end the sending process.
    """

    def __init__(self, stream: Readable, *, chunk_size: int = CHUNK_SIZE, depth: int = 8):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pending = b""
        self._eof = False
        self._thread = threading.Thread(
            target=self._run, args=(stream.read, chunk_size), name="tar-readahead", daemon=True
        )
        self._thread.start()

    def _run(self, read, size: int) -> None:
        try:
            while not self._stop.is_set():
                data = read(size)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def read(self, n: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
        elif self._eof:
            return b""
        else:
            data = self._queue.get()
            if isinstance(data, BaseException):
                self._eof = True
                raise data
            if not data:
                self._eof = True
                return b""
        if len(data) > n:
            data, self._pending = data[:n], data[n:]
        return data

    def close(self) -> None:
        self._stop.set()
        self._eof = True
        self._pending = b""

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def widen_pipe(pipe, size: int = 1 << 20) -> int | None:
    """Best effort: grow a Linux pipe's buffer (``F_SETPIPE_SZ``) so the sender can run ahead.

    ``pipe`` is a file object with ``fileno()`` or a file descriptor.  Returns
    the new buffer size, or ``None`` where that is not possible (not Linux,
    not a pipe, not permitted); the stream works either way.
    """
    try:
        import fcntl
    except ImportError:
        return None
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is None:
        return None
    fd = pipe if isinstance(pipe, int) else pipe.fileno()
    try:
        return fcntl.fcntl(fd, setsz, size)
    except OSError:
        try:
            with open("/proc/sys/fs/pipe-max-size") as f:
                most = int(f.read())
            return fcntl.fcntl(fd, setsz, min(size, most))
        except (OSError, ValueError):
            return None
