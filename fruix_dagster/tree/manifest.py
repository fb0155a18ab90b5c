"""Manifests of staged trees and the tree digest (``tree_sha256``).

A ``Manifest`` lists every entry of a tree except its root: ``Entry(path,
kind, mode, size, sha256, link, uname, gname, uid, gid, flags)`` with
``kind`` in ``"file"``, ``"dir"``, ``"symlink"``, sorted by raw path bytes.  The same tree gives the same
manifest whether it is read from a tar stream (``manifest_from_tar``) or from
disk (``manifest_from_dir``):

* a tar hardlink becomes a ``file`` entry with its target's mode, size and
  sha256 (on disk, two names of one inode are two equal file entries);
* symlinks always have mode ``0o777`` (FreeBSD lets symlinks carry other
  modes; nothing here depends on them), size 0, and their raw target as
  ``link``; directories have size 0;
* ``mode`` is the full mode (``& 0o7777``: setuid, setgid, sticky kept);
  ``uname``/``gname``/``uid``/``gid`` are the owner and group as the tar
  stream names them (ustar ``uname``/``gname``/``uid``/``gid``, pax
  overriding), and ``flags`` the file flags (pax ``SCHILY.fflags``, which
  bsdtar writes; Linux ``chattr +i`` shows up as ``schg``), sorted and joined
  by ``,`` (``""`` for none).  They are part of the digest: FreeBSD ships
  owners and flags (release sets are built from a METALOG), so two stages
  that differ only in a file's group are different trees;
* mtimes are NOT recorded: a reproducible build staged twice at different
  times is the same tree, and the digest must say so.

``to_jsonl()`` is the canonical form: one line per entry, each
``json.dumps({...}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
with keys ``flags, gid, gname, link, mode, path, sha256, size, type, uid,
uname`` and a newline after every line.  Manifests written before owners
were recorded (keys ``link, mode, path, sha256, size, type`` only) are still
read, with empty owners, and keep their original bytes and digest.  Paths and links are decoded as UTF-8 with ``surrogateescape`` (which
is ``os.fsdecode`` on a UTF-8 host, but fixed here so the digest never depends
on the host's locale); ``from_jsonl`` inverts it byte-exactly and refuses
anything that is not canonical.  ``digest()`` is the sha256 hex of
``to_jsonl()``: the ``tree_sha256`` used everywhere.

``manifest_from_tar(stream, sink=None, *, readahead=8, **reader_options)``
parses and hashes in one pass (reading ahead in a thread unless
``readahead=0``); a ``TreeSink`` (``begin(member)``, ``write(piece)``,
``end(member, entry)``) sees every member and every data piece as it streams,
so a store can write the tree while it is being hashed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from json import loads as _json_loads
from json.encoder import encode_basestring_ascii as _json_str
from typing import Iterable, Iterator

from fruix_dagster.errors import TreeError
from fruix_dagster.tree.tarstream import CHUNK_SIZE, Member, ReadAhead, Readable, TarReader, _show

__all__ = [
    "KINDS",
    "Entry",
    "Manifest",
    "NullSink",
    "TreeSink",
    "manifest_from_dir",
    "manifest_from_tar",
]

KINDS = ("file", "dir", "symlink")
SYMLINK_MODE = 0o777
_HEX = frozenset("0123456789abcdef")
_LEGACY_KEYS = frozenset(("link", "mode", "path", "sha256", "size", "type"))
_KEYS = _LEGACY_KEYS | {"flags", "gid", "gname", "uid", "uname"}
_FLAG_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def normalize_flags(text: str) -> str:
    """File flags as recorded: the names sorted, unique, joined by ','; "" for none."""
    if not text or text == "none":
        return ""
    words = sorted({w for w in text.split(",") if w})
    for w in words:
        if not _FLAG_WORD.issuperset(w):
            raise TreeError(f"file flags {text[:80]!r} hold {w[:30]!r}; expected flag names of lowercase "
                            "letters and digits separated by commas (schg,uappnd)")
    return ",".join(words)


def _dec(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _enc(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _check_path(path: bytes, what: str = "path") -> None:
    if (
        not path
        or path.startswith(b"/")
        or path.endswith(b"/")
        or b"\0" in path
        or any(p in (b"", b".", b"..") for p in path.split(b"/"))
    ):
        raise TreeError(
            f"manifest entry {what} {_show(path)} is not a normalized relative path; expected a non-empty "
            "'/'-separated path without empty, '.' or '..' components or NUL bytes; fix whatever produced it"
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One non-root entry of a tree."""

    path: bytes
    kind: str
    mode: int
    size: int
    sha256: str | None
    link: bytes | None
    uname: str = ""
    gname: str = ""
    uid: int = 0
    gid: int = 0
    flags: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.path, bytes):
            raise TreeError(f"manifest entry path {self.path!r} is a {type(self.path).__name__}; expected bytes")
        _check_path(self.path)
        kind, mode, size, sha, link = self.kind, self.mode, self.size, self.sha256, self.link
        problem = None
        if type(mode) is not int or not 0 <= mode <= 0o7777:
            problem = f"mode {mode!r} (expected an int in 0..0o7777)"
        elif type(size) is not int or size < 0:
            problem = f"size {size!r} (expected a non-negative int)"
        elif kind == "file":
            if not (isinstance(sha, str) and len(sha) == 64 and _HEX.issuperset(sha)):
                problem = f"sha256 {sha!r} (expected 64 lowercase hex digits for a file)"
            elif link is not None:
                problem = f"link {link!r} (expected None for a file)"
        elif kind == "dir":
            if size or sha is not None or link is not None:
                problem = "size/sha256/link set (expected 0/None/None for a dir)"
        elif kind == "symlink":
            if size or sha is not None or mode != SYMLINK_MODE:
                problem = "size/sha256/mode (expected 0/None/0o777 for a symlink)"
            elif not isinstance(link, bytes) or not link or b"\0" in link:
                problem = f"link {link!r} (expected non-empty bytes without NUL for a symlink)"
        else:
            problem = f"kind {kind!r} (expected one of {KINDS})"
        if problem is None:
            for what in ("uid", "gid"):
                v = getattr(self, what)
                if type(v) is not int or not 0 <= v < 1 << 32:
                    problem = f"{what} {v!r} (expected an int in 0..2**32-1)"
            for what in ("uname", "gname"):
                v = getattr(self, what)
                if not isinstance(v, str) or len(v) > 255 or "\0" in v or "\n" in v:
                    problem = f"{what} {v!r} (expected a name without NUL or newline)"
            if not isinstance(self.flags, str) or (self.flags and normalize_flags(self.flags) != self.flags):
                problem = f"flags {self.flags!r} (expected sorted flag names joined by ',')"
        if problem:
            raise TreeError(f"manifest entry {_show(self.path)} has an invalid {problem}; fix whatever built it")

    def to_json(self) -> str:
        """The canonical JSON line of this entry (without the newline)."""
        return (
            f'{{"flags":{_json_str(self.flags)},"gid":{self.gid},"gname":{_json_str(self.gname)},'
            f'"link":{"null" if self.link is None else _json_str(_dec(self.link))},"mode":{self.mode},'
            f'"path":{_json_str(_dec(self.path))},"sha256":{"null" if self.sha256 is None else _json_str(self.sha256)},'
            f'"size":{self.size},"type":{_json_str(self.kind)},"uid":{self.uid},"uname":{_json_str(self.uname)}}}'
        )

    def _legacy_json(self) -> str:
        return (
            f'{{"link":{"null" if self.link is None else _json_str(_dec(self.link))},"mode":{self.mode},'
            f'"path":{_json_str(_dec(self.path))},"sha256":{"null" if self.sha256 is None else _json_str(self.sha256)},'
            f'"size":{self.size},"type":{_json_str(self.kind)}}}'
        )

    @property
    def content(self) -> tuple:
        """What a host copy of the tree must reproduce: path, kind, mode, size, sha256, link."""
        return (self.path, self.kind, self.mode, self.size, self.sha256, self.link)


