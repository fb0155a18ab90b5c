"""The host artifact store: collection, verification, atomic publication, retention."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from fruix_dagster.errors import GuestError, StoreError, TreeError
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.guest.ssh import SshTransport
from fruix_dagster.store import ArtifactStore
from tests.conftest import REPO
from tests.independent import tree_facts


def odd_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + os.urandom(5000))
    os.chmod(root / "bin" / "tool", 0o555)
    (root / "bin" / "su").write_bytes(b"setuid")
    os.chmod(root / "bin" / "su", 0o4555)
    (root / "empty").mkdir()
    (root / "ro").mkdir()
    (root / "ro" / "f").write_text("x")
    os.chmod(root / "ro" / "f", 0o444)
    os.chmod(root / "ro", 0o555)
    (root / "name with spaces").write_text("s")
    (root / "new\nline").write_text("n")
    (root / os.fsdecode(b"latin1-\xe9")).write_text("l")
    (root / ("long" * 60)).write_text("long")
    (root / "link").symlink_to("bin/tool")
    (root / "dangling").symlink_to("does/not/exist")
    os.link(root / "bin" / "tool", root / "hard")
    (root / "big").write_bytes(os.urandom(3 << 20))
    return root


def test_collected_tree_equals_the_guest_tree_byte_for_byte(ssh_guest, tmp_path):
    odd_tree(ssh_guest.guest_path("/var/tmp/odd"))
    store = ArtifactStore(tmp_path / "store")
    with SshTransport(host=ssh_guest.host, port=ssh_guest.port, known_hosts=str(ssh_guest.known_hosts),
                      private_key=str(ssh_guest.client_key)) as t:
        stored = store.collect(t, "/var/tmp/odd", asset="world_stage", target="amd64",
                               key_files=["bin/tool", "missing/file"])
        again = store.collect(t, "/var/tmp/odd", asset="world_stage", target="amd64")
    assert tree_facts(stored.tree) == tree_facts(ssh_guest.guest_path("/var/tmp/odd"))
    assert (stored.tree / "link").is_symlink() and os.readlink(stored.tree / "link") == "bin/tool"
    assert os.readlink(stored.tree / "dangling") == "does/not/exist"
    assert (stored.tree / "bin" / "su").stat().st_mode & 0o7777 == 0o4555
    assert (stored.tree / "empty").is_dir()
    assert stored.path.name == f"{stored.digest}-world_stage-amd64"
    assert again.reused and again.path == stored.path
    assert [p.name for p in store.root.iterdir()] == [stored.path.name]
    # the mtree manifest checks out with NetBSD's mtree
    check = subprocess.run(["mtree", "-e", "-f", str(stored.path / "manifest.mtree"), "-p", str(stored.tree)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    (stored.tree / "big").chmod(0o644)
    (stored.tree / "big").write_bytes(b"tampered")
    check = subprocess.run(["mtree", "-e", "-f", str(stored.path / "manifest.mtree"), "-p", str(stored.tree)],
                           capture_output=True, text=True)
    assert check.returncode != 0


class CannedTransport(LocalTransport):
    """A real local transport whose tar stream is a canned byte string."""

    def __init__(self, data: bytes):
        self.data = data

    @contextmanager
    def open_stream(self, argv):
        yield io.BytesIO(self.data)


def crafted(*members: tuple[str, str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        root = tarfile.TarInfo("."); root.type = tarfile.DIRTYPE; root.mode = 0o755
        tf.addfile(root)
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            tf.addfile(info)
    return buf.getvalue()


HOSTILE = {
    "dotdot": crafted(("../escape", "file", b"x")),
    "absolute": crafted(("/etc/escape", "file", b"x")),
    "through-symlink": crafted(("d", "sym", "/tmp"), ("d/escape", "file", b"x")),
    "hardlink-outside": crafted(("h", "hard", "../../etc/passwd")),
    "device": crafted(("dev", "chr", "")),
    "truncated": crafted(("f", "file", b"y" * 100_000))[:30_000],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_streams_are_refused_and_leave_nothing(tmp_path, name):
    store = ArtifactStore(tmp_path / "store")
    (tmp_path / "guest").mkdir()
    with pytest.raises(TreeError):
        store.collect(CannedTransport(HOSTILE[name]), str(tmp_path / "guest"), asset="world_stage",
                      target="amd64")
    assert list(store.root.iterdir()) == []
    assert not Path("/tmp/escape").exists() and not Path("/etc/escape").exists()


class ChangingTransport(LocalTransport):
    """Changes a key file after the guest hashed it and before the stream."""

    def __init__(self, victim: Path):
        self.victim = victim

    def tar_stream(self, directory):
        self.victim.write_bytes(b"changed after hashing")
        return super().tar_stream(directory)


def test_guest_hash_mismatch_publishes_nothing(tmp_path):
    tree = odd_tree(tmp_path / "guest")
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(StoreError, match="changed during collection"):
        store.collect(ChangingTransport(tree / "big"), str(tree), asset="kernel_stage", target="amd64",
                      key_files=["big"])
    assert list(store.root.iterdir()) == []


KILLED_COLLECTOR = """
import sys
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.store import ArtifactStore
ArtifactStore(sys.argv[1]).collect(LocalTransport(), sys.argv[2], asset="world_stage", target="amd64")
"""


def test_a_collection_killed_half_way_leaves_no_entry(tmp_path):
    tree = tmp_path / "guest"
    tree.mkdir()
    for i in range(300):
        (tree / f"f{i:03d}").write_bytes(os.urandom(1 << 20))
    store_root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_COLLECTOR, str(store_root), str(tree)], cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tmps = list(store_root.glob(".tmp-*/tree/*")) if store_root.exists() else []
        if len(tmps) > 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in store_root.iterdir() if not p.name.startswith(".tmp-")] == []
    assert list(store_root.glob(".tmp-*")), "the kill should have hit a collection in progress"
    stored = ArtifactStore(store_root).collect(LocalTransport(), str(tree), asset="world_stage", target="amd64")
    assert [p.name for p in store_root.iterdir()] == [stored.path.name]
    assert tree_facts(stored.tree) == tree_facts(tree)


def test_a_full_store_is_a_clear_error(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    try:
        tree = tmp_path / "guest"
        tree.mkdir()
        (tree / "big").write_bytes(os.urandom(20 << 20))
        store = ArtifactStore(small / "store")
        with pytest.raises(StoreError) as err:
            store.collect(LocalTransport(), str(tree), asset="world_stage", target="amd64")
        assert str(small / "store") in str(err.value) and "MiB" in str(err.value)
        assert "nothing was published" in str(err.value)
        assert list((small / "store").iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_gc_keeps_the_newest_and_the_referenced(tmp_path):
    store = ArtifactStore(tmp_path / "store", keep=2)
    stored = []
    for i in range(5):
        tree = tmp_path / f"t{i}"
        tree.mkdir()
        (tree / "f").write_text(str(i))
        stored.append(store.collect(LocalTransport(), str(tree), asset="kernel_stage", target="amd64"))
        time.sleep(0.01)
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("other")
    other_entry = store.collect(LocalTransport(), str(other), asset="kernel_stage", target="arm64")
    referenced = [str(stored[0].tree)]
    planned = store.gc(referenced, dry_run=True)
    assert sorted(planned) == sorted([stored[1].path, stored[2].path])
    assert all(s.path.exists() for s in stored)
    removed = store.gc(referenced)
    assert sorted(removed) == sorted(planned)
    assert [s.path.exists() for s in stored] == [True, False, False, True, True]
    assert other_entry.path.exists()


def _du_printing(tmp_path: Path, monkeypatch, output: str) -> None:
    """A `du` earlier in PATH that prints ``output`` and exits 0 (LocalTransport runs argv via PATH)."""
    bin_dir = tmp_path / "bin-du"
    bin_dir.mkdir()
    (bin_dir / "du").write_text("#!/bin/sh\nprintf '%s' \"$DU_OUTPUT\"\n")
    (bin_dir / "du").chmod(0o755)
    monkeypatch.setenv("DU_OUTPUT", output)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("output", ["garbage\n", "", "12k\t/t\n", "-5\t/t\n", "1\t/t\n2\t/u\n", "\u0663\t/t\n"],
                         ids=["words", "nothing", "suffix", "negative", "two-lines", "arabic-digit"])
def test_unreadable_du_output_fails_the_space_check_and_nothing_is_collected(tmp_path, monkeypatch, output):
    tree = tmp_path / "guest"
    tree.mkdir()
    (tree / "f").write_bytes(b"x" * 4096)
    store = ArtifactStore(tmp_path / "store")
    _du_printing(tmp_path, monkeypatch, output)
    with pytest.raises(GuestError) as err:
        store.collect(LocalTransport(), str(tree), asset="world_stage", target="amd64")
    msg = str(err.value)
    assert f"size of {tree} on local host: expected `du -sk {tree}` to print one line" in msg
    assert repr(output) in msg and "check that `du` on the guest" in msg
    assert list((tmp_path / "store").iterdir()) == []


def test_the_space_check_uses_the_du_figure(tmp_path, monkeypatch):
    tree = tmp_path / "guest"
    tree.mkdir()
    (tree / "f").write_bytes(b"x" * 4096)
    store = ArtifactStore(tmp_path / "store")
    _du_printing(tmp_path, monkeypatch, f"{1 << 40}\t{tree}\n")  # 1 PiB, in KiB
    with pytest.raises(StoreError, match=r"cannot hold world_stage .* needs about 1073741888\.0 MiB"):
        store.collect(LocalTransport(), str(tree), asset="world_stage", target="amd64")
    assert list((tmp_path / "store").iterdir()) == []
    monkeypatch.undo()  # the system's du: the same collection fits
    assert store.collect(LocalTransport(), str(tree), asset="world_stage", target="amd64").tree.is_dir()
