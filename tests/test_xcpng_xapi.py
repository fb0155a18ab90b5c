"""XapiClient: the real XenAPI SDK against the fake XAPI — sessions, TLS, timeouts, tasks, errors."""

from __future__ import annotations

import threading
import time

import pytest

import fruix_dagster.hypervisor.xapi as xapi_mod
from fruix_dagster.errors import ConfigError, HypervisorError
from fruix_dagster.hypervisor import (ORIGINATOR, XapiCallError, XapiClient, XapiTimeout, XapiUnreachable,
                                      parse_task_result)
from tests.support.xapi_fake import REDACTED, xapi_server  # noqa: F401
from tests.test_xcpng_common import PASSWORD, PASSWORD_ENV, WRONG_PASSWORD, free_port


def client(server, listener="http", env_value=PASSWORD, logs=None, **kw) -> XapiClient:
    server.password = PASSWORD
    env = {PASSWORD_ENV: env_value} if env_value is not None else {}
    if listener == "https" and "ca_file" not in kw and not kw.get("insecure"):
        kw["ca_file"] = str(server.ca_file)
    return XapiClient(server.url(listener), "root", PASSWORD_ENV, environ=env,
                      log=(logs.append if logs is not None else None), where="fruix.toml: guest 'g'", **kw)


# ------------------------------------------------------------------ sessions


def test_login_with_originator_then_logout(xapi_server):
    logs: list[str] = []
    c = client(xapi_server, logs=logs)
    assert c.call("VM.get_all") == []
    (ref, info), = xapi_server.sessions.items()
    assert info == {"user": "root", "originator": ORIGINATOR, "version": "1.0"}
    assert ORIGINATOR == "fruix-dagster"
    login = xapi_server.calls_to("session.login_with_password")[0]
    assert login.args == ("root", REDACTED, "1.0", "fruix-dagster")
    c.close()
    assert xapi_server.logouts == 1 and xapi_server.sessions == {}
    assert xapi_server.calls[-1].method == "session.logout" and xapi_server.calls[-1].session == ref
    c.close()  # idempotent
    assert xapi_server.logouts == 1
    assert not any(PASSWORD in m for m in logs)


def test_one_session_per_thread_all_logged_out(xapi_server):
    c = client(xapi_server)
    seen: dict[str, str] = {}

    def work(name: str) -> None:
        for _ in range(5):
            c.call("VM.get_all")
        seen[name] = c.session().handle

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    work("main")
    assert len(set(seen.values())) == 4 and xapi_server.logins == 4
    # each thread used its own session on its own connection
    by_session: dict[str, set[int]] = {}
    for call in xapi_server.calls:
        if call.session:
            by_session.setdefault(call.session, set()).add(call.connection)
    assert all(len(conns) == 1 for conns in by_session.values())
    assert len({next(iter(c_)) for c_ in by_session.values()}) == 4
    c.close()
    assert xapi_server.logouts == 4 and xapi_server.sessions == {}


def test_sdk_logs_in_again_after_session_invalid(xapi_server):
    vm = xapi_server.make_vm()
    c = client(xapi_server)
    assert c.call("VM.get_power_state", vm.ref) == "Halted"
    first = c.session().handle
    xapi_server.invalidate_sessions()  # a toolstack restart
    assert c.call("VM.get_power_state", vm.ref) == "Halted"
    assert c.session().handle != first and xapi_server.logins == 2
    c.close()
    assert xapi_server.sessions == {}


def test_logout_failure_is_guarded(xapi_server):
    logs: list[str] = []
    c = client(xapi_server, logs=logs)
    c.call("VM.get_all")
    xapi_server.fail_next("session.logout", ["INTERNAL_ERROR", "boom"])
    c.close()  # does not raise
    assert any("logout" in m and "INTERNAL_ERROR" in m for m in logs)


