"""The seven assets of the build, partitioned by target.

freebsd_source ─► world_build ─► world_stage ─┬─► headers_slice
      │                 │                     └─► bootloader_slice
      │                 ▼
      └──────────► kernel_build ─► kernel_stage

Each asset reads what its upstream recorded (paths, hashes, fingerprints)
from the instance, so any subset can be re-materialized on its own, and
refuses to build on an upstream that no longer matches the current settings.
"""


import re
from dataclasses import dataclass
from typing import Any, Sequence

import dagster as dg

from fruix_dagster.build.make import BuildPlan, plan_build
from fruix_dagster.build.markers import Marker
from fruix_dagster.build.run import Limits, StepOutcome, run_step
from fruix_dagster.defs.records import Recorded, require
from fruix_dagster.defs.resources import BuildOptions, FruixResource
from fruix_dagster.errors import FruixError
from fruix_dagster.fruix.devenv import check_development_environment
from fruix_dagster.fruix.source import source_from_path
from fruix_dagster.guest.fence import remove_tree
from fruix_dagster.session import GuestSession
from fruix_dagster.settings import Settings, Target
from fruix_dagster.store import ArtifactStore, StoredTree
from fruix_dagster.tree.manifest import Manifest

CODE_VERSIONS = {
    "freebsd_source": "1",
    "world_build": "1",
    "kernel_build": "1",
    "world_stage": "1",
    "kernel_stage": "1",
    "headers_slice": "1",
    "bootloader_slice": "1",
}

#: the artifact shapes the harness verifies, on the asset that holds each
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "kernel_stage": ("boot/kernel/kernel",),
    "headers_slice": ("usr/include/sys/param.h", "usr/share/mk/bsd.prog.mk"),
    "bootloader_slice": ("boot/loader.efi", "boot/defaults/loader.conf", "boot/lua/loader.lua"),
}
DEVENV_CHECK = "development_environment"
ARTIFACTS = ("world_stage", "kernel_stage", "headers_slice", "bootloader_slice")
GROUP = "fruix_build"


def check_name(path: str) -> str:
    return "has_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")


@dataclass
class BuildRun:
    """Everything one asset step needs: settings, target, guest session, plan."""

    context: dg.AssetExecutionContext
    fruix: FruixResource
    options: BuildOptions
    settings: Settings
    target: Target
    session: GuestSession

    @classmethod
    def of(cls, context: dg.AssetExecutionContext, fruix: FruixResource,
           options: BuildOptions | None = None) -> "BuildRun":
        settings = fruix.settings()
        target = settings.target(context.partition_key)
        return cls(context, fruix, options or BuildOptions(), settings, target,
                   fruix.session(target.name, context.log))

    def recorded(self, asset: str) -> Recorded:
        return require(self.context.instance, asset, self.target.name, self.context.asset_key.to_user_string())

    def plan(self) -> BuildPlan:
        src = self.recorded("freebsd_source").metadata
        b = self.settings.build
        return plan_build(
            build_root=b.build_root, make=b.make, jobs=b.jobs,
            source_root=src["source_root"], source_hash=src["store_hash"],
            target=self.target.target, target_arch=self.target.target_arch,
            kernconf=self.target.kernconf,
            make_vars={name: b.make_vars_for(name) for name in
                       ("buildworld", "buildkernel", "installworld", "distribution", "installkernel")},
            clean=b.clean or self.options.clean,
        )

    def expect_upstream(self, asset: str, expected_fingerprint: str) -> None:
        rec = self.recorded(asset)
        found = rec.metadata.get("step_fingerprint")
        if found != expected_fingerprint:
            raise FruixError(
                f"{self.context.asset_key.to_user_string()} for target {self.target.name!r} needs "
                f"{asset} built from the current source and settings (fingerprint "
                f"{expected_fingerprint[:16]}), found {str(found)[:16]}; materialize {asset} "
                f"for {self.target.name!r} first")

    def run(self, step_name: str, plan: BuildPlan) -> StepOutcome:
        b = self.settings.build
        log = self.context.log
        self.session.require_devenv()

        def marker(m: Marker, elapsed: int | None) -> None:
            log.info(m.text if elapsed is None else f"{m.text}   [{elapsed} s]")

        return run_step(
            self.session.steps, plan.steps[step_name],
            limits=Limits(timeout_s=b.timeout_hours * 3600, silent_s=b.silent_timeout_minutes * 60),
            on_marker=marker, on_info=log.info, force=self.options.force,
        )

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.store.root, self.settings.store.keep)

    def collect(self, guest_dir: str, asset: str) -> StoredTree:
        stored = self.store.collect(self.session.transport, guest_dir, asset=asset,
                                    target=self.target.name, key_files=self.settings.slices.key_files)
        self.context.log.info(
            f"{asset}: {guest_dir} collected into {stored.path} "
            f"({stored.manifest.file_count} files, {stored.manifest.total_size} bytes"
            f"{', identical tree already stored' if stored.reused else ''})")
        return stored

    def build_root_bytes(self) -> int:
        res = self.session.transport.run(["du", "-sk", self.settings.build.build_root])
        text = res.stdout.decode().split()
        return int(text[0]) * 1024 if res.ok and text and text[0].isdigit() else 0

    def tree_result(self, stored: StoredTree, asset: str,
                    extra: dict[str, Any] | None = None) -> dg.MaterializeResult:
        manifest = stored.manifest
        meta: dict[str, Any] = {
            "path": dg.MetadataValue.path(str(stored.tree)),
            "size_bytes": manifest.total_size,
            "file_count": manifest.file_count,
            "tree_sha256": stored.digest,
            "build_root": dg.MetadataValue.path(self.settings.build.build_root),
        }
        for key in self.settings.slices.key_files:
            entry = manifest.get(key.encode())
            if entry is not None and entry.sha256:
                meta[f"sha256:{key}"] = entry.sha256
        meta.update(extra or {})
        checks = [
            dg.AssetCheckResult(
                check_name=check_name(required),
                passed=_is_nonempty_file(manifest, required),
                metadata={"path": required},
            )
            for required in REQUIRED_FILES.get(asset, ())
        ]
        self.fruix.note_published()
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(stored.digest),
                                    check_results=checks)


