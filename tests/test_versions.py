"""One Dagster release set on the installed environment, and the `dg` CLI on this project.

``pip check`` finds no conflict (dagster, dagster-webserver, dagster-postgres,
dagster-dg-cli from one release), and ``dg check defs`` / ``dg list defs``
load the definitions through ``[tool.dg]`` of pyproject.toml, under the code
location name workspace.yaml gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def dg_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FRUIX_CONFIG"}
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    # as after `. .venv/bin/activate`: dg compares the active venv with the project's
    env.update(DAGSTER_HOME=str(home), VIRTUAL_ENV=str(BIN.parent), PATH=f"{BIN}:{env.get('PATH', '')}")
    return env


def test_pip_check_is_clean_and_the_release_set_is_one():
    res = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No broken requirements found." in res.stdout
    core = version("dagster")
    assert version("dagster-webserver") == version("dagster-dg-cli") == core
    # integration libraries: 0.(minor+16).patch for dagster 1.minor.patch
    major, minor, patch = core.split(".")
    assert version("dagster-postgres") == f"0.{int(minor) + 16}.{patch}"


def test_dg_check_and_list_defs(tmp_path):
    env = dg_env(tmp_path)
    res = subprocess.run([str(BIN / "dg"), "check", "defs"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "All definitions loaded successfully." in res.stdout + res.stderr
    assert "does not match" not in res.stdout + res.stderr

    res = subprocess.run([str(BIN / "dg"), "list", "defs", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for name in ("kernel_stage", "build_history", "guest_source", "build_target", "nightly_build",
                 "source_change_sensor"):
        assert name in out, name

    dg_name = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]["code_location_name"]
    ws = yaml.safe_load((REPO / "workspace.yaml").read_text())
    assert [e["python_module"]["location_name"] for e in ws["load_from"]] == [dg_name]
