"""The notify sensors in a real dagster-daemon: a launched build fails, the mail arrives, and the
channel that answers 500 marks the sensor's tick failed with the reason and no secret."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
from dagster._core.scheduler.instigation import TickStatus

from fruix_dagster.defs.jobs import BUILD_JOB
from fruix_dagster.defs.notify import FAILURE_SENSOR
from tests.conftest import REPO, make_local_build
from tests.support.loopback import HttpServer, SmtpServer
from tests.test_notify_sensors import PW_ENV, TOKEN_ENV, notify_toml

BIN = REPO / ".venv" / "bin"
TOKEN = "daemon-token-77aa"


def wait_for(what: str, condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


def sensor_state(instance: dg.DagsterInstance):
    return next((s for s in instance.all_instigator_state() if s.name == FAILURE_SENSOR), None)


def test_daemon_sends_the_failure_and_marks_the_tick_of_a_failing_channel(tmp_path, monkeypatch):
    with SmtpServer(tmp_path / "smtp") as smtp, HttpServer(status=500) as hook:
        lb = make_local_build(tmp_path, build={"make_vars": {"SAMPLE_FAIL": "buildworld"}},
                              extra=notify_toml(smtp, [hook.url]))
        home = Path(lb.instance.root_directory)
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        env = {**os.environ, "DAGSTER_HOME": str(home), "FRUIX_CONFIG": str(lb.settings_path),
               PW_ENV: smtp.password, TOKEN_ENV: TOKEN}
        instance = dg.DagsterInstance.from_config(str(home))
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            # the sensor's first tick sets its cursor to "now": launch only after it
            wait_for("the sensor's first tick", lambda: (s := sensor_state(instance)) is not None
                     and s.instigator_data is not None and s.instigator_data.cursor, 180)
            tags = json.dumps({"dagster/partition": "amd64", "fruix/guest": "local", "fruix/target": "amd64"})
            subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", BUILD_JOB,
                            "--tags", tags], cwd=REPO, env=env, check=True, capture_output=True)
            [mail] = smtp.collected.wait_for(1, timeout=300)
            state = sensor_state(instance)
            failed = wait_for("a failed tick", lambda: instance.get_ticks(
                state.instigator_origin_id, state.selector_id, statuses=[TickStatus.FAILURE]), 120)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name=BUILD_JOB))
        assert run.status == dg.DagsterRunStatus.FAILURE  # the build's own result
        assert run.run_id in mail.get_content() and "SAMPLE_FAIL=buildworld" in mail.get_content()
        error = failed[0].error.to_string()
        assert "not delivered to 1 of 2 channels" in error and "HTTP 500" in error
        assert hook.collected.attempts == 2  # tried, retried once, and not again on later ticks
        events = "\n".join(str(e) for e in instance.all_logs(run.run_id))
        for secret in (smtp.password, TOKEN):
            assert secret not in error and secret not in events
