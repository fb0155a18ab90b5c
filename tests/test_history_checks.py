"""The history checks: size_regression on crafted sizes, reproducible on a timestamped
sample tree, and rebuild-check naming the differing paths.

size_regression runs through Dagster (the check alone, against runless
materializations of crafted sizes) and as plain Python; reproducible and
rebuild-check build the sample tree for real with ``SAMPLE_TIMESTAMP=yes``,
which embeds the build time in the kernel and in usr/bin/hello.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from fruix_dagster.history.checks import reproducible, size_regression
from fruix_dagster.history.frame import history_frame
from tests.conftest import LocalBuild, make_local_build
from tests.independent import tree_facts

STAMPED = {"make_vars": {"SAMPLE_TIMESTAMP": "yes"}}


def run_check(lb: LocalBuild, asset: str, check: str, target: str = "amd64"):
    """Execute one check alone for one target; return its evaluation."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    job = dg.define_asset_job("only_this_check", selection=dg.AssetSelection.checks(key))
    defs = dg.Definitions.merge(lb.defs(), dg.Definitions(jobs=[job]))
    result = defs.resolve_job_def("only_this_check").execute_in_process(
        instance=lb.instance, tags={"dagster/partition": target})
    assert result.success
    (ev,) = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return ev


def report_sizes(instance: dg.DagsterInstance, asset: str, target: str, sizes: list[int]) -> None:
    for size in sizes:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset, partition=target, metadata={"size_bytes": size, "tree_sha256": f"{size:064x}"}))


CASES = {"up15": (1_150_000, True), "up5": (1_050_000, False), "down15": (850_000, True),
         "down5": (949_000, False)}


def test_size_regression_fires_on_15_percent_not_on_5(tmp_path):
    targets = [{"name": name, "guest": "local"} for name in CASES]
    lb = make_local_build(tmp_path, targets=targets)
    for target, (last, _) in CASES.items():
        # older history that must not count (only the previous 5 do)
        report_sizes(lb.instance, "world_stage", target, [5_000_000, 5_000_000])
        report_sizes(lb.instance, "world_stage", target,
                     [1_000_000, 1_010_000, 990_000, 1_000_000, 1_005_000, last])
    for target, (last, fires) in CASES.items():
        ev = run_check(lb, "world_stage", "size_regression", target)
        assert ev.passed is (not fires), target
        assert ev.severity == dg.AssetCheckSeverity.WARN
        meta = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
        assert meta["median_size_bytes"] == 1_000_000
        assert meta["compared_materializations"] == 5
        assert meta["change_pct"] == pytest.approx((last - 1_000_000) / 1e4)
        assert meta["threshold_pct"] == 10.0
        assert f"{(last - 1_000_000) / 1e4:+.1f}%" in ev.description
        # the check is about the latest materialization of its own target
        latest = lb.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("world_stage"), asset_partitions=[target]), limit=1)
        assert ev.target_materialization_data.storage_id == latest.records[0].storage_id
    # the threshold comes from the settings: at 20 %, +15 % passes
    lb.rewrite(targets=targets, extra="[history]\nsize_change_pct = 20\n")
    ev = run_check(lb, "world_stage", "size_regression", "up15")
    assert ev.passed
    assert ev.metadata["threshold_pct"].value == 20.0


def rows(sizes: list[int], asset="headers_slice", target="amd64") -> list[dict]:
    return [{"asset": asset, "target": target, "run_id": f"r{i}", "storage_id": i, "timestamp": 1e9 + i,
             "metadata": {"size_bytes": s}, "tags": {}} for i, s in enumerate(sizes)]


def test_size_regression_plain():
    frame = history_frame(rows([100, 100, 100, 100, 100, 116]))
    out = size_regression(frame, "headers_slice", "amd64", pct=10)
    assert not out.passed and out.metadata["change_pct"] == pytest.approx(16.0)
    # an earlier materialization can be checked too (by storage id): 100 against [100]*4
    assert size_regression(frame, "headers_slice", "amd64", pct=10, storage_id=4).passed
    # the first materialization and an empty history pass
    assert size_regression(history_frame(rows([7])), "headers_slice", "amd64", pct=10).passed
    assert size_regression(frame, "world_stage", "amd64", pct=10).passed
    # exactly at the threshold passes; just above fires
    assert size_regression(history_frame(rows([1000] * 3 + [1100])), "headers_slice", "amd64", pct=10).passed
    assert not size_regression(history_frame(rows([1000] * 3 + [1101])), "headers_slice", "amd64", pct=10).passed
    # the median, not the mean: one outlier among the previous five does not move it
    assert size_regression(history_frame(rows([100, 100, 900, 100, 100, 104])), "headers_slice", "amd64",
                           pct=10).passed


