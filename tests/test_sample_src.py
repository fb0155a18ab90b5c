"""Real builds of ``fruix_dagster/sample_src``, the stand-in FreeBSD source tree.

Every test runs the FreeBSD commands for real, with GNU make and with bmake,
on a copy of the tree under ``tmp_path``; nothing is mocked.  bmake must be
installed (the project's Makefile installs it): without it these tests fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

import fruix_dagster

SAMPLE = Path(fruix_dagster.__file__).resolve().parent / "sample_src"
MAKES = ("make", "bmake")
DB_ERROR = "ERROR: Required auditdistd user is missing, see /usr/src/UPDATING."
COMPILE = re.compile(r" -c \S+\.c -o ")

WORLD_MARKERS = [
    ">>> World build started on ",
    ">>> stage 1.1: legacy release compatibility shims",
    ">>> stage 1.2: bootstrap tools",
    ">>> stage 2.3: build tools",
    ">>> stage 3: cross tools",
    ">>> stage 3.1: recording build metadata",
    ">>> stage 4.1: building includes",
    ">>> stage 4.2: building libraries",
    ">>> stage 4.3.1: building lib32 shim libraries",
    ">>> stage 4.4: building everything",
    ">>> World build completed on ",
    ">>> World built in ",
]
KERNEL_MARKERS = [
    ">>> Kernel build for GENERIC started on ",
    ">>> stage 1: configuring the kernel",
    ">>> stage 2.3: build tools",
    ">>> stage 3.1: building everything",
    ">>> Kernel build for GENERIC completed on ",
    ">>> Kernel(s)  GENERIC built in ",
]


def make_exe(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (the project's Makefile installs it: apt-get install -y {name})"
    return path


def copy_src(dest: Path) -> Path:
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run(make: str, target: str, src: Path, obj: Path, *variables: str, jobs: int | None = None,
        log: Path | None = None, check: bool = True, timeout: float = 120) -> str:
    """``env MAKEOBJDIRPREFIX=obj make [-jN] TARGET=amd64 TARGET_ARCH=amd64 VAR=... target``.

    Returns the combined output (also written to ``log`` when given).
    """
    argv = ["env", f"MAKEOBJDIRPREFIX={obj}", make_exe(make)]
    if jobs:
        argv.append(f"-j{jobs}")
    argv += ["TARGET=amd64", "TARGET_ARCH=amd64", *variables, target]
    p = subprocess.run(argv, cwd=src, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    if log is not None:
        log.write_text(p.stdout)
    if check:
        assert p.returncode == 0, f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout[-4000:]}"
    else:
        assert p.returncode != 0, f"{' '.join(argv)} unexpectedly succeeded:\n{p.stdout[-4000:]}"
    return p.stdout


def full_build(make: str, src: Path, root: Path, *variables: str, kernconf: str = "GENERIC",
               jobs: int = 2) -> dict[str, str]:
    """The five steps exactly as the orchestrator runs them; returns the logs."""
    obj = root / "obj"
    world = [f"DESTDIR={root}/stage-world", "DB_FROM_SRC=yes"]
    kernel = [f"KERNCONF={kernconf}"]
    return {
        "buildworld": run(make, "buildworld", src, obj, *variables, jobs=jobs),
        "buildkernel": run(make, "buildkernel", src, obj, *kernel, *variables, jobs=jobs),
        "installworld": run(make, "installworld", src, obj, *world, *variables),
        "distribution": run(make, "distribution", src, obj, *world, *variables),
        "installkernel": run(make, "installkernel", src, obj, *kernel,
                             f"DESTDIR={root}/stage-kernel", "DB_FROM_SRC=yes", *variables),
    }


def digest(root: Path) -> dict[str, tuple]:
    """Every path under root: kind, mode and content hash (or link target)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(mode))
            else:
                out[rel] = ("file", oct(mode), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """digest() plus mtimes: to prove a tree was not written to."""
    snap = digest(root)
    for rel in snap:
        snap[rel] += (os.lstat(root / rel).st_mtime_ns,)
    return snap


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def assert_in_order(log: str, markers: list[str]) -> None:
    pos = 0
    for m in markers:
        i = log.find(m, pos)
        assert i >= 0, f"marker {m!r} missing (or out of order) in:\n{log[-3000:]}"
        pos = i + len(m)


@pytest.mark.parametrize("make", MAKES)
def test_full_build_and_install(make: str, tmp_path: Path) -> None:
    src = copy_src(tmp_path / "src")
    logs = full_build(make, src, tmp_path)
    w, k = tmp_path / "stage-world", tmp_path / "stage-kernel"

    for rel in ("usr/include/sys/param.h", "usr/share/mk/bsd.prog.mk", "usr/share/mk/bsd.lib.mk",
                "usr/share/mk/sys.mk", "boot/loader.efi", "boot/defaults/loader.conf",
                "boot/lua/loader.lua", "boot/lua/core.lua", "usr/lib/libsample.a",
                "usr/lib/libsample.so.1", "usr/lib/libsampleutil.a", "bin/cat", "bin/echo",
                "sbin/init", "usr/bin/hello", "usr/bin/su", "etc/master.passwd", "etc/passwd",
                "etc/group", "etc/defaults/rc.conf"):
        assert (w / rel).is_file() and not (w / rel).is_symlink(), rel
    assert "__FreeBSD_version 1500000" in (w / "usr/include/sys/param.h").read_text()
    headers = list((w / "usr/include").rglob("*.h"))
    assert len(headers) >= 100
    assert all(mode(h) == 0o444 for h in headers)

    # Symlinks, modes, empty directories.
    assert os.readlink(w / "usr/lib/libsample.so") == "libsample.so.1"
    assert os.readlink(w / "boot/loader") == "loader.efi"
    for rel in ("bin/cat", "bin/echo", "sbin/init", "usr/bin/hello", "boot/loader.efi"):
        assert mode(w / rel) == 0o555, rel
    assert mode(w / "usr/bin/su") == 0o4555
    assert mode(w / "usr/lib/libsample.a") == 0o444
    assert mode(w / "boot/defaults/loader.conf") == 0o444
    assert mode(w / "etc/master.passwd") == 0o600
    assert mode(w / "etc/group") == 0o644
    assert mode(w / "tmp") == 0o1777
    assert mode(w / "var/empty") == 0o555
    assert list((w / "var/empty").iterdir()) == [] and list((w / "mnt").iterdir()) == []
    assert (w / "etc/master.passwd").read_bytes() == (src / "etc/master.passwd").read_bytes()
    assert (w / "etc/group").read_bytes() == (src / "etc/group").read_bytes()
    assert "auditdistd:*:78:77:" in (w / "etc/passwd").read_text()

    assert sorted(p.name for p in (k / "boot/kernel").iterdir()) == ["kernel", "sample.ko", "samplefs.ko"]
    assert mode(k / "boot/kernel/kernel") == 0o555

    # The binaries are real host programs.
    assert "Hello from the fruix_dagster sample world!" in subprocess.run(
        [w / "usr/bin/hello"], capture_output=True, text=True, check=True).stdout
    assert subprocess.run([w / "bin/echo", "a", "b"], capture_output=True, text=True,
                          check=True).stdout == "a b\n"
    boot = subprocess.run([k / "boot/kernel/kernel"], capture_output=True, text=True, check=True).stdout
    assert "FreeBSD 15.0-CURRENT GENERIC" in boot

    # FreeBSD's progress markers, in order, and real compile lines.
    assert_in_order(logs["buildworld"], WORLD_MARKERS)
    assert re.search(r">>> World built in \d+ seconds, ncpu: \d+, make -j2\n", logs["buildworld"])
    assert re.search(r"^cd \S+ && cc( -pipe)? -O2 -g0 .* -c bin/cat/cat.c -o ", logs["buildworld"], re.M)
    assert_in_order(logs["buildkernel"], KERNEL_MARKERS)
    assert re.search(r">>> Kernel\(s\)  GENERIC built in \d+ seconds, ncpu: \d+, make -j2\n",
                     logs["buildkernel"])
    assert_in_order(logs["installworld"], [">>> Installing everything started on ",
                                           ">>> Installing everything completed on "])
    assert_in_order(logs["installkernel"], [">>> Installing kernel GENERIC on ",
                                            ">>> Installing kernel GENERIC completed on "])

    # Objects went to $MAKEOBJDIRPREFIX/<srcdir>/amd64.amd64 (FreeBSD's OBJTOP).
    objtop = Path(f"{tmp_path}/obj{src.resolve()}/amd64.amd64")
    assert (objtop / "sys/GENERIC/kernel").is_file()
    assert (objtop / "bin/cat/cat.o").is_file()

    # Plain "make" prints the usage and succeeds.
    assert "buildworld" in run(make, "all", src, tmp_path / "obj")


def test_builds_from_read_only_copy_without_writing_to_it(tmp_path: Path) -> None:
    src = copy_src(tmp_path / "src")
    subprocess.run(["chmod", "-R", "a-w", str(src)], check=True)
    try:
        before = snapshot(src)
        run("make", "buildworld", src, tmp_path / "obj", jobs=2)
        run("bmake", "buildkernel", src, tmp_path / "obj", "KERNCONF=MINIMAL", jobs=2)
        after = snapshot(src)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(src)], check=True)
    assert after == before


