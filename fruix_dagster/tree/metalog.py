"""METALOG: the owners, groups, modes and flags of a ``-DNO_ROOT`` install.

With ``-DNO_ROOT`` FreeBSD's build installs as an ordinary user and, instead
of chown/chflags, appends one mtree(8) line per entry to ``METALOG``
(Makefile.inc1: ``METALOG_INSTALLFLAGS= -U -M ${METALOG} -D ...``; the
hierarchy comes from ``mtree -C`` of etc/mtree/*.dist).  install(1)
(usr.bin/xinstall/xinstall.c, ``metadata_log``) writes::

    ./usr/bin/su type=file uname=root gname=wheel mode=04555 size=16000 flags=schg
    ./usr/lib/libsample.so type=link uname=root gname=wheel mode=0755 link=libsample.so.1
    . type=dir uname=root gname=wheel mode=0755

Names are ``strsvis(3)``-encoded (``VIS_OCTAL``: ``\\ooo``; links
``VIS_CSTYLE``: ``\\n``, ``\\s`` …).  The release build makes its sets from
these lines (``tar cf - @base.meta``), so they, not the files' real owners,
are the truth for a NO_ROOT stage.

``parse_metalog(data)`` returns ``{path: MetaEntry}`` (``path`` as in a
manifest: relative, ``b""`` for the root).  A path listed again later
overrides the earlier line (a later install step replaced the file), as the
release's ``tar @METALOG`` does.  Anything else a build would never write is
refused with ``TreeError`` naming the line: a line not starting with ``.``,
absolute paths, ``..``, NUL, an unknown keyword or type, ``/set`` lines, a
bad mode, size, flag or name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fruix_dagster.errors import TreeError
from fruix_dagster.tree.manifest import Entry, Manifest

__all__ = ["FLAG_NAMES", "MetaEntry", "apply_metalog", "normalize_flags", "parse_metalog"]

#: FreeBSD's file flag names (lib/libc/gen/strtofflags.c), the no- forms excepted.
FLAG_NAMES = frozenset((
    "arch", "archived", "nodump", "opaque", "sappnd", "sappend", "schg", "schange", "simmutable",
    "sunlnk", "sunlink", "uappnd", "uappend", "uarch", "uarchive", "uchg", "uchange", "uimmutable",
    "uunlnk", "uunlink", "offline", "uoffline", "rdonly", "urdonly", "readonly", "sparse", "usparse",
    "system", "usystem", "reparse", "ureparse", "hidden", "uhidden",
))
# the synonyms strtofflags(3) accepts, mapped to the name fflagstostr(3) prints
_CANONICAL = {"archived": "arch", "sappend": "sappnd", "schange": "schg", "simmutable": "schg",
              "sunlink": "sunlnk", "uappend": "uappnd", "uarchive": "uarch", "uchange": "uchg",
              "uimmutable": "uchg", "uunlink": "uunlnk", "rdonly": "urdonly", "readonly": "urdonly",
              "sparse": "usparse", "system": "usystem", "reparse": "ureparse", "hidden": "uhidden",
              "offline": "uoffline"}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
_TYPES = {"file": "file", "dir": "dir", "link": "symlink"}
_KEYS = frozenset(("type", "uname", "gname", "uid", "gid", "mode", "size", "link", "flags", "time",
                   "sha256digest", "sha256", "sha512digest", "sha512", "md5digest", "md5", "rmd160digest",
                   "sha1digest", "tags", "nlink"))
_CSTYLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "a": "\a", "v": "\v", "f": "\f", "s": " ",
           "E": "\x1b", "\\": "\\", "0": "\0"}


@dataclass(frozen=True, slots=True)
class MetaEntry:
    path: bytes
    kind: str           # "file", "dir" or "symlink" (manifest kinds)
    uname: str
    gname: str
    mode: int
    flags: str          # canonical: sorted, comma-separated; "" for none
    link: bytes | None
    size: int | None
    line: int


def normalize_flags(text: str, where: str = "flags") -> str:
    """Canonical flags text: sorted FreeBSD names joined by ','; "" for none."""
    if text in ("", "none", "0"):
        return ""
    names = set()
    for word in text.split(","):
        if word not in FLAG_NAMES:
            raise TreeError(f"{where}: unknown file flag {word!r}; expected FreeBSD flag names "
                            f"(schg, uchg, sappnd, nodump, …) separated by commas")
        names.add(_CANONICAL.get(word, word))
    return ",".join(sorted(names))


def _unvis(text: str, line: int, what: str) -> bytes:
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        octal = text[i + 1:i + 4]
        if len(octal) == 3 and all(d in "01234567" for d in octal):
            value = int(octal, 8)
            if value > 0xFF:
                raise TreeError(f"METALOG line {line}: {what} has the escape \\{octal} above \\377")
            out.append(value)
            i += 4
        elif i + 1 < n and text[i + 1] in _CSTYLE:
            out += _CSTYLE[text[i + 1]].encode()
            i += 2
        else:
            raise TreeError(f"METALOG line {line}: {what} {text[:120]!r} has an unknown escape at "
                            f"{text[i:i + 4]!r}; expected strsvis(3) escapes (\\ooo, \\n, \\s, \\\\)")
    return bytes(out)


def _path(raw: bytes, line: int) -> bytes:
    if raw == b".":
        return b""
    if not raw.startswith(b"./"):
        raise TreeError(f"METALOG line {line}: path {raw[:120]!r} does not start with './'; expected paths "
                        "relative to DESTDIR as install -M writes them (./usr/bin/su)")
    rest = raw[2:]
    parts = rest.split(b"/")
    if not rest or b"\0" in rest or any(p in (b"", b".", b"..") for p in parts):
        raise TreeError(f"METALOG line {line}: path {raw[:120]!r} is not a normalized path inside DESTDIR "
                        "(empty, '.', '..' components or NUL); refusing a METALOG that points outside the stage")
    return rest


def parse_metalog(data: bytes) -> dict[bytes, MetaEntry]:
    if not isinstance(data, (bytes, bytearray)):
        raise TreeError(f"METALOG is a {type(data).__name__}; expected the file's bytes")
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError as exc:
        raise TreeError(f"METALOG has a non-ASCII byte at offset {exc.start}; install -M encodes every name "
                        "with strsvis(3); the METALOG is damaged or was not written by install(1)") from None
    entries: dict[bytes, MetaEntry] = {}
    for number, raw_line in enumerate(text.split("\n"), 1):
        line = raw_line.strip(" \t")
        if not line or line.startswith("#"):
            continue
        if line.startswith("/"):
            raise TreeError(f"METALOG line {number}: {line[:80]!r} is an mtree {line.split()[0]} command; "
                            "expected one full-path entry per line as install -M and mtree -C write them")
        words = line.split()
        path = _path(_unvis(words[0], number, "path"), number)
        kv: dict[str, str] = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq or key not in _KEYS:
                raise TreeError(f"METALOG line {number}: unknown keyword {word[:60]!r}; expected "
                                f"keyword=value with one of {', '.join(sorted(_KEYS))}")
            if key in kv:
                raise TreeError(f"METALOG line {number}: keyword {key!r} given twice")
            kv[key] = value
        entries[path] = _entry(path, kv, number, words[0])
    return entries


def _entry(path: bytes, kv: dict[str, str], number: int, shown: str) -> MetaEntry:
    where = f"METALOG line {number} ({shown[:120]})"
    kind = _TYPES.get(kv.get("type", ""))
    if kind is None:
        raise TreeError(f"{where}: type={kv.get('type')!r}; expected file, dir or link (a staged tree holds "
                        "no devices, FIFOs or sockets)")
    for key in ("uname", "gname", "mode"):
        if key not in kv:
            raise TreeError(f"{where}: no {key}=; expected uname, gname and mode on every entry")
    for key in ("uname", "gname"):
        if not _NAME.fullmatch(kv[key]):
            raise TreeError(f"{where}: {key}={kv[key][:40]!r} is not a user or group name (letters, digits, "
                            "'_', '.', '-', at most 32)")
    mode_text = kv["mode"]
    if not re.fullmatch(r"0?[0-7]{1,4}", mode_text) or int(mode_text, 8) > 0o7777:
        raise TreeError(f"{where}: mode={mode_text[:20]!r}; expected an octal mode up to 07777")
    size = None
    if "size" in kv:
        if not kv["size"].isdigit() or len(kv["size"]) > 20:
            raise TreeError(f"{where}: size={kv['size'][:30]!r}; expected a decimal byte count")
        size = int(kv["size"])
        if kind != "file":
            raise TreeError(f"{where}: size= on a {kv['type']}; expected size only on files")
    link = None
    if kind == "symlink":
        if not kv.get("link"):
            raise TreeError(f"{where}: type=link without link=; expected the link's target")
        link = _unvis(kv["link"], number, "link")
        if b"\0" in link:
            raise TreeError(f"{where}: the link target holds a NUL byte")
    elif "link" in kv:
        raise TreeError(f"{where}: link= on a {kv['type']}; expected link only on type=link")
    for key in ("uid", "gid", "nlink"):
        if key in kv and not kv[key].isdigit():
            raise TreeError(f"{where}: {key}={kv[key][:20]!r}; expected a decimal number")
    flags = normalize_flags(kv.get("flags", ""), where)
    return MetaEntry(path, kind, kv["uname"], kv["gname"], int(mode_text, 8), flags, link, size, number)


def apply_metalog(manifest: Manifest, meta: dict[bytes, MetaEntry],
                  ids: dict[tuple[str, str], tuple[int, str]]) -> Manifest:
    """The manifest with owners, groups, modes and flags taken from a METALOG.

    ``ids`` maps ``("u", name)`` / ``("g", name)`` to ``(id, name as the
    guest's tar would write it)``.  Every entry of the tree must be in the
    METALOG and every METALOG entry in the tree, with the same kind (and link
    target, and size when given): a METALOG that does not describe the tree
    it came with is refused, nothing is guessed.
    """
    missing = [e.path for e in manifest if e.path not in meta]
    extra = [p for p in meta if p and manifest.get(p) is None]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} staged entries are not in the METALOG (first: "
                         f"{', '.join(repr(p.decode('utf-8', 'replace')) for p in missing[:5])})")
        if extra:
            parts.append(f"{len(extra)} METALOG entries are not in the stage (first: "
                         f"{', '.join(repr(p.decode('utf-8', 'replace')) for p in extra[:5])})")
        raise TreeError(f"the METALOG does not describe the staged tree: {'; '.join(parts)}; expected one line "
                        "per staged entry as install -M writes them; re-stage into an empty directory with a "
                        "fresh METALOG")
    out = []
    for e in manifest:
        m = meta[e.path]
        where = f"METALOG line {m.line} ({e.path.decode('utf-8', 'replace')!r})"
        if m.kind != e.kind:
            raise TreeError(f"{where}: says {m.kind}, the stage has a {e.kind}; the METALOG is stale or forged")
        if m.kind == "symlink" and m.link != e.link:
            raise TreeError(f"{where}: says link={m.link!r}, the stage's symlink points to {e.link!r}")
        if m.size is not None and m.size != e.size:
            raise TreeError(f"{where}: says size={m.size}, the staged file has {e.size} bytes")
        uid, uname = ids[("u", m.uname)]
        gid, gname = ids[("g", m.gname)]
        out.append(Entry(e.path, e.kind, e.mode if e.kind == "symlink" else m.mode, e.size, e.sha256, e.link,
                         uname, gname, uid, gid, "" if e.kind == "symlink" else m.flags))
    return Manifest(out)