def test_reproducible_plain_needs_same_fingerprint_and_code_version():
    def row(i, fp, digest, code="1"):
        return {"asset": "world_stage", "target": "amd64", "run_id": f"r{i}", "storage_id": i,
                "timestamp": 1e9 + i, "tags": {"dagster/code_version": code},
                "metadata": {"size_bytes": 1, "tree_sha256": digest, "step_fingerprint": fp,
                             "path": f"/nonexistent/{digest}-world_stage-amd64/tree"}}

    same_fp_other_code = history_frame([row(1, "f", "a"), row(2, "f", "b", code="2")])
    assert reproducible(same_fp_other_code, "world_stage", "amd64").passed
    other_fp = history_frame([row(1, "f", "a"), row(2, "g", "b")])
    assert reproducible(other_fp, "world_stage", "amd64").passed
    same = history_frame([row(1, "f", "a"), row(2, "f", "a")])
    out = reproducible(same, "world_stage", "amd64")
    assert out.passed and "identical to 1 earlier" in out.description
    differs = history_frame([row(1, "f", "a"), row(2, "f", "b")])
    out = reproducible(differs, "world_stage", "amd64")
    assert not out.passed
    assert out.metadata["earlier_run_id"] == "r1"
    assert "no longer in the store" in out.metadata["manifests"]     # paths unknown, said so


@pytest.fixture(scope="module")
def stamped(tmp_path_factory) -> tuple[LocalBuild, dg.ExecuteInProcessResult, dg.ExecuteInProcessResult]:
    lb = make_local_build(tmp_path_factory.mktemp("stamped"), build=STAMPED)
    first = lb.run()
    assert first.success
    second = lb.run(config={"force": True})
    assert second.success                      # WARN checks never fail the run
    return lb, first, second


def evaluations(result: dg.ExecuteInProcessResult, check: str) -> dict:
    return {e.event_specific_data.asset_key.to_user_string(): e.event_specific_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == check}


def test_reproducible_fires_when_the_build_embeds_its_time(stamped):
    lb, first, second = stamped
    assert all(ev.passed for ev in evaluations(first, "reproducible").values())
    evs = evaluations(second, "reproducible")
    assert set(evs) == {"world_stage", "kernel_stage", "headers_slice", "bootloader_slice"}
    for asset, expected in (("world_stage", ["usr/bin/hello"]), ("kernel_stage", ["boot/kernel/kernel"])):
        ev = evs[asset]
        assert not ev.passed, asset
        assert ev.severity == dg.AssetCheckSeverity.WARN
        meta = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
        assert meta["earlier_run_id"] == first.run_id
        assert meta["differing_path_count"] == len(expected)
        assert expected[0] in meta["differing_paths"]
        assert "NOT reproducible" in ev.description and expected[0] in ev.description
        # independently: the two stored trees differ in exactly those files
        old = Path(meta["earlier_tree_sha256"])
        new_path = lb.instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0] \
            .asset_materialization.metadata["path"].value
        old_path = Path(new_path).parent.parent / f"{old}-{asset}-amd64" / "tree"
        a, b = tree_facts(old_path)["sha256"], tree_facts(Path(new_path))["sha256"]
        assert sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p)) == expected
    assert "boot/kernel/kernel" in {k.strip() for k in
                                    evs["kernel_stage"].metadata["differing_key_files"].value.split(",")}
    # the slices hold neither file: carved identically from both worlds
    assert evs["headers_slice"].passed and evs["bootloader_slice"].passed
    # size did not move: no size warning
    assert all(ev.passed for ev in evaluations(second, "size_regression").values())


def test_rebuild_check_lists_the_differing_paths(stamped, monkeypatch, capsys):
    from fruix_dagster import cli

    lb, _, _ = stamped
    monkeypatch.setenv("DAGSTER_HOME", lb.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    rc = cli.main(["rebuild-check", "--log-level", "WARNING"])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    assert lines[-1] == "rebuild_check=differs"
    listed: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith(("world_stage:", "kernel_stage:", "headers_slice:", "bootloader_slice:")):
            current = line.split(":")[0]
            listed[current] = []
        elif line.startswith("  ") and current:
            listed[current].append(line.strip().split(":")[0])
    assert listed == {"world_stage": ["usr/bin/hello"], "kernel_stage": ["boot/kernel/kernel"],
                      "headers_slice": [], "bootloader_slice": []}
    assert any(line.startswith("headers_slice: identical") for line in lines)
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    a = tree_facts(Path(values["kernel_stage_a"]))["sha256"]
    b = tree_facts(Path(values["kernel_stage_b"]))["sha256"]
    assert [p for p in a if a[p] != b.get(p)] == ["boot/kernel/kernel"]
    # the job's output carries the same verdict
    run = lb.instance.get_runs(filters=dg.RunsFilter(job_name="rebuild_check"))[0]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    outputs = [e for e in lb.instance.all_logs(run.run_id) if e.dagster_event
               and e.dagster_event.event_type_value == "STEP_OUTPUT"]
    meta = outputs[0].dagster_event.event_specific_data.metadata
    assert meta["identical"].value is False
    assert meta["kernel_stage_identical"].value is False and meta["headers_slice_identical"].value is True


def test_history_package_does_not_import_dagster():
    import subprocess
    import sys

    code = ("import sys, fruix_dagster.history, fruix_dagster.history.publish, "
            "fruix_dagster.history.render, fruix_dagster.history.compare, fruix_dagster.history.diff, "
            "fruix_dagster.graph, fruix_dagster.build.plan, fruix_dagster.build.rebuild_check, "
            "fruix_dagster.nightly, fruix_dagster.report; "
            "assert 'dagster' not in sys.modules, sorted(m for m in sys.modules if 'dagster' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_frame_of_empty_history_has_the_columns():
    frame = history_frame([], key_files=["boot/kernel/kernel"])
    assert frame.empty and "sha256:boot/kernel/kernel" in frame.columns and "build_fingerprint" in frame.columns
    assert isinstance(frame, pd.DataFrame)
