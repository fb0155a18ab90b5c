"""Benchmark: following a finished 300 MB build log with marker scanning and
failure triage, against OpenSSH ``ssh guest cat log > file``.

On the SSH test guest (real OpenSSH sshd on loopback, tests/support/sshguest.py)
a step directory holds a FreeBSD-shaped -j log: compile lines as a real
buildworld prints them (with -Werror and -Wno-error=..., which
share/mk/bsd.sys.mk adds for WARNS >= 1), boxed ``>>>`` stage headers (main's
Makefile.inc1 wording), and a compiler error plus bmake's failure chain
~100,000 lines from the end.  Median of N runs each:

  (a) fruix_dagster as run_step follows: DetachedSteps.stream (one exec
      channel over paramiko), every piece through LogScanner(errors=False)
      (markers and tail: one bytes.find pass) and appended to the host copy
  (t) what a *failed* step adds once after (a): build/run.py _triage, the
      whole host copy through a full LogScanner (first errors, stopped in,
      stage) -- a successful step never pays it
  (b) OpenSSH: ssh guest 'cat log' > file
  (c) the stream alone, no scanning
  (f) the stream with full triage scanning of every piece (the follow of
      8484d14..11e766a)
  (p) the first baseline: DetachedSteps.poll in 8 MiB chunks (one exec
      channel and a ``tail -c +N | head -c 8M`` per poll), full scanning

Prints the medians and a/b (target: a/b <= 1.2), (a+t)/b, c/b, f/b, p/b, and
checks that every path found every marker and (a+t), (f), (p) the first
error and where make stopped.  Needs root (the test guest uses a mount
namespace).  Usage: .venv/bin/python benchmarks/follow.py [--runs 5] [--mb 300]

Measured here (2 shared cores, noisy), 307 MB: median of 3 / of 5:
(a) 1.96 / 2.08 s, (t) 1.08 / 1.10 s, (b) 2.60 / 2.21 s, (c) 2.11 / 1.15 s,
(f) 3.03 / 2.81 s, (p) 5.98 / 4.73 s: a/b 0.75 / 0.94 (target met),
(a+t)/b 1.17 / 1.43, f/b 1.17 / 1.27, p/b 2.30 / 2.13.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.sshguest import SshGuest  # noqa: E402

CHILD = r"""
import json, sys, time
from fruix_dagster.build.markers import LogScanner
from fruix_dagster.build.run import _triage
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.ssh import SshTransport
args = json.loads(sys.argv[1])
t = SshTransport(host=args["host"], port=args["port"], known_hosts=args["known_hosts"],
                 private_key=args["key"])
t.connect()
steps = DetachedSteps(t, args["root"])
scan = args["scan"]
scanner = LogScanner(errors=(scan == "full"))
markers = 0
start = time.perf_counter()
off = 0
with open(args["out"], "wb") as f:
    if args["mode"] == "stream":
        for status, data in steps.stream(args["step"], 0):
            off += len(data)
            f.write(data)
            if scan != "none":
                markers += len(scanner.feed(data))
        assert status.finished and off == status.log_size
    else:
        while True:
            status, data = steps.poll(args["step"], off, args["chunk"])
            if not data:
                break
            off += len(data)
            f.write(data)
            if scan != "none":
                markers += len(scanner.feed(data))
markers += len(scanner.finish()) if scan != "none" else 0
elapsed = time.perf_counter() - start
triage_s = 0.0
if scan == "markers":
    start = time.perf_counter()
    scanner = _triage(steps, args["step"], args["out"], off)
    triage_s = time.perf_counter() - start
tri = scanner.triage(args["step"] + "/log", 2)
t.close()
print(json.dumps({"seconds": elapsed, "triage_seconds": triage_s, "bytes": off, "markers": markers,
                  "first_error": tri.first_errors[0] if tri.first_errors else "",
                  "stopped_in": tri.stopped_in}))
