"""BuildVM: find / bring up / reach / leave the VM, every XAPI answer of that lifecycle.

Real SDK against the fake XAPI; the "SSH server" is a banner-only listener
(reaching it is all the lifecycle checks — real SSH is in test_xcpng_session).
"""

from __future__ import annotations

import time
import pytest

from fruix_dagster.errors import ConfigError, HypervisorError
from fruix_dagster.hypervisor import BuildVM, XapiClient, pick_address
from fruix_dagster.settings import XcpngSettings
from tests.support.xapi_fake import NULL_REF, xapi_server  # noqa: F401
from tests.test_xcpng_common import PASSWORD, PASSWORD_ENV, banner_server, free_port  # noqa: F401


def settings(server, vm=None, **kw) -> XcpngSettings:
    base = dict(url=server.http_url, password_env=PASSWORD_ENV, username="root",
                vm_uuid=vm.uuid if vm is not None else None, boot_timeout=20, request_timeout=5)
    base.update(kw)
    return XcpngSettings(**base)


def build_vm(server, xs, logs=None, **kw) -> BuildVM:
    server.password = PASSWORD
    client = XapiClient.from_settings(xs, environ={PASSWORD_ENV: PASSWORD},
                                      log=(logs.append if logs is not None else None), where="t.toml: guest 'g'")
    kw.setdefault("retry_first", 0.2)
    kw.setdefault("poll", 0.2)
    return BuildVM(client, xs, guest_name="g", source_file="t.toml",
                   log=(logs.append if logs is not None else None), **kw)


def run_like_a_session(bvm: BuildVM, host: str | None, port: int, poweroff=None):
    """prepare, then the after-run policy whatever happened (as GuestSession does)."""
    try:
        return bvm.prepare(host, port)
    finally:
        if bvm.ref is not None:
            bvm.apply_after(poweroff)
        bvm.client.close()


def starts(server) -> int:
    return len(server.calls_to("Async.VM.start"))


# ------------------------------------------------------------------ find


def test_find_by_uuid_and_by_name(xapi_server):
    vm = xapi_server.make_vm(name_label="fruix-amd64")
    xapi_server.make_vm(name_label="fruix-amd64", is_a_template=True)  # not a VM
    vm.snapshot("fruix-amd64")  # nor is a snapshot of the same name
    for xs in (settings(xapi_server, vm), settings(xapi_server, vm_name="fruix-amd64")):
        b = build_vm(xapi_server, xs)
        assert b.find() == vm.ref
        assert (b.uuid, b.name_label) == (vm.uuid, "fruix-amd64")
        b.client.close()
    assert xapi_server.sessions == {}


def test_unknown_uuid_is_a_config_error(xapi_server):
    xs = settings(xapi_server, vm_uuid="00000000-0000-4000-8000-000000000000")
    with pytest.raises(ConfigError) as ei:
        build_vm(xapi_server, xs).find()
    msg = str(ei.value)
    assert msg.startswith("t.toml: guest 'g': xcpng.vm_uuid:") and "UUID_INVALID" in msg
    assert "00000000-0000-4000-8000-000000000000" in msg and "xe vm-list" in msg


def test_name_must_match_exactly_one_vm(xapi_server):
    a = xapi_server.make_vm(name_label="twin")
    b = xapi_server.make_vm(name_label="twin")
    xapi_server.make_vm(name_label="tpl", is_a_template=True)
    with pytest.raises(ConfigError) as ei:
        build_vm(xapi_server, settings(xapi_server, vm_name="twin")).find()
    assert "found 2 VMs" in str(ei.value) and a.uuid in str(ei.value) and b.uuid in str(ei.value)
    assert "vm_uuid" in str(ei.value)
    with pytest.raises(ConfigError, match=r"xcpng\.vm_name: expected exactly one VM named 'nope'.*found none"):
        build_vm(xapi_server, settings(xapi_server, vm_name="nope")).find()
    with pytest.raises(ConfigError, match=r"found none \(only 1 template"):
        build_vm(xapi_server, settings(xapi_server, vm_name="tpl")).find()


