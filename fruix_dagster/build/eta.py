"""How long a build step is expected to take, from earlier builds of it.

Plain Python: the medians of up to five earlier materializations that ran
make (``step_action`` ``started`` or ``attached``; reused steps took no
time), overall and per ``>>>`` marker label.
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
    def from_metadata(cls, newest_first: Iterable[Mapping[str, Any]]) -> "Eta":
        """From recorded build metadata (``duration_s``, ``marker_offsets``), newest first."""
        durations: list[float] = []
        offsets: dict[str, list[float]] = {}
        for meta in newest_first:
            if meta.get("step_action") not in RAN_MAKE:
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
