"""The pinned build configuration and reused-step metadata, on real sample builds.

The steps run as the product runs them (build plan -> run_step -> detached
step on the local transport) on a copy of the sample tree, which reads
SRC_ENV_CONF, __MAKE_CONF and SRCCONF as share/mk does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fruix_dagster.build.buildconf import BuildConf, resolve
from fruix_dagster.build.make import plan_build
from fruix_dagster.build.run import run_step
from fruix_dagster.errors import BuildError, ConfigError
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.local import LocalTransport
from tests.test_sample_src import copy_src


def plan(root: Path, src: Path, conf: BuildConf | None = None, jobs: int = 2, clean: bool = False):
    return plan_build(build_root=str(root), make="bmake", jobs=jobs, source_root=str(src),
                      source_hash="h" * 64, target_name="amd64", target="amd64", target_arch="amd64", kernconf="GENERIC",
                      conf=conf, clean=clean)


def log_of(outcome) -> str:
    return Path(outcome.log_path).read_text()


def test_src_conf_changes_fingerprints_and_rebuilds(tmp_path):
    src, root = copy_src(tmp_path / "src"), tmp_path / "root"
    steps = DetachedSteps(LocalTransport(), str(root))
    plain = plan(root, src)
    conf = BuildConf(src_conf="WITHOUT_LIB32=yes\n", make_conf="CFLAGS+= -DPINNED\n")
    pinned = plan(root, src, conf)
    for name in ("buildworld", "buildkernel", "installworld", "distribution", "installkernel"):
        assert plain.steps[name].fingerprint != pinned.steps[name].fingerprint, name
    first = run_step(steps, plain.steps["buildworld"])
    assert ">>> stage 4.3.1: building lib32 shim libraries" in log_of(first)
    second = run_step(steps, pinned.steps["buildworld"])
    assert second.ran_make, "a changed src.conf must not reuse the earlier build"
    assert "shim libraries" not in log_of(second)
    assert run_step(steps, pinned.steps["buildworld"]).launch.action == "reused"
    # make decides by mtime: new CFLAGS rebuild nothing until a clean build (as in FreeBSD
    # without META_MODE); the clean build compiles every object with them.
    text = log_of(run_step(steps, plan(root, src, conf, clean=True).steps["buildworld"]))
    assert text.count(" -DPINNED ") >= 14 and "shim libraries" not in text
    assert (root / "conf/src.conf").read_text() == "WITHOUT_LIB32=yes\n"
    assert "SRCCONF=" + str(root / "conf/src.conf") in second.command
    assert "__MAKE_CONF=" + str(root / "conf/make.conf") in second.command
    assert "SRC_ENV_CONF=/dev/null" in second.command


def test_the_guests_own_configuration_does_not_reach_a_pinned_build(tmp_path, monkeypatch):
    """The guest's configuration (here: SRCCONF/__MAKE_CONF in the environment the
    guest's processes start with, pointing at its own files) is overridden.  The
    guest's real /etc/src.conf and /etc/make.conf: tests/test_guest_etc_conf.py."""
    src, root = copy_src(tmp_path / "src"), tmp_path / "root"
    guest_conf = tmp_path / "guest-src.conf"
    guest_conf.write_text("WITHOUT_LIB32=yes\nWITH_CLEAN=yes\n")
    guest_make = tmp_path / "guest-make.conf"
    guest_make.write_text("CFLAGS+= -DFROM_THE_GUEST\n")
    monkeypatch.setenv("SRCCONF", str(guest_conf))
    monkeypatch.setenv("__MAKE_CONF", str(guest_make))
    steps = DetachedSteps(LocalTransport(), str(root))
    out = log_of(run_step(steps, plan(root, src).steps["buildworld"]))
    assert ">>> stage 4.3.1: building lib32 shim libraries" in out
    assert "FROM_THE_GUEST" not in out and ">>> Cleaning up" not in out


