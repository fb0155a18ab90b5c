"""Jobs: build one target (one partition) on its guest, in one process."""

from __future__ import annotations

import dagster as dg

from fruix_dagster.defs.coordinator import GUEST_TAG  # noqa: F401  (the run queue's key; re-exported)
from fruix_dagster.graph import GROUP, GUEST_SOURCE
from fruix_dagster.settings import Settings

BUILD_JOB = "build_target"


def run_tags(settings: Settings, target: str) -> dict[str, str]:
    """Tags of every run of a target; the run queue allows one run per fruix/guest value."""
    return {GUEST_TAG: settings.guest_for(target).name, "fruix/target": target}


def build_job(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.UnresolvedAssetJobDefinition:
    def tags(partition_key: str) -> dict[str, str]:
        return run_tags(settings, partition_key)

    return dg.define_asset_job(
        BUILD_JOB,
        selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.assets(GUEST_SOURCE),
        config=dg.PartitionedConfig(partitions_def=partitions,
                                    run_config_for_partition_key_fn=lambda _key: {},
                                    tags_for_partition_key_fn=tags),
        executor_def=dg.in_process_executor,
        description="The whole build of one target on its guest: one run holds one guest session.",
    )
