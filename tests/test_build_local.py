"""End to end on the embedded-default shape: a local guest building the sample tree."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from fruix_dagster.defs.records import latest
from fruix_dagster.store import ArtifactStore
from tests.conftest import LocalBuild, make_local_build
from tests.independent import tree_facts

ASSETS = ["freebsd_source", "world_build", "kernel_build", "world_stage", "kernel_stage",
          "headers_slice", "bootloader_slice"]
KEY_FILES = {"kernel_stage": ["boot/kernel/kernel"],
             "world_stage": ["boot/loader.efi", "usr/include/sys/param.h"],
             "headers_slice": ["usr/include/sys/param.h"],
             "bootloader_slice": ["boot/loader.efi"]}


def step_records(root: Path) -> dict[str, dict]:
    """Every step attempt on the guest: name → {dirs, started files, current}."""
    steps = root / "steps"
    out: dict[str, dict] = {}
    for d in sorted(steps.iterdir()):
        if d.name.endswith(".current"):
            continue
        name = d.name.rsplit("-", 1)[0]
        attempts = [a for a in d.glob("attempt-*")]
        rec = out.setdefault(name, {"dirs": [], "runs": 0})
        rec["dirs"].append(d.name)
        rec["runs"] += len(attempts) + (1 if (d / "started").exists() else 0)
        rec.setdefault("mtimes", {})[d.name] = (d / "log").stat().st_mtime_ns
    return out


def mat_count(instance: dg.DagsterInstance, asset: str) -> int:
    return len(instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> LocalBuild:
    lb = make_local_build(tmp_path_factory.mktemp("e2e"))
    result = lb.run()
    assert result.success
    return lb


def test_full_graph_metadata_equals_independent_computation(built: LocalBuild):
    inst = built.instance
    root = built.build_root
    src = latest(inst, "freebsd_source", "amd64").metadata
    assert src["source_root"] == str(built.tmp / "src")
    assert src["store_hash"] and len(src["store_hash"]) == 64
    store = built.tmp / "store"
    guest = {"world_stage": root / "stage/amd64/world", "kernel_stage": root / "stage/amd64/kernel"}
    for asset in KEY_FILES:
        rec = latest(inst, asset, "amd64")
        assert rec is not None, asset
        meta = rec.metadata
        path = Path(meta["path"])
        assert path.parent.parent == store and path.name == "tree"
        assert path.parent.name == f"{meta['tree_sha256']}-{asset}-amd64"
        facts = tree_facts(path)
        if asset in guest:  # the stored tree equals the staged tree on the guest
            # GNU tar (the local guest's tar) carries no file flags: compare flags as stored
            assert tree_facts(guest[asset], flags_from=path) == facts
            assert meta["guest_path"] == str(guest[asset])
        assert meta["size_bytes"] == facts["size_bytes"], asset
        assert meta["file_count"] == facts["file_count"], asset
        assert meta["tree_sha256"] == facts["tree_sha256"], asset
        assert rec.data_version == facts["tree_sha256"]
        for key in KEY_FILES[asset]:
            assert meta[f"sha256:{key}"] == facts["sha256"][key], (asset, key)
    # the headers slice is exactly usr/include/** and usr/share/mk/** of the world stage
    world = tree_facts(root / "stage/amd64/world")["sha256"]
    headers = tree_facts(Path(latest(inst, "headers_slice", "amd64").metadata["path"]))["sha256"]
    expected = {p: h for p, h in world.items() if p.startswith(("usr/include/", "usr/share/mk/"))}
    assert headers == expected
    assert len([p for p in headers if p.startswith("usr/include/")]) >= 100
    for asset in ("world_build", "kernel_build"):
        meta = latest(inst, asset, "amd64").metadata
        assert meta["build_jobs"] == 2
        assert meta["duration_s"] >= 0
        assert Path(meta["log_path"]).is_file()
        assert meta["make_command"].split()[-1] in ("buildworld", "buildkernel")
        assert "-j2" in meta["make_command"]
    world_build = latest(inst, "world_build", "amd64").metadata
    assert "stage 4.2" in world_build["stage_seconds"]


def test_report_ends_ok(built: LocalBuild, monkeypatch, capsys):
    from fruix_dagster import cli

    monkeypatch.setenv("DAGSTER_HOME", built.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(built.settings_path))
    assert cli.main(["report"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    keys = [line.split("=", 1)[0] for line in out]
    assert keys == ["build_jobs", "source_store", "source_root", "build_root", "world_stage",
                    "kernel_stage", "headers_stage", "bootloader_stage", "build_root_size",
                    "world_stage_size", "kernel_stage_size", "headers_stage_size",
                    "bootloader_stage_size", "sha_kernel", "sha_loader", "sha_param",
                    "host_initiated_native_build"]
    values = dict(line.split("=", 1) for line in out)
    root = built.build_root
    assert values["host_initiated_native_build"] == "ok"
    assert values["sha_kernel"] == tree_facts(root / "stage/amd64/kernel")["sha256"]["boot/kernel/kernel"]
    assert values["sha_param"] == tree_facts(root / "stage/amd64/world")["sha256"]["usr/include/sys/param.h"]
    assert values["headers_stage"].startswith(str(built.tmp / "store"))
    assert values["build_jobs"] == "2"


def test_reselecting_one_slice_runs_no_make_and_leaves_upstream(built: LocalBuild):
    inst = built.instance
    before_steps = step_records(built.build_root)
    before = {a: mat_count(inst, a) for a in ASSETS}
    result = built.run(select=["bootloader_slice"])
    assert result.success
    assert step_records(built.build_root) == before_steps
    after = {a: mat_count(inst, a) for a in ASSETS}
    assert after == {**before, "bootloader_slice": before["bootloader_slice"] + 1}


def test_rematerializing_builds_reuses_finished_steps(built: LocalBuild):
    before_steps = step_records(built.build_root)
    result = built.run(select=["world_build", "kernel_build"])
    assert result.success
    assert step_records(built.build_root) == before_steps
    meta = latest(built.instance, "world_build", "amd64").metadata
    assert meta["step_action"] == "reused"
    # from the run that built it: its object tree had no .clean_build_epoch yet, so
    # depend-cleanup.sh cleaned it (tests/test_clean_epoch.py)
    assert meta["clean_build"] == "epoch"


def test_failing_kernel_stage(tmp_path):
    lb = make_local_build(tmp_path, build={"make_vars": {"SAMPLE_FAIL": "buildkernel"}})
    result = lb.run()
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["kernel_build"]
    message = str(failures[0].step_failure_data.error.to_string())
    assert "buildkernel failed with exit status" in message
    assert "*** [init_main.o] Error code 1" in message
    assert "last 40 lines" in message and "log: " in message
    # the triage, first in the message and in the failure event's metadata (the UI shows it)
    assert "init_main.c:1:1: error: unknown type name" in message.split("\n")[0]
    meta = {k: getattr(v, "value", v) for k, v in
            failures[0].step_failure_data.user_failure_data.metadata.items()}
    assert meta["first_errors"].splitlines()[0].endswith(
        "sys/kern/init_main.c:1:1: error: unknown type name 'sample_fail_t' (SAMPLE_FAIL=buildkernel)")
    assert meta["stopped_in"].endswith("/sys/GENERIC")
    assert meta["stage"] == ">>> stage 3.1: building everything"
    assert meta["log_path"].endswith("/log") and meta["step"] == "buildkernel"
    inst = lb.instance
    for asset in ("freebsd_source", "world_build", "world_stage", "headers_slice", "bootloader_slice"):
        assert latest(inst, asset, "amd64") is not None, asset
    for asset in ("kernel_build", "kernel_stage"):
        assert latest(inst, asset, "amd64") is None, asset


def test_kernel_stage_refuses_stale_kernel_build(tmp_path):
    lb = make_local_build(tmp_path)
    assert lb.run().success
    lb.rewrite(targets=[{"name": "amd64", "guest": "local", "kernconf": "MINIMAL"}])
    result = lb.run(select=["kernel_stage"])
    assert not result.success
    message = [e for e in result.all_events if e.is_step_failure][0].step_failure_data.error.to_string()
    assert "materialize kernel_build" in message


def test_symlinked_stage_escaping_the_build_root_is_refused(tmp_path):
    lb = make_local_build(tmp_path)
    assert lb.run(select=["freebsd_source", "world_build"]).success
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (lb.build_root / "stage/amd64").mkdir(parents=True)
    (lb.build_root / "stage/amd64/world").symlink_to(outside)
    result = lb.run(select=["world_stage"], config={"force": True})
    assert not result.success
    message = [e for e in result.all_events if e.is_step_failure][0].step_failure_data.error.to_string()
    assert "refused to delete" in message and "symlink" in message
    assert (outside / "keep.txt").read_text() == "keep"


def test_store_gc_cli_keeps_what_the_latest_materializations_reference(tmp_path, monkeypatch, capsys):
    from fruix_dagster import cli

    lb = make_local_build(tmp_path, store={"root": str(tmp_path / "store"), "keep": 1})
    assert lb.run().success
    # a second, different kernel: the old kernel entry is no longer referenced nor among the newest 1
    lb.rewrite(store={"root": str(tmp_path / "store"), "keep": 1},
               targets=[{"name": "amd64", "guest": "local", "kernconf": "MINIMAL"}])
    assert lb.run(select=["kernel_build", "kernel_stage"]).success
    kernels = sorted((tmp_path / "store").glob("*-kernel_stage-amd64"))
    assert len(kernels) == 1, "automatic gc after the run keeps only the newest (referenced) kernel"
    monkeypatch.setenv("DAGSTER_HOME", lb.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    assert cli.main(["store", "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 0 entries" in out
    referenced = {latest(lb.instance, a, "amd64").metadata["path"]
                  for a in ("world_stage", "kernel_stage", "headers_slice", "bootloader_slice")}
    assert all(Path(p).is_dir() for p in referenced)


def test_export_writes_release_sets_with_manifest_and_checksums(built: LocalBuild, tmp_path, monkeypatch):
    import hashlib
    import tarfile

    from fruix_dagster import cli

    monkeypatch.setenv("DAGSTER_HOME", built.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(built.settings_path))
    out = tmp_path / "release"
    assert cli.main(["export", "--target", "amd64", str(out)]) == 0
    manifest = [line.split("\t") for line in (out / "MANIFEST").read_text().splitlines()]
    assert [m[0] for m in manifest] == ["base.txz", "kernel.txz"]
    for name, digest, count, component, description, default in manifest:
        data = (out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        assert f"SHA256 ({name}) = {digest}" in (out / "CHECKSUM.SHA256").read_text()
        with tarfile.open(out / name) as tf:
            members = tf.getmembers()
        assert len(members) == int(count)
        # owners, groups, ids and full modes are the manifest's (as the guest's install left them)
        asset = {"base.txz": "world_stage", "kernel.txz": "kernel_stage"}[name]
        stored = ArtifactStore(built.settings.store.root).open(latest(built.instance, asset, "amd64").metadata["path"])
        for m in members:
            if m.name == ".":
                continue
            e = stored.manifest.get(m.name[2:].encode())
            assert (m.uname, m.gname, m.uid, m.gid) == (e.uname, e.gname, e.uid, e.gid), m.name
            if not m.issym():
                assert m.mode == e.mode, m.name
    with tarfile.open(out / "base.txz") as tf:
        shutdown = tf.getmember("./sbin/shutdown")
    assert (shutdown.uname, shutdown.gname, shutdown.mode) == ("root", "operator", 0o4554)
    with tarfile.open(out / "kernel.txz") as tf:
        kernel = tf.extractfile("./boot/kernel/kernel").read()
    assert hashlib.sha256(kernel).hexdigest() == latest(built.instance, "kernel_stage", "amd64").metadata[
        "sha256:boot/kernel/kernel"]
    first = (out / "base.txz").read_bytes()
    assert cli.main(["export", "--target", "amd64", str(out)]) == 0
    assert (out / "base.txz").read_bytes() == first  # deterministic
