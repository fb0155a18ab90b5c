"""The build plan of a target: what its make steps are, from the settings and its source.

Plain Python.  Every build and stage asset runs this plan, the nightly
decision compares its fingerprints with the recorded ones, and the rebuild
check plans the same steps in its own build roots.  ``slice_inputs`` is the
slice counterpart: what a slice's materialization depends on.
"""

from __future__ import annotations

from fruix_dagster.build.make import STEP_NAMES, BuildPlan, plan_build
from fruix_dagster.graph import spec
from fruix_dagster.settings import Settings


def plan_for_target(settings: Settings, target_name: str, *, source_root: str, source_hash: str,
                    clean: bool = False, kernfast: bool = False,
                    build_root: str | None = None) -> BuildPlan:
    """The five make steps of ``target_name``, in the configured build root (or ``build_root``)."""
    b = settings.build
    t = settings.target(target_name)
    return plan_build(
        build_root=build_root or b.build_root, make=b.make, jobs=b.jobs, source_root=source_root,
        source_hash=source_hash, target_name=t.name, target=t.target, target_arch=t.target_arch, kernconf=t.kernconf,
        make_vars={name: b.make_vars_for(name) for name in STEP_NAMES},
        clean=b.clean or clean, kernfast=kernfast, no_root_user=b.no_root_user,
        conf=b.build_conf())


def slice_globs(settings: Settings, asset: str) -> tuple[str, ...]:
    """The configured globs of a slice asset."""
    return tuple(getattr(settings.slices, spec(asset).slice_key))


def slice_inputs(settings: Settings, slice_key: str, world_tree_sha256: str) -> dict[str, str]:
    """What a slice materialization records about its inputs (compared for reuse).

    ``slice_key`` is the ``[slices]`` key (``headers``, ``bootloader``).
    """
    return {"globs": ", ".join(getattr(settings.slices, slice_key)), "from_world_stage": world_tree_sha256}
