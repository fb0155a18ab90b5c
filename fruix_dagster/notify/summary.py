"""The morning summary: per target, the last build's result, its duration against the
median, and how the artifacts' sizes and digests moved.

Inputs are plain: :class:`RunFact` rows (the Dagster layer reads them from the
run storage) and the history frame of :mod:`fruix_dagster.history`.  The
output is Markdown — the same text goes into the mail, the webhooks and the
``summary`` metadata of ``build_history``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from fruix_dagster.history.frame import ARTIFACTS

#: previous successful runs the duration is compared with
WINDOW = 5
_SHORT = {"world_stage": "world", "kernel_stage": "kernel", "headers_slice": "headers",
          "bootloader_slice": "bootloader"}


@dataclass(frozen=True)
class RunFact:
    """One finished build run of a target (newest first in the lists given here)."""

    run_id: str
    target: str
    status: str  # SUCCESS, FAILURE, CANCELED
    started: float | None
    ended: float | None

    @property
    def seconds(self) -> float | None:
        return None if self.started is None or self.ended is None else self.ended - self.started


@dataclass(frozen=True)
class TargetSummary:
    target: str
    last: RunFact | None
    median_s: float | None
    samples: int
    sizes: dict[str, tuple[int, int | None]]   # asset → (latest bytes, previous bytes)
    changed: tuple[str, ...]                   # assets whose tree digest changed in their latest materialization

    @property
    def ok(self) -> bool:
        return self.last is not None and self.last.status == "SUCCESS"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _min(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def summarize(target: str, runs: Sequence[RunFact], frame: pd.DataFrame, window: int = WINDOW) -> TargetSummary:
    mine = [r for r in runs if r.target == target]
    last = mine[0] if mine else None
    earlier = [r.seconds for r in mine[1:] if r.status == "SUCCESS" and r.seconds is not None][:window]
    sizes: dict[str, tuple[int, int | None]] = {}
    changed = []
    rows = frame[frame["target"] == target] if not frame.empty else frame
    for asset in ARTIFACTS:
        mats = rows[rows["asset"] == asset].sort_values("storage_id") if not rows.empty else rows
        if mats.empty:
            continue
        latest = mats.iloc[-1]
        prev = mats.iloc[-2] if len(mats) > 1 else None
        if pd.notna(latest["size_bytes"]):
            sizes[asset] = (int(latest["size_bytes"]),
                            int(prev["size_bytes"]) if prev is not None and pd.notna(prev["size_bytes"]) else None)
        if prev is not None and latest["tree_sha256"] != prev["tree_sha256"]:
            changed.append(asset)
    return TargetSummary(target, last, statistics.median(earlier) if earlier else None, len(earlier),
                         sizes, tuple(changed))


def _result(s: TargetSummary, ui_url: str) -> str:
    if s.last is None:
        return "no build yet"
    word = "ok" if s.ok else s.last.status
    return f"{word} ([{s.last.run_id[:8]}]({ui_url}runs/{s.last.run_id}))"


def _duration(s: TargetSummary) -> str:
    if s.last is None or s.last.seconds is None:
        return "—"
    text = _min(s.last.seconds)
    if s.median_s:
        text += f" vs median {_min(s.median_s)} of {s.samples} ({s.last.seconds / s.median_s:.2f}×)"
    else:
        text += " (no earlier successful build)"
    return text


def _sizes(s: TargetSummary) -> str:
    parts = []
    for asset, (now, before) in s.sizes.items():
        delta = ""
        if before:
            pct = (now - before) * 100.0 / before
            delta = f" ({pct:+.1f}%)" if abs(pct) >= 0.05 else " (=)"
        parts.append(f"{_SHORT[asset]} {_mb(now)}{delta}")
    return ", ".join(parts) or "—"


def headline(summaries: Sequence[TargetSummary]) -> str:
    ok = sum(1 for s in summaries if s.ok)
    bad = [s.target for s in summaries if s.last is not None and not s.ok]
    never = sum(1 for s in summaries if s.last is None)
    text = f"{len(summaries)} target{'s' if len(summaries) != 1 else ''}: {ok} ok"
    if bad:
        text += f", {len(bad)} failed ({', '.join(bad)})"
    if never:
        text += f", {never} never built"
    return text


def summary_markdown(targets: Sequence[str], runs: Sequence[RunFact], frame: pd.DataFrame,
                     ui_url: str, window: int = WINDOW) -> tuple[str, str]:
    """(headline, Markdown table): one row per target, in settings order."""
    summaries = [summarize(t, runs, frame, window) for t in targets]
    lines = ["| target | last build | duration | sizes (vs previous) | changed trees |",
             "|---|---|---|---|---|"]
    for s in summaries:
        changed = ", ".join(_SHORT[a] for a in s.changed) or "—"
        lines.append(f"| {s.target} | {_result(s, ui_url)} | {_duration(s)} | {_sizes(s)} | {changed} |")
    return headline(summaries), "\n".join(lines) + "\n"
