"""Build history from real builds: two targets, several runs, on the local guest.

The frame is compared with the metadata read back independently (plain
``fetch_materializations``, one big page per asset); the CLI formats are
parsed back; the build_history asset's files are opened; the history checks
ran in every build run; and rebuild-check finds the default sample tree
reproducible.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from fruix_dagster.defs.assets import CODE_VERSIONS
from fruix_dagster.defs.view import code_version
from fruix_dagster.defs.history import HISTORY_ASSET, HISTORY_JOB, load_history
from fruix_dagster.history.publish import chart_series
from tests.conftest import LocalBuild, make_local_build
from tests.independent import tree_facts

ARTIFACTS = ["world_stage", "kernel_stage", "headers_slice", "bootloader_slice"]
TARGETS = [{"name": "amd64", "guest": "local"},
           {"name": "minimal", "guest": "local", "kernconf": "MINIMAL"}]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[LocalBuild, dict]:
    """amd64, then minimal, then amd64 again with --force: three runs, two targets."""
    lb = make_local_build(tmp_path_factory.mktemp("history"), targets=TARGETS)
    results = {}
    for name, target, config in (("amd64-1", "amd64", None), ("minimal", "minimal", None),
                                 ("amd64-2", "amd64", {"force": True})):
        result = lb.run(target=target, config=config)
        assert result.success, name
        results[name] = result
    return lb, results


def recorded(instance: dg.DagsterInstance) -> list[dict]:
    """Every artifact materialization, read back without fruix_dagster's history code."""
    out = []
    for asset in ARTIFACTS:
        for rec in instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records:
            mat = rec.asset_materialization
            out.append({"asset": asset, "target": mat.partition, "run_id": rec.run_id,
                        "storage_id": rec.storage_id, "timestamp": rec.timestamp,
                        "tags": dict(mat.tags or {}),
                        "metadata": {k: getattr(v, "value", v) for k, v in mat.metadata.items()}})
    return sorted(out, key=lambda r: r["storage_id"])


def run_metadata(instance: dg.DagsterInstance, asset: str, run_id: str) -> dict:
    recs = [r for r in instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records
            if r.run_id == run_id]
    assert len(recs) == 1, (asset, run_id)
    return {k: getattr(v, "value", v) for k, v in recs[0].asset_materialization.metadata.items()}


def test_frame_rows_equal_recorded_metadata(built):
    lb, results = built
    inst = lb.instance
    frame = load_history(inst, key_files=lb.settings.slices.key_files)
    expected = recorded(inst)
    assert len(expected) == 12                         # 3 runs × 4 artifacts
    assert len(frame) == len(expected)
    assert sorted(frame["target"].unique()) == ["amd64", "minimal"]
    assert set(frame["run_id"]) == {r.run_id for r in results.values()}
    src = str(lb.tmp / "src")
    for exp, (_, row) in zip(expected, frame.iterrows()):
        meta = exp["metadata"]
        where = (exp["asset"], exp["target"], exp["run_id"])
        assert (row["asset"], row["target"], row["run_id"]) == where
        assert row["storage_id"] == exp["storage_id"]
        assert row["timestamp"] == exp["timestamp"]
        assert row["time"] == pd.Timestamp(exp["timestamp"], unit="s", tz="UTC")
        for key in ("size_bytes", "file_count", "tree_sha256", "path"):
            assert row[key] == meta[key], (where, key)
        key_cols = [c for c in frame.columns if c.startswith("sha256:")]
        assert key_cols == [f"sha256:{k}" for k in lb.settings.slices.key_files]
        for col in key_cols:
            if col in meta:
                assert row[col] == meta[col], (where, col)
            else:
                assert pd.isna(row[col]), (where, col)
        assert row["code_version"] == code_version(lb.settings, exp["asset"], CODE_VERSIONS[exp["asset"]]) \
            == exp["tags"]["dagster/code_version"]
        # lineage: the same source for every row; a stage's build time from its run's build
        assert row["source_store"] == src
        assert row["store_hash"] == run_metadata(inst, "freebsd_source", exp["run_id"])["store_hash"]
        if exp["asset"] in ("world_stage", "kernel_stage"):
            build = run_metadata(inst, exp["asset"].replace("_stage", "_build"), exp["run_id"])
            assert row["duration_s"] == meta["duration_s"]
            assert row["build_duration_s"] == build["duration_s"]
            assert row["step_fingerprint"] == row["build_fingerprint"] == meta["step_fingerprint"]
        else:
            world = run_metadata(inst, "world_stage", exp["run_id"])
            assert world["tree_sha256"] == meta["from_world_stage"]
            assert row["build_fingerprint"] == world["step_fingerprint"]
            assert row["globs"] == meta["globs"]
            assert math.isnan(row["duration_s"]) and pd.isna(row["step_fingerprint"])
    # the sizes are the stored trees' (independent walk of the newest amd64 kernel)
    newest = frame[(frame["asset"] == "kernel_stage") & (frame["target"] == "amd64")].iloc[-1]
    assert tree_facts(Path(newest["path"]))["size_bytes"] == newest["size_bytes"]
    # filters: one target, one asset; pages of 2 records give the same frame
    only = load_history(inst, ["minimal"], artifacts=["kernel_stage"], key_files=lb.settings.slices.key_files)
    assert list(only["run_id"]) == [results["minimal"].run_id]
    paged = load_history(inst, key_files=lb.settings.slices.key_files, page_size=2)
    pd.testing.assert_frame_equal(paged, frame)


