"""Whether anything changed since a target's last build, and its source now.

Plain Python for the nightly schedule: before starting a run it looks at
the guest's source cheaply (:mod:`fruix_dagster.source_probe`, no tree is
streamed or hashed) and compares it, the plan's step fingerprints (:mod:`fruix_dagster.build.plan`) and the
slice inputs with the latest materializations — if nothing changed, the
scheduled run only re-reads ``freebsd_source``, whose unchanged data version
keeps every downstream asset fresh.
"""

from __future__ import annotations

from typing import Any, Mapping

from fruix_dagster.build.plan import plan_for_target, slice_inputs
from fruix_dagster.errors import FruixError
from fruix_dagster.graph import LAST_STEP, SLICES, SOURCE_ASSET, spec
from fruix_dagster.settings import Settings
from fruix_dagster.source_probe import observe

__all__ = ["plan_for_target", "slice_inputs", "source_reasons", "what_changed"]


def what_changed(settings: Settings, target_name: str, current_source_hash: str,
                 recorded: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Reasons a full run is needed (empty: nothing changed since the recorded builds).

    ``recorded`` maps each asset name to its latest materialization's metadata.
    """
    src = recorded.get(SOURCE_ASSET)
    if not src:
        return [f"{SOURCE_ASSET} was never materialized"]
    if src.get("store_hash") != current_source_hash:
        return [f"source store changed ({str(src.get('store_hash'))[:12]} → {current_source_hash[:12]})"]
    plan = plan_for_target(settings, target_name, source_root=src.get("build_path") or src["source_root"],
                           source_hash=current_source_hash)
    reasons = []
    for asset, step in LAST_STEP.items():
        meta = recorded.get(asset)
        if not meta:
            reasons.append(f"{asset} was never materialized")
        elif meta.get("step_fingerprint") != plan.steps[step].fingerprint:
            reasons.append(f"{asset}: build settings changed")
    for asset in SLICES:
        world = recorded.get(spec(asset).deps[0]) or {}
        meta = recorded.get(asset)
        inputs = slice_inputs(settings, spec(asset).slice_key, str(world.get("tree_sha256")))
        if not meta:
            reasons.append(f"{asset} was never materialized")
        elif any(meta.get(k) != v for k, v in inputs.items()):
            reasons.append(f"{asset}: slice spec or world stage changed")
    return reasons


def source_reasons(settings: Settings, target: str,
                   recorded_source: Mapping[str, Any] | None) -> tuple[list[str], str | None]:
    """(reasons to build, the recorded store hash when the source is unchanged) — cheaply.

    Never streams or hashes the tree: the guest's source is looked at with
    :func:`fruix_dagster.source_probe.observe` and compared with the
    observation ``freebsd_source`` recorded when it last read it
    (``source_observation``).  Never boots a VM (an xcpng guest: a full run,
    which boots it and decides step by step).
    """
    if settings.guest_for(target).kind == "xcpng":
        return ["xcpng guest: the run boots the VM and decides step by step"], None
    if not recorded_source:
        return [f"{SOURCE_ASSET} was never materialized"], None
    try:
        now = observe(settings, target)
    except FruixError as exc:
        return [f"guest not readable now ({str(exc).splitlines()[0]})"], None
    if recorded_source.get("source_observation") != now.data_version:
        return [f"source changed since {SOURCE_ASSET} read it ({now.detail})"], None
    return [], str(recorded_source["store_hash"])
