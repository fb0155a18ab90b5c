"""The resolved settings as TOML (``fruix-dagster check-config``).

Every default is written out and host paths are absolute; loading the text
gives an equal :class:`~.model.Settings`.  Values are formatted by tomli-w
(:func:`~.messages.toml_value`); the layout — one ``[table]`` per section,
``[[guest]]``/``[[target]]`` in file order, make variables and ``xcpng`` as
inline tables — is kept by writing one ``key = value`` line at a time.
Only environment variable *names* are ever in the settings, so no secret can
appear in the output.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fruix_dagster.settings.messages import toml_key, toml_value
from fruix_dagster.settings.model import Settings

_SECTIONS = ("build", "source", "store", "slices", "schedule", "sensor", "history", "notify", "assets")
_MAKE_VAR_FIELDS = {"make_vars", "kernel_make_vars", "world_make_vars", "src_env", "tags"}   # pairs → TOML tables


def _items(obj: Any) -> list[tuple[str, Any]]:
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not f.compare or value is None or f.name == "channels":  # channels: [[notify.channel]] blocks
            continue
        if f.name in _MAKE_VAR_FIELDS:
            value = dict(value)
        elif dataclasses.is_dataclass(value):
            value = dict(_items(value))
        out.append((obj.__pydantic_fields__[f.name].alias or f.name, value))
    return out


def render_settings(settings: Settings) -> str:
    """The resolved settings as TOML; ``load_settings`` on it gives an equal ``Settings``."""
    lines = [
        "# fruix_dagster settings, resolved from " + toml_value(settings.source_file)[1:-1],
        "# Every default is written out; host paths are expanded and absolute.",
    ]
    blocks = [(f"[{s}]", getattr(settings, s)) for s in _SECTIONS]
    blocks += [("[[notify.channel]]", c) for c in settings.notify.channels]
    blocks += [("[[guest]]", g) for g in settings.guests] + [("[[target]]", t) for t in settings.targets]
    for header, obj in blocks:
        lines += ["", header] + [f"{toml_key(k)} = {toml_value(v)}" for k, v in _items(obj)]
    return "\n".join(lines) + "\n"
