"""The harness's make invocations, as data.

Exactly the Phase 20.2 commands, run from ``source_root``::

    make -jN buildworld
    make -jN buildkernel KERNCONF=…
    make DESTDIR=<root>/stage/<target>/world DB_FROM_SRC=yes installworld
    make DESTDIR=<root>/stage/<target>/world DB_FROM_SRC=yes distribution
    make DESTDIR=<root>/stage/<target>/kernel DB_FROM_SRC=yes installkernel

each with ``MAKEOBJDIRPREFIX=<root>/obj`` in the environment (FreeBSD reads it
only from there), ``TARGET``/``TARGET_ARCH`` on the command line and the
validated make variables from the settings file.  Variables are argv words, so
a value with spaces, quotes or ``$(…)`` reaches make unchanged.

The stage directories are per ``[[target]]`` (``<target>`` is its name, the
partition key), not the harness's shared ``stage-world``/``stage-kernel``:
several targets may share a guest and a build root, and two of them may share
``TARGET.TARGET_ARCH`` (GENERIC and MINIMAL kernels), so neither the object
tree's name nor a shared directory tells whose tree a stage holds.  One layout
for every target, also the only one: a single target keeps no harness names,
so no code path depends on how many targets there are.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fruix_dagster.build.buildconf import BuildConf
from fruix_dagster.build.fingerprint import fingerprint, output_argv
from fruix_dagster.guest.detached import StepSpec
from fruix_dagster.graph import KERNEL_STEPS, STEP_NAMES, WORLD_STEPS, spec
from fruix_dagster.guest.fence import check_build_root

__all__ = ["KERNEL_STEPS", "STEP_NAMES", "WORLD_STEPS", "BuildPlan", "MakeStep", "plan_build", "stage_root"]

_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class MakeStep(StepSpec):
    """A make invocation: a detached step whose command is make."""

    #: the make.conf/src.conf/src-env.conf it reads (written before it runs)
    conf: BuildConf | None = field(default=None, compare=False)

    @property
    def command(self) -> str:
        """The command as a person would type it (shell-quoted)."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class BuildPlan:
    build_root: str
    source_root: str
    jobs: int
    steps: dict[str, MakeStep] = field(hash=False)
    no_root_user: str = ""
    #: the ``[[target]]`` name: its stages are ``stage/<target_name>/{world,kernel}``
    target_name: str = ""

    def metalog(self, stage_dir: str) -> str:
        """The METALOG of a NO_ROOT stage: beside the stage, not in it (it is not part of the tree)."""
        return f"{stage_dir}.METALOG"

    @property
    def obj_dir(self) -> str:
        return f"{self.build_root}/obj"

    @property
    def stage_root(self) -> str:
        """This target's stage directories' parent, ``<build_root>/stage/<target>``."""
        return stage_root(self.build_root, self.target_name)

    def stage_dir(self, asset: str) -> str:
        """The directory a stage asset installs into (DESTDIR of its steps)."""
        return f"{self.stage_root}/{spec(asset).stage_dir}"

    @property
    def world_stage(self) -> str:
        return self.stage_dir("world_stage")

    @property
    def kernel_stage(self) -> str:
        return self.stage_dir("kernel_stage")

    def artifact_dir(self, slice_name: str) -> str:
        return f"{self.build_root}/artifact-{slice_name}"


def stage_root(build_root: str, target_name: str) -> str:
    """``<build_root>/stage/<target_name>``: a [[target]] name is a path component by its pattern."""
    if not _TARGET_NAME.fullmatch(target_name):
        raise ValueError(f"expected a [[target]] name ([A-Za-z0-9][A-Za-z0-9_-]*), got {target_name!r}")
    return f"{build_root}/stage/{target_name}"


def _vars(pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"{k}={v}" for k, v in pairs]


