"""Reading a detached step's state and log (guest/detached.py's protocol).

``poll_step`` asks once: the status line and at most N log bytes from an
offset.  ``stream_step`` follows over ONE guest command: frames of a status
line and the log bytes that arrived, until the step ends or a bound passes;
the host reopens at its exact byte.  Both run only POSIX sh, ps, wc, head
and tail -c on the guest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from fruix_dagster.errors import GuestError, TransportError
from fruix_dagster.guest.transport import Transport

__all__ = ["EPOCH", "STREAM_CHUNK", "StepStatus", "epoch", "poll_step", "stream_step"]


@dataclass(frozen=True)
class StepStatus:
    state: str            # "running" | "exited" | "vanished" | "starting"
    exit_status: int | None
    log_size: int
    guest_now: int = 0
    started: int | None = None

    @property
    def elapsed(self) -> int | None:
        """Seconds since the step started, by the guest's clock."""
        return None if self.started is None else self.guest_now - self.started

    @property
    def finished(self) -> bool:
        return self.state in ("exited", "vanished")


# The step's state and log size, as both _POLL and each _FOLLOW frame read
# them: `state` sets st (starting|running|exited|vanished), rc and size of $d.
_STATE = r'''
alive() { s=$(ps -p "$1" -o stat= 2>/dev/null) || return 1; case "$s" in ""|*Z*) return 1 ;; esac; }
state() {
  if [ -f "$d/status" ]; then st=exited; rc=$(cat "$d/status")
  elif [ -s "$d/pid" ] && alive "$(cat "$d/pid")"; then st=running; rc=-
  elif [ -s "$d/pid" ]; then
    if [ -f "$d/status" ]; then st=exited; rc=$(cat "$d/status"); else st=vanished; rc=-; fi
  else st=starting; rc=-
  fi
  size=$(wc -c < "$d/log" 2>/dev/null) || size=0
  size=$((size + 0))
}
'''

# $1 step dir, $2 offset, $3 max bytes.
# First line: "<state> <exit|-> <log size> <n> <guest now> <started|->", then n log bytes.
_POLL = _STATE + r'''
d=$1 off=$2 max=$3
state
n=$((size - off))
[ $n -gt "$max" ] && n=$max
[ $n -lt 0 ] && n=0
started=$(cat "$d/started" 2>/dev/null) || started=-
printf '%s %s %s %s %s %s\n' "$st" "$rc" "$size" "$n" "$(date +%s)" "${started:--}"
if [ $n -gt 0 ]; then tail -c +$((off + 1)) "$d/log" | head -c "$n"; fi
'''

# $1 step dir, $2 offset, $3 "1": follow until the step ends or $5 guest
# seconds pass, "0": one frame; $4 the sleeps after a frame without new bytes
# (seconds, space-separated; the last one repeats).
# Frames, one after another on stdout: the _POLL header line, then n log bytes.
# One exec channel for the whole follow: the per-frame cost is a few forks on
# the guest, and the bytes go out in one pipeline per frame however many.
# First line "follower <pid>": the host sends that pid SIGTERM when it closes
# the stream early (a limit, an error), and the trap ends the pending sleep
# too -- waiting on it with `wait` lets the trap run at once (POSIX wait is
# interrupted by a trapped signal) -- so a closed follow leaves nothing
# running on the guest.
_FOLLOW = _STATE + r'''
d=$1 off=$2 follow=$3 sleeps=$4 bound=$5
sp=
trap 'kill $sp 2>/dev/null; exit 0' TERM
echo "follower $$"
t0=$(date +%s)
left=$sleeps
while :; do
  state
  n=$((size - off))
  [ $n -lt 0 ] && n=0
  started=$(cat "$d/started" 2>/dev/null) || started=-
  now=$(date +%s)
  printf '%s %s %s %s %s %s\n' "$st" "$rc" "$size" "$n" "$now" "${started:--}"
  if [ $n -gt 0 ]; then
    if [ "$off" -eq 0 ]; then head -c "$n" "$d/log"
    else tail -c +$((off + 1)) "$d/log" | head -c "$n"; fi
    off=$size
    left=$sleeps
  fi
  case $st in exited|vanished) exit 0 ;; esac
  [ "$follow" = 1 ] || exit 0
  [ $((now - t0)) -ge "$bound" ] && exit 0
  if [ $n -eq 0 ]; then
    s=${left%% *}
    case $left in *" "*) left=${left#* } ;; esac
    sleep "$s" 2>/dev/null & sp=$!
    wait $sp || { sleep 1 & sp=$!; wait $sp; }
    sp=
  fi
done
'''

