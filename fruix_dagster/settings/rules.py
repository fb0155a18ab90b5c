"""The domain rules of single values, as annotated pydantic types.

Each factory returns ``Annotated[T, BeforeValidator(check)]``: ``check`` sees
the value exactly as TOML gave it, raises :func:`~.messages.expect` with the
wording the user reads, and returns the normalized value (sorted make
variables, absolute host paths, lower-case UUIDs…).  Every check is
idempotent, so a rendered file loads back to an equal model.
"""

from __future__ import annotations

import inspect
import ipaddress
import math
import os
import pwd
import re
import zoneinfo
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Mapping, Optional, get_args
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ValidationInfo

from fruix_dagster.settings.messages import CONTROL, bad, expect, show, sub_key, toml_value

#: make variables the product sets itself, with the reason shown to the user.
RESERVED_MAKE_VARS: dict[str, str] = {
    "MAKEOBJDIRPREFIX": "fruix_dagster sets it to <build_root>/obj",
    "DESTDIR": "fruix_dagster sets it to the stage directory (<build_root>/stage/<target>/world or …/kernel)",
    "TARGET": "it comes from [[target]].target",
    "TARGET_ARCH": "it comes from [[target]].target_arch",
    "KERNCONF": "it comes from [[target]].kernconf",
    "DB_FROM_SRC": "fruix_dagster always sets DB_FROM_SRC=yes for staged installs",
}

MakeVars = tuple[tuple[str, str], ...]

_MAKE_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CRON_FIELD = re.compile(r"[0-9*/,-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")


@dataclass(frozen=True)
class LoadContext:
    """What host paths resolve against: the file's directory and ``HOME``."""

    label: str = "<embedded default>"
    base_dir: str = field(default_factory=os.getcwd)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


def _context(info: ValidationInfo) -> LoadContext:
    # Code that builds a model directly (tests, tools) resolves like the embedded default.
    return info.context if isinstance(info.context, LoadContext) else LoadContext()


