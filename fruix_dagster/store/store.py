"""The host artifact store: every stage and slice, content-addressed and kept.

Layout::

    <store.root>/
      <tree_sha256>-<asset>-<target>/
        tree/                the tree, modes and symlinks preserved
        manifest.jsonl       the manifest whose sha256 is tree_sha256
        manifest.mtree       the same in mtree(8) syntax with sha256digest
        info.json            asset, target, digest, size, counts, published time
      .tmp-<pid>-<random>/   an entry being written (never visible as an entry)

Entries are written under ``.tmp-…`` on the same file system, flushed to
disk (``store.durable``) and renamed into place, then the store root is
flushed, so neither a crash nor a power loss leaves a visible partial entry; leftovers of dead
writers are removed by the next writer.  Identical trees are stored once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from fruix_dagster.errors import FruixError, StoreError, TransportError
from fruix_dagster.guest.hashing import guest_sha256
from fruix_dagster.guest.transport import Transport
from fruix_dagster.store.durable import publish_rename, replace_file
from fruix_dagster.store.mtree import owner_words, render_mtree
from fruix_dagster.store.nometalog import apply_guest_metalog, apply_owners
from fruix_dagster.store.writer import DirectoryWriter
from fruix_dagster.tree.manifest import Entry, Manifest, manifest_from_tar
from fruix_dagster.tree.slices import select

_ENTRY = re.compile(r"^(?P<digest>[0-9a-f]{64})-(?P<asset>[a-z_]+)-(?P<target>[A-Za-z0-9_-]+)$")
_TMP = re.compile(r"^\.tmp-(?P<pid>\d+)-[0-9a-f]+$")
#: head room kept free beyond the tree itself (metadata, manifests, fs overhead)
MARGIN_BYTES = 64 << 20

@dataclass(frozen=True)
class StoredTree:
    path: Path            # the entry directory
    manifest: Manifest
    digest: str
    reused: bool          # an identical tree was already stored

    @property
    def tree(self) -> Path:
        return self.path / "tree"


def _chmod_writable(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        os.chmod(dirpath, 0o700)


def remove_entry(path: Path) -> None:
    """Delete a store entry (or temporary dir), including read-only directories."""
    if path.exists() or path.is_symlink():
        _chmod_writable(path)
        shutil.rmtree(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArtifactStore:
    def __init__(self, root: str | os.PathLike, keep: int = 5, *, collect_retries: int = 3,
                 collect_backoff_seconds: float = 2.0, on_retry: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.keep = keep
        self.collect_retries = collect_retries
        self.collect_backoff_seconds = collect_backoff_seconds
        self.on_retry = on_retry or (lambda message: None)

    # -- housekeeping ------------------------------------------------------------
    def _prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"artifact store {self.root}: expected a writable directory, cannot create it: {exc}; "
                f"fix store.root in the settings file") from exc
        self.clean_leftovers()

    def clean_leftovers(self) -> list[Path]:
        removed = []
        for child in self.root.iterdir() if self.root.exists() else ():
            m = _TMP.match(child.name)
            if m and (int(m["pid"]) == os.getpid() or not _pid_alive(int(m["pid"]))):
                if int(m["pid"]) == os.getpid():
                    continue
                remove_entry(child)
                removed.append(child)
        return removed

    def _tmpdir(self) -> Path:
        tmp = self.root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        return tmp

    def entries(self) -> list[dict]:
        out = []
        for child in sorted(self.root.iterdir()) if self.root.exists() else ():
            m = _ENTRY.match(child.name)
            if not m:
                continue
            info = {"path": child, **m.groupdict(), "published": 0.0}
            try:
                info["published"] = float(json.loads((child / "info.json").read_text())["published"])
            except (OSError, ValueError, KeyError):
                info["published"] = child.stat().st_mtime
            out.append(info)
        return out

    def entry_of(self, tree_path: str | os.PathLike) -> Path:
        """The entry directory of a stored tree path (``…/<entry>/tree``)."""
        p = Path(tree_path)
        entry = p.parent if p.name == "tree" else p
        if entry.parent != self.root or not _ENTRY.match(entry.name) or not entry.is_dir():
            raise StoreError(
                f"expected a stored tree under {self.root} (…/<tree_sha256>-<asset>-<target>/tree), "
                f"got {tree_path}; it may have been garbage-collected — re-materialize its asset")
        return entry

    def open(self, tree_path: str | os.PathLike) -> StoredTree:
        """An existing entry, by its tree path (raises StoreError if it is gone or damaged)."""
        entry = self.entry_of(tree_path)
        manifest = self.load_manifest(entry)
        return StoredTree(entry, manifest, manifest.digest(), reused=True)

    def load_manifest(self, entry: Path) -> Manifest:
        m = _ENTRY.match(entry.name)
        manifest = Manifest.from_jsonl((entry / "manifest.jsonl").read_bytes())
        if not m or manifest.digest() != m["digest"]:
            raise StoreError(
                f"store entry {entry}: its manifest does not hash to the digest in its name; the "
                f"entry is damaged — delete it and re-materialize its asset")
        return manifest

    # -- writing -----------------------------------------------------------------
    def _check_space(self, need: int, what: str) -> None:
        free = shutil.disk_usage(self.root).free
        if free < need + MARGIN_BYTES:
            raise StoreError(
                f"artifact store {self.root} cannot hold {what}: it needs about "
                f"{(need + MARGIN_BYTES) / 2**20:.1f} MiB, the file system has {free / 2**20:.1f} MiB "
                f"free; free space (fruix-dagster store gc) or move store.root — nothing was published")

    def collect(self, transport: Transport, guest_dir: str, *, asset: str, target: str,
                key_files: Sequence[str] = (), metalog: str | None = None,
                id_etc: str | None = None) -> StoredTree:
        """Bring a guest tree into the store in one tar stream, verified and atomic.

        A dropped connection restarts the whole stream (``collect_retries``
        times, backing off ``collect_backoff_seconds`` doubling, each retry
        reported through ``on_retry``); what the failed attempt wrote is
        discarded first, so nothing half-collected is ever published.  With
        ``metalog`` (a NO_ROOT stage), owners, groups, modes and flags come
        from that guest file (names resolved on the guest and in ``id_etc``).
        """
        self._prepare()
        what = f"{asset} for {target} ({guest_dir} on {transport.description})"
        self._check_space(transport.used_bytes(guest_dir), what)
        guest_hashes = guest_sha256(transport, guest_dir, key_files)
        tmp = self._tmpdir()
        try:
            manifest, writer = self._stream(transport, guest_dir, tmp / "tree", what)
            for path, digest in guest_hashes.items():
                entry = manifest.get(path.encode())
                found = entry.sha256 if entry is not None else "no such file"
                if found != digest:
                    raise StoreError(
                        f"collecting {what}: {path} hashed {digest} on the guest but {found} in the "
                        f"collected stream — the tree changed during collection; nothing was "
                        f"published. Re-materialize {asset} when nothing else writes to {guest_dir}")
            r = writer.root_member
            root = {} if r is None else {"uname": r.uname, "gname": r.gname, "uid": r.uid, "gid": r.gid}
            if metalog is not None:
                manifest, root = apply_guest_metalog(transport, metalog, id_etc or "/etc", manifest, what)
                if writer.chown:
                    apply_owners(tmp / "tree", manifest, root)
            return self._publish(tmp, manifest, asset, target, writer.root_mode, root)
        except BaseException:
            remove_entry(tmp)
            raise

    def _stream(self, transport: Transport, guest_dir: str, dest: Path, what: str
                ) -> tuple[Manifest, DirectoryWriter]:
        attempts = self.collect_retries + 1
        for attempt in range(1, attempts + 1):
            if dest.exists():
                remove_entry(dest)
            dest.mkdir()
            writer = DirectoryWriter(os.fsencode(dest), f"collecting {what}")
            try:
                with transport.tar_stream(guest_dir) as stream:
                    manifest = manifest_from_tar(stream, writer)
                writer.finish()
                return manifest, writer
            except TransportError as exc:
                writer.abort()
                if attempt == attempts:
                    raise StoreError(
                        f"collecting {what}: the connection dropped on each of {attempts} attempts "
                        f"(last: {exc}); nothing was published. Check the network to the guest, or raise "
                        f"store.collect_retries") from exc
                delay = self.collect_backoff_seconds * 2 ** (attempt - 1)
                self.on_retry(
                    f"collecting {what}: the connection dropped ({exc}); discarded the partial copy, "
                    f"restarting the whole stream in {delay:g} s (attempt {attempt + 1} of {attempts})")
                time.sleep(delay)
            except BaseException:
                writer.abort()
                raise
        raise AssertionError("unreachable")

    def carve(self, source_tree: str | os.PathLike, globs: Iterable[str], *, asset: str,
              target: str) -> StoredTree:
        """A slice of a stored tree, as its own entry, without any guest."""
        self._prepare()
        entry = self.entry_of(source_tree)
        selection = select(self.load_manifest(entry), list(globs))
        self._check_space(selection.total_size, f"{asset} for {target}")
        src = entry / "tree"
        tmp = self._tmpdir()
        try:
            dest = tmp / "tree"
            dest.mkdir()
            dirs = []
            chown = os.geteuid() == 0
            for e in selection:
                s, d = os.path.join(os.fsencode(src), e.path), os.path.join(os.fsencode(dest), e.path)
                if e.kind == "dir":
                    os.mkdir(d, 0o700)
                    if chown:
                        os.chown(d, e.uid, e.gid)
                    dirs.append((d, e.mode))
                elif e.kind == "symlink":
                    os.symlink(os.readlink(s), d)
                    if chown:
                        os.lchown(d, e.uid, e.gid)
                else:
                    h = hashlib.sha256()
                    with open(s, "rb") as fin, open(d, "xb") as fout:
                        while chunk := fin.read(1 << 20):
                            h.update(chunk)
                            fout.write(chunk)
                    if h.hexdigest() != e.sha256:
                        raise StoreError(
                            f"carving {asset}: {os.fsdecode(e.path)} in {entry} no longer matches its "
                            f"manifest; the stored world stage is damaged — delete {entry} and "
                            f"re-materialize world_stage")
                    if chown:
                        os.chown(d, e.uid, e.gid)
                    os.chmod(d, e.mode)
            for d, mode in reversed(dirs):
                os.chmod(d, mode)
            root_mode = stat.S_IMODE(os.stat(src).st_mode)
            try:
                root = json.loads((entry / "info.json").read_text()).get("root") or {}
                root = {k: root[k] for k in ("uname", "gname", "uid", "gid") if k in root}
            except (OSError, ValueError, AttributeError):
                root = {}
            if chown and root:
                os.chown(dest, int(root.get("uid", 0)), int(root.get("gid", 0)))
            return self._publish(tmp, selection, asset, target, root_mode, root)
        except BaseException:
            remove_entry(tmp)
            raise

    def _publish(self, tmp: Path, manifest: Manifest, asset: str, target: str,
                 root_mode: int, root: dict | None = None) -> StoredTree:
        digest = manifest.digest()
        os.chmod(tmp / "tree", root_mode)
        root = dict(root or {})
        root_owner = owner_words(Entry(b"root", "dir", 0, 0, None, None, root.get("uname", ""),
                                       root.get("gname", ""), root.get("uid", 0), root.get("gid", 0))) \
            if root else ""
        (tmp / "manifest.jsonl").write_bytes(manifest.to_jsonl())
        (tmp / "manifest.mtree").write_bytes(render_mtree(manifest, root_mode, root_owner))
        info = {"asset": asset, "target": target, "tree_sha256": digest, "published": time.time(),
                "size_bytes": manifest.total_size, "file_count": manifest.file_count,
                "root": {**root, "mode": root_mode}}
        (tmp / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        final = self.root / f"{digest}-{asset}-{target}"
        try:
            publish_rename(tmp, final)
            return StoredTree(final, manifest, digest, reused=False)
        except OSError:
            if not final.is_dir():
                raise
        # identical tree already stored: keep it, mark it as just published
        remove_entry(tmp)
        replace_file(final / "info.json", (json.dumps(info, indent=1) + "\n").encode())
        return StoredTree(final, manifest, digest, reused=True)

    # -- retention -----------------------------------------------------------------
    def gc(self, referenced: Iterable[str | os.PathLike], *, dry_run: bool = False) -> list[Path]:
        """Keep the newest ``keep`` entries per asset and target and every referenced one."""
        keep_paths = set()
        for ref in referenced:
            try:
                keep_paths.add(self.entry_of(ref))
            except FruixError:
                continue
        groups: dict[tuple[str, str], list[dict]] = {}
        for e in self.entries():
            groups.setdefault((e["asset"], e["target"]), []).append(e)
        doomed = []
        for items in groups.values():
            items.sort(key=lambda e: e["published"], reverse=True)
            for e in items[self.keep:]:
                if e["path"] not in keep_paths:
                    doomed.append(e["path"])
        if not dry_run:
            self.clean_leftovers()
            for path in doomed:
                remove_entry(path)
        return doomed
