"""Independent computations for assertions: a tree's sizes, counts, hashes and digest.

Written from the documented manifest format (one canonical JSON object per
entry, sorted by raw path bytes; tree_sha256 = sha256 of those lines), without
using fruix_dagster.tree, so a bug there cannot hide in both.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path


def walk(root: Path) -> dict[bytes, dict]:
    out: dict[bytes, dict] = {}
    broot = os.fsencode(root)
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
    return out


def tree_facts(root: Path) -> dict:
    entries = walk(root)
    lines = []
    for path in sorted(entries):
        e = entries[path]
        obj = {"path": path.decode("utf-8", "surrogateescape"), "type": e["type"], "mode": e["mode"],
               "size": e["size"], "sha256": e["sha256"],
               "link": None if e["link"] is None else e["link"].decode("utf-8", "surrogateescape")}
        lines.append(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n")
    return {
        "size_bytes": sum(e["size"] for e in entries.values() if e["type"] == "file"),
        "file_count": sum(1 for e in entries.values() if e["type"] != "dir"),
        "tree_sha256": hashlib.sha256("".join(lines).encode()).hexdigest(),
        "sha256": {p.decode("utf-8", "surrogateescape"): e["sha256"] for p, e in entries.items() if e["type"] == "file"},
    }