def test_missing_password_variable_is_a_config_error(xapi_server):
    for value in (None, ""):
        c = client(xapi_server, env_value=value)
        with pytest.raises(ConfigError) as ei:
            c.call("VM.get_all")
        msg = str(ei.value)
        assert PASSWORD_ENV in msg and "password" in msg and "fruix.toml: guest 'g'" in msg
        assert ("empty" if value == "" else "not set") in msg
    assert xapi_server.calls == []


def test_wrong_password_one_clear_error(xapi_server):
    c = client(xapi_server, env_value=WRONG_PASSWORD)
    t0 = time.monotonic()
    with pytest.raises(XapiCallError) as ei:
        c.call("VM.get_all")
    assert time.monotonic() - t0 < 2
    e = ei.value
    assert e.code == "SESSION_AUTHENTICATION_FAILED"
    msg = str(e)
    assert "SESSION_AUTHENTICATION_FAILED" in msg and "'root'" in msg and PASSWORD_ENV in msg
    assert WRONG_PASSWORD not in msg and PASSWORD not in msg
    assert xapi_server.login_failures == 1 and xapi_server.logins == 0
    c.close()


def test_pool_member_names_the_master(xapi_server):
    xapi_server.fail_next("session.login_with_password", ["HOST_IS_SLAVE", "192.0.2.1"])
    with pytest.raises(XapiCallError, match=r"HOST_IS_SLAVE.*192\.0\.2\.1"):
        client(xapi_server).call("VM.get_all")


# ------------------------------------------------------------------ TLS


def test_https_with_pinned_ca(xapi_server):
    c = client(xapi_server, "https")
    assert c.call("VM.get_all") == []
    assert {call.scheme for call in xapi_server.calls} == {"https"}
    c.close()


@pytest.mark.parametrize("listener", ["untrusted", "wrong-host", "expired"])
def test_https_certificate_not_trusted(xapi_server, listener):
    c = client(xapi_server, listener, ca_file=str(xapi_server.ca_file), request_timeout=5)
    t0 = time.monotonic()
    with pytest.raises(XapiUnreachable) as ei:
        c.call("VM.get_all")
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "certificate is not trusted" in msg and "ca_file" in msg and "insecure = true" in msg
    assert xapi_server.logins == 0


def test_https_default_trust_store_rejects_a_private_ca(xapi_server):
    c = client(xapi_server, "https", ca_file=None)
    with pytest.raises(XapiUnreachable, match="system trust store"):
        c.call("VM.get_all")
    assert xapi_server.logins == 0


def test_insecure_only_when_asked_and_said_loudly(xapi_server):
    logs: list[str] = []
    c = client(xapi_server, "untrusted", insecure=True, logs=logs)
    assert c.call("VM.get_all") == []
    assert any("verification" in m and "OFF" in m for m in logs)
    c.close()


def test_unreadable_ca_file_is_a_config_error(xapi_server, tmp_path):
    c = client(xapi_server, "https", ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"xcpng\.ca_file: expected a readable PEM file"):
        c.call("VM.get_all")


# ------------------------------------------------------------------ never hang


