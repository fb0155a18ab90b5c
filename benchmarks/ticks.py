"""Benchmark: a source-change sensor tick on a path source of 100,000 files (issue 15 item 4).

On the SSH test guest (real sshd on loopback, dash login shell) a path source
of N files (default 100,000, in 100 directories, a top-level Makefile) is
observed by ``source_change_sensor`` — one SSH session, ``ls -lnR | cksum``
and ``find -newer`` against the read mark, never the file contents.  Measured
side by side, median of --runs each:

  ssh_true   baseline: ``ssh guest true`` (connection set-up and a login shell)
  tick       the sensor's evaluation (build_sensor_context), read mark present
  probe      the probe alone in an open session (what the tick adds to SSH)
  full_hash  the old tick: tar the tree on the guest and hash it on the host
             (``source_from_path``, what ``current_source_hash`` did every tick)

Target: tick < 5 s.  Needs root (the SSH test guest).
Usage: .venv/bin/python benchmarks/ticks.py [--runs 5] [--files 100000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402

from fruix_dagster.defs.observation import SENSOR  # noqa: E402
from fruix_dagster.fruix.source import source_from_path  # noqa: E402
from fruix_dagster.session import GuestSession  # noqa: E402
from fruix_dagster.source_probe import mark_read, probe  # noqa: E402
from tests.conftest import make_ssh_build  # noqa: E402
from tests.support.sshguest import SshGuest  # noqa: E402

GUEST_SRC = "/var/tmp/bigsrc"


def make_tree(root: Path, files: int) -> None:
    root.mkdir(parents=True)
    (root / "Makefile").write_text("all:\n\t@true\n")
    per_dir = max(1, files // 100)
    made = 1
    d = 0
    while made < files:
        sub = root / f"d{d:03d}"
        sub.mkdir()
        for i in range(min(per_dir, files - made)):
            (sub / f"f{i:05d}.c").write_text(f"int f{d}_{i}(void) {{ return {i}; }}\n")
            made += 1
        d += 1


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fruix-ticks-") as tmp:
        work = Path(tmp)
        guest = SshGuest(work / "guest", address="127.0.0.63")
        guest.start()
        try:
            make_tree(guest.guest_path(GUEST_SRC), args.files)
            sb = make_ssh_build(work / "b", guest, source={"from": "path", "path": GUEST_SRC})
            settings = sb.settings
            defs = sb.defs()
            sensor = defs.resolve_sensor_def(SENSOR)
            session = GuestSession(settings, settings.guest_for("amd64"))
            mark_read(session.transport, settings, "amd64", "bench-run")   # as a freebsd_source run leaves it

            def tick():
                with dg.build_sensor_context(instance=sb.instance, definitions=defs) as ctx:
                    result = sensor(ctx)
                for ev in getattr(result, "asset_events", None) or ():
                    sb.instance.report_runless_asset_event(ev)   # as the daemon stores them

            ssh_true = [timed(lambda: subprocess.run(guest.ssh_command("true"), check=True,
                                                     capture_output=True)) for _ in range(args.runs)]
            ticks = [timed(tick) for _ in range(args.runs)]
            probes = [timed(lambda: probe(session.transport, settings, "amd64")) for _ in range(args.runs)]
            full = [timed(lambda: source_from_path(session.transport, GUEST_SRC)) for _ in range(args.runs)]
            session.close()
        finally:
            guest.stop()
    s, t, p, f = (statistics.median(x) for x in (ssh_true, ticks, probes, full))
    print(f"ticks  path source of {args.files} files on the SSH test guest, median of {args.runs}:")
    print(f"  ssh_true   {s:6.2f} s   (baseline)")
    print(f"  tick       {t:6.2f} s   ratio to ssh_true {t / s:5.1f}   target < 5 s: "
          f"{'met' if t < 5 else 'NOT met'}")
    print(f"  probe      {p:6.2f} s   (in an open session)")
    print(f"  full_hash  {f:6.2f} s   old tick / new tick {f / t:5.1f}")


if __name__ == "__main__":
    main()
