"""When to tell people: Dagster's run-status sensor machinery around ``fruix_dagster.notify``.

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