@pytest.mark.parametrize("listener", ["http", "https"])
def test_server_that_never_answers_times_out(xapi_server, listener):
    xapi_server.hang_connections()
    c = client(xapi_server, listener, request_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(XapiTimeout) as ei:
        c.call("VM.get_all")
    took = time.monotonic() - t0
    assert 0.9 <= took < 3, took
    msg = str(ei.value)
    assert "request_timeout = 1 s" in msg and "session.login_with_password" in msg
    assert xapi_server.calls == []


def test_a_hung_call_times_out_and_the_next_call_works(xapi_server):
    vm = xapi_server.make_vm()
    c = client(xapi_server, request_timeout=1.0)
    c.call("VM.get_all")
    xapi_server.hang("VM.get_power_state")
    t0 = time.monotonic()
    with pytest.raises(XapiTimeout, match="VM.get_power_state"):
        c.call("VM.get_power_state", vm.ref)
    assert time.monotonic() - t0 < 3
    assert c.call("VM.get_name_label", vm.ref) == "fruix-amd64"  # a fresh connection, same session
    assert xapi_server.logins == 1


def test_refused_connection_is_retried_then_reported(monkeypatch):
    monkeypatch.setattr(xapi_mod, "CONNECT_BACKOFF", 0.05)
    c = XapiClient(f"http://127.0.0.1:{free_port()}/", "root", PASSWORD_ENV, environ={PASSWORD_ENV: PASSWORD},
                   request_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(XapiUnreachable) as ei:
        c.call("VM.get_all")
    assert time.monotonic() - t0 < 3
    msg = str(ei.value)
    assert "ConnectionRefusedError" in msg and f"{xapi_mod.CONNECT_RETRIES + 1} times" in msg


def test_dropped_connections_are_retried(xapi_server, monkeypatch):
    monkeypatch.setattr(xapi_mod, "CONNECT_BACKOFF", 0.05)
    vm = xapi_server.make_vm()
    c = client(xapi_server)
    c.call("VM.get_all")
    xapi_server.drop_next("VM.get_power_state", times=3)  # xmlrpc resends once; we retry the rest
    assert c.call("VM.get_power_state", vm.ref) == "Halted"


# ------------------------------------------------------------------ tasks


def test_task_result_without_value_tags_and_task_destroyed(xapi_server):
    vm = xapi_server.make_vm(power_state="Running")
    c = client(xapi_server)
    snap = c.run_task("VM.snapshot", vm.ref, "before-build", timeout=10)
    assert snap.startswith("OpaqueRef:") and "<value>" not in snap
    assert c.call("VM.get_snapshot_of", snap) == vm.ref
    assert c.run_task("VM.clean_shutdown", vm.ref, timeout=10) == ""
    assert xapi_server.task_destroys == 2 and xapi_server.tasks == {}


def test_failed_task_raises_its_error_and_is_destroyed(xapi_server):
    vm = xapi_server.make_vm()
    c = client(xapi_server)
    xapi_server.fail_next("Async.VM.start", ["NO_HOSTS_AVAILABLE"])
    with pytest.raises(XapiCallError) as ei:
        c.run_task("VM.start", vm.ref, False, False, timeout=10)
    assert ei.value.code == "NO_HOSTS_AVAILABLE" and ei.value.details == ["NO_HOSTS_AVAILABLE"]
    assert xapi_server.task_destroys == 1 and xapi_server.tasks == {}


def test_slow_task_is_cancelled_at_its_deadline_and_destroyed(xapi_server):
    vm = xapi_server.make_vm()
    c = client(xapi_server)
    xapi_server.delay("Async.VM.start", 30)
    t0 = time.monotonic()
    with pytest.raises(XapiTimeout, match="still pending"):
        c.run_task("VM.start", vm.ref, False, False, timeout=1)
    assert time.monotonic() - t0 < 3
    assert xapi_server.calls_to("task.cancel") and xapi_server.task_destroys == 1
    xapi_server.wait_for(lambda: xapi_server.tasks == {}, 5, "the cancelled task to be destroyed")
    assert vm.power_state == "Halted"


def test_parse_task_result():
    assert parse_task_result("") == ""
    assert parse_task_result("<value>OpaqueRef:abc</value>") == "OpaqueRef:abc"
    assert parse_task_result(" <value>a &amp; b</value>\n") == "a & b"
    assert parse_task_result("<value><array><data><value>x</value></data></array></value>") == ["x"]
    assert parse_task_result("<value>unterminated") == "<value>unterminated"
    assert parse_task_result("plain") == "plain"


def test_password_never_in_messages_even_if_echoed(xapi_server):
    """Belt and braces: an error text that would contain the password is scrubbed."""
    c = client(xapi_server)
    xapi_server.fail_next("VM.get_all", ["INTERNAL_ERROR", f"echo {PASSWORD}"])
    with pytest.raises(HypervisorError) as ei:
        c.call("VM.get_all")
    assert PASSWORD not in str(ei.value) and "<redacted>" in str(ei.value)


def test_a_starting_toolstack_is_waited_for(xapi_server, monkeypatch):
    monkeypatch.setattr(xapi_mod, "CONNECT_BACKOFF", 0.05)
    xapi_server.fail_next("session.login_with_password", ["HOST_STILL_BOOTING"], times=2)
    c = client(xapi_server)
    assert c.call("VM.get_all") == [] and xapi_server.logins == 1
    xapi_server.fail_next("session.login_with_password", ["HOST_STILL_BOOTING"], times=100)
    with pytest.raises(XapiCallError, match="HOST_STILL_BOOTING.*still starting"):
        client(xapi_server).call("VM.get_all")


def test_unknown_object_says_what_probably_happened(xapi_server):
    xapi_server.make_vm()
    c = client(xapi_server)
    with pytest.raises(XapiCallError, match=r"HANDLE_INVALID \(VM, OpaqueRef:gone\).*no longer exists"):
        c.call("VM.get_power_state", "OpaqueRef:gone")


# ------------------------------------------------------------------ what is handled is typed and logged


def test_a_malformed_task_result_is_stripped_and_said(tmp_path):
    logs: list[str] = []
    assert parse_task_result("<value>unterminated", log=logs.append, what="snapshot") == "<value>unterminated"
    assert parse_task_result("<value><int>x1</int></value>", log=logs.append) == "<int>x1</int>"
    assert parse_task_result("<value><boolean>7</boolean></value>", log=logs.append) == "<boolean>7</boolean>"
    assert len(logs) == 3
    assert logs[0].startswith("xcpng: the result of snapshot is not a well-formed XML-RPC value (ExpatError")
    assert "(ValueError" in logs[1] and "'<int>x1</int>'" in logs[1] and "(TypeError" in logs[2]
    assert parse_task_result("<value>fine</value>", log=logs.append) == "fine" and len(logs) == 3


def test_a_failing_connection_close_is_logged_not_dropped(xapi_server, monkeypatch):
    logs: list[str] = []
    c = client(xapi_server, logs=logs)
    c.call("VM.get_all")

    def close_fails() -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(c.session()._fruix_transport, "close", close_fails)
    c.close()
    assert xapi_server.logouts == 1
    assert any("closing the connection to" in m and "ConnectionResetError" in m and "Connection reset" in m
               for m in logs), logs


def test_a_task_that_cannot_be_cancelled_is_logged_then_destroyed(xapi_server):
    logs: list[str] = []
    vm = xapi_server.make_vm()
    c = client(xapi_server, logs=logs)
    xapi_server.delay("Async.VM.start", 30)
    xapi_server.fail_next("task.cancel", ["OPERATION_NOT_ALLOWED", "cancel"])
    with pytest.raises(XapiTimeout, match="still pending"):
        c.run_task("VM.start", vm.ref, False, False, timeout=1)
    assert any("could not cancel task" in m and "OPERATION_NOT_ALLOWED" in m for m in logs), logs
    assert xapi_server.task_destroys == 1


def test_only_the_errors_a_call_can_raise_are_translated(xapi_server):
    c = client(xapi_server)
    c.call("VM.get_all")
    with pytest.raises(HypervisorError, match=r"unexpected TypeError: cannot marshal"):
        c.call("VM.get_power_state", object())  # xmlrpc.client cannot send it: one clear error
    assert c.call("VM.get_all") == []  # and the connection was reset for the next call


def test_a_bug_in_logout_is_not_swallowed_by_close(xapi_server, monkeypatch):
    logs: list[str] = []
    c = client(xapi_server, logs=logs)
    session = c.session()

    def logout_bug(self) -> None:
        raise RuntimeError("a bug, not a pool answer")

    monkeypatch.setattr(type(session), "_logout", logout_bug)
    with pytest.raises(RuntimeError, match="a bug, not a pool answer"):
        c.close()
    assert not any("logout" in m for m in logs)
