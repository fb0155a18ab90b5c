"""The build graph as data: the one registry of the assets.

::

    freebsd_source ─► world_build ─► world_stage ─┬─► headers_slice
          │                 │                     └─► bootloader_slice
          │                 ▼
          └──────────► kernel_build ─► kernel_stage

Every asset's name, role (``source``, ``build``, ``stage``, ``slice``),
upstream assets, the make steps it runs, the artifact shapes it must hold
(its blocking checks), the key files it is the home of (``sha256:<path>``
metadata the report reads), a slice's settings key and default globs, and
the make-step groups ``WORLD_STEPS``/``KERNEL_STEPS``.  Everything that names
assets reads them from here: the Dagster layer (``defs/``), the report, the
history frame, the CLI, the nightly decision and the rebuild check.

Plain data; imports nothing from fruix_dagster (the settings and the tree
layer read their defaults from it), never dagster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOURCE, BUILD, STAGE, SLICE = "source", "build", "stage", "slice"
ROLES = (SOURCE, BUILD, STAGE, SLICE)
#: the Dagster asset group of the build graph
GROUP = "fruix_build"

#: make targets, in the order the harness runs them
STEP_NAMES = ("buildworld", "buildkernel", "installworld", "distribution", "installkernel")
#: the make targets ``build.world_make_vars`` / ``build.kernel_make_vars`` apply to
WORLD_STEPS = ("buildworld", "installworld", "distribution")
KERNEL_STEPS = ("buildkernel", "installkernel")

#: the key files of the harness (hashed on the guest when collected, recorded as sha256:<path>)
KERNEL_FILE = "boot/kernel/kernel"
LOADER_EFI = "boot/loader.efi"
PARAM_H = "usr/include/sys/param.h"
DEFAULT_KEY_FILES = (KERNEL_FILE, LOADER_EFI, PARAM_H)


@dataclass(frozen=True)
class AssetSpec:
    name: str
    role: str
    deps: tuple[str, ...]
    description: str
    #: make steps it runs, in order (builds and stages)
    steps: tuple[str, ...] = ()
    #: a stage: the build asset and its step the install needs as it was planned
    installs_from: tuple[str, str] | None = None
    #: a stage: its directory below the target's stage root, ``<build_root>/stage/<target>/``
    #: (:attr:`fruix_dagster.build.make.BuildPlan.stage_root`)
    stage_dir: str = ""
    #: the artifact shapes a blocking check requires as non-empty files
    required_files: tuple[str, ...] = ()
    #: the key files whose recorded hash the report takes from this asset
    key_files: tuple[str, ...] = ()
    #: a slice: its key in ``[slices]`` and its default globs
    slice_key: str = ""
    default_globs: tuple[str, ...] = ()
    #: the name the harness's report gives its path and size (``<report_name>=``, ``…_size=``)
    report_name: str = ""
    code_version: str = "1"

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("freebsd_source", SOURCE, (),
              "The declared FreeBSD source store the guest builds from."),
    AssetSpec("world_build", BUILD, ("freebsd_source",),
              "World object tree: make -jN buildworld.", steps=("buildworld",)),
    AssetSpec("kernel_build", BUILD, ("freebsd_source", "world_build"),
              "Kernel object tree: make -jN buildkernel KERNCONF=….", steps=("buildkernel",)),
    AssetSpec("world_stage", STAGE, ("world_build",),
              "Staged world: installworld + distribution with DB_FROM_SRC=yes.",
              steps=("installworld", "distribution"), installs_from=("world_build", "buildworld"),
              stage_dir="world", report_name="world_stage"),
    AssetSpec("kernel_stage", STAGE, ("kernel_build",),
              "Staged kernel: installkernel with DB_FROM_SRC=yes.",
              steps=("installkernel",), installs_from=("kernel_build", "buildkernel"),
              stage_dir="kernel", required_files=(KERNEL_FILE,), key_files=(KERNEL_FILE,),
              report_name="kernel_stage"),
    AssetSpec("headers_slice", SLICE, ("world_stage",),
              "Development headers carved from the stored world stage (no guest needed).",
              required_files=(PARAM_H, "usr/share/mk/bsd.prog.mk"), key_files=(PARAM_H,),
              slice_key="headers", default_globs=("usr/include/**", "usr/share/mk/**"),
              report_name="headers_stage"),
    AssetSpec("bootloader_slice", SLICE, ("world_stage",),
              "Loader files carved from the stored world stage (no guest needed).",
              required_files=(LOADER_EFI, "boot/defaults/loader.conf", "boot/lua/loader.lua"),
              key_files=(LOADER_EFI,), slice_key="bootloader",
              default_globs=("boot/loader*", "boot/*.efi", "boot/defaults/**", "boot/lua/**"),
              report_name="bootloader_stage"),
)

BY_NAME: dict[str, AssetSpec] = {a.name: a for a in ASSETS}
#: every asset name, in graph order
NAMES: tuple[str, ...] = tuple(BY_NAME)


def spec(name: str) -> AssetSpec:
    return BY_NAME[name]


def names(*roles: str) -> tuple[str, ...]:
    """The assets of these roles, in graph order."""
    return tuple(a.name for a in ASSETS if a.role in roles)


SOURCE_ASSET: str = names(SOURCE)[0]
#: the observable source upstream of freebsd_source: a cheap look at the guest's source
#: (defs/observation.py), a direct upstream of every asset that reads the source tree
GUEST_SOURCE = "guest_source"
BUILDS: tuple[str, ...] = names(BUILD)
STAGES: tuple[str, ...] = names(STAGE)
SLICES: tuple[str, ...] = names(SLICE)
#: the trees kept in the store (stages and slices)
ARTIFACTS: tuple[str, ...] = names(STAGE, SLICE)
#: stage → the build asset it installs from
BUILD_OF: dict[str, str] = {a.name: a.installs_from[0] for a in ASSETS if a.installs_from}
#: the fingerprint that identifies a build or stage materialization: that of its last step
LAST_STEP: dict[str, str] = {a.name: a.steps[-1] for a in ASSETS if a.steps}
REQUIRED_FILES: dict[str, tuple[str, ...]] = {a.name: a.required_files for a in ASSETS if a.required_files}
CODE_VERSIONS: dict[str, str] = {a.name: a.code_version for a in ASSETS}
#: slice key (``[slices]`` table) → default globs
DEFAULT_SLICES: dict[str, tuple[str, ...]] = {a.slice_key: a.default_globs for a in ASSETS if a.slice_key}


def key_file_home(path: str) -> str:
    """The asset whose recorded ``sha256:<path>`` the report shows."""
    for a in ASSETS:
        if path in a.key_files:
            return a.name
    raise KeyError(path)


def check_name(path: str) -> str:
    """The name of the blocking check that ``path`` is a non-empty file."""
    return "has_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
