"""What the Dagster UI shows on each asset: kinds, owners, tags, code versions, history.

* **kinds** — ``freebsd`` and ``make`` on the assets a make step produces,
  ``freebsd`` on the source and the slices, ``pandas`` on ``build_history``;
* **owners** and **tags** — ``[assets]`` of the settings file, on every asset;
* **code_version** — the asset's code revision plus a digest of the settings
  that change what it builds for every target (make command, ``make_vars``,
  ``world_make_vars``/``kernel_make_vars``, the slice globs), so such a
  settings change marks the affected assets stale in the UI before any run.
  ``-jN``, ``clean`` and timeouts do not change the output and are left out;
  so are the ``[[target]]`` tables (a code version is one per asset
  definition, not per partition: one target's ``kernconf`` would mark every
  partition stale) — per-target changes show in the step fingerprints;
* **history** on each stored artifact — its size and build time over time as
  an inline Markdown image (a PNG data URI, so the browser needs no file from
  the host) and its last builds as a ``MetadataValue.table`` with a schema.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from fruix_dagster.settings import Settings

KINDS: dict[str, set[str]] = {
    "freebsd_source": {"freebsd"},
    "world_build": {"freebsd", "make"},
    "kernel_build": {"freebsd", "make"},
    "world_stage": {"freebsd", "make"},
    "kernel_stage": {"freebsd", "make"},
    "headers_slice": {"freebsd"},
    "bootloader_slice": {"freebsd"},
    "build_history": {"pandas"},
}
LAST_BUILDS = 10
LAST_BUILDS_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("time", "string", description="materialized at (UTC)"),
    dg.TableColumn("run", "string", description="run id (first 8 characters)"),
    dg.TableColumn("size_mb", "float", description="sum of file sizes, 10⁶ bytes"),
    dg.TableColumn("files", "int", description="files and symlinks"),
    dg.TableColumn("minutes", "float", description="make build step + install step (stages)"),
    dg.TableColumn("tree_sha256", "string", description="manifest digest (first 16 hex digits)"),
])


def output_settings(settings: Settings, asset: str) -> dict[str, Any]:
    """The settings whose change changes what ``asset`` produces."""
    b = settings.build
    # Not the source declaration: what it selects is freebsd_source's data version (the store
    # hash), and its paths differ between hosts and checkouts without changing any output.
    # Not the [[target]] tables: a code version is one per asset definition, so a target's
    # kernconf would mark every partition stale, and adding a target would mark all the others;
    # per-target changes show in the step fingerprints (the asset rebuilds or refuses).
    # The pinned build configuration (make.conf, src.conf, src-env.conf, src_env) changes what
    # every step builds: its texts, or the host files named (their text is read at plan time).
    conf = {k: getattr(b, k) for k in ("make_conf", "make_conf_file", "src_conf", "src_conf_file",
                                        "src_env_conf", "src_env_conf_file")}
    conf["src_env"] = list(b.src_env)
    world = {"make": b.make, "make_vars": list(b.make_vars), "world_make_vars": list(b.world_make_vars),
             "conf": conf}
    kernel = {"make": b.make, "make_vars": list(b.make_vars), "kernel_make_vars": list(b.kernel_make_vars),
              "conf": conf}
    return {
        "world_build": world,
        "world_stage": {**world, "world_make_vars": list(b.make_vars_for("installworld"))},
        "kernel_build": kernel,
        "kernel_stage": kernel,
        "headers_slice": {**world, "globs": list(settings.slices.headers)},
        "bootloader_slice": {**world, "globs": list(settings.slices.bootloader)},
    }.get(asset, {})


def code_version(settings: Settings, asset: str, revision: str) -> str:
    """``<revision>-<digest of the output settings>`` (the revision alone when none apply)."""
    inputs = output_settings(settings, asset)
    if not inputs:
        return revision
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{revision}-{digest}"


def asset_view(settings: Settings, asset: str) -> dict[str, Any]:
    """Keyword arguments of ``@dg.asset`` for the UI: kinds, owners, tags."""
    out: dict[str, Any] = {"kinds": KINDS.get(asset, set())}
    if settings.assets.owners:
        out["owners"] = list(settings.assets.owners)
    if settings.assets.tags:
        out["tags"] = dict(settings.assets.tags)
    return out


def last_builds_table(frame: pd.DataFrame, n: int = LAST_BUILDS) -> dg.TableMetadataValue:
    """The newest ``n`` rows of one artifact's history frame, newest first, as a table."""
    rows = []
    for _, r in frame.sort_values("storage_id").tail(n).iloc[::-1].iterrows():
        minutes = None
        if pd.notna(r.get("duration_s")):
            minutes = round((float(r["build_duration_s"]) if pd.notna(r.get("build_duration_s")) else 0.0)
                            / 60 + float(r["duration_s"]) / 60, 2)
        rows.append(dg.TableRecord({
            "time": f"{r['time']:%Y-%m-%d %H:%M:%S}",
            "run": str(r["run_id"] or "runless")[:8],
            "size_mb": round(float(r["size_bytes"]) / 1e6, 3) if pd.notna(r["size_bytes"]) else None,
            "files": int(r["file_count"]) if pd.notna(r["file_count"]) else None,
            "minutes": minutes,
            "tree_sha256": str(r["tree_sha256"])[:16],
        }))
    return dg.MetadataValue.table(rows, schema=LAST_BUILDS_SCHEMA)


def inline_chart(frame: pd.DataFrame, *, title: str) -> dg.MarkdownMetadataValue:
    """The history chart of ``frame`` as a Markdown image with a PNG data URI."""
    from fruix_dagster.history.publish import plot_history

    with tempfile.TemporaryDirectory() as tmp:
        png = plot_history(frame, Path(tmp) / "chart.png", title=title, figsize=(8, 5), dpi=72)
        data = base64.b64encode(png.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def current_row(asset: str, target: str, run_id: str, metadata: dict[str, Any],
                code_version_tag: str) -> dict[str, Any]:
    """The materialization being made now, as a history row (it is not in the instance yet)."""
    plain = {k: getattr(v, "value", v) for k, v in metadata.items()}
    return {"asset": asset, "target": target, "run_id": run_id, "storage_id": 2 ** 62,
            "timestamp": time.time(), "metadata": plain, "tags": {"dagster/code_version": code_version_tag}}
