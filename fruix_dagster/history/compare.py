"""Two builds of the same source, compared: per tree, identical or the differing paths.

Plain Python (no pandas needed, no dagster): the result of the rebuild check
(:mod:`fruix_dagster.build.rebuild_check`), its ``key=value`` report and its
JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fruix_dagster.history.diff import PathDiff, diff_manifests
from fruix_dagster.tree.manifest import Manifest


@dataclass(frozen=True)
class TreeComparison:
    asset: str
    digest_a: str
    digest_b: str
    entries: int                      # entries in tree a
    diffs: tuple[PathDiff, ...]

    @property
    def identical(self) -> bool:
        return self.digest_a == self.digest_b

    def summary(self) -> str:
        if self.identical:
            return f"{self.asset}: identical (tree_sha256 {self.digest_a[:16]}…, {self.entries} entries)"
        return (f"{self.asset}: DIFFERS in {len(self.diffs)} of {self.entries} entries "
                f"(tree_sha256 {self.digest_a[:16]}… vs {self.digest_b[:16]}…)")


@dataclass(frozen=True)
class RebuildResult:
    target: str
    source_store: str
    store_hash: str
    build_roots: tuple[str, str]
    stored: dict[str, tuple[str, str]]          # stage asset → (tree a, tree b) on the host
    comparisons: tuple[TreeComparison, ...]
    seconds: tuple[float, float]
    kept_build_roots: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def identical(self) -> bool:
        return all(c.identical for c in self.comparisons)

    @property
    def differing_paths(self) -> dict[str, list[str]]:
        return {c.asset: [d.path for d in c.diffs] for c in self.comparisons if not c.identical}

    def render(self, max_paths: int = 50) -> str:
        lines = [
            f"# rebuild check of target {self.target}: the same source built twice from scratch",
            f"source_store={self.source_store}",
            f"store_hash={self.store_hash}",
            f"build_root_a={self.build_roots[0]}",
            f"build_root_b={self.build_roots[1]}",
            f"build_seconds={self.seconds[0]:.0f},{self.seconds[1]:.0f}",
        ]
        for asset, (a, b) in self.stored.items():
            lines.append(f"{asset}_a={a}")
            lines.append(f"{asset}_b={b}")
        for c in self.comparisons:
            lines.append(c.summary())
            for d in c.diffs[:max_paths]:
                lines.append(f"  {d.describe()}")
            if len(c.diffs) > max_paths:
                lines.append(f"  … and {len(c.diffs) - max_paths} more")
        lines.extend(f"# {n}" for n in self.notes)
        lines.append(f"rebuild_check={'identical' if self.identical else 'differs'}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "source_store": self.source_store, "store_hash": self.store_hash,
            "build_roots": list(self.build_roots), "identical": self.identical,
            "seconds": list(self.seconds), "stored": {k: list(v) for k, v in self.stored.items()},
            "trees": {c.asset: {"identical": c.identical, "tree_sha256_a": c.digest_a,
                                "tree_sha256_b": c.digest_b, "entries": c.entries,
                                "differing_paths": [d.path for d in c.diffs]}
                      for c in self.comparisons},
        }


def compare(asset: str, a: Manifest, b: Manifest) -> TreeComparison:
    return TreeComparison(asset, a.digest(), b.digest(), len(a), tuple(diff_manifests(a, b)))
