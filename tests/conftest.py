"""Shared fixtures: settings files, instances, build runs on the sample tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from fruix_dagster.definitions import make_definitions
from fruix_dagster.defs.jobs import BUILD_JOB
from fruix_dagster.settings import Settings, load_settings, sample_src_dir
from tests.support.fixtures import ssh_guest, ssh_guest_factory, ssh_guest_source_tree  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


def _toml_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c == '"':
        return '\\"'
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return c


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_toml_char(c) for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"
    raise TypeError(v)


def write_settings(path: Path, *, build: dict | None = None, source: dict | None = None,
                   store: dict | None = None, slices: dict | None = None,
                   guests: list[dict] | None = None, targets: list[dict] | None = None,
                   extra: str = "") -> Path:
    """Write a settings file; tables given as dicts."""
    out = []
    for name, table in (("build", build), ("source", source), ("store", store), ("slices", slices)):
        if table:
            out.append(f"[{name}]")
            out.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    for g in guests or []:
        out.append("[[guest]]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in g.items())
    for t in targets or []:
        out.append("[[target]]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in t.items())
    path.write_text("\n".join(out) + "\n" + textwrap.dedent(extra))
    return path


@dataclass
class LocalBuild:
    """A local-guest build on a copy of the sample tree, with its own instance."""

    tmp: Path
    settings_path: Path
    instance: dg.DagsterInstance

    @property
    def settings(self) -> Settings:
        return load_settings(self.settings_path)

    @property
    def build_root(self) -> Path:
        return Path(self.settings.build.build_root)

    def defs(self) -> dg.Definitions:
        return make_definitions(self.settings)

    def run(self, target: str = "amd64", select: list[str] | None = None,
            config: dict | None = None, raise_on_error: bool = False) -> dg.ExecuteInProcessResult:
        job = self.defs().resolve_job_def(BUILD_JOB)
        run_config = {"resources": {"build_options": {"config": config}}} if config else None
        return job.execute_in_process(
            instance=self.instance, partition_key=target,
            asset_selection=[dg.AssetKey(a) for a in select] if select else None,
            run_config=run_config, raise_on_error=raise_on_error)

    def rewrite(self, **kwargs) -> None:
        write_settings(self.settings_path, **self._tables(**kwargs))

    def _tables(self, build=None, **rest):
        base_build = {"jobs": 2, "build_root": str(self.tmp / "build-root")}
        base_build.update(build or {})
        tables = {
            "build": base_build,
            "source": {"from": "path", "path": str(self.tmp / "src")},
            "store": {"root": str(self.tmp / "store")},
            "guests": [{"name": "local", "kind": "local"}],
            "targets": [{"name": "amd64", "guest": "local"}],
        }
        tables.update(rest)
        return tables


def copy_sample(dest: Path, read_only: bool = True) -> Path:
    shutil.copytree(sample_src_dir(), dest, symlinks=True)
    if read_only:
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in filenames:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode & ~0o222)
            os.chmod(dirpath, os.stat(dirpath).st_mode & ~0o222)
    return dest


def new_instance(home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def make_local_build(tmp: Path, **tables) -> LocalBuild:
    copy_sample(tmp / "src")
    lb = LocalBuild(tmp, tmp / "fruix.toml", new_instance(tmp / "dagster-home"))
    lb.rewrite(**tables)
    return lb


class SshBuild(LocalBuild):
    """The same, on an SshGuest: source from the guest's system metadata."""

    guest: Any = None

    @property
    def build_root(self) -> Path:
        return self.guest.guest_path(self.settings.build.build_root)

    def _tables(self, build=None, guests=None, **rest):
        base_build = {"jobs": 2, "min_free_gib": 0.5}
        base_build.update(build or {})
        tables = {
            "build": base_build,
            "source": {"from": "system-metadata"},
            "store": {"root": str(self.tmp / "store")},
            "guests": guests or [self.guest.ssh_settings(name="fruix-amd64", connect_timeout=5.0,
                                                         io_timeout=60.0)],
            "targets": [{"name": "amd64", "guest": "fruix-amd64"}],
        }
        tables.update(rest)
        return tables


def make_ssh_build(tmp: Path, guest, **tables) -> SshBuild:
    sb = SshBuild(tmp, tmp / "fruix.toml", new_instance(tmp / "dagster-home"))
    sb.guest = guest
    sb.rewrite(**tables)
    return sb


@pytest.fixture
def local_build(tmp_path) -> LocalBuild:
    return make_local_build(tmp_path)


def make_writable(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)


@pytest.fixture(autouse=True)
def _writable_tmp(tmp_path):
    """Read-only copies of the sample tree, and the immutable files a root
    install makes (PRECIOUSPROG: chattr +i), must not break tmp_path cleanup."""
    yield
    if tmp_path.exists():
        subprocess.run(["chattr", "-R", "-f", "-i", "-a", str(tmp_path)], capture_output=True)
        make_writable(tmp_path)
