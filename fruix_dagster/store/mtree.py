"""A manifest in FreeBSD ``mtree(8)`` syntax, with ``sha256digest``.

Full-path form (``./usr/include/sys/param.h type=file …``), readable by
``mtree -f`` on FreeBSD and by NetBSD's mtree (Debian ``mtree-netbsd``).
Names are encoded like ``strsvis(3)`` with ``VIS_OCTAL``: every byte outside
printable ASCII, and the characters mtree treats specially, as ``\\ooo``.

Every entry carries its owner and group, its full mode (setuid, setgid,
sticky) and its file flags (``flags=schg``; ``flags=none`` for none, as
FreeBSD's ``mtree -c`` writes).  Owners are written as ``uname=``/``gname=``
when this host knows the name under the same id, else as ``uid=``/``gid=``:
mtree refuses to read a spec naming a user or group the host lacks
("unknown group `wheel'" on Debian), and the ids are what the host copy
holds.  This file is only a view of ``manifest.jsonl`` (whose sha256 is the
tree digest), so it may differ between hosts; the digest never does.
"""

from __future__ import annotations

import functools
import grp
import pwd

from fruix_dagster.tree.manifest import Entry, Manifest

_SPECIAL = set(b" \t\n\\#*?[]=")


def encode_name(raw: bytes) -> str:
    out = []
    for b in raw:
        if 0x21 <= b <= 0x7E and b not in _SPECIAL:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _host_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, UnicodeEncodeError):
        return None


@functools.lru_cache(maxsize=1024)
def _host_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except (KeyError, UnicodeEncodeError):
        return None


def owner_words(e: Entry) -> str:
    user = f"uname={encode_name(e.uname.encode('utf-8', 'surrogateescape'))}" \
        if e.uname and _host_uid(e.uname) == e.uid else f"uid={e.uid}"
    group = f"gname={encode_name(e.gname.encode('utf-8', 'surrogateescape'))}" \
        if e.gname and _host_gid(e.gname) == e.gid else f"gid={e.gid}"
    return f"{user} {group}"


def render_mtree(manifest: Manifest, root_mode: int = 0o755, root_owner: str = "") -> bytes:
    lines = ["#mtree", f". type=dir mode={root_mode:04o}{' ' + root_owner if root_owner else ''}"]
    for e in manifest:
        name = "./" + encode_name(e.path)
        meta = f"{owner_words(e)} mode={e.mode:04o}"
        if e.kind == "dir":
            lines.append(f"{name} type=dir {meta} flags={e.flags or 'none'}")
        elif e.kind == "symlink":
            lines.append(f"{name} type=link {meta} link={encode_name(e.link or b'')}")
        else:
            lines.append(f"{name} type=file {meta} size={e.size} sha256digest={e.sha256} "
                         f"flags={e.flags or 'none'}")
    return ("\n".join(lines) + "\n").encode("ascii")
