"""The sample tree installs owners, groups, modes and flags as FreeBSD's share/mk does.

Runs as root (the test environment is root): chown and chattr +i are real.
The unprivileged runs use setpriv (util-linux) to become ``nobody``.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.test_sample_src import copy_src, full_build, make_exe, mode, run

NOBODY = 65534


def flags(p: Path) -> str:
    return subprocess.run(["lsattr", "-d", str(p)], check=True, capture_output=True, text=True).stdout.split()[0]


def owner(p: Path) -> tuple[int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_gid


@pytest.fixture
def built():
    """A built world in a directory every user may traverse (pytest's tmp_path is 0700)."""
    assert os.geteuid() == 0, "these tests chown and chattr: run them as root"
    base = Path(tempfile.mkdtemp(prefix="fruix-sample-", dir="/var/tmp"))
    try:
        os.chmod(base, 0o755)
        src = copy_src(base / "src")
        run("make", "buildworld", src, base / "obj", jobs=2)
        yield src, base
    finally:
        subprocess.run(["chattr", "-R", "-f", "-i", "-a", str(base)], capture_output=True)
        shutil.rmtree(base)


@pytest.mark.parametrize("make", ["make", "bmake"])
def test_root_install_sets_owners_modes_and_schg(make: str, tmp_path: Path) -> None:
    assert os.geteuid() == 0, "these tests chown and chattr: run them as root"
    src = copy_src(tmp_path / "src")
    logs = full_build(make, src, tmp_path)
    w = tmp_path / "stage-world"
    # sbin/shutdown: BINOWN=root BINGRP=operator BINMODE=4554.  Names resolve on the running
    # system (Debian: operator 37, tty 5); wheel, which Debian lacks, comes from the tree's etc/group.
    assert owner(w / "sbin/shutdown") == (0, grp.getgrnam("operator").gr_gid)
    assert mode(w / "sbin/shutdown") == 0o4554
    assert owner(w / "usr/bin/wall") == (0, grp.getgrnam("tty").gr_gid) and mode(w / "usr/bin/wall") == 0o2555
    assert owner(w / "usr/bin/su") == (0, 0) and mode(w / "usr/bin/su") == 0o4555
    # PRECIOUSPROG / PRECIOUSLIB: -fschg (chattr +i on Linux)
    for rel in ("usr/bin/su", "sbin/init", "usr/lib/libsample.so.1"):
        assert "i" in flags(w / rel), rel
    for rel in ("sbin/shutdown", "usr/bin/wall", "bin/cat", "usr/lib/libsample.a"):
        assert "i" not in flags(w / rel), rel
    assert owner(w / "etc/master.passwd") == (0, 0) and mode(w / "etc/master.passwd") == 0o600
    assert "install -o root -g operator -m 4554 " in logs["installworld"]
    assert "install -o root -g wheel -m 4555 -fschg -S " in logs["installworld"]
    # a second installworld over the same stage replaces the immutable files (install -S)
    run(make, "installworld", src, tmp_path / "obj", f"DESTDIR={w}", "DB_FROM_SRC=yes")
    assert "i" in flags(w / "usr/bin/su")


def test_no_fschg_leaves_flags_off(built) -> None:
    src, tmp = built
    w = tmp / "stage"
    run("make", "installworld", src, tmp / "obj", f"DESTDIR={w}", "DB_FROM_SRC=yes", "NO_FSCHG=yes")
    assert "i" not in flags(w / "usr/bin/su") and mode(w / "usr/bin/su") == 0o4555


def unprivileged(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                          cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)


def test_no_root_install_writes_a_metalog_as_nobody(built) -> None:
    src, tmp = built
    os.chmod(tmp, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp)], check=True)
    out = tmp / "out"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    w, metalog = out / "stage", out / "stage.METALOG"
    env = ["env", f"MAKEOBJDIRPREFIX={tmp / 'obj'}", make_exe("make"), "TARGET=amd64", "TARGET_ARCH=amd64",
           f"DESTDIR={w}", "DB_FROM_SRC=yes", "NO_ROOT=yes", f"METALOG={metalog}"]
    for target in ("installworld", "distribution"):
        p = unprivileged([*env, target], src)
        assert p.returncode == 0, p.stdout[-3000:]
    # nothing chowned or flagged: the files belong to nobody
    assert owner(w / "sbin/shutdown") == (NOBODY, NOBODY) and mode(w / "sbin/shutdown") == 0o4554
    assert "i" not in flags(w / "usr/bin/su")
    lines = metalog.read_text().splitlines()
    size = (w / "sbin/shutdown").stat().st_size
    assert f"./sbin/shutdown type=file uname=root gname=operator mode=04554 size={size}" in lines
    assert any(x.startswith("./usr/bin/su type=file uname=root gname=wheel mode=04555 ") and
               x.endswith(" flags=schg") for x in lines)
    assert any(x.startswith("./usr/bin/wall type=file uname=root gname=tty mode=02555 ") for x in lines)
    assert ". type=dir uname=root gname=wheel mode=0755" in lines
    assert "./tmp type=dir uname=root gname=wheel mode=01777" in lines
    assert "./usr/lib/libsample.so type=link uname=root gname=wheel mode=0755 link=libsample.so.1" in lines
    assert any(x.startswith("./etc/master.passwd type=file uname=root gname=wheel mode=0600 ") for x in lines)


def test_unprivileged_install_without_no_root_fails_like_install(built) -> None:
    src, tmp = built
    os.chmod(tmp, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp)], check=True)
    out = tmp / "out"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    p = unprivileged(["env", f"MAKEOBJDIRPREFIX={tmp / 'obj'}", make_exe("make"), "TARGET=amd64",
                      "TARGET_ARCH=amd64", f"DESTDIR={out / 'stage'}", "DB_FROM_SRC=yes", "installworld"], src)
    assert p.returncode != 0
    assert "chown/chgrp: Operation not permitted" in p.stdout and "-DNO_ROOT" in p.stdout
