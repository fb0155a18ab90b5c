"""Benchmark: the build history of an instance holding thousands of materializations.

Reports N synthetic artifact materializations (default 5,000: world and kernel
stages, headers and bootloader slices, spread over two targets, plus the
freebsd_source / world_build / kernel_build materializations a real build
records next to them) into a throw-away SQLite instance with
``report_runless_asset_event``, then times what ``fruix-dagster history`` and
the ``build_history`` asset do:

  load     fetch_materializations page by page → rows → DataFrame
  render   the CLI's table, CSV and JSON of every row
  publish  Parquet + CSV + PNG chart + Markdown table of one target

and prints the times and the peak RSS.  Target: load + render under 10 s
(exit status 1 when missed).  Measured here: load 2.1 s, render 0.4 s,
publish 1.5 s, 280 MiB peak.

Setup writes one SQLite transaction per event (8,750 for the default), which
takes minutes on a slow disk; ``--keep DIR`` keeps the instance and a second
run with the same DIR skips the setup.
Usage: .venv/bin/python benchmarks/history.py [--materializations 5000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = ("amd64", "arm64")
#: typical Phase 20.2 figures: world ≈672 MB, kernel ≈739 MB, headers ≈30 MB, loader ≈1.5 MB
BASE_SIZES = {"world_stage": 672e6, "kernel_stage": 739e6, "headers_slice": 30e6, "bootloader_slice": 1.5e6}
KEY_FILE = {"world_stage": "usr/include/sys/param.h", "kernel_stage": "boot/kernel/kernel",
            "headers_slice": "usr/include/sys/param.h", "bootloader_slice": "boot/loader.efi"}


def _h(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def synthetic_builds(n_artifacts: int, targets: tuple[str, ...] = TARGETS, seed: int = 20) -> Iterator[tuple[str, str, dict]]:
    """``(asset, target, metadata)`` in the order a build records them; ``n_artifacts``
    artifact materializations in all (four per build), targets taking turns."""
    rnd = random.Random(seed)
    builds = n_artifacts // 4
    source = {t: 0 for t in targets}
    for i in range(builds):
        t = targets[i % len(targets)]
        if i % (len(targets) * 25) < len(targets):          # a new source store every 25 builds
            source[t] += 1
        store_hash = _h("src", t, source[t])
        yield "freebsd_source", t, {"source_store": f"/frx/store/{store_hash[:32]}-freebsd-source-default",
                                    "source_root": f"/frx/store/{store_hash[:32]}-freebsd-source-default/tree",
                                    "store_hash": store_hash}
        world_fp, kernel_fp = _h("world", t, source[t]), _h("kernel", t, source[t])
        yield "world_build", t, {"duration_s": 3600 + rnd.random() * 1800, "step_fingerprint": _h("bw", world_fp),
                                 "build_jobs": 8}
        yield "kernel_build", t, {"duration_s": 900 + rnd.random() * 600, "step_fingerprint": _h("bk", kernel_fp),
                                  "build_jobs": 8}
        growth = 1 + 0.002 * source[t]
        for asset in ("world_stage", "kernel_stage", "bootloader_slice", "headers_slice"):
            size = int(BASE_SIZES[asset] * growth * (1 + rnd.uniform(-0.01, 0.01)))
            fp = world_fp if asset != "kernel_stage" else kernel_fp
            digest = _h(asset, fp, size)
            meta = {"path": f"/var/lib/fruix-dagster/artifacts/{digest}-{asset}-{t}/tree",
                    "size_bytes": size, "file_count": int(size // 30000), "tree_sha256": digest,
                    f"sha256:{KEY_FILE[asset]}": _h("key", asset, fp)}
            if asset in ("world_stage", "kernel_stage"):
                meta.update({"step_fingerprint": fp, "duration_s": 240 + rnd.random() * 120})
            else:
                meta["from_world_stage"] = world_digest
            if asset == "world_stage":
                world_digest = digest
            yield asset, t, meta


def report_synthetic(instance, n_artifacts: int, targets: tuple[str, ...] = TARGETS) -> int:
    """Report the synthetic builds as runless materializations; returns the events written."""
    import dagster as dg

    n = 0
    for asset, target, meta in synthetic_builds(n_artifacts, targets):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset, partition=target, metadata=meta, tags={"dagster/code_version": "1"}))
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--materializations", type=int, default=5000)
    ap.add_argument("--keep", help="use (and keep) this directory for the instance and outputs")
    args = ap.parse_args()

    import dagster as dg

    from fruix_dagster.defs.history import load_history
    from fruix_dagster.history.publish import markdown_last_builds, write_history
    from fruix_dagster.history.render import render

    work = Path(args.keep or tempfile.mkdtemp(prefix="fruix-history-bench-"))
    home = work / "dagster-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(home))
    have = len(instance.fetch_materializations(dg.AssetKey("world_stage"), limit=1).records)
    if not have:
        t0 = time.perf_counter()
        events = report_synthetic(instance, args.materializations)
        print(f"setup: {events} materializations reported in {time.perf_counter() - t0:.1f} s "
              f"({args.materializations} of them artifacts)")
    t0 = time.perf_counter()
    frame = load_history(instance)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    sizes = {fmt: len(render(frame, fmt)) for fmt in ("table", "csv", "json")}
    t_render = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = frame[frame["target"] == TARGETS[0]]
    published = write_history(one, work / "history" / TARGETS[0], target=TARGETS[0])
    markdown_last_builds(one, 10)
    t_publish = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows: {len(frame)} ({frame['target'].nunique()} targets)")
    print(f"load (fetch_materializations pages → DataFrame): {t_load:.2f} s")
    print(f"render table+csv+json ({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in sizes.items())}): "
          f"{t_render:.2f} s")
    print(f"history load + render: {t_load + t_render:.2f} s (target < 10 s)")
    print(f"publish one target ({published.rows} rows: parquet, csv, png, markdown): {t_publish:.2f} s "
          f"→ {published.png.parent}")
    print(f"peak RSS: {rss:.0f} MiB")
    instance.dispose()
    return 0 if t_load + t_render < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
