"""Speed sanity check for fruix_dagster.tree (not a test; nothing asserts a time).

Generates ~600 MB in ~20k files (log-normal sizes, a few big ones) in a temp
dir, then prints the median of N runs of:

  ours     bsdtar cf - -C DIR . | manifest_from_tar   (parse + sha256 per file;
           default readahead thread, pipe widened to 1 MiB with widen_pipe)
  ours, no readahead, 64 KiB pipe                     (same, both helps off)
  tarfile  bsdtar cf - -C DIR . | tarfile r| + hashlib (parse + sha256 per file)
  sha256sum  bsdtar cf - -C DIR . | sha256sum           (one hash of the whole stream)
  ours-mem   manifest_from_tar over the stream held in memory (parser ceiling)

Usage: .venv/bin/python benchmarks/tree_parse.py [--mb 600] [--files 20000] [--runs 3] [--dir D] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fruix_dagster.tree import manifest_from_dir, manifest_from_tar, widen_pipe  # noqa: E402

TAR = shutil.which("bsdtar") or "tar"


def generate(root: str, total_mb: int, files: int, seed: int = 1) -> tuple[int, int]:
    rnd = random.Random(seed)
    pool = os.urandom(64 << 20)
    target = total_mb * 1_000_000
    sizes = [int(rnd.lognormvariate(8.5, 2.0)) for _ in range(files)]
    scale = target / sum(sizes)
    sizes = [max(0, int(s * scale)) for s in sizes]
    sizes = [min(s, len(pool) - 1) for s in sizes]
    ndirs = max(1, files // 100)
    dirs = []
    for i in range(ndirs):
        depth = rnd.randint(1, 5)
        d = os.path.join(*[f"d{rnd.randint(0, 30)}" for _ in range(depth)], f"leaf{i}")
        dirs.append(d)
        os.makedirs(os.path.join(root, d), exist_ok=True)
    written = 0
    for i, size in enumerate(sizes):
        off = rnd.randint(0, len(pool) - size - 1)
        with open(os.path.join(root, dirs[i % ndirs], f"f{i}.bin"), "wb") as f:
            f.write(pool[off : off + size])
        written += size
    return written, len(sizes)


def _tar_pipe() -> list[str]:
    return [TAR, "cf", "-", "-C"]


def run_ours(root: str, widen: bool = True, readahead: int = 8):
    proc = subprocess.Popen(_tar_pipe() + [root, "."], stdout=subprocess.PIPE)
    if widen:
        widen_pipe(proc.stdout)
    m = manifest_from_tar(proc.stdout, readahead=readahead)
    proc.stdout.close()
    assert proc.wait() == 0
    return m


def run_tarfile(root: str):
    proc = subprocess.Popen(_tar_pipe() + [root, "."], stdout=subprocess.PIPE)
    out = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
        for ti in tf:
            if ti.isreg():
                h = hashlib.sha256()
                f = tf.extractfile(ti)
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                out[ti.name] = h.hexdigest()
    proc.stdout.close()
    assert proc.wait() == 0
    return out


def run_sha256sum(root: str):
    out = subprocess.run(f"{TAR} cf - -C '{root}' . | sha256sum", shell=True, check=True,
                         capture_output=True).stdout
    return out.split()[0]


def timed(fn, runs: int):
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=600)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", help="reuse/keep the generated tree here instead of a fresh temp dir")
    ap.add_argument("--keep", action="store_true", help="do not delete the generated tree")
    args = ap.parse_args()

    base = args.dir or tempfile.mkdtemp(prefix="fruix-tree-bench-")
    root = os.path.join(base, "tree")
    try:
        if not os.path.isdir(root):
            os.makedirs(root)
            t = time.perf_counter()
            size, count = generate(root, args.mb, args.files)
            print(f"generated {size / 1e6:.0f} MB in {count} files in {time.perf_counter() - t:.1f}s under {root}")
        m = manifest_from_dir(root)
        stream_bytes = len(subprocess.run(_tar_pipe() + [root, "."], capture_output=True, check=True).stdout)
        print(f"tree: {m.total_size / 1e6:.0f} MB in {m.file_count} files, {len(m) - m.file_count} dirs; "
              f"tar stream {stream_bytes / 1e6:.0f} MB via {TAR}; {os.cpu_count()} CPUs; median of {args.runs}")

        with open(os.devnull, "wb"):
            blob = subprocess.run(_tar_pipe() + [root, "."], capture_output=True, check=True).stdout
        rows = [
            ("ours (bsdtar | manifest_from_tar)", lambda: run_ours(root)),
            ("ours, no readahead, 64 KiB pipe", lambda: run_ours(root, widen=False, readahead=0)),
            ("tarfile r| + hashlib", lambda: run_tarfile(root)),
            ("bsdtar | sha256sum (whole stream)", lambda: run_sha256sum(root)),
            ("ours, stream already in memory", lambda: manifest_from_tar(io.BytesIO(blob))),
        ]
        results = {}
        for name, fn in rows:
            med, times, result = timed(fn, args.runs)
            results[name] = (med, result)
            print(f"  {name:36s} {med:6.2f}s  {stream_bytes / med / 1e6:7.0f} MB/s   runs: "
                  + " ".join(f"{x:.2f}" for x in times))
        del blob
        ours = results[rows[0][0]][0]
        print(f"ratios: tarfile/ours = {results[rows[2][0]][0] / ours:.2f}x, "
              f"sha256sum/ours = {results[rows[3][0]][0] / ours:.2f}x (>1: ours is faster)")
        mt = results[rows[0][0]][1]
        assert mt == m, "manifest from tar differs from manifest from disk"
        tf_hashes = results[rows[2][0]][1]
        assert len(tf_hashes) == sum(1 for e in m if e.kind == "file")
        print(f"check: manifest_from_tar == manifest_from_dir, tree_sha256 {m.digest()}")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
