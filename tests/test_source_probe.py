"""The cheap source observation on the SSH test guest (dash, POSIX tools): what changes its version.

A path source is looked at with ``ls -lnR | cksum`` and ``find -newer`` against
the read mark a ``freebsd_source`` run leaves; file contents are never read.
"""

from __future__ import annotations

import os

import pytest

from fruix_dagster.errors import SourceError
from fruix_dagster.session import GuestSession
from fruix_dagster.source_probe import mark_read, probe
from tests.conftest import make_ssh_build

SRC = "/var/tmp/probe-src"


@pytest.fixture
def probed(ssh_guest, tmp_path):
    host = ssh_guest.guest_path(SRC)
    (host / "sys").mkdir(parents=True)
    (host / "Makefile").write_text("all:\n")
    (host / "sys" / "param.h").write_text("#define X 1\n")
    sb = make_ssh_build(tmp_path, ssh_guest, source={"from": "path", "path": SRC})
    settings = sb.settings
    session = GuestSession(settings, settings.guest_for("amd64"))
    yield host, settings, session, ssh_guest.guest_path
    session.close()


def test_a_read_leaves_the_version_alone_and_edits_change_it(probed):
    host, settings, session, guest_path = probed
    t = session.transport
    unread = probe(t, settings, "amd64")
    assert unread.data_version.startswith("listing:") and "not read by a run" in unread.detail
    read = mark_read(t, settings, "amd64", "run-1")
    assert read.data_version == unread.data_version          # reading does not make anything stale
    again = probe(t, settings, "amd64")
    assert again.data_version == read.data_version and "unchanged since run run-1" in again.detail

    # an edit keeping the size, in the minute the read saw: the listing is the same (ls -l
    # shows minutes), find -newer sees it.  Times pinned: file at :05, mark at :10, edit at :20.
    param, ref = host / "sys" / "param.h", guest_path(f"{settings.build.build_root}/source-read/amd64.ref")
    minute = 1767261600  # 2026-01-01 10:00:00 UTC
    for path in (host, host / "sys", host / "Makefile", param):
        os.utime(path, (minute + 5, minute + 5))
    read = mark_read(t, settings, "amd64", "run-1")
    os.utime(ref, (minute + 10, minute + 10))
    assert probe(t, settings, "amd64").data_version == read.data_version
    param.write_text("#define Y 1\n")
    os.utime(param, (minute + 20, minute + 20))
    edited = probe(t, settings, "amd64")
    assert edited.data_version == f"{read.data_version}+edited-after:run-1", edited

    # a new file changes the listing
    (host / "sys" / "new.h").write_text("\n")
    added = probe(t, settings, "amd64")
    assert added.data_version.startswith("listing:") and "+" not in added.data_version
    assert added.data_version not in (read.data_version, unread.data_version)
    assert "listing differs" in added.detail

    # the next read marks it: the same version, unchanged since that run
    assert mark_read(t, settings, "amd64", "run-2").data_version == added.data_version
    assert probe(t, settings, "amd64").detail.endswith("unchanged since run run-2 read it")


def test_a_missing_tree_is_one_clear_error(probed):
    host, settings, session, _ = probed
    (host / "Makefile").unlink()
    with pytest.raises(SourceError, match="expected a FreeBSD source tree"):
        probe(session.transport, settings, "amd64")
