"""A run launcher that can tell a dead run worker from a live one (Dagster run monitoring).

Dagster's ``DefaultRunLauncher`` starts each run worker in the code server
(gRPC ``StartRun``) and offers no worker health check, so after a crash of
the whole orchestrator host (daemon, code server and worker killed at once)
a run stays ``STARTED`` for ever and, with one run per guest in the queue,
blocks its guest.  :class:`WorkerCheckingRunLauncher` launches exactly as
``DefaultRunLauncher`` does and adds ``check_run_worker_health``, which the
run monitoring daemon (``run_monitoring`` in ``dagster.yaml``) calls for every
``STARTED`` run each ``poll_interval_seconds``.

Who the worker is: the worker records itself, from inside the run
(:func:`record_run_worker`, called when the run's ``fruix`` resource is set
up), as the run tag ``fruix/run_worker`` — pid, /proc start time, boot id,
pid namespace, host (see :mod:`fruix_dagster.process_identity`).  The reply
of ``StartRun`` carries no pid, so the launcher cannot know it itself.
Until that tag exists (the moment between ``RUN_START`` and resource setup,
or a job without the resource) the check falls back to Dagster's own
"Started process for run (pid: N)" event, written by the worker before
``RUN_START``: the pid must run and must have started before that event.

Never a live run marked dead: Dagster's monitor fails a run for any status
but ``RUNNING``/``SUCCESS`` (``UNKNOWN`` included), so whatever this host
cannot see — a worker on another host or in another pid namespace, a run
launched from another host, a record not yet written — is reported
``RUNNING`` with the reason.  Only a worker whose process provably is not
there (no such pid, the pid taken by a later process, a zombie, a reboot
since) is ``NOT_FOUND``.

This module reads no settings: the webserver and the daemon import it from
``dagster.yaml`` (``run_launcher: {module: fruix_dagster.defs.run_launcher,
class: WorkerCheckingRunLauncher}``).
"""

from __future__ import annotations

import json

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

from fruix_dagster import process_identity as pi

WORKER_TAG = "fruix/run_worker"
LAUNCHED_TAG = "fruix/launched_on"
DEAD_REASON = ("run worker gone after an orchestrator restart; the guest step goes on and the next "
               "run re-attaches")
STARTED_PROCESS = "Started process for run (pid: "
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def record_run_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record this process as the worker of ``run_id`` (tag ``fruix/run_worker``), once."""
    try:
        me = pi.current()
    except OSError:
        return  # no /proc: the check answers "cannot tell" for this run, never "dead"
    run = instance.get_run_by_id(run_id)
    if run is None:
        return
    started = _started_process(instance, run_id)
    if started is not None and started[0] != me.pid:
        return  # a step process of a multiprocess executor, not the run worker itself
    if _worker_record(run) != me:
        instance.add_run_tags(run_id, {WORKER_TAG: json.dumps({"run_id": run_id, **json.loads(me.to_json())})})


def _worker_record(run: dg.DagsterRun) -> pi.ProcessIdentity | None:
    """The worker recorded by *this* run (a re-execution copies its parent's tags: ignore those)."""
    raw = run.tags.get(WORKER_TAG)
    if not raw:
        return None
    data = json.loads(raw)
    if data.pop("run_id", None) != run.run_id:
        return None
    return pi.ProcessIdentity.from_json(json.dumps(data))


def _started_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """Pid and time of Dagster's latest "Started process for run (pid: N)" event of the run."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT,
                                           ascending=False).records
    for rec in records:
        message = rec.event_log_entry.message or ""
        if message.startswith(STARTED_PROCESS):
            return int(message[len(STARTED_PROCESS):].split(")", 1)[0]), rec.event_log_entry.timestamp
    return None


class WorkerCheckingRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a run worker health check for run monitoring."""

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        self._instance.add_run_tags(run.run_id, {LAUNCHED_TAG: json.dumps({"run_id": run.run_id,
                                                                           **pi.host_facts()})})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if not pi.can_see_processes():
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no Linux /proc on this host: cannot tell "
                                        "whether the run worker runs")
        recorded = _worker_record(run)
        if recorded is not None:
            verdict = pi.judge(recorded)
            if verdict.state == "dead":
                return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"{DEAD_REASON} ({verdict.reason})",
                                            run_worker_id=str(recorded.pid))
            return CheckRunHealthResult(WorkerStatus.RUNNING, verdict.reason, run_worker_id=str(recorded.pid))
        return self._check_by_dagster_event(run)

    def _check_by_dagster_event(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        here = pi.host_facts()
        launched = json.loads(run.tags.get(LAUNCHED_TAG) or "{}")
        grpc_host = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}").get("host")
        if launched.get("run_id") != run.run_id or launched.get("host") != here["host"] or (
                grpc_host not in (None, *LOCAL_HOSTS, here["host"])):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker record and not launched by a code "
                                        "server of this host: cannot tell")
        if launched.get("boot_id") and here["boot_id"] and launched["boot_id"] != here["boot_id"]:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"{DEAD_REASON} (launched before this "
                                        "host rebooted)")
        started = _started_process(self._instance, run.run_id)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker not started yet: cannot tell")
        pid, when = started
        later = pi.started_after(pid, when)
        if later is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"{DEAD_REASON} (pid {pid}: no such process)",
                                        run_worker_id=str(pid))
        if later:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"{DEAD_REASON} (pid {pid} now belongs to a "
                                        "later process)", run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"pid {pid} running", run_worker_id=str(pid))

    def get_run_worker_debug_info(self, run: dg.DagsterRun, include_container_logs: bool | None = True
                                  ) -> str | None:
        recorded = _worker_record(run)
        return None if recorded is None else f"run worker: {recorded.to_json()}"
