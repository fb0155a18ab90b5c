"""Reading what earlier materializations recorded (latest per asset and target)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from fruix_dagster.errors import FruixError
from fruix_dagster.graph import ARTIFACTS, NAMES


@dataclass(frozen=True)
class Recorded:
    asset: str
    partition: str
    run_id: str
    storage_id: int
    timestamp: float
    metadata: dict[str, Any]
    data_version: str | None


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def recent(instance: dg.DagsterInstance, asset: str, partition: str, limit: int) -> list[Recorded]:
    """The newest ``limit`` materializations of asset for partition, newest first."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=limit)
    out = []
    for record in result.records:
        mat = record.asset_materialization
        assert mat is not None
        meta = {k: _value(v) for k, v in mat.metadata.items()}
        tags = mat.tags or {}
        out.append(Recorded(asset, partition, record.run_id, record.storage_id, record.timestamp, meta,
                            tags.get("dagster/data_version")))
    return out


def latest(instance: dg.DagsterInstance, asset: str, partition: str) -> Recorded | None:
    found = recent(instance, asset, partition, 1)
    return found[0] if found else None


def require(instance: dg.DagsterInstance, asset: str, partition: str, needed_by: str) -> Recorded:
    rec = latest(instance, asset, partition)
    if rec is None:
        raise FruixError(
            f"{needed_by} for target {partition!r} needs a materialization of {asset}, found none; "
            f"materialize {asset} (or the whole graph) for {partition!r} first")
    return rec


def checks_passed(instance: dg.DagsterInstance, rec: Recorded, check_names: list[str],
                  search: int = 200) -> dict[str, bool | None]:
    """Per check: whether its evaluation of exactly this materialization passed (None: none).

    Check evaluations are matched to the materialization they targeted by
    storage id, so another target's later run cannot stand in for this one.
    """
    out: dict[str, bool | None] = {}
    for name in check_names:
        key = dg.AssetCheckKey(dg.AssetKey(rec.asset), name)
        out[name] = None
        for execution in instance.event_log_storage.get_asset_check_execution_history(key, limit=search):
            event = execution.event.dagster_event if execution.event else None
            evaluation = getattr(event, "event_specific_data", None)
            target = getattr(evaluation, "target_materialization_data", None)
            if target is not None and target.storage_id == rec.storage_id:
                out[name] = bool(evaluation.passed)
                break
    return out


def referenced_paths(instance: dg.DagsterInstance, partitions: tuple[str, ...] | list[str]) -> set[str]:
    """Store paths named by the latest materialization of every artifact and target."""
    refs = set()
    for asset in ARTIFACTS:
        for partition in partitions:
            rec = latest(instance, asset, partition)
            if rec is not None and rec.metadata.get("path"):
                refs.add(str(rec.metadata["path"]))
    return refs


def referenced_logs(instance: dg.DagsterInstance, partitions: tuple[str, ...] | list[str],
                    depth: int) -> set[str]:
    """Host log copies (``log_path``, ``log_path:<step>``) named by the newest ``depth``
    materializations of every asset and target: the logs the store's retention keeps."""
    refs = set()
    for asset in NAMES:
        for partition in partitions:
            for rec in recent(instance, asset, partition, depth):
                refs.update(str(v) for k, v in rec.metadata.items()
                            if (k == "log_path" or k.startswith("log_path:")) and v)
    return refs
