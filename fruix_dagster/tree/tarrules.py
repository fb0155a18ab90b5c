"""What a staged tree may hold: the refusal rules the tar reader applies to each entry.

``TreeRules`` remembers the kind of every path seen so far in one stream and
admits (or refuses, with a ``TreeError`` naming the entry and its offset)
each new entry against them:

* names: no NUL byte, not empty, not absolute, no ``..`` component;
  normalized by dropping ``.`` components and empty ones (``./a//b/`` is
  ``a/b``); the root (``.``) is a directory and appears at most once;
* kinds: regular files, directories, symlinks and hardlinks only (devices,
  FIFOs, GNU sparse/multi-volume/label/dump entries and unknown types are
  refused); only files carry data (a non-zero size on anything else would
  make the data framing ambiguous); sizes up to ``max_member_size``;
* each path once (a directory may name a path an earlier entry implied);
* parents: never below a symlink or a file seen earlier (``link -> /etc``
  then ``link/passwd``); with ``require_parents``, the parent directory must
  have appeared earlier (as ``tar cf - -C DIR .`` writes them), without it
  missing ancestors are recorded as implied directories;
* symlink targets: non-empty, no NUL (otherwise data, never followed);
  hardlink targets: a file or hardlink that appeared earlier in the stream.
"""

from __future__ import annotations

from fruix_dagster.tree.tarformat import (
    FILE_TYPES,
    TYPE_DIR,
    TYPE_HARDLINK,
    TYPE_NAMES,
    TYPE_SYMLINK,
    refusal,
    show,
)


class TreeRules:
    """The paths seen so far in one stream, and the rules a new entry must pass."""

    __slots__ = ("kinds", "require_parents", "max_size", "root_seen")

    def __init__(self, *, require_parents: bool, max_member_size: int):
        # path -> "dir" | "file" | "hardlink" | "symlink" | "implicit" (dir never named)
        self.kinds: dict[bytes, str] = {b"": "dir"}
        self.require_parents = require_parents
        self.max_size = max_member_size
        self.root_seen = False

    def admit(self, typeflag: int, raw_name: bytes, link_raw: bytes, size: int, offset: int):
        """Check one entry and record it; returns ``(kind, path, link)`` (see ``tarstream.Member``)."""
        if b"\0" in raw_name:
            raise refusal(offset, raw_name, "name contains a NUL byte", "names without NUL bytes")
        if not raw_name:
            raise refusal(offset, raw_name, "an empty name", "a relative path")
        if size > self.max_size:
            raise refusal(offset, raw_name, f"size {size}", f"at most {self.max_size} bytes")

        kind = entry_kind(typeflag, raw_name, offset)
        if kind != "file" and size:
            raise refusal(offset, raw_name, f"a {kind} entry with size {size}",
                          f"size 0 for a {kind} (its data framing would be ambiguous)")

        kinds = self.kinds
        path = normalize(raw_name, offset, "name")
        if not path:
            if kind != "dir":
                raise refusal(offset, raw_name, f"the tree root is a {kind}", "the root to be a directory")
            if self.root_seen:
                raise refusal(offset, raw_name, "the tree root appears twice", "each path once")
            self.root_seen = True
        else:
            previous = kinds.get(path)
            if previous is not None and not (previous == "implicit" and kind == "dir"):
                what = "a directory implied by an earlier path" if previous == "implicit" else f"a {previous}"
                raise refusal(offset, raw_name, f"a duplicate path (already {what} earlier in the stream)",
                              "each path once")
            self._check_parents(path, raw_name, offset)

        link = None
        if kind == "symlink":
            if not link_raw:
                raise refusal(offset, raw_name, "a symlink with an empty target", "a non-empty target")
            if b"\0" in link_raw:
                raise refusal(offset, raw_name, "a symlink target with a NUL byte", "targets without NUL")
            link = link_raw
        elif kind == "hardlink":
            if not link_raw:
                raise refusal(offset, raw_name, "a hardlink with an empty target",
                              "the path of an earlier file")
            link = normalize(link_raw, offset, f"hardlink target {show(link_raw)}")
            target_kind = kinds.get(link)
            if target_kind not in ("file", "hardlink"):
                found = ("a hardlink to a path not seen earlier in the stream" if target_kind is None
                         else f"a hardlink to a {target_kind if target_kind != 'implicit' else 'dir'}")
                raise refusal(offset, raw_name, f"{found} ({show(link_raw)})",
                              "hardlinks only to regular files that appear earlier in the same stream")

        if path:
            kinds[path] = kind
        return kind, path, link

    def _check_parents(self, path: bytes, raw_name: bytes, offset: int) -> None:
        kinds = self.kinds
        parent = path.rpartition(b"/")[0]
        pk = kinds.get(parent)
        if pk == "dir" or pk == "implicit":
            return
        if pk is None:
            if self.require_parents:
                raise refusal(
                    offset, raw_name, f"its parent directory {show(parent)} did not appear earlier in the stream",
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
                    _parent_is(k, prefix, raw_name, offset)
            return
        _parent_is(pk, parent, raw_name, offset)


def entry_kind(typeflag: int, raw_name: bytes, offset: int) -> str:
    """``"file"``, ``"dir"``, ``"symlink"`` or ``"hardlink"``; anything else is refused."""
    if typeflag in FILE_TYPES:
        if typeflag == 0 and raw_name.endswith(b"/"):
            return "dir"  # pre-POSIX directory
        if raw_name.endswith(b"/"):
            raise refusal(offset, raw_name, "a regular file whose name ends in '/'",
                          "'/' only at the end of directory names")
        return "file"
    if typeflag == TYPE_DIR:
        return "dir"
    if typeflag == TYPE_SYMLINK:
        return "symlink"
    if typeflag == TYPE_HARDLINK:
        return "hardlink"
    described = TYPE_NAMES.get(typeflag, f"an unknown entry type {chr(typeflag)!r}")
    raise refusal(
        offset, raw_name, f"{described} (type {chr(typeflag)!r})",
        "only regular files, directories, symlinks and hardlinks in a staged tree",
        "remove it from the staged tree on the guest (devices and FIFOs are never part of a tree)",
    )


def normalize(raw: bytes, offset: int, what: str) -> bytes:
    """A raw name as a relative path without ``.``/empty components; absolute, ``..`` and NUL refused."""
    if b"\0" in raw:
        raise refusal(offset, raw, f"{what} contains a NUL byte", "names without NUL bytes")
    if raw.startswith(b"/"):
        raise refusal(
            offset, raw, f"{what} is absolute", "paths relative to the staged tree",
            "create the stream with `tar cf - -C DIR .` (never with absolute paths or -P)",
        )
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise refusal(offset, raw, f"{what} has a '..' component", "paths inside the staged tree")
    return b"/".join(parts)


def _parent_is(kind: str, parent: bytes, raw_name: bytes, offset: int):
    if kind == "symlink":
        raise refusal(
            offset, raw_name, f"the path goes through the symlink {show(parent)} seen earlier in the stream",
            "no entry below a symlink (writing it would follow the link out of the tree)",
        )
    raise refusal(offset, raw_name, f"its parent {show(parent)} is a {kind}, not a directory",
                  "entries only below directories")
