"""Regression checks over the history frame (plain Python; the Dagster layer wraps them).

``size_regression``: the latest materialization's size against the median of
the previous ``window`` materializations of the same asset and target.

``reproducible``: a materialization built from the same source and settings
(``build_fingerprint``: a stage's install-step fingerprint, which chains the
source store hash, every make argv and variable and the upstream step
fingerprints; a slice's world stage's, plus the slice globs) and the same
code version as an earlier one must have the same ``tree_sha256`` and key-file
hashes; otherwise the build is not reproducible, and the stored manifests (when
both are still in the store) name the differing paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fruix_dagster.history.diff import diff_manifests, stored_manifest
from fruix_dagster.history.frame import frame_of, key_hash_columns

MAX_PATHS = 20


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n:.0f} bytes"


def _current(rows: pd.DataFrame, storage_id: int | None) -> int | None:
    """Index (in ``rows``) of the materialization to check: ``storage_id`` or the latest."""
    if rows.empty:
        return None
    if storage_id is None:
        return len(rows) - 1
    hits = rows.index[rows["storage_id"] == storage_id]
    return int(hits[0]) if len(hits) else None


def _none(asset: str, target: str) -> CheckOutcome:
    return CheckOutcome(True, f"no materialization of {asset} for {target} yet; nothing to check",
                        {"compared_materializations": 0})


def size_regression(frame: pd.DataFrame, asset: str, target: str, *, pct: float, window: int = 5,
                    storage_id: int | None = None) -> CheckOutcome:
    rows = frame_of(frame, target=target, asset=asset)
    i = _current(rows, storage_id)
    if i is None:
        return _none(asset, target)
    cur = rows.iloc[i]
    previous = rows.iloc[max(0, i - window):i]
    previous = previous[previous["size_bytes"].notna()]
    size = cur["size_bytes"]
    meta: dict[str, Any] = {"size_bytes": None if pd.isna(size) else int(size), "threshold_pct": float(pct),
                            "compared_materializations": len(previous)}
    if pd.isna(size):
        return CheckOutcome(True, f"{asset} for {target}: no size_bytes recorded; nothing to compare", meta)
    if previous.empty:
        return CheckOutcome(True, f"{asset} for {target}: first materialization "
                                  f"({_mb(int(size))}); nothing to compare yet", meta)
    median = float(previous["size_bytes"].astype("float64").median())
    if median == 0:
        change = 0.0 if size == 0 else math.inf
    else:
        change = (float(size) - median) / median * 100.0
    passed = abs(change) <= pct
    meta.update({"median_size_bytes": median, "change_pct": round(change, 3) if math.isfinite(change) else 1e308,
                 "compared_run_ids": ", ".join(r[:8] or "runless" for r in previous["run_id"].fillna(""))})
    text = (f"{asset} for {target}: {_mb(int(size))} is {change:+.1f}% against the median "
            f"{_mb(median)} of the previous {len(previous)} materializations (threshold ±{pct:g}%)")
    if not passed:
        text += (f"; a size change this large usually means a knob or the source changed — compare with "
                 f"`fruix-dagster history --target {target} --asset {asset}`")
    return CheckOutcome(passed, text, meta)


def _differing_hashes(a: pd.Series, b: pd.Series, columns: list[str]) -> list[str]:
    out = []
    for col in columns:
        x, y = a.get(col), b.get(col)
        if pd.isna(x) or pd.isna(y):
            continue
        if x != y:
            out.append(col)
    return out


def reproducible(frame: pd.DataFrame, asset: str, target: str, *, storage_id: int | None = None,
                 max_paths: int = MAX_PATHS) -> CheckOutcome:
    rows = frame_of(frame, target=target, asset=asset)
    i = _current(rows, storage_id)
    if i is None:
        return _none(asset, target)
    cur = rows.iloc[i]
    fp = cur["build_fingerprint"]
    meta: dict[str, Any] = {"build_fingerprint": "" if pd.isna(fp) else str(fp),
                            "tree_sha256": str(cur["tree_sha256"])}
    if pd.isna(fp):
        return CheckOutcome(True, f"{asset} for {target}: no build fingerprint recorded (nothing ties "
                                  f"it to its source and settings); cannot compare", meta)
    earlier = rows.iloc[:i]
    same = earlier[(earlier["build_fingerprint"] == fp)
                   & _same(earlier["code_version"], cur["code_version"])
                   & _same(earlier["globs"], cur["globs"])]
    meta["same_build_materializations"] = len(same)
    if same.empty:
        return CheckOutcome(True, f"{asset} for {target}: no earlier materialization of the same source "
                                  f"and settings (fingerprint {str(fp)[:16]}…) to compare with", meta)
    columns = ["tree_sha256", *key_hash_columns(frame)]
    differing = [(r, _differing_hashes(r, cur, columns)) for _, r in same.iterrows()]
    differing = [(r, cols) for r, cols in differing if cols]
    meta["differing_materializations"] = len(differing)
    if not differing:
        return CheckOutcome(True, f"{asset} for {target}: identical to {len(same)} earlier "
                                  f"materialization(s) of the same source and settings "
                                  f"(fingerprint {str(fp)[:16]}…)", meta)
    ref, cols = differing[-1]           # the most recent earlier build that differs
    key_files = [c[len("sha256:"):] for c in cols if c.startswith("sha256:")]
    meta.update({
        "earlier_run_id": str(ref["run_id"]), "earlier_tree_sha256": str(ref["tree_sha256"]),
        "earlier_time": str(ref["time"]),
        "differing_key_files": ", ".join(key_files) or "none",
    })
    before, why_a = stored_manifest(ref["path"], ref["tree_sha256"])
    after, why_b = stored_manifest(cur["path"], cur["tree_sha256"])
    paths_text = ""
    if before is not None and after is not None:
        diffs = diff_manifests(before, after)
        meta["differing_path_count"] = len(diffs)
        meta["differing_paths"] = "\n".join(d.path for d in diffs[:max_paths])
        meta["differences"] = "\n".join(d.describe() for d in diffs[:max_paths])
        shown = ", ".join(d.path for d in diffs[:max_paths])
        more = f" and {len(diffs) - max_paths} more" if len(diffs) > max_paths else ""
        paths_text = f"; {len(diffs)} path(s) differ: {shown}{more}"
    else:
        meta["differing_paths"] = ""
        meta["manifests"] = f"cannot list differing paths: {why_a or why_b}"
        paths_text = f"; differing paths unknown ({why_a or why_b})"
    text = (f"{asset} for {target} is NOT reproducible: built from the same source and settings "
            f"(fingerprint {str(fp)[:16]}…) as run {str(ref['run_id'])[:8] or 'runless'} "
            f"({len(differing)} of {len(same)} earlier such build(s) differ), but "
            f"tree_sha256 {str(ref['tree_sha256'])[:12]}… → {str(cur['tree_sha256'])[:12]}…"
            f"{' and key files ' + ', '.join(key_files) if key_files else ''} differ{paths_text}. "
            f"Find what embeds build-time state (timestamps, paths, randomness) in those files; "
            f"`fruix-dagster rebuild-check --target {target}` rebuilds twice to confirm")
    return CheckOutcome(False, text, meta)


def _same(col: pd.Series, value: Any) -> pd.Series:
    if pd.isna(value):
        return col.isna()
    return col == value
