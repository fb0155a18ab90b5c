"""GuestSession with kind = "xcpng": the fake XAPI boots a real SSH guest; no Dagster here."""

from __future__ import annotations

import threading
import time

import pytest

from fruix_dagster.errors import ConfigError, HypervisorError
from fruix_dagster.session import GuestSession
from fruix_dagster.settings import load_settings
from tests.conftest import write_settings
from tests.support.xapi_fake import xapi_server  # noqa: F401
from tests.test_xcpng_common import (PASSWORD, PASSWORD_ENV, WRONG_PASSWORD, halt_when, install_fake_shutdown,
                                     stopped_guest, use_password, wire_vm, xcpng_guest_table)


def open_session(tmp_path, guest, vm, server, logs, **kw) -> GuestSession:
    table = xcpng_guest_table(guest, vm, server, **kw)
    path = write_settings(tmp_path / "fruix.toml", build={"jobs": 2, "min_free_gib": 0.5},
                          source={"from": "system-metadata"}, store={"root": str(tmp_path / "store")},
                          guests=[table], targets=[{"name": "amd64", "guest": table["name"]}])
    settings = load_settings(path)
    return GuestSession(settings, settings.guest(table["name"]), logs.append)


def test_boot_build_and_shutdown_survives_a_toolstack_restart(xapi_server, ssh_guest_factory, tmp_path,
                                                               monkeypatch):
    use_password(xapi_server, monkeypatch)
    guest = stopped_guest(ssh_guest_factory)
    vm = wire_vm(xapi_server, guest)
    logs: list[str] = []
    s = open_session(tmp_path, guest, vm, xapi_server, logs, listener="https", after="shutdown")

    layout = s.transport.run(["cat", "/run/current-system/metadata/store-layout.scm"])
    assert layout.ok and guest.source_store.encode() in layout.stdout
    assert guest.running and vm.power_state == "Running"
    assert s.facts == {"vm_uuid": vm.uuid, "vm_name_label": "fruix-amd64",
                       "guest_address": f"{guest.address}:{guest.port}"}
    s.require_devenv()

    xapi_server.invalidate_sessions()  # the pool's toolstack restarts in the middle of the run
    assert s.transport.run(["true"]).ok and s.steps is not None  # the build goes on over SSH
    s.close()
    assert vm.power_state == "Halted" and not guest.running
    assert len(xapi_server.calls_to("Async.VM.start")) == 1  # one boot
    assert len(xapi_server.calls_to("Async.VM.clean_shutdown")) == 1
    assert xapi_server.logins == 2  # re-login by the SDK after SESSION_INVALID
    assert xapi_server.sessions == {} and xapi_server.tasks == {}
    assert {c.originator for c in xapi_server.calls if c.session and c.ok} == {"fruix-dagster"}
    assert {c.scheme for c in xapi_server.calls} == {"https"}
    s.close()  # the policy is applied once
    assert len(xapi_server.calls_to("Async.VM.clean_shutdown")) == 1
    assert not any(PASSWORD in m for m in logs)
    assert any("after-run policy shutdown applied" in m for m in logs)


def test_pv_less_guest_is_powered_off_over_ssh(xapi_server, ssh_guest_factory, tmp_path, monkeypatch):
    use_password(xapi_server, monkeypatch)
    guest = stopped_guest(ssh_guest_factory)
    marker = install_fake_shutdown(guest)
    vm = wire_vm(xapi_server, guest, clean_shutdown_error=["VM_MISSING_PV_DRIVERS", "{vm}"])
    logs: list[str] = []
    s = open_session(tmp_path, guest, vm, xapi_server, logs, after="shutdown")
    # never let the product run the host's shutdown(8): the guest's PATH must find the stand-in
    which = s.transport.run(["sh", "-c", "command -v shutdown"])
    assert which.stdout.decode().strip() == "/usr/local/sbin/shutdown", which
    stop = threading.Event()
    watcher = halt_when(marker, vm, stop)
    try:
        s.close()
    finally:
        stop.set()
        watcher.join(5)
    assert marker.read_text().strip() == "-p now"
    assert vm.power_state == "Halted" and not guest.running
    assert s.vm is not None and "ssh-poweroff" in s.vm.operations
    assert not xapi_server.calls_to("Async.VM.hard_shutdown")
    assert xapi_server.sessions == {}


