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
``manifest_from_tar`` does by default): the sender then runs while we hash
(both live in ``readahead``).

``Member`` (one per entry, in stream order):

* ``path: bytes`` normalized: leading ``./`` and ``.`` components dropped, no
  trailing ``/``, never absolute, never a ``..`` component.  The root entry
  (``.`` / ``./``) IS yielded, as a ``"dir"`` with ``path == b""``, so a
  consumer can see the root's mode; skip it if you do not care.
* ``kind``: ``"file"``, ``"dir"``, ``"symlink"`` or ``"hardlink"``.
* ``mode``: permission bits (``& 0o7777``: setuid, setgid and sticky kept),
  ``size`` (data bytes; 0 for all but files), ``mtime`` (int seconds;
  informational only).
* ``uname``, ``gname`` (str; ``""`` when the writer had no name), ``uid``,
  ``gid``: the ustar owner fields with pax ``uname``/``gname``/``uid``/``gid``
  overriding them; ``flags``: pax ``SCHILY.fflags`` (bsdtar's file flags:
  ``schg``, ``uappnd``…; Linux ``chattr +i`` is ``schg``) sorted and joined by
  ``,``, ``""`` for none (``tarowner``).
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
(unsigned, or the historic signed sum).  The bytes of one header are read by
``tarformat``.

Refused with ``TreeError`` naming the entry and its stream offset: what
``tarrules`` refuses (absolute paths, ``..`` components, NUL bytes in names,
device nodes, FIFOs, GNU sparse or multi-volume entries, any unknown type,
hardlinks to anything not a file seen earlier in the stream, paths whose
parent is a symlink or a file seen earlier, with ``require_parents`` (the
default) paths whose parent directory was not seen earlier, duplicate paths,
non-zero sizes on directories/symlinks/hardlinks, sizes above
``max_member_size``), what ``tarformat`` refuses (pax ``GNU.sparse.*``,
negative or malformed numbers, malformed pax records, bad checksums) and,
here, oversized extended headers, a stream that ends before the two zero
blocks or mid-entry, and (with ``drain``) non-zero bytes after the
end-of-archive blocks.

