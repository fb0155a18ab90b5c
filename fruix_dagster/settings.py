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
    equality).  Only environment variable *names* are ever in the settings, so
    no secret can appear in the output.
``check_config_text(path=None, environ=os.environ) -> str``
    What ``fruix-dagster check-config [FILE]`` prints.

Every problem raises exactly one :class:`~fruix_dagster.errors.ConfigError`
whose message reads ``<file>: <dotted.key>: <expected>, got <found>`` plus,
where it helps, what to do.  The validator never lets any other exception
escape for bad input.

What is *not* checked at load time: the existence of host files
(``private_key``, ``known_hosts``, ``ca_file``, ``store.root``) and of guest
paths.  Those are checked by the layers that use them, when they use them, so
that ``check-config`` works on a machine other than the one that will run the
builds.

This module is plain Python (no dagster import).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import ipaddress
import math
import os
import pwd
import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from fruix_dagster.errors import ConfigError

__all__ = [
    "EMBEDDED_SOURCE",
    "KERNEL_STEPS",
    "RESERVED_MAKE_VARS",
    "WORLD_STEPS",
    "BuildSettings",
    "Guest",
    "HistorySettings",
    "ScheduleSettings",
    "SensorSettings",
    "Settings",
    "SliceSettings",
    "SourceSettings",
    "StoreSettings",
    "Target",
    "XcpngSettings",
    "check_config_text",
    "embedded_default",
    "load_settings",
    "render_settings",
    "sample_src_dir",
]

#: ``Settings.source_file`` of the embedded default.
EMBEDDED_SOURCE = "<embedded default>"

#: make variables the product sets itself, with the reason shown to the user.
RESERVED_MAKE_VARS: dict[str, str] = {
    "MAKEOBJDIRPREFIX": "fruix_dagster sets it to <build_root>/obj",
    "DESTDIR": "fruix_dagster sets it to the stage directory (<build_root>/stage-world or stage-kernel)",
    "TARGET": "it comes from [[target]].target",
    "TARGET_ARCH": "it comes from [[target]].target_arch",
    "KERNCONF": "it comes from [[target]].kernconf",
    "DB_FROM_SRC": "fruix_dagster always sets DB_FROM_SRC=yes for staged installs",
}

#: make targets that ``build.world_make_vars`` / ``build.kernel_make_vars`` apply to.
WORLD_STEPS = ("buildworld", "installworld", "distribution")
KERNEL_STEPS = ("buildkernel", "installkernel")

MakeVars = tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildSettings:
    jobs: int = 8
    build_root: str = "/var/tmp/fruix-native-build"
    make: str = "make"
    make_vars: MakeVars = ()
    kernel_make_vars: MakeVars = ()
    world_make_vars: MakeVars = ()
    clean: bool = False
    timeout_hours: float = 12.0
    silent_timeout_minutes: float = 120.0
    min_free_gib: float = 12.0
    retries: int = 3

    def make_vars_for(self, step: str) -> MakeVars:
        """The ``NAME=value`` pairs for one make target, sorted by name.

        ``make_vars`` apply to every step; ``world_make_vars`` to
        buildworld/installworld/distribution and ``kernel_make_vars`` to
        buildkernel/installkernel, overriding ``make_vars`` on a clash.
        (``WITHOUT_CLEAN`` and the reserved variables are the build layer's
        business, not added here.)
        """
        merged = dict(self.make_vars)
        if step in WORLD_STEPS:
            merged.update(self.world_make_vars)
        elif step in KERNEL_STEPS:
            merged.update(self.kernel_make_vars)
        return tuple(sorted(merged.items()))


@dataclass(frozen=True)
class SourceSettings:
    from_: str = "system-metadata"
    metadata: str = "/run/current-system/metadata/store-layout.scm"
    store_root: str = "/frx/store"
    name: str = "default"
    path: str | None = None


@dataclass(frozen=True)
class StoreSettings:
    root: str = "/var/lib/fruix-dagster/artifacts"
    keep: int = 5


@dataclass(frozen=True)
class SliceSettings:
    headers: tuple[str, ...] = ("usr/include/**", "usr/share/mk/**")
    bootloader: tuple[str, ...] = ("boot/loader*", "boot/*.efi", "boot/defaults/**", "boot/lua/**")
    key_files: tuple[str, ...] = ("boot/kernel/kernel", "boot/loader.efi", "usr/include/sys/param.h")


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    enabled: bool = True


@dataclass(frozen=True)
class SensorSettings:
    interval_seconds: int = 300
    enabled: bool = True


@dataclass(frozen=True)
class HistorySettings:
    size_change_pct: float = 10.0


@dataclass(frozen=True)
class XcpngSettings:
    url: str
    password_env: str
    username: str = "root"
    vm_uuid: str | None = None
    vm_name: str | None = None
    after: str = "keep-running"
    revert_to: str | None = None
    boot_timeout: int = 600
    ca_file: str | None = None
    insecure: bool = False
    address_cidr: str | None = None
    request_timeout: float = 60.0


@dataclass(frozen=True)
class Guest:
    name: str
    kind: str  # local | ssh | xcpng
    system: str  # fruix | plain
    host: str | None = None
    port: int | None = None
    user: str | None = None
    private_key: str | None = None
    passphrase_env: str | None = None
    password_env: str | None = None
    known_hosts: str | None = None
    connect_timeout: float = 15.0
    keepalive: int = 30
    io_timeout: float = 300.0
    xcpng: XcpngSettings | None = None


