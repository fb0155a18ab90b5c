"""The Dagster side of the build history.

* ``iter_rows`` / ``load_history``: materializations read from the instance with
  ``fetch_materializations``, one page (``PAGE_SIZE`` records) at a time, each
  reduced to a plain dict row for :func:`fruix_dagster.history.history_frame`.
* ``build_history``: per target, downstream of the four artifacts: writes
  ``<store.root>/history/<target>/history.parquet|.csv|.png`` and shows the
  last 10 builds as a Markdown table.
* Two non-blocking (WARN) checks on each artifact, evaluated against the
  latest materialization of the run's target: ``size_regression`` and
  ``reproducible`` (see :mod:`fruix_dagster.history.checks`).  They are
  partitioned like their assets, so every job that selects an artifact runs
  them right after it.
* ``rebuild_check`` job: build the same source twice and compare the trees
  (:mod:`fruix_dagster.build.rebuild_check`); run config
  ``{"ops": {"rebuild_twice": {"config": {"target": "amd64", "keep": false}}}}``.
"""


import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import dagster as dg
import pandas as pd

from fruix_dagster.defs.resources import FruixResource
from fruix_dagster.graph import spec
from fruix_dagster.settings import Settings, load_settings
from fruix_dagster.history.checks import CheckOutcome, reproducible, size_regression
from fruix_dagster.history.frame import ARTIFACTS, BUILD_OF, SOURCE, history_frame, keep_row_fields
from fruix_dagster.history.publish import LABELS, STAGES, builds, write_history
from fruix_dagster.notify.summary import summary_markdown

HISTORY_ASSET = "build_history"
HISTORY_GROUP = "fruix_history"
HISTORY_JOB = "refresh_history"
REBUILD_JOB = "rebuild_check"
REBUILD_OP = "rebuild_twice"
SIZE_CHECK = "size_regression"
REPRO_CHECK = "reproducible"
PAGE_SIZE = 1000
HISTORY_CODE_VERSION = "1"


def _plain(v: Any) -> Any:
    return getattr(v, "value", v)


def iter_rows(instance: dg.DagsterInstance, assets: Iterable[str],
              targets: Sequence[str] | None = None, page_size: int = PAGE_SIZE) -> Iterator[dict]:
    """Plain dict rows (see ``fruix_dagster.history.frame``) of every materialization of
    ``assets`` (for ``targets``, or every partition), oldest first per asset, read
    ``page_size`` records at a time with the event-log cursor."""
    for asset in assets:
        records_filter = dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=list(targets) if targets else None)
        cursor = None
        while True:
            page = instance.fetch_materializations(records_filter, limit=page_size, cursor=cursor,
                                                   ascending=True)
            for rec in page.records:
                mat = rec.asset_materialization
                if mat is None:
                    continue
                meta, tags = keep_row_fields({k: _plain(v) for k, v in mat.metadata.items()},
                                             mat.tags or {})
                yield {"asset": asset, "target": mat.partition, "run_id": rec.run_id,
                       "storage_id": rec.storage_id, "timestamp": rec.timestamp,
                       "metadata": meta, "tags": tags}
            if not page.has_more or not page.records:
                break
            cursor = page.cursor


def input_assets(artifacts: Iterable[str]) -> list[str]:
    """The artifacts plus what their rows join in (source, builds, the world stage of slices)."""
    out = list(dict.fromkeys(artifacts))
    extra = [SOURCE]
    for a in out:
        for up in (a, *spec(a).deps):          # a slice joins its world stage and that stage's build
            if up in BUILD_OF:
                extra += [up, BUILD_OF[up]]
    return out + [a for a in dict.fromkeys(extra) if a not in out]


def load_history(instance: dg.DagsterInstance, targets: Sequence[str] | None = None,
                 artifacts: Sequence[str] = ARTIFACTS, key_files: Sequence[str] = (),
                 page_size: int = PAGE_SIZE) -> pd.DataFrame:
    """The history frame of ``artifacts`` for ``targets`` (default: every partition)."""
    rows = iter_rows(instance, input_assets(artifacts), targets, page_size)
    frame = history_frame(rows, key_files=key_files)
    return frame[frame["asset"].isin(list(artifacts))].reset_index(drop=True)


