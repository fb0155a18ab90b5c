"""The explicit reproducibility test: build the same source twice and compare the trees.

For one target, on its guest: resolve the source exactly as ``freebsd_source``
does, then in each of two build roots next to the configured one
(``<build_root>-rebuild-a`` and ``<build_root>-rebuild-b``) run the five make
steps from scratch (clean, forced: nothing is reused), collect the world and
kernel stages into the host store under ``<store.root>/rebuild-check/<target>/a``
and ``…/b`` (outside the entries the store's gc manages), and compare the
manifests.  The slices are compared as carved from each world stage.

Disk use on the guest: the first root's objects are removed once its stages
are collected; after a successful check both roots are emptied unless
``keep``.  After a failed step everything stays for diagnosis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fruix_dagster.build.make import BuildPlan, plan_build
from fruix_dagster.build.markers import Marker
from fruix_dagster.build.run import Limits, run_step
from fruix_dagster.errors import GuestError
from fruix_dagster.guest.fence import check_build_root, remove_tree
from fruix_dagster.history.diff import PathDiff, diff_manifests
from fruix_dagster.session import GuestSession
from fruix_dagster.settings import Settings
from fruix_dagster.store import ArtifactStore, StoredTree
from fruix_dagster.store.store import remove_entry
from fruix_dagster.tree.manifest import Manifest
from fruix_dagster.tree.slices import select

Log = Callable[[str], None]
#: the order the harness runs the steps in
STEP_ORDER = ("buildworld", "buildkernel", "installworld", "distribution", "installkernel")
SIDES = ("a", "b")


def rebuild_roots(build_root: str) -> tuple[str, str]:
    check_build_root(build_root)
    return tuple(check_build_root(f"{build_root}-rebuild-{s}") for s in SIDES)  # type: ignore[return-value]


@dataclass(frozen=True)
class TreeComparison:
    asset: str
    digest_a: str
    digest_b: str
    entries: int                      # entries in tree a
    diffs: tuple[PathDiff, ...]

    @property
    def identical(self) -> bool:
        return self.digest_a == self.digest_b

    def summary(self) -> str:
        if self.identical:
            return f"{self.asset}: identical (tree_sha256 {self.digest_a[:16]}…, {self.entries} entries)"
        return (f"{self.asset}: DIFFERS in {len(self.diffs)} of {self.entries} entries "
                f"(tree_sha256 {self.digest_a[:16]}… vs {self.digest_b[:16]}…)")


@dataclass(frozen=True)
class RebuildResult:
    target: str
    source_store: str
    store_hash: str
    build_roots: tuple[str, str]
    stored: dict[str, tuple[str, str]]          # stage asset → (tree a, tree b) on the host
    comparisons: tuple[TreeComparison, ...]
    seconds: tuple[float, float]
    kept_build_roots: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def identical(self) -> bool:
        return all(c.identical for c in self.comparisons)

    @property
    def differing_paths(self) -> dict[str, list[str]]:
        return {c.asset: [d.path for d in c.diffs] for c in self.comparisons if not c.identical}

    def render(self, max_paths: int = 50) -> str:
        lines = [
            f"# rebuild check of target {self.target}: the same source built twice from scratch",
            f"source_store={self.source_store}",
            f"store_hash={self.store_hash}",
            f"build_root_a={self.build_roots[0]}",
            f"build_root_b={self.build_roots[1]}",
            f"build_seconds={self.seconds[0]:.0f},{self.seconds[1]:.0f}",
        ]
        for asset, (a, b) in self.stored.items():
            lines.append(f"{asset}_a={a}")
            lines.append(f"{asset}_b={b}")
        for c in self.comparisons:
            lines.append(c.summary())
            for d in c.diffs[:max_paths]:
                lines.append(f"  {d.describe()}")
            if len(c.diffs) > max_paths:
                lines.append(f"  … and {len(c.diffs) - max_paths} more")
        lines.extend(f"# {n}" for n in self.notes)
        lines.append(f"rebuild_check={'identical' if self.identical else 'differs'}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "source_store": self.source_store, "store_hash": self.store_hash,
            "build_roots": list(self.build_roots), "identical": self.identical,
            "seconds": list(self.seconds), "stored": {k: list(v) for k, v in self.stored.items()},
            "trees": {c.asset: {"identical": c.identical, "tree_sha256_a": c.digest_a,
                                "tree_sha256_b": c.digest_b, "entries": c.entries,
                                "differing_paths": [d.path for d in c.diffs]}
                      for c in self.comparisons},
        }


def compare(asset: str, a: Manifest, b: Manifest) -> TreeComparison:
    return TreeComparison(asset, a.digest(), b.digest(), len(a), tuple(diff_manifests(a, b)))


def rebuild_check(settings: Settings, target_name: str, *, session: GuestSession | None = None,
                  log: Log | None = None, keep: bool = False) -> RebuildResult:
    """Build ``target_name`` twice from the same source and compare; see the module docstring."""
    log = log or (lambda _m: None)
    target = settings.target(target_name)
    b = settings.build
    roots = rebuild_roots(b.build_root)
    own_session = session is None
    if session is None:
        session = GuestSession(settings, settings.guest_for(target_name), log)
    try:
        transport = session.transport
        session.require_devenv()
        src = _source(settings, session)
        log(f"rebuild check of {target_name}: source {src.source_store} ({src.store_hash[:16]}…), "
            f"build roots {roots[0]} and {roots[1]} on {transport.description}")
        host_dir = Path(settings.store.root) / "rebuild-check" / target_name
        limits = Limits(timeout_s=b.timeout_hours * 3600, silent_s=b.silent_timeout_minutes * 60)
        manifests: dict[str, list[Manifest]] = {"world_stage": [], "kernel_stage": []}
        stored: dict[str, list[str]] = {"world_stage": [], "kernel_stage": []}
        seconds = []
        for side, root in zip(SIDES, roots):
            plan = plan_build(
                build_root=root, make=b.make, jobs=b.jobs, source_root=src.source_root,
                source_hash=src.store_hash, target=target.target, target_arch=target.target_arch,
                kernconf=target.kernconf,
                make_vars={name: b.make_vars_for(name) for name in STEP_ORDER}, clean=True)
            _refuse_busy(transport, root)
            for sub in ("obj", "stage-world", "stage-kernel"):
                remove_tree(transport, root, f"{root}/{sub}")
            started = time.monotonic()
            _build(session, plan, limits, log, side)
            seconds.append(time.monotonic() - started)
            store = ArtifactStore(host_dir / side, keep=1)
            for old in store.entries():
                remove_entry(old["path"])
            for asset, guest_dir in (("world_stage", plan.world_stage), ("kernel_stage", plan.kernel_stage)):
                tree: StoredTree = store.collect(transport, guest_dir, asset=asset, target=target_name,
                                                 key_files=settings.slices.key_files)
                manifests[asset].append(tree.manifest)
                stored[asset].append(str(tree.tree))
                log(f"build {side}: {asset} collected into {tree.path} ({tree.digest[:16]}…)")
            if not keep:
                remove_tree(transport, root, f"{root}/obj")
        comparisons = [compare(asset, *manifests[asset]) for asset in ("world_stage", "kernel_stage")]
        world_a, world_b = manifests["world_stage"]
        for asset, globs in (("headers_slice", settings.slices.headers),
                             ("bootloader_slice", settings.slices.bootloader)):
            comparisons.append(compare(asset, select(world_a, globs), select(world_b, globs)))
        notes = []
        if not keep:
            for root in roots:
                for sub in ("obj", "stage-world", "stage-kernel", "steps"):
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


def _source(settings: Settings, session: GuestSession):
    if settings.source.from_ == "path":
        from fruix_dagster.fruix.source import source_from_path

        assert settings.source.path is not None
        return source_from_path(session.transport, settings.source.path)
    from fruix_dagster.fruix.store_layout import source_from_metadata

    return source_from_metadata(session.transport, settings.source)


def _build(session: GuestSession, plan: BuildPlan, limits: Limits, log: Log, side: str) -> None:
    from fruix_dagster.guest.detached import DetachedSteps

    steps = DetachedSteps(session.transport, plan.build_root)

    def marker(m: Marker, elapsed: int | None) -> None:
        log(f"[{side}] {m.text}" if elapsed is None else f"[{side}] {m.text}   [{elapsed} s]")

    for name in STEP_ORDER:
        outcome = run_step(steps, plan.steps[name], limits=limits, on_marker=marker,
                           on_info=lambda msg: log(f"[{side}] {msg}"), force=True)
        log(f"[{side}] {name}: exit {outcome.exit_status} in {outcome.duration_s:.0f} s")