@dataclass(frozen=True)
class Target:
    name: str
    guest: str
    target: str = "amd64"
    target_arch: str = "amd64"
    kernconf: str = "GENERIC"


@dataclass(frozen=True)
class Settings:
    build: BuildSettings
    source: SourceSettings
    store: StoreSettings
    slices: SliceSettings
    schedule: ScheduleSettings
    sensor: SensorSettings
    history: HistorySettings
    guests: tuple[Guest, ...]
    targets: tuple[Target, ...]
    #: "<embedded default>" or the absolute path of the file; not part of equality.
    source_file: str = field(default=EMBEDDED_SOURCE, compare=False)

    @property
    def guest_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.guests)

    @property
    def target_names(self) -> tuple[str, ...]:
        """The partition keys, in file order."""
        return tuple(t.name for t in self.targets)

    def guest(self, name: str) -> Guest:
        for g in self.guests:
            if g.name == name:
                return g
        raise ConfigError(
            f"{self.source_file}: guest: no [[guest]] named {name!r} "
            f"(known guests: {', '.join(self.guest_names)})"
        )

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise ConfigError(
            f"{self.source_file}: target: no [[target]] named {name!r} "
            f"(known targets: {', '.join(self.target_names)})"
        )

    def guest_for(self, target_name: str) -> Guest:
        return self.guest(self.target(target_name).guest)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

