"""Benchmark: collecting a staged tree from a guest into the artifact store.

Side by side, in one run, against the SSH test guest (a real OpenSSH sshd on
loopback, tests/support/sshguest.py), for two trees shaped like the Phase
20.2 harness's outputs (world stage ≈672 MB in ≈20,000 files; kernel stage
≈739 MB in a few hundred files), median of N runs each:

  (a) fruix_dagster: ArtifactStore.collect over paramiko — one tar stream,
      parsed, hashed and written in one pass, manifest + mtree, published
  (b) OpenSSH: ssh guest 'tar cf - -C DIR .' | tar xf - -C DEST, then
      sha256sum over every file
  (c) OpenSSH: the same pipeline without hashing

Prints medians, the ratios a/b and a/c, and the peak RSS of (a).
Targets: a/b ≤ 0.9, a/c ≤ 1.3.  Needs root (the test guest uses a mount
namespace).  Usage: .venv/bin/python benchmarks/collect.py [--runs 5] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
import json, resource, sys, time
from fruix_dagster.guest.ssh import SshTransport
from fruix_dagster.store import ArtifactStore
args = json.loads(sys.argv[1])
t = SshTransport(host=args["host"], port=args["port"], known_hosts=args["known_hosts"],
                 private_key=args["key"])
t.connect()
start = time.perf_counter()
stored = ArtifactStore(args["store"]).collect(t, args["dir"], asset="world_stage", target="bench")
elapsed = time.perf_counter() - start
t.close()
print(json.dumps({"seconds": elapsed, "files": stored.manifest.file_count,
                  "bytes": stored.manifest.total_size,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_tree(root: Path, total: int, files: int, seed: int) -> None:
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = total / sum(weights)
    per_dir = 200
    for i, w in enumerate(weights):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(os.urandom(max(1, int(w * scale))))


def timed(argv: list[str], shell: bool = False) -> float:
    start = time.perf_counter()
    subprocess.run(argv, shell=shell, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="tree size factor (1.0 = harness size)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fruix-bench-"))
    guest = SshGuest(work / "guest", address="127.0.0.42")
    guest.start()
    try:
        shapes = {"world-like": (int(672e6 * args.scale), max(10, int(20000 * args.scale))),
                  "kernel-like": (int(739e6 * args.scale), 300)}
        for i, (name, (total, files)) in enumerate(shapes.items()):
            make_tree(guest.guest_path(f"/var/tmp/bench/{name}"), total, files, seed=i)
        ssh = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"UserKnownHostsFile={guest.known_hosts}", "-i", str(guest.client_key),
               "-p", str(guest.port), f"root@{guest.host}"]
        print(f"{'tree':12} {'(a) product':>12} {'(b) ssh|tar+sha256sum':>22} {'(c) ssh|tar':>12} "
              f"{'a/b':>6} {'a/c':>6} {'peak RSS (a)':>13}")
        for name, (total, files) in shapes.items():
            gdir = f"/var/tmp/bench/{name}"
            a, b, c, rss = [], [], [], []
            for run in range(args.runs):
                store = work / "store"
                child = json.dumps({"host": guest.host, "port": guest.port, "known_hosts": str(guest.known_hosts),
                                    "key": str(guest.client_key), "store": str(store), "dir": gdir})
                out = subprocess.run([sys.executable, "-c", CHILD, child], cwd=REPO, check=True,
                                     capture_output=True, text=True)
                res = json.loads(out.stdout)
                a.append(res["seconds"])
                rss.append(res["maxrss_kib"])
                shutil.rmtree(store, ignore_errors=True)
                subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
                dest = work / "dest"
                dest.mkdir()
                pipeline = (" ".join(map(shlex_quote, ssh)) + f" 'tar cf - -C {gdir} .' | tar xf - -C {dest}")
                hashing = f"cd {dest} && find . -type f -print0 | xargs -0 sha256sum > /dev/null"
                start = time.perf_counter()
                subprocess.run(pipeline, shell=True, check=True)
                subprocess.run(hashing, shell=True, check=True)
                b.append(time.perf_counter() - start)
                shutil.rmtree(dest)
                dest.mkdir()
                c.append(timed(pipeline, shell=True))
                shutil.rmtree(dest)
            ma, mb, mc = statistics.median(a), statistics.median(b), statistics.median(c)
            print(f"{name:12} {ma:11.2f}s {mb:21.2f}s {mc:11.2f}s {ma / mb:6.2f} {ma / mc:6.2f} "
                  f"{max(rss) / 1024:10.0f} MiB   ({files} files, {total / 1e6:.0f} MB, median of {args.runs})")
    finally:
        guest.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def shlex_quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


if __name__ == "__main__":
    sys.exit(main())
