"""Artifacts as FreeBSD ships them, over SSH with bsdtar as the guest's tar (issue 14).

A root install on the guest sets owners, setuid/setgid modes and schg (chattr +i);
they reach the manifest, manifest.mtree, tree_sha256 and base.txz; a forced
rebuild of a stage holding schg files works; NO_ROOT staging as an ordinary
user gives the same owners through its METALOG; a connection killed in the
middle of collecting a big stage is retried and publishes exactly one entry.
"""

from __future__ import annotations

import grp
import subprocess
import tarfile
import threading
import time
from pathlib import Path

from fruix_dagster import cli
from fruix_dagster.defs.records import latest
from fruix_dagster.store import ArtifactStore
from tests.conftest import make_ssh_build
from tests.independent import tree_facts

OPERATOR, TTY = grp.getgrnam("operator").gr_gid, grp.getgrnam("tty").gr_gid


def stored(sb, asset: str):
    return ArtifactStore(sb.settings.store.root).open(latest(sb.instance, asset, "amd64").metadata["path"])


def lsattr(path: Path) -> str:
    return subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def test_world_stage_over_ssh_keeps_setuid_groups_and_schg(ssh_guest, tmp_path, monkeypatch):
    sb = make_ssh_build(tmp_path, ssh_guest)
    assert sb.run(select=["freebsd_source", "world_build", "world_stage"]).success
    world = stored(sb, "world_stage")
    m = world.manifest
    shutdown, wall, su = m.get(b"sbin/shutdown"), m.get(b"usr/bin/wall"), m.get(b"usr/bin/su")
    assert (shutdown.uname, shutdown.gname, shutdown.uid, shutdown.gid, shutdown.mode, shutdown.flags) == \
        ("root", "operator", 0, OPERATOR, 0o4554, "")
    assert (wall.gname, wall.gid, wall.mode) == ("tty", TTY, 0o2555)
    assert (su.mode, su.flags) == (0o4555, "schg") and m.get(b"sbin/init").flags == "schg"
    assert m.get(b"usr/lib/libsample.so.1").flags == "schg"
    # the guest really holds the flag, the store's copy never does (it must stay removable)
    assert "i" in lsattr(sb.build_root / "stage/amd64/world/usr/bin/su")
    assert "i" not in lsattr(world.tree / "usr/bin/su")
    # tree_sha256 is the digest of exactly these owners, modes and flags (computed independently)
    facts = tree_facts(world.tree, flags_from=sb.build_root / "stage/amd64/world")
    assert facts["tree_sha256"] == world.digest == latest(sb.instance, "world_stage", "amd64").metadata["tree_sha256"]
    # manifest.mtree in FreeBSD mtree(8) keywords, and Debian's mtree agrees with the store's copy
    mtree = (world.path / "manifest.mtree").read_text()
    assert "./sbin/shutdown type=file uname=root gname=operator mode=4554 " in mtree
    assert any(x.startswith("./usr/bin/su type=file uname=root gname=root mode=4555 ") and x.endswith(" flags=schg")
               for x in mtree.splitlines())
    check = subprocess.run(["mtree", "-e", "-f", str(world.path / "manifest.mtree"), "-p", str(world.tree)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # base.txz as the release's sets: owner, group, mode and flags of every member
    assert sb.run(select=["kernel_build", "kernel_stage"]).success
    monkeypatch.setenv("DAGSTER_HOME", sb.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(sb.settings_path))
    out = tmp_path / "release"
    assert cli.main(["export", "--target", "amd64", str(out)]) == 0
    listing = subprocess.run(["bsdtar", "-tvf", str(out / "base.txz")], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    line = next(x for x in listing if x.endswith(" ./sbin/shutdown"))
    assert line.startswith("-r-sr-xr--") and " root " in line and " operator " in line
    line = next(x for x in listing if x.endswith(" ./usr/bin/wall"))
    assert line.startswith("-r-xr-sr-x") and " tty " in line
    with tarfile.open(out / "base.txz") as tf:
        assert tf.getmember("./usr/bin/su").pax_headers.get("SCHILY.fflags") == "schg"
        assert "SCHILY.fflags" not in tf.getmember("./sbin/shutdown").pax_headers
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(out / "base.txz"), "-C", str(extracted)], check=True)
    try:
        assert "i" in lsattr(extracted / "usr/bin/su")  # bsdtar -p restores the flag, as on FreeBSD
    finally:
        subprocess.run(["chattr", "-R", "-f", "-i", str(extracted)])

    # a forced rebuild of the stage holding schg files removes and re-installs it
    first = world.digest
    assert sb.run(select=["world_stage"], config={"force": True}).success
    assert stored(sb, "world_stage").digest == first
    assert "i" in lsattr(sb.build_root / "stage/amd64/world/usr/bin/su")


def owners(manifest) -> dict:
    return {e.path: (e.kind, e.uname, e.gname, e.uid, e.gid, e.mode, e.flags, e.size, e.sha256, e.link)
            for e in manifest}


def test_no_root_staging_as_an_ordinary_user_gives_the_same_owners(ssh_guest, tmp_path):
    root_build = make_ssh_build(tmp_path / "root", ssh_guest)
    assert root_build.run().success
    as_root = {a: stored(root_build, a) for a in ("world_stage", "kernel_stage")}
    unpriv = make_ssh_build(tmp_path / "nobody", ssh_guest,
                            build={"jobs": 2, "min_free_gib": 0.5, "no_root_user": "nobody"})
    assert unpriv.run(config={"force": True}).success
    stage = unpriv.build_root / "stage/amd64/world"
    assert (stage / "sbin/shutdown").stat().st_uid == 65534  # staged by nobody: nothing chowned
    assert "i" not in lsattr(stage / "usr/bin/su")
    metalog = (unpriv.build_root / "stage/amd64/world.METALOG").read_text()
    assert "./sbin/shutdown type=file uname=root gname=operator mode=04554 " in metalog
    for asset, expected in as_root.items():
        got = stored(unpriv, asset)
        assert owners(got.manifest) == owners(expected.manifest), asset
        assert got.digest == expected.digest, asset
    command = latest(unpriv.instance, "world_stage", "amd64").metadata["make_command"]
    assert "su -m nobody -c" in command and "NO_ROOT=yes" in command


def test_a_connection_killed_mid_collection_is_retried_and_stored_once(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest, build={"jobs": 2, "min_free_gib": 0.5,
                                                    "make_vars": {"SAMPLE_STAGE_MB": "400"}},
                        store={"root": str(tmp_path / "store"), "collect_backoff_seconds": 0.5})
    assert sb.run(select=["freebsd_source", "world_build"]).success
    store_root = tmp_path / "store"
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", sb.run(select=["world_stage"])))
    runner.start()
    killed = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed:
        partial = [p for p in store_root.glob(".tmp-*/tree/usr/share/sample/filler") if p.stat().st_size > 50 << 20]
        if partial:
            killed = ssh_guest.kill_connections()
        time.sleep(0.02)
    runner.join(600)
    assert killed >= 1, "the collection was never caught in the middle"
    result = outcome["result"]
    messages = [e.user_message or "" for e in sb.instance.all_logs(result.run_id)]
    if not result.success:
        failure = result.failure_data_for_node("world_stage")
        raise AssertionError("\n".join(messages[-12:]) + "\n" + (failure.error.to_string() if failure else ""))
    retried = [m for m in messages if "the connection dropped" in m and "restarting the whole stream" in m]
    assert len(retried) == 1, messages[-20:]
    entries = [p for p in store_root.iterdir() if p.name.endswith("-world_stage-amd64")]
    assert len(entries) == 1 and not list(store_root.glob(".tmp-*"))
    tree = stored(sb, "world_stage")
    assert tree.manifest.get(b"usr/share/sample/filler").size == 400 << 20
    assert (tree.tree / "usr/share/sample/filler").stat().st_size == 400 << 20


def test_rebuild_check_stages_as_the_no_root_user_too(ssh_guest, tmp_path, monkeypatch, capsys):
    sb = make_ssh_build(tmp_path, ssh_guest, build={"jobs": 2, "min_free_gib": 0.5, "no_root_user": "nobody"})
    monkeypatch.setenv("DAGSTER_HOME", sb.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(sb.settings_path))
    rc = cli.main(["rebuild-check", "--target", "amd64", "--log-level", "WARNING"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.splitlines()[-1] == "rebuild_check=identical"
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("#"))
    world = ArtifactStore(Path(values["world_stage_a"]).parent.parent).open(values["world_stage_a"])
    shutdown = world.manifest.get(b"sbin/shutdown")
    assert (shutdown.uname, shutdown.gname, shutdown.mode) == ("root", "operator", 0o4554)  # from the METALOG
    assert world.manifest.get(b"usr/bin/su").flags == "schg"
