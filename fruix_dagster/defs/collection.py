"""Bringing trees into the store, or reusing what is already there.

A stage is collected from the guest unless no make step ran and the store
still holds the tree its last materialization recorded for exactly this
step; a slice is carved from the stored world stage unless the same world
stage and globs were carved before.  ``--force`` never reuses.
"""

from __future__ import annotations

from typing import Any

from fruix_dagster.build.make import BuildPlan
from fruix_dagster.build.run import StepOutcome
from fruix_dagster.defs.build_run import BuildRun
from fruix_dagster.defs.records import Recorded, latest
from fruix_dagster.errors import FruixError, GuestError
from fruix_dagster.store import StoredTree

#: metadata key of the build root's size; absent (with ``BUILD_ROOT_SIZE_UNKNOWN`` saying why)
#: when it could not be measured
BUILD_ROOT_SIZE = "build_root_size_bytes"
BUILD_ROOT_SIZE_UNKNOWN = "build_root_size_unknown"


def reusable_record(run: BuildRun, asset: str, **expected: Any) -> Recorded | None:
    """The latest materialization of asset for this target if it recorded exactly
    ``expected`` and its stored tree is still in the store (else None)."""
    if run.options.force:
        return None
    rec = latest(run.context.instance, asset, run.target.name)
    if rec is None or any(rec.metadata.get(k) != v for k, v in expected.items()):
        return None
    try:
        run.store.open(str(rec.metadata.get("path")))
    except FruixError:
        return None
    return rec


def collect(run: BuildRun, guest_dir: str, asset: str, plan: BuildPlan | None = None) -> StoredTree:
    """Collect a stage; a NO_ROOT stage (``plan.no_root_user``) with its METALOG."""
    no_root = plan is not None and bool(plan.no_root_user)
    stored = run.store.collect(run.session.transport, guest_dir, asset=asset,
                               target=run.target.name, key_files=run.settings.slices.key_files,
                               metalog=plan.metalog(guest_dir) if no_root else None,
                               id_etc=f"{plan.source_root}/etc" if no_root else None)
    run.log.info(
        f"{asset}: {guest_dir} collected into {stored.path} "
        f"({stored.manifest.file_count} files, {stored.manifest.total_size} bytes"
        f"{', identical tree already stored' if stored.reused else ''})")
    return stored


def collect_or_reuse(run: BuildRun, guest_dir: str, asset: str, outcomes: list[StepOutcome],
                     plan: BuildPlan | None = None) -> tuple[StoredTree, dict[str, Any]]:
    """The stored stage and its build-root size metadata: collected and measured now, or
    — when no make step ran and the store holds the tree recorded for exactly this
    step — reused with the size recorded then."""
    fingerprint = outcomes[-1].step.fingerprint
    if not any(o.ran_make for o in outcomes):
        rec = reusable_record(run, asset, step_fingerprint=fingerprint, guest_path=guest_dir)
        if rec is not None:
            run.log.info(f"{asset}: no make step ran; reusing stored {rec.metadata['path']}")
            size = ({BUILD_ROOT_SIZE: rec.metadata[BUILD_ROOT_SIZE]} if BUILD_ROOT_SIZE in rec.metadata
                    else build_root_size(run))
            return run.store.open(str(rec.metadata["path"])), size
    return collect(run, guest_dir, asset, plan), build_root_size(run)


def build_root_size(run: BuildRun) -> dict[str, Any]:
    """``{build_root_size_bytes: n}`` measured with ``du -sk``; when du fails, a warning
    and ``{build_root_size_unknown: why}`` instead — never a made-up 0."""
    root = run.settings.build.build_root
    try:
        return {BUILD_ROOT_SIZE: run.session.transport.used_bytes(root)}
    except GuestError as exc:
        run.log.warning(f"build root size unknown: {exc}")
        return {BUILD_ROOT_SIZE_UNKNOWN: str(exc)}


def carve_or_reuse(run: BuildRun, asset: str, world_path: str, globs: tuple[str, ...],
                   inputs: dict[str, str]) -> StoredTree:
    """The slice carved from the stored world stage, or the one carved before from the same inputs."""
    rec = reusable_record(run, asset, **inputs)
    if rec is not None:
        run.log.info(f"{asset}: same world stage and globs as before; reusing {rec.metadata['path']}")
        return run.store.open(str(rec.metadata["path"]))
    return run.store.carve(world_path, globs, asset=asset, target=run.target.name)