class Manifest:
    """Entries of a tree sorted by path bytes; immutable."""

    __slots__ = ("_entries", "_index", "_jsonl", "_digest")

    def __init__(self, entries: Iterable[Entry] = ()):
        items = list(entries)
        for e in items:
            if not isinstance(e, Entry):
                raise TreeError(f"manifest got {e!r}; expected Entry objects")
        ordered = sorted(items, key=lambda e: e.path)
        for a, b in zip(ordered, ordered[1:]):
            if a.path == b.path:
                raise TreeError(
                    f"manifest has the path {_show(a.path)} twice; expected each path once; fix whatever built it"
                )
        self._entries: tuple[Entry, ...] = tuple(ordered)
        self._index: dict[bytes, Entry] | None = None
        self._jsonl: bytes | None = None
        self._digest: str | None = None

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return self.get(path) is not None  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        return hash(self._entries)

    def __repr__(self) -> str:
        return f"Manifest({len(self._entries)} entries, {self.total_size} bytes)"

    def get(self, path: bytes) -> Entry | None:
        if self._index is None:
            self._index = {e.path: e for e in self._entries}
        return self._index.get(path)

    @property
    def total_size(self) -> int:
        """Sum of the sizes of the file entries."""
        return sum(e.size for e in self._entries if e.kind == "file")

    @property
    def file_count(self) -> int:
        """Number of non-directory entries (files and symlinks)."""
        return sum(1 for e in self._entries if e.kind != "dir")

    def to_jsonl(self) -> bytes:
        if self._jsonl is None:
            self._jsonl = "".join(e.to_json() + "\n" for e in self._entries).encode("ascii")
        return self._jsonl

    def digest(self) -> str:
        """sha256 hex of ``to_jsonl()``: the tree's ``tree_sha256``."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.to_jsonl()).hexdigest()
        return self._digest

    @classmethod
    def from_jsonl(cls, data: bytes) -> "Manifest":
        """Parse canonical JSONL (as written by ``to_jsonl``); refuse anything else."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TreeError(f"manifest JSONL is a {type(data).__name__}; expected bytes as written by to_jsonl()")
        data = bytes(data)
        if data and not data.endswith(b"\n"):
            raise TreeError(
                "manifest JSONL does not end with a newline; expected canonical JSONL as written by "
                "Manifest.to_jsonl(); the file is truncated or was edited — regenerate it"
            )
        entries = []
        legacy = None
        for number, line in enumerate(data.split(b"\n")[:-1], 1):
            try:
                obj = _json_loads(line)
                keys = obj.keys() if isinstance(obj, dict) else None
                if keys != _KEYS and keys != _LEGACY_KEYS:
                    raise ValueError(f"keys {sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
                if legacy is None:
                    legacy = keys == _LEGACY_KEYS
                elif legacy != (keys == _LEGACY_KEYS):
                    raise ValueError("old-style and new-style lines mixed")
                path, link = obj["path"], obj["link"]
                if not isinstance(path, str) or not (link is None or isinstance(link, str)):
                    raise ValueError("path/link are not strings")
                owners = () if legacy else (obj["uname"], obj["gname"], obj["uid"], obj["gid"], obj["flags"])
                entry = Entry(
                    _enc(path), obj["type"], obj["mode"], obj["size"], obj["sha256"],
                    None if link is None else _enc(link), *owners,
                )
            except (ValueError, UnicodeError, TreeError) as exc:
                raise TreeError(
                    f"manifest JSONL line {number} is invalid ({exc}); expected one canonical object with keys "
                    f"{sorted(_KEYS)}; found {line[:200]!r}; regenerate the manifest"
                ) from None
            entries.append(entry)
        manifest = cls(entries)
        if legacy:
            canonical = "".join(e._legacy_json() + "\n" for e in manifest._entries).encode("ascii")
            if canonical == data:
                manifest._jsonl = data  # keeps the digest it was stored under
        if manifest.to_jsonl() != data:
            raise TreeError(
                "manifest JSONL is not canonical (order, spacing, escaping or key order differ from "
                "Manifest.to_jsonl()); expected the exact canonical bytes, since the tree digest is their sha256; "
                "regenerate it with Manifest.to_jsonl()"
            )
        return manifest


# --------------------------------------------------------------------- builders


class TreeSink:
    """Hook for ``manifest_from_tar``: sees the tree as it streams.

    Calls, in stream order, for every member (the root too, as a ``"dir"``
    with ``path == b""``; hardlinks as kind ``"hardlink"`` with ``link`` the
    earlier file's path):

    * ``begin(member)`` before its data;
    * ``write(piece)`` for each data piece of a file (a ``memoryview``; copy
      or write it out before returning if you keep it for long);
    * ``end(member, entry)`` once its data is complete and hashed; ``entry``
      is its manifest ``Entry`` (``None`` for the root; for a hardlink, the
      resolved file entry).

    If anything raises, no further calls are made and the exception
    propagates out of ``manifest_from_tar``: the sink's owner must discard
    what it wrote.  This base class does nothing; subclass what you need.
    """

    def begin(self, member: Member) -> None:
        pass

    def write(self, piece: memoryview) -> None:
        pass

    def end(self, member: Member, entry: Entry | None) -> None:
        pass


NullSink = TreeSink


_new = object.__new__
_set = object.__setattr__


def _trusted(path: bytes, kind: str, mode: int, size: int, sha256: str | None, link: bytes | None,
             uname: str, gname: str, uid: int, gid: int, flags: str) -> Entry:
    """An Entry built from values the tar reader already validated (skips __post_init__)."""
    e = _new(Entry)
    _set(e, "path", path)
    _set(e, "kind", kind)
    _set(e, "mode", mode)
    _set(e, "size", size)
    _set(e, "sha256", sha256)
    _set(e, "link", link)
    _set(e, "uname", uname)
    _set(e, "gname", gname)
    _set(e, "uid", uid)
    _set(e, "gid", gid)
    _set(e, "flags", flags)
    return e


def manifest_from_tar(
    stream: Readable, sink: TreeSink | None = None, *, readahead: int = 8, **reader_options
) -> Manifest:
    """Read one tar stream to its end, hashing file data as it passes.

    ``readahead`` chunks are read ahead in a background thread (``ReadAhead``;
    0 reads in the calling thread); other keyword options go to ``TarReader``.
    """
    if readahead:
        with ReadAhead(stream, chunk_size=reader_options.get("chunk_size", CHUNK_SIZE), depth=readahead) as ahead:
            return _manifest_from_tar(ahead, sink, reader_options)
    return _manifest_from_tar(stream, sink, reader_options)


def _manifest_from_tar(stream: Readable, sink: TreeSink | None, reader_options: dict) -> Manifest:
    sha256 = hashlib.sha256
    Entry = _trusted  # noqa: N806 - the reader validated paths, modes and links
    entries: list[Entry] = []
    files: dict[bytes, Entry] = {}
    for m in TarReader(stream, **reader_options):
        kind = m.kind
        if sink is not None:
            sink.begin(m)
        if kind == "file":
            h = sha256()
            if sink is None:
                for piece in m.chunks():
                    h.update(piece)
            else:
                write = sink.write
                for piece in m.chunks():
                    h.update(piece)
                    write(piece)
            entry = Entry(m.path, "file", m.mode, m.size, h.hexdigest(), None,
                          m.uname, m.gname, m.uid, m.gid, m.flags)
            files[m.path] = entry
        elif kind == "dir":
            entry = Entry(m.path, "dir", m.mode, 0, None, None, m.uname, m.gname, m.uid, m.gid,
                          m.flags) if m.path else None
        elif kind == "symlink":
            entry = Entry(m.path, "symlink", SYMLINK_MODE, 0, None, m.link, m.uname, m.gname, m.uid, m.gid,
                          m.flags)
        else:  # hardlink: the reader guarantees the target is an earlier file
            t = files[m.link]
            entry = Entry(m.path, "file", t.mode, t.size, t.sha256, None, t.uname, t.gname, t.uid, t.gid,
                          t.flags)
            files[m.path] = entry
        if entry is not None:
            entries.append(entry)
        if sink is not None:
            sink.end(m, entry)
    return Manifest(entries)


from fruix_dagster.tree.fromdir import manifest_from_dir  # noqa: E402  (re-exported)
