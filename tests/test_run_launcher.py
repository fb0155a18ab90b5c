"""WorkerCheckingRunLauncher.check_run_worker_health on crafted runs of a real instance."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.events.log import EventLogEntry
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

from fruix_dagster import process_identity as pi
from fruix_dagster.defs.run_launcher import (DEAD_REASON, LAUNCHED_TAG, WORKER_TAG, WorkerCheckingRunLauncher,
                                          record_run_worker)
from tests.conftest import new_instance


def launcher_and_run(tmp_path, tags: dict[str, str], run_id: str = "0" * 8 + "-run") -> tuple:
    instance = new_instance(tmp_path / "home")
    run = instance.add_run(dg.DagsterRun(job_name="build_target", run_id=run_id, tags=tags,
                                         status=dg.DagsterRunStatus.STARTED))
    launcher = WorkerCheckingRunLauncher()
    launcher.register_instance(instance)
    return instance, launcher, run


def worker_tag(run_id: str, identity: pi.ProcessIdentity) -> str:
    return json.dumps({"run_id": run_id, **json.loads(identity.to_json())})


def test_the_recorded_worker_decides(tmp_path):
    run_id = "r1"
    _i, launcher, run = launcher_and_run(tmp_path, {WORKER_TAG: worker_tag(run_id, pi.current())}, run_id)
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING and health.run_worker_id == str(os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    gone = pi.ProcessIdentity.from_json(pi.current().to_json().replace(f'"pid":{os.getpid()}', f'"pid":{child.pid}'))
    _i, launcher, run = launcher_and_run(tmp_path / "b", {WORKER_TAG: worker_tag(run_id, gone)}, run_id)
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.NOT_FOUND
    assert health.msg.startswith(DEAD_REASON) and "no such process" in health.msg


def test_a_parents_worker_copied_by_a_reexecution_is_ignored(tmp_path):
    child = subprocess.Popen(["true"])
    child.wait()
    gone = pi.ProcessIdentity.from_json(pi.current().to_json().replace(f'"pid":{os.getpid()}', f'"pid":{child.pid}'))
    # the retry carries its parent's fruix/run_worker tag until its own worker records itself
    _i, launcher, run = launcher_and_run(tmp_path, {WORKER_TAG: worker_tag("parent", gone)}, "retry")
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING and "cannot tell" in health.msg


def launched_here(run_id: str) -> dict[str, str]:
    return {LAUNCHED_TAG: json.dumps({"run_id": run_id, **pi.host_facts()}),
            GRPC_INFO_TAG: json.dumps({"host": "localhost", "socket": "/tmp/x"})}


def started_process(instance: dg.DagsterInstance, run: dg.DagsterRun, pid: int) -> None:
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))


def test_without_a_record_dagsters_own_pid_event_is_used(tmp_path):
    instance, launcher, run = launcher_and_run(tmp_path, launched_here("r2"), "r2")
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # no event yet: cannot tell
    started_process(instance, run, os.getpid())  # this process started before the event: it is the worker
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    child = subprocess.Popen(["true"])
    child.wait()
    started_process(instance, run, child.pid)
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.NOT_FOUND and "no such process" in health.msg


def test_without_a_record_a_pid_taken_after_the_event_is_not_the_worker(tmp_path):
    instance, launcher, run = launcher_and_run(tmp_path, launched_here("r3"), "r3")
    stranger = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        # the worker wrote its event an hour ago; the process holding that pid now started just now
        event = DagsterEvent(event_type_value=DagsterEventType.ENGINE_EVENT.value, job_name=run.job_name,
                             message=f"Started process for run (pid: {stranger.pid}).",
                             event_specific_data=EngineEventData.in_process(stranger.pid))
        instance.store_event(EventLogEntry(error_info=None, level=logging.INFO, user_message="",
                                           run_id=run.run_id, timestamp=time.time() - 3600,
                                           dagster_event=event, job_name=run.job_name))
        health = launcher.check_run_worker_health(run)
        assert health.status == WorkerStatus.NOT_FOUND and "later process" in health.msg
    finally:
        stranger.kill()
        stranger.wait()


def test_runs_launched_elsewhere_or_in_process_are_never_dead(tmp_path):
    child = subprocess.Popen(["true"])
    child.wait()
    elsewhere = {LAUNCHED_TAG: json.dumps({"run_id": "r5", **pi.host_facts(), "host": "orchestrator-2"})}
    for tags in (elsewhere, {}):  # {}: execute_in_process, no launcher involved
        instance, launcher, run = launcher_and_run(tmp_path / str(len(tags)), tags, "r5")
        started_process(instance, run, child.pid)
        health = launcher.check_run_worker_health(run)
        assert health.status == WorkerStatus.RUNNING and "cannot tell" in health.msg


def test_the_run_worker_records_itself_and_only_itself(tmp_path):
    instance, _l, run = launcher_and_run(tmp_path, {}, "r6")
    started_process(instance, run, os.getpid() + 1)  # the run worker is another process (this is a step process)
    record_run_worker(instance, "r6")
    assert WORKER_TAG not in instance.get_run_by_id("r6").tags
    started_process(instance, run, os.getpid())
    record_run_worker(instance, "r6")
    recorded = json.loads(instance.get_run_by_id("r6").tags[WORKER_TAG])
    assert recorded.pop("run_id") == "r6"
    assert pi.ProcessIdentity.from_json(json.dumps(recorded)) == pi.current()
    instance, _l, run = launcher_and_run(tmp_path / "b", {}, "r7")  # execute_in_process: no such event
    record_run_worker(instance, "r7")
    assert json.loads(instance.get_run_by_id("r7").tags[WORKER_TAG])["pid"] == os.getpid()


def test_the_launcher_module_loads_without_settings(tmp_path):
    """The webserver and the daemon import it from dagster.yaml: no settings file, no definitions."""
    code = ("import json, sys, fruix_dagster.defs.run_launcher as m; m.WorkerCheckingRunLauncher(); "
            "print(json.dumps(sorted(n for n in sys.modules if n.startswith('fruix_dagster'))))")
    env = {k: v for k, v in os.environ.items() if k != "FRUIX_CONFIG"} | {"FRUIX_CONFIG": str(tmp_path / "missing.toml")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["fruix_dagster", "fruix_dagster.defs", "fruix_dagster.defs.run_launcher",
                         "fruix_dagster.process_identity"]


def test_the_instance_files_enable_the_check_and_one_retry(tmp_path, monkeypatch):
    import yaml

    from fruix_dagster.defs.history import rebuild_check_job
    from tests.conftest import REPO

    repo_yaml = yaml.safe_load((REPO / "dagster.yaml").read_text())
    deploy_yaml = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    for key in ("run_launcher", "run_monitoring", "run_retries"):
        assert repo_yaml[key] == deploy_yaml[key], key
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_launcher, WorkerCheckingRunLauncher)
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert rebuild_check_job().tags["dagster/max_retries"] == "0"
