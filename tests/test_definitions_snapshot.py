"""The whole Dagster definitions, compared with a committed snapshot.

``fruix_dagster.definitions.defs`` (loaded as ``dagster dev`` loads it, with
the embedded default settings: no ``FRUIX_CONFIG``) is reduced to its shape —
asset keys with their deps, group, code version and checks; the asset checks;
the jobs and what they select; the schedules; the sensors; the resources —
and compared with ``tests/snapshots/definitions.json``.  Any difference fails
and is printed as a unified diff.

When a change to the definitions is intended, regenerate the snapshot and
commit it with the change (the diff in review is the record of what changed)::

    .venv/bin/python -m tests.test_definitions_snapshot --update
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = REPO / "tests" / "snapshots" / "definitions.json"


def describe(defs: Any) -> dict[str, Any]:
    """The shape of a Definitions object, as plain sorted JSON data."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "group": node.group_name,
            "code_version": node.code_version,
            "partitions": sorted(node.partitions_def.get_partition_keys()) if node.partitions_def else None,
            "checks": sorted(k.name for k in node.check_keys),
        }
    checks = {}
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(key)
        checks[f"{key.asset_key.to_user_string()}:{key.name}"] = {"blocking": spec.blocking}
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue  # Dagster's implicit asset job
        selected = job.asset_layer.selected_asset_keys
        jobs[job.name] = {
            "assets": sorted(k.to_user_string() for k in selected),
            "ops": [] if selected else sorted(job.graph.node_dict),
            "partitioned": job.partitions_def is not None,
        }
    schedules = {
        s.name: {"cron": s.cron_schedule, "timezone": s.execution_timezone, "job": s.job_name,
                 "default_status": s.default_status.value}
        for s in sorted(defs.schedules or [], key=lambda s: s.name)
    }
    sensors = {}
    for s in sorted(defs.sensors or [], key=lambda s: s.name):
        sensors[s.name] = {"type": s.sensor_type.value, "jobs": sorted(t.job_name for t in s.targets),
                           "minimum_interval_seconds": s.minimum_interval_seconds,
                           "default_status": s.default_status.value}
    return {"assets": assets, "asset_checks": checks, "jobs": jobs, "schedules": schedules,
            "sensors": sensors, "resources": sorted(defs.resources or {})}


def current() -> str:
    """The snapshot text of the definitions as a fresh process loads them (embedded default)."""
    env = {k: v for k, v in os.environ.items() if k != "FRUIX_CONFIG"}
    code = ("import json, sys; from fruix_dagster.definitions import defs; "
            "from tests.test_definitions_snapshot import describe; "
            "sys.stdout.write(json.dumps(describe(defs), indent=2, sort_keys=True) + '\\n')")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def snapshot_diff(now: str) -> str:
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    return "".join(difflib.unified_diff(expected.splitlines(True), now.splitlines(True),
                                        str(SNAPSHOT.relative_to(REPO)), "fruix_dagster.definitions.defs"))


def test_definitions_match_the_committed_snapshot():
    diff = snapshot_diff(current())
    assert not diff, (
        "the Dagster definitions changed (asset keys, deps, checks, jobs, schedules, sensors or "
        "resources). If that is intended, run `.venv/bin/python -m tests.test_definitions_snapshot "
        f"--update` and commit {SNAPSHOT.relative_to(REPO)} with the change:\n{diff}")


def test_a_changed_definition_shows_in_the_diff(tmp_path):
    """Definitions from other settings (a second target, another cron) differ exactly there."""
    from fruix_dagster.definitions import make_definitions
    from fruix_dagster.settings import load_settings, sample_src_dir
    from tests.conftest import write_settings

    path = write_settings(tmp_path / "fruix.toml", source={"from": "path", "path": str(sample_src_dir())},
                          guests=[{"name": "local", "kind": "local"}],
                          targets=[{"name": "amd64", "guest": "local"},
                                   {"name": "arm64", "guest": "local", "target": "arm64",
                                    "target_arch": "aarch64"}],
                          extra='[schedule]\ncron = "0 3 * * *"\n')
    now = json.dumps(describe(make_definitions(load_settings(path))), indent=2, sort_keys=True) + "\n"
    changed = [line[0] + line[1:].strip() for line in snapshot_diff(now).splitlines()
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    # the nine partitioned assets (guest_source included) gain a partition; the schedule's cron changes; nothing else
    assert sorted(set(changed)) == ['+"amd64",', '+"arm64"', '+"cron": "0 3 * * *",', '-"amd64"',
                                    '-"cron": "0 2 * * *",']
    assert changed.count('+"arm64"') == 9


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.test_definitions_snapshot --update")
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(current())
    print(f"wrote {SNAPSHOT.relative_to(REPO)}")
