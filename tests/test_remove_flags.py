"""Fenced removal of trees holding real immutable / append-only files (chattr, as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fruix_dagster.errors import GuestError
from fruix_dagster.guest.fence import remove_tree
from fruix_dagster.guest.local import LocalTransport


def chattr(*args: str) -> None:
    subprocess.run(["chattr", *args], check=True)


def attrs(path: Path) -> str:
    out = subprocess.run(["lsattr", "-d", str(path)], check=True, capture_output=True, text=True).stdout
    return out.split()[0]


@pytest.fixture
def flagged(tmp_path):
    yield from _flagged(tmp_path)


def _flagged(tmp_path: Path):
    """root/stage with immutable and append-only files and an immutable directory;
    outside the root an immutable file reached from inside through a symlink."""
    assert os.geteuid() == 0, "these tests set chattr +i and must run as root (the test environment is root)"
    root = tmp_path / "root"
    stage = root / "stage"
    (stage / "sbin").mkdir(parents=True)
    (stage / "lib" / "deep").mkdir(parents=True)
    (stage / "sbin" / "init").write_bytes(b"init")
    (stage / "lib" / "deep" / "libc.so.7").write_bytes(b"libc")
    (stage / "var.log").write_bytes(b"log")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep me")
    (stage / "to-outside").symlink_to(outside / "precious")
    (stage / "to-outside-dir").symlink_to(outside)
    chattr("+i", str(stage / "sbin" / "init"))
    chattr("+i", str(stage / "lib" / "deep" / "libc.so.7"))
    chattr("+i", str(stage / "lib" / "deep"))
    chattr("+a", str(stage / "var.log"))
    chattr("+i", str(outside / "precious"))
    chattr("+i", str(outside))
    yield root, stage, outside
    for p in (outside, outside / "precious"):
        if p.exists():
            chattr("-i", str(p))
    if stage.exists():
        subprocess.run(["chattr", "-R", "-f", "-i", "-a", str(stage)])


def test_plain_rm_cannot_delete_it(flagged):
    root, stage, _ = flagged
    res = subprocess.run(["rm", "-rf", str(stage)], capture_output=True)
    assert res.returncode != 0 and b"Operation not permitted" in res.stderr
    assert (stage / "sbin" / "init").exists()


def test_remove_tree_clears_flags_and_never_follows_symlinks(flagged):
    root, stage, outside = flagged
    assert "i" in attrs(stage / "sbin" / "init")
    remove_tree(LocalTransport(), str(root), str(stage))
    assert not stage.exists() and not stage.is_symlink()
    # the symlinked file and directory outside kept their flags and contents
    assert (outside / "precious").read_bytes() == b"keep me"
    assert "i" in attrs(outside / "precious")
    assert "i" in attrs(outside)


@pytest.fixture
def flagged_traversable():
    """Like ``flagged`` but in a directory that every user may traverse."""
    base = Path(tempfile.mkdtemp(prefix="fruix-flags-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        yield from _flagged(base)
    finally:
        shutil.rmtree(base)


def test_remove_tree_reports_a_delete_it_cannot_do(flagged_traversable):
    root, stage, _ = flagged_traversable
    # an unprivileged user cannot clear the immutable flag: one clear error, tree untouched
    res = subprocess.run(["sh", "-c", 'command -v setpriv'], capture_output=True)
    assert res.returncode == 0, "setpriv (util-linux) is needed to drop privileges"

    class Unprivileged(LocalTransport):
        description = "local host as nobody"

        def run(self, argv, *, input=None, timeout=None):
            return super().run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                               input=input, timeout=timeout)

    os.chmod(root, 0o777)
    os.chmod(stage, 0o777)
    with pytest.raises(GuestError, match="rm failed") as exc:
        remove_tree(Unprivileged(), str(root), str(stage))
    assert "Only root can clear system flags" in str(exc.value)
    assert (stage / "sbin" / "init").read_bytes() == b"init"
