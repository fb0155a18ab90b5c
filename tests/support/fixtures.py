"""pytest fixtures for :class:`tests.support.sshguest.SshGuest`.

Import them into a conftest (or a test module)::

    from tests.support.fixtures import ssh_guest, ssh_guest_factory, ssh_guest_source_tree  # noqa: F401

``ssh_guest``
    one started guest on ``127.0.0.2`` (state dir ``tmp_path/"guest"``),
    stopped at teardown even when the test fails.
``ssh_guest_factory``
    ``ssh_guest_factory(name=None, address=None, start=True, **kwargs)``
    creates guests at distinct addresses ``127.0.0.3``, ``127.0.0.4``, … (state
    dir ``tmp_path/name``, default ``guest-<n>``); all are stopped at teardown.
``ssh_guest_source_tree``
    the source tree copied into the guests' store (default: the repository's
    ``fruix_dagster/sample_src``); override it in a conftest to use another.

The guests need root (as ``make test`` runs here and in CI); without it the
fixtures fail the test with that reason rather than skip it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from .sshguest import DEFAULT_SOURCE_TREE, SshGuest


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("SshGuest needs root (mount namespaces, bind mounts, overlayfs); run the suite as root")


@pytest.fixture
def ssh_guest_source_tree() -> Path:
    return DEFAULT_SOURCE_TREE


@pytest.fixture
def ssh_guest(tmp_path, ssh_guest_source_tree):
    _require_root()
    guest = SshGuest(tmp_path / "guest", address="127.0.0.2", source_tree=ssh_guest_source_tree)
    try:
        guest.start()
        yield guest
    finally:
        guest.stop()


@pytest.fixture
def ssh_guest_factory(tmp_path, ssh_guest_source_tree):
    _require_root()
    guests: list[SshGuest] = []
    # every guest is stopped at teardown, even if stopping another one raises; errors propagate
    with contextlib.ExitStack() as stack:

        def make(name: str | None = None, address: str | None = None, start: bool = True,
                 **kwargs) -> SshGuest:
            n = len(guests)
            kwargs.setdefault("source_tree", ssh_guest_source_tree)
            guest = SshGuest(tmp_path / (name or f"guest-{n}"), address=address or f"127.0.0.{3 + n}",
                             **kwargs)
            guests.append(guest)
            stack.callback(guest.stop)
            if start:
                guest.start()
            return guest

        yield make