def plan_build(
    *,
    build_root: str,
    make: str,
    jobs: int,
    source_root: str,
    source_hash: str,
    target_name: str,
    target: str,
    target_arch: str,
    kernconf: str,
    make_vars: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    clean: bool = False,
    kernfast: bool = False,
    no_root_user: str = "",
    conf: BuildConf | None = None,
) -> BuildPlan:
    """All five steps with their fingerprints chained along the dependencies.

    ``make_vars`` maps a step name to its extra ``NAME=value`` pairs.
    ``kernfast`` adds ``KERNFAST=yes`` to an incremental buildkernel (the
    caller decides: only when the kernel config is unchanged since the last
    kernel build in this build root); it is not part of the fingerprint.
    ``no_root_user`` stages the install steps as that guest user with
    ``NO_ROOT=yes`` (``-DNO_ROOT``: every make defines it that way too) and
    ``METALOG=<stage>.METALOG``, run through ``su -m USER -c 'COMMAND'``
    (FreeBSD's and util-linux's su; ``SHELL=/bin/sh`` so that su runs the
    command with sh even when the user's shell is nologin).
    """
    extra = make_vars or {}
    root = check_build_root(build_root)
    stages = stage_root(root, target_name)
    conf = conf or BuildConf()
    # __MAKE_CONF, SRCCONF, SRC_ENV_CONF in the environment (build/buildconf.py)
    env = ["env", f"MAKEOBJDIRPREFIX={root}/obj", *conf.env(root), make]
    common = [f"TARGET={target}", f"TARGET_ARCH={target_arch}"]
    # CLEAN per release (tools/build/options/WITH_CLEAN, WITHOUT_CLEAN): 14.x
    # cleans unless WITHOUT_CLEAN, 15.0/main keep objects unless WITH_CLEAN,
    # and each ignores the knob that asks for its default.  So WITH_CLEAN
    # cleans and WITHOUT_CLEAN keeps on both (13.x needs NO_CLEAN in make_vars).
    incremental = ["WITH_CLEAN=yes"] if clean else ["WITHOUT_CLEAN=yes"]
    world, kernel_stage = (f"{stages}/{spec(a).stage_dir}" for a in ("world_stage", "kernel_stage"))
    world_destdir = [f"DESTDIR={world}", "DB_FROM_SRC=yes"]
    kernel_destdir = [f"DESTDIR={kernel_stage}", "DB_FROM_SRC=yes"]
    kernel = [f"KERNCONF={kernconf}"]
    v = {name: _vars(extra.get(name, ())) for name in STEP_NAMES}
    argvs: dict[str, list[str]] = {
        "buildworld": [*env, f"-j{jobs}", *common, *v["buildworld"], *incremental, "buildworld"],
        "buildkernel": [*env, f"-j{jobs}", *common, *kernel, *v["buildkernel"], *incremental,
                        *(["KERNFAST=yes"] if kernfast and not clean else []), "buildkernel"],
        "installworld": [*env, *common, *world_destdir, *v["installworld"], "installworld"],
        "distribution": [*env, *common, *world_destdir, *v["distribution"], "distribution"],
        "installkernel": [*env, *common, *kernel, *kernel_destdir, *v["installkernel"],
                          "installkernel"],
    }
    upstream = {
        "buildworld": (),
        "buildkernel": ("buildworld",),
        "installworld": ("buildworld",),
        "distribution": ("installworld",),
        "installkernel": ("buildkernel",),
    }
    if no_root_user:
        for name, stage in (("installworld", world), ("distribution", world),
                            ("installkernel", kernel_stage)):
            inner = argvs[name]
            inner = [*inner[:-1], "NO_ROOT=yes", f"METALOG={stage}.METALOG", inner[-1]]
            argvs[name] = ["env", "SHELL=/bin/sh", "su", "-m", no_root_user, "-c", shlex.join(inner)]
    steps: dict[str, MakeStep] = {}
    for name in STEP_NAMES:
        argv = tuple(argvs[name])
        parts: dict[str, Any] = {
            "step": name,
            "argv": output_argv(argv),
            "cwd": source_root,
            "source": source_hash,
            "upstream": [steps[u].fingerprint for u in upstream[name]],
            "conf": conf.fingerprint_part(),
        }
        steps[name] = MakeStep(name, argv, source_root, fingerprint(**parts), conf)
    return BuildPlan(root, source_root, jobs, steps, no_root_user, target_name)
