"""A whole-orchestrator crash, through a real dagster-daemon: the dead run fails, the next run re-attaches.

The daemon runs in its own session; killing its process group kills the
daemon, its code server and the run worker at once, as a host crash or an
OOM kill of the host would.  The build step, detached on the (local) guest,
keeps running.  Monitoring polls every second here (dagster.yaml: 30 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

from dagster._core.launcher import WorkerStatus

from fruix_dagster import process_identity as pi
from fruix_dagster.defs.records import latest
from fruix_dagster.defs.run_launcher import DEAD_REASON, WORKER_TAG, WorkerCheckingRunLauncher
from tests.conftest import REPO, LocalBuild, make_local_build, make_ssh_build
from tests.support.postgres import postgres_server  # noqa: F401
from tests.test_postgres import DEPLOY_YAML
from tests.test_run_queue import build_runs
from tests.test_ssh_build import step_runs, wait_for

BIN = REPO / ".venv" / "bin"
POLL = 1
# A restarted daemon needs some seconds (on a busy 2-core machine: tens) before its first monitoring pass.
DAEMON_START = 90
MARGIN = 15


class Daemon:
    """dagster-daemon on the build's instance, logging to a file."""

    def __init__(self, lb: LocalBuild, log: Path, instance_yaml: Path = REPO / "dagster.yaml"):
        self.home = Path(lb.instance.root_directory)
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "FRUIX_CONFIG": str(lb.settings_path)}
        self.log = log
        self.guest = lb.settings.guest_for("amd64").name
        self.proc: subprocess.Popen | None = None
        self.started_at = 0
        config = yaml.safe_load(instance_yaml.read_text())
        config["run_monitoring"]["poll_interval_seconds"] = POLL
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(config))

    def start(self) -> float:
        self.started_at = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return time.time()

    def crash(self) -> None:
        """SIGKILL the whole process group: daemon, code server, run worker."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def launch(self, **tags: str) -> None:
        all_tags = {"dagster/partition": "amd64", "fruix/guest": self.guest, "fruix/target": "amd64", **tags}
        subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "build_target",
                        "--tags", json.dumps(all_tags)], cwd=REPO, env=self.env, check=True, capture_output=True)

    def checks_of(self, run_id: str) -> int:
        """Monitoring passes over the run by the daemon started last."""
        with self.log.open("rb") as f:
            f.seek(self.started_at)
            return f.read().decode(errors="replace").count(f"Checking run {run_id}")


@contextmanager
def daemon_for(lb: LocalBuild, log: Path, instance_yaml: Path = REPO / "dagster.yaml"):
    d = Daemon(lb, log, instance_yaml)
    try:
        yield d
    finally:
        d.stop()


def slow_build(tmp_path: Path, monkeypatch, seconds: int) -> LocalBuild:
    """A local build whose buildworld is silent for ``seconds`` (the sample tree's SAMPLE_SLEEP)."""
    lb = make_local_build(tmp_path, build={"make_vars": {"SAMPLE_SLEEP": str(seconds)}})
    monkeypatch.setenv("DAGSTER_HOME", lb.instance.root_directory)  # dagster.yaml reads it
    return lb


def instance_of(lb: LocalBuild) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(lb.instance.root_directory)


def only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    runs = build_runs(instance)
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def recorded_worker(instance: dg.DagsterInstance, run_id: str) -> pi.ProcessIdentity | None:
    raw = instance.get_run_by_id(run_id).tags.get(WORKER_TAG)
    if not raw:
        return None
    data = json.loads(raw)
    data.pop("run_id")
    return pi.ProcessIdentity.from_json(json.dumps(data))


def crash_during_buildworld(lb: LocalBuild, d: Daemon, **tags: str) -> tuple[dg.DagsterRun, pi.ProcessIdentity]:
    d.start()
    d.launch(**tags)
    instance = instance_of(lb)
    wait_for(lambda: build_runs(instance) and only_run(instance).status == dg.DagsterRunStatus.STARTED,
             DAEMON_START + 60, "the run to start")
    run = only_run(instance)
    wait_for(lambda: step_runs(lb.build_root, "buildworld") == 1, 120, "buildworld to start on the guest")
    worker = recorded_worker(instance, run.run_id)
    assert worker is not None and worker.pid != os.getpid()
    d.crash()
    wait_for(lambda: pi.judge(worker).state == "dead", 30, "the run worker to die with its process group")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # nobody said otherwise
    assert running_buildworld(lb), "the guest step must outlive the orchestrator"
    return run, worker


def running_buildworld(lb: LocalBuild) -> bool:
    return any(not (d / "finished").exists() for d in (lb.build_root / "steps").glob("buildworld-*")
               if d.is_dir() and (d / "started").exists())


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return records[-1].event_log_entry.message


def wait_failed_in_bound(instance: dg.DagsterInstance, d: Daemon, run_id: str, restarted: float) -> float:
    wait_for(lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE,
             DAEMON_START + POLL + MARGIN, "the dead run to be marked failed")
    took = instance.get_run_record_by_id(run_id).end_time - restarted
    # found by the restarted daemon's first monitoring passes, not by luck or a timeout
    assert 1 <= d.checks_of(run_id) <= 2, d.checks_of(run_id)
    return took


def assert_reattached(lb: LocalBuild, instance: dg.DagsterInstance, run_id: str) -> None:
    world = latest(instance, "world_build", "amd64")
    assert world.run_id == run_id
    assert world.metadata["step_action"] in ("attached", "reused")
    for name in ("buildworld", "buildkernel", "installworld", "distribution", "installkernel"):
        assert step_runs(lb.build_root, name) == 1, name


def test_crash_then_relaunch_fails_the_dead_run_and_reattaches(tmp_path, monkeypatch):
    relaunch_after_crash(tmp_path, slow_build(tmp_path, monkeypatch, 25))


def test_crash_with_an_ssh_guest_then_relaunch(tmp_path, monkeypatch, ssh_guest):
    """The make step goes on inside the SSH guest while the orchestrator is down."""
    lb = make_ssh_build(tmp_path, ssh_guest, build={"jobs": 2, "min_free_gib": 0.5,
                                                    "make_vars": {"SAMPLE_SLEEP": "25"}})
    monkeypatch.setenv("DAGSTER_HOME", lb.instance.root_directory)
    relaunch_after_crash(tmp_path, lb)
    assert not [p for p in ssh_guest.processes() if "buildworld" in p[1]]


def relaunch_after_crash(tmp_path: Path, lb: LocalBuild) -> None:
    with daemon_for(lb, tmp_path / "daemon.log") as d:
        dead, _worker = crash_during_buildworld(lb, d, **{"dagster/max_retries": "0"})
        restarted = d.start()
        d.launch(**{"dagster/max_retries": "0"})
        instance = instance_of(lb)
        took = wait_failed_in_bound(instance, d, dead.run_id, restarted)
        message = failure_message(instance, dead.run_id)
        assert DEAD_REASON in message and ("no such process" in message or "exited" in message), message
        new = next(r for r in build_runs(instance) if r.run_id != dead.run_id)
        wait_for(lambda: instance.get_run_by_id(new.run_id).is_finished, 300, "the relaunched run to finish")
        assert instance.get_run_by_id(new.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert_reattached(lb, instance, new.run_id)
        assert len(build_runs(instance)) == 2  # no automatic retry with dagster/max_retries=0
    print(f"dead run marked failed {took:.1f} s after the daemon restart")


def retried_and_reattached(lb: LocalBuild, instance: dg.DagsterInstance, dead: dg.DagsterRun) -> None:
    wait_for(lambda: len(build_runs(instance)) == 2, DAEMON_START + 60, "the automatic retry")
    retry = next(r for r in build_runs(instance) if r.run_id != dead.run_id)
    assert retry.parent_run_id == dead.run_id and retry.tags["dagster/retry_number"] == "1"
    wait_for(lambda: instance.get_run_by_id(retry.run_id).is_finished, 300, "the retry to finish")
    assert instance.get_run_by_id(retry.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert_reattached(lb, instance, retry.run_id)
    assert len(build_runs(instance)) == 2


def test_crash_then_automatic_retry_even_with_the_pid_recycled(tmp_path, monkeypatch):
    lb = slow_build(tmp_path, monkeypatch, 25)
    with daemon_for(lb, tmp_path / "daemon.log") as d:
        dead, _worker = crash_during_buildworld(lb, d)  # dagster.yaml: run_retries.max_retries 1
        # a live, unrelated process now holds the dead worker's number (its start time is another)
        stranger = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            instance = instance_of(lb)
            recycled = json.loads(instance.get_run_by_id(dead.run_id).tags[WORKER_TAG]) | {"pid": stranger.pid}
            instance.add_run_tags(dead.run_id, {WORKER_TAG: json.dumps(recycled)})
            restarted = d.start()
            wait_failed_in_bound(instance, d, dead.run_id, restarted)
            assert stranger.poll() is None
        finally:
            stranger.kill()
            stranger.wait()
        message = failure_message(instance, dead.run_id)
        assert DEAD_REASON in message and "belongs to another process" in message, message
        retried_and_reattached(lb, instance, dead)


def test_crash_on_postgresql_with_the_deploy_instance(tmp_path, monkeypatch, postgres_server):
    """deploy/dagster.postgres.yaml, as the systemd unit / rc.d script runs the daemon with it."""
    for k, v in postgres_server.dagster_env().items():
        monkeypatch.setenv(k, v)
    lb = slow_build(tmp_path, monkeypatch, 25)
    with daemon_for(lb, tmp_path / "daemon.log", DEPLOY_YAML) as d:
        instance = instance_of(lb)
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        dead, _worker = crash_during_buildworld(lb, d)
        restarted = d.start()
        took = wait_failed_in_bound(instance, d, dead.run_id, restarted)
        assert DEAD_REASON in failure_message(instance, dead.run_id)
        retried_and_reattached(lb, instance, dead)
    print(f"PostgreSQL: dead run marked failed {took:.1f} s after the daemon restart")


def test_a_slow_live_run_is_never_marked_dead(tmp_path, monkeypatch):
    lb = slow_build(tmp_path, monkeypatch, 12)
    with daemon_for(lb, tmp_path / "daemon.log") as d:
        d.start()
        d.launch()
        instance = instance_of(lb)
        wait_for(lambda: step_runs(lb.build_root, "buildworld") == 1, DAEMON_START + 60, "buildworld to start")
        run = only_run(instance)
        checks = d.checks_of(run.run_id)
        # buildworld is silent for 12 s: several monitoring passes look at the live, quiet worker
        wait_for(lambda: d.checks_of(run.run_id) >= checks + 3 or not running_buildworld(lb), 60,
                 "monitoring passes during buildworld")
        assert running_buildworld(lb) and d.checks_of(run.run_id) >= checks + 3
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        launcher = WorkerCheckingRunLauncher()
        launcher.register_instance(instance)
        health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
        assert health.status == WorkerStatus.RUNNING
        assert health.msg.endswith(": running"), health.msg
        wait_for(lambda: instance.get_run_by_id(run.run_id).is_finished, 300, "the run to finish")
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert d.checks_of(run.run_id) >= checks + 3
        assert len(build_runs(instance)) == 1
