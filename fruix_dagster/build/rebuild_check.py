"""The explicit reproducibility test: build the same source twice and compare the trees.

For one target, on its guest: resolve the source exactly as ``freebsd_source``
does, then in each of two build roots next to the configured one
(``<build_root>-rebuild-a`` and ``<build_root>-rebuild-b``) run the five make
steps from scratch (clean, forced: nothing is reused), collect the world and
kernel stages into the host store under ``<store.root>/rebuild-check/<target>/a``
and ``…/b`` (outside the entries the store's gc manages), and compare the
manifests (:mod:`fruix_dagster.history.compare`).  The slices are compared as
carved from each world stage.

Disk use on the guest: the first root's objects are removed once its stages
are collected; after a successful check both roots are emptied unless
``keep``.  After a failed step everything stays for diagnosis.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from fruix_dagster.build.make import STEP_NAMES, BuildPlan
from fruix_dagster.build.markers import Marker
from fruix_dagster.build.plan import plan_for_target, slice_globs
from fruix_dagster.build.run import Limits, run_step
from fruix_dagster.errors import GuestError
from fruix_dagster.fruix.source import resolve_source
from fruix_dagster.graph import SLICES, STAGES, spec
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.fence import check_build_root, prepare_no_root_stage, remove_tree
from fruix_dagster.guest.stage_stamp import make_stage_root
from fruix_dagster.history.compare import RebuildResult, compare
from fruix_dagster.session import GuestSession
from fruix_dagster.settings import Settings
from fruix_dagster.store import ArtifactStore, StoredTree
from fruix_dagster.store.store import remove_entry
from fruix_dagster.tree.manifest import Manifest
from fruix_dagster.tree.slices import select

Log = Callable[[str], None]
SIDES = ("a", "b")


def rebuild_roots(build_root: str) -> tuple[str, str]:
    check_build_root(build_root)
    return tuple(check_build_root(f"{build_root}-rebuild-{s}") for s in SIDES)  # type: ignore[return-value]


def rebuild_check(settings: Settings, target_name: str, *, session: GuestSession | None = None,
                  log: Log | None = None, keep: bool = False) -> RebuildResult:
    """Build ``target_name`` twice from the same source and compare; see the module docstring."""
    log = log or (lambda _m: None)
    settings.target(target_name)
    b = settings.build
    roots = rebuild_roots(b.build_root)
    own_session = session is None
    if session is None:
        session = GuestSession(settings, settings.guest_for(target_name), log)
    try:
        transport = session.transport
        session.require_devenv()
        src = resolve_source(transport, settings.source)
        log(f"rebuild check of {target_name}: source {src.source_store} ({src.store_hash[:16]}…), "
            f"build roots {roots[0]} and {roots[1]} on {transport.description}")
        host_dir = Path(settings.store.root) / "rebuild-check" / target_name
        limits = Limits(timeout_s=b.timeout_hours * 3600, silent_s=b.silent_timeout_minutes * 60)
        manifests: dict[str, list[Manifest]] = {asset: [] for asset in STAGES}
        stored: dict[str, list[str]] = {asset: [] for asset in STAGES}
        seconds = []
        for side, root in zip(SIDES, roots):
            plan = plan_for_target(settings, target_name, source_root=src.source_root,
                                   source_hash=src.store_hash, clean=True, build_root=root)
            _refuse_busy(transport, root)
            for sub in ("obj", "stage"):
                remove_tree(transport, root, f"{root}/{sub}")
            make_stage_root(transport, root, plan.stage_root)
            for asset in STAGES:  # NO_ROOT stages: a fresh METALOG, stage and METALOG owned by the user
                stage_dir = plan.stage_dir(asset)
                if plan.no_root_user:
                    prepare_no_root_stage(transport, root, stage_dir, plan.metalog(stage_dir), plan.no_root_user)
            started = time.monotonic()
            _build(session, plan, limits, log, side)
            seconds.append(time.monotonic() - started)
            store = ArtifactStore(host_dir / side, keep=1)
            for old in store.entries():
                remove_entry(old["path"])
            for asset in STAGES:
                guest_dir = plan.stage_dir(asset)
                no_root = bool(plan.no_root_user)
                tree: StoredTree = store.collect(transport, guest_dir, asset=asset, target=target_name,
                                                 key_files=settings.slices.key_files,
                                                 metalog=plan.metalog(guest_dir) if no_root else None,
                                                 id_etc=f"{plan.source_root}/etc" if no_root else None)
                manifests[asset].append(tree.manifest)
                stored[asset].append(str(tree.tree))
                log(f"build {side}: {asset} collected into {tree.path} ({tree.digest[:16]}…)")
            if not keep:
                remove_tree(transport, root, f"{root}/obj")
        comparisons = [compare(asset, *manifests[asset]) for asset in STAGES]
        for asset in SLICES:
            world_a, world_b = manifests[spec(asset).deps[0]]
            globs = slice_globs(settings, asset)
            comparisons.append(compare(asset, select(world_a, globs), select(world_b, globs)))
        notes = []
        if not keep:
            for root in roots:
                for sub in ("obj", "stage", "steps"):
                    remove_tree(transport, root, f"{root}/{sub}")
            notes.append("both build roots were emptied (keep them with --keep)")
        result = RebuildResult(
            target_name, src.source_store, src.store_hash, roots,
            {k: (v[0], v[1]) for k, v in stored.items()}, tuple(comparisons),
            (seconds[0], seconds[1]), keep, tuple(notes))
        log(f"rebuild check of {target_name}: {'identical' if result.identical else 'DIFFERS'}")
        return result
    finally:
        if own_session:
            session.close()


# $1 root: prints the pid holding the root's lock when that process is alive.
_BUSY = r'''
pid=$(cat "$1/.lock/pid" 2>/dev/null) || exit 0
s=$(ps -p "$pid" -o stat= 2>/dev/null) || exit 0
case "$s" in ""|*Z*) exit 0 ;; esac
echo "$pid"
'''


def _refuse_busy(transport, root: str) -> None:
    res = transport.sh(_BUSY, root).check(f"checking {root}")
    pid = res.stdout.decode().strip()
    if pid:
        raise GuestError(
            f"rebuild check: expected {root} on {transport.description} to be idle, but pid {pid} holds "
            f"{root}/.lock (another rebuild check is running); wait for it to finish and run again")


def _build(session: GuestSession, plan: BuildPlan, limits: Limits, log: Log, side: str) -> None:
    steps = DetachedSteps(session.transport, plan.build_root)

    def marker(m: Marker, elapsed: int | None) -> None:
        log(f"[{side}] {m.text}" if elapsed is None else f"[{side}] {m.text}   [{elapsed} s]")

    for name in STEP_NAMES:
        outcome = run_step(steps, plan.steps[name], limits=limits, on_marker=marker,
                           on_info=lambda msg: log(f"[{side}] {msg}"), force=True)
        log(f"[{side}] {name}: exit {outcome.exit_status} in {outcome.duration_s:.0f} s")
