"""What a target's build would do now: the plan, and whether anything changed.

Plain Python shared by the build assets (which run the plan) and by the
nightly schedule (which asks, before starting a run, whether the source store
or any build setting changed since the last materializations — if nothing
did, the scheduled run only re-reads ``freebsd_source``, whose unchanged data
version keeps every downstream asset fresh).
"""

from __future__ import annotations

from typing import Any, Mapping

from fruix_dagster.build.make import STEP_NAMES, BuildPlan, plan_build
from fruix_dagster.settings import Settings


def plan_for_target(settings: Settings, target_name: str, *, source_root: str, source_hash: str,
                    clean: bool = False, kernfast: bool = False) -> BuildPlan:
    b = settings.build
    t = settings.target(target_name)
    return plan_build(
        build_root=b.build_root, make=b.make, jobs=b.jobs, source_root=source_root,
        source_hash=source_hash, target=t.target, target_arch=t.target_arch, kernconf=t.kernconf,
        make_vars={name: b.make_vars_for(name) for name in STEP_NAMES},
        clean=b.clean or clean, kernfast=kernfast)


def slice_inputs(settings: Settings, slice_key: str, world_tree_sha256: str) -> dict[str, str]:
    """What a slice materialization records about its inputs (compared for reuse)."""
    return {"globs": ", ".join(getattr(settings.slices, slice_key)), "from_world_stage": world_tree_sha256}


def what_changed(settings: Settings, target_name: str, current_source_hash: str,
                 recorded: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Reasons a full run is needed (empty: nothing changed since the recorded builds).

    ``recorded`` maps each asset name to its latest materialization's metadata.
    """
    src = recorded.get("freebsd_source")
    if not src:
        return ["freebsd_source was never materialized"]
    if src.get("store_hash") != current_source_hash:
        return [f"source store changed ({str(src.get('store_hash'))[:12]} → {current_source_hash[:12]})"]
    plan = plan_for_target(settings, target_name, source_root=src["source_root"],
                           source_hash=current_source_hash)
    expected = {"world_build": "buildworld", "kernel_build": "buildkernel",
                "world_stage": "distribution", "kernel_stage": "installkernel"}
    reasons = []
    for asset, step in expected.items():
        meta = recorded.get(asset)
        if not meta:
            reasons.append(f"{asset} was never materialized")
        elif meta.get("step_fingerprint") != plan.steps[step].fingerprint:
            reasons.append(f"{asset}: build settings changed")
    world = recorded.get("world_stage") or {}
    for asset, key in (("headers_slice", "headers"), ("bootloader_slice", "bootloader")):
        meta = recorded.get(asset)
        inputs = slice_inputs(settings, key, str(world.get("tree_sha256")))
        if not meta:
            reasons.append(f"{asset} was never materialized")
        elif any(meta.get(k) != v for k, v in inputs.items()):
            reasons.append(f"{asset}: slice spec or world stage changed")
    return reasons