# --------------------------------------------------------------------------- the asset


def history_assets(partitions: dg.PartitionsDefinition, settings: Settings | None = None
                   ) -> list[dg.AssetsDefinition]:
    from fruix_dagster.defs.view import asset_view

    @dg.asset(
        name=HISTORY_ASSET, partitions_def=partitions, group_name=HISTORY_GROUP,
        deps=list(ARTIFACTS), code_version=HISTORY_CODE_VERSION,
        **asset_view(settings or load_settings(), HISTORY_ASSET),
        description="Every past materialization of the stages and slices of this target: "
                    "<store.root>/history/<target>/history.parquet, history.csv, and history.png "
                    "(size in MB and build time in minutes over time, one line per artifact).")
    def build_history(context: dg.AssetExecutionContext, fruix: FruixResource) -> dg.MaterializeResult:
        from fruix_dagster.defs.notify import run_facts

        settings = fruix.settings()
        target = context.partition_key
        frame = load_history(context.instance, [target], key_files=settings.slices.key_files)
        out_dir = Path(settings.store.root) / "history" / target
        published = write_history(frame, out_dir, target=target)
        context.log.info(f"history of {target}: {published.rows} materializations → {out_dir}")
        from fruix_dagster.defs.view import inline_chart

        meta: dict[str, Any] = {
            "rows": published.rows,
            "dagster/row_count": published.rows,
            "parquet": dg.MetadataValue.path(str(published.parquet)),
            "csv": dg.MetadataValue.path(str(published.csv)),
            "chart_path": dg.MetadataValue.path(str(published.png)),
            "chart": inline_chart(frame, title=f"build history — target {target}"),
            "last_builds": last_builds_by_build(frame, 10),
            # the summary mail's row for this target (the same text, see defs/notify.py)
            "summary": dg.MetadataValue.md(summary_markdown([target], run_facts(context.instance, [target]),
                                                            frame, settings.notify.ui_url)[1]),
        }
        if published.rows:
            meta["first_materialization"] = dg.MetadataValue.timestamp(float(frame["timestamp"].min()))
            meta["last_materialization"] = dg.MetadataValue.timestamp(float(frame["timestamp"].max()))
        return dg.MaterializeResult(metadata=meta)

    return [build_history]


def last_builds_by_build(frame: pd.DataFrame, n: int) -> dg.TableMetadataValue:
    """The last ``n`` builds (runs), newest first: size of each artifact, stage minutes."""
    cols = [dg.TableColumn("finished", "string", description="UTC"), dg.TableColumn("run", "string")]
    cols += [dg.TableColumn(f"{a}_mb", "float", description=f"{LABELS[a]}, 10⁶ bytes") for a in ARTIFACTS]
    cols += [dg.TableColumn(f"{a}_min", "float", description=f"{LABELS[a]}: build + install minutes")
             for a in STAGES]
    rows = []
    all_builds = builds(frame)
    for _, r in all_builds.tail(n).iloc[::-1].iterrows():
        rec: dict[str, Any] = {"finished": f"{r['time']:%Y-%m-%d %H:%M:%S}",
                               "run": "runless" if str(r["build"]).startswith("runless-") else str(r["run_id"])[:8]}
        for a in ARTIFACTS:
            v = r.get(f"size:{a}")
            rec[f"{a}_mb"] = None if v is None or pd.isna(v) else round(float(v) / 1e6, 3)
        for a in STAGES:
            v = r.get(f"minutes:{a}")
            rec[f"{a}_min"] = None if v is None or pd.isna(v) else round(float(v), 2)
        rows.append(dg.TableRecord(rec))
    return dg.MetadataValue.table(rows, schema=dg.TableSchema(columns=cols))


# --------------------------------------------------------------------------- the checks


def _result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    meta = {}
    for k, v in outcome.metadata.items():
        if v is None:
            continue
        if isinstance(v, str) and "\n" in v:
            v = dg.MetadataValue.md("```\n" + v + "\n```")
        meta[k] = v
    return dg.AssetCheckResult(passed=outcome.passed, severity=dg.AssetCheckSeverity.WARN,
                               description=outcome.description, metadata=meta)


