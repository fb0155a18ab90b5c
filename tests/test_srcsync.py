"""The stable build path: <build_root>/src synced from store items whose every mtime is 1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fruix_dagster.errors import SourceError
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.srcsync import require_synced, sync_source, synced_hash
from fruix_dagster.guest.ssh import SshTransport
from tests.support.sshguest import DEFAULT_SOURCE_TREE

ROOT = "/var/tmp/fruix-native-build"


def store_mtime_1(path: Path) -> None:
    """Every entry of a store item has mtime 1, as in a Guix-style store."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (1, 1), follow_symlinks=False)
    os.utime(path, (1, 1))


def add_store(guest, tmp: Path, store_hash: str, change=None) -> str:
    """A store item made of the sample tree, changed by ``change(tree)``; returns its tree path."""
    tree = tmp / f"tree-{store_hash[:6]}"
    shutil.copytree(DEFAULT_SOURCE_TREE, tree, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    if change:
        change(tree)
    item = guest.add_source_store(store_hash, tree=tree)
    store_mtime_1(guest.guest_path(item))
    return f"{item}/tree"


def mtimes(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.lstat().st_mtime for p in root.rglob("*")}


@pytest.fixture
def transport(ssh_guest):
    t = SshTransport(host=ssh_guest.host, port=ssh_guest.port, known_hosts=str(ssh_guest.known_hosts),
                     private_key=str(ssh_guest.client_key), connect_timeout=5, io_timeout=60)
    yield t
    t.close()


def change_b(tree: Path) -> None:
    (tree / "bin/cat/cat.c").write_text((tree / "bin/cat/cat.c").read_text() + "/* B */\n")
    (tree / "usr.bin/hello/README.B").write_text("added in B\n")
    (tree / "include/ndbm.h").unlink()
    (tree / "share/newdir").mkdir()
    (tree / "share/newdir/x.txt").write_text("x\n")


def test_sync_touches_exactly_what_changed(ssh_guest, transport, tmp_path):
    steps = DetachedSteps(transport, ROOT)
    a_hash, b_hash = "a1" * 20, "b2" * 20
    a, b = add_store(ssh_guest, tmp_path, a_hash), add_store(ssh_guest, tmp_path, b_hash, change_b)
    src = ssh_guest.guest_path(f"{ROOT}/src")

    first = sync_source(transport, steps, ROOT, a, a_hash)
    assert first.mode.startswith("full copy") and first.build_path == f"{ROOT}/src"
    n_files = sum(1 for p in Path(ssh_guest.guest_path(a)).rglob("*") if not p.is_dir())
    assert (first.added, first.changed, first.removed) == (n_files, 0, 0)
    assert (src / "bin/cat/cat.c").read_bytes() == (DEFAULT_SOURCE_TREE / "bin/cat/cat.c").read_bytes()
    assert min(mtimes(src).values()) > 1          # a copy keeping mtime 1 would hide every change
    assert synced_hash(transport, ROOT) == a_hash
    require_synced(transport, ROOT, a_hash)
    assert sync_source(transport, steps, ROOT, a, a_hash).mode == "up to date"

    before = mtimes(src)
    second = sync_source(transport, steps, ROOT, b, b_hash)
    assert (second.mode, second.added, second.changed, second.removed) == ("incremental", 2, 1, 1)
    after = mtimes(src)
    assert set(after) == set(before) - {"include/ndbm.h"} | {
        "usr.bin/hello/README.B", "share/newdir", "share/newdir/x.txt"}
    touched = {p for p in after if p in before and after[p] != before[p]}
    assert touched - {"bin/cat", "usr.bin/hello", "include", "share"} == {"bin/cat/cat.c"}
    assert after["bin/cat/cat.c"] > max(before.values())
    assert (src / "bin/cat/cat.c").read_text().endswith("/* B */\n")
    with pytest.raises(SourceError, match="expected to hold source store a1a1"):
        require_synced(transport, ROOT, a_hash)

    # back to A: the same files again, in reverse
    third = sync_source(transport, steps, ROOT, a, a_hash)
    assert (third.mode, third.added, third.changed, third.removed) == ("incremental", 1, 1, 2)
    assert not (src / "share/newdir").exists() and (src / "include/ndbm.h").exists()
    assert [p for p in ("bin/cat/cat.c", "include/ndbm.h")
            if (src / p).read_bytes() != (DEFAULT_SOURCE_TREE / p).read_bytes()] == []


def test_an_interrupted_sync_is_verified_and_finished(ssh_guest, transport, tmp_path):
    steps = DetachedSteps(transport, ROOT)
    a_hash, b_hash = "a1" * 20, "b2" * 20
    a, b = add_store(ssh_guest, tmp_path, a_hash), add_store(ssh_guest, tmp_path, b_hash, change_b)
    sync_source(transport, steps, ROOT, a, a_hash)
    src = ssh_guest.guest_path(f"{ROOT}/src")
    # a sync to B killed half-way through phase 2: marked, one file moved, one not yet
    (ssh_guest.guest_path(f"{ROOT}/src.syncing")).write_text(b_hash + "\n")
    (src / "usr.bin/hello/README.B").write_text("added in B\n")
    with pytest.raises(SourceError, match="holds a sync that did not finish"):
        require_synced(transport, ROOT, a_hash)
    untouched = (src / "bin/echo/echo.c").stat().st_mtime
    res = sync_source(transport, steps, ROOT, b, b_hash)
    assert res.mode == "verify (an earlier sync was interrupted)"
    assert (res.added, res.changed, res.removed) == (1, 1, 1)   # README.B was already there
    assert not ssh_guest.guest_path(f"{ROOT}/src.syncing").exists()
    assert (src / "bin/echo/echo.c").stat().st_mtime == untouched
    require_synced(transport, ROOT, b_hash)


def test_disk_full_while_syncing_leaves_the_previous_tree(ssh_guest, transport, tmp_path):
    steps = DetachedSteps(transport, ROOT)
    a_hash, b_hash = "a1" * 20, "b2" * 20
    a = add_store(ssh_guest, tmp_path, a_hash)
    b = add_store(ssh_guest, tmp_path, b_hash,
                  lambda t: (t / "share/big.bin").write_bytes(os.urandom(6 << 20)))
    ssh_guest.exec(["mkdir", "-p", ROOT])
    ssh_guest.exec(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", ROOT])
    try:
        sync_source(transport, steps, ROOT, a, a_hash)
        with pytest.raises(SourceError) as err:
            sync_source(transport, steps, ROOT, b, b_hash)
        msg = str(err.value)
        assert "was not changed and still holds the previous tree" in msg
        assert "No space left on device" in msg, msg
        require_synced(transport, ROOT, a_hash)
        assert ssh_guest.exec(["test", "-e", f"{ROOT}/src/share/big.bin"], check=False).returncode != 0
        assert ssh_guest.exec(["test", "-e", f"{ROOT}/src.work"], check=False).returncode != 0
    finally:
        ssh_guest.exec(["umount", ROOT])