#: bytes handed out per piece by stream_step
STREAM_CHUNK = 8 << 20


EPOCH = re.compile(r"[0-9]+(?:[.][0-9]+)?")


def epoch(text: str) -> float:
    """Epoch seconds as the step wrapper writes them: whole, or with a fraction."""
    if not EPOCH.fullmatch(text):
        raise ValueError(f"not epoch seconds: {text!r}")
    return float(text)


def _frame_header(step_dir: str, head: bytes) -> tuple[StepStatus, int]:
    try:
        state, rc, size, n, now, started = head.decode().split(" ")
        if state not in ("running", "exited", "vanished", "starting"):
            raise ValueError(state)
        return (StepStatus(state, None if rc == "-" else int(rc), int(size), int(now),
                           None if started == "-" else int(epoch(started))), int(n))
    except ValueError as exc:
        raise GuestError(
            f"following {step_dir}: expected '<state> <rc> <size> <n> <now> <started>' from the guest, "
            f"got {head[:200]!r}") from exc


def poll_step(transport: Transport, step_dir: str, offset: int,
              max_bytes: int = 8 << 20) -> tuple[StepStatus, bytes]:
    """The step's status and at most ``max_bytes`` of its log from ``offset``, one command."""
    res = transport.sh(_POLL, step_dir, str(offset), str(max_bytes))
    res.check(f"following {step_dir}")
    head, _, data = res.stdout.partition(b"\n")
    status, n_bytes = _frame_header(step_dir, head)
    if len(data) != n_bytes:
        raise GuestError(
            f"following {step_dir}: expected {n_bytes} log bytes from the guest, got {len(data)}")
    return status, data


def stream_step(transport: Transport, step_dir: str, offset: int, *, follow: bool = True,
                poll_s: float = 1.0, bound_s: float = 300.0) -> Iterator[tuple[StepStatus, bytes]]:
    """Follow ``step_dir``'s log from byte ``offset`` over ONE guest command.

    Yields ``(status, piece)``: each frame's log bytes in pieces of at most
    STREAM_CHUNK (the status is that frame's, ``status.log_size`` the log's
    size when the frame began, so ``offset + bytes so far == log_size``
    means the frame is complete), and ``(status, b"")`` for a frame that
    brought nothing new — at most every ``poll_s`` seconds, so the caller
    can apply its time limits.  With ``follow`` it ends after the frame
    that shows the step finished, or when ``bound_s`` guest seconds have
    passed (the caller opens a new stream at its offset); without, after
    one frame.  A lost connection raises TransportError from the transport;
    bytes already yielded are exact, so resuming at the caller's offset is
    correct.
    """
    sleeps, s = [], 0.05
    while s < poll_s:
        sleeps.append(f"{s:g}")
        s *= 2
    sleeps.append(f"{poll_s:g}")
    argv = ["sh", "-c", _FOLLOW, "sh", step_dir, str(offset), "1" if follow else "0",
            " ".join(sleeps), str(max(1, int(bound_s)))]
    with transport.open_stream(argv) as src:
        buf, follower, ended = b"", None, False
        try:
            while True:
                while (nl := buf.find(b"\n")) < 0:
                    more = src.read(STREAM_CHUNK)
                    if not more:
                        if buf:
                            raise GuestError(
                                f"following {step_dir}: the guest's stream ended inside a status line: {buf[:200]!r}")
                        ended = True
                        return
                    buf = buf + more if buf else more
                if follower is None:
                    first = buf[:nl].decode("ascii", "replace")
                    if not re.fullmatch(r"follower [0-9]+", first):
                        raise GuestError(
                            f"following {step_dir}: expected 'follower <pid>' from the guest's "
                            f"follow command, got {first[:200]!r}")
                    follower, buf = first.split()[1], buf[nl + 1:]
                    continue
                status, n = _frame_header(step_dir, buf[:nl])
                rest = memoryview(buf)[nl + 1:]
                buf = b""
                if n == 0:
                    yield status, b""
                while n > 0:
                    if not rest:
                        rest = memoryview(src.read(STREAM_CHUNK))
                        if not rest:
                            raise GuestError(
                                f"following {step_dir}: expected {n} more log bytes from the guest, "
                                f"the stream ended")
                    piece, rest = rest[:n], rest[n:]
                    n -= len(piece)
                    yield status, bytes(piece)
                buf = bytes(rest)
        except TransportError:
            ended = True          # the connection is gone; so is the follower's pipe
            raise
        finally:
            if not ended and follower is not None:
                # closed early (a limit, the caller's error): stop the
                # follower and its sleep now rather than at its next write
                transport.run(["kill", "-TERM", follower])