def test_reproducible_across_makes_object_and_source_dirs(tmp_path: Path) -> None:
    """GNU make from one copy and bmake from another give identical stages."""
    a, b = tmp_path / "a", tmp_path / "b"
    full_build("make", copy_src(a / "src"), a)
    full_build("bmake", copy_src(b / "somewhere-else" / "src"), b, jobs=1)
    for stage_dir in ("stage-world", "stage-kernel"):
        da, db = digest(a / stage_dir), digest(b / stage_dir)
        assert len(da) >= (100 if stage_dir == "stage-world" else 5)
        assert da == db, {k: (da.get(k), db.get(k)) for k in set(da) | set(db) if da.get(k) != db.get(k)}


def test_sample_timestamp_makes_kernel_and_hello_differ(tmp_path: Path) -> None:
    src = copy_src(tmp_path / "src")
    full_build("make", src, tmp_path / "one", "SAMPLE_TIMESTAMP=yes")
    time.sleep(1.1)  # date +%s must move on
    full_build("make", src, tmp_path / "two", "SAMPLE_TIMESTAMP=yes")
    differ = set()
    for stage_dir in ("stage-world", "stage-kernel"):
        d1, d2 = digest(tmp_path / "one" / stage_dir), digest(tmp_path / "two" / stage_dir)
        assert d1.keys() == d2.keys()
        differ |= {f"{stage_dir}/{k}" for k in d1 if d1[k] != d2[k]}
    assert differ == {"stage-kernel/boot/kernel/kernel", "stage-world/usr/bin/hello"}
    out = subprocess.run([tmp_path / "one/stage-kernel/boot/kernel/kernel"], capture_output=True,
                         text=True, check=True).stdout
    assert re.search(r"GENERIC built at \d{9,}", out)