_MISSING_HINT = "set FRUIX_CONFIG to a readable TOML file or unset it for the embedded default"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Load and validate a settings file (see the module docstring)."""
    via_env = False
    if path is None:
        env_path = environ.get("FRUIX_CONFIG", "")
        if not env_path:
            return embedded_default(environ)
        path = env_path
        via_env = True
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise ConfigError(f"settings path must be a string or path, got {_show(path)}") from None
    if isinstance(fspath, bytes):
        fspath = os.fsdecode(fspath)
    if not fspath or "\0" in fspath:
        raise ConfigError(f"{fspath!r}: not a usable file name; {_MISSING_HINT}")
    abspath = os.path.abspath(fspath)
    try:
        with open(abspath, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        named = f"; named by FRUIX_CONFIG={fspath!r}" if via_env else ""
        raise ConfigError(f"{abspath}: cannot read the settings file ({reason}{named}); {_MISSING_HINT}") from None
    return _load_bytes(data, abspath, environ)


def _load_bytes(data: bytes, abspath: str, environ: Mapping[str, str]) -> Settings:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{abspath}: not valid TOML: the file is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{abspath}: not valid TOML: {exc}") from None
    return _Validator(abspath, os.path.dirname(abspath), environ).settings(raw)


def sample_src_dir() -> str:
    """Absolute path of the bundled FreeBSD-shaped sample source tree."""
    return os.path.abspath(Path(__file__).parent / "sample_src")


def embedded_default(environ: Mapping[str, str] = os.environ) -> Settings:
    """The settings used when no ``FRUIX_CONFIG`` is given.

    Built by validating a plain dict, so it goes through exactly the same code
    path as a file.
    """
    home_raw = environ.get("DAGSTER_HOME", "")
    home_key = "DAGSTER_HOME"
    if not home_raw:
        home_raw = "~/.local/state/fruix-dagster"
        home_key = "(default home)"
    v = _Validator(EMBEDDED_SOURCE, os.getcwd(), environ)
    home = v.host_path(home_key, home_raw)
    raw = {
        "build": {
            "jobs": os.cpu_count() or 1,
            "build_root": os.path.join(home, "fruix", "build-root"),
            # the sample tree needs a few MiB, not the 12 GiB of a real FreeBSD build
            "min_free_gib": 0.5,
        },
        "source": {"from": "path", "path": sample_src_dir()},
        "store": {"root": os.path.join(home, "fruix", "artifacts")},
        "guest": [{"name": "local", "kind": "local", "system": "plain"}],
        "target": [
            {"name": "amd64", "guest": "local", "target": "amd64", "target_arch": "amd64", "kernconf": "GENERIC"}
        ],
    }
    return v.settings(raw)


def check_config_text(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> str:
    """What ``fruix-dagster check-config [FILE]`` prints: the resolved settings."""
    return render_settings(load_settings(path, environ))


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

_NAME_GUEST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NAME_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_MAKE_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER = re.compile(r"[a-z_][a-z0-9_.-]*")
_ARCH = re.compile(r"[a-z0-9_]+")
_KERNCONF = re.compile(r"[A-Za-z0-9_.-]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CRON_FIELD = re.compile(r"[0-9*/,-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

# FreeBSD's own TARGET <-> TARGET_ARCH defaults (src/Makefile) and known pairs.
_ARCHES_OF_TARGET = {
    "amd64": ("amd64",),
    "arm": ("armv7", "armv6"),
    "arm64": ("aarch64",),
    "i386": ("i386",),
    "powerpc": ("powerpc", "powerpc64", "powerpc64le", "powerpcspe"),
    "riscv": ("riscv64",),
}
_TARGET_OF_ARCH = {arch: t for t, arches in _ARCHES_OF_TARGET.items() for arch in arches}

_TOP_KEYS = ("build", "source", "store", "slices", "schedule", "sensor", "history", "guest", "target")
_BUILD_KEYS = tuple(f.name for f in fields(BuildSettings))
_SOURCE_KEYS = ("from", "metadata", "store_root", "name", "path")
_STORE_KEYS = tuple(f.name for f in fields(StoreSettings))
_SLICE_KEYS = tuple(f.name for f in fields(SliceSettings))
_SCHEDULE_KEYS = tuple(f.name for f in fields(ScheduleSettings))
_SENSOR_KEYS = tuple(f.name for f in fields(SensorSettings))
_HISTORY_KEYS = tuple(f.name for f in fields(HistorySettings))
_GUEST_KEYS = tuple(f.name for f in fields(Guest))
_REMOTE_ONLY = ("host", "port", "user", "private_key", "passphrase_env", "password_env", "known_hosts")
_XCPNG_KEYS = tuple(f.name for f in fields(XcpngSettings))
_TARGET_KEYS = tuple(f.name for f in fields(Target))

_MISSING: Any = object()


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, _dt.datetime):
        return "a date-time"
    if isinstance(v, _dt.date):
        return "a date"
    if isinstance(v, _dt.time):
        return "a time"
    return type(v).__name__


def _show(v: Any, limit: int = 80) -> str:
    """A short, single-line rendering of a found value."""
    if v is _MISSING:
        return "nothing"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        text = repr(v)
    elif isinstance(v, str):
        text = repr(v if len(v) <= limit else v[:limit]) + ("…" if len(v) > limit else "")
        return text
    elif isinstance(v, dict):
        if not v:
            return "an empty table"
        keys = ", ".join(_toml_key(k) for k in list(v)[:8]) + (", …" if len(v) > 8 else "")
        return f"a table (keys: {keys})"
    elif isinstance(v, list):
        if not v:
            return "an empty array"
        try:
            text = _toml_value(v)
        except Exception:  # pragma: no cover - defensive, values come from tomllib
            text = f"an array of {len(v)} items"
    elif isinstance(v, (_dt.date, _dt.time)):
        text = v.isoformat()
    else:
        text = repr(v)
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "…"


def _show_typed(v: Any) -> str:
    """``_show`` plus the TOML type when a wrong type was found."""
    if v is _MISSING:
        return "nothing"
    return f"{_show(v)} ({_kind(v)})"


def _key(parent: str, name: str) -> str:
    k = name if _BARE_KEY.fullmatch(name) else _toml_str(name)
    return f"{parent}.{k}" if parent else k


class _Validator:
    def __init__(self, label: str, base_dir: str, environ: Mapping[str, str]):
        self.label = label
        self.base_dir = base_dir
        self.environ = environ

    # -- errors --------------------------------------------------------------

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.label}: {key}: {message}")

    def expect(self, key: str, expected: str, found: Any, hint: str = "", typed: bool = False) -> None:
        shown = _show_typed(found) if typed else _show(found)
        msg = f"{expected}, got {shown}"
        if hint:
            msg += f"; {hint}"
        self.fail(key, msg)

    # -- tables --------------------------------------------------------------

    def table(self, key: str, raw: Any, known: tuple[str, ...], what: str) -> dict[str, Any]:
        if raw is _MISSING:
            return {}
        if not isinstance(raw, dict):
            hint = ""
            if isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
                hint = f"write [{key}] once, not [[{key}]]"
            self.expect(key, f"must be a table ({what})", raw, hint, typed=True)
        unknown = [k for k in raw if k not in known]
        if unknown:
            bad = unknown[0]
            where = key or "top level"
            msg = f"unknown key {bad!r} (known keys: {', '.join(sorted(known))})"
            close = difflib.get_close_matches(bad, known, n=1)
            if close:
                msg += f"; did you mean {close[0]!r}?"
            elif key and bad in _TOP_KEYS:
                msg += f"; if you meant the top-level {bad!r}, move it above the first [table] header"
            self.fail(where, msg)
        return raw

    def array_of_tables(self, key: str, raw: Any) -> list[dict[str, Any]]:
        if raw is _MISSING:
            self.fail(key, f"at least one [[{key}]] table is required, got nothing")
        if isinstance(raw, dict):
            self.expect(key, f"must be an array of tables ([[{key}]])", raw, f"write [[{key}]] instead of [{key}]", typed=True)
        if not isinstance(raw, list):
            self.expect(key, f"must be an array of tables ([[{key}]])", raw, typed=True)
        if not raw:
            self.expect(key, f"must have at least one [[{key}]] table", raw)
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                self.expect(f"{key}[{i}]", "must be a table", item, typed=True)
        return raw

    # -- scalars -------------------------------------------------------------

    def integer(self, key: str, v: Any, minimum: int, maximum: int | None = None) -> int:
        if maximum is None:
            expected = f"must be an integer ≥ {minimum}"
        else:
            expected = f"must be an integer from {minimum} to {maximum}"
        if isinstance(v, bool) or not isinstance(v, int):
            hint = ""
            if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
                hint = f"write {v.strip()} without quotes"
            elif isinstance(v, float) and v.is_integer():
                hint = f"write {int(v)} without a decimal point"
            self.expect(key, expected, v, hint, typed=True)
        if v < minimum or (maximum is not None and v > maximum):
            self.expect(key, expected, v)
        return v

    def number(self, key: str, v: Any, *, gt: float | None = None, ge: float | None = None) -> float:
        expected = f"must be a number > {gt:g}" if gt is not None else f"must be a number ≥ {ge:g}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            hint = ""
            if isinstance(v, str):
                try:
                    float(v)
                    hint = f"write {v.strip()} without quotes"
                except ValueError:
                    pass
            self.expect(key, expected, v, hint, typed=True)
        f = float(v)
        if not math.isfinite(f):
            self.expect(key, expected.replace("a number", "a finite number"), v)
        if (gt is not None and not f > gt) or (ge is not None and not f >= ge):
            self.expect(key, expected, v)
        return f

    def boolean(self, key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            hint = ""
            if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no"):
                hint = "write true or false without quotes"
            self.expect(key, "must be true or false", v, hint, typed=True)
        return v

    def string(self, key: str, v: Any, expected: str) -> str:
        if not isinstance(v, str):
            self.expect(key, expected, v, typed=True)
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            self.expect(key, expected, v, "it is not valid UTF-8")
        return v

    def pattern(self, key: str, v: Any, rx: re.Pattern[str], expected: str) -> str:
        s = self.string(key, v, expected)
        if not rx.fullmatch(s):
            self.expect(key, expected, s)
        return s

    def choice(self, key: str, v: Any, choices: tuple[str, ...]) -> str:
        expected = f"must be one of {', '.join(choices)}"
        s = self.string(key, v, expected)
        if s not in choices:
            self.expect(key, expected, s)
        return s

    def env_name(self, key: str, v: Any) -> str:
        expected = "must be the NAME of an environment variable ([A-Za-z_][A-Za-z0-9_]*)"
        s = self.string(key, v, expected)
        if not _ENV_NAME.fullmatch(s):
            # Not echoed: a value that is not a variable name may be the secret itself.
            found = "an empty string" if not s else f"a {len(s)}-character string that is not a variable name (not shown)"
            self.fail(
                key,
                f"{expected}, got {found}; put the secret in an environment variable "
                "and write the variable's name here, never the secret itself",
            )
        return s

    # -- paths ---------------------------------------------------------------

    def guest_path(self, key: str, v: Any, min_depth: int = 1) -> str:
        depth = "" if min_depth <= 1 else f" at least {min_depth} components deep"
        expected = f"must be an absolute, normalized guest path{depth} (no '.', '..', '//' or trailing '/')"
        s = self.string(key, v, expected)
        reason = ""
        hint = ""
        if not s:
            reason = "empty"
        elif _CONTROL.search(s):
            reason = "contains a control character such as NUL or newline"
        elif s.startswith("~"):
            reason = "'~' is not expanded on the guest"
            hint = "write the absolute path"
        elif not s.startswith("/"):
            reason = "relative"
            hint = "guest paths are not resolved against anything; write the absolute path"
        elif s == "/":
            reason = "the root directory"
        elif s.endswith("/"):
            reason = "trailing '/'"
            hint = f"write {s.rstrip('/')!r}"
        elif "//" in s:
            reason = "contains '//'"
        else:
            parts = s[1:].split("/")
            if ".." in parts:
                reason = "contains a '..' component"
            elif "." in parts:
                reason = "contains a '.' component"
            elif len(parts) < min_depth:
                reason = f"only {len(parts)} component{'s' if len(parts) != 1 else ''} deep"
                hint = "deletes are fenced to the build root, so it must not be a top-level directory"
        if reason:
            msg = f"{expected}, got {_show(s)} ({reason})"
            if hint:
                msg += f"; {hint}"
            self.fail(key, msg)
        return s

    def _home(self, key: str) -> str:
        home = self.environ.get("HOME", "")
        if not home:
            try:
                home = pwd.getpwuid(os.getuid()).pw_dir
            except (KeyError, OSError):
                self.fail(key, "cannot expand '~': HOME is not set and the user has no passwd entry; write an absolute path")
        return home

    def host_path(self, key: str, v: Any) -> str:
        """A HOST path: '~' expanded, relative resolved against the file's directory."""
        expected = "must be a host path"
        s = self.string(key, v, expected)
        if not s:
            self.expect(key, f"{expected} (a non-empty string)", s)
        if "\0" in s or "\n" in s or "\r" in s:
            self.expect(key, f"{expected} without NUL or newline", s)
        if s == "~" or s.startswith("~/"):
            s = self._home(key) + s[1:]
        elif s.startswith("~"):
            user = s[1:].split("/", 1)[0]
            try:
                home = pwd.getpwnam(user).pw_dir
            except (KeyError, OSError, ValueError):
                self.expect(key, f"{expected} ('~user' must name a known user)", s)
            s = home + s[1 + len(user):]
        if not os.path.isabs(s):
            s = os.path.join(self.base_dir, s)
        s = os.path.normpath(s)
        if s.startswith("//"):
            s = "/" + s.lstrip("/")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            self.expect(key, expected, v, "it is not valid UTF-8")
        return s

    # -- compound values -----------------------------------------------------

    def make_vars(self, key: str, v: Any) -> MakeVars:
        if not isinstance(v, dict):
            self.expect(key, 'must be a table of NAME = "value" pairs', v, typed=True)
        out: dict[str, str] = {}
        for name, value in v.items():
            k = _key(key, name)
            if not _MAKE_VAR.fullmatch(name):
                self.expect(key, "make variable names must match [A-Za-z_][A-Za-z0-9_.]*", name)
            if name in RESERVED_MAKE_VARS:
                self.fail(k, f"is reserved ({RESERVED_MAKE_VARS[name]}), got {_show(value)}; remove it")
            if isinstance(value, str):
                if "\0" in value:
                    self.expect(k, "must be a string without NUL", value)
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    self.expect(k, "must be a valid UTF-8 string", value)
                out[name] = value
                continue
            if isinstance(value, bool):
                hint = f'make variables are strings, so quote it: {name} = "{"true" if value else "false"}" (or "yes" if that is what the makefile expects)'
            elif isinstance(value, (int, float)):
                hint = f'make variables are strings, so quote it: {name} = "{value}"'
            elif isinstance(value, dict):
                hint = f'a name containing \'.\' must be quoted, e.g. "{name}.{next(iter(value), "X")}" = "…"'
            else:
                hint = "make variables are strings"
            self.expect(k, "must be a string", value, hint, typed=True)
        return tuple(sorted(out.items()))

    def globs(self, key: str, v: Any, literal: bool = False) -> tuple[str, ...]:
        what = "relative paths" if literal else "glob patterns"
        expected = f"must be a non-empty array of non-empty {what}"
        if isinstance(v, str):
            self.expect(key, expected, v, f"write [{_toml_str(v)}]", typed=True)
        if not isinstance(v, list):
            self.expect(key, expected, v, typed=True)
        if not v:
            self.expect(key, expected, v)
        out: list[str] = []
        for i, item in enumerate(v):
            k = f"{key}[{i}]"
            rule = f"must be a non-empty {'path' if literal else 'glob pattern'} relative to the stage (no leading '/', no empty, '.' or '..' component)"
            if not isinstance(item, str):
                self.expect(k, rule, item, typed=True)
            reason = ""
            if not item:
                reason = "empty"
            elif _CONTROL.search(item):
                reason = "contains a control character"
            elif item.startswith("/"):
                reason = "leading '/'"
            else:
                parts = item.split("/")
                if ".." in parts:
                    reason = "contains a '..' component"
                elif "." in parts:
                    reason = "contains a '.' component"
                elif "" in parts:
                    reason = "contains an empty component"
                elif literal and any(c in item for c in "*?["):
                    reason = "contains glob characters; key files are literal paths"
            if reason:
                self.fail(k, f"{rule}, got {_show(item)} ({reason})")
            out.append(item)
        return tuple(out)

    # -- sections ------------------------------------------------------------

    def settings(self, raw: dict[str, Any]) -> Settings:
        self.table("", raw, _TOP_KEYS, "")
        build = self.build(raw.get("build", _MISSING))
        source = self.source(raw.get("source", _MISSING))
        store = self.store(raw.get("store", _MISSING))
        slices = self.slices(raw.get("slices", _MISSING))
        schedule = self.schedule(raw.get("schedule", _MISSING))
        sensor = self.sensor(raw.get("sensor", _MISSING))
        history = self.history(raw.get("history", _MISSING))
        guests = self.guests(raw.get("guest", _MISSING))
        targets = self.targets(raw.get("target", _MISSING), guests)
        return Settings(build, source, store, slices, schedule, sensor, history, guests, targets, self.label)

    def build(self, raw: Any) -> BuildSettings:
        t = self.table("build", raw, _BUILD_KEYS, "[build]")
        d = BuildSettings()
        get = t.get
        jobs = self.integer("build.jobs", get("jobs", d.jobs), 1)
        build_root = self.guest_path("build.build_root", get("build_root", d.build_root), min_depth=2)
        make = get("make", d.make)
        make_expected = "must be a command name or an absolute path, without whitespace"
        make = self.string("build.make", make, make_expected)
        if not make or re.search(r"[\s\x00-\x1f\x7f]", make) or make.startswith("-") or ("/" in make and not make.startswith("/")):
            self.expect("build.make", make_expected, make)
        mv = {}
        for name in ("make_vars", "kernel_make_vars", "world_make_vars"):
            mv[name] = self.make_vars(f"build.{name}", get(name, {}))
        clean = self.boolean("build.clean", get("clean", d.clean))
        if clean:
            for name, pairs in mv.items():
                if "WITHOUT_CLEAN" in dict(pairs):
                    self.fail(
                        f"build.{name}.WITHOUT_CLEAN",
                        "cannot be set together with build.clean = true (clean builds contradict WITHOUT_CLEAN), "
                        f"got {_show(dict(pairs)['WITHOUT_CLEAN'])}; remove one of them",
                    )
        return BuildSettings(
            jobs=jobs,
            build_root=build_root,
            make=make,
            make_vars=mv["make_vars"],
            kernel_make_vars=mv["kernel_make_vars"],
            world_make_vars=mv["world_make_vars"],
            clean=clean,
            timeout_hours=self.number("build.timeout_hours", get("timeout_hours", d.timeout_hours), gt=0),
            silent_timeout_minutes=self.number(
                "build.silent_timeout_minutes", get("silent_timeout_minutes", d.silent_timeout_minutes), gt=0
            ),
            min_free_gib=self.number("build.min_free_gib", get("min_free_gib", d.min_free_gib), ge=0),
            retries=self.integer("build.retries", get("retries", d.retries), 0),
        )

    def source(self, raw: Any) -> SourceSettings:
        t = self.table("source", raw, _SOURCE_KEYS, "[source]")
        d = SourceSettings()
        from_ = self.choice("source.from", t.get("from", d.from_), ("system-metadata", "path"))
        metadata = self.guest_path("source.metadata", t.get("metadata", d.metadata))
        store_root = self.guest_path("source.store_root", t.get("store_root", d.store_root))
        name = self.pattern("source.name", t.get("name", d.name), _NAME_SOURCE, "must match [A-Za-z0-9][A-Za-z0-9._+-]*")
        path = t.get("path", _MISSING)
        if from_ == "path":
            if path is _MISSING:
                self.fail("source.path", 'required with from = "path" (the guest directory holding the FreeBSD source), got nothing')
            path = self.guest_path("source.path", path)
        else:
            if path is not _MISSING:
                self.fail(
                    "source.path",
                    f'only allowed with from = "path", got {_show(path)} with from = "system-metadata"; '
                    'remove it or set from = "path"',
                )
            path = None
        return SourceSettings(from_=from_, metadata=metadata, store_root=store_root, name=name, path=path)

    def store(self, raw: Any) -> StoreSettings:
        t = self.table("store", raw, _STORE_KEYS, "[store]")
        d = StoreSettings()
        return StoreSettings(
            root=self.host_path("store.root", t.get("root", d.root)),
            keep=self.integer("store.keep", t.get("keep", d.keep), 1),
        )

    def slices(self, raw: Any) -> SliceSettings:
        t = self.table("slices", raw, _SLICE_KEYS, "[slices]")
        d = SliceSettings()
        headers = self.globs("slices.headers", t.get("headers", list(d.headers)))
        bootloader = self.globs("slices.bootloader", t.get("bootloader", list(d.bootloader)))
        extra = self.globs("slices.key_files", t.get("key_files", list(d.key_files)), literal=True)
        # The default key files are a stable metadata interface: always kept, extras appended.
        key_files = tuple(dict.fromkeys(d.key_files + extra))
        return SliceSettings(headers=headers, bootloader=bootloader, key_files=key_files)

    def schedule(self, raw: Any) -> ScheduleSettings:
        t = self.table("schedule", raw, _SCHEDULE_KEYS, "[schedule]")
        d = ScheduleSettings()
        expected = "must be 5 whitespace-separated cron fields (minute hour day-of-month month day-of-week) of 0-9 * / , -"
        cron = self.string("schedule.cron", t.get("cron", d.cron), expected)
        parts = cron.split()
        if len(parts) != 5:
            self.fail("schedule.cron", f"{expected}, got {_show(cron)} ({len(parts)} field{'s' if len(parts) != 1 else ''})")
        for p in parts:
            if not _CRON_FIELD.fullmatch(p):
                self.fail("schedule.cron", f"{expected}, got {_show(cron)} (field {p!r})")
        tz_expected = "must be a time zone known to zoneinfo (e.g. UTC, Europe/Berlin)"
        tz = self.string("schedule.timezone", t.get("timezone", d.timezone), tz_expected)
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
            self.expect("schedule.timezone", tz_expected, tz)
        return ScheduleSettings(
            cron=" ".join(parts),
            timezone=tz,
            enabled=self.boolean("schedule.enabled", t.get("enabled", d.enabled)),
        )

    def sensor(self, raw: Any) -> SensorSettings:
        t = self.table("sensor", raw, _SENSOR_KEYS, "[sensor]")
        d = SensorSettings()
        return SensorSettings(
            interval_seconds=self.integer("sensor.interval_seconds", t.get("interval_seconds", d.interval_seconds), 10),
            enabled=self.boolean("sensor.enabled", t.get("enabled", d.enabled)),
        )

    def history(self, raw: Any) -> HistorySettings:
        t = self.table("history", raw, _HISTORY_KEYS, "[history]")
        d = HistorySettings()
        return HistorySettings(
            size_change_pct=self.number("history.size_change_pct", t.get("size_change_pct", d.size_change_pct), gt=0)
        )

    def guests(self, raw: Any) -> tuple[Guest, ...]:
        items = self.array_of_tables("guest", raw)
        out: list[Guest] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            g = self.guest(f"guest[{i}]", item)
            if g.name in seen:
                self.fail(f"guest[{i}].name", f"must be unique (guest[{seen[g.name]}] already uses it), got {_show(g.name)}")
            seen[g.name] = i
            out.append(g)
        return tuple(out)

    def guest(self, key: str, raw: dict[str, Any]) -> Guest:
        t = self.table(key, raw, _GUEST_KEYS, "[[guest]]")
        if "name" not in t:
            self.fail(f"{key}.name", "required (a name matching [A-Za-z0-9][A-Za-z0-9._-]*), got nothing")
        name = self.pattern(f"{key}.name", t["name"], _NAME_GUEST, "must match [A-Za-z0-9][A-Za-z0-9._-]*")
        if "kind" not in t:
            self.fail(f"{key}.kind", "required (one of local, ssh, xcpng), got nothing")
        kind = self.choice(f"{key}.kind", t["kind"], ("local", "ssh", "xcpng"))
        system = self.choice(f"{key}.system", t.get("system", "plain" if kind == "local" else "fruix"), ("fruix", "plain"))
        d = Guest(name="", kind="", system="")
        connect_timeout = self.number(f"{key}.connect_timeout", t.get("connect_timeout", d.connect_timeout), gt=0)
        keepalive = self.integer(f"{key}.keepalive", t.get("keepalive", d.keepalive), 0)
        io_timeout = self.number(f"{key}.io_timeout", t.get("io_timeout", d.io_timeout), gt=0)
        common = dict(name=name, kind=kind, system=system, connect_timeout=connect_timeout, keepalive=keepalive, io_timeout=io_timeout)

        if kind == "local":
            for k in _REMOTE_ONLY + ("xcpng",):
                if k in t:
                    self.fail(
                        f"{key}.{k}",
                        f"must be absent for kind 'local' (a local guest is this host), got {_show(t[k])}; "
                        'remove it or use kind = "ssh"',
                    )
            return Guest(**common)

        if kind == "ssh" and "host" not in t:
            self.fail(f"{key}.host", "required for kind 'ssh' (the guest's address or DNS name), got nothing")
        host = None
        if "host" in t:
            host_expected = "must be an IP address or DNS name"
            host = self.string(f"{key}.host", t["host"], host_expected)
            if not self._valid_host(host):
                self.expect(f"{key}.host", host_expected, host)
        port = self.integer(f"{key}.port", t.get("port", 22), 1, 65535)
        user = self.pattern(f"{key}.user", t.get("user", "root"), _USER, "must be a user name matching [a-z_][a-z0-9_.-]*")
        private_key = self.host_path(f"{key}.private_key", t["private_key"]) if "private_key" in t else None
        passphrase_env = self.env_name(f"{key}.passphrase_env", t["passphrase_env"]) if "passphrase_env" in t else None
        password_env = self.env_name(f"{key}.password_env", t["password_env"]) if "password_env" in t else None
        if private_key is None and password_env is None:
            self.fail(
                f"{key}.private_key",
                f"required for kind {kind!r} unless password_env is set, got neither private_key nor password_env; "
                "set private_key to a key file or password_env to the NAME of an environment variable holding the password",
            )
        if passphrase_env is not None and private_key is None:
            self.fail(f"{key}.passphrase_env", f"only meaningful with private_key, got {_show(passphrase_env)} without a private_key")
        known_hosts = self.host_path(f"{key}.known_hosts", t.get("known_hosts", "~/.ssh/known_hosts"))

        xcpng = None
        if kind == "xcpng":
            if "xcpng" not in t:
                self.fail(
                    f"{key}.xcpng",
                    "required for kind 'xcpng' (an inline table { url = …, password_env = …, vm_uuid = … }), got nothing",
                )
            xcpng = self.xcpng(f"{key}.xcpng", t["xcpng"])
        elif "xcpng" in t:
            self.fail(f"{key}.xcpng", f"only allowed for kind 'xcpng', got {_show(t['xcpng'])}; remove it or use kind = \"xcpng\"")

        return Guest(
            **common,
            host=host,
            port=port,
            user=user,
            private_key=private_key,
            passphrase_env=passphrase_env,
            password_env=password_env,
            known_hosts=known_hosts,
            xcpng=xcpng,
        )

    @staticmethod
    def _valid_host(host: str) -> bool:
        if not host or host.startswith("-") or len(host) > 253:
            return False
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            pass
        return bool(_HOSTNAME.fullmatch(host))

    def xcpng(self, key: str, raw: Any) -> XcpngSettings:
        t = self.table(key, raw, _XCPNG_KEYS, "an inline table { url = …, password_env = …, vm_uuid = … }")
        if "url" not in t:
            self.fail(f"{key}.url", "required (the XAPI URL, http:// or https://), got nothing")
        url_expected = "must be an http:// or https:// URL without query or fragment"
        url = self.string(f"{key}.url", t["url"], url_expected)
        try:
            parts = urlsplit(url)
            ok = (
                parts.scheme in ("http", "https")
                and bool(parts.hostname)
                and not parts.query
                and not parts.fragment
                and not re.search(r"[\s\x00-\x1f\x7f]", url)
            )
            if ok:
                parts.port  # raises ValueError on a bad port
        except ValueError:
            ok = False
        if not ok:
            self.expect(f"{key}.url", url_expected, url)
        if not url.endswith("/"):
            url += "/"
        if "password_env" not in t:
            self.fail(
                f"{key}.password_env",
                "required (the NAME of an environment variable holding the XAPI password), got nothing",
            )
        password_env = self.env_name(f"{key}.password_env", t["password_env"])
        username = self.string(f"{key}.username", t.get("username", "root"), "must be a non-empty user name")
        if not username or _CONTROL.search(username):
            self.expect(f"{key}.username", "must be a non-empty user name", username)
        vm_uuid = t.get("vm_uuid", _MISSING)
        vm_name = t.get("vm_name", _MISSING)
        if vm_uuid is not _MISSING and vm_name is not _MISSING:
            self.fail(key, f"needs exactly one of vm_uuid / vm_name, got both (vm_uuid = {_show(vm_uuid)}, vm_name = {_show(vm_name)}); remove one")
        if vm_uuid is _MISSING and vm_name is _MISSING:
            self.fail(key, "needs exactly one of vm_uuid / vm_name, got neither")
        if vm_uuid is not _MISSING:
            vm_uuid = self.pattern(
                f"{key}.vm_uuid", vm_uuid, _UUID, "must be a UUID in canonical form (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ).lower()
            vm_name = None
        else:
            vm_name = self.string(f"{key}.vm_name", vm_name, "must be a non-empty VM name label")
            if not vm_name or _CONTROL.search(vm_name):
                self.expect(f"{key}.vm_name", "must be a non-empty VM name label without control characters", vm_name)
            vm_uuid = None
        after = self.choice(f"{key}.after", t.get("after", "keep-running"), ("keep-running", "shutdown", "revert"))
        revert_to = None
        if "revert_to" in t:
            revert_to = self.string(f"{key}.revert_to", t["revert_to"], "must be a snapshot name")
            if not revert_to or _CONTROL.search(revert_to):
                self.expect(f"{key}.revert_to", "must be a non-empty snapshot name", revert_to)
        elif after == "revert":
            self.fail(f"{key}.revert_to", 'required when after = "revert" (the name of the snapshot to revert to), got nothing')
        boot_timeout = self.integer(f"{key}.boot_timeout", t.get("boot_timeout", 600), 1)
        ca_file = self.host_path(f"{key}.ca_file", t["ca_file"]) if "ca_file" in t else None
        insecure = self.boolean(f"{key}.insecure", t.get("insecure", False))
        if insecure and ca_file is not None:
            self.fail(
                f"{key}.insecure",
                f"cannot be true together with ca_file (either verify against the CA or not at all), got true with ca_file = {_show(ca_file)}; remove one",
            )
        address_cidr = None
        if "address_cidr" in t:
            cidr_expected = "must be an IP network such as 192.0.2.0/24"
            s = self.string(f"{key}.address_cidr", t["address_cidr"], cidr_expected)
            try:
                address_cidr = str(ipaddress.ip_network(s, strict=False))
            except ValueError:
                self.expect(f"{key}.address_cidr", cidr_expected, s)
        request_timeout = self.number(f"{key}.request_timeout", t.get("request_timeout", 60.0), gt=0)
        return XcpngSettings(
            url=url,
            password_env=password_env,
            username=username,
            vm_uuid=vm_uuid,
            vm_name=vm_name,
            after=after,
            revert_to=revert_to,
            boot_timeout=boot_timeout,
            ca_file=ca_file,
            insecure=insecure,
            address_cidr=address_cidr,
            request_timeout=request_timeout,
        )

    def targets(self, raw: Any, guests: tuple[Guest, ...]) -> tuple[Target, ...]:
        items = self.array_of_tables("target", raw)
        guest_names = [g.name for g in guests]
        out: list[Target] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            key = f"target[{i}]"
            t = self.table(key, item, _TARGET_KEYS, "[[target]]")
            if "name" not in t:
                self.fail(f"{key}.name", "required (a partition key matching [A-Za-z0-9][A-Za-z0-9_-]*), got nothing")
            name = self.pattern(f"{key}.name", t["name"], _NAME_TARGET, "must match [A-Za-z0-9][A-Za-z0-9_-]*")
            if name in seen:
                self.fail(f"{key}.name", f"must be unique (target[{seen[name]}] already uses it), got {_show(name)}")
            seen[name] = i
            if "guest" not in t:
                self.fail(f"{key}.guest", f"required (the name of a [[guest]]; known guests: {', '.join(guest_names)}), got nothing")
            guest = self.string(f"{key}.guest", t["guest"], "must name a [[guest]]")
            if guest not in guest_names:
                self.fail(f"{key}.guest", f"names no [[guest]] (known guests: {', '.join(guest_names)}), got {_show(guest)}")
            target, arch = self.target_pair(key, t)
            kernconf = self.pattern(f"{key}.kernconf", t.get("kernconf", "GENERIC"), _KERNCONF, "must match [A-Za-z0-9_.-]+")
            out.append(Target(name=name, guest=guest, target=target, target_arch=arch, kernconf=kernconf))
        return tuple(out)

    def target_pair(self, key: str, t: dict[str, Any]) -> tuple[str, str]:
        """TARGET / TARGET_ARCH with FreeBSD's own defaulting of one from the other."""
        rx_text = "must match [a-z0-9_]+"
        target = self.pattern(f"{key}.target", t["target"], _ARCH, rx_text) if "target" in t else None
        arch = self.pattern(f"{key}.target_arch", t["target_arch"], _ARCH, rx_text) if "target_arch" in t else None
        if target is None and arch is None:
            return "amd64", "amd64"
        if arch is None:
            assert target is not None
            return target, _ARCHES_OF_TARGET.get(target, (target,))[0]
        if target is None:
            return _TARGET_OF_ARCH.get(arch, arch), arch
        known = _ARCHES_OF_TARGET.get(target)
        if known is not None and arch not in known:
            allowed = known[0] if len(known) == 1 else "one of " + ", ".join(known)
            self.fail(f"{key}.target_arch", f"must be {allowed} for target {target!r}, got {_show(arch)}")
        return target, arch


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _TOML_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _toml_str(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    raise TypeError(f"cannot render {type(v).__name__} as TOML")


_MAKE_VAR_FIELDS = {"make_vars", "kernel_make_vars", "world_make_vars"}
_RENAMED = {"from_": "from"}


def _obj_items(obj: Any) -> list[tuple[str, Any]]:
    items = []
    for f in fields(obj):
        if not f.compare:
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        if f.name in _MAKE_VAR_FIELDS:
            value = dict(value)
        elif dataclasses.is_dataclass(value):
            value = dict(_obj_items(value))
        items.append((_RENAMED.get(f.name, f.name), value))
    return items


def render_settings(settings: Settings) -> str:
    """The resolved settings as TOML; ``load_settings`` on it gives an equal ``Settings``."""
    lines = [
        "# fruix_dagster settings, resolved from " + _toml_str(settings.source_file)[1:-1],
        "# Every default is written out; host paths are expanded and absolute.",
    ]
    for section in ("build", "source", "store", "slices", "schedule", "sensor", "history"):
        lines.append("")
        lines.append(f"[{section}]")
        for k, v in _obj_items(getattr(settings, section)):
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for table, items in (("guest", settings.guests), ("target", settings.targets)):
        for item in items:
            lines.append("")
            lines.append(f"[[{table}]]")
            for k, v in _obj_items(item):
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"
