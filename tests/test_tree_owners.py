"""Owners, groups, full modes and file flags: from the tar stream into manifests, mtree and the store.

Runs as root: chown and chattr +i are real, read back by bsdtar (pax SCHILY.fflags).
"""

from __future__ import annotations

import grp
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from fruix_dagster.errors import TreeError
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.store import ArtifactStore
from fruix_dagster.tree import manifest_from_dir, manifest_from_tar

OPERATOR = grp.getgrnam("operator").gr_gid
TTY = grp.getgrnam("tty").gr_gid


def chattr(*args: str) -> None:
    subprocess.run(["chattr", *args], check=True)


@pytest.fixture
def owned(tmp_path):
    """A tree like a world stage: setuid root:operator, setgid tty, an schg file."""
    assert os.geteuid() == 0, "these tests chown and chattr: run them as root"
    root = tmp_path / "stage"
    (root / "sbin").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    for rel, gid, mode in (("sbin/shutdown", OPERATOR, 0o4554), ("usr/bin/wall", TTY, 0o2555),
                           ("sbin/init", 0, 0o555)):
        (root / rel).write_bytes(rel.encode())
        os.chown(root / rel, 0, gid)
        os.chmod(root / rel, mode)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "usr" / "bin" / "link").symlink_to("wall")
    chattr("+i", str(root / "sbin" / "init"))
    yield root
    chattr("-i", str(root / "sbin" / "init"))


def bsdtar(root: Path) -> bytes:
    return subprocess.run(["bsdtar", "cf", "-", "-C", str(root), "."], check=True, capture_output=True).stdout


def test_bsdtar_stream_gives_owners_modes_and_flags(owned):
    m = manifest_from_tar(io.BytesIO(bsdtar(owned)))
    shutdown, wall, init = m.get(b"sbin/shutdown"), m.get(b"usr/bin/wall"), m.get(b"sbin/init")
    assert (shutdown.uname, shutdown.gname, shutdown.uid, shutdown.gid, shutdown.mode) == \
        ("root", "operator", 0, OPERATOR, 0o4554)
    assert (wall.gname, wall.gid, wall.mode, wall.flags) == ("tty", TTY, 0o2555, "")
    assert init.flags == "schg"
    assert m.get(b"tmp").mode == 0o1777
    # the same tree read from disk gives the same manifest (flags through FS_IOC_GETFLAGS)
    assert manifest_from_dir(owned) == m


def test_one_group_changes_the_digest(owned):
    before = manifest_from_tar(io.BytesIO(bsdtar(owned))).digest()
    os.chown(owned / "usr/bin/wall", 0, 0)
    os.chmod(owned / "usr/bin/wall", 0o2555)
    assert manifest_from_tar(io.BytesIO(bsdtar(owned))).digest() != before


def pax_member(name: str, pax: dict[str, str], data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo(".")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.uid, info.gid, info.uname, info.gname = 1, 2, "u", "g"
        info.pax_headers = pax
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_pax_records_override_the_ustar_owner_fields():
    m = manifest_from_tar(io.BytesIO(pax_member("./f", {"uid": "3000000000", "gid": "7", "uname": "ünï",
                                                         "gname": "staff", "SCHILY.fflags": "uappnd,schg"})))
    e = m.get(b"f")
    assert (e.uid, e.gid, e.uname, e.gname, e.flags) == (3000000000, 7, "ünï", "staff", "schg,uappnd")


@pytest.mark.parametrize("pax, message", [
    ({"SCHILY.fflags": "schg;rm -rf"}, "SCHILY.fflags"),
    ({"uid": "-1"}, "pax uid"),
    ({"gid": "99999999999"}, "pax gid"),
    ({"uname": "a\nb"}, "uname"),
])
def test_hostile_owner_records_are_refused(pax, message):
    with pytest.raises(TreeError, match=message):
        manifest_from_tar(io.BytesIO(pax_member("./f", pax)))


class BsdtarLocal(LocalTransport):
    """This host as a guest whose tar is bsdtar (as on FreeBSD): flags travel as SCHILY.fflags."""

    def tar_stream(self, directory: str):
        return self.open_stream(["bsdtar", "cf", "-", "-C", directory, "."])


def test_store_keeps_owners_and_modes_and_mtree_checks_out(owned, tmp_path):
    stored = ArtifactStore(tmp_path / "store").collect(BsdtarLocal(), str(owned), asset="world_stage",
                                                       target="amd64")
    st = os.lstat(stored.tree / "sbin/shutdown")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, OPERATOR, 0o4554)
    assert os.lstat(stored.tree / "usr/bin/wall").st_mode & 0o7777 == 0o2555
    # flags are recorded, never set on the host copy (the store must stay removable)
    lsattr = subprocess.run(["lsattr", "-d", str(stored.tree / "sbin/init")], capture_output=True, text=True).stdout
    assert "i" not in lsattr.split()[0]
    mtree = (stored.path / "manifest.mtree").read_text()
    assert "./sbin/shutdown type=file uname=root gname=operator mode=4554 " in mtree
    assert "./sbin/init type=file uname=root gname=root mode=0555 " in mtree and " flags=schg" in mtree
    check = subprocess.run(["mtree", "-e", "-f", str(stored.path / "manifest.mtree"), "-p", str(stored.tree)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # a changed group is noticed by mtree
    os.chown(stored.tree / "usr/bin/wall", 0, 0)
    os.chmod(stored.tree / "usr/bin/wall", 0o2555)
    check = subprocess.run(["mtree", "-e", "-f", str(stored.path / "manifest.mtree"), "-p", str(stored.tree)],
                           capture_output=True, text=True)
    assert check.returncode != 0 and "wall" in check.stdout
