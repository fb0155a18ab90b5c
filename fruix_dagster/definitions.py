"""Dagster definitions built from the settings file (FRUIX_CONFIG); nothing else."""

from __future__ import annotations

import dagster as dg

from fruix_dagster.defs.assets import build_assets
from fruix_dagster.defs.history import history_assets, history_checks, history_job, rebuild_check_job
from fruix_dagster.defs.jobs import build_job
from fruix_dagster.defs.notify import notify_sensors, summary_job, summary_schedules
from fruix_dagster.defs.resources import BuildOptions, FruixResource
from fruix_dagster.defs.observation import guest_source_asset, source_change_sensor
from fruix_dagster.defs.schedules import history_after_build_sensor, nightly_schedule
from fruix_dagster.errors import ConfigError
from fruix_dagster.settings import EMBEDDED_SOURCE, Settings, load_settings


def make_definitions(settings: Settings) -> dg.Definitions:
    partitions = dg.StaticPartitionsDefinition(list(settings.target_names))
    config_file = "" if settings.source_file == EMBEDDED_SOURCE else settings.source_file
    refresh_history = history_job()
    build = build_job(settings, partitions)
    summary = summary_job(settings)
    return dg.Definitions(
        assets=[guest_source_asset(partitions, settings), *build_assets(partitions, settings), *history_assets(partitions, settings)],
        asset_checks=history_checks(partitions),
        jobs=[build, refresh_history, rebuild_check_job(), summary],
        schedules=[nightly_schedule(settings), *summary_schedules(settings, summary)],
        sensors=[source_change_sensor(settings), history_after_build_sensor(settings, refresh_history),
                 *notify_sensors(settings, build)],
        resources={"fruix": FruixResource(config_file=config_file), "build_options": BuildOptions()},
        executor=dg.in_process_executor,
    )


def _loaded_settings() -> Settings | ConfigError:
    try:
        return load_settings()
    except ConfigError as error:
        return error


# A bad settings file is one message. dagster (dev, definitions validate, the
# code server) shows a code location's load error with the frames that raised
# it: raised here, with its traceback dropped, the message is followed by this
# one line and not by the settings package's internals.
_settings = _loaded_settings()
if isinstance(_settings, ConfigError):
    raise _settings.with_traceback(None) from None  # the settings file is invalid: the message says why
defs = make_definitions(_settings)
