"""The seven assets of the build, partitioned by target (the graph: :mod:`fruix_dagster.graph`).

freebsd_source ─► world_build ─► world_stage ─┬─► headers_slice
      │                 │                     └─► bootloader_slice
      │                 ▼
      └──────────► kernel_build ─► kernel_stage

Each asset reads what its upstream recorded (paths, hashes, fingerprints)
from the instance, so any subset can be re-materialized on its own, and
refuses to build on an upstream that no longer matches the current settings.
Each body is its few steps; the steps are small functions of a
:class:`~fruix_dagster.defs.build_run.BuildRun`: :mod:`.steps` (upstream
checks, make steps with their ETA, buildkernel with KERNFAST), :mod:`.collection` (collect,
carve or reuse, build-root size) and :mod:`.results` (metadata and checks).
"""


from typing import Sequence

import dagster as dg

from fruix_dagster.build.plan import slice_globs, slice_inputs
from fruix_dagster.defs.build_run import BuildRun
from fruix_dagster.defs.observation import GUEST_SOURCE, last_observed, observation_event
from fruix_dagster.defs.collection import carve_or_reuse, collect_or_reuse
from fruix_dagster.defs.resources import BuildOptions, FruixResource
from fruix_dagster.defs.results import (DEVENV_CHECK, build_result, devenv_check, required_checks,
                                        source_result, stage_metadata, tree_result)
from fruix_dagster.defs.steps import build_kernel, expect_upstream, run_make
from fruix_dagster.fruix.devenv import check_development_environment, needs_root
from fruix_dagster.fruix.source import resolve_source
from fruix_dagster.graph import (ARTIFACTS, BUILD, CODE_VERSIONS, GROUP, REQUIRED_FILES, SLICES, SOURCE,
                                 SOURCE_ASSET, STAGE, check_name, spec)
from fruix_dagster.guest.buildroot_gc import object_tree
from fruix_dagster.guest.fence import prepare_no_root_stage, remove_tree
from fruix_dagster.guest.stage_stamp import make_stage_root, stage_differs, stamp_path, write_stamp
from fruix_dagster.defs.view import asset_view, code_version
from fruix_dagster.settings import Settings, load_settings
from fruix_dagster.guest.srcsync import prepare_build_path
from fruix_dagster.source_probe import mark_read

__all__ = ["ARTIFACTS", "CODE_VERSIONS", "DEVENV_CHECK", "GROUP", "REQUIRED_FILES", "BuildRun",
           "build_assets", "check_name", "stage"]


def stage(run: BuildRun, asset: str) -> dg.MaterializeResult:
    """Install into a fresh stage directory (unless the install is reused), then store it.

    The install steps are reused only when every one of them would be and the
    stage directory is still what they left there (:mod:`fruix_dagster.guest.stage_stamp`);
    otherwise the stage is removed and every step runs anew (``force``), so
    a reused step can never stand for a directory that another install, a
    person or a crash changed since.
    """
    s = spec(asset)
    plan = run.plan()
    transport = run.session.transport
    upstream_asset, upstream_step = s.installs_from  # type: ignore[misc]
    expect_upstream(run, upstream_asset, plan.steps[upstream_step].fingerprint)
    stage_dir = plan.stage_dir(asset)
    last = run.session.steps.step_dir(plan.steps[s.steps[-1]])
    fresh = run.options.force or not all(run.session.steps.reusable(plan.steps[n]) for n in s.steps)
    if not fresh:
        differs = stage_differs(transport, plan.build_root, stage_dir, last)
        if differs:
            run.log.warning(f"{asset}: installing again: {differs}")
            fresh = True
    if fresh:
        for path in (stage_dir, plan.metalog(stage_dir), stamp_path(stage_dir)):
            remove_tree(transport, plan.build_root, path)
        make_stage_root(transport, plan.build_root, plan.stage_root)
        if plan.no_root_user:
            prepare_no_root_stage(transport, plan.build_root, stage_dir, plan.metalog(stage_dir),
                                  plan.no_root_user)
    outcomes = [run_make(run, step, plan, force=fresh) for step in s.steps]
    if fresh:
        write_stamp(transport, plan.build_root, stage_dir, last)
    stored, root_size = collect_or_reuse(run, stage_dir, asset, outcomes, plan)
    return tree_result(run, stored, asset, {**stage_metadata(run, outcomes, stage_dir), **root_size})


