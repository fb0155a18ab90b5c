"""The whole graph on an xcpng guest: the fake XAPI boots a real SSH guest, the build runs
inside it, and the after-run policy leaves the VM as configured — after a failing build and
after a successful one."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from fruix_dagster.defs.records import latest
from tests.conftest import make_ssh_build
from tests.support.xapi_fake import xapi_server  # noqa: F401
from tests.test_ssh_build import step_runs, wait_for
from tests.test_xcpng_common import (PASSWORD, PASSWORD_ENV, WRONG_PASSWORD, stopped_guest, use_password,
                                     wire_vm, xcpng_guest_table)

BUILD = {"jobs": 2, "min_free_gib": 0.5}
FAILING = {**BUILD, "make_vars": {"SAMPLE_FAIL": "buildkernel"}}


def run_texts(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    """Everything the run recorded: every event of its log, serialized whole."""
    texts = [dg.serialize_value(e) for e in instance.all_logs(result.run_id)]
    texts += [dg.serialize_value(e) for e in result.all_events]
    return texts


def assert_secret_nowhere(secrets: list[str], texts: list[str], root: Path, capfd) -> None:
    out, err = capfd.readouterr()
    for secret in secrets:
        for text in texts + [out, err]:
            assert secret not in text
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                assert secret.encode() not in data, path


def messages(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.user_message or "" for e in instance.all_logs(result.run_id)]


def steps_by_message(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[tuple[str, str | None]]:
    """(message, step key) of every user log message of the run."""
    return [(e.user_message, e.step_key) for e in instance.all_logs(result.run_id)
            if e.dagster_event is None and e.user_message]


def failed_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}


@pytest.mark.parametrize("after", ["keep-running", "shutdown", "revert"])
def test_full_graph_leaves_the_vm_per_policy_after_failure_and_success(
        after, xapi_server, ssh_guest_factory, tmp_path, monkeypatch, capfd):
    use_password(xapi_server, monkeypatch)
    guest = stopped_guest(ssh_guest_factory)
    vm = wire_vm(xapi_server, guest, snapshots=["clean"])
    (clean,) = vm.snapshots
    extra = {"revert_to": "clean"} if after == "revert" else {}
    table = xcpng_guest_table(guest, vm, xapi_server, listener="https" if after == "shutdown" else "http",
                              after=after, **extra)
    sb = make_ssh_build(tmp_path, guest, guests=[table], build=FAILING)

    def expect_policy(run: int) -> None:
        starts = len(xapi_server.calls_to("Async.VM.start"))
        if after == "keep-running":
            assert vm.power_state == "Running" and guest.running
            assert starts == 1  # booted by the first run, reused by the second
            assert not xapi_server.calls_to("Async.VM.clean_shutdown")
        else:
            assert vm.power_state == "Halted" and not guest.running
            assert starts == run  # one boot per run
            assert len(xapi_server.calls_to("Async.VM.clean_shutdown")) == run  # one policy per run
        if after == "revert":
            assert len(xapi_server.calls_to("Async.VM.revert")) == 2 * run  # before and after each run
            assert vm.record["parent"] == clean.ref
        assert xapi_server.sessions == {} and xapi_server.tasks == {}

    # 1. kernel_build fails; with "shutdown" the pool's toolstack also restarts mid-build
    stop = threading.Event()
    restarter = None
    if after == "shutdown":
        def restart_toolstack() -> None:
            try:
                wait_for(lambda: stop.is_set() or step_runs(sb.build_root, "build*") >= 1, 120, "a make step")
            except AssertionError:
                return
            if not stop.is_set():
                xapi_server.invalidate_sessions()

        restarter = threading.Thread(target=restart_toolstack, daemon=True)
        restarter.start()
    try:
        failed = sb.run()
    finally:
        stop.set()
        if restarter is not None:
            restarter.join(10)
    assert not failed.success
    assert failed_steps(failed) == {"kernel_build"}
    expect_policy(1)
    if after == "shutdown":
        assert xapi_server.logins == 2  # the SDK logged in again; the run went on without a second boot
    texts = run_texts(sb.instance, failed)
    msgs = messages(sb.instance, failed)
    assert any(f"after-run policy {after}" in m for m in msgs), msgs
    # each message is filed under the step that caused it: the boot under freebsd_source (the
    # first step), the after-run policy under no step (the run's teardown), not the first step
    steps_of = steps_by_message(sb.instance, failed)
    assert {k for m, k in steps_of if f"after-run policy {after}" in m} == {None}, steps_of
    assert {k for m, k in steps_of if m.startswith("xcpng: logged in to")} == {"freebsd_source"}, steps_of

    # 2. the same guest, a good build
    sb.rewrite(guests=[table], build=BUILD)
    ok = sb.run()
    assert ok.success
    expect_policy(2)
    src = latest(sb.instance, "freebsd_source", "amd64").metadata
    assert src["vm_uuid"] == vm.uuid and src["vm_name_label"] == "fruix-amd64"
    assert src["guest_address"] == f"{guest.address}:{guest.port}"
    assert src["store_hash"] == guest.store_hash
    for asset in ("world_stage", "kernel_stage", "headers_slice", "bootloader_slice"):
        assert latest(sb.instance, asset, "amd64") is not None, asset
    texts += run_texts(sb.instance, ok)
    assert_secret_nowhere([PASSWORD], texts, tmp_path, capfd)


def test_full_graph_with_a_wrong_password_fails_with_one_clear_message(
        xapi_server, ssh_guest_factory, tmp_path, monkeypatch, capfd):
    use_password(xapi_server, monkeypatch, WRONG_PASSWORD)
    guest = stopped_guest(ssh_guest_factory)
    vm = wire_vm(xapi_server, guest)
    table = xcpng_guest_table(guest, vm, xapi_server, after="shutdown")
    sb = make_ssh_build(tmp_path, guest, guests=[table], build=BUILD)
    result = sb.run()
    assert not result.success
    assert failed_steps(result) == {"freebsd_source"}
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = dg.serialize_value(failure)
    assert "SESSION_AUTHENTICATION_FAILED" in text and PASSWORD_ENV in text
    assert vm.power_state == "Halted" and not xapi_server.calls_to("Async.VM.start")
    assert_secret_nowhere([PASSWORD, WRONG_PASSWORD], run_texts(sb.instance, result), tmp_path, capfd)
