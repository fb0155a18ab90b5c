"""Two runs aimed at one guest through the real run queue (dagster-daemon): they never overlap.

Launched with ``dagster job launch`` and only the partition tag: the run
coordinator (dagster.yaml) adds ``fruix/guest`` before queueing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg

from fruix_dagster.defs.jobs import BUILD_JOB
from tests.conftest import REPO, make_local_build

BIN = REPO / ".venv" / "bin"


def step_intervals(root: Path) -> list[tuple[float, float, str]]:
    out = []
    for started in (root / "steps").glob("**/started"):
        d = started.parent
        out.append((float(started.read_text()), float((d / "finished").read_text()), str(d.relative_to(root))))
    return sorted(out)


def build_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The build_target runs (the daemon's refresh_history_after_build sensor adds refresh_history runs)."""
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=BUILD_JOB)))


def test_second_run_for_a_guest_waits_in_the_queue_then_succeeds(tmp_path, monkeypatch):
    lb = make_local_build(tmp_path)
    home = Path(lb.instance.root_directory)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "FRUIX_CONFIG": str(lb.settings_path)}
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        config = json.dumps({"resources": {"build_options": {"config": {"force": True}}}})
        tags = json.dumps({"dagster/partition": "amd64"})
        for _ in range(2):
            subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "build_target",
                            "--tags", tags, "--config-json", config], cwd=REPO, env=env, check=True,
                           capture_output=True)
        instance = dg.DagsterInstance.from_config(str(home))
        deadline = time.monotonic() + 1200
        saw_queued_while_other_ran = False
        while time.monotonic() < deadline:
            runs = build_runs(instance)
            statuses = {r.status for r in runs}
            if dg.DagsterRunStatus.STARTED in statuses and dg.DagsterRunStatus.QUEUED in statuses:
                saw_queued_while_other_ran = True
            if len(runs) == 2 and all(r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                                      for r in runs):
                break
            time.sleep(0.5)
        runs = build_runs(instance)
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
        assert saw_queued_while_other_ran
        assert all(r.tags.get("fruix/guest") == "local" for r in runs), [r.tags for r in runs]
        first, second = sorted((instance.get_run_record_by_id(r.run_id) for r in runs),
                               key=lambda rec: rec.start_time)
        assert second.start_time >= first.end_time
        intervals = step_intervals(lb.build_root)
        assert len(intervals) == 10  # five make steps, twice (forced)
        for (s1, f1, n1), (s2, _f2, n2) in zip(intervals, intervals[1:]):
            assert s2 >= f1, f"{n2} started before {n1} finished"
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
