"""The fake XAPI server, driven through the real XenAPI SDK (and raw XML-RPC for the wire format)."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
import xmlrpc.client

import pytest
import XenAPI

from tests.support.xapi_fake import (NULL_REF, REDACTED, FakeXapiServer, TimeoutSafeTransport,
                                     TimeoutTransport, xapi_server)  # noqa: F401

PASSWORD = "s3cr3t:pässwörd with spaces"


def login(server, kind="http", originator="fruix-dagster-tests", **kw) -> XenAPI.Session:
    s = server.sdk_session(kind, **kw)
    assert s.xenapi.login_with_password(server.username, server.password, "1.0", originator) is None
    return s


def failure_of(fn, *args) -> list[str]:
    with pytest.raises(XenAPI.Failure) as ei:
        fn(*args)
    return ei.value.details


def wait_task(s, task, timeout=10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = s.xenapi.task.get_status(task)
        if status not in ("pending", "cancelling"):
            return status
        assert time.monotonic() < deadline, f"task {task} still {status}"
        time.sleep(0.02)


def raw_post(url: str, body: bytes) -> bytes:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/", body, {"Content-Type": "text/xml"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/xml"
        return resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ sessions


def test_login_logout_and_call_record(xapi_server):
    xapi_server.password = PASSWORD
    s = login(xapi_server, originator="fruix-dagster/1.0")
    ref = s.handle
    assert ref.startswith("OpaqueRef:") and ref != NULL_REF
    assert xapi_server.logins == 1
    assert xapi_server.sessions == {ref: {"user": "root", "originator": "fruix-dagster/1.0", "version": "1.0"}}
    assert s.xenapi.VM.get_all() == []
    s.xenapi.session.logout()
    assert xapi_server.logouts == 1 and xapi_server.sessions == {}

    login_call, get_all, logout = xapi_server.calls
    assert login_call.method == "session.login_with_password" and login_call.session is None
    assert login_call.args == ("root", REDACTED, "1.0", "fruix-dagster/1.0")
    assert login_call.originator == "fruix-dagster/1.0" and login_call.result == ref
    assert (get_all.method, get_all.session, get_all.args, get_all.ok) == ("VM.get_all", ref, (), True)
    assert get_all.originator == "fruix-dagster/1.0" and get_all.user == "root"
    assert logout.method == "session.logout" and logout.session == ref
    assert {c.scheme for c in xapi_server.calls} == {"http"}
    assert len({c.connection for c in xapi_server.calls}) == 1  # the SDK keeps its connection alive
    assert PASSWORD not in repr(xapi_server.calls)


def test_wrong_password(xapi_server):
    s = xapi_server.sdk_session()
    details = failure_of(s.xenapi.login_with_password, "root", "wrong", "1.0", "t")
    assert details == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]
    assert failure_of(s.xenapi.login_with_password, "admin", xapi_server.password)[0] == \
        "SESSION_AUTHENTICATION_FAILED"
    assert (xapi_server.logins, xapi_server.login_failures) == (0, 2)
    assert xapi_server.calls[0].error == details and xapi_server.calls[0].args[1] == REDACTED


def test_session_invalid_raw_and_sdk_relogin(xapi_server):
    vm = xapi_server.make_vm()
    proxy = xmlrpc.client.ServerProxy(xapi_server.http_url)
    assert proxy.VM.get_all("OpaqueRef:bogus") == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:bogus"]}

    s = login(xapi_server)
    old = s.handle
    assert xapi_server.invalidate_sessions() == 1
    # the SDK sees SESSION_INVALID, logs in again by itself and retries the call
    assert s.xenapi.VM.get_by_uuid(vm.uuid) == vm.ref
    assert s.handle != old and xapi_server.logins == 2
    failed, relogin, retried = xapi_server.calls[-3:]
    assert (failed.method, failed.session, failed.error) == ("VM.get_by_uuid", old, ["SESSION_INVALID", old])
    assert relogin.method == "session.login_with_password" and relogin.ok
    assert retried.ok and retried.session == s.handle

    # a raw client gets the failure; logout of a dead session is SESSION_INVALID too
    raw = proxy.session.login_with_password("root", xapi_server.password, "1.0", "raw")
    xapi_server.invalidate_session(raw["Value"])
    assert proxy.session.logout(raw["Value"])["ErrorDescription"] == ["SESSION_INVALID", raw["Value"]]


def test_api_version_and_host_pool(xapi_server):
    s = login(xapi_server)
    assert s.API_version == "2.21"  # pool.get_all, pool.get_master, host.get_API_version_*
    host = s.xenapi.host.get_all()[0]
    assert s.xenapi.session.get_this_host(s.handle) == host
    assert s.xenapi.host.get_record(host)["address"] == "127.0.0.1"
    assert s.xenapi.pool.get_master(s.xenapi.pool.get_all()[0]) == host


# ------------------------------------------------------------------ wire format


def test_wire_format_is_xapis(xapi_server):
    vm = xapi_server.make_vm(memory_static_max=2147483648)
    session = xmlrpc.client.ServerProxy(xapi_server.http_url).session.login_with_password(
        "root", xapi_server.password)["Value"]
    body = raw_post(xapi_server.http_url, xmlrpc.client.dumps((session, vm.ref), "VM.get_memory_static_max"))
    text = body.decode()
    assert "<name>Status</name><value>Success</value>" in text
    assert "<name>Value</name><value>2147483648</value>" in text  # int64 as an untyped string
    assert "<string>" not in text and "<i4>" not in text and "<int>" not in text
    params, _ = xmlrpc.client.loads(body)
    assert params == ({"Status": "Success", "Value": "2147483648"},)

    record = xmlrpc.client.loads(raw_post(xapi_server.http_url,
                                          xmlrpc.client.dumps((session, vm.ref), "VM.get_record")))[0][0]["Value"]
    assert record["domid"] == "-1" and record["VCPUs_max"] == "2" and record["user_version"] == "1"
    assert record["is_a_template"] is False and record["power_state"] == "Halted"
    assert record["guest_metrics"] == NULL_REF and record["snapshots"] == []
    assert isinstance(record["snapshot_time"], xmlrpc.client.DateTime)
    assert record["snapshot_time"].value == "19700101T00:00:00Z"

    unknown = xmlrpc.client.loads(raw_post(xapi_server.http_url, xmlrpc.client.dumps((session,), "VM.frobnicate")))
    assert unknown[0][0] == {"Status": "Failure", "ErrorDescription": ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]}


def test_lookup_and_argument_errors(xapi_server):
    a = xapi_server.make_vm(name_label="fruix-amd64")
    b = xapi_server.make_vm(name_label="fruix-arm64", power_state="Running")
    tpl = xapi_server.make_vm(name_label="Other install media", is_a_template=True)
    s = login(xapi_server)
    x = s.xenapi
    assert x.VM.get_by_uuid(a.uuid) == a.ref and x.VM.get_uuid(a.ref) == a.uuid
    assert x.VM.get_by_name_label("fruix-arm64") == [b.ref]
    assert x.VM.get_by_name_label("nope") == []
    assert set(x.VM.get_all()) == {a.ref, b.ref, tpl.ref}
    records = x.VM.get_all_records()
    assert records[b.ref]["power_state"] == "Running" and records[tpl.ref]["is_a_template"] is True
    assert x.VM.get_name_label(a.ref) == "fruix-amd64"
    assert x.VM.get_power_state(b.ref) == "Running"
    assert x.VM.get_is_a_template(tpl.ref) is True and x.VM.get_is_a_snapshot(a.ref) is False
    assert x.VM.get_snapshots(a.ref) == [] and x.VM.get_guest_metrics(b.ref) == NULL_REF

    assert failure_of(x.VM.get_by_uuid, "00000000-0000-0000-0000-000000000000") == \
        ["UUID_INVALID", "VM", "00000000-0000-0000-0000-000000000000"]
    assert failure_of(x.VM.get_record, "OpaqueRef:nope") == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert failure_of(x.VM.get_power_state, NULL_REF) == ["HANDLE_INVALID", "VM", NULL_REF]
    assert failure_of(x.VM.get_no_such_field, a.ref) == ["MESSAGE_METHOD_UNKNOWN", "VM.get_no_such_field"]
    assert failure_of(x.Async.VM.get_record, a.ref) == ["MESSAGE_METHOD_UNKNOWN", "Async.VM.get_record"]
    assert failure_of(x.VM.start, a.ref) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "4", "2"]
    assert failure_of(x.VM.start, a.ref, "false", False) == ["FIELD_TYPE_ERROR", "start_paused"]


# ------------------------------------------------------------------ power states and tasks


def test_async_start_task_polling_result_and_destroy(xapi_server):
    vm = xapi_server.make_vm()
    xapi_server.delay("VM.start", 0.6)
    s = login(xapi_server)
    x = s.xenapi
    task = x.Async.VM.start(vm.ref, False, False)
    assert task.startswith("OpaqueRef:")
    assert xapi_server.calls_to("Async.VM.start")[0].task == task
    assert x.task.get_status(task) == "pending"
    record = x.task.get_record(task)
    assert record["name_label"] == "Async.VM.start" and record["allowed_operations"] == ["cancel"]
    assert record["finished"].value == "19700101T00:00:00Z"
    assert list(x.VM.get_current_operations(vm.ref).values()) == ["start"]
    assert "start" not in x.VM.get_allowed_operations(vm.ref)
    # the VM is busy: another lifecycle operation is refused
    assert failure_of(x.VM.start, vm.ref, False, False) == \
        ["OTHER_OPERATION_IN_PROGRESS", "VM.start", vm.ref]
    time.sleep(0.3)
    assert 0.0 < x.task.get_progress(task) < 1.0
    assert wait_task(s, task) == "success"
    assert x.task.get_result(task) == "" and x.task.get_error_info(task) == []
    assert x.task.get_progress(task) == 1.0
    assert x.VM.get_power_state(vm.ref) == "Running" and x.VM.get_current_operations(vm.ref) == {}
    assert x.VM.get_domid(vm.ref) != "-1" and x.VM.get_resident_on(vm.ref) == x.host.get_all()[0]
    assert task in x.task.get_all()
    x.task.destroy(task)
    assert xapi_server.task_destroys == 1 and xapi_server.destroyed_tasks == [task]
    assert failure_of(x.task.get_status, task) == ["HANDLE_INVALID", "task", task]
    assert failure_of(x.task.destroy, task) == ["HANDLE_INVALID", "task", task]


def test_async_snapshot_result_is_wrapped_in_value(xapi_server):
    vm = xapi_server.make_vm(power_state="Running")
    s = login(xapi_server)
    task = s.xenapi.Async.VM.snapshot(vm.ref, "before-build")
    assert wait_task(s, task) == "success"
    result = s.xenapi.task.get_result(task)
    m = re.fullmatch(r"<value>(OpaqueRef:[0-9a-f-]+)</value>", result)
    assert m, result
    snap = m.group(1)
    assert s.xenapi.VM.get_is_a_snapshot(snap) is True and s.xenapi.VM.get_snapshot_of(snap) == vm.ref
    assert s.xenapi.VM.get_snapshots(vm.ref) == [snap]
    assert s.xenapi.VM.snapshot(vm.ref, "again") in s.xenapi.VM.get_snapshots(vm.ref)


def test_power_state_machine(xapi_server):
    vm = xapi_server.make_vm()
    s = login(xapi_server)
    x = s.xenapi
    ref = vm.ref
    states = []

    def step(fn, *args):
        assert fn(ref, *args) == ""
        states.append(x.VM.get_power_state(ref))

    step(x.VM.start, True, False)      # start paused
    step(x.VM.unpause)
    domid = x.VM.get_domid(ref)
    step(x.VM.clean_reboot)
    assert x.VM.get_domid(ref) != domid
    step(x.VM.pause)
    step(x.VM.hard_shutdown)           # from Paused
    step(x.VM.start, False, False)
    step(x.VM.suspend)
    step(x.VM.resume, False, False)
    step(x.VM.shutdown)
    step(x.VM.start, False, True)
    step(x.VM.clean_shutdown)
    assert states == ["Paused", "Running", "Running", "Paused", "Halted", "Running", "Suspended",
                      "Running", "Halted", "Running", "Halted"]
    assert x.VM.get_domid(ref) == "-1" and x.VM.get_resident_on(ref) == NULL_REF


def test_power_state_errors(xapi_server):
    vm = xapi_server.make_vm(snapshots=["clean"])
    tpl = xapi_server.make_vm(name_label="tpl", is_a_template=True)
    s = login(xapi_server)
    x = s.xenapi
    assert failure_of(x.VM.clean_shutdown, vm.ref) == ["VM_BAD_POWER_STATE", vm.ref, "running", "halted"]
    assert failure_of(x.VM.hard_shutdown, vm.ref) == \
        ["VM_BAD_POWER_STATE", vm.ref, "paused, suspended, running", "halted"]
    assert failure_of(x.VM.resume, vm.ref, False, False) == ["VM_BAD_POWER_STATE", vm.ref, "suspended", "halted"]
    assert failure_of(x.VM.unpause, vm.ref) == ["VM_BAD_POWER_STATE", vm.ref, "paused", "halted"]
    assert failure_of(x.VM.start, tpl.ref, False, False) == ["VM_IS_TEMPLATE", tpl.ref, "start"]
    snap = vm.snapshots[0].ref
    assert x.VM.get_is_a_template(snap) is True  # snapshots are templates in xapi
    assert failure_of(x.VM.start, snap, False, False) == ["VM_IS_SNAPSHOT", snap, "start"]
    assert failure_of(x.VM.revert, vm.ref) == ["ONLY_REVERT_SNAPSHOT"]
    x.VM.start(vm.ref, False, False)
    assert failure_of(x.VM.start, vm.ref, False, False) == ["VM_BAD_POWER_STATE", vm.ref, "halted", "running"]
    # through a task: the error is the task's
    task = x.Async.VM.start(vm.ref, False, False)
    assert wait_task(s, task) == "failure"
    assert x.task.get_error_info(task) == ["VM_BAD_POWER_STATE", vm.ref, "halted", "running"]
    assert x.task.get_result(task) == ""
    vm.clean_shutdown_error = ["VM_LACKS_FEATURE", "{vm}", ""]
    assert failure_of(x.VM.clean_shutdown, vm.ref) == ["VM_LACKS_FEATURE", vm.ref, ""]
    assert x.VM.hard_shutdown(vm.ref) == "" and vm.power_state == "Halted"


@pytest.mark.parametrize("code", [
    ["HOST_NOT_ENOUGH_FREE_MEMORY", "1073741824", "524288000"],
    ["NO_HOSTS_AVAILABLE"],
    ["OTHER_OPERATION_IN_PROGRESS", "VM.start", "{vm}"],
    ["OPERATION_NOT_ALLOWED", "Operations on domain 0 are not allowed"],
    ["VM_MISSING_PV_DRIVERS", "{vm}"],
])
def test_injected_failure_once_then_success(xapi_server, code):
    vm = xapi_server.make_vm()
    s = login(xapi_server)
    xapi_server.fail_next("VM.start", code)
    expected = [c.replace("{vm}", vm.ref) for c in code]
    assert failure_of(s.xenapi.VM.start, vm.ref, False, False) == expected
    assert vm.power_state == "Halted"
    s.xenapi.VM.start(vm.ref, False, False)
    assert vm.power_state == "Running"


def test_injected_failures_in_tasks(xapi_server):
    vm = xapi_server.make_vm()
    s = login(xapi_server)
    x = s.xenapi
    xapi_server.fail_next("Async.VM.start", ["NO_HOSTS_AVAILABLE"], times=2)
    for _ in range(2):
        task = x.Async.VM.start(vm.ref, False, False)  # the call succeeds; the task fails
        assert wait_task(s, task) == "failure"
        assert x.task.get_error_info(task) == ["NO_HOSTS_AVAILABLE"]
    # a sync VM.start is not matched by an "Async.VM.start" key ...
    xapi_server.fail_next("Async.VM.start", ["NO_HOSTS_AVAILABLE"])
    x.VM.start(vm.ref, False, False)
    x.VM.hard_shutdown(vm.ref)
    xapi_server.clear_failures()
    # ... but a "VM.clean_shutdown" key matches the Async call too
    x.VM.start(vm.ref, False, False)
    xapi_server.fail_next("VM.clean_shutdown", ["VM_LACKS_FEATURE_SHUTDOWN", "{vm}"])
    task = x.Async.VM.clean_shutdown(vm.ref)
    assert wait_task(s, task) == "failure"
    assert x.task.get_error_info(task) == ["VM_LACKS_FEATURE_SHUTDOWN", vm.ref]
    assert vm.power_state == "Running"
    task = x.Async.VM.clean_shutdown(vm.ref)
    assert wait_task(s, task) == "success" and vm.power_state == "Halted"


def test_injected_failures_on_any_method(xapi_server):
    vm = xapi_server.make_vm()
    s = login(xapi_server)
    xapi_server.fail_next("VM.get_by_uuid", ["INTERNAL_ERROR", "boom"])
    assert failure_of(s.xenapi.VM.get_by_uuid, vm.uuid) == ["INTERNAL_ERROR", "boom"]
    assert s.xenapi.VM.get_by_uuid(vm.uuid) == vm.ref
    # SESSION_INVALID: the SDK logs in again and retries, invisibly
    xapi_server.fail_next("VM.get_power_state", ["SESSION_INVALID", "{session}"])
    assert s.xenapi.VM.get_power_state(vm.ref) == "Halted"
    assert xapi_server.logins == 2
    # a login can fail too (e.g. a pool member redirecting to its master)
    xapi_server.fail_next("session.login_with_password", ["HOST_IS_SLAVE", "192.0.2.1"])
    assert failure_of(xapi_server.sdk_session().xenapi.login_with_password, "root", xapi_server.password) == \
        ["HOST_IS_SLAVE", "192.0.2.1"]
    assert xapi_server.internal_errors == []


def test_task_cancel_and_deferred_destroy(xapi_server):
    vm = xapi_server.make_vm()
    xapi_server.delay("Async.VM.start", 5)
    s = login(xapi_server)
    x = s.xenapi
    task = x.Async.VM.start(vm.ref, False, False)
    assert x.task.get_status(task) == "pending"
    x.task.cancel(task)
    assert wait_task(s, task, timeout=3) == "cancelled"
    assert x.task.get_error_info(task) == ["TASK_CANCELLED", task]
    assert vm.power_state == "Halted" and x.VM.get_current_operations(vm.ref) == {}
    x.task.cancel(task)  # cancelling a finished task does nothing

    xapi_server.delay("Async.VM.start", 0.5)
    task = x.Async.VM.start(vm.ref, False, False)
    x.task.destroy(task)  # pending: destroyed when it completes (as xapi does)
    assert x.task.get_current_operations(task) == {"task": "destroy"}
    xapi_server.wait_for(lambda: task in xapi_server.destroyed_tasks, 5, "the task to be destroyed")
    assert failure_of(x.task.get_status, task) == ["HANDLE_INVALID", "task", task]
    assert vm.power_state == "Running"


def test_delays(xapi_server):
    vm = xapi_server.make_vm()
    s = login(xapi_server)
    xapi_server.delay("VM.get_power_state", 0.4)
    t0 = time.monotonic()
    assert s.xenapi.VM.get_power_state(vm.ref) == "Halted"
    assert time.monotonic() - t0 >= 0.4
    xapi_server.delay("VM.get_power_state", None)
    xapi_server.delay("VM.start", 0.4)  # sync operation: the call takes that long
    t0 = time.monotonic()
    s.xenapi.VM.start(vm.ref, False, False)
    assert time.monotonic() - t0 >= 0.4 and vm.power_state == "Running"


def test_guest_metrics_address_appears_after_running_for_a_while(xapi_server):
    vm = xapi_server.make_vm()
    other = xapi_server.make_vm(name_label="no-agent", power_state="Running")
    xapi_server.set_guest_address(vm.uuid, "127.0.0.2", after_seconds=0.5)
    s = login(xapi_server)
    x = s.xenapi
    assert x.VM.get_guest_metrics(vm.ref) == NULL_REF
    time.sleep(0.6)
    assert x.VM.get_guest_metrics(vm.ref) == NULL_REF  # halted VMs report nothing
    x.VM.start(vm.ref, False, False)
    started = time.monotonic()
    assert x.VM.get_guest_metrics(vm.ref) == NULL_REF
    gm = xapi_server.wait_for(lambda: (r := x.VM.get_guest_metrics(vm.ref)) != NULL_REF and r, 5, "metrics")
    assert time.monotonic() - started >= 0.45
    assert x.VM_guest_metrics.get_networks(gm) == {"0/ip": "127.0.0.2", "0/ipv4/0": "127.0.0.2",
                                                   "0/ipv6/0": "fe80::1"}
    assert x.VM_guest_metrics.get_record(gm)["live"] is True
    assert x.VM.get_record(vm.ref)["guest_metrics"] == gm
    xapi_server.set_guest_networks(vm.uuid, {"1/ipv4/0": "127.0.0.3"})
    assert x.VM_guest_metrics.get_networks(gm) == {"1/ipv4/0": "127.0.0.3"}
    x.VM.hard_shutdown(vm.ref)
    assert x.VM.get_guest_metrics(vm.ref) == NULL_REF
    assert failure_of(x.VM_guest_metrics.get_networks, gm) == ["HANDLE_INVALID", "VM_guest_metrics", gm]
    time.sleep(0.6)
    assert x.VM.get_guest_metrics(other.ref) == NULL_REF  # no address configured: never


def test_revert_to_snapshots(xapi_server):
    vm = xapi_server.make_vm(power_state="Running",
                             snapshots=["clean", {"name_label": "booted", "power_state": "Suspended"}])
    clean, booted = vm.snapshots
    events = []
    xapi_server.on_power_state(vm.uuid, lambda old, new: events.append((old, new)))
    s = login(xapi_server)
    x = s.xenapi
    assert x.VM.get_snapshots(vm.ref) == [clean.ref, booted.ref]
    assert x.VM.get_power_state(booted.ref) == "Suspended"
    assert x.VM.get_by_name_label("clean") == [clean.ref]
    task = x.Async.VM.revert(clean.ref)
    assert wait_task(s, task) == "success" and x.task.get_result(task) == ""
    assert vm.power_state == "Halted" and events == [("Running", "Halted")]
    assert x.VM.get_parent(vm.ref) == clean.ref
    x.VM.revert(booted.ref)  # a checkpoint: the VM comes back Suspended
    assert vm.power_state == "Suspended"
    x.VM.resume(vm.ref, False, False)
    assert vm.power_state == "Running"
    assert events == [("Running", "Halted"), ("Halted", "Suspended"), ("Suspended", "Running")]
    assert x.VM.checkpoint(vm.ref, "cp") in x.VM.get_snapshots(vm.ref)
    assert vm.snapshots[-1].power_state == "Suspended"


def test_hooks(xapi_server):
    vm = xapi_server.make_vm()
    seen = []
    xapi_server.on_start(vm.uuid, lambda: seen.append(("start", vm.power_state)))
    xapi_server.on_shutdown(vm.uuid, lambda: seen.append(("shutdown", vm.power_state)))
    s = login(xapi_server)
    x = s.xenapi
    task = x.Async.VM.start(vm.ref, False, False)
    assert wait_task(s, task) == "success"
    x.VM.suspend(vm.ref)
    x.VM.resume(vm.ref, False, False)
    x.VM.clean_shutdown(vm.ref)
    assert seen == [("start", "Running"), ("start", "Running"), ("shutdown", "Halted")]
    assert [h[1] for h in xapi_server.hook_calls] == ["start", "start", "shutdown"]


def test_hook_errors_are_reported(tmp_path):
    server = FakeXapiServer(tmp_path / "x")
    with server:
        vm = server.make_vm()
        server.on_start(vm.uuid, lambda: 1 / 0)
        s = login(server)
        s.xenapi.VM.start(vm.ref, False, False)  # the VM still starts
        assert vm.power_state == "Running"
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        server.check()


def test_ssh_guest_follows_the_vm(xapi_server, ssh_guest_factory):
    guest = ssh_guest_factory(start=False)
    vm = xapi_server.make_vm()
    xapi_server.on_start(vm.uuid, guest.start)
    xapi_server.on_shutdown(vm.uuid, guest.stop)
    xapi_server.set_guest_address(vm.uuid, guest.address, after_seconds=0.2)
    s = login(xapi_server)
    x = s.xenapi
    task = x.Async.VM.start(vm.ref, False, False)
    assert wait_task(s, task, timeout=30) == "success"
    assert guest.running
    gm = xapi_server.wait_for(lambda: (r := x.VM.get_guest_metrics(vm.ref)) != NULL_REF and r, 5, "metrics")
    address = x.VM_guest_metrics.get_networks(gm)["0/ip"]
    with socket.create_connection((address, guest.port), timeout=5) as sock:
        assert sock.recv(4) == b"SSH-"
    assert wait_task(s, x.Async.VM.clean_shutdown(vm.ref), timeout=30) == "success"
    assert not guest.running


# ------------------------------------------------------------------ transport: TLS, hangs, drops


def test_https_with_pinned_ca(xapi_server):
    ctx = ssl.create_default_context(cafile=str(xapi_server.ca_file))
    s = XenAPI.Session(xapi_server.https_url, transport=xmlrpc.client.SafeTransport(context=ctx))
    s.xenapi.login_with_password("root", xapi_server.password, "1.0", "tls")
    assert s.xenapi.pool.get_all() and xapi_server.calls[-1].scheme == "https"
    assert xapi_server.https_url.startswith("https://127.0.0.1:")
    # the host's own self-signed certificate, pinned
    s2 = login(xapi_server, "self-signed")
    assert s2.xenapi.VM.get_all() == []


@pytest.mark.parametrize("kind, reason", [
    ("untrusted", "unable to get local issuer certificate"),
    ("wrong-host", "mismatch"),
    ("expired", "expired"),
])
def test_https_certificate_not_trusted(xapi_server, kind, reason):
    ctx = ssl.create_default_context(cafile=str(xapi_server.ca_file))
    s = XenAPI.Session(xapi_server.url(kind), transport=xmlrpc.client.SafeTransport(context=ctx))
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        s.xenapi.login_with_password("root", xapi_server.password, "1.0", "tls")
    assert xapi_server.logins == 0
    xapi_server.wait_for(lambda: xapi_server.tls_errors, 5, "the server to see the failed handshake")
    # the SDK's ignore_ssl=True really ignores it
    s = XenAPI.Session(xapi_server.url(kind), ignore_ssl=True)
    s.xenapi.login_with_password("root", xapi_server.password, "1.0", "tls")
    assert xapi_server.logins == 1


def test_https_default_trust_store_rejects_the_test_ca(xapi_server):
    s = XenAPI.Session(xapi_server.https_url)  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        s.xenapi.login_with_password("root", xapi_server.password)


def test_hang_makes_the_client_time_out(xapi_server):
    vm = xapi_server.make_vm()
    s = login(xapi_server, timeout=0.5)
    xapi_server.hang("VM.get_by_uuid")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        s.xenapi.VM.get_by_uuid(vm.uuid)
    assert 0.4 <= time.monotonic() - t0 < 5
    assert xapi_server.calls[-1].method == "VM.get_by_uuid" and xapi_server.calls[-1].outcome == "hung"
    # other methods are answered; after unhang so is this one (on a fresh connection)
    s2 = login(xapi_server, timeout=2)
    assert s2.xenapi.VM.get_power_state(vm.ref) == "Halted"
    xapi_server.unhang("VM.get_by_uuid")
    assert s2.xenapi.VM.get_by_uuid(vm.uuid) == vm.ref


@pytest.mark.parametrize("kind", ["http", "https"])
def test_hang_connections(xapi_server, kind):
    xapi_server.hang_connections()
    s = xapi_server.sdk_session(kind, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        s.xenapi.login_with_password("root", xapi_server.password)
    assert time.monotonic() - t0 < 5
    assert xapi_server.calls == [] and xapi_server.connections >= 1
    xapi_server.hang_connections(False)
    login(xapi_server, kind, timeout=5)


def test_drop_next(xapi_server):
    vm = xapi_server.make_vm()
    s = login(xapi_server)
    # xmlrpc.client resends a request once when the server disconnects: one drop is invisible
    xapi_server.drop_next("VM.get_by_uuid")
    assert s.xenapi.VM.get_by_uuid(vm.uuid) == vm.ref
    assert [c.outcome for c in xapi_server.calls_to("VM.get_by_uuid")] == ["dropped", "Success"]
    xapi_server.drop_next("VM.get_by_uuid", times=2)
    with pytest.raises(http.client.RemoteDisconnected):
        s.xenapi.VM.get_by_uuid(vm.uuid)


def test_stop_releases_hung_requests_and_joins_threads(tmp_path):
    server = FakeXapiServer(tmp_path / "x").start()
    port = int(server.http_url.rsplit(":", 1)[1].strip("/"))
    vm = server.make_vm()
    server.delay("Async.VM.start", 30)
    s = login(server)
    s.xenapi.Async.VM.start(vm.ref, False, False)  # a task thread waiting 30 s
    server.hang("VM.get_record")
    errors = []

    def hung_call():
        try:
            s2 = login(server)
            s2.xenapi.VM.get_record(vm.ref)
        except (http.client.HTTPException, ConnectionError, xmlrpc.client.ProtocolError) as exc:
            errors.append(exc)

    t = threading.Thread(target=hung_call)
    t.start()
    server.wait_for(lambda: any(c.outcome == "hung" for c in server.calls), 5, "the hung call")
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 5
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    assert isinstance(errors[0], (http.client.RemoteDisconnected, ConnectionError))
    assert [th.name for th in threading.enumerate() if th.name.startswith("xapi-fake")] == []
    server.check()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_concurrent_clients(xapi_server):
    vms = [xapi_server.make_vm(name_label=f"vm-{i}") for i in range(8)]
    xapi_server.delay("VM.start", 0.3)
    results = {}

    def run(vm):
        s = login(xapi_server)
        s.xenapi.VM.start(vm.ref, False, False)
        results[vm.uuid] = s.xenapi.VM.get_power_state(vm.ref)

    threads = [threading.Thread(target=run, args=(vm,)) for vm in vms]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 2  # served in parallel
    assert set(results.values()) == {"Running"} and len(results) == 8


def test_password_is_never_written_anywhere(tmp_path, capfd):
    server = FakeXapiServer(tmp_path / "x", password=PASSWORD)
    with server:
        server.url("self-signed")
        s = server.sdk_session()
        failure_of(s.xenapi.login_with_password, "root", PASSWORD + "x")
        s.xenapi.login_with_password("root", PASSWORD, "1.0", "t")
        s.xenapi.session.logout()
    out, err = capfd.readouterr()
    assert PASSWORD not in out and PASSWORD not in err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in repr(server.calls) and PASSWORD not in repr(server.sessions)
    assert server.password == PASSWORD
