"""Independent computations for assertions: a tree's sizes, counts, hashes and digest.

Written from the documented manifest format (one canonical JSON object per
entry, sorted by raw path bytes; tree_sha256 = sha256 of those lines), without
using fruix_dagster.tree, so a bug there cannot hide in both.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

# lsattr's letters and the FreeBSD names bsdtar writes for them (SCHILY.fflags)
_LSATTR = {"i": "schg", "a": "sappnd", "d": "nodump"}


def _name(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return ""


def lsattr_flags(root: Path) -> dict[bytes, str]:
    """Flags of every file and directory under root, from one `lsattr -R -a` run."""
    out = subprocess.run(["lsattr", "-R", "-a", os.fsencode(root)], capture_output=True).stdout
    broot = os.fsencode(root)
    flags: dict[bytes, str] = {}
    for line in out.split(b"\n"):
        attrs, sep, path = line.partition(b" ")
        if not sep or not path.startswith(broot + b"/") or path.endswith((b"/.", b"/..")):
            continue
        names = sorted({_LSATTR[c] for c in attrs.decode() if c in _LSATTR})
        flags[os.path.relpath(path, broot)] = ",".join(names)
    return flags


def walk(root: Path, flags_from: Path | None = None) -> dict[bytes, dict]:
    out: dict[bytes, dict] = {}
    broot = os.fsencode(root)
    flags = lsattr_flags(flags_from or root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, broot)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = {"type": "symlink", "mode": 0o777, "size": 0, "sha256": None,
                            "link": os.readlink(full)}
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = {"type": "dir", "mode": stat.S_IMODE(st.st_mode), "size": 0,
                            "sha256": None, "link": None}
            else:
                data = Path(os.fsdecode(full)).read_bytes()
                out[rel] = {"type": "file", "mode": stat.S_IMODE(st.st_mode), "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(), "link": None}
            out[rel].update(uid=st.st_uid, gid=st.st_gid, uname=_name(pwd.getpwuid, st.st_uid),
                            gname=_name(grp.getgrgid, st.st_gid),
                            flags="" if stat.S_ISLNK(st.st_mode) else flags.get(rel, ""))
    return out


def tree_facts(root: Path, flags_from: Path | None = None) -> dict:
    """Sizes, counts, hashes and the digest of the tree under root.

    Owners are root's files'; file flags are read (lsattr) from ``flags_from``
    when given: a store's copy never carries flags, so its facts take them
    from the guest tree it was collected from.
    """
    entries = walk(root, flags_from)
    lines = []
    for path in sorted(entries):
        e = entries[path]
        obj = {"path": path.decode("utf-8", "surrogateescape"), "type": e["type"], "mode": e["mode"],
               "size": e["size"], "sha256": e["sha256"],
               "link": None if e["link"] is None else e["link"].decode("utf-8", "surrogateescape"),
               "uid": e["uid"], "gid": e["gid"], "uname": e["uname"], "gname": e["gname"], "flags": e["flags"]}
        lines.append(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n")
    return {
        "size_bytes": sum(e["size"] for e in entries.values() if e["type"] == "file"),
        "file_count": sum(1 for e in entries.values() if e["type"] != "dir"),
        "tree_sha256": hashlib.sha256("".join(lines).encode()).hexdigest(),
        "sha256": {p.decode("utf-8", "surrogateescape"): e["sha256"] for p, e in entries.items() if e["type"] == "file"},
    }
