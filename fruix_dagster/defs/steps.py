"""Make steps of an asset: the upstream check, the step itself (with its ETA), buildkernel with KERNFAST."""

from __future__ import annotations

import sys

from typing import Any

import dagster as dg

from fruix_dagster.build import kernfast
from fruix_dagster.build.eta import Eta
from fruix_dagster.build.make import BuildPlan
from fruix_dagster.build.markers import Marker
from fruix_dagster.build.output import LiveLog, host_log_path
from fruix_dagster.build.run import Limits, StepOutcome, run_step
from fruix_dagster.defs.build_run import BuildRun
from fruix_dagster.defs.records import recent
from fruix_dagster.build.triage import Triage
from fruix_dagster.errors import BuildError, FruixError
from fruix_dagster.guest.hashing import guest_sha256
from fruix_dagster.guest.srcsync import require_synced

#: how many recent materializations are searched for builds that ran make
ETA_SEARCH = 25


def expect_upstream(run: BuildRun, asset: str, expected_fingerprint: str) -> None:
    """Refuse to build on an upstream built from other source or settings than planned now."""
    rec = run.recorded(asset)
    found = rec.metadata.get("step_fingerprint")
    if found != expected_fingerprint:
        raise FruixError(
            f"{run.asset} for target {run.target.name!r} needs "
            f"{asset} built from the current source and settings (fingerprint "
            f"{expected_fingerprint[:16]}), found {str(found)[:16]}; materialize {asset} "
            f"for {run.target.name!r} first")


def eta_of(run: BuildRun, history_asset: str, step_name: str = "") -> Eta:
    """The expected duration of ``history_asset``'s step, from its earlier builds of this target
    (for buildworld/buildkernel: earlier builds as clean as this one, build/eta.py)."""
    records = recent(run.context.instance, history_asset, run.target.name, limit=ETA_SEARCH)
    clean = (run.options.clean or run.settings.build.clean) if step_name in ("buildworld", "buildkernel") else None
    return Eta.from_metadata((rec.metadata for rec in records), clean=clean)


def run_make(run: BuildRun, step_name: str, plan: BuildPlan, history_asset: str | None = None,
             force: bool = False) -> StepOutcome:
    """Run one make step; with ``history_asset``, log the ETA from its past builds.
    ``force`` (or the run's ``--force``) runs it anew even if a finished success could be reused."""
    b = run.settings.build
    log = run.log
    run.session.require_devenv()
    src = run.recorded("freebsd_source").metadata
    if src.get("build_path") not in (None, src["source_root"]):   # never build from a half-synced tree
        require_synced(run.session.transport, plan.build_root, src["store_hash"])
    run.fruix.note_built()
    eta = eta_of(run, history_asset, step_name) if history_asset else Eta()
    if eta.total is not None:
        log.info(f"{step_name}: expected to take about {eta.total:.0f} s "
                 f"(median of the last {eta.samples} builds of {run.target.name})")

    seen: dict[str, int] = {}

    def marker(m: Marker, elapsed: int | None) -> None:
        # the same keys as build.markers.marker_offsets: a repeated line is "label (N)"
        seen[m.label] = seen.get(m.label, 0) + 1
        key = m.label if seen[m.label] == 1 else f"{m.label} ({seen[m.label]})"
        log.info(f"{m.text}   [{eta.describe(key, elapsed)}]" if elapsed is not None else m.text)

    limit = b.timeout_hours * 3600
    step = plan.steps[step_name]
    # make output: the full log to the host next to the artifacts, and live (capped, in the
    # chunks the follower reads) to the run's captured stdout — never one log event per line
    live = LiveLog(host_log_path(run.settings.store.root, run.target.name, step.dirname),
                   live_stream(), int(b.stdout_max_mib * (1 << 20)))
    try:
        return run_step(
            run.session.steps, step,
            limits=Limits(timeout_s=limit, silent_s=b.silent_timeout_minutes * 60),
            on_marker=marker, on_info=log.info, force=run.options.force or force, busy_wait=limit, live=live,
        )
    except BuildError as exc:
        if not isinstance(exc.triage, Triage):
            raise
        # The failure event carries the triage (build/triage.py), so the UI shows it.
        raise dg.Failure(description=str(exc), metadata={
            "step": step_name, **exc.triage.metadata(),
            "log_path": dg.MetadataValue.path(exc.triage.log_path)}) from exc


def live_stream():
    """The run's captured stdout (Dagster redirects file descriptor 1 while a run executes)."""
    sys.stdout.flush()
    return getattr(sys.stdout, "buffer", None)


def build_kernel(run: BuildRun, plan: BuildPlan) -> tuple[StepOutcome, dict[str, Any]]:
    """buildkernel, with KERNFAST only when :mod:`fruix_dagster.build.kernfast` proves it safe;
    the outcome and the kernel's metadata."""
    conf_path = f"sys/{run.target.target}/conf/{run.target.kernconf}"
    transport = run.session.transport
    conf_sha = guest_sha256(transport, plan.source_root, [conf_path]).get(conf_path, "")
    decision = kernfast.decide(
        transport, build_root=plan.build_root, source_root=plan.source_root,
        target=run.target.target, target_arch=run.target.target_arch,
        kernconf=run.target.kernconf, clean=run.options.clean or run.settings.build.clean)
    run.log.info(decision.reason)
    if decision.kernfast:
        plan = run.plan(kernfast=True)
    elif not run.session.steps.reusable(plan.steps["buildkernel"]) or run.options.force:
        kernfast.forget(transport, decision)
    outcome = run_make(run, "buildkernel", plan, history_asset="kernel_build")
    if outcome.ran_make and not decision.kernfast:
        kernfast.remember(transport, decision, plan.source_root)
    return outcome, {"kernconf": run.target.kernconf, "kernconf_sha256": conf_sha,
                     "kernfast": decision.kernfast, "kernfast_reason": decision.reason,
                     "kernel_config_inputs": decision.inputs_digest, "build_root": plan.build_root}
