"""The build farm's instance: deploy/dagster.postgres.yaml against a real PostgreSQL server.

A DAGSTER_HOME holding a copy of ``deploy/dagster.postgres.yaml`` (connection
facts from the ``DAGSTER_PG_*`` variables) and Debian's PostgreSQL server on
loopback (tests/support/postgres.py).  The whole graph builds into it, the
``fruix-dagster`` CLI reports from it, the database server restarts, and a
second run (a re-materialized ``bootloader_slice``) succeeds on the same,
long-lived instance object while everything the first run recorded is still
there — read back both through Dagster with a fresh instance and straight
from PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from fruix_dagster.defs.jobs import GUEST_TAG
from fruix_dagster.defs.records import latest
from tests.conftest import REPO, LocalBuild, copy_sample
from tests.support.postgres import PostgresServer, postgres_server  # noqa: F401

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

ASSETS = ["freebsd_source", "world_build", "kernel_build", "world_stage", "kernel_stage",
          "headers_slice", "bootloader_slice"]
ARTIFACTS = ["world_stage", "kernel_stage", "headers_slice", "bootloader_slice"]
DEPLOY_YAML = REPO / "deploy" / "dagster.postgres.yaml"


def mat_counts(instance: dg.DagsterInstance) -> dict[str, int]:
    return {a: len(instance.fetch_materializations(dg.AssetKey(a), limit=1000).records) for a in ASSETS}


def pg_event_counts(pg: PostgresServer) -> dict[str, int]:
    """Event counts by type, read with psql from the database itself (not through Dagster)."""
    out = pg.psql("SELECT dagster_event_type, count(*) FROM event_logs "
                  "WHERE dagster_event_type IS NOT NULL GROUP BY 1 ORDER BY 1", db=pg.dbname)
    return {k: int(v) for k, v in (line.split("|") for line in out.splitlines())}


def cli(*args: str) -> subprocess.CompletedProcess:
    """``fruix-dagster ARGS`` in a separate process (instance from $DAGSTER_HOME, settings from $FRUIX_CONFIG)."""
    exe = Path(sys.executable).with_name("fruix-dagster")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "fruix_dagster.cli"]
    return subprocess.run([*argv, *args], env=dict(os.environ), capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def history(asset: str) -> list[dict]:
    res = cli("history", "--target", "amd64", "--asset", asset, "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_full_graph_on_postgres_survives_a_server_restart(tmp_path, monkeypatch, postgres_server):
    pg = postgres_server
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    for k, v in pg.dagster_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    # settings as make_local_build writes them; the instance is the one DAGSTER_HOME names
    copy_sample(tmp_path / "src")
    instance = dg.DagsterInstance.get()
    lb = LocalBuild(tmp_path, tmp_path / "fruix.toml", instance)
    lb.rewrite()
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    run_queue = instance.get_concurrency_config().run_queue_config
    assert run_queue.tag_concurrency_limits == [
        {"key": "fruix/guest", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]

    # 1. the whole graph, then the harness report from a separate process
    first = lb.run()
    assert first.success
    assert first.dagster_run.tags[GUEST_TAG] == "local"
    rep1 = cli("report", "--target", "amd64")
    assert rep1.returncode == 0, rep1.stderr
    assert rep1.stdout.rstrip().splitlines()[-1] == "host_initiated_native_build=ok"
    facts1 = kv(rep1.stdout)
    hist1 = {a: history(a) for a in ARTIFACTS}
    assert {a: [r["run_id"] for r in rows] for a, rows in hist1.items()} == {a: [first.run_id] for a in ARTIFACTS}

    before = mat_counts(instance)
    assert before == {a: 1 for a in ASSETS}
    pg_before = pg_event_counts(pg)
    assert pg_before["ASSET_MATERIALIZATION"] == len(ASSETS)
    assert pg_before["ASSET_CHECK_EVALUATION"] >= 7      # six artifact shapes + development_environment
    # nothing went to SQLite files under DAGSTER_HOME
    assert not list(home.rglob("*.db")), list(home.rglob("*.db"))

    # 2. restart the database server (same data directory and port)
    pid_before = pg.pid
    start_time_before = pg.psql("SELECT pg_postmaster_start_time()")
    pg.restart()
    assert pg.pid != pid_before
    assert pg.psql("SELECT pg_postmaster_start_time()") != start_time_before
    assert pg_event_counts(pg) == pg_before

    # 3. a second run on the same, long-lived instance object
    kernel_before = latest(instance, "kernel_stage", "amd64")
    second = lb.run(select=["bootloader_slice"])
    assert second.success
    assert second.run_id != first.run_id

    # 4. everything is there, seen by a fresh instance object
    fresh = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(fresh.event_log_storage, PostgresEventLogStorage)
        assert mat_counts(fresh) == {**before, "bootloader_slice": before["bootloader_slice"] + 1}
        runs = {r.run_id: r.status for r in fresh.get_runs()}
        assert runs == {first.run_id: dg.DagsterRunStatus.SUCCESS, second.run_id: dg.DagsterRunStatus.SUCCESS}
        assert latest(fresh, "kernel_stage", "amd64") == kernel_before
        boot = latest(fresh, "bootloader_slice", "amd64")
        assert boot.run_id == second.run_id
        assert boot.metadata["tree_sha256"] == latest(instance, "bootloader_slice", "amd64").metadata["tree_sha256"]
        first_boot = fresh.fetch_materializations(dg.AssetKey("bootloader_slice"), limit=10).records[-1]
        assert first_boot.run_id == first.run_id
    finally:
        fresh.dispose()
    pg_after = pg_event_counts(pg)
    assert pg_after["ASSET_MATERIALIZATION"] == pg_before["ASSET_MATERIALIZATION"] + 1

    rep2 = cli("report", "--target", "amd64")
    assert rep2.returncode == 0, rep2.stderr
    facts2 = kv(rep2.stdout)
    assert facts2["host_initiated_native_build"] == "ok"
    assert facts2 == facts1          # carving the same stage again gives the same figures

    # fruix-dagster history: the first run's rows unchanged, plus the second bootloader_slice
    hist2 = {a: history(a) for a in ARTIFACTS}
    assert {a: rows for a, rows in hist2.items() if a != "bootloader_slice"} == \
        {a: rows for a, rows in hist1.items() if a != "bootloader_slice"}
    boot_rows = hist2["bootloader_slice"]
    assert [r["run_id"] for r in boot_rows] == [first.run_id, second.run_id]
    assert boot_rows[0] == hist1["bootloader_slice"][0]
    assert boot_rows[1]["tree_sha256"] == boot_rows[0]["tree_sha256"]
    assert boot_rows[1]["size_bytes"] == boot_rows[0]["size_bytes"] > 0
    instance.dispose()
