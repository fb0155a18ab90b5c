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
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import dagster as dg

from fruix_dagster.build import kernfast
from fruix_dagster.build.make import BuildPlan
from fruix_dagster.build.markers import Marker
from fruix_dagster.build.run import Limits, StepOutcome, run_step
from fruix_dagster.defs.records import Recorded, latest, recent, require
from fruix_dagster.defs.resources import BuildOptions, FruixResource
from fruix_dagster.errors import FruixError
from fruix_dagster.fruix.devenv import check_development_environment
from fruix_dagster.fruix.source import source_from_path
from fruix_dagster.guest.fence import remove_tree
from fruix_dagster.guest.hashing import guest_sha256
from fruix_dagster.nightly import plan_for_target, slice_inputs
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
        options = options or BuildOptions()
        tags = context.run.tags
        if tags.get("fruix/force") == "true" or tags.get("fruix/clean") == "true":
            # backfills and schedules carry tags, not run config
            options = BuildOptions(clean=options.clean or tags.get("fruix/clean") == "true",
                                   force=options.force or tags.get("fruix/force") == "true")
        return cls(context, fruix, options, settings, target, fruix.session(target.name, context.log))

    def recorded(self, asset: str) -> Recorded:
        return require(self.context.instance, asset, self.target.name, self.context.asset_key.to_user_string())

    def plan(self, kernfast: bool = False) -> BuildPlan:
        src = self.recorded("freebsd_source").metadata
        return plan_for_target(self.settings, self.target.name, source_root=src["source_root"],
                               source_hash=src["store_hash"], clean=self.options.clean,
                               kernfast=kernfast)

    def expect_upstream(self, asset: str, expected_fingerprint: str) -> None:
        rec = self.recorded(asset)
        found = rec.metadata.get("step_fingerprint")
        if found != expected_fingerprint:
            raise FruixError(
                f"{self.context.asset_key.to_user_string()} for target {self.target.name!r} needs "
                f"{asset} built from the current source and settings (fingerprint "
                f"{expected_fingerprint[:16]}), found {str(found)[:16]}; materialize {asset} "
                f"for {self.target.name!r} first")

    def run(self, step_name: str, plan: BuildPlan, history_asset: str | None = None) -> StepOutcome:
        """Run one make step; with ``history_asset``, log the ETA from its past builds."""
        b = self.settings.build
        log = self.context.log
        self.session.require_devenv()
        eta = Eta.from_history(self.context.instance, history_asset, self.target.name) \
            if history_asset else Eta()
        if eta.total is not None:
            log.info(f"{step_name}: expected to take about {eta.total:.0f} s "
                     f"(median of the last {eta.samples} builds of {self.target.name})")

        def marker(m: Marker, elapsed: int | None) -> None:
            log.info(f"{m.text}   [{eta.describe(m.label, elapsed)}]" if elapsed is not None else m.text)

        limit = b.timeout_hours * 3600
        return run_step(
            self.session.steps, plan.steps[step_name],
            limits=Limits(timeout_s=limit, silent_s=b.silent_timeout_minutes * 60),
            on_marker=marker, on_info=log.info, force=self.options.force, busy_wait=limit,
        )

    def reusable_record(self, asset: str, **expected: Any) -> Recorded | None:
        """The latest materialization of asset for this target if it recorded exactly
        ``expected`` and its stored tree is still in the store (else None)."""
        if self.options.force:
            return None
        rec = latest(self.context.instance, asset, self.target.name)
        if rec is None or any(rec.metadata.get(k) != v for k, v in expected.items()):
            return None
        try:
            self.store.open(str(rec.metadata.get("path")))
        except FruixError:
            return None
        return rec

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

    def stage(self, asset: str, *, upstream: tuple[str, str], steps: tuple[str, ...]) -> dg.MaterializeResult:
        """Install into a fresh stage directory (unless the install is reused), then store it."""
        plan = self.plan()
        upstream_asset, upstream_step = upstream
        self.expect_upstream(upstream_asset, plan.steps[upstream_step].fingerprint)
        stage_dir = plan.world_stage if asset == "world_stage" else plan.kernel_stage
        if self.options.force or not self.session.steps.reusable(plan.steps[steps[0]]):
            remove_tree(self.session.transport, plan.build_root, stage_dir)
        outcomes = [self.run(step, plan) for step in steps]
        stored, root_bytes = self.collect_or_reuse(stage_dir, asset, outcomes)
        extra = {"step_fingerprint": outcomes[-1].step.fingerprint,
                 "duration_s": sum(o.duration_s for o in outcomes),
                 "make_command": "\n".join(o.step.command for o in outcomes),
                 "guest_path": stage_dir, "guest": self.session.guest.name,
                 "build_root_size_bytes": root_bytes if root_bytes is not None else self.build_root_bytes()}
        return self.tree_result(stored, asset, extra)

    def collect_or_reuse(self, guest_dir: str, asset: str, outcomes: list[StepOutcome]
                         ) -> tuple[StoredTree, int | None]:
        """Collect the stage, unless no make step ran and the store already holds
        the tree the last materialization recorded for exactly this step."""
        fingerprint = outcomes[-1].step.fingerprint
        if not any(o.ran_make for o in outcomes):
            rec = self.reusable_record(asset, step_fingerprint=fingerprint, guest_path=guest_dir)
            if rec is not None:
                self.context.log.info(f"{asset}: no make step ran; reusing stored {rec.metadata['path']}")
                return self.store.open(str(rec.metadata["path"])), rec.metadata.get("build_root_size_bytes")
        return self.collect(guest_dir, asset), None

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
        "marker_offsets": dg.MetadataValue.json(outcome.marker_offsets),
    }