def build_assets(partitions: dg.PartitionsDefinition,
                 settings: Settings | None = None) -> Sequence[dg.AssetsDefinition]:
    settings = settings or load_settings()

    def asset(name: str, **kw):
        """code_version with the output-changing settings folded in; kinds, owners, tags (defs/view.py)."""
        s = spec(name)
        # guest_source is a direct upstream of every asset that reads the guest's source tree:
        # Dagster 1.13 does not carry staleness through an asset, so a changed observation marks
        # each of them stale at once, before any run
        deps = list(s.deps) + ([GUEST_SOURCE] if s.role in (SOURCE, BUILD, STAGE) else [])
        return dg.asset(name=name, deps=deps, code_version=code_version(settings, name, CODE_VERSIONS[name]),
                        partitions_def=partitions, group_name=GROUP, description=s.description,
                        check_specs=required_checks(name) + kw.pop("check_specs", []),
                        **asset_view(settings, name), **kw)

    @asset(SOURCE_ASSET, check_specs=[devenv_check()])
    def freebsd_source(context: dg.AssetExecutionContext, fruix: FruixResource) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix)
        b = run.settings.build
        # the read mark first: whatever changes on the guest after it shows in the next observation
        observed = mark_read(run.session.transport, run.settings, run.target.name, context.run.run_id)
        src = resolve_source(run.session.transport, run.settings.source)
        devenv = check_development_environment(
            run.session.transport, system=run.session.guest.system, build_root=b.build_root,
            min_free_gib=b.min_free_gib, make=b.make, source_root=src.source_root,
            need_root=needs_root(b), meta_mode=b.build_conf().meta_mode)
        for problem in devenv.problems:
            context.log.error(f"development environment: missing {problem}")
        sync = prepare_build_path(  # the build path: a store item is synced into <build_root>/src
            run.session.transport, run.session.steps, source_from=run.settings.source.from_,
            build_root=b.build_root, source_root=src.source_root, store_hash=src.store_hash,
            on_info=context.log.info) if devenv.ok else {}
        if last_observed(context.instance, run.target.name) is None:
            # never observed (the sensor is off, or this run came first): observe it as read
            # now, so that the next read records a pointer the UI's staleness can follow
            context.log_event(observation_event(run.target.name, observed))
        return source_result(run, src, devenv, {**sync, "source_observation": observed.data_version})

    @asset("world_build")
    def world_build(context: dg.AssetExecutionContext, fruix: FruixResource,
                    build_options: BuildOptions) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix, build_options)
        plan = run.plan()
        tree, existed = object_tree(run.session.transport, plan.build_root, plan.source_root,
                                    f"{run.target.target}.{run.target.target_arch}")
        if not existed:
            context.log.info(f"full build: no object tree at {tree} yet (first build in this "
                             f"build path, or the build root was wiped)")
        outcome = run_make(run, "buildworld", plan, history_asset="world_build")
        return build_result(run, outcome, {"object_tree": tree, "object_tree_existed": existed})

    @asset("kernel_build")
    def kernel_build(context: dg.AssetExecutionContext, fruix: FruixResource,
                     build_options: BuildOptions) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix, build_options)
        plan = run.plan()
        expect_upstream(run, "world_build", plan.steps["buildworld"].fingerprint)
        outcome, kernel = build_kernel(run, plan)
        return build_result(run, outcome, kernel)

    @asset("world_stage")
    def world_stage(context: dg.AssetExecutionContext, fruix: FruixResource,
                    build_options: BuildOptions) -> dg.MaterializeResult:
        return stage(BuildRun.of(context, fruix, build_options), "world_stage")

    @asset("kernel_stage")
    def kernel_stage(context: dg.AssetExecutionContext, fruix: FruixResource,
                     build_options: BuildOptions) -> dg.MaterializeResult:
        return stage(BuildRun.of(context, fruix, build_options), "kernel_stage")

    def slice_asset(name: str) -> dg.AssetsDefinition:
        @asset(name)
        def _slice(context: dg.AssetExecutionContext, fruix: FruixResource) -> dg.MaterializeResult:
            run = BuildRun.of(context, fruix)
            world = run.recorded(spec(name).deps[0]).metadata
            inputs = slice_inputs(run.settings, spec(name).slice_key, world["tree_sha256"])
            stored = carve_or_reuse(run, name, str(world["path"]), slice_globs(run.settings, name), inputs)
            return tree_result(run, stored, name, inputs)

        return _slice

    return [freebsd_source, world_build, kernel_build, world_stage, kernel_stage,
            *(slice_asset(name) for name in SLICES)]
