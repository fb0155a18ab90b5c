"""The settings file (``FRUIX_CONFIG``, TOML) → a validated, frozen model.

Public API
----------
``load_settings(path=None, environ=os.environ) -> Settings``
    Read and validate a settings file.  With ``path=None`` the file named by
    ``environ["FRUIX_CONFIG"]`` is used; if that is unset or empty the
    embedded default is returned.
``embedded_default(environ=os.environ) -> Settings``
    One ``local`` guest building the bundled ``sample_src/`` tree into a build
    root and artifact store under ``DAGSTER_HOME``.
``render_settings(settings) -> str``
    The resolved settings as TOML, every default written out.  Loading the
    rendered text gives an equal ``Settings`` (``source_file`` is not part of
    equality).
``check_config_text(path=None, environ=os.environ) -> str``
    What ``fruix-dagster check-config [FILE]`` prints.

Every problem raises exactly one :class:`~fruix_dagster.errors.ConfigError`
whose message reads ``<file>: <dotted.key>: <expected>, got <found>`` plus,
where it helps, what to do.  No other exception escapes for bad input.

The package: ``model.py`` (the frozen pydantic dataclasses, cross-key rules),
``rules.py`` (single-value rules as annotated types), ``messages.py`` (error
wording and pydantic error → one line), ``load.py``, ``dump.py``.  README
"Adding a setting" says how to add one.

What is *not* checked at load time: the existence of host files
(``private_key``, ``known_hosts``, ``ca_file``, ``store.root``) and of guest
paths.  Those are checked by the layers that use them, when they use them, so
that ``check-config`` works on a machine other than the one that will run the
builds.

This package is plain Python (no dagster import).
"""

from fruix_dagster.settings.dump import render_settings
from fruix_dagster.settings.load import check_config_text, embedded_default, load_settings, sample_src_dir
from fruix_dagster.settings.model import (
    EMBEDDED_SOURCE,
    KERNEL_STEPS,
    WORLD_STEPS,
    BuildSettings,
    Guest,
    AssetSettings,
    HistorySettings,
    LocalGuest,
    ScheduleSettings,
    SensorSettings,
    Settings,
    SliceSettings,
    SourceSettings,
    SshGuest,
    StoreSettings,
    Target,
    XcpngGuest,
    XcpngSettings,
)
from fruix_dagster.settings.notify import EVENTS, Channel, MailChannel, NotifySettings, WebhookChannel
from fruix_dagster.settings.rules import RESERVED_MAKE_VARS

__all__ = [
    "EMBEDDED_SOURCE", "KERNEL_STEPS", "RESERVED_MAKE_VARS", "WORLD_STEPS",
    "AssetSettings", "BuildSettings", "Guest", "HistorySettings", "LocalGuest", "ScheduleSettings", "SensorSettings", "Settings",
    "SliceSettings", "SourceSettings", "SshGuest", "StoreSettings", "Target", "XcpngGuest", "XcpngSettings",
    "EVENTS", "Channel", "MailChannel", "NotifySettings", "WebhookChannel",
    "check_config_text", "embedded_default", "load_settings", "render_settings", "sample_src_dir",
]
