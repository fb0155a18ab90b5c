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
    return "-" if v is None or pd.isna(v) else f"{v / 1e6:.2f}"


def to_table(frame: pd.DataFrame, last: int | None = None) -> str:
    """Fixed-width table: one line per materialization, oldest first; ``last``: only the
    newest ``last`` lines.

    ``Δ size`` is against the previous materialization of the same asset and
    target (also when that one is not shown); ``minutes`` is a stage's make
    build step plus its install step.
    """
    f = frame.sort_values("storage_id", kind="stable")
    size = f["size_bytes"].astype("float64")
    prev = size.groupby([f["target"], f["asset"]]).shift(1)
    change = (size - prev) / prev * 100
    if last:
        f, size, change = f.tail(last), size.tail(last), change.tail(last)
    minutes = (f["build_duration_s"].fillna(0.0) + f["duration_s"]) / 60
    cols = [
        f["time"].dt.strftime("%Y-%m-%d %H:%M:%S").tolist(),
        f["target"].astype(str).tolist(),
        f["asset"].astype(str).tolist(),
        [_size(v) for v in size.tolist()],
        ["-" if pd.isna(v) or math.isinf(v) else f"{v:+.1f}%" for v in change.tolist()],
        ["-" if pd.isna(v) else str(int(v)) for v in f["file_count"].astype("float64").tolist()],
        ["-" if pd.isna(v) else f"{v:.1f}" for v in minutes.tolist()],
        ["-" if pd.isna(v) else str(v)[:16] for v in f["tree_sha256"].tolist()],
        [str(v)[:8] or "runless" for v in f["run_id"].fillna("").tolist()],
    ]
    head = ["time (UTC)", "target", "asset", "size MB", "Δ size", "files", "minutes", "tree_sha256",
            "run"]
    widths = [max([len(h), *map(len, col)]) for h, col in zip(head, cols)]
    right = {3, 4, 5, 6}

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out.extend(line(cells) for cells in zip(*cols))
    return "\n".join(out) + "\n"


def render(frame: pd.DataFrame, fmt: str, last: int | None = None) -> str:
    """``frame`` (or its newest ``last`` rows) as ``table``, ``csv`` or ``json``."""
    if fmt == "table":
        return to_table(frame, last)
    rows = frame.sort_values("storage_id", kind="stable")
    if last:
        rows = rows.tail(last)
    return to_csv(rows) if fmt == "csv" else to_json(rows)