def _rule(t: Any, check: Callable[..., Any]) -> Any:
    """``t`` validated by ``check`` (which may take the ValidationInfo); None passes for optional fields."""
    takes_info = len(inspect.signature(check).parameters) == 2

    def run(v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return v
        return check(v, info) if takes_info else check(v)

    return Annotated[t, BeforeValidator(run)]


def opt(rule: Any) -> Any:
    """The optional form of a rule (``None`` when absent)."""
    t, *meta = get_args(rule)
    return Annotated[Optional[t], *meta]


# -- scalars ----------------------------------------------------------------


def integer(minimum: int, maximum: int | None = None) -> Any:
    expected = f"must be an integer ≥ {minimum}" if maximum is None else f"must be an integer from {minimum} to {maximum}"

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            hint = ""
            if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
                hint = f"write {v.strip()} without quotes"
            elif isinstance(v, float) and v.is_integer():
                hint = f"write {int(v)} without a decimal point"
            raise expect(expected, v, hint, typed=True)
        if v < minimum or (maximum is not None and v > maximum):
            raise expect(expected, v)
        return v

    return _rule(int, check)


def number(*, gt: float | None = None, ge: float | None = None) -> Any:
    expected = f"must be a number > {gt:g}" if gt is not None else f"must be a number ≥ {ge:g}"

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            hint = ""
            if isinstance(v, str):
                try:
                    float(v)
                    hint = f"write {v.strip()} without quotes"
                except ValueError:
                    pass
            raise expect(expected, v, hint, typed=True)
        f = float(v)
        if not math.isfinite(f):
            raise expect(expected.replace("a number", "a finite number"), v)
        if (gt is not None and not f > gt) or (ge is not None and not f >= ge):
            raise expect(expected, v)
        return f

    return _rule(float, check)


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        hint = "write true or false without quotes" if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no") else ""
        raise expect("must be true or false", v, hint, typed=True)
    return v


Boolean = _rule(bool, _boolean)


def string(v: Any, expected: str) -> str:
    if not isinstance(v, str):
        raise expect(expected, v, typed=True)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise expect(expected, v, "it is not valid UTF-8") from None
    return v


def pattern(rx: str, expected: str | None = None, *, lower: bool = False) -> Any:
    compiled = re.compile(rx)
    expected = expected or f"must match {rx}"

    def check(v: Any) -> str:
        if not compiled.fullmatch(string(v, expected)):
            raise expect(expected, v)
        return v.lower() if lower else v

    return _rule(str, check)


def choice(*choices: str) -> Any:
    expected = f"must be one of {', '.join(choices)}"

    def check(v: Any) -> str:
        if string(v, expected) not in choices:
            raise expect(expected, v)
        return v

    return _rule(str, check)


def text(expected: str) -> Any:
    """A non-empty label without control characters (user, VM or snapshot name)."""

    def check(v: Any) -> str:
        if not string(v, expected) or CONTROL.search(v):
            raise expect(expected, v)
        return v

    return _rule(str, check)


def _conf_text(v: Any) -> str:
    """The text of a make.conf / src.conf / src-env.conf: any lines, no NUL or
    other control characters than TAB and newline (make would see them)."""
    s = string(v, "must be the file's text (a string)")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", s):
        raise expect("must be text without control characters other than TAB and newline", s)
    return s


ConfText = _rule(str, _conf_text)


def _env_name(v: Any) -> str:
    expected = "must be the NAME of an environment variable ([A-Za-z_][A-Za-z0-9_]*)"
    if not _ENV_NAME.fullmatch(string(v, expected)):
        # Not echoed: a value that is not a variable name may be the secret itself.
        found = "an empty string" if not v else f"a {len(v)}-character string that is not a variable name (not shown)"
        raise bad(f"{expected}, got {found}; put the secret in an environment variable "
                  "and write the variable's name here, never the secret itself")
    return v


EnvName = _rule(str, _env_name)


def _make_command(v: Any) -> str:
    expected = "must be a command name or an absolute path, without whitespace"
    if not string(v, expected) or re.search(r"[\s\x00-\x1f\x7f]", v) or v.startswith("-") or ("/" in v and not v.startswith("/")):
        raise expect(expected, v)
    return v


MakeCommand = _rule(str, _make_command)


# -- paths and addresses ------------------------------------------------------


def guest_path(min_depth: int = 1) -> Any:
    depth = "" if min_depth <= 1 else f" at least {min_depth} components deep"
    expected = f"must be an absolute, normalized guest path{depth} (no '.', '..', '//' or trailing '/')"

    def check(v: Any) -> str:
        s = string(v, expected)
        reason = hint = ""
        parts = s[1:].split("/")
        if not s:
            reason = "empty"
        elif CONTROL.search(s):
            reason = "contains a control character such as NUL or newline"
        elif s.startswith("~"):
            reason, hint = "'~' is not expanded on the guest", "write the absolute path"
        elif not s.startswith("/"):
            reason, hint = "relative", "guest paths are not resolved against anything; write the absolute path"
        elif s == "/":
            reason = "the root directory"
        elif s.endswith("/"):
            reason, hint = "trailing '/'", f"write {s.rstrip('/')!r}"
        elif "//" in s:
            reason = "contains '//'"
        elif ".." in parts:
            reason = "contains a '..' component"
        elif "." in parts:
            reason = "contains a '.' component"
        elif len(parts) < min_depth:
            reason = f"only {len(parts)} component{'s' if len(parts) != 1 else ''} deep"
            hint = "deletes are fenced to the build root, so it must not be a top-level directory"
        if reason:
            raise bad(f"{expected}, got {show(s)} ({reason})" + (f"; {hint}" if hint else ""))
        return s

    return _rule(str, check)


def _host_path(v: Any, info: ValidationInfo) -> str:
    """A HOST path: '~' expanded, relative resolved against the file's directory."""
    ctx = _context(info)
    expected = "must be a host path"
    s = string(v, expected)
    if not s:
        raise expect(f"{expected} (a non-empty string)", s)
    if "\0" in s or "\n" in s or "\r" in s:
        raise expect(f"{expected} without NUL or newline", s)
    if s == "~" or s.startswith("~/"):
        home = ctx.environ.get("HOME", "")
        if not home:
            try:
                home = pwd.getpwuid(os.getuid()).pw_dir
            except (KeyError, OSError):
                raise bad("cannot expand '~': HOME is not set and the user has no passwd entry; write an absolute path") from None
        s = home + s[1:]
    elif s.startswith("~"):
        user = s[1:].split("/", 1)[0]
        try:
            home = pwd.getpwnam(user).pw_dir
        except (KeyError, OSError, ValueError):
            raise expect(f"{expected} ('~user' must name a known user)", s) from None
        s = home + s[1 + len(user):]
    s = os.path.normpath(os.path.join(ctx.base_dir, s))
    if s.startswith("//"):
        s = "/" + s.lstrip("/")
    return string(s, expected)


HostPath = _rule(str, _host_path)


def _host(v: Any) -> str:
    expected = "must be an IP address or DNS name"
    s = string(v, expected)
    ok = bool(s) and not s.startswith("-") and len(s) <= 253
    if ok:
        try:
            ipaddress.ip_address(s)
        except ValueError:
            ok = bool(_HOSTNAME.fullmatch(s))
    if not ok:
        raise expect(expected, s)
    return s


Host = _rule(str, _host)


def _url(v: Any) -> str:
    expected = "must be an http:// or https:// URL without query or fragment"
    s = string(v, expected)
    try:
        parts = urlsplit(s)
        ok = (parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query
              and not parts.fragment and not re.search(r"[\s\x00-\x1f\x7f]", s))
        if ok:
            parts.port  # raises ValueError on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise expect(expected, s)
    return s if s.endswith("/") else s + "/"


Url = _rule(str, _url)


def _cidr(v: Any) -> str:
    expected = "must be an IP network such as 192.0.2.0/24"
    try:
        return str(ipaddress.ip_network(string(v, expected), strict=False))
    except ValueError:
        raise expect(expected, v) from None


Cidr = _rule(str, _cidr)
Uuid = pattern(_UUID.pattern, "must be a UUID in canonical form (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", lower=True)


# -- schedule -------------------------------------------------------------------


def _cron(v: Any) -> str:
    expected = "must be 5 whitespace-separated cron fields (minute hour day-of-month month day-of-week) of 0-9 * / , -"
    parts = string(v, expected).split()
    if len(parts) != 5:
        raise bad(f"{expected}, got {show(v)} ({len(parts)} field{'s' if len(parts) != 1 else ''})")
    for p in parts:
        if not _CRON_FIELD.fullmatch(p):
            raise bad(f"{expected}, got {show(v)} (field {p!r})")
    return " ".join(parts)


def _timezone(v: Any) -> str:
    expected = "must be a time zone known to zoneinfo (e.g. UTC, Europe/Berlin)"
    try:
        zoneinfo.ZoneInfo(string(v, expected))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        raise expect(expected, v) from None
    return v


Cron = _rule(str, _cron)
TimeZone = _rule(str, _timezone)


# -- compound values --------------------------------------------------------------


_CONTROL_NAMES = {"\0": "NUL", "\t": "a tab", "\n": "a newline", "\r": "a carriage return", "\x1b": "ESC", "\x7f": "DEL"}
_MAKE_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, C0 and C1


def _no_control(value: str, k: str) -> None:
    """A make variable value holds no control character (issue 13 item 8).

    make takes a newline in a value as the end of the command line and runs the
    rest as a second shell command; CR, NUL and the other C0/C1 controls (ESC,
    DEL, U+0080–U+009F) have no use in a build knob and would reach logs and
    terminals. TAB is refused too: it is a control character, invisible in the
    logs and metadata that show the value, and a space does what it would do.
    """
    m = _MAKE_CONTROL.search(value)
    if m:
        c = m.group()
        what = f"{_CONTROL_NAMES.get(c, 'a control character')}, U+{ord(c):04X}, at position {m.start()}"
        raise bad(f"must be a string without control characters (make would run the text after a newline as a "
                  f"second shell command), got {show(value)} ({what}); write the value on one line, "
                  "with spaces instead of tabs", k)


def _make_vars(v: Any) -> MakeVars:
    """A ``{ NAME = "value" }`` table → sorted ``(NAME, value)`` pairs."""
    if isinstance(v, tuple):  # already validated (dataclasses.replace, direct construction)
        v = dict(v)
    if not isinstance(v, dict):
        raise expect('must be a table of NAME = "value" pairs', v, typed=True)
    for name, value in v.items():
        k = sub_key(name)
        if not _MAKE_VAR.fullmatch(name):
            raise expect("make variable names must match [A-Za-z_][A-Za-z0-9_.]*", name)
        if name in RESERVED_MAKE_VARS:
            raise bad(f"is reserved ({RESERVED_MAKE_VARS[name]}), got {show(value)}; remove it", k)
        if isinstance(value, str):
            _no_control(value, k)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise expect("must be a valid UTF-8 string", value, sub=k) from None
            continue
        if isinstance(value, bool):
            hint = (f'make variables are strings, so quote it: {name} = "{"true" if value else "false"}" '
                    '(or "yes" if that is what the makefile expects)')
        elif isinstance(value, (int, float)):
            hint = f'make variables are strings, so quote it: {name} = "{value}"'
        elif isinstance(value, dict):
            hint = f'a name containing \'.\' must be quoted, e.g. "{name}.{next(iter(value), "X")}" = "…"'
        else:
            hint = "make variables are strings"
        raise expect("must be a string", value, hint, typed=True, sub=k)
    return tuple(sorted(v.items()))


MakeVarTable = _rule(MakeVars, _make_vars)


def globs(*, literal: bool = False) -> Any:
    what = "relative paths" if literal else "glob patterns"
    expected = f"must be a non-empty array of non-empty {what}"
    rule = (f"must be a non-empty {'path' if literal else 'glob pattern'} relative to the stage "
            "(no leading '/', no empty, '.' or '..' component)")

    def check(v: Any) -> tuple[str, ...]:
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, str):
            raise expect(expected, v, f"write [{toml_value(v)}]", typed=True)
        if not isinstance(v, list):
            raise expect(expected, v, typed=True)
        if not v:
            raise expect(expected, v)
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise expect(rule, item, typed=True, sub=f"[{i}]")
            parts = item.split("/")
            reason = ("empty" if not item
                      else "contains a control character" if CONTROL.search(item)
                      else "leading '/'" if item.startswith("/")
                      else "contains a '..' component" if ".." in parts
                      else "contains a '.' component" if "." in parts
                      else "contains an empty component" if "" in parts
                      else "contains glob characters; key files are literal paths" if literal and any(c in item for c in "*?[")
                      else "")
            if reason:
                raise bad(f"{rule}, got {show(item)} ({reason})", f"[{i}]")
        return tuple(v)

    return _rule(tuple[str, ...], check)