def test_failed_boot_is_not_retried_and_the_policy_still_applies(xapi_server, ssh_guest_factory, tmp_path,
                                                                 monkeypatch):
    use_password(xapi_server, monkeypatch)
    guest = stopped_guest(ssh_guest_factory)
    vm = wire_vm(xapi_server, guest, snapshots=["clean"])
    xapi_server.fail_next("Async.VM.start", ["OPERATION_NOT_ALLOWED", "blocked by the administrator"])
    logs: list[str] = []
    s = open_session(tmp_path, guest, vm, xapi_server, logs, after="revert", revert_to="clean")
    with pytest.raises(HypervisorError) as first:
        s.transport
    assert "OPERATION_NOT_ALLOWED" in str(first.value) and "blocked-operations" in str(first.value)
    with pytest.raises(HypervisorError) as second:
        s.transport  # the next asset step: the same error, no second boot
    assert second.value is first.value
    assert len(xapi_server.calls_to("Async.VM.start")) == 1
    assert s.facts["vm_uuid"] == vm.uuid and "guest_address" not in s.facts
    s.close(failed=True)
    assert len(xapi_server.calls_to("Async.VM.revert")) == 2  # before the boot, and the policy
    assert vm.power_state == "Halted" and xapi_server.sessions == {}
    assert any("after a failed run" in m for m in logs)


def test_running_vm_with_static_host_is_reused_and_kept(xapi_server, ssh_guest_factory, tmp_path,
                                                        monkeypatch):
    use_password(xapi_server, monkeypatch)
    guest = stopped_guest(ssh_guest_factory)
    vm = wire_vm(xapi_server, guest, power_state="Running")
    vm.set_guest_address(None)  # no guest agent at all
    logs: list[str] = []
    s = open_session(tmp_path, guest, vm, xapi_server, logs, static=True, vm_uuid=None, vm_name="fruix-amd64")
    assert s.transport.run(["true"]).ok
    assert s.facts["guest_address"] == f"{guest.address}:{guest.port}"
    s.close()
    assert vm.power_state == "Running" and guest.running
    assert not [c for c in xapi_server.calls if c.method.startswith("Async.")]
    assert not xapi_server.calls_to("VM.get_guest_metrics")
    assert xapi_server.sessions == {}


@pytest.mark.parametrize("problem", ["wrong-password", "untrusted", "never-answers", "no-password"])
def test_pool_problems_are_one_clear_error_in_time(xapi_server, ssh_guest_factory, tmp_path, monkeypatch,
                                                   problem):
    use_password(xapi_server, monkeypatch, WRONG_PASSWORD if problem == "wrong-password" else PASSWORD)
    guest = stopped_guest(ssh_guest_factory)
    vm = wire_vm(xapi_server, guest)
    kw: dict = {"request_timeout": 2}
    if problem == "untrusted":
        kw.update(listener="https")
        kw["url"] = xapi_server.url("untrusted")
    if problem == "never-answers":
        xapi_server.hang_connections()
    if problem == "no-password":
        monkeypatch.delenv(PASSWORD_ENV)
    logs: list[str] = []
    s = open_session(tmp_path, guest, vm, xapi_server, logs, **kw)
    expected = {"wrong-password": (HypervisorError, "SESSION_AUTHENTICATION_FAILED"),
                "untrusted": (HypervisorError, "certificate is not trusted"),
                "never-answers": (HypervisorError, "request_timeout = 2 s"),
                "no-password": (ConfigError, f"{PASSWORD_ENV} to hold the XAPI password")}[problem]
    t0 = time.monotonic()
    with pytest.raises(expected[0]) as ei:
        s.transport
    assert time.monotonic() - t0 < 2 + 2
    assert expected[1] in str(ei.value)
    s.close()  # nothing to apply: the VM was never found
    assert vm.power_state == "Halted" and not guest.running
    for text in [str(ei.value), *logs]:
        assert PASSWORD not in text and WRONG_PASSWORD not in text
    xapi_server.hang_connections(False)
