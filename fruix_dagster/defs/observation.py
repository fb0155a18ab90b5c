"""Light automation: the guest's source as an observable source, and builds on its change.

``guest_source`` (one partition per target) is an observable source asset
upstream of ``freebsd_source``.  Its data version is a *cheap* look at the
guest (:mod:`fruix_dagster.source_probe`: the declared store item, or a
metadata-only listing fingerprint of a path source) — never the tree's
contents; ``freebsd_source`` still computes the real store hash in its run.

* ``source_change_sensor`` observes every reachable target each tick and
  records an ``AssetObservation`` when its version changed, as a runless
  event of the tick — no run, no tree streamed.  The UI shows the build
  assets stale at once ("upstream data version changed"), before any run.
  An xcpng guest is never observed (a tick never boots a VM): the tick log
  says so.
* With ``[sensor] build = true`` (the default) the same tick requests one
  ``build_target`` run of each target whose new version differs from the one
  ``freebsd_source`` recorded when it last read the source (a target never
  built is left to the schedule or a person).  The run re-reads the source
  for real; an unchanged store hash keeps every downstream data version, so
  its steps are reused (no make call).

Declarative automation (``AutomationCondition`` on the build assets and an
automation-condition sensor) was tried and left out: with Dagster 1.13.27's
daemon, ``data_version_changed`` of ``guest_source`` fired again after a
build with no change, and ``will_be_requested`` did not reliably bring the
downstream assets into the same run, which broke "unchanged → no run" and
"one run per target".  The sensor's run request is one whole-target run,
tagged with its guest, and deterministic.
"""

from __future__ import annotations

import warnings

import dagster as dg

from fruix_dagster.defs.records import latest
from fruix_dagster.defs.resources import FruixResource
from fruix_dagster.errors import FruixError
from fruix_dagster.defs.jobs import BUILD_JOB, run_tags
from fruix_dagster.graph import GROUP, GUEST_SOURCE, SOURCE_ASSET
from fruix_dagster.settings import Settings
from fruix_dagster.source_probe import NotObservable, Observation, observe

__all__ = ["GUEST_SOURCE", "SENSOR", "guest_source_asset", "last_observed", "observation_event",
           "source_change_sensor"]

SENSOR = "source_change_sensor"
DATA_VERSION_TAG = "dagster/data_version"


def observation_event(target: str, obs: Observation) -> dg.AssetObservation:
    return dg.AssetObservation(asset_key=dg.AssetKey(GUEST_SOURCE), partition=target,
                               tags={DATA_VERSION_TAG: obs.data_version},
                               metadata={"observed": obs.detail, "data_version": obs.data_version})


def last_observed(instance: dg.DagsterInstance, target: str) -> str | None:
    """The data version of guest_source's latest observation for target (None: never observed)."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(GUEST_SOURCE), asset_partitions=[target]), limit=1).records
    if not records:
        return None
    obs = records[0].asset_observation
    return obs.tags.get(DATA_VERSION_TAG) if obs is not None else None


def guest_source_asset(partitions: dg.PartitionsDefinition, settings: Settings):
    # observable_source_asset is beta in 1.13 and says so on every load of the
    # definitions (webserver, daemon, every run worker): once is in this comment
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _guest_source_asset(partitions)


def _guest_source_asset(partitions: dg.PartitionsDefinition):
    @dg.observable_source_asset(
        name=GUEST_SOURCE, partitions_def=partitions, group_name=GROUP,
        description="The guest's source as a cheap observation (declared store item, or a "
                    "metadata-only listing fingerprint of a path source); never boots a VM.")
    def _guest_source(context, fruix: FruixResource) -> dg.DataVersionsByPartition:
        versions = {}
        for target in fruix.settings.target_names:
            try:
                obs = observe(fruix.settings, target)
            except NotObservable as exc:
                context.log.info(f"{target}: {exc}")
                continue
            versions[target] = obs.data_version
            context.log.info(f"{target}: {obs.detail} ({obs.data_version})")
        return dg.DataVersionsByPartition(versions)

    return _guest_source


def source_change_sensor(settings: Settings) -> dg.SensorDefinition:
    s = settings.sensor

    @dg.sensor(
        name=SENSOR,
        job_name=BUILD_JOB,
        minimum_interval_seconds=s.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if s.enabled else dg.DefaultSensorStatus.STOPPED,
        description="Observes each reachable guest's source cheaply (never streams or hashes the "
                    "tree, never boots a VM), records guest_source when it changed and, with "
                    "[sensor] build, starts a build run of that target.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        events, notes, requests = [], [], []
        for target in settings.target_names:
            try:
                obs = observe(settings, target)
            except NotObservable as exc:
                notes.append(f"{target}: {exc}")
                continue
            except FruixError as exc:
                notes.append(f"{target}: not observed: {str(exc).splitlines()[0]}")
                continue
            if last_observed(context.instance, target) == obs.data_version:
                continue
            context.log.info(f"{target}: {obs.detail}: new data version {obs.data_version}")
            events.append(observation_event(target, obs))
            read = latest(context.instance, SOURCE_ASSET, target)
            if settings.sensor.build and read is not None \
                    and read.metadata.get("source_observation") != obs.data_version:
                requests.append(dg.RunRequest(   # never built: the schedule or a person starts the first build
                    run_key=f"{target}:{obs.data_version}", partition_key=target,
                    tags={**run_tags(settings, target), "fruix/trigger": "source-change"}))
        for note in notes:
            context.log.warning(note)
        if not events:
            return dg.SkipReason("no target's source changed"
                                 + (f" ({len(notes)} targets not observed)" if notes else ""))
        return dg.SensorResult(asset_events=events, run_requests=requests)

    return _sensor
