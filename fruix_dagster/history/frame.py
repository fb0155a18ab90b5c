"""Materialization history → one pandas DataFrame, one row per artifact materialization.

Input is an iterable of plain dict rows, one per materialization of any asset
of the graph (the Dagster layer, ``fruix_dagster.defs.history``, produces them
page by page from the instance; tests and benchmarks can make them by hand)::

    {"asset": "world_stage", "target": "amd64", "run_id": "…", "storage_id": 80,
     "timestamp": 1795789131.7,                      # epoch seconds
     "metadata": {"size_bytes": 168404, "tree_sha256": "…", …},   # plain values
     "tags": {"dagster/code_version": "1",
              "dagster/input_event_pointer/world_build": "78", …}}

Rows of ``world_stage``, ``kernel_stage``, ``headers_slice`` and
``bootloader_slice`` become rows of the frame; rows of ``freebsd_source``,
``world_build`` and ``kernel_build`` are only joined in (where a stage came
from); anything else is ignored.  Each row is reduced to a few scalars as it
is read, so memory grows with the number of materializations, not with their
metadata.

Columns (``COLUMNS`` plus one ``sha256:<key file>`` column per key file seen):

=====================  =====================================================
``time``               UTC datetime of the materialization
``timestamp``          the same, epoch seconds (float)
``target``             partition (build target)
``asset``              one of ``ARTIFACTS``
``run_id``             Dagster run id ("" for a runless report)
``storage_id``         event-log id: increases with every event
``size_bytes``         sum of file sizes (Int64)
``file_count``         files + symlinks (Int64)
``tree_sha256``        manifest digest of the tree
``sha256:<path>``      key-file digests, as recorded
``duration_s``         install time of a stage (slices: none)
``build_duration_s``   make time of the build the stage came from
                       (``world_build``/``kernel_build`` ``duration_s``)
``source_store``       the source store it was built from
``store_hash``         that store's hash
``step_fingerprint``   the stage's install-step fingerprint (chains the
                       source hash, make argv and settings of every step)
``build_fingerprint``  what determines the tree: a stage's
                       ``step_fingerprint``; a slice's world stage's
``globs``              a slice's globs (stages: none)
``code_version``       the asset's code version at materialization
``path``               the stored tree (``<store.root>/<digest>-<asset>-<target>/tree``)
=====================  =====================================================

Lineage joins use Dagster's ``dagster/input_event_pointer/<asset>`` tags
(the exact upstream materialization a run read); without them (e.g. runless
reports) the latest upstream materialization of the same target before the
row is used.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fruix_dagster.graph import ARTIFACTS, BUILD_OF, BUILDS, SLICES, SOURCE_ASSET, STAGES, spec

__all__ = ["ARTIFACTS", "BUILD_OF", "COLUMNS", "INPUT_ASSETS", "SLICES", "SOURCE", "STAGES", "empty_frame",
           "frame_of", "history_frame", "keep_row_fields", "key_hash_columns"]

SOURCE = SOURCE_ASSET
#: a slice's world stage (the tree it is carved from)
WORLD_STAGE: str = spec(SLICES[0]).deps[0]
#: every asset whose materializations the frame reads
INPUT_ASSETS: tuple[str, ...] = (*ARTIFACTS, SOURCE, *BUILDS)

POINTER = "dagster/input_event_pointer/"
CODE_VERSION_TAG = "dagster/code_version"
#: metadata keys kept from a row (plus every ``sha256:…``)
METADATA_KEYS = frozenset((
    "path", "size_bytes", "file_count", "tree_sha256", "duration_s", "step_fingerprint",
    "source_store", "store_hash", "from_world_stage", "globs",
))
#: tags kept from a row (plus every input event pointer)
TAG_KEYS = frozenset((CODE_VERSION_TAG,))

HEAD = ["time", "timestamp", "target", "asset", "run_id", "storage_id", "size_bytes", "file_count",
        "tree_sha256"]
TAIL = ["duration_s", "build_duration_s", "source_store", "store_hash", "step_fingerprint",
        "build_fingerprint", "globs", "code_version", "path"]
COLUMNS = HEAD + TAIL
_STRINGS = ("target", "asset", "run_id", "tree_sha256", "source_store", "store_hash", "step_fingerprint",
            "build_fingerprint", "globs", "code_version", "path")


def keep_row_fields(metadata: Mapping[str, Any], tags: Mapping[str, str]) -> tuple[dict, dict]:
    """The metadata and tags the frame reads, nothing else (for row producers)."""
    meta = {k: v for k, v in metadata.items() if k in METADATA_KEYS or k.startswith("sha256:")}
    kept = {k: v for k, v in tags.items() if k in TAG_KEYS or k.startswith(POINTER)}
    return meta, kept


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v is None or v == "" else int(v)
    except (TypeError, ValueError):
        return None


def _float_or_nan(v: Any) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def empty_frame(key_files: Sequence[str] = ()) -> pd.DataFrame:
    return _typed(pd.DataFrame(columns=HEAD + [f"sha256:{k}" for k in key_files] + TAIL))


def history_frame(rows: Iterable[Mapping[str, Any]], *, key_files: Sequence[str] = ()) -> pd.DataFrame:
    """The history of every artifact materialization in ``rows`` (see the module docstring).

    ``key_files`` fixes the order of the ``sha256:`` columns (and adds empty ones
    for key files never recorded); others seen in the rows follow, sorted.
    """
    arts: list[dict] = []
    sources: list[dict] = []
    builds: list[dict] = []
    hash_keys: set[str] = set()
    for r in rows:
        asset = r.get("asset")
        meta = r.get("metadata") or {}
        tags = r.get("tags") or {}
        sid = int(r["storage_id"])
        target = _str_or_none(r.get("target"))
        if asset in ARTIFACTS:
            rec = {
                "timestamp": float(r["timestamp"]), "target": target, "asset": asset,
                "run_id": str(r.get("run_id") or ""), "storage_id": sid,
                "size_bytes": _int_or_none(meta.get("size_bytes")),
                "file_count": _int_or_none(meta.get("file_count")),
                "tree_sha256": _str_or_none(meta.get("tree_sha256")),
                "duration_s": _float_or_nan(meta.get("duration_s")),
                "step_fingerprint": _str_or_none(meta.get("step_fingerprint")),
                "globs": _str_or_none(meta.get("globs")),
                "code_version": _str_or_none(tags.get(CODE_VERSION_TAG)),
                "path": _str_or_none(meta.get("path")),
                "_from_world": _str_or_none(meta.get("from_world_stage")),
                "_build_ptr": _int_or_none(tags.get(POINTER + BUILD_OF.get(asset, ""))),
                "_world_ptr": _int_or_none(tags.get(POINTER + WORLD_STAGE)),
            }
            for k, v in meta.items():
                if k.startswith("sha256:"):
                    rec[k] = _str_or_none(v)
                    hash_keys.add(k)
            arts.append(rec)
        elif asset == SOURCE:
            sources.append({"storage_id": sid, "target": target,
                            "source_store": _str_or_none(meta.get("source_store")),
                            "store_hash": _str_or_none(meta.get("store_hash"))})
        elif asset in BUILDS:
            builds.append({"storage_id": sid, "target": target, "build_asset": asset,
                           "build_duration_s": _float_or_nan(meta.get("duration_s")),
                           "_source_ptr": _int_or_none(tags.get(POINTER + SOURCE))})
    ordered_keys = [f"sha256:{k}" for k in key_files]
    ordered_keys += sorted(hash_keys - set(ordered_keys))
    if not arts:
        return empty_frame(key_files=[k[len("sha256:"):] for k in ordered_keys])

    df = pd.DataFrame.from_records(arts)
    df = df.sort_values("storage_id", kind="stable").reset_index(drop=True)
    src = pd.DataFrame.from_records(sources, columns=["storage_id", "target", "source_store", "store_hash"])
    bld = pd.DataFrame.from_records(
        builds, columns=["storage_id", "target", "build_asset", "build_duration_s", "_source_ptr"])

    # -- stages: the build they came from (pointer, else the latest before), and its source
    df["build_duration_s"] = np.nan
    df["source_store"] = None
    df["store_hash"] = None
    df["_source_ptr"] = np.nan
    stage_mask = df["asset"].isin(STAGES)
    if stage_mask.any():
        st = df.loc[stage_mask, ["storage_id", "target", "asset", "_build_ptr"]].copy()
        st["build_asset"] = st["asset"].map(BUILD_OF)
        joined = _lookup(st, "_build_ptr", bld, ["build_duration_s", "_source_ptr"],
                         by=["target", "build_asset"])
        df.loc[stage_mask, "build_duration_s"] = pd.to_numeric(joined["build_duration_s"]).to_numpy("float64")
        df.loc[stage_mask, "_source_ptr"] = pd.to_numeric(joined["_source_ptr"]).to_numpy("float64")
    # -- sources: through the build's pointer, else the latest source before the row
    joined = _lookup(df[["storage_id", "target", "_source_ptr"]], "_source_ptr", src,
                     ["source_store", "store_hash"], by=["target"])
    df["source_store"] = joined["source_store"].to_numpy()
    df["store_hash"] = joined["store_hash"].to_numpy()
    # -- fingerprints: a stage's own, a slice's from the world stage it was carved from
    df["build_fingerprint"] = df["step_fingerprint"].where(df["asset"].isin(STAGES), None)
    slice_mask = df["asset"].isin(SLICES)
    if slice_mask.any():
        worlds = df.loc[df["asset"] == WORLD_STAGE,
                        ["storage_id", "target", "tree_sha256", "step_fingerprint", "source_store",
                         "store_hash"]].rename(columns={"tree_sha256": "_from_world"})
        sl = df.loc[slice_mask, ["storage_id", "target", "_world_ptr", "_from_world"]]
        joined = _lookup(sl, "_world_ptr", worlds, ["step_fingerprint", "source_store", "store_hash"],
                         by=["target", "_from_world"])
        df.loc[slice_mask, "build_fingerprint"] = joined["step_fingerprint"].to_numpy()
        # a slice's source is its world stage's (when the world stage is known)
        for col in ("source_store", "store_hash"):
            have = joined[col].notna().to_numpy()
            idx = df.index[slice_mask][have]
            df.loc[idx, col] = joined[col].to_numpy()[have]

    df["time"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
    for k in ordered_keys:
        if k not in df:
            df[k] = None
    df = df[HEAD + ordered_keys + TAIL]
    return _typed(df)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["time"] = pd.to_datetime(df["time"], utc=True)
    df["timestamp"] = df["timestamp"].astype("float64")
    df["storage_id"] = df["storage_id"].astype("int64")
    for col in ("size_bytes", "file_count"):
        df[col] = df[col].astype("Int64")
    for col in ("duration_s", "build_duration_s"):
        df[col] = df[col].astype("float64")
    for col in [*_STRINGS, *(c for c in df.columns if c.startswith("sha256:"))]:
        df[col] = df[col].astype("object").where(df[col].notna(), None).astype("str")
    return df


def _lookup(left: pd.DataFrame, pointer: str, right: pd.DataFrame, cols: list[str],
            by: list[str]) -> pd.DataFrame:
    """``cols`` of the right row named by ``left[pointer]`` (a storage id), or else of the
    latest right row with equal ``by`` values and a smaller storage id.

    Returns a frame aligned with ``left`` (same length and order).
    """
    out = pd.DataFrame(index=left.index, columns=cols, dtype=object)
    if right.empty:
        return out
    by_id = right.drop_duplicates("storage_id").set_index("storage_id")
    ptr = pd.to_numeric(left[pointer], errors="coerce")
    found = ptr.isin(by_id.index)
    if found.any():
        hit = by_id.loc[ptr[found].astype("int64"), cols]
        out.loc[found, cols] = hit.to_numpy()
    missing = left.loc[~found]
    usable = missing.dropna(subset=by)
    if not usable.empty:
        l = usable[["storage_id", *by]].reset_index().sort_values("storage_id")
        r = right.dropna(subset=by)[["storage_id", *by, *cols]].sort_values("storage_id")
        if not r.empty:
            for col in by:   # merge_asof needs identical key dtypes
                l[col] = l[col].astype(str)
                r[col] = r[col].astype(str)
            m = pd.merge_asof(l, r, on="storage_id", by=by, direction="backward",
                              allow_exact_matches=False)
            out.loc[m["index"].to_numpy(), cols] = m[cols].to_numpy()
    return out


def frame_of(frame: pd.DataFrame, *, target: str | None = None, asset: str | None = None,
             last: int | None = None) -> pd.DataFrame:
    """Rows of one target and/or asset, oldest first; ``last``: only the newest ``last``."""
    out = frame
    if target is not None:
        out = out[out["target"] == target]
    if asset is not None:
        out = out[out["asset"] == asset]
    out = out.sort_values("storage_id", kind="stable")
    if last:
        out = out.tail(last)
    return out.reset_index(drop=True)


def key_hash_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("sha256:")]

