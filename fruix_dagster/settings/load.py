"""Reading a settings file (or the embedded default) into :class:`~.model.Settings`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

import pydantic

from fruix_dagster.errors import ConfigError
from fruix_dagster.settings.dump import render_settings
from fruix_dagster.settings.messages import config_error, show
from fruix_dagster.settings.model import EMBEDDED_SOURCE, Settings
from fruix_dagster.settings.rules import HostPath, LoadContext

_MISSING_HINT = "set FRUIX_CONFIG to a readable TOML file or unset it for the embedded default"
_ADAPTER = pydantic.TypeAdapter(Settings)
_HOST_PATH = pydantic.TypeAdapter(HostPath)


def validate(raw: Any, ctx: LoadContext) -> Settings:
    """A parsed TOML document → Settings, or the one ConfigError naming the key."""
    try:
        return _ADAPTER.validate_python(raw, context=ctx)
    except pydantic.ValidationError as exc:
        raise config_error(ctx.label, exc) from None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Read and validate a settings file.

    With ``path=None`` the file named by ``environ["FRUIX_CONFIG"]`` is used;
    if that is unset or empty the embedded default is returned.
    """
    via_env = False
    if path is None:
        env_path = environ.get("FRUIX_CONFIG", "")
        if not env_path:
            return embedded_default(environ)
        path, via_env = env_path, True
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise ConfigError(f"settings path must be a string or path, got {show(path)}") from None
    if isinstance(fspath, bytes):
        fspath = os.fsdecode(fspath)
    if not fspath or "\0" in fspath:
        raise ConfigError(f"{fspath!r}: not a usable file name; {_MISSING_HINT}")
    abspath = os.path.abspath(fspath)
    try:
        with open(abspath, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        named = f"; named by FRUIX_CONFIG={fspath!r}" if via_env else ""
        raise ConfigError(f"{abspath}: cannot read the settings file ({exc.strerror or exc}{named}); {_MISSING_HINT}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{abspath}: not valid TOML: the file is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{abspath}: not valid TOML: {exc}") from None
    return validate(raw, LoadContext(abspath, os.path.dirname(abspath), environ))


def sample_src_dir() -> str:
    """Absolute path of the bundled FreeBSD-shaped sample source tree."""
    return os.path.abspath(Path(__file__).parent.parent / "sample_src")


def embedded_default(environ: Mapping[str, str] = os.environ) -> Settings:
    """One ``local`` guest building the bundled ``sample_src/`` tree into a
    build root and artifact store under ``DAGSTER_HOME``.

    Validated like a file, so it goes through exactly the same rules.
    """
    ctx = LoadContext(EMBEDDED_SOURCE, os.getcwd(), environ)
    home = environ.get("DAGSTER_HOME", "") or "~/.local/state/fruix-dagster"
    home_key = "DAGSTER_HOME" if environ.get("DAGSTER_HOME", "") else "(default home)"
    try:
        home = _HOST_PATH.validate_python(home, context=ctx)
    except pydantic.ValidationError as exc:
        raise config_error(EMBEDDED_SOURCE, exc, root=home_key) from None
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
        "target": [{"name": "amd64", "guest": "local", "target": "amd64", "target_arch": "amd64", "kernconf": "GENERIC"}],
    }
    return validate(raw, ctx)


def check_config_text(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> str:
    """What ``fruix-dagster check-config [FILE]`` prints: the resolved settings."""
    return render_settings(load_settings(path, environ))