def test_history_checks_ran_in_every_build_and_passed(built):
    _lb, results = built
    for name, result in results.items():
        evals = {(e.event_specific_data.asset_key.to_user_string(), e.event_specific_data.check_name):
                 e.event_specific_data for e in result.all_events
                 if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        for asset in ARTIFACTS:
            for check in ("size_regression", "reproducible"):
                ev = evals[(asset, check)]
                assert ev.passed, (name, asset, check, ev.description)
                assert ev.severity == dg.AssetCheckSeverity.WARN
    # the forced rebuild of amd64 is the same source and settings as the first: compared, identical
    ev = [e.event_specific_data for e in results["amd64-2"].all_events
          if e.event_type_value == "ASSET_CHECK_EVALUATION"
          and e.event_specific_data.check_name == "reproducible"
          and e.event_specific_data.asset_key == dg.AssetKey("kernel_stage")][0]
    assert "identical to 1 earlier" in ev.description
    assert ev.metadata["same_build_materializations"].value == 1


def png_size(path: Path | bytes) -> tuple[int, int]:
    data = path if isinstance(path, bytes) else path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def test_build_history_asset_publishes_files_chart_and_table(built):
    lb, results = built
    job = lb.defs().resolve_job_def(HISTORY_JOB)
    assert job.execute_in_process(instance=lb.instance, partition_key="amd64").success
    rec = lb.instance.fetch_materializations(dg.AssetKey(HISTORY_ASSET), limit=1).records[0]
    raw = rec.asset_materialization.metadata
    meta = {k: getattr(v, "value", v) for k, v in raw.items()}
    out = lb.tmp / "store" / "history" / "amd64"
    assert meta["parquet"] == str(out / "history.parquet")
    assert meta["rows"] == 8 == meta["dagster/row_count"]
    frame = load_history(lb.instance, ["amd64"], key_files=lb.settings.slices.key_files)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "history.parquet"), frame)
    csv = pd.read_csv(out / "history.csv")
    assert list(csv["tree_sha256"]) == list(frame["tree_sha256"])
    assert list(csv["size_bytes"]) == list(frame["size_bytes"])
    # a real PNG of a plausible size: the 11 × 7.5 in figure at 100 dpi
    png = Path(meta["chart_path"])
    assert png_size(png) == (1100, 750)
    assert 20_000 < png.stat().st_size < 1_000_000
    # the same chart inline (a Markdown image with a PNG data URI), smaller: 8 × 5 in at 72 dpi
    m = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", meta["chart"])
    assert m, meta["chart"][:100]
    assert png_size(base64.b64decode(m.group(1))) == (576, 360)
    # what the chart plots is the frame: MB and minutes, one series per artifact
    series = chart_series(frame)
    assert set(series["size_mb"]) == set(ARTIFACTS)
    assert set(series["duration_min"]) == {"world_stage", "kernel_stage"}
    for asset in ARTIFACTS:
        rows = frame[frame["asset"] == asset]
        assert list(series["size_mb"][asset]["value"]) == [v / 1e6 for v in rows["size_bytes"]]
        assert list(series["size_mb"][asset]["time"]) == list(rows["time"])
    for asset in ("world_stage", "kernel_stage"):
        rows = frame[frame["asset"] == asset]
        assert list(series["duration_min"][asset]["value"]) == pytest.approx(
            [(b + d) / 60 for b, d in zip(rows["build_duration_s"], rows["duration_s"])])
    # the table: the two amd64 builds, newest first, sizes in MB, with a schema
    table = raw["last_builds"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns][:3] == ["finished", "run", "world_stage_mb"]
    assert [r.data["run"] for r in table.records] == [
        results["amd64-2"].run_id[:8], results["amd64-1"].run_id[:8]]
    world = frame[frame["asset"] == "world_stage"].iloc[-1]
    assert table.records[0].data["world_stage_mb"] == round(world["size_bytes"] / 1e6, 3)