def _latest_storage_id(frame: pd.DataFrame, asset: str, target: str) -> int | None:
    rows = frame[(frame["asset"] == asset) & (frame["target"] == target)]
    return None if rows.empty else int(rows["storage_id"].max())


def history_checks(partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """``size_regression`` and ``reproducible`` on each artifact (WARN, non-blocking)."""
    checks = []
    with warnings.catch_warnings():
        # partitioned asset checks are "preview" in dagster 1.13; they are what makes a check
        # of target A show on A's partition, not on whichever target ran last
        warnings.simplefilter("ignore", dg.PreviewWarning)
        for asset in ARTIFACTS:
            checks.append(_size_check(asset, partitions))
            checks.append(_repro_check(asset, partitions))
    return checks


def _size_check(asset: str, partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset, name=SIZE_CHECK, blocking=False, partitions_def=partitions,
        description=f"Warns when {asset}'s size moves by more than history.size_change_pct percent "
                    f"against the median of the previous 5 materializations of the same target.")
    def _check(context: dg.AssetCheckExecutionContext, fruix: FruixResource) -> dg.AssetCheckResult:
        target = context.partition_key
        frame = load_history(context.instance, [target], artifacts=[asset])
        return _result(size_regression(frame, asset, target, pct=fruix.settings().history.size_change_pct,
                                       storage_id=_latest_storage_id(frame, asset, target)))

    return _check


def _repro_check(asset: str, partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset, name=REPRO_CHECK, blocking=False, partitions_def=partitions,
        description=f"Warns when {asset} was built from the same source and settings as an earlier "
                    f"materialization of the same target but its tree or a key file differs; lists up "
                    f"to 20 differing paths from the stored manifests.")
    def _check(context: dg.AssetCheckExecutionContext, fruix: FruixResource) -> dg.AssetCheckResult:
        target = context.partition_key
        frame = load_history(context.instance, [target], artifacts=[asset],
                             key_files=fruix.settings().slices.key_files)
        return _result(reproducible(frame, asset, target,
                                    storage_id=_latest_storage_id(frame, asset, target)))

    return _check


# --------------------------------------------------------------------------- jobs


def history_job():
    return dg.define_asset_job(
        HISTORY_JOB, selection=dg.AssetSelection.assets(HISTORY_ASSET),
        executor_def=dg.in_process_executor,
        description="Re-publish the build history (Parquet, CSV, chart) of one target; no guest needed.")


class RebuildCheckConfig(dg.Config):
    """``target``: the target to build twice; ``keep``: keep both build roots afterwards."""

    target: str
    keep: bool = False


def rebuild_check_job() -> dg.JobDefinition:
    from fruix_dagster.build.rebuild_check import rebuild_check

    @dg.op(name=REBUILD_OP, out=dg.Out(dict),
           description="Build one source twice from scratch in <build_root>-rebuild-a and -b, "
                       "collect both stages and compare the trees.")
    def _op(context: dg.OpExecutionContext, config: RebuildCheckConfig, fruix: FruixResource):
        settings = fruix.settings()
        session = fruix.session(config.target, context.log)
        result = rebuild_check(settings, config.target, session=session, log=context.log.info,
                               keep=config.keep)
        if result.identical:
            context.log.info(f"rebuild check of {config.target}: identical")
        else:
            context.log.warning(
                f"rebuild check of {config.target}: NOT reproducible: " + "; ".join(
                    f"{asset}: {len(paths)} differing path(s), e.g. {', '.join(paths[:3])}"
                    for asset, paths in result.differing_paths.items()))
        meta: dict[str, Any] = {"identical": result.identical, "source_store": result.source_store,
                                "report": dg.MetadataValue.md("```\n" + result.render() + "```")}
        for c in result.comparisons:
            meta[f"{c.asset}_identical"] = c.identical
        yield dg.Output({**result.to_dict(), "report": result.render()}, metadata=meta)

    # Not retried automatically after a crash of its run worker (dagster.yaml run_retries): the
    # dead run's builds may still run in the rebuild roots; relaunch it when they are done.
    @dg.job(name=REBUILD_JOB, executor_def=dg.in_process_executor, tags={"dagster/max_retries": "0"},
            description="The explicit reproducibility test: one target's source built twice in two "
                        "build roots; identical trees, or the differing paths.")
    def _job():
        _op()

    return _job
