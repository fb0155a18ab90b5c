"""Which paths differ between two trees, from their manifests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fruix_dagster.errors import TreeError
from fruix_dagster.tree.manifest import Entry, Manifest


@dataclass(frozen=True)
class PathDiff:
    path: str
    change: str           # "added" | "removed" | "content" | "mode" | "type" | "link" (comma-joined)
    before: Entry | None
    after: Entry | None

    def describe(self) -> str:
        a, b = self.before, self.after
        if a is None:
            return f"{self.path}: only in the second tree ({b.kind if b else '?'})"
        if b is None:
            return f"{self.path}: only in the first tree ({a.kind})"
        parts = []
        if a.kind != b.kind:
            parts.append(f"type {a.kind} → {b.kind}")
        if a.sha256 != b.sha256 and a.kind == b.kind == "file":
            size = f"size {a.size} → {b.size}, " if a.size != b.size else f"size {a.size}, "
            parts.append(f"content ({size}sha256 {a.sha256[:12]}… → {b.sha256[:12]}…)")
        if a.mode != b.mode:
            parts.append(f"mode {a.mode:04o} → {b.mode:04o}")
        if a.link != b.link and a.kind == b.kind == "symlink":
            parts.append(f"link {_dec(a.link)} → {_dec(b.link)}")
        return f"{self.path}: " + ", ".join(parts)


def _dec(b: bytes | None) -> str:
    return "" if b is None else b.decode("utf-8", "surrogateescape")


def diff_manifests(before: Manifest, after: Manifest) -> list[PathDiff]:
    """Every path whose entry differs (added, removed, or any field changed), sorted by path."""
    out: list[PathDiff] = []
    a_entries, b_entries = before.entries, after.entries
    i = j = 0
    while i < len(a_entries) or j < len(b_entries):
        a = a_entries[i] if i < len(a_entries) else None
        b = b_entries[j] if j < len(b_entries) else None
        if b is None or (a is not None and a.path < b.path):
            out.append(PathDiff(_dec(a.path), "removed", a, None))
            i += 1
        elif a is None or b.path < a.path:
            out.append(PathDiff(_dec(b.path), "added", None, b))
            j += 1
        else:
            if a != b:
                changes = []
                if a.kind != b.kind:
                    changes.append("type")
                if a.sha256 != b.sha256:
                    changes.append("content")
                if a.mode != b.mode:
                    changes.append("mode")
                if a.link != b.link:
                    changes.append("link")
                out.append(PathDiff(_dec(a.path), ",".join(changes) or "size", a, b))
            i += 1
            j += 1
    return out


def stored_manifest(tree_path: str | Path | None, digest: str | None) -> tuple[Manifest | None, str]:
    """The manifest of a stored tree (``…/<digest>-<asset>-<target>/tree``), or None and why not."""
    if not tree_path or not isinstance(tree_path, (str, Path)) or str(tree_path) == "nan":
        return None, "no store path recorded"
    p = Path(tree_path)
    entry = p.parent if p.name == "tree" else p
    mf = entry / "manifest.jsonl"
    try:
        manifest = Manifest.from_jsonl(mf.read_bytes())
    except FileNotFoundError:
        return None, f"{entry} is no longer in the store (garbage-collected)"
    except (OSError, TreeError) as exc:
        return None, f"{mf} cannot be read: {exc}"
    if digest and manifest.digest() != digest:
        return None, f"{mf} hashes to {manifest.digest()[:16]}…, not the recorded {digest[:16]}…"
    return manifest, ""


__all__ = ["PathDiff", "diff_manifests", "stored_manifest"]