def run_cli(monkeypatch, capsys, lb: LocalBuild, *argv: str) -> tuple[int, str, str]:
    from fruix_dagster import cli

    monkeypatch.setenv("DAGSTER_HOME", lb.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_formats_parse_back_to_the_same_rows(built, monkeypatch, capsys):
    lb, results = built
    expected = recorded(lb.instance)
    rc, out, _ = run_cli(monkeypatch, capsys, lb, "history", "--format", "csv")
    assert rc == 0
    csv = pd.read_csv(io.StringIO(out))
    rc, out, _ = run_cli(monkeypatch, capsys, lb, "history", "--format", "json")
    assert rc == 0
    rows = json.loads(out)
    assert len(csv) == len(rows) == len(expected)
    for exp, c, j in zip(expected, csv.to_dict("records"), rows):
        meta = exp["metadata"]
        for row in (c, j):
            assert (row["asset"], row["target"], row["run_id"], row["storage_id"]) == (
                exp["asset"], exp["target"], exp["run_id"], exp["storage_id"])
            for key in ("size_bytes", "file_count", "tree_sha256", "path"):
                assert row[key] == meta[key]
            when = pd.Timestamp(row["time"]) - pd.Timestamp(exp["timestamp"], unit="s", tz="UTC")
            assert abs(when.total_seconds()) < 1e-6                     # ISO 8601 to the microsecond
            assert row["timestamp"] == pytest.approx(exp["timestamp"], abs=1e-6)
            if "sha256:boot/kernel/kernel" in meta:
                assert row["sha256:boot/kernel/kernel"] == meta["sha256:boot/kernel/kernel"]
        assert j["duration_s"] == meta.get("duration_s")                 # null when not recorded
        assert type(j["size_bytes"]) is int
    # --target/--asset/--last select; the table is for people
    rc, out, _ = run_cli(monkeypatch, capsys, lb, "history", "--target", "amd64", "--asset", "kernel_stage",
                         "--last", "1", "--format", "json")
    assert rc == 0
    (only,) = json.loads(out)
    assert only["run_id"] == results["amd64-2"].run_id and only["asset"] == "kernel_stage"
    rc, out, _ = run_cli(monkeypatch, capsys, lb, "history")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["time", "(UTC)", "target", "asset"]
    assert len(lines) == 2 + 12
    assert any(line.split()[2:4] == ["minimal", "kernel_stage"] for line in lines[2:])
    # Δ size is against the previous materialization even when that one is not shown
    rc, out, _ = run_cli(monkeypatch, capsys, lb, "history", "--target", "amd64", "--asset", "kernel_stage",
                         "--last", "1")
    assert rc == 0
    (line,) = out.splitlines()[2:]
    assert line.split()[4:6] == [f"{only['size_bytes'] / 1e6:.2f}", "+0.0%"]
    rc, out, err = run_cli(monkeypatch, capsys, lb, "history", "--target", "riscv")
    assert rc == 1 and out == ""
    assert err.startswith("fruix-dagster: history: expected materializations of target 'riscv'")
    assert "Traceback" not in err


def test_rebuild_check_default_tree_is_identical(built, monkeypatch, capsys):
    lb, _ = built
    rc, out, _ = run_cli(monkeypatch, capsys, lb, "rebuild-check", "--target", "amd64",
                         "--log-level", "WARNING")
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[-1] == "rebuild_check=identical"
    for asset in ARTIFACTS:
        assert any(line.startswith(f"{asset}: identical") for line in lines), asset
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    # both stages really were built twice and brought to the host: identical trees, independently
    for asset in ("world_stage", "kernel_stage"):
        a, b = Path(values[f"{asset}_a"]), Path(values[f"{asset}_b"])
        assert a != b
        assert tree_facts(a) == tree_facts(b)
    root = lb.build_root
    for side in ("a", "b"):
        assert not (Path(f"{root}-rebuild-{side}") / "obj").exists()     # emptied afterwards
    run = lb.instance.get_runs(filters=dg.RunsFilter(job_name="rebuild_check"))[0]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["fruix/guest"] == "local" and run.tags["fruix/target"] == "amd64"
