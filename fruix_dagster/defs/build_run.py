"""What one asset step of a build works with: its options, settings, target, guest and plan.

``BuildRun.of`` reads the resources and the run's tags once; everything else
an asset does (upstream checks, make steps, collection and reuse, results) is
a small function of a ``BuildRun`` in :mod:`.steps`, :mod:`.collection` and
:mod:`.results`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from fruix_dagster.build.make import BuildPlan
from fruix_dagster.build.plan import plan_for_target
from fruix_dagster.defs.records import Recorded, require
from fruix_dagster.defs.resources import BuildOptions, FruixResource
from fruix_dagster.graph import SOURCE_ASSET
from fruix_dagster.session import GuestSession
from fruix_dagster.settings import Settings, Target
from fruix_dagster.store import ArtifactStore


@dataclass
class BuildRun:
    """Everything one asset step needs: settings, target, guest session, options."""

    context: dg.AssetExecutionContext
    fruix: FruixResource
    options: BuildOptions
    settings: Settings
    target: Target
    session: GuestSession

    @classmethod
    def of(cls, context: dg.AssetExecutionContext, fruix: FruixResource,
           options: BuildOptions | None = None) -> "BuildRun":
        settings = fruix.settings()
        target = settings.target(context.partition_key)
        # backfills and schedules carry tags, not run config
        options = (options or BuildOptions()).with_run_tags(context.run.tags)
        return cls(context, fruix, options, settings, target, fruix.session(target.name, context.log))

    @property
    def log(self) -> Any:
        return self.context.log

    @property
    def asset(self) -> str:
        """The asset this step materializes."""
        return self.context.asset_key.to_user_string()

    def recorded(self, asset: str) -> Recorded:
        """The latest materialization of an upstream asset for this target (or a clear error)."""
        return require(self.context.instance, asset, self.target.name, self.asset)

    def plan(self, kernfast: bool = False) -> BuildPlan:
        """The target's plan, from the source the latest ``freebsd_source`` recorded."""
        src = self.recorded(SOURCE_ASSET).metadata
        return plan_for_target(self.settings, self.target.name,
                               source_root=src.get("build_path") or src["source_root"],
                               source_hash=src["store_hash"], clean=self.options.clean,
                               kernfast=kernfast)

    @property
    def store(self) -> ArtifactStore:
        st = self.settings.store
        return ArtifactStore(st.root, st.keep, collect_retries=st.collect_retries,
                             collect_backoff_seconds=st.collect_backoff_seconds, on_retry=self.log.warning)
