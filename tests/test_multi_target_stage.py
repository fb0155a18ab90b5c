"""Several [[target]]s on one guest: each stages into its own directory, and a
reused install never hands over a stage that is not what it installed.

Local guest, the embedded sample tree; the two targets differ in KERNCONF
(the sample tree builds amd64 only), so their kernels differ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fruix_dagster.defs.records import latest
from fruix_dagster.graph import KERNEL_FILE, STAGES
from fruix_dagster.store.store import remove_entry
from tests.conftest import make_local_build, make_ssh_build
from tests.independent import tree_facts

TARGETS = [{"name": "generic", "guest": "local", "kernconf": "GENERIC"},
           {"name": "minimal", "guest": "local", "kernconf": "MINIMAL"}]
SUB = {"world_stage": "world", "kernel_stage": "kernel"}


def stage_dir(root: Path, target: str, asset: str) -> Path:
    return root / "stage" / target / SUB[asset]


def recorded(lb, target: str) -> dict[str, dict]:
    return {a: dict(latest(lb.instance, a, target).metadata) for a in STAGES}


def drop_stored(meta: dict) -> None:
    """Remove a stage's store entry: a re-materialization cannot reuse it and must collect."""
    entry = Path(str(meta["path"])).parent
    subprocess.run(["chattr", "-R", "-f", "-i", "-a", str(entry)], check=False)
    remove_entry(entry)


def runs_of(root: Path, step: str) -> int:
    """How often any record of ``step`` ran (finished attempts plus the current one)."""
    n = 0
    for d in (root / "steps").glob(f"{step}-*"):
        n += len(list(d.glob("attempt-*"))) + (1 if (d / "started").exists() else 0)
    return n


def test_two_targets_on_one_guest_stage_apart_and_rematerialize_their_own_trees(tmp_path):
    lb = make_local_build(tmp_path, targets=TARGETS)
    root = lb.build_root
    assert lb.run("generic").success
    generic = recorded(lb, "generic")
    assert lb.run("minimal").success
    minimal = recorded(lb, "minimal")
    kernel = f"sha256:{KERNEL_FILE}"
    assert generic["kernel_stage"][kernel] != minimal["kernel_stage"][kernel]
    # each target's stages are its own directories, both still there
    for target, meta in (("generic", generic), ("minimal", minimal)):
        for asset in STAGES:
            d = stage_dir(root, target, asset)
            assert meta[asset]["guest_path"] == str(d)
            assert tree_facts(d, flags_from=Path(str(meta[asset]["path"])))["tree_sha256"] \
                == meta[asset]["tree_sha256"], (target, asset)
    assert not (root / "stage-world").exists() and not (root / "stage-kernel").exists()
    # generic's stored stages gone: re-materializing them must collect generic's trees again,
    # never minimal's (built last, on the same guest and build root)
    for asset in STAGES:
        drop_stored(generic[asset])
    assert lb.run("generic", select=list(STAGES)).success
    again = recorded(lb, "generic")
    for asset in STAGES:
        assert again[asset]["tree_sha256"] == generic[asset]["tree_sha256"], asset
    assert again["kernel_stage"][kernel] == generic["kernel_stage"][kernel]


def alter(stage: Path) -> None:
    f = stage / KERNEL_FILE
    subprocess.run(["chattr", "-f", "-i", "-a", str(f)], check=False)
    os.chmod(f, 0o644)
    f.write_bytes(b"not the kernel installkernel wrote\n")


def replace(stage: Path) -> None:
    """The same files (mtimes kept) in a new directory put in its place."""
    copy = stage.with_name("kernel.copy")
    shutil.copytree(stage, copy, symlinks=True)
    subprocess.run(["chattr", "-R", "-f", "-i", "-a", str(stage)], check=False)
    shutil.rmtree(stage)
    copy.rename(stage)


def remove(stage: Path) -> None:
    subprocess.run(["chattr", "-R", "-f", "-i", "-a", str(stage)], check=False)
    shutil.rmtree(stage)


@pytest.mark.parametrize("change", [alter, replace, remove], ids=["altered", "replaced", "removed"])
def test_a_stage_changed_since_its_install_is_installed_again(tmp_path, change):
    lb = make_local_build(tmp_path)
    root = lb.build_root
    assert lb.run().success
    first = recorded(lb, "amd64")["kernel_stage"]
    runs = runs_of(root, "installkernel")
    change(stage_dir(root, "amd64", "kernel_stage"))
    drop_stored(first)
    assert lb.run(select=["kernel_stage"]).success
    again = recorded(lb, "amd64")["kernel_stage"]
    assert again["tree_sha256"] == first["tree_sha256"]
    assert runs_of(root, "installkernel") == runs + 1
    # and an untouched stage is reused: no install runs, the stored tree is the same
    assert lb.run(select=["kernel_stage"]).success
    assert runs_of(root, "installkernel") == runs + 1
    assert recorded(lb, "amd64")["kernel_stage"]["tree_sha256"] == first["tree_sha256"]


def test_over_ssh_the_stamp_check_runs_in_the_guests_sh(ssh_guest, tmp_path):
    """The same checks through the SSH guest's dash and its tools; two targets, one altered stage."""
    sb = make_ssh_build(tmp_path, ssh_guest,
                        targets=[{**t, "guest": "fruix-amd64"} for t in TARGETS])
    root = sb.build_root
    assert sb.run("generic").success
    generic = recorded(sb, "generic")["kernel_stage"]
    assert sb.run("minimal").success
    assert generic["guest_path"] == "/var/tmp/fruix-native-build/stage/generic/kernel"
    runs = runs_of(root, "installkernel")
    alter(stage_dir(root, "generic", "kernel_stage"))
    drop_stored(generic)
    assert sb.run("generic", select=["kernel_stage"]).success
    assert recorded(sb, "generic")["kernel_stage"]["tree_sha256"] == generic["tree_sha256"]
    assert runs_of(root, "installkernel") == runs + 1
    assert sb.run("generic", select=["kernel_stage"]).success   # untouched now: reused
    assert runs_of(root, "installkernel") == runs + 1
