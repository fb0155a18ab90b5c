"""Overlap reading a tar stream with parsing it: a read-ahead thread and a wider pipe.

Over a local pipe, the sender and the parser are otherwise serialized by the
pipe's small buffer; ``manifest_from_tar`` uses both helps by default.

    ReadAhead(stream, *, chunk_size=1 MiB, depth=8)   # a stream read by a thread
    widen_pipe(pipe, size=1 MiB) -> int | None       # Linux F_SETPIPE_SZ, best effort
"""

from __future__ import annotations

import queue
import threading
from typing import Protocol

CHUNK_SIZE = 1 << 20  # one read of the stream


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class ReadAhead:
    """Read a blocking stream in a background thread, up to ``depth`` chunks ahead.

    Parsing and hashing then overlap with the sender producing the stream
    (over a local pipe the two are otherwise serialized by the pipe's small
    buffer).  ``read(n)`` returns at most ``n`` bytes; an exception raised by
    the wrapped stream's ``read`` is re-raised from ``read`` here, unchanged.
    The thread reads until end of stream, so do not wrap a stream whose bytes
    after the archive you still need.  ``close()`` (or leaving the ``with``
    block) stops the thread once its current ``read`` returns: to unblock it
    at once, also close the underlying channel or end the sending process.
    """

    def __init__(self, stream: Readable, *, chunk_size: int = CHUNK_SIZE, depth: int = 8):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pending = b""
        self._eof = False
        self._thread = threading.Thread(
            target=self._run, args=(stream.read, chunk_size), name="tar-readahead", daemon=True
        )
        self._thread.start()

    def _run(self, read, size: int) -> None:
        try:
            while not self._stop.is_set():
                data = read(size)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def read(self, n: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
        elif self._eof:
            return b""
        else:
            data = self._queue.get()
            if isinstance(data, BaseException):
                self._eof = True
                raise data
            if not data:
                self._eof = True
                return b""
        if len(data) > n:
            data, self._pending = data[:n], data[n:]
        return data

    def close(self) -> None:
        self._stop.set()
        self._eof = True
        self._pending = b""

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def widen_pipe(pipe, size: int = 1 << 20) -> int | None:
    """Best effort: grow a Linux pipe's buffer (``F_SETPIPE_SZ``) so the sender can run ahead.

    ``pipe`` is a file object with ``fileno()`` or a file descriptor.  Returns
    the new buffer size, or ``None`` where that is not possible (not Linux,
    not a pipe, not permitted); the stream works either way.
    """
    try:
        import fcntl
    except ImportError:
        return None
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is None:
        return None
    fd = pipe if isinstance(pipe, int) else pipe.fileno()
    try:
        return fcntl.fcntl(fd, setsz, size)
    except OSError:
        try:
            with open("/proc/sys/fs/pipe-max-size") as f:
                most = int(f.read())
            return fcntl.fcntl(fd, setsz, min(size, most))
        except (OSError, ValueError):
            return None
