"""Dagster definitions built from the settings file (FRUIX_CONFIG); nothing else."""

from __future__ import annotations

import dagster as dg

from fruix_dagster.defs.assets import build_assets
from fruix_dagster.defs.history import history_assets, history_checks, history_job, rebuild_check_job
from fruix_dagster.defs.jobs import build_job
from fruix_dagster.defs.resources import BuildOptions, FruixResource
from fruix_dagster.defs.schedules import history_after_build_sensor, nightly_schedule, source_change_sensor
from fruix_dagster.settings import EMBEDDED_SOURCE, Settings, load_settings


def make_definitions(settings: Settings) -> dg.Definitions:
    partitions = dg.StaticPartitionsDefinition(list(settings.target_names))
    config_file = "" if settings.source_file == EMBEDDED_SOURCE else settings.source_file
    refresh_history = history_job()
    return dg.Definitions(
        assets=[*build_assets(partitions), *history_assets(partitions)],
        asset_checks=history_checks(partitions),
        jobs=[build_job(settings, partitions), refresh_history, rebuild_check_job()],
        schedules=[nightly_schedule(settings)],
        sensors=[source_change_sensor(settings), history_after_build_sensor(settings, refresh_history)],
        resources={"fruix": FruixResource(config_file=config_file), "build_options": BuildOptions()},
        executor=dg.in_process_executor,
    )


defs = make_definitions(load_settings())