def test_missing_revert_snapshot_is_a_config_error_before_anything_changes(xapi_server, banner_server):
    vm = xapi_server.make_vm(power_state="Running", snapshots=["other"])
    b = build_vm(xapi_server, settings(xapi_server, vm, revert_to="clean"))
    with pytest.raises(ConfigError) as ei:
        b.prepare("127.0.0.1", banner_server.port)
    msg = str(ei.value)
    assert "xcpng.revert_to: expected exactly one snapshot named 'clean'" in msg and "'other'" in msg
    assert "xe vm-snapshot" in msg
    assert vm.power_state == "Running" and not xapi_server.calls_to("Async.VM.revert")


# ------------------------------------------------------------------ bring up


@pytest.mark.parametrize("state, op, action", [
    ("Halted", "Async.VM.start", "started"),
    ("Paused", "Async.VM.unpause", "unpaused"),
    ("Suspended", "Async.VM.resume", "resumed"),
    ("Running", None, "reused"),
])
def test_bring_up_from_every_power_state(xapi_server, banner_server, state, op, action):
    vm = xapi_server.make_vm(power_state=state)
    logs: list[str] = []
    b = build_vm(xapi_server, settings(xapi_server, vm), logs)
    assert b.prepare("127.0.0.1", banner_server.port) == "127.0.0.1"
    assert b.action == action and vm.power_state == "Running"
    lifecycle = [c.method for c in xapi_server.calls if c.method.startswith("Async.")]
    assert lifecycle == ([op] if op else [])
    assert xapi_server.tasks == {} and xapi_server.task_destroys == len(lifecycle)
    assert not xapi_server.calls_to("VM.get_guest_metrics")  # static host: metrics not needed
    assert banner_server.accepted >= 1
    assert any(action in m or "reusing" in m for m in logs)


def test_revert_before_the_build_then_start(xapi_server, banner_server):
    vm = xapi_server.make_vm(power_state="Running", snapshots=["clean"])
    (clean,) = vm.snapshots
    b = build_vm(xapi_server, settings(xapi_server, vm, revert_to="clean"))
    b.prepare("127.0.0.1", banner_server.port)
    assert [c.method for c in xapi_server.calls if c.method.startswith("Async.")] == \
        ["Async.VM.revert", "Async.VM.start"]
    assert xapi_server.calls_to("Async.VM.revert")[0].args == (clean.ref,)
    assert vm.record["parent"] == clean.ref and vm.power_state == "Running"
    assert b.operations == ["revert", "start"] and xapi_server.task_destroys == 2


@pytest.mark.parametrize("code", [
    ["HOST_NOT_ENOUGH_FREE_MEMORY", "1073741824", "524288000"],
    ["NO_HOSTS_AVAILABLE"],
    ["OTHER_OPERATION_IN_PROGRESS", "VM.clean_reboot", "{vm}"],
])
def test_transient_codes_are_retried_then_succeed(xapi_server, banner_server, code):
    vm = xapi_server.make_vm()
    xapi_server.fail_next("Async.VM.start", code, times=2)
    logs: list[str] = []
    b = build_vm(xapi_server, settings(xapi_server, vm, after="shutdown"), logs)
    t0 = time.monotonic()
    run_like_a_session(b, "127.0.0.1", banner_server.port)
    assert time.monotonic() - t0 < 5
    assert starts(xapi_server) == 3 and b.action == "started"
    assert sum(code[0] in m and "retrying" in m for m in logs) == 2
    assert vm.power_state == "Halted"  # after = shutdown
    assert xapi_server.tasks == {} and xapi_server.sessions == {}


@pytest.mark.parametrize("code", ["HOST_NOT_ENOUGH_FREE_MEMORY", "NO_HOSTS_AVAILABLE",
                                  "OTHER_OPERATION_IN_PROGRESS"])
def test_transient_codes_give_up_at_boot_timeout(xapi_server, banner_server, code):
    vm = xapi_server.make_vm(snapshots=["clean"])
    xapi_server.fail_next("Async.VM.start", [code], times=1000)
    b = build_vm(xapi_server, settings(xapi_server, vm, boot_timeout=3, after="revert", revert_to="clean"))
    t0 = time.monotonic()
    with pytest.raises(HypervisorError) as ei:
        run_like_a_session(b, "127.0.0.1", banner_server.port)
    took = time.monotonic() - t0
    assert 2.5 < took < 3 + 10, took
    msg = str(ei.value)
    assert vm.uuid in msg and "'fruix-amd64'" in msg and code in msg and "boot_timeout = 3 s" in msg
    assert starts(xapi_server) >= 3
    # the after-run policy still ran: reverted (again) to "clean"
    assert len(xapi_server.calls_to("Async.VM.revert")) == 2 and vm.power_state == "Halted"