@dataclass
class Eta:
    """Expected step duration and marker times: medians of up to 5 earlier builds that ran make."""

    total: float | None = None
    offsets: dict[str, float] | None = None
    samples: int = 0

    @classmethod
    def from_history(cls, instance: dg.DagsterInstance, asset: str, target: str) -> "Eta":
        durations, offsets = [], {}
        for rec in recent(instance, asset, target, limit=25):
            if rec.metadata.get("step_action") not in ("started", "attached"):
                continue
            durations.append(float(rec.metadata.get("duration_s", 0.0)))
            for label, secs in (rec.metadata.get("marker_offsets") or {}).items():
                offsets.setdefault(label, []).append(float(secs))
            if len(durations) == 5:
                break
        if not durations:
            return cls()
        return cls(statistics.median(durations),
                   {k: statistics.median(v) for k, v in offsets.items()}, len(durations))

    def describe(self, label: str, elapsed: int) -> str:
        expected = (self.offsets or {}).get(label)
        if expected is None:
            return f"{elapsed} s"
        return f"{elapsed} s, expected {expected:.0f} s ({elapsed - expected:+.0f} s)"


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
        outcome = run.run("buildworld", plan, history_asset="world_build")
        return dg.MaterializeResult(metadata=_build_meta(run, outcome),
                                    data_version=dg.DataVersion(outcome.step.fingerprint))

    @dg.asset(deps=[freebsd_source, world_build], code_version=CODE_VERSIONS["kernel_build"], **common,
              description="Kernel object tree: make -jN buildkernel KERNCONF=….")
    def kernel_build(context: dg.AssetExecutionContext, fruix: FruixResource,
                     build_options: BuildOptions) -> dg.MaterializeResult:
        run = BuildRun.of(context, fruix, build_options)
        plan = run.plan()
        run.expect_upstream("world_build", plan.steps["buildworld"].fingerprint)
        conf_path = f"sys/{run.target.target}/conf/{run.target.kernconf}"
        transport = run.session.transport
        conf_sha = guest_sha256(transport, plan.source_root, [conf_path]).get(conf_path, "")
        decision = kernfast.decide(
            transport, build_root=plan.build_root, source_root=plan.source_root,
            target=run.target.target, target_arch=run.target.target_arch,
            kernconf=run.target.kernconf, clean=run.options.clean or run.settings.build.clean)
        context.log.info(decision.reason)
        if decision.kernfast:
            plan = run.plan(kernfast=True)
        elif not run.session.steps.reusable(plan.steps["buildkernel"]) or run.options.force:
            kernfast.forget(transport, decision)
        outcome = run.run("buildkernel", plan, history_asset="kernel_build")
        if outcome.ran_make and not decision.kernfast:
            kernfast.remember(transport, decision, plan.source_root)
        meta = {**_build_meta(run, outcome), "kernconf": run.target.kernconf,
                "kernconf_sha256": conf_sha, "kernfast": decision.kernfast,
                "kernfast_reason": decision.reason, "kernel_config_inputs": decision.inputs_digest,
                "build_root": plan.build_root}
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(outcome.step.fingerprint))

    @dg.asset(deps=[world_build], code_version=CODE_VERSIONS["world_stage"], **common,
              description="Staged world: installworld + distribution with DB_FROM_SRC=yes.")
    def world_stage(context: dg.AssetExecutionContext, fruix: FruixResource,
                    build_options: BuildOptions) -> dg.MaterializeResult:
        return BuildRun.of(context, fruix, build_options).stage(
            "world_stage", upstream=("world_build", "buildworld"), steps=("installworld", "distribution"))

    @dg.asset(deps=[kernel_build], code_version=CODE_VERSIONS["kernel_stage"], **common,
              check_specs=_checks("kernel_stage"),
              description="Staged kernel: installkernel with DB_FROM_SRC=yes.")
    def kernel_stage(context: dg.AssetExecutionContext, fruix: FruixResource,
                     build_options: BuildOptions) -> dg.MaterializeResult:
        return BuildRun.of(context, fruix, build_options).stage(
            "kernel_stage", upstream=("kernel_build", "buildkernel"), steps=("installkernel",))

    def slice_asset(name: str, slice_key: str, description: str) -> dg.AssetsDefinition:
        @dg.asset(name=name, deps=[world_stage], code_version=CODE_VERSIONS[name], **common,
                  check_specs=_checks(name), description=description)
        def _slice(context: dg.AssetExecutionContext, fruix: FruixResource) -> dg.MaterializeResult:
            run = BuildRun.of(context, fruix)
            stage = run.recorded("world_stage").metadata
            globs = getattr(run.settings.slices, slice_key)
            extra = slice_inputs(run.settings, slice_key, stage["tree_sha256"])
            rec = run.reusable_record(name, **extra)
            if rec is not None:
                context.log.info(f"{name}: same world stage and globs as before; reusing {rec.metadata['path']}")
                stored = run.store.open(str(rec.metadata["path"]))
            else:
                stored = run.store.carve(str(stage["path"]), globs, asset=name, target=run.target.name)
            return run.tree_result(stored, name, extra)

        return _slice

    headers_slice = slice_asset("headers_slice", "headers",
                                "Development headers carved from the stored world stage (no guest needed).")
    bootloader_slice = slice_asset("bootloader_slice", "bootloader",
                                   "Loader files carved from the stored world stage (no guest needed).")
    return [freebsd_source, world_build, kernel_build, world_stage, kernel_stage,
            headers_slice, bootloader_slice]
