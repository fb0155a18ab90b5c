"""The run queue's view of a guest: every run is tagged with its target's guest.

``dagster.yaml`` allows one run per value of the ``fruix/guest`` tag
(``concurrency: runs: tag_concurrency_limits``).  Jobs, the schedule and the
sensor set that tag themselves, but most launch paths cannot: the UI's
*Materialize* button, asset backfills and declarative automation use the
implicit asset job, whose runs carry only ``dagster/partition``; asset
``tags`` are not copied to runs and an asset ``pool`` is one fixed string per
definition, not one per partition.  The run coordinator is the one place that
sees every run, whatever launched it (webserver: UI, GraphQL, re-execution;
daemon: schedules, sensors, backfills, automation; ``dagster job launch``), so
:class:`GuestRunCoordinator` — a :class:`dagster.QueuedRunCoordinator` — derives
the guest from the run itself and writes the tag before the run is queued:

* the target is the run's partition (``dagster/partition``, or a partition
  range whose targets all live on one guest); ``rebuild_check`` names it in
  its op config;
* the guest is that target's ``guest`` in the settings file (``FRUIX_CONFIG``,
  which webserver and daemon read from the same environment as the code
  server: deploy/ gives all of them one environment file);
* runs that need no guest (only ``headers_slice``/``bootloader_slice``, carved
  from the store, or ``build_history``) are not tagged, so they never wait for
  a busy guest.

Configured in ``dagster.yaml`` and ``deploy/dagster.postgres.yaml``::

    run_coordinator:
      module: fruix_dagster.defs.coordinator
      class: GuestRunCoordinator

Considered instead: per-guest pools (``pool=`` on the assets) — a pool is one
string per asset definition, so every target would share one pool; a pool per
guest would need one asset definition per guest.
"""

from __future__ import annotations

from typing import Any, Mapping

import dagster as dg
from dagster._core.run_coordinator.base import SubmitRunContext

from fruix_dagster.errors import ConfigError
from fruix_dagster.settings import Settings, load_settings

GUEST_TAG = "fruix/guest"
TARGET_TAG = "fruix/target"
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
#: assets whose materialization never opens a guest session, and guest_source, whose
#: observation only looks at a reachable guest (never boots a VM) and must not wait behind a build
HOST_ONLY_ASSETS = frozenset({"headers_slice", "bootloader_slice", "build_history", "guest_source"})
#: jobs that never touch a guest
HOST_ONLY_JOBS = frozenset({"refresh_history"})
REBUILD_CHECK_JOB = "rebuild_check"


def run_targets(settings: Settings, tags: Mapping[str, str], job_name: str,
                run_config: Mapping[str, Any]) -> list[str]:
    """The targets a run builds, read from its partition tags or rebuild_check's op config."""
    if job_name == REBUILD_CHECK_JOB:
        target = (((run_config.get("ops") or {}).get("rebuild_twice") or {}).get("config") or {}).get("target")
        return [str(target)] if target else []   # the run fails on its config
    key = tags.get(PARTITION_TAG)
    if key is not None:
        return [key]
    start, end = (tags.get(t) for t in RANGE_TAGS)
    if start is None or end is None:
        return []
    names = list(settings.target_names)
    if start not in names or end not in names:
        return [start, end]       # an unknown target: guest_for_run names it
    i, j = names.index(start), names.index(end)
    return names[min(i, j):max(i, j) + 1]


def needs_guest(job_name: str, asset_keys: frozenset[str] | None) -> bool:
    if job_name in HOST_ONLY_JOBS:
        return False
    if asset_keys is None:             # a whole job (build_target, rebuild_check, …)
        return True
    return not asset_keys <= HOST_ONLY_ASSETS


def guest_for_run(settings: Settings, *, job_name: str, tags: Mapping[str, str],
                  asset_keys: frozenset[str] | None, run_config: Mapping[str, Any]) -> dict[str, str]:
    """The tags the queue needs for this run: ``fruix/guest`` and ``fruix/target`` (or nothing)."""
    if not needs_guest(job_name, asset_keys):
        return {}
    targets = run_targets(settings, tags, job_name, run_config)
    if not targets:
        return {}
    known = set(settings.target_names)
    for t in targets:
        if t not in known:
            raise ConfigError(f"run of {job_name}: partition {t!r} is not a target of "
                              f"{settings.source_file} (known targets: {', '.join(settings.target_names)}); "
                              "launch it for one of those")
    guests = sorted({settings.guest_for(t).name for t in targets})
    if len(guests) > 1:
        raise ConfigError(f"run of {job_name}: targets {', '.join(targets)} live on the guests "
                          f"{', '.join(guests)}; one run builds on one guest — launch one run per target")
    out = {GUEST_TAG: guests[0]}
    if len(targets) == 1:
        out[TARGET_TAG] = targets[0]
    return out


class GuestRunCoordinator(dg.QueuedRunCoordinator):
    """QueuedRunCoordinator that tags every run with its target's guest before queueing it."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if run.status == dg.DagsterRunStatus.NOT_STARTED:
            keys = (frozenset(k.to_user_string() for k in run.asset_selection)
                    if run.asset_selection else None)
            if keys is None and run.asset_check_selection:
                keys = frozenset(c.asset_key.to_user_string() for c in run.asset_check_selection)
            wanted = guest_for_run(load_settings(), job_name=run.job_name, tags=run.tags,
                                   asset_keys=keys, run_config=run.run_config or {})
            missing = {k: v for k, v in wanted.items() if run.tags.get(k) != v}
            if missing:
                self._instance.add_run_tags(run.run_id, missing)
                reloaded = self._instance.get_run_by_id(run.run_id)
                assert reloaded is not None
                context = SubmitRunContext(reloaded, context.workspace)
        return super().submit_run(context)
