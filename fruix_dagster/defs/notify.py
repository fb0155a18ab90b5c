"""When to tell people: Dagster's run-status sensor machinery around ``fruix_dagster.notify``,
and the summary job and schedule.

* ``notify_on_failure`` (``run_failure_sensor`` on ``build_target``): one
  message per failed run — Dagster emits one run-failure event per run and the
  sensor's cursor moves past it, so a run with three failed steps is one
  message (the first failed step in full, the others named).  A step stopped
  by the silence watchdog of ``build/run.py`` ("printed nothing … over the
  silence limit") is a ``stuck`` message instead of a ``failure`` one.
* ``notify_on_recovery`` (``run_status_sensor`` on SUCCESS): a successful
  ``build_target`` run whose previous finished run of the same target failed
  sends ``recovered`` — the first success after a failure, once.
* A failed run that Dagster will retry (``dagster/will_retry``: its worker
  died, see ``run_retries`` in ``dagster.yaml``) gets no message; its retry does.
* ``notify_summary`` (job, op ``send_summary``) and its schedule
  (``notify.summary_cron``): every target's last build against the median,
  size and digest changes (:mod:`fruix_dagster.notify.summary`); the same
  Markdown is the ``summary`` metadata of the run's output and of each
  ``build_history`` materialization (for its target).

Nothing is sent from a build step: the sensors run in the daemon, after the
run has ended, so a channel that is down can neither fail nor delay a build.
When a channel still fails after its retries, the sensor logs it and raises
:class:`NotifyError`; Dagster's machinery turns that into a failed tick with
the message (secrets removed), and the cursor still moves on, so the channels
that did get the message do not get it twice.  This is the shape of Dagster's
own ``make_email_on_run_failure_sensor`` (a ``run_failure_sensor`` that
sends), with our channels, retries and message.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import dagster as dg

from fruix_dagster.defs.jobs import BUILD_JOB, GUEST_TAG
from fruix_dagster.errors import FruixError
from fruix_dagster.notify import Notice, deliver, triage
from fruix_dagster.notify.summary import WINDOW, RunFact, summary_markdown
from fruix_dagster.settings import Settings

FAILURE_SENSOR = "notify_on_failure"
RECOVERY_SENSOR = "notify_on_recovery"
#: set by Dagster on a failed run that run_retries will retry (dagster/_core/storage/tags.py)
WILL_RETRY = "dagster/will_retry"
_ETA = re.compile(r"\s+\[[^\]]*\]$")  # the "[12 s, expected …]" suffix assets add to a marker line


class NotifyError(FruixError):
    """A notification could not be delivered to some channel (after its retries)."""


def run_url(settings: Settings, run_id: str) -> str:
    return f"{settings.notify.ui_url}runs/{run_id}"


def _status(settings: Settings, *events: str) -> dg.DefaultSensorStatus:
    wanted = any(settings.notify.channels_for(e) for e in events)
    return dg.DefaultSensorStatus.RUNNING if wanted else dg.DefaultSensorStatus.STOPPED


def send(settings: Settings, notice: Notice, log: Any, environ: Mapping[str, str] = os.environ) -> str:
    """Deliver, log each channel's outcome, raise NotifyError naming the channels that failed."""
    results = deliver(settings.notify, notice, environ)
    failed = [d for d in results if not d.ok]
    for d in results:
        (log.error if not d.ok else log.info)(f"{notice.event} of run {notice.run_id}: {d.describe()}")
    if failed:
        raise NotifyError(f"{notice.event} message for run {notice.run_id} (target {notice.target}) not delivered "
                          f"to {len(failed)} of {len(results)} channels: " + "; ".join(d.describe() for d in failed))
    return f"{notice.event} message for run {notice.run_id} sent to {len(results)} channel(s)"


def _error_text(error: Any) -> tuple[str, str]:
    """(class name, message without the 'module.Class: ' prefix) of the error the step raised."""
    while error is not None and error.cls_name and error.cls_name.startswith("Dagster") and error.cause is not None:
        error = error.cause  # a wrapper around the user code's exception
    if error is None:
        return "", ""
    message = re.sub(r"^[\w.]*" + re.escape(error.cls_name or "") + r": ", "", error.message or "", count=1)
    return error.cls_name or "", message.rstrip("\n")


def last_marker(instance: dg.DagsterInstance, run_id: str, step: str) -> str:
    """The last '>>>' stage marker the step logged (without its ETA suffix), or ''."""
    found = ""
    for entry in instance.all_logs(run_id):
        if entry.step_key == step and entry.user_message.startswith(">>> "):
            found = _ETA.sub("", entry.user_message)
    return found


def failure_notice(settings: Settings, instance: dg.DagsterInstance, run: dg.DagsterRun,
                   step_failures: list, run_failure_message: str = "") -> Notice:
    target = run.tags.get("dagster/partition", "")
    guest = run.tags.get(GUEST_TAG) or (settings.guest_for(target).name if target in settings.target_names else "")
    steps = [e.step_key for e in step_failures if e.step_key]
    if step_failures:
        _cls, message = _error_text(step_failures[0].step_failure_data.error)
    else:  # the run failed outside a step (launch, resources, a lost worker)
        message = run_failure_message or "the run failed before any step failed"
    t = triage(message)
    step = steps[0] if steps else ""
    stage = (last_marker(instance, run.run_id, step) if step else "") or t.last_marker
    return Notice(event="stuck" if t.stuck else "failure", target=target, guest=guest, run_id=run.run_id,
                  run_url=run_url(settings, run.run_id), job=run.job_name, step=step, stage=stage, failure=t,
                  other_steps=tuple(dict.fromkeys(s for s in steps[1:] if s != step)))


