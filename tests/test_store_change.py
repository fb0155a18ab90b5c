"""Nightly builds from a changing Fruix store: incremental, correct, bounded on disk.

The SSH test guest's store layout is switched between store items in which
every mtime is 1 (set explicitly: a Guix-style store), so a build that copied
the store's mtimes would see nothing newer and ship stale objects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from fruix_dagster.defs.records import latest
from tests.conftest import make_ssh_build
from tests.support.sshguest import DEFAULT_SOURCE_TREE, render_store_layout

CAT_MSG = "%s: %s: cannot open\\n"


def store_mtime_1(path: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (1, 1), follow_symlinks=False)
    os.utime(path, (1, 1))


class Store:
    """Store items made from the sample tree, each with a change; switches the guest to one."""

    def __init__(self, guest, tmp: Path):
        self.guest, self.tmp, self.n = guest, tmp, 0

    def item(self, change=None) -> str:
        self.n += 1
        store_hash = f"{self.n:02x}" * 20
        tree = self.tmp / f"store-tree-{self.n}"
        shutil.copytree(DEFAULT_SOURCE_TREE, tree, ignore=shutil.ignore_patterns("__pycache__"))
        if change:
            change(tree)
        item = self.guest.add_source_store(store_hash, tree=tree)
        store_mtime_1(self.guest.guest_path(item))
        return item

    def switch(self, item: str) -> None:
        self.guest.set_store_layout(render_store_layout([item]))


def edit(rel: str, old: str, new: str):
    def change(tree: Path) -> None:
        p = tree / rel
        text = p.read_text()
        assert old in text, (rel, old)
        p.write_text(text.replace(old, new, 1))
    return change


def objects(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root / "obj")): p.stat().st_mtime for p in (root / "obj").rglob("*.o")}


def object_trees(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root / "obj")) for p in (root / "obj").rglob("amd64.amd64"))


def meta(sb, asset: str) -> dict:
    return latest(sb.instance, asset, "amd64").metadata


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0]) * 1024


def test_one_c_file_changed_rebuilds_only_it_and_equals_a_clean_build(ssh_guest, tmp_path):
    store = Store(ssh_guest, tmp_path)
    a = store.item()
    b = store.item(edit("bin/cat/cat.c", CAT_MSG, "%s: %s: cannot open (B)\\n"))
    store.switch(a)
    sb = make_ssh_build(tmp_path / "nightly", ssh_guest)
    root = sb.build_root
    assert sb.run().success
    src = meta(sb, "freebsd_source")
    assert src["build_path"] == "/var/tmp/fruix-native-build/src" and src["source_store"] == a
    assert src["sync_mode"] == "full copy (no build path yet)"
    assert meta(sb, "kernel_build")["kernfast"] is False
    before, world_a = objects(root), meta(sb, "world_stage")["tree_sha256"]

    store.switch(b)
    assert sb.run().success
    src = meta(sb, "freebsd_source")
    assert src["source_store"] == b and src["build_path"] == "/var/tmp/fruix-native-build/src"
    assert (src["sync_mode"], src["sync_added"], src["sync_changed"], src["sync_removed"]) == (
        "incremental", 0, 1, 0)
    after = objects(root)
    assert set(after) == set(before)
    rebuilt = sorted(p for p in after if after[p] != before[p])
    assert rebuilt == ["var/tmp/fruix-native-build/src/amd64.amd64/bin/cat/cat.o"]
    assert object_trees(root) == ["var/tmp/fruix-native-build/src/amd64.amd64"]
    kernel = meta(sb, "kernel_build")
    assert kernel["kernfast"] is True, kernel["kernfast_reason"]
    world = meta(sb, "world_stage")
    assert world["tree_sha256"] != world_a
    assert b"cannot open (B)" in (Path(world["path"]) / "bin/cat").read_bytes()

    # a clean build of B in a fresh build root gives the very same trees
    fresh = make_ssh_build(tmp_path / "fresh", ssh_guest,
                           build={"jobs": 2, "min_free_gib": 0.5, "build_root": "/var/tmp/fresh-root"})
    assert fresh.run().success
    for asset in ("world_stage", "kernel_stage"):
        assert meta(fresh, asset)["tree_sha256"] == meta(sb, asset)["tree_sha256"], asset


def test_a_header_change_rebuilds_exactly_its_includers(ssh_guest, tmp_path):
    store = Store(ssh_guest, tmp_path)
    a = store.item()
    b = store.item(edit("lib/libsample/libsample.h", "\n", "\n/* B */\n"))
    store.switch(a)
    sb = make_ssh_build(tmp_path / "nightly", ssh_guest)
    assert sb.run().success
    before = objects(sb.build_root)
    store.switch(b)
    assert sb.run().success
    after = objects(sb.build_root)
    includers = sorted(
        str(c.relative_to(DEFAULT_SOURCE_TREE).with_suffix(".o"))
        for c in DEFAULT_SOURCE_TREE.rglob("*.c")
        if re.search(r'#include [<"]libsample\.h[>"]', c.read_text()))
    # the lib32 shim libraries (Makefile.libcompat, stage 4.3.1) build the same
    # library sources again under obj-lib32: their includers are rebuilt there too
    includers = sorted(includers + [f"obj-lib32/{o}" for o in includers if o.startswith("lib/")])
    prefix = "var/tmp/fruix-native-build/src/amd64.amd64/"
    assert len(includers) >= 5
    assert sorted(p[len(prefix):] for p in after if after[p] != before[p]) == includers


def test_files_removed_and_added_and_back_again(ssh_guest, tmp_path):
    store = Store(ssh_guest, tmp_path)
    a = store.item()

    def swap(tree: Path) -> None:
        (tree / "include/ndbm.h").unlink()
        (tree / "include/added.h").write_text("/* added in C */\n")
    c = store.item(swap)
    store.switch(a)
    sb = make_ssh_build(tmp_path / "nightly", ssh_guest)
    assert sb.run().success
    world_a = meta(sb, "world_stage")
    store.switch(c)
    assert sb.run().success
    src = meta(sb, "freebsd_source")
    assert (src["sync_added"], src["sync_changed"], src["sync_removed"]) == (1, 0, 1)
    stage = Path(meta(sb, "world_stage")["path"])
    assert (stage / "usr/include/added.h").exists() and not (stage / "usr/include/ndbm.h").exists()
    assert not (sb.build_root / "src/include/ndbm.h").exists()
    store.switch(a)
    assert sb.run().success
    src = meta(sb, "freebsd_source")
    assert (src["sync_added"], src["sync_changed"], src["sync_removed"]) == (1, 0, 1)
    assert meta(sb, "world_stage")["tree_sha256"] == world_a["tree_sha256"]
    assert object_trees(sb.build_root) == ["var/tmp/fruix-native-build/src/amd64.amd64"]


def test_kernfast_only_when_the_kernel_config_is_unchanged(ssh_guest, tmp_path):
    store = Store(ssh_guest, tmp_path)
    items = [store.item(),
             store.item(edit("sys/kern/subr_prf.c", "\n", "\n/* 2 */\n")),
             store.item(edit("sys/conf/files", "\n", "\n# changed\n")),
             store.item(edit("sys/amd64/conf/GENERIC", "\n", "\n# changed\n"))]
    generic = edit("sys/amd64/conf/GENERIC", "\n", "\n# changed\n")
    prf = edit("sys/kern/subr_prf.c", "\n", "\n/* 5 */\n")
    items.append(store.item(lambda t: (generic(t), prf(t))))   # same config as items[3]
    store.switch(items[0])
    sb = make_ssh_build(tmp_path / "nightly", ssh_guest)
    assert sb.run().success
    kobj = sb.build_root / "obj/var/tmp/fruix-native-build/src/amd64.amd64/sys/GENERIC"

    def kernel_log() -> str:
        # log_path is the host copy of the step's log, next to the stored artifacts
        return Path(str(meta(sb, "kernel_build")["log_path"])).read_text()

    store.switch(items[1])        # config unchanged: KERNFAST, and the sample fails KERNFAST if unconfigured
    assert sb.run().success
    k = meta(sb, "kernel_build")
    assert k["kernfast"] is True and "KERNFAST=yes" in k["make_command"]
    assert ">>> stage 1: configuring the kernel" not in kernel_log()
    for item, what in ((items[2], "sys/conf/files"), (items[3], "GENERIC")):
        store.switch(item)
        assert sb.run().success, what
        k = meta(sb, "kernel_build")
        assert k["kernfast"] is False and "config inputs" in k["kernfast_reason"], what
        assert ">>> stage 1: configuring the kernel" in kernel_log(), what
    # a wiped kernel object directory: a full build, not a KERNFAST into nothing
    shutil.rmtree(kobj)
    store.switch(items[4])
    assert sb.run().success
    k = meta(sb, "kernel_build")
    assert k["kernfast"] is False and "no configured kernel" in k["kernfast_reason"]


def test_build_root_stays_bounded_over_five_store_changes(ssh_guest, tmp_path):
    store = Store(ssh_guest, tmp_path)
    store.switch(store.item())
    sb = make_ssh_build(tmp_path / "nightly", ssh_guest, build={"jobs": 2, "min_free_gib": 0.5,
                                                                 "keep_steps": 2})
    assert sb.run().success
    sizes = []
    for i in range(5):
        store.switch(store.item(edit("bin/cat/cat.c", CAT_MSG, f"%s: %s: cannot open ({i})\\n")))
        assert sb.run().success
        sizes.append(du_bytes(sb.build_root))
    assert sizes[-1] <= 1.2 * sizes[0], sizes
    assert object_trees(sb.build_root) == ["var/tmp/fruix-native-build/src/amd64.amd64"]
    for name in ("buildworld", "buildkernel", "srcsync"):
        assert len([d for d in (sb.build_root / "steps").glob(f"{name}-*") if d.is_dir()]) == 2, name


def test_buildroot_gc_dry_run_lists_and_gc_removes_only_what_no_target_needs(tmp_path, monkeypatch, capsys):
    from fruix_dagster import cli
    from tests.conftest import make_local_build

    lb = make_local_build(tmp_path, build={"jobs": 2, "build_root": str(tmp_path / "root"), "keep_steps": 2})
    root = tmp_path / "root"
    src = (tmp_path / "src").resolve()
    keep = root / f"obj{src}/amd64.amd64"
    (keep / "bin/cat").mkdir(parents=True)
    (keep / "bin/cat/cat.o").write_bytes(b"o")
    old_tree = root / "obj/frx/store/aa-freebsd-source-default/tree/amd64.amd64"
    old_tree.mkdir(parents=True)
    (old_tree / "x.o").write_bytes(b"x" * 4096)
    other_target = root / f"obj{src}/i386.i386"
    other_target.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    (root / "obj/evil").symlink_to(outside)
    # the shared stages of a build root from before per-target stages, the harness's artifacts: gone
    for d in ("stage-world", "stage-kernel", "artifact-headers"):
        (root / d).mkdir()
    for m in ("stage-world.METALOG", "stage-kernel.METALOG"):
        (root / m).write_text("#mtree 2.0\n")
    # the current target's stages, NO_ROOT METALOGs (owners) and install stamps: kept
    mine = root / "stage/amd64"
    for d in ("world", "kernel"):
        (mine / d / "boot").mkdir(parents=True)
        (mine / f"{d}.METALOG").write_text("#mtree 2.0\n")
        (mine / f"{d}.installed").write_text("x\n1\n")
    (mine / "world.installed.tmp").write_text("half written")       # not a stage entry: gone
    (mine / "kernel.old").symlink_to(outside)                         # a link: removed as a link
    (root / "stage/removed-target/kernel").mkdir(parents=True)       # a target no longer declared
    steps = root / "steps"
    for i, fp in enumerate(("aaaa", "bbbb", "cccc", "dddd")):
        (steps / f"buildworld-{fp}").mkdir(parents=True)
        (steps / f"buildworld-{fp}/started").write_text(f"{100 + i}\n")
    (steps / "buildworld.current").write_text(f"{steps}/buildworld-aaaa\n")   # current, but oldest
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    expected = {str(old_tree.parents[3]), str(other_target), str(root / "obj/evil"),
                str(root / "artifact-headers"), f"{steps}/buildworld-bbbb", f"{steps}/buildworld-cccc",
                *(str(root / n) for n in ("stage-world", "stage-kernel", "stage-world.METALOG",
                                          "stage-kernel.METALOG")),
                str(mine / "world.installed.tmp"), str(mine / "kernel.old"), str(root / "stage/removed-target")}

    assert cli.main(["buildroot", "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = set(re.findall(r"^would remove local:(\S+) ", out, re.M))
    assert listed == expected, out
    assert all(Path(p).exists() or Path(p).is_symlink() for p in expected)

    assert cli.main(["buildroot", "gc"]) == 0
    assert not any(Path(p).exists() or Path(p).is_symlink() for p in expected)
    assert (keep / "bin/cat/cat.o").exists() and (outside / "precious").read_text() == "keep me"
    assert sorted(d.name for d in steps.iterdir()) == ["buildworld-aaaa", "buildworld-dddd",
                                                       "buildworld.current"]
    assert sorted(p.name for p in mine.iterdir()) == ["kernel", "kernel.METALOG", "kernel.installed",
                                                     "world", "world.METALOG", "world.installed"]
    assert sorted(p.name for p in (root / "stage").iterdir()) == ["amd64"]