@pytest.mark.parametrize("target", ["installworld", "distribution", "installkernel"])
def test_install_targets_refuse_without_destdir(target: str, tmp_path: Path) -> None:
    out = run("make", target, SAMPLE, tmp_path / "obj", "DB_FROM_SRC=yes", check=False)
    assert f"ERROR: DESTDIR is not set: {target} refuses" in out


@pytest.mark.parametrize("target", ["installworld", "distribution"])
def test_db_from_src_missing_gives_freebsds_error(target: str, tmp_path: Path) -> None:
    assert subprocess.run(["id", "auditdistd"], capture_output=True).returncode != 0, \
        "this host has an auditdistd user; the check below needs one without"
    if target == "installworld":  # Makefile.inc1 wants a build first (toolchain-metadata.mk)
        run("bmake", "buildworld", SAMPLE, tmp_path / "obj", jobs=2)
    out = run("bmake", target, SAMPLE, tmp_path / "obj", f"DESTDIR={tmp_path}/stage", check=False)
    assert DB_ERROR in out.splitlines()
    assert not (tmp_path / "stage").exists()


@pytest.mark.parametrize("make", MAKES)
def test_kernfast_on_an_unconfigured_kernel_fails_as_freebsd_does(make: str, tmp_path: Path) -> None:
    """Makefile.inc1: defined(KERNFAST) skips config(8); nothing creates the kernel's
    object directory, so buildkernel stops at its first ``cd`` into it."""
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    kobj = obj / f"{str(src.resolve()).lstrip('/')}/amd64.amd64/sys/GENERIC"
    out = run(make, "buildkernel", src, obj, "KERNCONF=GENERIC", "KERNFAST=yes", jobs=2, check=False)
    assert ">>> stage 1: configuring the kernel" not in out
    assert f"cd: /{kobj.relative_to('/')}: No such file or directory" in out
    assert "*** Error code 2" in out and "Stop." in out
    assert "completed on" not in out
    assert not kobj.exists()
    # after a configuring build, the same KERNFAST build succeeds
    run(make, "buildkernel", src, obj, "KERNCONF=GENERIC", jobs=2)
    out = run(make, "buildkernel", src, obj, "KERNCONF=GENERIC", "KERNFAST=yes", jobs=2)
    assert ">>> Kernel(s)  GENERIC built in " in out