@pytest.mark.parametrize("code, advice, after, end_state", [
    (["OPERATION_NOT_ALLOWED", "Operations on this VM are blocked"], "blocked-operations", "keep-running", "Halted"),
    (["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"], "password_env", "shutdown", "Halted"),
    (["VM_IS_TEMPLATE", "{vm}", "start"], "not a template", "keep-running", "Halted"),
])
def test_fatal_codes_fail_fast_with_what_to_check(xapi_server, banner_server, code, advice, after, end_state):
    vm = xapi_server.make_vm()
    xapi_server.fail_next("Async.VM.start", code)
    b = build_vm(xapi_server, settings(xapi_server, vm, after=after))
    t0 = time.monotonic()
    with pytest.raises(HypervisorError) as ei:
        run_like_a_session(b, "127.0.0.1", banner_server.port)
    assert time.monotonic() - t0 < 2
    msg = str(ei.value)
    assert code[0] in msg and advice in msg and vm.uuid in msg
    assert starts(xapi_server) == 1 and vm.power_state == end_state
    assert xapi_server.sessions == {}


def test_a_real_template_is_refused(xapi_server, banner_server):
    tpl = xapi_server.make_vm(name_label="Debian Template", is_a_template=True)
    b = build_vm(xapi_server, settings(xapi_server, tpl))
    with pytest.raises(HypervisorError, match=r"VM_IS_TEMPLATE.*not a template"):
        run_like_a_session(b, "127.0.0.1", banner_server.port)
    assert starts(xapi_server) == 1


def test_session_authentication_failed_on_relogin_is_fatal(xapi_server, banner_server):
    """The pool restarted (sessions gone) and the password changed meanwhile."""
    vm = xapi_server.make_vm()
    b = build_vm(xapi_server, settings(xapi_server, vm))
    b.find()
    xapi_server.invalidate_sessions()
    xapi_server.password = "changed"
    with pytest.raises(HypervisorError, match="SESSION_AUTHENTICATION_FAILED") as ei:
        b.prepare("127.0.0.1", banner_server.port)
    assert PASSWORD_ENV in str(ei.value) and "changed" not in str(ei.value)
    assert starts(xapi_server) == 0


