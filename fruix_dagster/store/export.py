"""Release-style distribution sets from stored trees.

``base.txz`` (world stage) and ``kernel.txz`` (kernel stage), optionally
``headers.txz``/``bootloader.txz`` for the slices, plus FreeBSD's release
``MANIFEST`` (tab-separated: file, sha256, entry count, component,
"description", on/off) and ``CHECKSUM.SHA256`` (``SHA256 (file) = hex``).
Archive members carry the owner, group, ids, full mode and file flags the
entry's manifest recorded (the guest's install, or its METALOG for a NO_ROOT
stage): FreeBSD's release makes its sets the same way, from the METALOG
(``tar cf - @base.meta`` in Makefile.inc1's packageworld under NO_ROOT), so
``/sbin/shutdown`` is ``root:operator`` 04554 and an ``schg`` file carries
pax ``SCHILY.fflags=schg`` as bsdtar writes it.  Nothing is taken from the
host copy but the bytes (the host may lack the guest's users and never
holds the flags).  Members are sorted, with mtimes set to the entry's
publication time, so exporting the same entry twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path

from fruix_dagster.errors import StoreError
from fruix_dagster.store.store import ArtifactStore
from fruix_dagster.tree.manifest import Manifest

SETS = {
    "world_stage": ("base.txz", "base", "Base system (MANDATORY)", "on"),
    "kernel_stage": ("kernel.txz", "kernel", "Kernel (MANDATORY)", "on"),
    "headers_slice": ("headers.txz", "headers", "Development headers and mk files", "off"),
    "bootloader_slice": ("bootloader.txz", "bootloader", "Boot loader files", "off"),
}


def _archive(tree: Path, dest: Path, mtime: int, manifest: Manifest, root: dict) -> int:
    count = 0
    with tarfile.open(dest, "w:xz", format=tarfile.PAX_FORMAT) as tf:
        paths = sorted((os.fsencode(p) for p in _walk(tree)))
        if len(paths) != len(manifest) or any(manifest.get(p) is None for p in paths):
            raise StoreError(f"exporting {tree}: the stored tree no longer has exactly the entries of its "
                             f"manifest; run `fruix-dagster store verify` and re-materialize the damaged entry")
        for raw in [b"."] + paths:
            full = os.path.join(os.fsencode(tree), raw)
            info = tf.gettarinfo(os.fsdecode(full), arcname="./" + os.fsdecode(raw) if raw != b"." else ".")
            if raw == b".":
                info.uid, info.gid = int(root.get("uid", 0)), int(root.get("gid", 0))
                info.uname, info.gname = root.get("uname", "root"), root.get("gname", "wheel")
                flags = ""
            else:
                e = manifest.get(raw)
                info.uid, info.gid, info.uname, info.gname = e.uid, e.gid, e.uname, e.gname
                if e.kind != "symlink":
                    info.mode = e.mode
                flags = e.flags
            info.pax_headers = {"SCHILY.fflags": flags} if flags else {}
            info.mtime = mtime
            if info.isreg():
                with open(full, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)
            count += 1
    return count


def _walk(tree: Path):
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            yield os.path.relpath(os.path.join(dirpath, name), tree)


def export_sets(store: ArtifactStore, stored_paths: dict[str, str], dest: Path) -> list[str]:
    """Write the sets for the given asset → stored tree path; return MANIFEST lines."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest_lines, checksums = [], []
    for asset, tree_path in stored_paths.items():
        filename, component, description, default = SETS[asset]
        entry = store.entry_of(tree_path)
        manifest = store.load_manifest(entry)  # refuses a damaged entry
        try:
            info = json.loads((entry / "info.json").read_text())
            mtime = int(info["published"])
        except (OSError, ValueError, KeyError):
            info, mtime = {}, int(entry.stat().st_mtime)
        root = info.get("root") if isinstance(info.get("root"), dict) else {}
        tmp = dest / f".{filename}.tmp"
        try:
            count = _archive(entry / "tree", tmp, mtime, manifest, root)
            os.replace(tmp, dest / filename)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"exporting {asset} to {dest / filename}: {exc}") from exc
        digest = hashlib.sha256((dest / filename).read_bytes()).hexdigest()
        manifest_lines.append(f'{filename}\t{digest}\t{count}\t{component}\t"{description}"\t{default}')
        checksums.append(f"SHA256 ({filename}) = {digest}")
    (dest / "MANIFEST").write_text("\n".join(manifest_lines) + "\n")
    (dest / "CHECKSUM.SHA256").write_text("\n".join(checksums) + "\n")
    os.chmod(dest / "MANIFEST", stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    return manifest_lines
