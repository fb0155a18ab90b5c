"""Durability of store entries: data on disk before the rename that publishes it.

A rename is atomic but not durable by itself: after a power loss the new name
may survive while the data it points to does not (ext4, UFS with soft updates
and ZFS all reorder them).  So before ``rename(tmp, final)`` every file and
directory of the entry is flushed, and after it the store root (the directory
holding the new name) is flushed too.

Flushing a collected world file by file costs one journal commit per
``fsync``; on Linux ``syncfs(2)`` flushes the whole file system holding the
entry in one call (a superset of fsyncing each of its files and directories),
so it is used where the C library has it; elsewhere (FreeBSD, macOS) every
file and directory is fsynced, deepest first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
from pathlib import Path

_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_O_FILE = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _load_syncfs():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, _O_DIR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, _O_FILE)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: str | os.PathLike, *, use_syncfs: bool = True) -> str:
    """Flush every file and directory under root (root included); return how."""
    if use_syncfs and _SYNCFS is not None:
        fd = os.open(root, _O_DIR)
        try:
            if _SYNCFS(fd) == 0:
                return "syncfs"
        finally:
            os.close(fd)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(full).st_mode):
                fsync_file(full)
        fsync_dir(dirpath)
    return "fsync"


def publish_rename(tmp: Path, final: Path) -> None:
    """Flush tmp, rename it to final, flush the directory holding final.

    Raises what ``os.rename`` raises (e.g. when final already exists).
    """
    sync_tree(tmp)
    os.rename(tmp, final)
    fsync_dir(final.parent)


def replace_file(path: Path, data: bytes) -> None:
    """Write data to path durably: temporary file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
