"""Loading the definitions as ``dagster dev`` does, with a bad ``FRUIX_CONFIG`` (issue 11 item 7).

``dagster definitions validate -m fruix_dagster.definitions`` starts a code
server for the module, like ``dagster dev``, and prints the code location's
load error as dagster shows it: the one settings message must be there, on one
line, and not buried under the frames of the settings package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

DAGSTER = str(Path(sys.executable).parent / "dagster")
DEFINITIONS = str(Path(REPO) / "fruix_dagster" / "definitions.py")


def validate(tmp_path: Path, fruix_config: str | None) -> subprocess.CompletedProcess:
    home = tmp_path / "dagster-home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "FRUIX_CONFIG"}
    env["DAGSTER_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    if fruix_config is not None:
        env["FRUIX_CONFIG"] = fruix_config
    return subprocess.run([DAGSTER, "definitions", "validate", "-m", "fruix_dagster.definitions"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_bad_fruix_config_shows_the_one_message_when_dagster_loads_the_definitions(tmp_path):
    bad = tmp_path / "fruix.toml"
    bad.write_text('[build]\njobs = 0\n[[guest]]\nname = "a"\nkind = "local"\n[[target]]\nname = "amd64"\nguest = "a"\n')
    res = validate(tmp_path, str(bad))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    message = f"{bad}: build.jobs: must be an integer ≥ 1, got 0"
    shown = [line for line in out.splitlines() if message in line]
    assert shown == [f"fruix_dagster.errors.ConfigError: {message}"], out
    # The only frame of ours is the line of definitions.py that reports it.
    ours = [f for f in re.findall(r'File "([^"]+)"', out) if "/fruix_dagster/" in f]
    assert ours == [DEFINITIONS], out
    assert "pydantic" not in out and "ValidationError" not in out, out


def test_unreadable_fruix_config_names_the_file_and_what_to_do(tmp_path):
    missing = tmp_path / "nope.toml"
    res = validate(tmp_path, str(missing))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert (f"fruix_dagster.errors.ConfigError: {missing}: cannot read the settings file (No such file or directory; "
            f"named by FRUIX_CONFIG={str(missing)!r}); set FRUIX_CONFIG to a readable TOML file or unset it for "
            "the embedded default") in out.splitlines(), out


def test_embedded_default_validates(tmp_path):
    # The same command on good settings succeeds: the failures above are the settings file's.
    res = validate(tmp_path, None)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Validation successful for code location fruix_dagster.definitions" in res.stdout + res.stderr
