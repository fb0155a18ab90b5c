"""The Transport ABC: run argv on a guest and move bytes.

A transport implements two primitives, :meth:`Transport.run` (argv in, exit
status and captured output back) and :meth:`Transport.open_stream` (argv whose
stdout is read as a stream).  Everything else — reading and writing files,
streaming a tree out as tar, free and used space — is built here on those two, using
only POSIX ``sh`` and utilities that exist on FreeBSD and on Linux, so every
transport speaks to the guest the same way.

Commands are always argv lists; when a shell is needed the script is a fixed
constant and every value travels as a positional parameter (``sh -c SCRIPT sh
ARG…``), never spliced into the script text.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, Sequence

from fruix_dagster.errors import GuestError


class ByteStream(Protocol):
    def read(self, n: int = -1) -> bytes: ...


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self, where: str) -> "CommandResult":
        """Raise GuestError unless the command exited 0."""
        if self.exit_status != 0:
            err = self.stderr.decode("utf-8", "replace").strip()
            tail = "\n".join(err.splitlines()[-10:]) or "(no error output)"
            raise GuestError(
                f"{where}: command `{shlex.join(self.argv)}` was expected to exit 0, "
                f"it exited {self.exit_status}:\n{tail}"
            )
        return self


# Reads a file atomically enough for our use: cat of a regular file.
_WRITE_FILE = 'umask 077; t="$1.tmp.$$"; cat > "$t" && chmod "$2" "$t" && mv -f "$t" "$1"'
_FREE_KIB = 'df -k -P "$1" | awk \'NR==2 {print $4}\''


class Transport(ABC):
    """Runs commands on one guest.  Subclasses: local, ssh."""

    #: short human description used in messages, e.g. ``ssh root@10.0.0.5:22``
    description: str = "guest"

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run argv to completion; capture stdout and stderr."""

    @abstractmethod
    def open_stream(self, argv: Sequence[str]) -> AbstractContextManager[ByteStream]:
        """Run argv with stdout as a readable stream.

        Leaving the context waits for the command and raises GuestError if it
        exited non-zero (after the stream was fully read), or kills it if the
        reader stopped early because of an exception.
        """

    def close(self) -> None:
        """Release connections.  Idempotent."""

    # -- built on the primitives -------------------------------------------------
    def sh(self, script: str, *args: str, input: bytes | None = None,
           timeout: float | None = None) -> CommandResult:
        """Run a fixed POSIX sh script with values as positional parameters."""
        return self.run(["sh", "-c", script, "sh", *args], input=input, timeout=timeout)

    def read_file(self, path: str) -> bytes:
        return self.run(["cat", "--", path]).check(f"reading {path} on {self.description}").stdout

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.sh(_WRITE_FILE, path, format(mode, "o"), input=data).check(
            f"writing {path} on {self.description}")

    def tar_stream(self, directory: str) -> AbstractContextManager[ByteStream]:
        """One ``tar cf - -C DIR .`` stream of a whole tree."""
        return self.open_stream(["tar", "cf", "-", "-C", directory, "."])

    def free_bytes(self, path: str) -> int:
        res = self.sh(_FREE_KIB, path).check(f"measuring free space at {path} on {self.description}")
        text = res.stdout.decode().strip()
        if not text.isdigit():
            raise GuestError(
                f"free space at {path} on {self.description}: expected a number of KiB "
                f"from `df -k -P`, got {text!r}")
        return int(text) * 1024

    def used_bytes(self, path: str) -> int:
        """The disk space ``path`` uses, from ``du -sk PATH`` (one line: KiB, a tab, the path).

        Anything else on stdout is refused with a GuestError: a wrong number
        here would let a size check pass that should fail.
        """
        res = self.run(["du", "-sk", path]).check(f"measuring {path} on {self.description}")
        lines = res.stdout.decode("utf-8", "replace").splitlines()
        words = lines[0].split(None, 1) if len(lines) == 1 else []
        if not words or not words[0].isascii() or not words[0].isdigit():
            shown = res.stdout[:200].decode("utf-8", "replace")
            raise GuestError(
                f"size of {path} on {self.description}: expected `du -sk {path}` to print one line, "
                f"a number of KiB then the path, got {shown!r}; check that `du` on the guest is the "
                f"system's du(1) (nothing else of that name earlier in PATH) and that {path} is readable")
        return int(words[0]) * 1024

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
