"""``manifest_from_dir``: the manifest of a tree on disk (the same as from its tar stream).

Owners and groups are named through this host's user and group databases,
as tar names them when it writes the stream.  File flags are ``st_flags`` on
the BSDs; on Linux the inode flags (``FS_IOC_GETFLAGS``) that libarchive maps
to FreeBSD names when it writes ``SCHILY.fflags``: immutable → ``schg``,
append-only → ``sappnd``, no-dump → ``nodump`` (libarchive's
archive_entry.c fflags table).
"""

from __future__ import annotations

import array
import functools
import grp
import hashlib
import os
import pwd
import stat

from fruix_dagster.errors import TreeError
from fruix_dagster.tree.manifest import SYMLINK_MODE, Entry, Manifest
from fruix_dagster.tree.tarstream import _show

__all__ = ["file_flags", "manifest_from_dir", "owners"]

_FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long) on Linux
_LINUX_FLAGS = ((0x00000010, "schg"), (0x00000020, "sappnd"), (0x00000040, "nodump"))
# FreeBSD's sys/stat.h values (also used by the other BSDs and macOS for these names)
_BSD_FLAGS = ((0x00000001, "nodump"), (0x00000002, "uchg"), (0x00000004, "uappnd"), (0x00000008, "opaque"),
              (0x00000010, "uunlnk"), (0x00010000, "arch"), (0x00020000, "schg"), (0x00040000, "sappnd"),
              (0x00100000, "sunlnk"))


@functools.lru_cache(maxsize=4096)
def _uname(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@functools.lru_cache(maxsize=4096)
def _gname(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def owners(st: os.stat_result) -> tuple[str, str, int, int]:
    return _uname(st.st_uid), _gname(st.st_gid), st.st_uid, st.st_gid


def file_flags(full: bytes, st: os.stat_result) -> str:
    """The flags of a regular file or directory, as bsdtar would record them."""
    bsd = getattr(st, "st_flags", None)
    if bsd is not None:
        return ",".join(sorted(name for bit, name in _BSD_FLAGS if bsd & bit))
    try:
        import fcntl
    except ImportError:
        return ""
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return ""
    try:
        buf = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
    except OSError:
        return ""  # a file system without inode flags
    finally:
        os.close(fd)
    return ",".join(sorted(name for bit, name in _LINUX_FLAGS if buf[0] & bit))


def _hash_file(full: bytes, st: os.stat_result, shown: str) -> tuple[int, str]:
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TreeError(f"cannot open {shown} to hash it ({exc}); expected a readable regular file; "
                        "check permissions and that nothing is changing the tree") from None
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise TreeError(f"{shown} was replaced while the tree was being read; expected a tree nobody "
                            "modifies while it is hashed; stop whatever writes to it and retry")
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        total = 0
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            h.update(view[:n])
            total += n
    finally:
        os.close(fd)
    if total != st.st_size:
        raise TreeError(f"{shown} changed size while being hashed ({st.st_size} -> {total} bytes); expected a "
                        "tree nobody modifies while it is hashed; stop whatever writes to it and retry")
    return total, h.hexdigest()


def manifest_from_dir(path: str | bytes | os.PathLike) -> Manifest:
    """Manifest of the tree under ``path`` (root excluded); uses lstat, never follows symlinks.

    Owners are this host's names for the files' ids (``""`` for an id it
    cannot name, as tar writes them); flags are read as bsdtar reads them.
    """
    root = os.fsencode(path)
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise TreeError(f"tree root {_show(root)} cannot be read ({exc}); expected an existing directory; "
                        "check the path") from None
    if not stat.S_ISDIR(st.st_mode):
        raise TreeError(f"tree root {_show(root)} is not a directory (mode {oct(st.st_mode)}); expected a real "
                        "directory, not a symlink or file; pass the directory itself")
    entries: list[Entry] = []
    stack: list[bytes] = [b""]
    while stack:
        rel_dir = stack.pop()
        full_dir = root + b"/" + rel_dir if rel_dir else root
        try:
            with os.scandir(full_dir) as it:
                children = [(d.name, d.stat(follow_symlinks=False)) for d in it]
        except OSError as exc:
            raise TreeError(f"cannot list {_show(full_dir)} ({exc}); expected a readable directory; "
                            "check permissions") from None
        for name, cst in children:
            rel = rel_dir + b"/" + name if rel_dir else name
            m = cst.st_mode
            if stat.S_ISREG(m):
                size, digest = _hash_file(root + b"/" + rel, cst, _show(root + b"/" + rel))
                entries.append(Entry(rel, "file", stat.S_IMODE(m), size, digest, None,
                                     *owners(cst), file_flags(root + b"/" + rel, cst)))
            elif stat.S_ISDIR(m):
                entries.append(Entry(rel, "dir", stat.S_IMODE(m), 0, None, None,
                                     *owners(cst), file_flags(root + b"/" + rel, cst)))
                stack.append(rel)
            elif stat.S_ISLNK(m):
                entries.append(Entry(rel, "symlink", SYMLINK_MODE, 0, None, os.readlink(root + b"/" + rel),
                                     *owners(cst), ""))
            else:
                raise TreeError(
                    f"{_show(root + b'/' + rel)} is neither a file, a directory nor a symlink (mode {oct(m)}); "
                    "expected only those in a staged tree; remove devices, FIFOs and sockets from it"
                )
    return Manifest(entries)
