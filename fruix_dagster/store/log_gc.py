"""Retention of the host copies of full build logs, ``<store.root>/logs/<target>/<step dir>.log``.

A log copy is kept while a kept materialization names it (metadata ``log_path``
or ``log_path:<step>``; :func:`fruix_dagster.defs.records.referenced_logs`), and
while it is younger than ``grace_seconds`` (``store.keep_log_days``): a step that
has just ended has no materialization yet, and a failed one never gets one —
its failure message and notification name its log.
``….log.partial`` files belong to a step that is still being followed, or to an
orchestrator that died while following one (the next follow of that step
finishes the copy), and are never removed here.  Everything else under
``logs/`` goes, and target directories left empty are removed too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

#: a finished step's log copy is never removed before it is this old
#: (the default of the setting store.keep_log_days, 14 days: a failed
#: nightly's log outlives a long weekend and the notifications linking it)
GRACE_SECONDS = 14 * 24 * 3600


def unreferenced_logs(store_root: str | os.PathLike, referenced: Iterable[str | os.PathLike], *,
                      grace_seconds: float = GRACE_SECONDS, now: float | None = None) -> list[Path]:
    """The log copies under ``<store_root>/logs`` that no kept materialization names, oldest first."""
    logs = Path(store_root) / "logs"
    if not logs.is_dir():
        return []
    keep = {os.path.realpath(p) for p in referenced}
    cutoff = (time.time() if now is None else now) - grace_seconds
    found = []
    for target in sorted(logs.iterdir()):
        if target.is_symlink() or not target.is_dir():
            continue
        for log in target.iterdir():
            if log.name.endswith(".log") and log.is_file() and not log.is_symlink():
                mtime = log.stat().st_mtime
                if mtime < cutoff and os.path.realpath(log) not in keep:
                    found.append((mtime, log))
    return [log for _, log in sorted(found)]


def gc_logs(store_root: str | os.PathLike, referenced: Iterable[str | os.PathLike], *,
            dry_run: bool = False, grace_seconds: float = GRACE_SECONDS) -> list[Path]:
    """Remove (``dry_run``: list) the unreferenced log copies; returns them."""
    doomed = unreferenced_logs(store_root, referenced, grace_seconds=grace_seconds)
    if not dry_run:
        for log in doomed:
            log.unlink(missing_ok=True)
        for target in {log.parent for log in doomed}:
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
    return doomed
