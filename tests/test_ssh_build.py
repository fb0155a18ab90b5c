"""The whole graph inside a real Fruix-shaped guest over SSH."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fruix_dagster.defs.records import latest
from tests.conftest import REPO, SshBuild, make_ssh_build
from tests.independent import tree_facts

ARTIFACTS = {"world_stage": "stage/amd64/world", "kernel_stage": "stage/amd64/kernel",
             "headers_slice": None, "bootloader_slice": None}


def step_runs(root: Path, name: str) -> int:
    """How many times the step `name` was started on the guest (every attempt counts)."""
    runs = 0
    for d in (root / "steps").glob(f"{name}-*"):
        if d.name.endswith(".current"):
            continue
        runs += (1 if (d / "started").exists() else 0) + len(list(d.glob("attempt-*/started")))
    return runs


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def digests(sb: SshBuild) -> dict[str, str]:
    return {a: latest(sb.instance, a, "amd64").metadata["tree_sha256"] for a in ARTIFACTS}


def test_full_graph_over_ssh_matches_the_guest_files(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest)
    result = sb.run()
    assert result.success
    src = latest(sb.instance, "freebsd_source", "amd64").metadata
    assert src["source_store"] == ssh_guest.source_store
    assert src["source_root"] == ssh_guest.source_root
    assert src["store_hash"] == ssh_guest.store_hash
    assert src["guest_address"] == f"{ssh_guest.host}:{ssh_guest.port}"
    for asset, sub in ARTIFACTS.items():
        meta = latest(sb.instance, asset, "amd64").metadata
        # bsdtar carried the stage's schg flags into the manifest; the store's copy holds none
        flags_from = sb.build_root / (sub or "stage/amd64/world")
        facts = tree_facts(Path(meta["path"]), flags_from=flags_from)
        assert (meta["size_bytes"], meta["file_count"], meta["tree_sha256"]) == (
            facts["size_bytes"], facts["file_count"], facts["tree_sha256"]), asset
        if sub:  # stages: the stored tree is exactly the guest's staged tree
            assert meta["guest_path"] == f"/var/tmp/fruix-native-build/{sub}"
            assert tree_facts(sb.build_root / sub) == facts
    kernel = latest(sb.instance, "kernel_stage", "amd64").metadata
    assert kernel["sha256:boot/kernel/kernel"] == tree_facts(sb.build_root / "stage/amd64/kernel")["sha256"]["boot/kernel/kernel"]
    for name in ("buildworld", "buildkernel", "installworld", "distribution", "installkernel"):
        assert step_runs(sb.build_root, name) == 1, name


def test_dropped_connections_during_buildworld_cost_nothing(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest, build={"jobs": 2, "min_free_gib": 0.5,
                                                    "make_vars": {"SAMPLE_SLEEP": "9"}})
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", sb.run()))
    runner.start()
    root = sb.build_root
    wait_for(lambda: step_runs(root, "buildworld") == 1, 60, "buildworld to start")
    killed = 0
    for _ in range(3):
        wait_for(lambda: ssh_guest.connection_pids(), 20, "the orchestrator to reconnect")
        killed += ssh_guest.kill_connections()
        time.sleep(1.5)
    runner.join(240)
    assert killed >= 3
    assert outcome["result"].success
    assert step_runs(root, "buildworld") == 1
    interrupted = digests(sb)
    # an uninterrupted run of the same source on the same guest gives the same trees
    assert sb.run(config={"force": True}).success
    assert step_runs(root, "buildworld") == 2
    assert digests(sb) == interrupted


def test_a_killed_orchestrator_reattaches_on_rerun(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest, build={"jobs": 2, "min_free_gib": 0.5,
                                                    "make_vars": {"SAMPLE_SLEEP": "6"}})
    env = {**os.environ, "FRUIX_CONFIG": str(sb.settings_path),
           "DAGSTER_HOME": sb.instance.root_directory}
    proc = subprocess.Popen([sys.executable, "-m", "fruix_dagster.cli", "build"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: step_runs(sb.build_root, "buildworld") == 1, 60, "buildworld to start")
        wait_for(lambda: any(log.stat().st_size > 0 for log in (sb.build_root / "steps").glob("buildworld-*/log")),
                 60, "buildworld to print its first output")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [p for p in ssh_guest.processes() if "buildworld" in p[1]], "the build must outlive its orchestrator"
    result = sb.run()
    assert result.success
    assert latest(sb.instance, "world_build", "amd64").metadata["step_action"] == "attached"
    assert step_runs(sb.build_root, "buildworld") == 1


def test_missing_development_environment_is_named(ssh_guest, tmp_path):
    ssh_guest.exec(["sh", "-c", "umount -l /usr/share/mk 2>/dev/null; rm -f /run/current-development"])
    sb = make_ssh_build(tmp_path, ssh_guest, build={"jobs": 2, "min_free_gib": 100000})
    result = sb.run()
    assert not result.success
    check = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"][0]
    evaluation = check.event_specific_data
    assert not evaluation.passed
    missing = evaluation.metadata["missing"].value
    assert "/run/current-development" in missing
    assert "free space" in missing
    assert step_runs(sb.build_root, "buildworld") == 0 if (sb.build_root / "steps").exists() else True


def test_slices_rematerialize_from_the_store_with_the_guest_down(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest)
    assert sb.run().success
    before = latest(sb.instance, "headers_slice", "amd64")
    ssh_guest.stop()
    result = sb.run(select=["headers_slice", "bootloader_slice"])
    assert result.success
    after = latest(sb.instance, "headers_slice", "amd64")
    assert after.run_id != before.run_id
    assert after.metadata["tree_sha256"] == before.metadata["tree_sha256"]
    assert Path(after.metadata["path"]).is_dir()