def test_bad_power_state_reads_the_state_again(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    # someone else started the VM between our read and our start
    xapi_server.fail_next("Async.VM.start", ["VM_BAD_POWER_STATE", "{vm}", "halted", "running"])
    xapi_server.on_power_state(vm.uuid, lambda old, new: None)
    b = build_vm(xapi_server, settings(xapi_server, vm))
    orig = b.power_state
    calls = {"n": 0}

    def power_state():
        calls["n"] += 1
        if calls["n"] == 2:  # after the refused start: the other party's start has landed
            vm.set_power_state("Running")
        return orig()

    b.power_state = power_state  # type: ignore[method-assign]
    b.prepare("127.0.0.1", banner_server.port)
    assert starts(xapi_server) == 1 and b.action == "reused" and vm.power_state == "Running"


# ------------------------------------------------------------------ the address


def test_address_from_guest_metrics(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    xapi_server.set_guest_address(vm.uuid, "127.0.0.1", after_seconds=1.0)
    b = build_vm(xapi_server, settings(xapi_server, vm))
    assert b.prepare(None, banner_server.port) == "127.0.0.1"
    gm_calls = xapi_server.calls_to("VM.get_guest_metrics")
    assert len(gm_calls) >= 2 and gm_calls[0].result == NULL_REF and gm_calls[-1].result != NULL_REF


def test_address_cidr_picks_the_build_network(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    xapi_server.set_guest_networks(vm.uuid, {"0/ip": "192.0.2.7", "0/ipv4/0": "192.0.2.7",
                                             "1/ipv4/0": "127.0.0.1", "1/ipv6/0": "fe80::2"}, after_seconds=0.2)
    b = build_vm(xapi_server, settings(xapi_server, vm, address_cidr="127.0.0.0/8"))
    assert b.prepare(None, banner_server.port) == "127.0.0.1"


def test_pick_address():
    nets = {"1/ip": "10.1.0.5", "0/ipv6/0": "fe80::1", "0/ipv4/1": "10.0.0.6", "0/ipv4/0": "169.254.3.3",
            "0/ip": "10.0.0.5", "2/ipv4/0": "not-an-ip"}
    assert pick_address(nets) == "10.0.0.5"
    assert pick_address({"0/ipv4/1": "10.0.0.6", "0/ipv4/0": "10.0.0.4"}) == "10.0.0.4"
    assert pick_address(nets, "10.1.0.0/16") == "10.1.0.5"
    assert pick_address(nets, "192.0.2.0/24") is None
    assert pick_address({"0/ipv6/0": "2001:db8::1"}) is None
    assert pick_address({}) is None


def test_no_address_ever_times_out_naming_the_vm(xapi_server, banner_server):
    vm = xapi_server.make_vm(name_label="fruix-freebsd")  # no guest agent: metrics stay NULL
    b = build_vm(xapi_server, settings(xapi_server, vm, boot_timeout=4, after="shutdown"))
    t0 = time.monotonic()
    with pytest.raises(HypervisorError) as ei:
        run_like_a_session(b, None, banner_server.port)
    took = time.monotonic() - t0
    assert 3.5 < took < 4 + 10, took
    msg = str(ei.value)
    assert "'fruix-freebsd'" in msg and vm.uuid in msg
    assert "boot_timeout = 4 s" in msg and ("waited 4 s" in msg or "waited 3 s" in msg)
    assert "OpaqueRef:NULL" in msg and "xe-guest-utilities" in msg and 'host = "<address>"' in msg
    assert vm.power_state == "Halted"  # after = shutdown


def test_address_outside_the_cidr_is_named_in_the_timeout(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    xapi_server.set_guest_address(vm.uuid, "192.0.2.9", after_seconds=0.1)
    b = build_vm(xapi_server, settings(xapi_server, vm, boot_timeout=2, address_cidr="10.0.0.0/8"))
    with pytest.raises(HypervisorError) as ei:
        b.prepare(None, banner_server.port)
    assert "0/ip=192.0.2.9" in str(ei.value) and "none inside address_cidr 10.0.0.0/8" in str(ei.value)


def test_ssh_port_that_never_opens_times_out(xapi_server):
    vm = xapi_server.make_vm()
    port = free_port()
    b = build_vm(xapi_server, settings(xapi_server, vm, boot_timeout=2))
    t0 = time.monotonic()
    with pytest.raises(HypervisorError) as ei:
        b.prepare("127.0.0.1", port)
    assert time.monotonic() - t0 < 2 + 10
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg and "ConnectionRefusedError" in msg and "sshd" in msg


def test_vm_powering_off_while_waiting_is_reported(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    vm.on_start(lambda: vm.server.set_power_state(vm.uuid, "Halted", hooks=False))
    b = build_vm(xapi_server, settings(xapi_server, vm, boot_timeout=10))
    with pytest.raises(HypervisorError, match="expected it Running|stay Running"):
        b.prepare(None, banner_server.port)


# ------------------------------------------------------------------ after the run


def booted(server, banner_server, vm, **kw) -> BuildVM:
    timeout = kw.pop("shutdown_timeout", 3)
    b = build_vm(server, settings(server, vm, **kw), shutdown_timeout=timeout)
    b.prepare("127.0.0.1", banner_server.port)
    return b


def test_keep_running(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm)
    assert b.apply_after() == "Running" and vm.power_state == "Running"
    assert not [c for c in xapi_server.calls if "shutdown" in c.method]


def test_shutdown_is_clean_and_applied_once(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown")
    assert b.apply_after() == "Halted"
    assert b.apply_after() == "shutdown"  # once: the second call does nothing
    assert [c.method for c in xapi_server.calls if "shutdown" in c.method] == ["Async.VM.clean_shutdown"]


def test_revert_shuts_down_then_reverts(xapi_server, banner_server):
    vm = xapi_server.make_vm(snapshots=["clean"])
    (clean,) = vm.snapshots
    b = booted(xapi_server, banner_server, vm, after="revert", revert_to="clean")
    xapi_server.clear_calls()
    assert b.apply_after() == "Halted"
    assert [c.method for c in xapi_server.calls if c.method.startswith("Async.")] == \
        ["Async.VM.clean_shutdown", "Async.VM.revert"]
    assert vm.record["parent"] == clean.ref


@pytest.mark.parametrize("code", ["VM_MISSING_PV_DRIVERS", "VM_LACKS_FEATURE_SHUTDOWN", "VM_LACKS_FEATURE"])
def test_no_pv_drivers_the_guest_powers_itself_off(xapi_server, banner_server, code):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown")
    vm.clean_shutdown_error = [code, "{vm}"]
    asked = []
    b.apply_after(lambda: (asked.append(1), vm.set_power_state("Halted")))
    assert asked == [1] and vm.power_state == "Halted"
    assert b.operations[-1] == "ssh-poweroff" and not xapi_server.calls_to("Async.VM.hard_shutdown")


def test_power_off_that_does_nothing_ends_in_hard_shutdown(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown", shutdown_timeout=1)
    vm.clean_shutdown_error = ["VM_MISSING_PV_DRIVERS", "{vm}"]
    asked = []
    t0 = time.monotonic()
    assert b.apply_after(lambda: asked.append(1)) == "Halted"
    assert asked == [1] and 1 <= time.monotonic() - t0 < 4
    assert b.operations[-2:] == ["ssh-poweroff", "hard_shutdown"]


def test_power_off_that_raises_ends_in_hard_shutdown(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown", shutdown_timeout=1)
    vm.clean_shutdown_error = ["VM_MISSING_PV_DRIVERS", "{vm}"]

    def broken():
        raise OSError("connection refused")

    assert b.apply_after(broken) == "Halted" and b.operations[-1] == "hard_shutdown"


def test_power_off_failures_are_logged_and_a_bug_in_it_is_raised(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    logs: list[str] = []
    b = build_vm(xapi_server, settings(xapi_server, vm, after="shutdown"), logs=logs, shutdown_timeout=1)
    b.prepare("127.0.0.1", banner_server.port)
    vm.clean_shutdown_error = ["VM_MISSING_PV_DRIVERS", "{vm}"]

    def dropped():
        raise EOFError("the guest went away")

    assert b.apply_after(dropped) == "Halted" and b.operations[-1] == "hard_shutdown"
    assert "xcpng: power-off over SSH failed: EOFError: the guest went away" in logs

    vm2 = xapi_server.make_vm()
    b2 = booted(xapi_server, banner_server, vm2, after="shutdown", shutdown_timeout=1)
    vm2.clean_shutdown_error = ["VM_MISSING_PV_DRIVERS", "{vm}"]

    def bug():
        raise KeyError("not a guest failure")

    with pytest.raises(KeyError, match="not a guest failure"):
        b2.apply_after(bug)
    assert "hard_shutdown" not in b2.operations


def test_clean_shutdown_that_hangs_ends_in_hard_shutdown(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown", shutdown_timeout=1)
    xapi_server.delay("Async.VM.clean_shutdown", 30)
    t0 = time.monotonic()
    assert b.apply_after(None) == "Halted"
    assert time.monotonic() - t0 < 5
    assert xapi_server.calls_to("task.cancel") and b.operations[-1] == "hard_shutdown"
    assert xapi_server.tasks == {} or all(t["status"] != "pending" for t in xapi_server.tasks.values())


def test_paused_vm_is_hard_shut_down(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown")
    vm.set_power_state("Paused")
    assert b.apply_after(None) == "Halted" and b.operations[-1] == "hard_shutdown"
    assert not xapi_server.calls_to("Async.VM.clean_shutdown")


def test_shutdown_waits_out_another_operation(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown")
    xapi_server.fail_next("Async.VM.clean_shutdown", ["OTHER_OPERATION_IN_PROGRESS", "VM.snapshot", "{vm}"])
    assert b.apply_after(None) == "Halted"
    assert len(xapi_server.calls_to("Async.VM.clean_shutdown")) == 2 and "hard_shutdown" not in b.operations


def test_refused_shutdown_is_one_clear_error(xapi_server, banner_server):
    vm = xapi_server.make_vm()
    b = booted(xapi_server, banner_server, vm, after="shutdown")
    xapi_server.fail_next("Async.VM.clean_shutdown", ["OPERATION_NOT_ALLOWED", "blocked"])
    with pytest.raises(HypervisorError, match=r"refused to shut down.*OPERATION_NOT_ALLOWED.*blocked-operations"):
        b.apply_after(None)
    assert vm.power_state == "Running"

