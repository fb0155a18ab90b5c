"""One-line settings errors: ``<file>: <dotted.key>: <expected>, got <found>; <what to do>``.

Validators (``rules.py``, ``model.py``) raise :func:`bad` / :func:`expect`;
each is a :class:`pydantic_core.PydanticCustomError` whose context carries
the finished message and, optionally, a key suffix below the location pydantic
knows (``.WITHOUT_CLEAN``, ``[0]``, ``.insecure``).  :func:`config_error`
turns the first error of a :class:`pydantic.ValidationError` into the one
:class:`~fruix_dagster.errors.ConfigError` the user sees: the key path from
pydantic's location, the message from the validator, never a traceback.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

import pydantic
import tomli_w
from pydantic_core import PydanticCustomError

from fruix_dagster.errors import ConfigError

#: The value a validator sees for a key the file does not have.
MISSING: Any = object()

#: The discriminator tags pydantic puts into a location after ``guest[i]``.
GUEST_KINDS = ("local", "ssh", "xcpng")
#: the same for ``notify.channel[i]``
CHANNEL_KINDS = ("mail", "webhook")

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(k: str) -> str:
    """A key as TOML writes it: bare when it can be, else a quoted string."""
    return k if _BARE_KEY.fullmatch(k) else tomli_w.dumps({k: 0}).rsplit(" = ", 1)[0]


def toml_value(v: Any) -> str:
    """One value as TOML writes it, on one line: scalars by tomli-w, dicts as inline tables."""
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return tomli_w.dumps({"v": v}).split(" = ", 1)[1].rstrip("\n")


def kind(v: Any) -> str:
    """The TOML type of a found value, for 'got 8 (a string)'."""
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
                    (dict, "a table"), (list, "an array"), (_dt.datetime, "a date-time"),
                    (_dt.date, "a date"), (_dt.time, "a time")):
        if isinstance(v, t):
            return name
    return type(v).__name__


def show(v: Any, limit: int = 80) -> str:
    """A short, single-line rendering of a found value."""
    if v is MISSING:
        return "nothing"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v[:limit]) + ("…" if len(v) > limit else "")
    if isinstance(v, dict):
        if not v:
            return "an empty table"
        keys = ", ".join(toml_key(k) for k in list(v)[:8]) + (", …" if len(v) > 8 else "")
        return f"a table (keys: {keys})"
    if isinstance(v, list):
        if not v:
            return "an empty array"
        try:
            text = toml_value(v)
        except (TypeError, ValueError):
            text = f"an array of {len(v)} items"
    elif isinstance(v, (_dt.date, _dt.time)):
        text = v.isoformat()
    else:
        text = repr(v)
    text = CONTROL.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "…"


def show_typed(v: Any) -> str:
    """:func:`show` plus the TOML type, for a value of the wrong type."""
    return "nothing" if v is MISSING else f"{show(v)} ({kind(v)})"


def sub_key(name: str) -> str:
    """The suffix naming a table entry below a key: ``.NAME`` or ``."A.B"``."""
    return "." + toml_key(name)


def bad(message: str, sub: str = "") -> PydanticCustomError:
    """An error whose message is final; ``sub`` extends the key pydantic knows."""
    return PydanticCustomError("fruix", "{message}", {"message": message, "sub": sub})


def expect(expected: str, found: Any, hint: str = "", typed: bool = False, sub: str = "") -> PydanticCustomError:
    """``<expected>, got <found>[; <hint>]``."""
    msg = f"{expected}, got {show_typed(found) if typed else show(found)}"
    return bad(msg + (f"; {hint}" if hint else ""), sub)


def key_of(loc: tuple[int | str, ...]) -> str:
    """pydantic's location → our dotted key (``guest[0].xcpng.url``)."""
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "guest" and parts[2] in GUEST_KINDS:
        del parts[2]  # the discriminated union's tag
    if len(parts) > 3 and parts[:2] == ["notify", "channel"] and parts[3] in CHANNEL_KINDS:
        del parts[3]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + toml_key(str(p))
    return out


def config_error(label: str, exc: pydantic.ValidationError, root: str = "top level") -> ConfigError:
    """The first error of ``exc`` as the one-line ConfigError the user reads."""
    err = exc.errors(include_url=False)[0]
    ctx = err.get("ctx") or {}
    key = (key_of(err["loc"]) + ctx.get("sub", "")).lstrip(".")
    if err["type"] == "fruix":
        message = ctx["message"]
    else:  # a rule pydantic checked itself; kept readable, still one line
        message = f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {show(err.get('input', MISSING))}"
    return ConfigError(f"{label}: {key or root}: {message}")