def test_bmake_dash_d_defines_the_knobs(tmp_path: Path) -> None:
    """``bmake -DKERNFAST`` / ``-DNO_CLEAN`` (global variables bmake does not export) count as defined."""
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    run("bmake", "buildkernel", src, obj, "KERNCONF=GENERIC", jobs=2)
    fast = run("bmake", "buildkernel", src, obj, "KERNCONF=GENERIC", "-DKERNFAST", jobs=2)
    assert ">>> stage 1:" not in fast and ">>> stage 2.1:" not in fast and not COMPILE.search(fast)
    run("bmake", "buildworld", src, obj, jobs=2)
    again = run("bmake", "buildworld", src, obj, "-DNO_CLEAN", jobs=2)
    assert ">>> stage 2.1:" not in again and not COMPILE.search(again)


def test_db_from_src_is_tested_with_defined(tmp_path: Path) -> None:
    """DB_FROM_SRC=no still means *on* (Makefile.inc1 ``.if defined(DB_FROM_SRC)``)."""
    assert subprocess.run(["id", "auditdistd"], capture_output=True).returncode != 0
    out = run("bmake", "distribution", SAMPLE, tmp_path / "obj", f"DESTDIR={tmp_path}/stage",
              "DB_FROM_SRC=no")
    assert DB_ERROR not in out
    assert (tmp_path / "stage/etc/master.passwd").exists()


