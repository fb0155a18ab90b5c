"""A new ``.clean_build_epoch`` turns an incremental build into a clean one.

The rule imitated (freebsd/freebsd-src tools/build/depend-cleanup.sh,
check_epoch / clean_world, run by Makefile.inc1's _cleanobj_fast_depend_hack
on main and 15.0): the epoch is the last line of ${SRCTOP}/.clean_build_epoch
whose first word is a number > 0; when ${OBJTOP}/.clean_build_epoch is missing
or holds another one, the object tree is cleaned ("Cleaning up the object
tree") and the source epoch written there.  The product notices the line
(the guest records it with the markers) and says ``clean_build: epoch``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fruix_dagster.build.eta import Eta
from fruix_dagster.build.make import plan_build
from fruix_dagster.build.run import run_step
from fruix_dagster.errors import BuildError
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.local import LocalTransport
from tests.test_sample_src import COMPILE, copy_src, run


OBJECT = re.compile(r" -c \S+\.c -o (\S+\.o)")


def bump_epoch(src: Path, epoch: str) -> None:
    with open(src / ".clean_build_epoch", "a") as f:
        f.write(f"{epoch}\t# a change that needs a clean build\n")


def test_a_new_epoch_cleans_the_object_tree_of_an_incremental_build(tmp_path):
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    objtop = Path(f"{obj}{src.resolve()}/amd64.amd64")
    first = run("bmake", "buildworld", src, obj, jobs=2)
    assert "\nCleaning up the object tree\n" in first   # a new tree has no epoch yet
    assert (objtop / ".clean_build_epoch").read_text() == "20250807\n"
    objects = sorted(OBJECT.findall(first))
    assert any("/obj-lib32/" in o for o in objects)
    lib = next(objtop.glob("lib/libsample/*.o"))
    stray = objtop / "lib/libsample/stray.o"
    stray.write_bytes(b"")
    before = lib.stat().st_mtime_ns
    again = run("bmake", "buildworld", src, obj, jobs=2)
    assert "Cleaning up the object tree" not in again and not COMPILE.search(again)
    assert stray.exists() and lib.stat().st_mtime_ns == before
    bump_epoch(src, "20261201")
    cleaned = run("bmake", "buildworld", src, obj, jobs=2)
    assert ">>> Deleting stale dependencies...\nCleaning up the object tree\n" in cleaned
    # CLEANMK is the world's cleandir: the lib32 objects (obj-lib32) stay
    assert sorted(OBJECT.findall(cleaned)) == [o for o in objects if "/obj-lib32/" not in o]
    assert not stray.exists(), "the object tree was not really cleaned"
    assert lib.stat().st_mtime_ns > before
    assert (objtop / ".clean_build_epoch").read_text() == "20261201\n"
    assert not COMPILE.search(run("bmake", "buildworld", src, obj, jobs=2))


def test_a_malformed_epoch_file_stops_the_build(tmp_path):
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    (src / ".clean_build_epoch").write_text("# no epoch line\n")
    out = run("bmake", "buildworld", src, obj, check=False)
    assert "depend-cleanup.sh: Malformed .clean_build_epoch; please validate the last line" in out
    assert "*** Error code 1" in out


def plan(root: Path, src: Path, source_hash: str):
    return plan_build(build_root=str(root), make="bmake", jobs=2, source_root=str(src),
                      source_hash=source_hash, target_name="amd64", target="amd64", target_arch="amd64", kernconf="GENERIC")


def test_the_product_reports_an_epoch_clean_build(tmp_path):
    """A source change that bumps the epoch: a new source hash, so a new fingerprint and a
    run of make, which the epoch makes clean; the metadata says so, also when reused."""
    src, root = copy_src(tmp_path / "src"), tmp_path / "root"
    steps = DetachedSteps(LocalTransport(), str(root))
    first = run_step(steps, plan(root, src, "a" * 64).steps["buildworld"])
    assert first.clean_build == "epoch"    # an empty object tree: everything is built
    bump_epoch(src, "20261201")
    step = plan(root, src, "b" * 64).steps["buildworld"]
    assert step.fingerprint != first.step.fingerprint and "WITHOUT_CLEAN=yes" in step.command
    second = run_step(steps, step)
    assert second.ran_make and second.clean_build == "epoch"
    assert "Cleaning up the object tree (.clean_build_epoch)" in second.marker_offsets
    assert second.stage_seconds.keys() == first.stage_seconds.keys()   # the line is no stage
    reused = run_step(steps, step)
    assert reused.launch.action == "reused" and reused.clean_build == "epoch"
    third = run_step(steps, plan(root, src, "c" * 64).steps["buildworld"])
    assert third.ran_make and third.clean_build == "no"
    clean = run_step(steps, plan_build(build_root=str(root), make="bmake", jobs=2, source_root=str(src),
                                       source_hash="c" * 64, target_name="amd64", target="amd64", target_arch="amd64",
                                       kernconf="GENERIC", clean=True).steps["buildworld"])
    assert clean.clean_build == "requested"
    # Makefile.inc1 runs depend-cleanup.sh only when not cleaning: a clean build
    # leaves the epoch it found (here: the one the "c" build wrote) untouched.
    assert (Path(f"{root}/obj{src.resolve()}/amd64.amd64") / ".clean_build_epoch").read_text() == "20261201\n"


def test_eta_counts_only_builds_as_clean_as_the_coming_one():
    history = [  # newest first
        {"step_action": "started", "duration_s": 900.0, "clean_build": "epoch"},
        {"step_action": "started", "duration_s": 60.0, "clean_build": "no"},
        {"step_action": "reused", "duration_s": 0.0, "clean_build": "no"},
        {"step_action": "started", "duration_s": 1000.0, "clean_build": "requested"},
        {"step_action": "started", "duration_s": 70.0},   # recorded before clean_build existed
    ]
    assert Eta.from_metadata(history, clean=False).total == pytest.approx(65.0)
    assert Eta.from_metadata(history, clean=True).total == pytest.approx(900.0)
    assert Eta.from_metadata(history).total == pytest.approx(485.0)


def test_a_malformed_epoch_fails_the_product_step(tmp_path):
    """The malformed epoch through the product: one BuildError naming the cause."""
    src, root = copy_src(tmp_path / "src"), tmp_path / "root"
    (src / ".clean_build_epoch").write_text("\n")
    with pytest.raises(BuildError) as err:
        run_step(DetachedSteps(LocalTransport(), str(root)), plan(root, src, "d" * 64).steps["buildworld"])
    assert "Malformed .clean_build_epoch" in str(err.value)
