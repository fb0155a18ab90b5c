"""How long a build step is expected to take, from earlier builds of it.

Plain Python: the medians of up to five earlier materializations that ran
make (``step_action`` ``started`` or ``attached``; reused steps took no
time), overall and per ``>>>`` marker label.

Clean and incremental builds take very different times, so with ``clean``
given only earlier builds of the same kind count: their ``clean_build``
metadata (build/run.py) is "no" for an incremental build, "requested" or
"epoch" for a clean one -- "epoch" is an incremental build that
depend-cleanup.sh turned into a clean one (a new .clean_build_epoch), so
its time is not taken as an incremental build's.  Whether the coming build
will hit a new epoch is not known before it runs: an incremental estimate
is then too short, and the step's metadata says ``clean_build: epoch``.
Records without ``clean_build`` (older ones) count for either kind.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

SAMPLES = 5
RAN_MAKE = ("started", "attached")


@dataclass
class Eta:
    """Expected step duration and marker times: medians of up to 5 earlier builds that ran make."""

    total: float | None = None
    offsets: dict[str, float] | None = None
    samples: int = 0

    @classmethod
    def from_metadata(cls, newest_first: Iterable[Mapping[str, Any]], clean: bool | None = None) -> "Eta":
        """From recorded build metadata (``duration_s``, ``marker_offsets``), newest first;
        with ``clean``, only builds of that kind (``clean_build``)."""
        durations: list[float] = []
        offsets: dict[str, list[float]] = {}
        for meta in newest_first:
            if meta.get("step_action") not in RAN_MAKE:
                continue
            kind = meta.get("clean_build")
            if clean is not None and kind is not None and (kind != "no") != clean:
                continue
            durations.append(float(meta.get("duration_s", 0.0)))
            for label, secs in (meta.get("marker_offsets") or {}).items():
                offsets.setdefault(label, []).append(float(secs))
            if len(durations) == SAMPLES:
                break
        if not durations:
            return cls()
        return cls(statistics.median(durations),
                   {k: statistics.median(v) for k, v in offsets.items()}, len(durations))

    def describe(self, label: str, elapsed: int) -> str:
        expected = (self.offsets or {}).get(label)
        if expected is None:
            return f"{elapsed} s"
        return f"{elapsed} s, expected {expected:.0f} s ({elapsed - expected:+.0f} s)"