def _is_nonempty_file(manifest: Manifest, path: str) -> bool:
    entry = manifest.get(path.encode())
    return entry is not None and entry.kind == "file" and entry.size > 0


def _build_meta(run: BuildRun, outcome: StepOutcome) -> dict[str, Any]:
    return {
        "build_jobs": run.settings.build.jobs,
        "duration_s": float(outcome.duration_s),
        "log_path": dg.MetadataValue.path(outcome.log_path),
        "make_command": outcome.step.command,
        "step_fingerprint": outcome.step.fingerprint,
        "step_action": outcome.launch.action,
        "stage_seconds": dg.MetadataValue.json(outcome.stage_seconds),
    }


def _checks(asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(check_name(p), asset=asset, blocking=True,
                              description=f"{p} exists in {asset} as a non-empty file")
            for p in REQUIRED_FILES.get(asset, ())]


def build_assets(partitions: dg.PartitionsDefinition) -> Sequence[dg.AssetsDefinition]:
    common = dict(partitions_def=partitions, group_name=GROUP)

    @dg.asset(code_version=CODE_VERSIONS["freebsd_source"], **common,
              check_specs=[dg.AssetCheckSpec(
                  DEVENV_CHECK, asset="freebsd_source", blocking=True,
                  description="The guest is a development-enabled Fruix system with cc, make, "
                              "ld, tar and enough free space in the build root")],
              description="The declared FreeBSD source store the guest builds from.")
    def freebsd_source(context: dg.AssetExecutionContext, fruix: FruixResource) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix)
        b = run.settings.build
        devenv = check_development_environment(
            run.session.transport, system=run.session.guest.system, build_root=b.build_root,
            min_free_gib=b.min_free_gib, make=b.make)
        for problem in devenv.problems:
            context.log.error(f"development environment: missing {problem}")
        src_settings = run.settings.source
        if src_settings.from_ == "path":
            assert src_settings.path is not None
            src = source_from_path(run.session.transport, src_settings.path)
        else:
            from fruix_dagster.fruix.store_layout import source_from_metadata
            src = source_from_metadata(run.session.transport, src_settings)
        meta = {"source_store": src.source_store, "source_root": src.source_root,
                "store_hash": src.store_hash, "guest": run.session.guest.name,
                **run.session.facts}
        check = dg.AssetCheckResult(
            check_name=DEVENV_CHECK, passed=devenv.ok,
            metadata={"missing": "\n".join(devenv.problems) or "nothing",
                      "free_kib": devenv.free_kib if devenv.free_kib is not None else -1},
            description="ready" if devenv.ok else "missing: " + "; ".join(devenv.problems))
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(src.store_hash),
                                    check_results=[check])

    @dg.asset(deps=[freebsd_source], code_version=CODE_VERSIONS["world_build"], **common,
              description="World object tree: make -jN buildworld.")
    def world_build(context: dg.AssetExecutionContext, fruix: FruixResource,
                    build_options: BuildOptions) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix, build_options)
        plan = run.plan()
        outcome = run.run("buildworld", plan)
        return dg.MaterializeResult(metadata=_build_meta(run, outcome),
                                    data_version=dg.DataVersion(outcome.step.fingerprint))

    @dg.asset(deps=[freebsd_source, world_build], code_version=CODE_VERSIONS["kernel_build"], **common,
              description="Kernel object tree: make -jN buildkernel KERNCONF=….")
    def kernel_build(context: dg.AssetExecutionContext, fruix: FruixResource,
                     build_options: BuildOptions) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix, build_options)
        plan = run.plan()
        run.expect_upstream("world_build", plan.steps["buildworld"].fingerprint)
        outcome = run.run("buildkernel", plan)
        meta = {**_build_meta(run, outcome), "kernconf": run.target.kernconf}
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(outcome.step.fingerprint))

    @dg.asset(deps=[world_build], code_version=CODE_VERSIONS["world_stage"], **common,
              description="Staged world: installworld + distribution with DB_FROM_SRC=yes.")
    def world_stage(context: dg.AssetExecutionContext, fruix: FruixResource,
                    build_options: BuildOptions) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix, build_options)
        plan = run.plan()
        run.expect_upstream("world_build", plan.steps["buildworld"].fingerprint)
        steps = run.session.steps
        if run.options.force or not steps.reusable(plan.steps["installworld"].spec):
            remove_tree(run.session.transport, plan.build_root, plan.world_stage)
        install = run.run("installworld", plan)
        dist = run.run("distribution", plan)
        stored = run.collect(plan.world_stage, "world_stage")
        extra = {"step_fingerprint": dist.step.fingerprint,
                 "duration_s": install.duration_s + dist.duration_s,
                 "make_command": f"{install.step.command}\n{dist.step.command}",
                 "guest_path": plan.world_stage, "guest": run.session.guest.name,
                 "build_root_size_bytes": run.build_root_bytes()}
        return run.tree_result(stored, "world_stage", extra)

    @dg.asset(deps=[kernel_build], code_version=CODE_VERSIONS["kernel_stage"], **common,
              check_specs=_checks("kernel_stage"),
              description="Staged kernel: installkernel with DB_FROM_SRC=yes.")
    def kernel_stage(context: dg.AssetExecutionContext, fruix: FruixResource,
                     build_options: BuildOptions) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix, build_options)
        plan = run.plan()
        run.expect_upstream("kernel_build", plan.steps["buildkernel"].fingerprint)
        steps = run.session.steps
        if run.options.force or not steps.reusable(plan.steps["installkernel"].spec):
            remove_tree(run.session.transport, plan.build_root, plan.kernel_stage)
        install = run.run("installkernel", plan)
        stored = run.collect(plan.kernel_stage, "kernel_stage")
        extra = {"step_fingerprint": install.step.fingerprint, "duration_s": install.duration_s,
                 "make_command": install.step.command, "guest_path": plan.kernel_stage,
                 "guest": run.session.guest.name, "build_root_size_bytes": run.build_root_bytes()}
        return run.tree_result(stored, "kernel_stage", extra)

    def slice_asset(name: str, slice_key: str, description: str) -> dg.AssetsDefinition:
        @dg.asset(name=name, deps=[world_stage], code_version=CODE_VERSIONS[name], **common,
                  check_specs=_checks(name), description=description)
        def _slice(context: dg.AssetExecutionContext, fruix: FruixResource) -> dg.MaterializeResult:
            run = BuildRun.of(context, fruix)
            stage = run.recorded("world_stage").metadata
            globs = getattr(run.settings.slices, slice_key)
            stored = run.store.carve(str(stage["path"]), globs, asset=name, target=run.target.name)
            extra = {"globs": ", ".join(globs), "from_world_stage": stage["tree_sha256"]}
            return run.tree_result(stored, name, extra)

        return _slice

    headers_slice = slice_asset("headers_slice", "headers",
                                "Development headers carved from the stored world stage (no guest needed).")
    bootloader_slice = slice_asset("bootloader_slice", "bootloader",
                                   "Loader files carved from the stored world stage (no guest needed).")
    return [freebsd_source, world_build, kernel_build, world_stage, kernel_stage,
            headers_slice, bootloader_slice]
