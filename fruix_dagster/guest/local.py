"""The ``local`` transport: the guest is this host, commands run via subprocess."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from typing import Iterator, Sequence

from fruix_dagster.errors import GuestError
from fruix_dagster.guest.transport import ByteStream, CommandResult, Transport


class LocalTransport(Transport):
    description = "local host"

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        argv = tuple(argv)
        try:
            proc = subprocess.run(argv, input=input if input is not None else b"",
                                  capture_output=True, timeout=timeout)
        except FileNotFoundError as exc:
            return CommandResult(argv, 127, b"", str(exc).encode())
        except subprocess.TimeoutExpired as exc:
            raise GuestError(
                f"command `{argv[0]}` on {self.description} was expected to finish within "
                f"{timeout:g} s and did not; it was killed") from exc
        return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)

    @contextmanager
    def open_stream(self, argv: Sequence[str]) -> Iterator[ByteStream]:
        argv = tuple(argv)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=0)
        except FileNotFoundError as exc:
            raise GuestError(f"{argv[0]} was expected on {self.description}: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        status = proc.wait()
        CommandResult(argv, status, b"", err).check(f"streaming from {self.description}")