Names are raw bytes throughout: non-UTF-8 bytes, newlines and spaces survive.
"""

from __future__ import annotations

from typing import Iterator

from fruix_dagster.errors import TreeError
from fruix_dagster.tree.readahead import CHUNK_SIZE, ReadAhead, Readable, widen_pipe
from fruix_dagster.tree.tarformat import (
    BLOCK_SIZE,
    HOW_TO_FIX,
    MAX_NAME_SIZE,
    MAX_PAX_SIZE,
    TYPE_GNU_LONG_LINK,
    TYPE_GNU_LONG_NAME,
    TYPE_PAX,
    TYPE_PAX_GLOBAL,
    ZERO_BLOCK,
    apply_pax,
    check_checksum,
    check_global_pax,
    header_link,
    header_mode,
    header_name,
    number,
    parse_pax,
    refusal,
)
from fruix_dagster.tree.tarformat import show as _show
from fruix_dagster.tree.tarowner import OwnerReader
from fruix_dagster.tree.tarrules import TreeRules

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

MAX_MEMBER_SIZE = 1 << 40  # 1 TiB: nothing in a FreeBSD base tree comes close


class Member:
    """One tar entry; see the module docstring for the meaning of each field."""

    __slots__ = ("path", "kind", "mode", "size", "link", "mtime", "offset", "uname", "gname", "uid", "gid",
                 "flags", "_reader", "_generation", "_started")

    def __init__(self, path, kind, mode, size, link, mtime, offset, reader, generation,
                 uname="", gname="", uid=0, gid=0, flags=""):
        self.path: bytes = path
        self.kind: str = kind
        self.mode: int = mode
        self.size: int = size
        self.link: bytes | None = link
        self.mtime: int = mtime
        self.offset: int = offset  # stream offset of this entry's own header
        self.uname: str = uname
        self.gname: str = gname
        self.uid: int = uid
        self.gid: int = gid
        self.flags: str = flags
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
        self._drain = drain
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]
        self._remaining = 0  # data bytes of the current member not yet handed out
        self._padding = 0
        self._generation = 0
        self._current: Member | None = None
        self._started_iter = False
        self._rules = TreeRules(require_parents=require_parents, max_member_size=max_member_size)

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
                    f"check the guest side and {HOW_TO_FIX}"
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
                    f"side and {HOW_TO_FIX}"
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
                        f"{HOW_TO_FIX}"
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

    def _ext_data(self, size: int, limit: int, what: str, offset: int) -> bytes:
        if size > limit:
            raise refusal(offset, None, f"{what} of {size} bytes", f"at most {limit} bytes")
        data = self._take(size, what)
        self._skip(-size % BLOCK_SIZE, f"padding of {what}")
        return data

    def _members(self) -> Iterator[Member]:
        admit = self._rules.admit
        owners = OwnerReader().read
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

            if header == ZERO_BLOCK:
                second = self._take(BLOCK_SIZE, "the second end-of-archive block")
                if second != ZERO_BLOCK:
                    raise refusal(offset + BLOCK_SIZE, None, "a lone zero block followed by more data",
                                  "two zero blocks at the end of the archive only")
                if pax is not None or long_name is not None or long_link is not None:
                    raise refusal(ext_offset, None, "an extended header not followed by any entry",
                                  "every extended header to precede an entry")
                if self._drain:
                    self._drain_rest()
                return

            check_checksum(header, offset)
            typeflag = header[156]
            raw_name = header_name(header)
            size = number(header[124:136], "size", offset, raw_name)

            # ---- extended headers: they describe the next entry
            if typeflag == TYPE_PAX or typeflag == TYPE_PAX_GLOBAL:
                records = parse_pax(self._ext_data(size, MAX_PAX_SIZE, "pax header", offset), offset)
                if typeflag == TYPE_PAX_GLOBAL:
                    check_global_pax(records, offset)
                    continue
                if pax is not None:
                    raise refusal(offset, None, "two pax headers in a row", "one pax header per entry")
                pax, ext_offset = records, offset
                continue
            if typeflag == TYPE_GNU_LONG_NAME or typeflag == TYPE_GNU_LONG_LINK:
                data = self._ext_data(size, MAX_NAME_SIZE, "GNU long name", offset).rstrip(b"\0")
                if typeflag == TYPE_GNU_LONG_NAME:
                    if long_name is not None:
                        raise refusal(offset, None, "two GNU long-name headers in a row", "one per entry")
                    long_name = data
                else:
                    if long_link is not None:
                        raise refusal(offset, None, "two GNU long-link headers in a row", "one per entry")
                    long_link = data
                ext_offset = offset
                continue

            # ---- a real entry
            link_raw = header_link(header)
            mtime = number(header[136:148], "mtime", offset, raw_name)
            if long_name is not None:
                raw_name = long_name
            if long_link is not None:
                link_raw = long_link
            if pax is not None:
                raw_name, link_raw, size, mtime = apply_pax(pax, raw_name, link_raw, size, mtime, offset)
            owner = owners(header, pax, offset, raw_name)
            pax = long_name = long_link = None

            kind, path, link = admit(typeflag, raw_name, link_raw, size, offset)
            mode = header_mode(header, offset, raw_name)
            member = Member(path, kind, mode, size, link, mtime, offset, self, self._generation, *owner)
            if kind == "file":
                self._remaining = size
                self._padding = -size % BLOCK_SIZE
            self._current = member
            yield member

    def _drain_rest(self) -> None:
        rest = self._buf[self._pos :]
        while True:
            if rest.strip(b"\0"):
                raise TreeError(
                    f"tar stream has non-zero data after its end-of-archive blocks (near byte {self._offset()}); "
                    "expected only zero padding; the stream holds more than one archive or trailing garbage — "
                    f"{HOW_TO_FIX}"
                )
            self._pos = len(self._buf)
            if not self._refill():
                return
            rest = self._buf


def iter_members(stream: Readable, **options) -> Iterator[Member]:
    """Iterate the members of the tar stream ``stream`` (see the module docstring for options)."""
    return iter(TarReader(stream, **options))
