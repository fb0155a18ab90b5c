"""Benchmark: following a finished 300 MB build log with marker scanning and
failure triage, against OpenSSH ``ssh guest cat log > file``.

On the SSH test guest (real OpenSSH sshd on loopback, tests/support/sshguest.py)
a step directory holds a FreeBSD-shaped -j log: compile lines, boxed ``>>>``
stage headers (main's Makefile.inc1 wording), and a compiler error plus bmake's
failure chain ~100,000 lines from the end.  Median of N runs each:

  (a) fruix_dagster: DetachedSteps.stream (one exec channel over paramiko,
      what run_step follows with), every piece through LogScanner (markers +
      triage) and appended to a host file
  (b) OpenSSH: ssh guest 'cat log' > file
  (c) (a) without the scanning: what the streaming transport alone costs
  (p) the old baseline: DetachedSteps.poll in 8 MiB chunks (one exec channel
      and a ``tail -c +N | head -c 8M`` per poll), with the scanning

Prints the medians, a/b (target: a/b <= 1.2), a/c (what scanning adds) and
p/b, and checks that (a) and (p) found every marker and the first error.
Needs root (the test guest uses a mount namespace).
Usage: .venv/bin/python benchmarks/follow.py [--runs 5] [--mb 300]

Measured here (2 shared cores, load ~6 from other sessions), 300 MB, median
of 3: (a) 3.55 s, (b) 1.57 s, (c) 1.48 s, (p) 4.62 s: a/b = 2.27, a/c = 2.40,
p/b = 2.95.  The 1.2x target is NOT met.  The streaming transport itself is
at OpenSSH's speed (c/b = 0.94; before, the poll loop was the whole gap, and
scanning hid behind its round trips: a/c was 0.93 then).  What is left is the
scanner's CPU: LogScanner alone takes ~1.0 s for 300 MB fed in 8 MiB pieces
(about 0.2 s per bytes.find pass: ">>> ", "rror", "ERROR:", "stopped", plus
copies), and on this loaded 2-core host it competes with paramiko's reader
thread.  Closing the gap needs the scan off the reading thread's GIL (a child
process) or fewer passes over the bytes; not done.
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
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.ssh import SshTransport
args = json.loads(sys.argv[1])
t = SshTransport(host=args["host"], port=args["port"], known_hosts=args["known_hosts"],
                 private_key=args["key"])
t.connect()
steps = DetachedSteps(t, args["root"])
scanner = LogScanner()
markers = 0
start = time.perf_counter()
off = 0
with open(args["out"], "wb") as f:
    if args["mode"] == "stream":
        for status, data in steps.stream(args["step"], 0):
            off += len(data)
            f.write(data)
            if args["scan"]:
                markers += len(scanner.feed(data))
        assert status.finished and off == status.log_size
    else:
        while True:
            status, data = steps.poll(args["step"], off, args["chunk"])
            if not data:
                break
            off += len(data)
            f.write(data)
            if args["scan"]:
                markers += len(scanner.feed(data))
markers += len(scanner.finish()) if args["scan"] else 0
elapsed = time.perf_counter() - start
tri = scanner.triage(args["step"] + "/log", 2)
t.close()
print(json.dumps({"seconds": elapsed, "bytes": off, "markers": markers,
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
    line = b"cc -target x86_64-unknown-freebsd15.0 -O2 -pipe -fno-common -c /usr/src/lib/libc/gen/x.c -o x.o\n"
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
        times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "p": []}
        b = times["b"]
        for _ in range(args.runs):
            out = work / "a.log"
            for key, mode, scan in (("a", "stream", True), ("c", "stream", False), ("p", "poll", True)):
                child = json.dumps({"host": guest.host, "port": guest.port, "known_hosts": str(guest.known_hosts),
                                    "key": str(guest.client_key), "root": root, "step": step, "out": str(out),
                                    "chunk": args.chunk_mib << 20, "scan": scan, "mode": mode})
                res = json.loads(subprocess.run([sys.executable, "-c", CHILD, child], cwd=REPO, check=True,
                                                capture_output=True, text=True).stdout)
                assert res["bytes"] == size, res
                if scan:
                    assert res["markers"] == expected_markers, res
                    assert res["first_error"].startswith("/usr/src/bin/cat/cat.c:12:5: error:"), res
                    assert res["stopped_in"] == "/usr/src/bin/cat", res
                times[key].append(res["seconds"])
                out.unlink()
            start = time.perf_counter()
            subprocess.run(" ".join(map(shlex.quote, ssh)) + f" 'cat {step}/log' > {shlex.quote(str(out))}",
                           shell=True, check=True)
            b.append(time.perf_counter() - start)
            assert out.stat().st_size == size
            out.unlink()
        ma, mb, mc, mp = (statistics.median(times[k]) for k in "abcp")
        print(f"{'log':>10} {'(a) stream+scan':>16} {'(b) ssh cat > file':>19} {'(c) stream only':>16} "
              f"{'(p) poll+scan':>14} {'a/b':>6} {'a/c':>6} {'p/b':>6}")
        print(f"{size / 1e6:8.0f}MB {ma:15.2f}s {mb:18.2f}s {mc:15.2f}s {mp:13.2f}s {ma / mb:6.2f} "
              f"{ma / mc:6.2f} {mp / mb:6.2f}   "
              f"(median of {args.runs}; {expected_markers} markers, first error "
              f"{size // 1_000_000} MB in, 100,000 lines before the end)")
    finally:
        guest.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
