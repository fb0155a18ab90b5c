"""The fruix-dagster command line as a person runs it: exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

BAD = {
    "jobs-zero": ("[build]\njobs = 0\n", "build.jobs"),
    "unknown-key": ("[build]\njbos = 2\n", "jbos"),
    "bad-toml": ("[build\n", "not valid TOML"),
    "reserved-var": ('[build]\nmake_vars = { DESTDIR = "/x" }\n', "DESTDIR"),
}


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FRUIX_CONFIG"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "fruix_dagster.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_config_reports_bad_files_in_one_line_without_traceback(tmp_path, name):
    text, key = BAD[name]
    path = tmp_path / "fruix.toml"
    path.write_text(text)
    res = run_cli("check-config", str(path))
    assert res.returncode == 1
    assert key in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stdout == ""


def test_check_config_prints_the_embedded_default(tmp_path):
    res = run_cli("check-config", env_extra={"DAGSTER_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "[build]" in res.stdout and "sample_src" in res.stdout
    assert f'build_root = "{tmp_path}/fruix/build-root"' in res.stdout


def test_report_without_builds_is_incomplete(tmp_path):
    res = run_cli("report", env_extra={"DAGSTER_HOME": str(tmp_path)})
    assert res.returncode == 1
    assert res.stdout.strip().splitlines()[-1] == "host_initiated_native_build=incomplete"
    assert "Traceback" not in res.stderr


def test_report_without_dagster_home_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "FRUIX_CONFIG")}
    res = subprocess.run([sys.executable, "-m", "fruix_dagster.cli", "report"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert "DAGSTER_HOME is not set" in res.stderr and "Traceback" not in res.stderr


def test_version_and_help_list_every_command_on_one_line_without_markup():
    from importlib.metadata import version

    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"fruix-dagster {version('fruix_dagster')} (dagster {version('dagster')})"
    res = run_cli("--help")
    assert res.returncode == 0
    assert "``" not in res.stdout and ":class:" not in res.stdout
    lines = res.stdout.splitlines()
    for command in ("check-config", "report", "build", "history", "rebuild-check", "export", "store"):
        line = next((x for x in lines if x.split()[:1] == [command]), None)
        assert line is not None, (command, res.stdout)
        assert len(line.split()) > 2, f"{command}: no help on its line: {line!r}"
    res = run_cli("build", "--help")
    assert "--queue" in res.stdout and "in this process" in res.stdout


def test_build_queue_submits_a_queued_run_tagged_with_its_guest(tmp_path, monkeypatch):
    from tests.conftest import copy_sample, write_settings
    import dagster as dg
    import shutil

    home = tmp_path / "home"
    home.mkdir()
    copy_sample(tmp_path / "src")
    cfg = write_settings(tmp_path / "fruix.toml", build={"build_root": str(tmp_path / "root")},
                         source={"from": "path", "path": str(tmp_path / "src")},
                         store={"root": str(tmp_path / "store")},
                         guests=[{"name": "local", "kind": "local"}], targets=[{"name": "amd64", "guest": "local"}])
    env = {"DAGSTER_HOME": str(home), "FRUIX_CONFIG": str(cfg)}
    # an instance without the run queue: one clear error
    (home / "dagster.yaml").write_text("run_coordinator:\n  module: dagster.core.run_coordinator\n"
                                       "  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n")
    res = run_cli("build", "--queue", env_extra=env)
    assert res.returncode == 1 and "--queue needs the run queue" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    # the repository's dagster.yaml: queued (no daemon runs here), tagged by the run coordinator
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    res = run_cli("build", "--queue", "--force", env_extra=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("queued amd64: run ") and "guest local is free" in res.stdout, res.stdout
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert run.tags["fruix/guest"] == "local" and run.tags["fruix/force"] == "true"
    res = run_cli("build", "--queue", "--select", "kernel_build", env_extra=env)
    assert res.returncode == 1 and "--select cannot be combined with --queue" in res.stderr