def test_env_only_option_in_src_conf_is_refused_as_freebsd_does(tmp_path):
    src, root = copy_src(tmp_path / "src"), tmp_path / "root"
    steps = DetachedSteps(LocalTransport(), str(root))
    with pytest.raises(BuildError) as err:
        run_step(steps, plan(root, src, BuildConf(src_conf="WITH_META_MODE=yes\n")).steps["buildworld"])
    assert "Option META_MODE may only be defined in /dev/null, environment, or make argument" in str(err.value)
    conf = resolve(src_env=(("WITH_META_MODE", "yes"),))
    assert conf.meta_mode and conf.src_env_conf == "WITH_META_MODE=yes\n" and conf.src_conf == ""


def test_host_files_are_read_and_a_missing_one_is_one_error(tmp_path):
    f = tmp_path / "src.conf"
    f.write_text("WITHOUT_LIB32=yes\n")
    assert resolve(src_conf_file=str(f)).src_conf == "WITHOUT_LIB32=yes\n"
    with pytest.raises(ConfigError, match=r"build.make_conf_file: expected a readable UTF-8 host file"):
        resolve(make_conf_file=str(tmp_path / "nope"))


def test_reused_step_reports_the_run_that_built_it(tmp_path):
    src, root = copy_src(tmp_path / "src"), tmp_path / "root"
    steps = DetachedSteps(LocalTransport(), str(root))
    built = run_step(steps, plan(root, src, jobs=2).steps["buildworld"])
    assert built.build_jobs == 2
    later = plan(root, src, jobs=1)  # -jN is not part of the fingerprint
    assert later.steps["buildworld"].fingerprint == built.step.fingerprint
    reused = run_step(steps, later.steps["buildworld"])
    assert reused.launch.action == "reused"
    assert reused.build_jobs == 2 and " -j2 " in reused.command and " -j1 " in later.steps["buildworld"].command
    assert reused.duration_s == built.duration_s
    assert reused.stage_seconds == built.stage_seconds and "stage 4.4" in reused.stage_seconds
    assert reused.make_seconds == built.make_seconds is not None
    assert os.path.basename(reused.log_path) == "log"


def test_a_src_conf_at_the_top_of_the_tree_is_neutralized_by_the_pinned_srcconf(tmp_path):
    """share/mk/src.sys.mk (main, 15): ``.if exists(${SRCTOP}/src.conf) SRCCONF?=
    ${SRCTOP}/src.conf``.  It is a ``?=``: the SRCCONF the product always passes
    (the pinned file or /dev/null) wins, so the tree's own src.conf never takes
    part -- as on FreeBSD with SRCCONF set.  Without SRCCONF the sample reads it
    on 15 (not on 14, whose src.sys.mk has only ``SRCCONF?= /etc/src.conf``)."""
    from tests.test_sample_src import run as make_run

    src, root = copy_src(tmp_path / "src"), tmp_path / "root"
    (src / "src.conf").write_text("WITHOUT_LIB32=yes\n")
    shim = "building lib32 shim libraries"   # stage 4.3.1 on 15, 4.3 on 14
    assert "SRCCONF" not in os.environ
    others = ("__MAKE_CONF=/dev/null", "SRC_ENV_CONF=/dev/null")
    assert shim not in make_run("bmake", "buildworld", src, tmp_path / "o15", *others)
    assert shim in make_run("bmake", "buildworld", src, tmp_path / "o14", "SAMPLE_RELEASE=14", *others)
    assert shim in make_run("bmake", "buildworld", src, tmp_path / "o15b", "SRCCONF=/dev/null", *others)
    steps = DetachedSteps(LocalTransport(), str(root))
    out = log_of(run_step(steps, plan(root, src).steps["buildworld"]))
    assert shim in out, "the tree's src.conf reached a build whose settings pin SRCCONF"
    pinned = plan(root, src, BuildConf(src_conf="WITHOUT_LIB32=yes\n"))
    assert shim not in log_of(run_step(steps, pinned.steps["buildworld"]))
