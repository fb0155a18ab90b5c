"""``fruix-dagster store verify``: re-hash stored trees against their manifests.

For every entry (of one target, or all): the manifest must hash to the
digest in the entry's name, ``info.json`` must name the same digest, and the
tree on disk must hold exactly the manifest's entries with the same type,
mode, size, sha256 and link target (owners too when the store runs as root,
since it kept them; flags are never on the host copy).  Every mismatch is
named; nothing is repaired or deleted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fruix_dagster.errors import FruixError
from fruix_dagster.store.store import ArtifactStore
from fruix_dagster.tree.manifest import Manifest, manifest_from_dir


@dataclass(frozen=True)
class Problem:
    entry: Path
    path: str          # inside the tree ("" for the entry itself)
    what: str


def _show(path: bytes) -> str:
    return os.fsdecode(path)


def verify_entry(store: ArtifactStore, entry: Path, *, owners: bool) -> list[Problem]:
    problems: list[Problem] = []
    try:
        manifest = store.load_manifest(entry)
    except (FruixError, OSError) as exc:
        return [Problem(entry, "", f"manifest.jsonl: {exc}")]
    try:
        info = json.loads((entry / "info.json").read_text())
        if info.get("tree_sha256") != manifest.digest():
            problems.append(Problem(entry, "", f"info.json names tree_sha256 {info.get('tree_sha256')!r}, "
                                               f"the manifest hashes to {manifest.digest()}"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(entry, "", f"info.json unreadable: {exc}"))
    try:
        on_disk = manifest_from_dir(entry / "tree")
    except FruixError as exc:
        return problems + [Problem(entry, "", f"tree: {exc}")]
    problems.extend(_compare(entry, manifest, on_disk, owners=owners))
    return problems


def _compare(entry: Path, expected: Manifest, found: Manifest, *, owners: bool) -> list[Problem]:
    out = []
    for e in expected:
        f = found.get(e.path)
        name = _show(e.path)
        if f is None:
            out.append(Problem(entry, name, "missing"))
        elif f.kind != e.kind:
            out.append(Problem(entry, name, f"is a {f.kind}, the manifest says {e.kind}"))
        elif f.sha256 != e.sha256 or f.size != e.size:
            out.append(Problem(entry, name, f"content changed: sha256 {f.sha256} ({f.size} bytes), the manifest "
                                            f"says {e.sha256} ({e.size} bytes)"))
        elif f.link != e.link:
            out.append(Problem(entry, name, f"points to {_show(f.link or b'')!r}, the manifest says "
                                            f"{_show(e.link or b'')!r}"))
        elif f.mode != e.mode:
            out.append(Problem(entry, name, f"mode {f.mode:04o}, the manifest says {e.mode:04o}"))
        elif owners and (f.uid, f.gid) != (e.uid, e.gid):
            out.append(Problem(entry, name, f"owner {f.uid}:{f.gid}, the manifest says {e.uid}:{e.gid} "
                                            f"({e.uname}:{e.gname})"))
    for f in found:
        if expected.get(f.path) is None:
            out.append(Problem(entry, _show(f.path), f"not in the manifest (an extra {f.kind})"))
    return out


def verify_store(store: ArtifactStore, target: str | None = None) -> tuple[int, list[Problem]]:
    """(entries checked, problems) for every entry, or those of one target."""
    owners = os.geteuid() == 0
    checked, problems = 0, []
    for e in store.entries():
        if target is not None and e["target"] != target:
            continue
        checked += 1
        problems.extend(verify_entry(store, e["path"], owners=owners))
    return checked, problems
