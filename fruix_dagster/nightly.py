"""Whether anything changed since a target's last build, and its source now.

Plain Python for the nightly schedule and the source-change sensor: before
starting a run they ask the guest for its declared source store and compare
it, the plan's step fingerprints (:mod:`fruix_dagster.build.plan`) and the
slice inputs with the latest materializations — if nothing changed, the
scheduled run only re-reads ``freebsd_source``, whose unchanged data version
keeps every downstream asset fresh.
"""

from __future__ import annotations

from typing import Any, Mapping

from fruix_dagster.build.plan import plan_for_target, slice_inputs
from fruix_dagster.errors import FruixError
from fruix_dagster.fruix.source import resolve_source
from fruix_dagster.graph import LAST_STEP, SLICES, SOURCE_ASSET, spec
from fruix_dagster.session import GuestSession
from fruix_dagster.settings import Settings

__all__ = ["current_source_hash", "plan_for_target", "slice_inputs", "what_changed"]


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


def current_source_hash(settings: Settings, target: str) -> str:
    """What freebsd_source would record now, read from the guest (never boots a VM)."""
    guest = settings.guest_for(target)
    if guest.kind == "xcpng":
        # polling must never boot a VM; the nightly run boots it and decides step by step
        raise FruixError(f"guest {guest.name!r} is an xcpng VM: its source is read when a run boots it")
    session = GuestSession(settings, guest)
    try:
        return resolve_source(session.transport, settings.source).store_hash
    finally:
        session.close()