"""

HR = "-" * 62


def write_log(path: Path, megabytes: int) -> int:
    """A FreeBSD-shaped log of about ``megabytes`` MB; returns the marker count."""
    stages = ["stage 1.1: legacy release compatibility shims", "stage 1.2: bootstrap tools",
              "stage 2.3: build tools", "stage 3: cross tools", "stage 3.1: recording build metadata",
              "stage 4.1: building includes", "stage 4.2: building libraries",
              "stage 4.3.1: building lib32 shim libraries", "stage 4.4: building everything"]
    # a compile line as bsd.sys.mk makes it (CWARNFLAGS: -Werror for WARNS >= 1)
    line = (b"cc -target x86_64-unknown-freebsd15.0 --sysroot=/usr/obj/usr/src/amd64.amd64/tmp "
            b"-B/usr/obj/usr/src/amd64.amd64/tmp/usr/bin -O2 -pipe -fno-common -DNO__SCCSID -MD "
            b"-MF.depend.x.o -MTx.o -std=gnu99 -fstack-protector-strong -Wsystem-headers -Werror "
            b"-Wall -Wno-format-y2k -W -Wno-unused-parameter -Wstrict-prototypes "
            b"-Wno-error=unused-but-set-variable -Qunused-arguments -c /usr/src/lib/libc/gen/x.c -o x.o\n")
    per_stage = megabytes * 1_000_000 // len(line) // len(stages)
    block = line * 10_000
    markers = 1
    with open(path, "wb") as f:
        f.write(f"{HR}\n>>> World build started on Tue Dec  1 19:07:07 UTC 2026\n{HR}\n".encode())
        for i, stage in enumerate(stages):
            f.write(f"\n{HR}\n>>> {stage}\n{HR}\n".encode())
            markers += 1
            n = per_stage
            if i == len(stages) - 1:
                n -= 100_000
            while n > 0:
                k = min(n, 10_000)
                f.write(block if k == 10_000 else line * k)
                n -= k
        f.write(b"/usr/src/bin/cat/cat.c:12:5: error: use of undeclared identifier 'foo'\n"
                b"*** [cat.o] Error code 1\n\nmake[4]: stopped making \"all\" in /usr/src/bin/cat\n")
        f.write(line * 100_000)
    return markers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--chunk-mib", type=int, default=8, help="poll size of the (p) baseline (it polled 8 MiB)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fruix-bench-follow-"))
    guest = SshGuest(work / "guest", address="127.0.0.43")
    guest.start()
    try:
        root = "/var/tmp/fruix-bench"
        step = f"{root}/steps/buildworld-0123456789abcdef"
        host_step = guest.guest_path(step)
        host_step.mkdir(parents=True)
        expected_markers = write_log(host_step / "log", args.mb)
        (host_step / "status").write_text("1\n")
        (host_step / "started").write_text("1\n")
        size = (host_step / "log").stat().st_size
        ssh = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"UserKnownHostsFile={guest.known_hosts}", "-i", str(guest.client_key),
               "-p", str(guest.port), f"root@{guest.host}"]
        times: dict[str, list[float]] = {k: [] for k in "atbcfp"}
        for _ in range(args.runs):
            out = work / "a.log"
            for key, mode, scan in (("a", "stream", "markers"), ("c", "stream", "none"),
                                    ("f", "stream", "full"), ("p", "poll", "full")):
                child = json.dumps({"host": guest.host, "port": guest.port, "known_hosts": str(guest.known_hosts),
                                    "key": str(guest.client_key), "root": root, "step": step, "out": str(out),
                                    "chunk": args.chunk_mib << 20, "scan": scan, "mode": mode})
                res = json.loads(subprocess.run([sys.executable, "-c", CHILD, child], cwd=REPO, check=True,
                                                capture_output=True, text=True).stdout)
                assert res["bytes"] == size, res
                if scan != "none":
                    assert res["markers"] == expected_markers, res
                    assert res["first_error"].startswith("/usr/src/bin/cat/cat.c:12:5: error:"), res
                    assert res["stopped_in"] == "/usr/src/bin/cat", res
                times[key].append(res["seconds"])
                if key == "a":
                    times["t"].append(res["triage_seconds"])
                out.unlink()
            start = time.perf_counter()
            subprocess.run(" ".join(map(shlex.quote, ssh)) + f" 'cat {step}/log' > {shlex.quote(str(out))}",
                           shell=True, check=True)
            times["b"].append(time.perf_counter() - start)
            assert out.stat().st_size == size
            out.unlink()
        m = {k: statistics.median(v) for k, v in times.items()}
        print(f"{size / 1e6:.0f} MB, median of {args.runs}; {expected_markers} markers, first error "
              f"100,000 lines before the end")
        for k, what in (("a", "(a) stream + markers (run_step's follow)"),
                        ("t", "(t) failed step: triage of the host copy"),
                        ("b", "(b) ssh guest cat log > file"), ("c", "(c) stream only"),
                        ("f", "(f) stream + full triage per piece"), ("p", "(p) poll 8 MiB + full triage")):
            print(f"  {what:44} {m[k]:7.2f} s")
        mb = m["b"]
        print(f"  a/b {m['a'] / mb:.2f} (target <= 1.2)   (a+t)/b {(m['a'] + m['t']) / mb:.2f}   "
              f"c/b {m['c'] / mb:.2f}   f/b {m['f'] / mb:.2f}   p/b {m['p'] / mb:.2f}")
    finally:
        guest.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
