"""Detached steps: long commands that outlive the connection that started them.

Protocol (identical for every transport; only POSIX sh, awk, ps on the guest)::

    <build_root>/.lock/            held while a step runs (mkdir is atomic)
        pid                        the step wrapper's pid
        step                       the step directory it runs
    <build_root>/steps/<name>.current   step directory most recently started for <name>
    <build_root>/steps/<name>-<fingerprint16>/
        command  cwd               what runs, shell-quoted, and where
        log                        stdout+stderr, complete
        markers                    "<epoch seconds> <line>" for every '>>> ' line and
                                   depend-cleanup.sh's "Cleaning up the object tree"
        pid                        wrapper pid (its children are the build)
        started  finished          epoch seconds
    (epoch seconds: "1733100000.123456789" where the guest's date(1) has %N,
    "1733100000" where it has not; read_markers/read_times take both)
        status                     exit status, written last (atomically)
        attempt-<n>/               earlier failed attempts, kept whole

Starting a step whose directory says "status 0" and which is still the
``.current`` one for its name reuses it; a running one is attached to; a
failed or vanished one is archived into ``attempt-<n>/`` and run anew.
The host follows ``log`` by byte offset, so a dropped connection or a
restarted orchestrator resumes where it was.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from fruix_dagster.errors import GuestError
from fruix_dagster.guest.fence import check_build_root
from fruix_dagster.guest.step_log import EPOCH, StepStatus, poll_step, stream_step
from fruix_dagster.guest.transport import Transport


@dataclass(frozen=True)
class StepSpec:
    """A command to run detached, identified by name and fingerprint."""

    name: str
    argv: tuple[str, ...]
    cwd: str
    fingerprint: str

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.fingerprint[:16]}"


@dataclass(frozen=True)
class Launch:
    """What happened when a step was started."""

    action: str           # "started" | "attached" | "reused"
    step_dir: str
    warnings: tuple[str, ...] = ()

    @property
    def log_path(self) -> str:
        return f"{self.step_dir}/log"


# The wrapper runs detached.  $1 step dir, $2 lock dir, $3 cwd, rest: argv.
_WRAPPER = r'''
d=$1 lock=$2 cwd=$3; shift 3
echo $$ > "$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid"
echo $$ > "$lock/pid.tmp" && mv -f "$lock/pid.tmp" "$lock/pid"
# Sub-second times where the guest's date(1) has %N (GNU date; FreeBSD's
# date.c formats through its strftime_ns(), which expands %N, since 14.1);
# elsewhere %N comes out as something else and whole seconds are written.
if date +%s.%N 2>/dev/null | grep -Eq '^[0-9]+[.][0-9]{9}$'; then frac=1; else frac=0; fi
now() { if [ $frac = 1 ]; then date +%s.%N; else date +%s; fi; }
now > "$d/started"
# mawk (Debian's awk) reads a pipe in blocks: without -W interactive a quiet
# step's first lines would sit in its buffer; FreeBSD's awk reads what is there.
aw=awk
if awk -W version 2>/dev/null | grep -q mawk; then aw="awk -W interactive"; fi
{
  if cd "$cwd"; then "$@" </dev/null; echo $? > "$d/rc"; else echo 126 > "$d/rc"; fi
} 2>&1 | $aw -v m="$d/markers" -v frac=$frac '
  { print; fflush() }
  /^>>> / || /^Cleaning up the object tree$/ {
    if (frac) { c = "date +%s.%N"; c | getline t; close(c) } else { srand(); t = srand() }
    print t, $0 > m; fflush(m)
  }
' > "$d/log"
now > "$d/finished"
st=$(cat "$d/rc" 2>/dev/null) || st=255
echo "$st" > "$d/status.tmp" && mv -f "$d/status.tmp" "$d/status"
rm -f "$lock/pid" "$lock/step"
rmdir "$lock" 2>/dev/null
exit 0
'''

# $1 build root, $2 step name, $3 step dir, $4 cwd, $5 command text, $6 wrapper,
# $7 mode ("auto" reuses a finished success, "force" runs anew), rest argv.
# Prints one line: "started", "reused", "attached <pid>", "busy <pid> <dir>",
# optionally preceded by "stale <pid> <dir>" warning lines.
_LAUNCH = r'''
root=$1 name=$2 d=$3 cwd=$4 cmd=$5 wrapper=$6 mode=$7; shift 7
alive() { s=$(ps -p "$1" -o stat= 2>/dev/null) || return 1; case "$s" in ""|*Z*) return 1 ;; esac; }
lock=$root/.lock
mkdir -p "$root/steps" || exit 1
waited=0
while ! mkdir "$lock" 2>/dev/null; do
  owner=$(cat "$lock/pid" 2>/dev/null) || owner=
  ostep=$(cat "$lock/step" 2>/dev/null) || ostep=
  if [ -n "$owner" ] && alive "$owner"; then
    if [ "$ostep" = "$d" ]; then echo "attached $owner"; exit 0; fi
    echo "busy $owner $ostep"; exit 0
  fi
  if [ -z "$owner" ] && [ $waited -lt 5 ]; then
    waited=$((waited + 1)); sleep 1; continue
  fi
  echo "stale ${owner:-none} ${ostep:-none}"
  rm -f "$lock/pid" "$lock/step" "$lock/pid.tmp"
  rmdir "$lock" 2>/dev/null || { echo "busy unknown $lock"; exit 0; }
done
# We hold the lock (without a pid yet).
cur=$(cat "$root/steps/$name.current" 2>/dev/null) || cur=
if [ "$mode" = auto ] && [ -f "$d/status" ] && [ "$(cat "$d/status")" = 0 ] && [ "$cur" = "$d" ]; then
  rmdir "$lock"; echo reused; exit 0
fi
if [ -e "$d/pid" ] || [ -e "$d/log" ] || [ -e "$d/status" ]; then
  n=1; while [ -e "$d/attempt-$n" ]; do n=$((n + 1)); done
  mkdir "$d/attempt-$n" || { rmdir "$lock"; exit 1; }
  for f in log markers pid started finished status rc; do
    if [ -e "$d/$f" ]; then mv "$d/$f" "$d/attempt-$n/$f"; fi
  done
fi
mkdir -p "$d" || { rmdir "$lock"; exit 1; }
printf '%s\n' "$cmd" > "$d/command"
printf '%s\n' "$cwd" > "$d/cwd"
: > "$d/log"
printf '%s\n' "$d" > "$lock/step"
printf '%s\n' "$d" > "$root/steps/$name.current.tmp" && mv -f "$root/steps/$name.current.tmp" "$root/steps/$name.current"
if command -v setsid >/dev/null 2>&1; then det=setsid
elif command -v daemon >/dev/null 2>&1; then det=daemon
else det=; fi
nohup $det sh -c "$wrapper" sh "$d" "$lock" "$cwd" "$@" </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s "$d/pid" ] && [ $i -lt 100 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i + 1)); done
echo started
'''

# $1 step dir.  Stops the wrapper and every descendant: SIGSTOP the whole tree
# (so nobody is reparented while we look), then SIGKILL it.
_KILL = r'''
d=$1
pid=$(cat "$d/pid" 2>/dev/null) || exit 0
tree() {
  ps -A -o pid= -o ppid= | awk -v r="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END { n = 1; q[1] = r; out = ""
          while (n > 0) { p = q[n]; n--; out = out " " p
            m = split(kids[p], c, " "); for (j = 1; j <= m; j++) { n++; q[n] = c[j] } }
          print out }'
}
seen=
i=0
while [ $i -lt 10 ]; do
  pids=$(tree "$pid")
  new=
  for p in $pids; do
    case " $seen " in *" $p "*) ;; *) new="$new $p" ;; esac
  done
  [ -z "$new" ] && break
  kill -STOP $new 2>/dev/null
  seen="$seen $new"
  i=$((i + 1))
done
[ -n "$seen" ] && kill -KILL $seen 2>/dev/null
alive() { s=$(ps -p "$1" -o stat= 2>/dev/null) || return 1; case "$s" in ""|*Z*) return 1 ;; esac; }
i=0
for p in $seen; do
  while alive "$p" && [ $i -lt 100 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i + 1)); done
done
echo "killed$seen"
'''


class DetachedSteps:
    """Start, attach to, follow and stop detached steps in one build root."""

    def __init__(self, transport: Transport, build_root: str):
        self.transport = transport
        self.build_root = check_build_root(build_root)

    def step_dir(self, spec: StepSpec) -> str:
        return f"{self.build_root}/steps/{spec.dirname}"

    def reusable(self, spec: StepSpec) -> bool:
        """Would launch() reuse a finished success of exactly this step?"""
        res = self.transport.sh(
            '[ -f "$1/status" ] && [ "$(cat "$1/status")" = 0 ] && '
            '[ "$(cat "$2/steps/$3.current" 2>/dev/null)" = "$1" ]',
            self.step_dir(spec), self.build_root, spec.name)
        return res.ok

    def launch(self, spec: StepSpec, *, force: bool = False, busy_wait: float = 0.0,
               on_wait: Callable[[str], None] | None = None) -> Launch:
        """Start the step, attach to it if running, or reuse a finished success
        (unless ``force``: then a finished step is archived and run anew).

        If another step holds the build root, wait up to ``busy_wait`` seconds
        for it, then raise GuestError naming it.
        """
        d = self.step_dir(spec)
        deadline = time.monotonic() + busy_wait
        warnings: list[str] = []
        while True:
            res = self.transport.sh(_LAUNCH, self.build_root, spec.name, d, spec.cwd,
                                    shlex.join(spec.argv), _WRAPPER, "force" if force else "auto",
                                    *spec.argv)
            res.check(f"starting step {spec.name} in {self.build_root}")
            lines = res.stdout.decode("utf-8", "replace").splitlines()
            for line in lines:
                if line.startswith("stale "):
                    _, pid, step = line.split(" ", 2)
                    warnings.append(
                        f"took over a stale lock on {self.build_root} (pid {pid} of {step} is gone)")
            last = lines[-1] if lines else ""
            if last == "started":
                return Launch("started", d, tuple(warnings))
            if last == "reused":
                return Launch("reused", d, tuple(warnings))
            if last.startswith("attached"):
                return Launch("attached", d, tuple(warnings))
            if last.startswith("busy"):
                if time.monotonic() < deadline:
                    if on_wait:
                        on_wait(last)
                    time.sleep(2.0)
                    continue
                raise GuestError(
                    f"build root {self.build_root} on {self.transport.description} is in use: "
                    f"{last.split(' ', 2)[2:] or ['another step']} (pid {last.split(' ')[1]}) holds "
                    f"{self.build_root}/.lock; wait for it to finish, or give this target its own "
                    f"build root")
            raise GuestError(
                f"starting step {spec.name}: expected started/reused/attached/busy from the guest, "
                f"got {res.stdout[-300:]!r} (stderr {res.stderr[-300:]!r})")

    def poll(self, step_dir: str, offset: int, max_bytes: int = 8 << 20) -> tuple[StepStatus, bytes]:
        """The step's status and at most ``max_bytes`` of its log from ``offset`` (one command)."""
        return poll_step(self.transport, step_dir, offset, max_bytes)

    def stream(self, step_dir: str, offset: int, *, follow: bool = True, poll_s: float = 1.0,
               bound_s: float = 300.0) -> Iterator[tuple[StepStatus, bytes]]:
        """Follow the step's log from ``offset`` over ONE guest command (see guest/step_log.py)."""
        return stream_step(self.transport, step_dir, offset, follow=follow, poll_s=poll_s, bound_s=bound_s)

    def kill(self, step_dir: str) -> str:
        res = self.transport.sh(_KILL, step_dir)
        return res.check(f"stopping {step_dir}").stdout.decode().strip()

    def read_markers(self, step_dir: str) -> list[tuple[float, str]]:
        """The step's '>>> ' lines with the epoch time they appeared (sub-second
        where the guest's date(1) has %N, whole seconds otherwise)."""
        res = self.transport.run(["cat", f"{step_dir}/markers"])
        if not res.ok:
            return []
        out = []
        for line in res.stdout.decode("utf-8", "replace").splitlines():
            ts, _, text = line.partition(" ")
            if EPOCH.fullmatch(ts):
                out.append((float(ts), text))
        return out

    def read_command(self, step_dir: str) -> str:
        """The shell-quoted command the step record says ran ("" if unreadable)."""
        res = self.transport.run(["cat", f"{step_dir}/command"])
        return res.stdout.decode("utf-8", "replace").strip() if res.ok else ""

    def read_times(self, step_dir: str) -> tuple[float | None, float | None]:
        """The step's start and end, epoch seconds (None: not written)."""
        res = self.transport.sh('cat "$1/started" 2>/dev/null || echo -; cat "$1/finished" 2>/dev/null || echo -',
                                step_dir)
        vals = res.stdout.decode().split()
        conv = [float(v) if EPOCH.fullmatch(v) else None for v in vals[:2]]
        while len(conv) < 2:
            conv.append(None)
        return conv[0], conv[1]


__all__ = ["DetachedSteps", "Launch", "StepSpec", "StepStatus"]
