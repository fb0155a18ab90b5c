"""Publishing the history: Parquet + CSV files, a PNG chart, a Markdown table.

The chart is drawn with matplotlib's Agg canvas directly (no pyplot, no global
backend switch), two panels sharing the time axis:

* size (MB, 10^6 bytes) of every artifact, one line each;
* build time (minutes) of the two stages: the make build step they came from
  plus their install step.

``chart_series(frame)`` is exactly what is plotted, so it can be checked
without looking at pixels.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from fruix_dagster.graph import ARTIFACTS, STAGES, spec

LABELS = {asset: spec(asset).label for asset in ARTIFACTS}
#: one colour per artifact, in graph order (world, kernel, headers, bootloader)
COLORS = dict(zip(ARTIFACTS, ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")))


def chart_series(frame: pd.DataFrame) -> dict[str, dict[str, pd.DataFrame]]:
    """What the chart shows: ``{"size_mb": {asset: frame(time, value)}, "duration_min": {...}}``.

    ``size_mb`` = ``size_bytes / 1e6``; ``duration_min`` = ``(build_duration_s +
    duration_s) / 60`` for stages (a missing build duration counts as 0; rows
    without ``duration_s`` are left out).
    """
    out: dict[str, dict[str, pd.DataFrame]] = {"size_mb": {}, "duration_min": {}}
    for asset in ARTIFACTS:
        rows = frame[frame["asset"] == asset].sort_values("storage_id")
        if rows.empty:
            continue
        sized = rows[rows["size_bytes"].notna()]
        if not sized.empty:
            out["size_mb"][asset] = pd.DataFrame({
                "time": sized["time"].to_numpy(),
                "value": sized["size_bytes"].astype("float64").to_numpy() / 1e6})
        if asset in STAGES:
            timed = rows[rows["duration_s"].notna()]
            if not timed.empty:
                total = timed["build_duration_s"].fillna(0.0) + timed["duration_s"]
                out["duration_min"][asset] = pd.DataFrame({
                    "time": timed["time"].to_numpy(), "value": total.to_numpy() / 60.0})
    return out


def plot_history(frame: pd.DataFrame, path: str | Path, *, title: str,
                 figsize: tuple[float, float] = (11, 7.5), dpi: int = 100) -> Path:
    """Draw the chart of ``chart_series(frame)`` into a PNG at ``path`` (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    series = chart_series(frame)
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_size, ax_time = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    for asset, data in series["size_mb"].items():
        ax_size.plot(data["time"], data["value"], marker="o" if len(data) <= 60 else None,
                     markersize=4, linewidth=1.6, color=COLORS[asset], label=LABELS[asset])
    ax_size.set_ylabel("size (MB)")
    ax_size.set_yscale("log")
    ax_size.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_size.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax_size.yaxis.set_minor_formatter(NullFormatter())
    ax_size.set_title("artifact size (log scale, 1 MB = 10⁶ bytes)", fontsize=10, loc="left")
    for asset, data in series["duration_min"].items():
        ax_time.plot(data["time"], data["value"], marker="o" if len(data) <= 60 else None,
                     markersize=4, linewidth=1.6, color=COLORS[asset], label=LABELS[asset])
    ax_time.set_ylabel("build + install time (minutes)")
    ax_time.set_xlabel("materialized at (UTC)")
    ax_time.set_ylim(bottom=0)
    ax_time.set_title("build time of the stages (make build step + install step)", fontsize=10, loc="left")
    for ax, key in ((ax_size, "size_mb"), (ax_time, "duration_min")):
        ax.grid(True, which="major", alpha=0.35)
        if series[key]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
        else:
            ax.text(0.5, 0.5, "nothing recorded yet", ha="center", va="center", transform=ax.transAxes,
                    color="0.4")
    locator = AutoDateLocator()
    ax_time.xaxis.set_major_locator(locator)
    ax_time.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.suptitle(title, fontsize=12)
    path = Path(path)
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def _atomic(path: Path, write: Callable[[str], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def for_files(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as written to CSV/JSON: ``time`` as ISO 8601 UTC text."""
    out = frame.copy()
    out["time"] = out["time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


@dataclass(frozen=True)
class Published:
    parquet: Path
    csv: Path
    png: Path
    rows: int


def write_history(frame: pd.DataFrame, out_dir: str | Path, *, target: str) -> Published:
    """``history.parquet``, ``history.csv`` and ``history.png`` in ``out_dir``, each replaced atomically."""
    out = Path(out_dir)
    parquet, csv, png = out / "history.parquet", out / "history.csv", out / "history.png"
    _atomic(parquet, lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow"))
    _atomic(csv, lambda tmp: for_files(frame).to_csv(tmp, index=False))
    span = ""
    if len(frame):
        first, last = frame["time"].min(), frame["time"].max()
        span = f", {first:%Y-%m-%d} … {last:%Y-%m-%d}"
    plot_history(frame, png, title=f"fruix build history — target {target} "
                                   f"({len(frame)} materializations{span})")
    return Published(parquet, csv, png, len(frame))


def _fmt_mb(v: object) -> str:
    return "—" if v is None or pd.isna(v) else f"{float(v) / 1e6:,.2f}"


def builds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per build (run): when it ended, each artifact's size and digest, stage times.

    Runless materializations count as one build each.
    """
    if frame.empty:
        return pd.DataFrame(columns=["build", "run_id", "time"])
    f = frame.sort_values("storage_id").copy()
    f["build"] = f["run_id"].where(f["run_id"].fillna("") != "", "runless-" + f["storage_id"].astype(str))
    last = f.groupby("build", sort=False).agg(time=("time", "max"), storage_id=("storage_id", "max"),
                                              run_id=("run_id", "first"))
    size = f.pivot_table(index="build", columns="asset", values="size_bytes", aggfunc="last")
    digest = f.groupby(["build", "asset"])["tree_sha256"].last().unstack("asset")
    total = (f["build_duration_s"].fillna(0.0) + f["duration_s"]).where(f["duration_s"].notna())
    minutes = (total / 60.0).groupby([f["build"], f["asset"]]).last().unstack("asset")
    out = last.join(size.add_prefix("size:")).join(digest.add_prefix("digest:")).join(
        minutes.add_prefix("minutes:"))
    return out.sort_values("storage_id").reset_index()


def markdown_last_builds(frame: pd.DataFrame, n: int = 10) -> str:
    """A Markdown table of the last ``n`` builds, newest first.

    "changed trees": the artifacts whose ``tree_sha256`` differs from the
    previous build that produced the same artifact.
    """
    all_builds = builds(frame)
    if all_builds.empty:
        return "_No artifact materializations yet._"
    changed: dict[str, str] = {}
    seen: dict[str, str] = {}
    for _, row in all_builds.iterrows():
        names = []
        for a in ARTIFACTS:
            d = row.get(f"digest:{a}")
            if d is None or pd.isna(d):
                continue
            if a in seen and seen[a] != d:
                names.append(LABELS[a].split()[0])
            seen[a] = d
        changed[row["build"]] = ", ".join(names) or "—"
    head = ["finished (UTC)", "run", *[f"{LABELS[a]} MB" for a in ARTIFACTS],
            "world min", "kernel min", "changed trees"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * 6 + ["---"]) + "|"]
    for _, row in all_builds.tail(n).iloc[::-1].iterrows():
        run = "runless" if str(row["build"]).startswith("runless-") else str(row["run_id"])[:8]
        cells = [f"{row['time']:%Y-%m-%d %H:%M:%S}", f"`{run}`"]
        cells += [_fmt_mb(row.get(f"size:{a}")) for a in ARTIFACTS]
        for a in STAGES:
            m = row.get(f"minutes:{a}")
            cells.append("—" if m is None or pd.isna(m) else f"{float(m):.1f}")
        cells.append(changed[row["build"]])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
