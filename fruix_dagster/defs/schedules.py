"""The nightly schedule (one run per target) and the history refresh after each build.

The source-change sensor (an observation, no run) is in :mod:`.observation`.
"""

from __future__ import annotations

import dagster as dg

from fruix_dagster.defs.jobs import BUILD_JOB, run_tags
from fruix_dagster.defs.records import latest
from fruix_dagster.defs.observation import SENSOR
from fruix_dagster.graph import NAMES, SOURCE_ASSET
from fruix_dagster.nightly import source_reasons, what_changed
from fruix_dagster.settings import Settings

__all__ = ["SCHEDULE", "SENSOR", "HISTORY_SENSOR", "history_after_build_sensor", "nightly_reasons",
           "nightly_schedule"]

SCHEDULE = "nightly_build"


def nightly_schedule(settings: Settings) -> dg.ScheduleDefinition:
    s = settings.schedule

    @dg.schedule(
        name=SCHEDULE,
        cron_schedule=s.cron,
        execution_timezone=s.timezone,
        job_name=BUILD_JOB,
        default_status=dg.DefaultScheduleStatus.RUNNING if s.enabled else dg.DefaultScheduleStatus.STOPPED,
        description="Every target, one run each, on its own guest; unchanged sources run no make step.",
    )
    def _nightly(context: dg.ScheduleEvaluationContext):
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
        requests = []
        for target in settings.target_names:
            reasons = nightly_reasons(settings, context.instance, target)
            tags = {**run_tags(settings, target), "fruix/trigger": "nightly",
                    "fruix/changed": "yes" if reasons else "no"}
            if reasons:
                context.log.info(f"{target}: full build: {'; '.join(reasons)}")
                requests.append(dg.RunRequest(run_key=f"{target}:{stamp}", partition_key=target, tags=tags))
            else:
                context.log.info(f"{target}: nothing changed; re-reading freebsd_source only")
                requests.append(dg.RunRequest(run_key=f"{target}:{stamp}", partition_key=target, tags=tags,
                                              asset_selection=[dg.AssetKey(SOURCE_ASSET)]))
        return requests

    return _nightly


def nightly_reasons(settings: Settings, instance: dg.DagsterInstance, target: str) -> list[str]:
    """Why the nightly run of target must build (empty: nothing changed).

    Cheap: the guest's source is looked at, never streamed or hashed
    (:func:`fruix_dagster.nightly.source_reasons`).  A guest that cannot be
    asked cheaply (a VM that may be halted) or cannot be reached gets a full
    run: the run itself boots it and reuses every unchanged step.
    """
    recorded = {}
    for asset in NAMES:
        rec = latest(instance, asset, target)
        recorded[asset] = rec.metadata if rec else None
    reasons, store_hash = source_reasons(settings, target, recorded[SOURCE_ASSET])
    if reasons:
        return reasons
    assert store_hash is not None
    return what_changed(settings, target, store_hash, recorded)


HISTORY_SENSOR = "refresh_history_after_build"


def history_after_build_sensor(settings: Settings, history_job) -> dg.RunStatusSensorDefinition:
    """After every successful build run, refresh that target's build_history (charts, files)."""

    @dg.run_status_sensor(
        name=HISTORY_SENSOR,
        run_status=dg.DagsterRunStatus.SUCCESS,
        request_job=history_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING if settings.sensor.enabled
        else dg.DefaultSensorStatus.STOPPED,
        description="Refreshes build_history (Parquet, CSV, PNG chart, last-builds table) of a "
                    "target after each successful build_target run of it.",
    )
    def _after_build(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        target = run.tags.get("dagster/partition")
        if run.job_name != BUILD_JOB or target not in settings.target_names:
            return dg.SkipReason(f"run {run.run_id} is not a build_target run of a known target")
        return dg.RunRequest(run_key=f"history:{run.run_id}", partition_key=target,
                             tags={"fruix/target": target, "fruix/trigger": "after-build"})

    return _after_build
