"""Release-style distribution sets from stored trees.

``base.txz`` (world stage) and ``kernel.txz`` (kernel stage), optionally
``headers.txz``/``bootloader.txz`` for the slices, plus FreeBSD's release
``MANIFEST`` (tab-separated: file, sha256, entry count, component,
"description", on/off) and ``CHECKSUM.SHA256`` (``SHA256 (file) = hex``).
Archive members are owned by root:wheel and sorted, with mtimes set to the
entry's publication time, so exporting the same entry twice gives the same
bytes.
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

SETS = {
    "world_stage": ("base.txz", "base", "Base system (MANDATORY)", "on"),
    "kernel_stage": ("kernel.txz", "kernel", "Kernel (MANDATORY)", "on"),
    "headers_slice": ("headers.txz", "headers", "Development headers and mk files", "off"),
    "bootloader_slice": ("bootloader.txz", "bootloader", "Boot loader files", "off"),
}


def _archive(tree: Path, dest: Path, mtime: int) -> int:
    count = 0
    with tarfile.open(dest, "w:xz", format=tarfile.PAX_FORMAT) as tf:
        paths = sorted((os.fsencode(p) for p in _walk(tree)))
        for raw in [b"."] + paths:
            full = os.path.join(os.fsencode(tree), raw)
            info = tf.gettarinfo(os.fsdecode(full), arcname="./" + os.fsdecode(raw) if raw != b"." else ".")
            info.uid = info.gid = 0
            info.uname, info.gname = "root", "wheel"
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
        store.load_manifest(entry)  # refuses a damaged entry
        try:
            mtime = int(json.loads((entry / "info.json").read_text())["published"])
        except (OSError, ValueError, KeyError):
            mtime = int(entry.stat().st_mtime)
        tmp = dest / f".{filename}.tmp"
        try:
            count = _archive(entry / "tree", tmp, mtime)
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
