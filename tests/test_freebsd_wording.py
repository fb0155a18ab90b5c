"""The sample tree's header lines, line for line, against FreeBSD's own makefiles.

The expected sequences come from tests/support/freebsd_wording.py, which says
which real Makefile.inc1 / Makefile.libcompat each one is written from.  Real
builds of the sample tree (bmake under -j2, GNU make without -j), for the
15.0/main, 14.x and 13.x wording.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import freebsd_wording as fw
from tests.test_sample_src import COMPILE, copy_src, run

# What keeps the objects (incremental) and what cleans, per release.
KEEP = {"15": (), "14": ("WITHOUT_CLEAN=yes",), "13": ("NO_CLEAN=yes",)}
CLEAN = {"15": ("WITH_CLEAN=yes",), "14": (), "13": ()}


@pytest.mark.parametrize("release", ["15", "14", "13"])
def test_every_target_prints_the_real_header_sequence(release: str, tmp_path: Path) -> None:
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    rel = f"SAMPLE_RELEASE={release}"
    first = run("bmake", "buildworld", src, obj, rel, *CLEAN[release], jobs=2)
    assert fw.skeleton(first) == fw.world(release, clean=True)
    again = run("bmake", "buildworld", src, obj, rel, *KEEP[release], jobs=2)
    assert fw.skeleton(again) == fw.world(release, clean=False, rebuild=True)
    if release == "15":
        # A clean build writes no .clean_build_epoch (Makefile.inc1 runs depend-cleanup.sh
        # only when not cleaning): the first incremental one cleans the world's objects
        # once more (tests/test_clean_epoch.py); the next keeps them.
        assert "\nCleaning up the object tree\n" in again
        again = run("bmake", "buildworld", src, obj, rel, *KEEP[release], jobs=2)
        assert fw.skeleton(again) == fw.world(release, clean=False, rebuild=True)
    assert not COMPILE.search(again), "an incremental build of an unchanged tree compiled something"
    default = run("make", "buildworld", src, obj, rel)
    assert fw.skeleton(default) == fw.world(release, clean=release != "15", rebuild=True, jobs=None)

    k = run("bmake", "buildkernel", src, obj, rel, *CLEAN[release], jobs=2)
    assert fw.skeleton(k) == fw.kernel(release, clean=True)
    k = run("bmake", "buildkernel", src, obj, rel, *KEEP[release], jobs=2)
    assert fw.skeleton(k) == fw.kernel(release, clean=False)
    k = run("bmake", "buildkernel", src, obj, rel, "KERNFAST=1", jobs=2)  # KERNFAST=NAME names a kernel
    assert fw.skeleton(k) == fw.kernel(release, clean=False, kernfast=True)

    stage = [f"DESTDIR={tmp_path}/stage", "DB_FROM_SRC=yes", rel]
    assert fw.skeleton(run("make", "installworld", src, obj, *stage)) == fw.installworld(release)
    dist = run("make", "distribution", src, obj, *stage)
    assert fw.skeleton(dist) == fw.distribution(release) == [] and ">>>" not in dist
    assert fw.skeleton(run("make", "installkernel", src, obj, *stage)) == fw.installkernel(release)


def test_clean_on_15_rebuilds_every_object_and_incremental_rebuilds_none(tmp_path: Path) -> None:
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    first = run("bmake", "buildworld", src, obj, jobs=2)
    objects = sorted(COMPILE.findall(first))
    assert len(objects) >= 20  # world and lib32 objects
    marker = next(Path(f"{obj}{src.resolve()}/amd64.amd64").glob("lib/libsample/*.o"))
    before = marker.stat().st_mtime_ns
    assert not COMPILE.search(run("bmake", "buildworld", src, obj, jobs=2))
    assert marker.stat().st_mtime_ns == before
    clean = run("bmake", "buildworld", src, obj, "WITH_CLEAN=yes", jobs=2)
    assert sorted(COMPILE.findall(clean)) == objects
    assert marker.stat().st_mtime_ns > before  # removed by stage 2.1 and compiled again
    assert ">>> Cleaning up the temporary build tree" in clean
    # 15.0 ignores WITHOUT_CLEAN (CLEAN is off already) and still cleans with WITH_CLEAN.
    both = run("bmake", "buildworld", src, obj, "WITH_CLEAN=yes", "WITHOUT_CLEAN=yes", jobs=2)
    assert sorted(COMPILE.findall(both)) == objects


def test_no_clean_on_14_and_later_prints_the_info_line(tmp_path: Path) -> None:
    out = run("make", "buildworld", copy_src(tmp_path / "src"), tmp_path / "obj", "NO_CLEAN=yes")
    assert re.search(r'^make\[1\]: /\S+/Makefile.inc1:\d+: The src.conf WITHOUT_CLEAN option can now be '
                     r"used instead of NO_CLEAN\.$", out, re.M)
    out = run("make", "buildworld", tmp_path / "src", tmp_path / "obj", "NO_CLEAN=yes", "SAMPLE_RELEASE=14")
    assert re.search(r'^make\[1\]: "/\S+/Makefile.inc1" line \d+: The src.conf WITHOUT_CLEAN', out, re.M)


@pytest.mark.parametrize("release", ["15", "14"])
def test_failure_forms_jobs_and_compat(release: str, tmp_path: Path) -> None:
    src, obj = copy_src(tmp_path / "src"), tmp_path / "obj"
    rel = f"SAMPLE_RELEASE={release}"
    j = run("bmake", "buildworld", src, obj, rel, "SAMPLE_FAIL=buildworld", jobs=2, check=False)
    c = run("make", "buildworld", src, obj, rel, "SAMPLE_FAIL=buildworld", check=False)
    cat = f"{src.resolve()}/bin/cat"
    assert re.search(rf"^{re.escape(cat)}/cat.c:1:1: error: unknown type name", j, re.M)
    assert "*** [cat.o] Error code 1\n\n" in j
    if release == "15":
        assert f'\nmake[4]: stopped making "all" in {cat}\nmake[4]: 1 error\n\n' in j
    else:
        assert f"\nmake[4]: stopped in {cat}\n1 error\n\n" in j
    assert "A failure has been detected in another branch of the parallel make\n\n" in j
    assert f"*** Error code 1\n\nStop.\nmake[4]: stopped in {cat}\n" in c
    assert "[cat.o]" not in c and "another branch" not in c
