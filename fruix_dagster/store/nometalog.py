"""Collecting a NO_ROOT stage: owners, groups, modes and flags from its METALOG.

The tree on the guest belongs to the unprivileged user who staged it; its
METALOG says what FreeBSD ships.  The manifest takes the METALOG's word
(``tree.metalog.apply_metalog``), names resolved on the guest
(``guest.ids``); a store running as root then gives its copy those owners
and modes too (chown before chmod, so setuid bits survive).
"""

from __future__ import annotations

import os
from pathlib import Path

from fruix_dagster.errors import FruixError, StoreError
from fruix_dagster.guest.ids import resolve_ids
from fruix_dagster.guest.transport import Transport
from fruix_dagster.tree.manifest import Manifest
from fruix_dagster.tree.metalog import apply_metalog, parse_metalog


def apply_guest_metalog(transport: Transport, metalog: str, id_etc: str, manifest: Manifest,
                        what: str) -> tuple[Manifest, dict]:
    try:
        meta = parse_metalog(transport.read_file(metalog))
        users = {m.uname for m in meta.values()}
        groups = {m.gname for m in meta.values()}
        ids = resolve_ids(transport, id_etc, users, groups)
        result = apply_metalog(manifest, meta, ids)
    except FruixError as exc:
        raise StoreError(f"collecting {what} with its METALOG {metalog}: {exc}; nothing was published") from None
    root = {}
    if b"" in meta:
        m = meta[b""]
        uid, uname = ids[("u", m.uname)]
        gid, gname = ids[("g", m.gname)]
        root = {"uname": uname, "gname": gname, "uid": uid, "gid": gid}
    return result, root


def apply_owners(tree: Path, manifest: Manifest, root: dict) -> None:
    """Give the host copy the manifest's owners and modes (never follows symlinks)."""
    base = os.fsencode(tree)
    for e in manifest:
        full = os.path.join(base, e.path)
        os.lchown(full, e.uid, e.gid)
        if e.kind != "symlink":
            os.chmod(full, e.mode)  # the tar reader refused every path through a symlink
    if root:
        mode = os.stat(base).st_mode & 0o7777
        os.chown(base, int(root["uid"]), int(root["gid"]))
        os.chmod(base, mode)
