"""What an asset materialization records: metadata, data version, blocking check results."""

from __future__ import annotations

from typing import Any

import dagster as dg

from fruix_dagster.build.run import StepOutcome
from fruix_dagster.defs.build_run import BuildRun
from fruix_dagster.fruix.devenv import DevEnvReport
from fruix_dagster.fruix.source import SourceStore
from fruix_dagster.defs.view import code_version, current_row, inline_chart, last_builds_table
from fruix_dagster.graph import CODE_VERSIONS, REQUIRED_FILES, SOURCE_ASSET, check_name
from fruix_dagster.store import StoredTree
from fruix_dagster.tree.manifest import Manifest

DEVENV_CHECK = "development_environment"


def required_checks(asset: str) -> list[dg.AssetCheckSpec]:
    """The blocking checks of the artifact shapes ``asset`` must hold (see graph.REQUIRED_FILES)."""
    return [dg.AssetCheckSpec(check_name(p), asset=asset, blocking=True,
                              description=f"{p} exists in {asset} as a non-empty file")
            for p in REQUIRED_FILES.get(asset, ())]


def devenv_check() -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        DEVENV_CHECK, asset=SOURCE_ASSET, blocking=True,
        description="The guest is a development-enabled Fruix system with cc, c++, ld and tar "
                    "on the build's PATH, a usable make, root (unless NO_ROOT), filemon with "
                    "META_MODE, a sane clock and enough free space in the build root")


def _is_nonempty_file(manifest: Manifest, path: str) -> bool:
    entry = manifest.get(path.encode())
    return entry is not None and entry.kind == "file" and entry.size > 0


def source_result(run: BuildRun, src: SourceStore, devenv: DevEnvReport,
                  extra: dict[str, Any] | None = None) -> dg.MaterializeResult:
    meta = {"source_store": src.source_store, "source_root": src.source_root,
            "store_hash": src.store_hash, "guest": run.session.guest.name, **run.session.facts,
            **(extra or {})}
    check = dg.AssetCheckResult(
        check_name=DEVENV_CHECK, passed=devenv.ok,
        metadata={"missing": "\n".join(devenv.problems) or "nothing",
                  "free_kib": devenv.free_kib if devenv.free_kib is not None else -1},
        description="ready" if devenv.ok else "missing: " + "; ".join(devenv.problems))
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(src.store_hash),
                                check_results=[check])


def build_result(run: BuildRun, outcome: StepOutcome, extra: dict[str, Any] | None = None
                 ) -> dg.MaterializeResult:
    """A build step's metadata; its data version is the step's fingerprint."""
    # From the guest's step record: a reused step reports the run that built it.
    jobs = outcome.build_jobs
    meta: dict[str, Any] = {
        "build_jobs": jobs if jobs is not None else 1,
        "duration_s": float(outcome.duration_s),
        "log_path": dg.MetadataValue.path(outcome.host_log_path or outcome.log_path),
        "guest_log_path": outcome.log_path,
        "make_command": outcome.command,
        "make_reported_s": outcome.make_seconds if outcome.make_seconds is not None else -1,
        "step_fingerprint": outcome.step.fingerprint,
        "step_action": outcome.launch.action,
        "clean_build": outcome.clean_build,
        "stage_seconds": dg.MetadataValue.json(outcome.stage_seconds),
        "marker_offsets": dg.MetadataValue.json(outcome.marker_offsets),
        **(extra or {}),
    }
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(outcome.step.fingerprint))


def stage_metadata(run: BuildRun, outcomes: list[StepOutcome], guest_dir: str) -> dict[str, Any]:
    """What a stage records about the install steps that made it."""
    return {"step_fingerprint": outcomes[-1].step.fingerprint,
            "duration_s": sum(o.duration_s for o in outcomes),
            "stage_seconds": dg.MetadataValue.json(
                {k: v for o in outcomes for k, v in o.stage_seconds.items()}),
            "make_reported_s": sum(o.make_seconds or 0 for o in outcomes),
            "make_command": "\n".join(o.command for o in outcomes),
            "guest_path": guest_dir, "guest": run.session.guest.name,
            **{f"log_path:{o.step.name}": dg.MetadataValue.path(o.host_log_path or o.log_path)
               for o in outcomes}}


def history_view(run: BuildRun, asset: str, meta: dict[str, Any]) -> dict[str, Any]:
    """This artifact's size and build time so far (this materialization included): an inline
    chart and the last builds as a table."""
    from fruix_dagster.defs.history import input_assets, iter_rows
    from fruix_dagster.history.frame import history_frame

    version = code_version(run.settings, asset, CODE_VERSIONS[asset])
    rows = [*iter_rows(run.context.instance, input_assets([asset]), [run.target.name]),
            current_row(asset, run.target.name, run.context.run.run_id, meta, version)]
    frame = history_frame(rows, key_files=run.settings.slices.key_files)
    frame = frame[frame["asset"] == asset]
    return {"history_chart": inline_chart(frame, title=f"{asset} — target {run.target.name}"),
            "last_builds": last_builds_table(frame)}


def tree_result(run: BuildRun, stored: StoredTree, asset: str,
                extra: dict[str, Any] | None = None) -> dg.MaterializeResult:
    """A stored tree's metadata (path, size, digest, key-file hashes) and its shape checks;
    its data version is the tree digest.  Notes the publication for the run's store gc."""
    manifest = stored.manifest
    meta: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(stored.tree)),
        "size_bytes": manifest.total_size,
        "file_count": manifest.file_count,
        "tree_sha256": stored.digest,
        "build_root": dg.MetadataValue.path(run.settings.build.build_root),
    }
    for key in run.settings.slices.key_files:
        entry = manifest.get(key.encode())
        if entry is not None and entry.sha256:
            meta[f"sha256:{key}"] = entry.sha256
    meta.update(extra or {})
    meta.update(history_view(run, asset, meta))
    checks = [
        dg.AssetCheckResult(
            check_name=check_name(required),
            passed=_is_nonempty_file(manifest, required),
            metadata={"path": required},
        )
        for required in REQUIRED_FILES.get(asset, ())
    ]
    run.fruix.note_published()
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(stored.digest),
                                check_results=checks)