def will_retry(run: dg.DagsterRun) -> bool:
    return run.tags.get(WILL_RETRY) == "true"


def previous_finished_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun | None:
    """The last build_target run of the same target that finished before ``run`` was created,
    not counting failed runs that Dagster retried (their retry is what counts)."""
    me = instance.get_run_record_by_id(run.run_id)
    if me is None:
        return None
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=run.job_name, tags={"dagster/partition": run.tags.get("dagster/partition", "")},
                              statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
                              created_before=me.create_timestamp),
        limit=20)
    return next((r.dagster_run for r in records if not will_retry(r.dagster_run)), None)


def failure_sensor(settings: Settings, build_job) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=FAILURE_SENSOR, monitored_jobs=[build_job], minimum_interval_seconds=30,
        default_status=_status(settings, "failure", "stuck"),
        description="One message per failed build_target run (failure, or stuck when the silence watchdog "
                    "stopped it) to the [notify] channels; a channel that still fails after its retries "
                    "fails the tick, never the build.")
    def _on_failure(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        if will_retry(run):  # a lost worker (run_retries in dagster.yaml): the retry's result is what counts
            context.log.info(f"run {run.run_id} failed and will be retried; no message for this attempt")
            return None
        notice = failure_notice(settings, context.instance, run, list(context.get_step_failure_events()),
                                context.failure_event.message or "")
        if not settings.notify.channels_for(notice.event):
            context.log.info(f"run {run.run_id}: no [notify] channel wants {notice.event!r} messages")
            return None
        context.log.info(send(settings, notice, context.log))
        return None  # None: the machinery goes on to the next failed run in the same tick

    return _on_failure


def recovery_sensor(settings: Settings, build_job) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=RECOVERY_SENSOR, run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[build_job],
        minimum_interval_seconds=30, default_status=_status(settings, "recovered"),
        description="A 'recovered' message when a build_target run succeeds and the previous finished "
                    "run of its target failed.")
    def _on_success(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        previous = previous_finished_run(context.instance, run)
        if previous is None or previous.status != dg.DagsterRunStatus.FAILURE:
            return None
        target = run.tags.get("dagster/partition", "")
        notice = Notice(event="recovered", target=target, run_id=run.run_id, job=run.job_name,
                        guest=run.tags.get(GUEST_TAG) or (settings.guest_for(target).name
                                                          if target in settings.target_names else ""),
                        run_url=run_url(settings, run.run_id), previous_run_id=previous.run_id,
                        previous_run_url=run_url(settings, previous.run_id))
        if settings.notify.channels_for("recovered"):
            context.log.info(send(settings, notice, context.log))
        return None

    return _on_success


def notify_sensors(settings: Settings, build_job) -> list[dg.SensorDefinition]:
    return [failure_sensor(settings, build_job), recovery_sensor(settings, build_job)]



# --------------------------------------------------------------------------- the summary

SUMMARY_JOB = "notify_summary"
SUMMARY_OP = "send_summary"
SUMMARY_SCHEDULE = "notify_summary_schedule"
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def run_facts(instance: dg.DagsterInstance, targets: list[str], window: int = WINDOW) -> list[RunFact]:
    """The last ``window + 1`` finished build_target runs of each target, newest first
    (runs Dagster retried are left out: their retry stands for them)."""
    out = []
    for target in targets:
        records = instance.get_run_records(
            filters=dg.RunsFilter(job_name=BUILD_JOB, tags={"dagster/partition": target}, statuses=_FINISHED),
            limit=3 * (window + 1))
        kept = [r for r in records if not will_retry(r.dagster_run)][: window + 1]
        out += [RunFact(r.dagster_run.run_id, target, r.dagster_run.status.value, r.start_time, r.end_time)
                for r in kept]
    return out


def summary_text(settings: Settings, instance: dg.DagsterInstance, targets: list[str]) -> tuple[str, str]:
    from fruix_dagster.defs.history import load_history

    frame = load_history(instance, targets)
    return summary_markdown(targets, run_facts(instance, targets), frame, settings.notify.ui_url)


def summary_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(name=SUMMARY_OP, description="Every target's last build, duration against the median, size and "
                                         "digest changes, sent to the [notify] channels that want 'summary'.")
    def _send(context):  # (no annotation: dagster checks it at run time, this module has string annotations)
        head, markdown = summary_text(settings, context.instance, list(settings.target_names))
        context.log.info(f"summary: {head}")
        notice = Notice(event="summary", run_id=context.run_id, markdown=markdown, extra={"headline": head},
                        run_url=run_url(settings, context.run_id))
        if settings.notify.channels_for("summary"):
            context.log.info(send(settings, notice, context.log))
        else:
            context.log.info("no [notify] channel wants 'summary' messages; the summary is only in this run")
        return dg.Output(head, metadata={"summary": dg.MetadataValue.md(f"**{head}**\n\n{markdown}")})

    @dg.job(name=SUMMARY_JOB, executor_def=dg.in_process_executor,
            description="The build summary of every target, sent to the [notify] channels; no guest needed.")
    def _job():
        _send()

    return _job


def summary_schedules(settings: Settings, job: dg.JobDefinition) -> list[dg.ScheduleDefinition]:
    """The summary schedule, when ``notify.summary_cron`` is set."""
    n = settings.notify
    if n.summary_cron is None:
        return []
    return [dg.ScheduleDefinition(name=SUMMARY_SCHEDULE, job=job, cron_schedule=n.summary_cron,
                                  execution_timezone=n.summary_timezone,
                                  default_status=dg.DefaultScheduleStatus.RUNNING,
                                  description="The morning build summary (notify.summary_cron).")]
