"""The history for people (a table) and for scripts (CSV, JSON).

CSV and JSON carry every column of the frame, ``time`` as ISO 8601 UTC text;
JSON is a list of objects with ``null`` for missing values, integers as
integers.  ``pandas.read_csv`` / ``json.loads`` give the same rows back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from fruix_dagster.history.publish import for_files

FORMATS = ("table", "csv", "json")


def to_csv(frame: pd.DataFrame) -> str:
    return for_files(frame).to_csv(index=False)


def _plain(v: Any) -> Any:
    if v is None or v is pd.NA:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):          # numpy scalars
        v = v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
    return v


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    f = for_files(frame)
    cols = list(f.columns)
    return [{c: _plain(v) for c, v in zip(cols, row)} for row in f.itertuples(index=False, name=None)]


def to_json(frame: pd.DataFrame) -> str:
    return json.dumps(records(frame), indent=1, ensure_ascii=False) + "\n"


def _size(v: Any) -> str:
    return "-" if v is None or pd.isna(v) else f"{int(v) / 1e6:.2f}"


def to_table(frame: pd.DataFrame) -> str:
    """Fixed-width table: one line per materialization, oldest first."""
    head = ["time (UTC)", "target", "asset", "size MB", "Δ size", "files", "minutes", "tree_sha256",
            "run"]
    rows = []
    prev: dict[tuple[str, str], float] = {}
    f = frame.sort_values("storage_id")
    for _, r in f.iterrows():
        key = (r["target"], r["asset"])
        size = r["size_bytes"]
        delta = "-"
        if not pd.isna(size):
            before = prev.get(key)
            if before:
                delta = f"{(float(size) - before) / before * 100:+.1f}%"
            prev[key] = float(size)
        total = r["duration_s"]
        if not pd.isna(total):
            total = (0.0 if pd.isna(r["build_duration_s"]) else r["build_duration_s"]) + total
        rows.append([
            f"{r['time']:%Y-%m-%d %H:%M:%S}", str(r["target"]), str(r["asset"]), _size(size), delta,
            "-" if pd.isna(r["file_count"]) else str(int(r["file_count"])),
            "-" if pd.isna(total) else f"{total / 60:.1f}",
            "-" if pd.isna(r["tree_sha256"]) else str(r["tree_sha256"])[:16],
            str(r["run_id"])[:8] or "runless",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    right = {3, 4, 5, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(out) + "\n"


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return to_csv(frame)
    if fmt == "json":
        return to_json(frame)
    return to_table(frame)
