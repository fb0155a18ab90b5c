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