def test_makeobjdirprefix_is_required(tmp_path: Path) -> None:
    p = subprocess.run(["env", "-u", "MAKEOBJDIRPREFIX", make_exe("make"), "buildworld"], cwd=SAMPLE,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert p.returncode != 0
    assert "ERROR: MAKEOBJDIRPREFIX is not set" in p.stdout


@pytest.mark.parametrize("make", MAKES)
@pytest.mark.parametrize("target", ["buildworld", "buildkernel"])
def test_sample_fail(make: str, target: str, tmp_path: Path) -> None:
    out = run(make, target, copy_src(tmp_path / "src"), tmp_path / "obj", f"SAMPLE_FAIL={target}",
              jobs=2, check=False)
    # bmake 20250804 under -j (contrib/bmake/unit-tests/jobs-error-nested.exp)
    assert re.search(r"^\*\*\* \[(cat|init_main)\.o\] Error code 1$", out, re.M)
    assert re.search(r'^make\[\d\]: stopped making "all" in /', out, re.M)
    assert "A failure has been detected in another branch of the parallel make" in out
    assert re.search(r"^/\S+/(bin/cat/cat|sys/kern/init_main)\.c:1:1: error: ", out, re.M)
    markers = WORLD_MARKERS if target == "buildworld" else KERNEL_MARKERS
    assert_in_order(out, markers[:-2])  # up to the last stage marker
    assert "completed on" not in out


@pytest.mark.parametrize("make", MAKES)
def test_sample_fail_in_an_install_target(make: str, tmp_path: Path) -> None:
    out = run(make, "distribution", SAMPLE, tmp_path / "obj", f"DESTDIR={tmp_path}/stage",
              "DB_FROM_SRC=yes", "SAMPLE_FAIL=distribution", check=False)
    assert_in_order(out, ["===> etc (distribution)", "SAMPLE_FAIL=distribution",
                          "*** Error code 71", "Stop.", "make[3]: stopped in "])
    assert ">>> " not in out
    assert not (tmp_path / "stage/etc/master.passwd").exists()


def test_generic_and_minimal_kernels_differ(tmp_path: Path) -> None:
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    boots = {}
    for conf in ("GENERIC", "MINIMAL"):
        log = run("bmake", "buildkernel", src, obj, f"KERNCONF={conf}", jobs=2)
        assert f">>> Kernel build for {conf} completed on" in log
        run("bmake", "installkernel", src, obj, f"KERNCONF={conf}", f"DESTDIR={tmp_path}/{conf}",
            "DB_FROM_SRC=yes")
        kernel = tmp_path / conf / "boot/kernel/kernel"
        boots[conf] = subprocess.run([kernel], capture_output=True, text=True, check=True).stdout
    generic, minimal = (tmp_path / c / "boot/kernel" for c in ("GENERIC", "MINIMAL"))
    assert (generic / "kernel").read_bytes() != (minimal / "kernel").read_bytes()
    assert "INET SMP" in boots["GENERIC"] and "lo0:" in boots["GENERIC"]
    assert "INET" not in boots["MINIMAL"] and "MINIMAL" in boots["MINIMAL"]
    assert sorted(p.name for p in minimal.iterdir()) == ["kernel", "samplefs.ko"]


def test_unknown_kernconf_and_unbuilt_kernel_fail(tmp_path: Path) -> None:
    out = run("make", "buildkernel", SAMPLE, tmp_path / "obj", "KERNCONF=NOPE", check=False)
    assert re.search(r"^make\[1\]: /\S+/Makefile.inc1:\d+: Missing KERNCONF /\S+/sys/amd64/conf/NOPE$",
                     out, re.M)
    out = run("make", "buildkernel", SAMPLE, tmp_path / "obj", "KERNCONF=NOPE", "SAMPLE_RELEASE=14",
              check=False)
    assert "ERROR: Missing kernel configuration file(s) (NOPE)." in out
    out = run("make", "installkernel", SAMPLE, tmp_path / "obj", "KERNCONF=MINIMAL",
              f"DESTDIR={tmp_path}/stage", "DB_FROM_SRC=yes", check=False)
    assert 'ERROR: No kernel "MINIMAL" to install.' in out
    out = run("make", "installworld", SAMPLE, tmp_path / "obj", f"DESTDIR={tmp_path}/stage",
              "DB_FROM_SRC=yes", check=False)
    assert "A build is required first.  You may have the wrong MAKEOBJDIRPREFIX set." in out


@pytest.mark.parametrize("make", MAKES)
def test_kernfast_and_without_clean_rebuild_only_what_changed(make: str, tmp_path: Path) -> None:
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    run(make, "buildkernel", src, obj, jobs=2)
    # KERNFAST is tested with defined(): "no" turns it on too
    fast = run(make, "buildkernel", src, obj, "KERNCONF=GENERIC", "KERNFAST=no", jobs=2)
    assert_in_order(fast, [">>> stage 2.3: build tools", ">>> stage 3.1: building everything",
                           ">>> Kernel(s)  GENERIC built in "])
    assert ">>> stage 1:" not in fast and ">>> stage 2.1:" not in fast
    assert not COMPILE.search(fast)
    time.sleep(1.1)  # bmake compares mtimes in whole seconds
    with open(src / "sys/kern/subr_prf.c", "a") as f:
        f.write("/* changed */\n")
    # KERNFAST=NAME without KERNCONF is Makefile.inc1's shorthand for KERNCONF=NAME -DKERNFAST
    fast = run(make, "buildkernel", src, obj, "KERNFAST=GENERIC", jobs=2)
    assert ">>> Kernel build for GENERIC started on " in fast and ">>> stage 1:" not in fast
    assert COMPILE.findall(fast) == [" -c sys/kern/subr_prf.c -o "]
    assert re.search(r"-o kernel ", fast)

    first = run(make, "buildworld", src, obj, jobs=2)
    again = run(make, "buildworld", src, obj, jobs=2)  # 15.0: incremental unless WITH_CLEAN
    assert ">>> stage 2.1:" not in again and not COMPILE.search(again)
    for knob in ("WITHOUT_CLEAN=no", "NO_CLEAN=", "NO_CLEAN=no"):  # defined(), whatever the value
        again = run(make, "buildworld", src, obj, knob, jobs=2)
        assert ">>> stage 2.1:" not in again and not COMPILE.search(again), knob
    assert ">>> World build completed on" in again
    clean = run(make, "buildworld", src, obj, "WITH_CLEAN=yes", jobs=2)
    assert ">>> stage 2.1: cleaning up the object tree" in clean
    assert len(COMPILE.findall(clean)) == len(COMPILE.findall(first)) >= 14


@pytest.mark.parametrize("make", MAKES)
def test_a_changed_header_rebuilds_exactly_its_includers(make: str, tmp_path: Path) -> None:
    """Per-object header dependencies, as FreeBSD's .depend files have them."""
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    run(make, "buildworld", src, obj, "WITHOUT_CLEAN=yes", jobs=2)
    includers = sorted(str(c.relative_to(src)) for c in src.rglob("*.c")
                       if re.search(r'#include [<"]libsample\.h[>"]', c.read_text()))
    assert len(includers) >= 5
    time.sleep(1.1)  # bmake compares mtimes in whole seconds
    with open(src / "lib/libsample/libsample.h", "a") as f:
        f.write("/* changed */\n")
    out = run(make, "buildworld", src, obj, "WITHOUT_CLEAN=yes", jobs=2)
    # (the lib32 shim libraries compile the library sources a second time)
    assert sorted(set(m.group(1) for m in re.finditer(r" -c (\S+\.c) -o ", out))) == includers


@pytest.mark.parametrize("make", MAKES)
def test_jobs_compile_in_parallel(make: str, tmp_path: Path) -> None:
    """A CC wrapper counts the compilers running at once: -j2 must reach 2."""
    running, counts = tmp_path / "running", tmp_path / "counts"
    running.mkdir()
    wrapper = tmp_path / "cc-wrapper"
    wrapper.write_text(f"""#!/bin/sh
touch {running}/$$
ls {running} | wc -l >> {counts}
sleep 0.2
rm -f {running}/$$
exec cc "$@"
""")
    wrapper.chmod(0o755)
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    for target in ("buildworld", "buildkernel"):
        counts.write_text("")
        run(make, target, src, obj, f"CC={wrapper}", jobs=2)
        seen = [int(n) for n in counts.read_text().split()]
        assert len(seen) >= 8 and max(seen) >= 2, (target, seen)


def test_extra_log_prints_many_lines_fast(tmp_path: Path) -> None:
    log = tmp_path / "log"
    started = time.monotonic()
    with open(log, "w") as f:
        p = subprocess.run(["env", f"MAKEOBJDIRPREFIX={tmp_path}/obj", make_exe("make"), "-j2",
                            "SAMPLE_EXTRA_LOG=1000000", "SAMPLE_EXTRA_LOG_STAGE=buildkernel",
                            "buildkernel"], cwd=SAMPLE, stdout=f, stderr=subprocess.STDOUT, timeout=120)
    elapsed = time.monotonic() - started
    assert p.returncode == 0
    n = 0
    with open(log) as f:
        for line in f:
            n += "(buildkernel, SAMPLE_EXTRA_LOG)" in line
    assert n == 1_000_000
    assert elapsed < 30
    assert ">>> Kernel(s)  GENERIC built in " in log.read_text()[-500:]


def _alive_with_cmdline(cmdline: bytes) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "cmdline").read_bytes() != cmdline:
                continue
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            pids.append(int(d.name))
    return pids


