"""What every settings table shares: frozen pydantic dataclass, unknown and missing keys.

Split out of ``model.py`` so that table classes can live in more than one
module (``notify.py``) without importing the top-level :class:`Settings`.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import ConfigDict, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from fruix_dagster.settings.messages import bad, expect, show, sub_key

TOP_KEYS = ("build", "source", "store", "slices", "schedule", "sensor", "history", "notify", "assets", "guest", "target")

_frozen = dataclass(frozen=True, kw_only=True,
                    config=ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True))


def known_keys(cls: type) -> tuple[str, ...]:
    """The TOML keys of a table class (aliases such as ``from``; never ``source_file``)."""
    return tuple(f.alias or name for name, f in cls.__pydantic_fields__.items() if name != "source_file")


class _Table:
    """Table shape, unknown and missing keys; subclasses set the class variables."""

    _what: ClassVar[str] = ""  # how the table is written, for "must be a table (…)"
    _single: ClassVar[str] = ""  # a [name] table: hint when written as [[name]]
    _required: ClassVar[dict[str, str]] = {}  # key -> message when it is missing
    _absent: ClassVar[tuple[tuple[str, ...], str]] = ((), "")  # keys refused here, and why
    _top: ClassVar[bool] = False  # the top level itself (no "move it above" hint)

    @model_validator(mode="before")
    @classmethod
    def _table(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, ArgsKwargs):  # built in code, not read from a file
            return data
        if not isinstance(data, dict):
            hint = ""
            if cls._single and isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
                hint = f"write [{cls._single}] once, not [[{cls._single}]]"
            raise expect(f"must be a table ({cls._what})" if cls._what else "must be a table", data, hint, typed=True)
        refused, why = cls._absent
        for k in refused:
            if k in data:
                raise bad(why.format(found=show(data[k])), sub_key(k))
        known = known_keys(cls)
        for k in data:
            if k not in known:
                msg = f"unknown key {k!r} (known keys: {', '.join(sorted(known))})"
                close = difflib.get_close_matches(k, known, n=1)
                if close:
                    msg += f"; did you mean {close[0]!r}?"
                elif not cls._top and k in TOP_KEYS:
                    msg += f"; if you meant the top-level {k!r}, move it above the first [table] header"
                raise bad(msg)
        for k, message in cls._required.items():
            if k not in data:
                raise bad(message, sub_key(k))
        return cls._prepare(data, info)

    @classmethod
    def _prepare(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return data
