"""The history frame on synthetic materializations (the benchmark's, on a smaller set).

benchmarks/history.py times 5,000 of them; here a few hundred check that every
row and every joined value comes out right, also when read in small pages, and
that lineage pointers win over "the latest upstream before".
"""

from __future__ import annotations

import io
import json

import dagster as dg
import pandas as pd
import pytest

from benchmarks.history import report_synthetic, synthetic_builds
from fruix_dagster.defs.history import load_history
from fruix_dagster.history.frame import history_frame
from fruix_dagster.history.render import to_csv, to_json, to_table

N = 240        # artifact materializations: 60 builds over two targets


@pytest.fixture(scope="module")
def synthetic():
    instance = dg.DagsterInstance.ephemeral()
    report_synthetic(instance, N)
    yield instance, list(synthetic_builds(N))
    instance.dispose()


def test_synthetic_history_rows_and_joins(synthetic):
    instance, events = synthetic
    frame = load_history(instance)
    assert len(frame) == N
    # expected rows from the generator, with the upstream values a build would link
    expected = []
    source: dict[str, dict] = {}
    build: dict[tuple[str, str], dict] = {}
    world: dict[str, dict] = {}
    for asset, target, meta in events:
        if asset == "freebsd_source":
            source[target] = meta
        elif asset in ("world_build", "kernel_build"):
            build[(target, asset)] = meta
        else:
            row = {"asset": asset, "target": target, **meta,
                   "source_store": source[target]["source_store"],
                   "store_hash": source[target]["store_hash"]}
            if asset in ("world_stage", "kernel_stage"):
                row["build_duration_s"] = build[(target, asset.replace("_stage", "_build"))]["duration_s"]
                row["build_fingerprint"] = meta["step_fingerprint"]
            else:
                row["build_fingerprint"] = world[target]["step_fingerprint"]
            if asset == "world_stage":
                world[target] = meta
            expected.append(row)
    assert len(expected) == N
    for exp, (_, row) in zip(expected, frame.iterrows()):
        for key, value in exp.items():
            if key in ("from_world_stage",):
                continue
            got = row[key]
            assert (got == pytest.approx(value)) if isinstance(value, float) else got == value, (key, exp)
        assert row["code_version"] == "1"
        assert row["run_id"] == ""                         # runless reports
    # pages of 7 records give the same frame
    pd.testing.assert_frame_equal(load_history(instance, page_size=7), frame)
    # one target only
    amd = load_history(instance, ["amd64"])
    assert set(amd["target"]) == {"amd64"} and len(amd) == N // 2
    # the renderers cover every row
    assert len(pd.read_csv(io.StringIO(to_csv(frame)))) == N
    assert len(json.loads(to_json(frame))) == N
    assert len(to_table(frame).splitlines()) == N + 2


def test_lineage_pointers_win_over_latest_before():
    """A slice re-carved after a newer world stage exists still belongs to the world it came
    from; a stage's build and source are the ones its run read (input event pointers)."""
    def ev(sid, asset, meta, tags=None):
        return {"asset": asset, "target": "amd64", "run_id": f"run{sid}", "storage_id": sid,
                "timestamp": 1e9 + sid, "metadata": meta, "tags": tags or {}}

    rows = [
        ev(1, "freebsd_source", {"source_store": "/s/old", "store_hash": "old"}),
        ev(2, "world_build", {"duration_s": 100.0}, {"dagster/input_event_pointer/freebsd_source": "1"}),
        ev(3, "world_stage", {"size_bytes": 10, "tree_sha256": "w1", "step_fingerprint": "fp1", "duration_s": 5.0},
           {"dagster/input_event_pointer/world_build": "2"}),
        ev(4, "freebsd_source", {"source_store": "/s/new", "store_hash": "new"}),
        ev(5, "world_build", {"duration_s": 200.0}, {"dagster/input_event_pointer/freebsd_source": "4"}),
        ev(6, "world_stage", {"size_bytes": 11, "tree_sha256": "w2", "step_fingerprint": "fp2", "duration_s": 6.0},
           {"dagster/input_event_pointer/world_build": "5"}),
        # carved from the OLD world stage (pointer 3), after the new one was recorded
        ev(7, "headers_slice", {"size_bytes": 1, "tree_sha256": "h1", "from_world_stage": "w1"},
           {"dagster/input_event_pointer/world_stage": "3"}),
        # a stage whose run read the OLD build (pointer 2) although a newer one exists
        ev(8, "world_stage", {"size_bytes": 10, "tree_sha256": "w1", "step_fingerprint": "fp1", "duration_s": 7.0},
           {"dagster/input_event_pointer/world_build": "2"}),
        # no pointers at all: the latest before, matched by digest for a slice
        ev(9, "bootloader_slice", {"size_bytes": 1, "tree_sha256": "b2", "from_world_stage": "w2"}),
    ]
    f = history_frame(rows).set_index("storage_id")
    assert list(f.index) == [3, 6, 7, 8, 9]
    assert f.loc[3, ["source_store", "build_duration_s"]].tolist() == ["/s/old", 100.0]
    assert f.loc[6, ["source_store", "build_duration_s"]].tolist() == ["/s/new", 200.0]
    assert f.loc[7, ["source_store", "build_fingerprint"]].tolist() == ["/s/old", "fp1"]
    assert f.loc[8, ["source_store", "build_duration_s"]].tolist() == ["/s/old", 100.0]
    assert f.loc[9, ["source_store", "build_fingerprint"]].tolist() == ["/s/new", "fp2"]