@pytest.mark.parametrize("make", MAKES)
def test_sample_sleep_is_silent_and_killed_with_the_process_group(make: str, tmp_path: Path) -> None:
    seconds = f"{40 + MAKES.index(make)}.{os.getpid() % 1000:03d}"  # a sleep of our own
    sleep_cmdline = b"sleep\0" + seconds.encode() + b"\0"
    log = tmp_path / "log"
    with open(log, "w") as f:
        p = subprocess.Popen(["env", f"MAKEOBJDIRPREFIX={tmp_path}/obj", make_exe(make), "-j2",
                              f"SAMPLE_SLEEP={seconds}", "buildworld"], cwd=copy_src(tmp_path / "src"),
                             stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while ">>> stage 4.4: building everything" not in log.read_text():
            assert p.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        while not _alive_with_cmdline(sleep_cmdline):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        size = log.stat().st_size
        time.sleep(1.5)
        assert p.poll() is None
        assert log.stat().st_size == size, "output while sleeping"
    finally:
        os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=20)
    deadline = time.monotonic() + 10
    while _alive_with_cmdline(sleep_cmdline):
        assert time.monotonic() < deadline, "the sleep survived the process group's SIGTERM"
        time.sleep(0.1)


def test_scripts_are_posix_sh_and_makefile_is_posix_make() -> None:
    scripts = sorted(SAMPLE.glob("tools/sample/*.sh")) + [SAMPLE / "sys/conf/newvers.sh"]
    assert len(scripts) >= 5
    for s in scripts:
        subprocess.run(["dash", "-n", str(s)], check=True)
        text = s.read_text()
        for gnuism in ("cp -a", "install -D", "du -b", "stat -c", "readlink -f", "sed -i",
                       "[[", "echo -e", "$'", "<<<", "pushd", "${!", "&>"):
            assert gnuism not in text, (s, gnuism)
        assert not re.search(r"^\s*(function|source|local|declare|typeset)\s", text, re.M), s
    checkbashisms = shutil.which("checkbashisms")
    assert checkbashisms, "checkbashisms (Debian devscripts) is installed by make test"
    if checkbashisms:
        p = subprocess.run([checkbashisms, "-p", "-x", *map(str, scripts)], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    makefile = (SAMPLE / "Makefile").read_text()
    for construct in ("ifeq", "ifdef", "ifndef", ".if", ".include", "$(shell", "$(wildcard",
                      "$(patsubst", ":=", "!=", "export "):
        assert construct not in makefile, construct
