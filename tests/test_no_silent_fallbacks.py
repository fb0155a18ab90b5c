"""Failures stay failures: no made-up build-root size, no guest's teardown error hidden by another's."""

from __future__ import annotations

import logging
import os
import shutil

import dagster as dg
import pytest

from fruix_dagster.defs.records import latest
from fruix_dagster.defs.resources import FruixResource
from fruix_dagster.errors import FruixError, GuestError
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.report import build_report
from fruix_dagster.settings import load_settings
from fruix_dagster.store import ArtifactStore
from tests.conftest import make_local_build, write_settings
from tests.support.xapi_fake import xapi_server  # noqa: F401
from tests.test_xcpng_common import stopped_guest, use_password, wire_vm, xcpng_guest_table

# du as it behaves on a tree it cannot fully read: a partial total on stdout, exit status 1
FAILING_DU = """#!/bin/sh
for last; do :; done
if [ "$last" = "{root}" ]; then
    echo "du: $last/obj/private: Permission denied" >&2
    echo "123	$last"
    exit 1
fi
exec {du} "$@"
"""


def test_used_bytes_is_a_number_or_an_error(tmp_path):
    t = LocalTransport()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10000)
    assert t.used_bytes(str(tmp_path / "d")) >= 10000
    with pytest.raises(GuestError, match=r"measuring .*/missing on .*: command `du -sk .*/missing` was "
                                         r"expected to exit 0, it exited 1"):
        t.used_bytes(str(tmp_path / "missing"))


def test_a_failing_du_of_the_build_root_is_recorded_as_unknown_not_zero(tmp_path, monkeypatch):
    lb = make_local_build(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "du").write_text(FAILING_DU.format(root=lb.build_root, du=shutil.which("du")))
    (bin_dir / "du").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = lb.run()
    assert result.success  # the size is information: the stages are built and stored all the same
    metas = {}
    for asset in ("world_stage", "kernel_stage", "headers_slice", "bootloader_slice", "freebsd_source",
                  "world_build"):
        rec = latest(lb.instance, asset, "amd64")
        metas[asset] = {**rec.metadata, "_timestamp": rec.timestamp}
    for asset in ("world_stage", "kernel_stage"):
        assert "build_root_size_bytes" not in metas[asset]
        why = metas[asset]["build_root_size_unknown"]
        assert f"du -sk {lb.build_root}" in why and "exited 1" in why and "Permission denied" in why
    warned = [e.user_message for e in lb.instance.all_logs(result.run_id)
              if e.level == logging.WARNING and e.user_message.startswith("build root size unknown: ")]
    assert len(warned) == 2  # once per stage
    lines, _complete = build_report(metas, {})
    assert dict(lines)["build_root_size"] == ""  # not "0B", not the partial "123K"


def test_every_guest_closes_and_the_gc_runs_when_guests_fail_to_close(xapi_server, ssh_guest_factory,  # noqa: F811
                                                                      tmp_path, monkeypatch):
    use_password(xapi_server, monkeypatch)
    tables, vms = [], []
    for name in ("a", "b"):
        guest = stopped_guest(ssh_guest_factory, name=f"vm-{name}")
        vm = wire_vm(xapi_server, guest, name_label=f"fruix-{name}")
        tables.append(xcpng_guest_table(guest, vm, xapi_server, name=name, after="shutdown"))
        vms.append(vm)
    store_root = tmp_path / "store"
    path = write_settings(tmp_path / "fruix.toml", build={"jobs": 2, "min_free_gib": 0.5},
                          source={"from": "system-metadata"}, store={"root": str(store_root), "keep": 1},
                          guests=tables, targets=[{"name": "t-a", "guest": "a"}, {"name": "t-b", "guest": "b"}])
    # two entries of one asset and target in the store, of which the gc keeps the newer
    store = ArtifactStore(store_root, 1)
    for content in (b"old", b"new"):
        tree = tmp_path / f"tree-{content.decode()}"
        tree.mkdir()
        (tree / "f").write_bytes(content)
        store.collect(LocalTransport(), str(tree), asset="world_stage", target="t-a")
    assert len(store.entries()) == 2

    resource = FruixResource(config_file=str(path))
    assert resource.settings() == load_settings(path)
    for target in ("t-a", "t-b"):
        assert resource.session(target).transport.run(["true"]).ok  # boots the VM
    resource.note_published()
    xapi_server.fail_next("Async.VM.clean_shutdown", ["OPERATION_NOT_ALLOWED", "blocked"], times=2)
    with pytest.raises(FruixError) as ei:
        resource.teardown_after_execution(dg.build_init_resource_context(instance=dg.DagsterInstance.ephemeral()))
    message = str(ei.value)
    assert "2 teardown step(s) failed" in message
    assert "guest 'a': " in message and "guest 'b': " in message and "OPERATION_NOT_ALLOWED" in message
    assert len(xapi_server.calls_to("Async.VM.clean_shutdown")) == 2  # the second guest was not skipped
    assert len(store.entries()) == 1  # and the gc ran
    assert xapi_server.sessions == {}
