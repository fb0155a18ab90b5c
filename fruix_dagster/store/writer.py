"""Writing a tree into a directory while it streams (a ``TreeSink``).

The tar reader has already refused absolute paths, ``..``, paths through
symlinks, devices and unseen hardlink targets; this sink still opens files
with ``O_NOFOLLOW | O_EXCL`` so nothing it writes can land outside ``dest``.
Directory modes are applied at the end (deepest first) so a ``0555``
directory does not stop its own children from being written.

Modes are kept in full (setuid, setgid, sticky).  Owners are kept when the
store runs as root, by the numeric ids of the stream (like ``tar -x
--numeric-owner``: the names are the guest's, which this host may not
have), chown before chmod so the chown does not clear setuid bits; they are
recorded in the manifest either way.  File flags are recorded, never set:
an ``schg`` file in the store could not be garbage-collected.
"""

from __future__ import annotations

import errno
import os

from fruix_dagster.errors import StoreError
from fruix_dagster.tree.manifest import Entry, TreeSink
from fruix_dagster.tree.tarstream import Member

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class DirectoryWriter(TreeSink):
    def __init__(self, dest: bytes, describe: str):
        self.dest = dest
        self.describe = describe
        self._fd: int | None = None
        self._dirs: list[tuple[bytes, int]] = []
        self.root_mode = 0o755
        self.root_member: Member | None = None
        self.chown = os.geteuid() == 0 if hasattr(os, "geteuid") else False

    def _full(self, path: bytes) -> bytes:
        return os.path.join(self.dest, path) if path else self.dest

    def begin(self, member: Member) -> None:
        full = self._full(member.path)
        try:
            if member.kind == "dir":
                if member.path:
                    os.mkdir(full, 0o700)
                    if self.chown:
                        os.chown(full, member.uid, member.gid)
                    self._dirs.append((full, member.mode))
                else:
                    self.root_mode = member.mode
                    self.root_member = member
            elif member.kind == "file":
                self._fd = os.open(full, _FLAGS, 0o600)
            elif member.kind == "symlink":
                os.symlink(member.link, full)
                if self.chown:
                    os.lchown(full, member.uid, member.gid)
            elif member.kind == "hardlink":
                os.link(self._full(member.link), full, follow_symlinks=False)
        except OSError as exc:
            raise self._error(exc, member.path) from exc

    def write(self, piece: memoryview) -> None:
        assert self._fd is not None
        fd = self._fd
        try:
            while piece:
                n = os.write(fd, piece)
                piece = piece[n:]
        except OSError as exc:
            raise self._error(exc, None) from exc

    def end(self, member: Member, entry: Entry | None) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self.chown:
                    os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode)
            except OSError as exc:
                raise self._error(exc, member.path) from exc
            finally:
                os.close(fd)

    def finish(self) -> None:
        for full, mode in reversed(self._dirs):
            os.chmod(full, mode)
        if self.chown and self.root_member is not None:
            os.chown(self.dest, self.root_member.uid, self.root_member.gid)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _error(self, exc: OSError, path: bytes | None) -> StoreError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreError(
                f"{self.describe}: the store's file system ran out of space while writing "
                f"{os.fsdecode(path or b'a file')}; nothing was published. Free space in the store "
                f"(fruix-dagster store gc) or move store.root to a larger file system")
        shown = os.fsdecode(path) if path is not None else "a file"
        return StoreError(f"{self.describe}: cannot write {shown} into the store: {exc}")
