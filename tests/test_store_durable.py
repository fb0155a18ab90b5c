"""Durable publication: everything flushed before the rename, the store root after it."""

from __future__ import annotations

import os
from pathlib import Path

from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.store import ArtifactStore
from fruix_dagster.store import durable
from tests.test_store import odd_tree


def record(monkeypatch) -> list[tuple]:
    events: list[tuple] = []
    real_fsync, real_rename, real_open = os.fsync, os.rename, os.open
    names: dict[int, str] = {}

    def opened(path, flags, *a, **k):
        fd = real_open(path, flags, *a, **k)
        names[fd] = os.fsdecode(path)
        return fd

    def fsync(fd):
        events.append(("fsync", names.get(fd, fd)))
        return real_fsync(fd)

    def rename(a, b):
        events.append(("rename", os.fsdecode(a), os.fsdecode(b)))
        return real_rename(a, b)

    monkeypatch.setattr(durable.os, "open", opened)
    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "rename", rename)
    return events


def test_publish_flushes_every_file_and_directory_before_the_rename(tmp_path, monkeypatch):
    src = odd_tree(tmp_path / "src")
    monkeypatch.setattr(durable, "_SYNCFS", None)  # the per-file path FreeBSD hosts take
    events = record(monkeypatch)
    stored = ArtifactStore(tmp_path / "store").collect(LocalTransport(), str(src), asset="world_stage",
                                                       target="amd64")
    rename = next(i for i, e in enumerate(events) if e[0] == "rename")
    tmp = Path(events[rename][1])
    flushed = {Path(e[1]) for e in events[:rename] if e[0] == "fsync"}
    expected = {tmp}
    for dirpath, dirnames, filenames in os.walk(stored.path):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if not full.is_symlink():
                expected.add(tmp / full.relative_to(stored.path))
    assert expected - flushed == set()
    # the new name itself is made durable by flushing the store root after the rename
    assert ("fsync", str(stored.path.parent)) in events[rename + 1:]


def test_publish_uses_one_syncfs_where_the_c_library_has_it(tmp_path, monkeypatch):
    assert durable._SYNCFS is not None, "glibc has syncfs(2); the fast path must be found on Linux"
    calls = []
    real = durable._SYNCFS
    monkeypatch.setattr(durable, "_SYNCFS", lambda fd: calls.append(fd) or real(fd))
    events = record(monkeypatch)
    src = odd_tree(tmp_path / "src")
    stored = ArtifactStore(tmp_path / "store").collect(LocalTransport(), str(src), asset="world_stage",
                                                       target="amd64")
    rename = next(i for i, e in enumerate(events) if e[0] == "rename")
    assert len(calls) == 1
    assert ("fsync", str(stored.path.parent)) in events[rename + 1:]
