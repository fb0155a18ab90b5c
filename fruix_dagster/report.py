"""The harness's key=value summary, built from recorded metadata.

Plain Python: takes the latest recorded metadata per asset (a mapping asset →
metadata dict, or None when never materialized) and the check outcomes, and
renders the Phase 20.2 block in its key order.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from fruix_dagster.graph import (ARTIFACTS, BUILDS, KERNEL_FILE, LOADER_EFI, PARAM_H, SOURCE_ASSET,
                                 key_file_home, spec)

REPORT_KEYS = (
    "build_jobs", "source_store", "source_root", "build_root",
    "world_stage", "kernel_stage", "headers_stage", "bootloader_stage",
    "build_root_size", "world_stage_size", "kernel_stage_size", "headers_stage_size",
    "bootloader_stage_size", "sha_kernel", "sha_loader", "sha_param",
)
#: the harness's name of each artifact (``world_stage=``, ``headers_stage=`` …) → the asset
_STAGE_ASSETS = {spec(a).report_name: a for a in ARTIFACTS}
#: the harness's key-file lines: from the asset that is the file's home (see fruix_dagster.graph)
_SHAS = {key: (key_file_home(path), f"sha256:{path}")
         for key, path in (("sha_kernel", KERNEL_FILE), ("sha_loader", LOADER_EFI), ("sha_param", PARAM_H))}


def human_size(n: int) -> str:
    """Like ``du -h``: powers of 1024, rounded up, one decimal below 10."""
    units = "BKMGTP"
    value = float(n)
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    if i == 0:
        return f"{int(value)}B"
    if value < 10:
        v = math.ceil(value * 10) / 10
        if v >= 10:
            return f"{math.ceil(value)}{units[i]}"
        return f"{v:.1f}{units[i]}"
    return f"{math.ceil(value)}{units[i]}"


def build_report(latest: Mapping[str, Mapping[str, Any] | None],
                 checks_ok: Mapping[str, bool]) -> tuple[list[tuple[str, str]], bool]:
    """Return the (key, value) lines and whether the build is complete and checked."""
    def meta(asset: str) -> Mapping[str, Any]:
        return latest.get(asset) or {}

    values: dict[str, str] = {}
    values["build_jobs"] = str(meta(BUILDS[0]).get("build_jobs", ""))
    values["source_store"] = str(meta(SOURCE_ASSET).get("source_store", ""))
    values["source_root"] = str(meta(SOURCE_ASSET).get("source_root", ""))
    # the newest measurement of the build root; one that failed (build_root_size_unknown) leaves
    # the value empty rather than showing an older figure
    measured = [a for a in _STAGE_ASSETS.values()
                if "build_root_size_bytes" in meta(a) or "build_root_size_unknown" in meta(a)]
    newest = max(measured, key=lambda a: meta(a).get("_timestamp", 0), default=None)
    values["build_root"] = next((str(meta(a)["build_root"]) for a in _STAGE_ASSETS.values()
                                 if meta(a).get("build_root")), "")
    for key, asset in _STAGE_ASSETS.items():
        values[key] = str(meta(asset).get("path", ""))
    values["build_root_size"] = (human_size(int(meta(newest)["build_root_size_bytes"]))
                                 if newest and "build_root_size_bytes" in meta(newest) else "")
    for key, asset in _STAGE_ASSETS.items():
        size = meta(asset).get("size_bytes")
        values[f"{key}_size"] = human_size(int(size)) if size is not None else ""
    for key, (asset, mkey) in _SHAS.items():
        values[key] = str(meta(asset).get(mkey, ""))
    complete = all(latest.get(a) for a in _STAGE_ASSETS.values()) and all(
        checks_ok.get(a, False) for a in _STAGE_ASSETS.values())
    return [(k, values[k]) for k in REPORT_KEYS], complete


def render_report(lines: list[tuple[str, str]], complete: bool) -> str:
    body = "\n".join(f"{k}={v}" for k, v in lines)
    return f"{body}\nhost_initiated_native_build={'ok' if complete else 'incomplete'}\n"
