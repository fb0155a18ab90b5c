"""Owners, groups and file flags of one tar entry (ustar fields, pax records).

* ustar: ``uid`` (bytes 108–115), ``gid`` (116–123), ``uname`` (265–296),
  ``gname`` (297–328); GNU headers keep the same fields;
* pax: ``uid``, ``gid``, ``uname``, ``gname`` override them (POSIX.1-2001),
  and ``SCHILY.fflags`` carries the file flags, which bsdtar writes (from
  ``st_flags`` on FreeBSD; on Linux from the inode flags, ``chattr +i``
  becoming ``schg``).

Names are kept as text (UTF-8, ``surrogateescape``); a name with a newline
or over 255 bytes, an id of 2**32 or more, or flags that are not
comma-separated lowercase words are refused.  ``OwnerReader`` caches what it
decoded: a world has a handful of distinct names and flag sets, and this
runs once per entry.
"""

from __future__ import annotations

import re

from fruix_dagster.tree.tarformat import number, refusal

_FLAG_WORD = re.compile(rb"[a-z0-9]+").fullmatch
_ID_LIMIT = 1 << 32


class OwnerReader:
    """Reads (uname, gname, uid, gid, flags) of entries, with small caches."""

    __slots__ = ("_names", "_flags", "_owners")

    def __init__(self) -> None:
        self._names: dict[bytes, str] = {}
        self._flags: dict[bytes, str] = {b"": ""}
        # the header's owner bytes (uid, gid, uname, gname) -> their reading: a world has a handful
        self._owners: dict[bytes, tuple[str, str, int, int, str]] = {}

    def read(self, header: bytes, pax: dict[bytes, bytes] | None, offset: int, entry: bytes
             ) -> tuple[str, str, int, int, str]:
        if pax is None:
            key = header[108:124] + header[265:329]
            owner = self._owners.get(key)
            if owner is None:
                owner = self._owners[key] = self._read(header, None, offset, entry)
            return owner
        return self._read(header, pax, offset, entry)

    def _read(self, header: bytes, pax: dict[bytes, bytes] | None, offset: int, entry: bytes
              ) -> tuple[str, str, int, int, str]:
        uid = number(header[108:116], "uid", offset, entry)
        gid = number(header[116:124], "gid", offset, entry)
        uname_raw = header[265:297].split(b"\0", 1)[0]
        gname_raw = header[297:329].split(b"\0", 1)[0]
        flags_raw = b""
        if pax is not None:
            if b"uid" in pax:
                uid = self._pax_id(pax[b"uid"], "uid", offset, entry)
            if b"gid" in pax:
                gid = self._pax_id(pax[b"gid"], "gid", offset, entry)
            uname_raw = pax.get(b"uname", uname_raw)
            gname_raw = pax.get(b"gname", gname_raw)
            flags_raw = pax.get(b"SCHILY.fflags", b"")
        if uid >= _ID_LIMIT or gid >= _ID_LIMIT:
            raise refusal(offset, entry, f"uid {uid} / gid {gid}", "user and group ids below 2**32")
        names = self._names
        uname = names.get(uname_raw)
        if uname is None:
            uname = names[uname_raw] = self._name(uname_raw, "uname", offset, entry)
        gname = names.get(gname_raw)
        if gname is None:
            gname = names[gname_raw] = self._name(gname_raw, "gname", offset, entry)
        flags = self._flags.get(flags_raw)
        if flags is None:
            flags = self._flags[flags_raw] = self._parse_flags(flags_raw, offset, entry)
        return uname, gname, uid, gid, flags

    @staticmethod
    def _pax_id(v: bytes, what: str, offset: int, entry: bytes) -> int:
        if not v or not v.isdigit() or len(v) > 10 or int(v) >= _ID_LIMIT:
            raise refusal(offset, entry, f"pax {what} {v[:40]!r} is not a decimal id below 2**32",
                          f"a numeric {'user' if what == 'uid' else 'group'} id")
        return int(v)

    @staticmethod
    def _name(raw: bytes, what: str, offset: int, entry: bytes) -> str:
        if b"\n" in raw or b"\0" in raw or len(raw) > 255:
            raise refusal(offset, entry, f"{what} {raw[:40]!r} holds a newline or NUL or is over 255 bytes",
                          "a user or group name")
        return raw.decode("utf-8", "surrogateescape")

    @staticmethod
    def _parse_flags(raw: bytes, offset: int, entry: bytes) -> str:
        words = sorted({w for w in raw.split(b",") if w})
        if len(raw) > 200 or any(not _FLAG_WORD(w) for w in words):
            raise refusal(offset, entry, f"pax SCHILY.fflags {raw[:60]!r} is not a list of flag names",
                          "comma-separated flag names such as schg,uappnd")
        return ",".join(w.decode("ascii") for w in words)
