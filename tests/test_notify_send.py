"""Sending notices to real servers on loopback: SMTP (STARTTLS, AUTH), HTTP webhooks; failures and retries."""

from __future__ import annotations

import json
import time

import pytest

from fruix_dagster.notify import Notice, deliver, triage
from fruix_dagster.settings import MailChannel, NotifySettings, WebhookChannel
from tests.support.loopback import HttpServer, SmtpServer, free_port

ERROR = """buildkernel failed with exit status 2 (expected 0); fix the cause shown below and re-materialize — build failures are not retried
command: make -j2 buildkernel TARGET=amd64 TARGET_ARCH=amd64 KERNCONF=GENERIC
log: /var/tmp/fruix-native-build/steps/buildkernel-ab12/log
first errors:
  sys/kern/kern_fruix.c:1:1: error: simulated compile error (SAMPLE_FAIL=buildkernel)
  *** Error code 1
last 40 lines:
  >>> stage 2.3: building the kernel
  sys/kern/kern_fruix.c:1:1: error: simulated compile error (SAMPLE_FAIL=buildkernel)
  *** Error code 1
  Stop."""

NOTICE = Notice(event="failure", target="amd64", guest="fruix-amd64", run_id="0123456789abcdef",
                run_url="http://ui.example/runs/0123456789abcdef", job="build_target",
                step="kernel_build", stage=">>> stage 2.3: building the kernel", failure=triage(ERROR))


def notify(*channels, **kw) -> NotifySettings:
    return NotifySettings(channels=channels, **{"retries": 2, "backoff_seconds": 0.05,
                                                "timeout_seconds": 5.0, **kw})


def mail_channel(smtp: SmtpServer, **kw) -> MailChannel:
    return MailChannel(name="ops", host="127.0.0.1", port=smtp.port, user=smtp.user, password_env="SMTP_PW",
                       ca_file=str(smtp.ca.ca_file), **{"from": "fruix@example.org"},
                       to=("ops@example.org",), **kw)


def test_triage_reads_the_step_failure_shape():
    t = triage(ERROR)
    assert t.headline.startswith("buildkernel failed with exit status 2")
    assert t.log_path == "/var/tmp/fruix-native-build/steps/buildkernel-ab12/log"
    assert t.first_errors[0].endswith("simulated compile error (SAMPLE_FAIL=buildkernel)")
    assert t.last_marker == ">>> stage 2.3: building the kernel" and not t.stuck
    other = triage("kernel_stage for target 'amd64' needs kernel_build built from the current source")
    assert other.first_errors == () and other.headline.startswith("kernel_stage for target")


def test_mail_over_starttls_with_login(tmp_path):
    with SmtpServer(tmp_path) as smtp:
        [d] = deliver(notify(mail_channel(smtp)), NOTICE, {"SMTP_PW": smtp.password})
        assert d.ok and d.attempts == 1, d
        [msg] = smtp.collected.wait_for(1)
    assert smtp.logins == ["fruix"]
    assert msg["Subject"] == "[fruix] FAILED: target amd64 on guest fruix-amd64 at kernel_build"
    assert msg["To"] == "ops@example.org" and msg["From"] == "fruix@example.org"
    body = msg.get_content()
    assert "http://ui.example/runs/0123456789abcdef" in body
    assert "simulated compile error (SAMPLE_FAIL=buildkernel)" in body
    assert "/var/tmp/fruix-native-build/steps/buildkernel-ab12/log" in body
    assert ">>> stage 2.3: building the kernel" in body
    assert smtp.password not in msg.as_string()


def test_webhook_payload_shapes_and_bearer_token():
    with HttpServer() as http:
        settings = notify(
            WebhookChannel(name="json", url=http.url, token_env="HOOK_TOKEN"),
            WebhookChannel(name="slack", url_env="SLACK_URL", format="slack"),
            WebhookChannel(name="matrix", url=http.url + "/send/m.room.message", format="matrix",
                           token_env="HOOK_TOKEN"))
        out = deliver(settings, NOTICE, {"HOOK_TOKEN": "tok-123", "SLACK_URL": http.url + "/slack-secret"})
        assert [d.ok for d in out] == [True, True, True], out
        reqs = {r.path: r for r in http.collected.wait_for(3)}
    plain = reqs["/hook"]
    assert plain.method == "POST" and plain.headers["Authorization"] == "Bearer tok-123"
    body = json.loads(plain.body)
    assert body["event"] == "failure" and body["target"] == "amd64" and body["step"] == "kernel_build"
    assert body["run_url"] == "http://ui.example/runs/0123456789abcdef"
    assert body["first_errors"][0].endswith("(SAMPLE_FAIL=buildkernel)")
    slack = json.loads(reqs["/hook/slack-secret"].body)
    assert "Authorization" not in reqs["/hook/slack-secret"].headers
    assert "FAILED" in slack["text"] and slack["blocks"][0]["type"] == "header"
    [(path, matrix)] = [(p, r) for p, r in reqs.items() if "/send/m.room.message/" in p]
    assert matrix.method == "PUT" and path.rsplit("/", 1)[1] == NOTICE.key
    m = json.loads(matrix.body)
    assert m["msgtype"] == "m.text" and "simulated compile error" in m["body"]


def test_refusing_smtp_is_retried_then_reported_without_the_secret(tmp_path):
    with SmtpServer(tmp_path) as smtp:
        smtp.answer = "451 4.3.0 try again later"
        [d] = deliver(notify(mail_channel(smtp)), NOTICE, {"SMTP_PW": smtp.password})
        assert not d.ok and d.attempts == 3 and smtp.collected.attempts == 3
        assert "451" in d.error and smtp.password not in d.error
        # a permanent refusal is not retried
        smtp.answer = "554 5.7.1 rejected"
        [d] = deliver(notify(mail_channel(smtp)), NOTICE, {"SMTP_PW": smtp.password})
        assert not d.ok and d.attempts == 1 and "554" in d.error
        # a wrong password: one attempt, the password never in the message
        [d] = deliver(notify(mail_channel(smtp)), NOTICE, {"SMTP_PW": "wrong-" + smtp.password})
        assert not d.ok and d.attempts == 1 and "refused the login" in d.error and smtp.password not in d.error
    # nobody listening
    closed = MailChannel(name="down", host="127.0.0.1", port=free_port(), security="starttls",
                         **{"from": "f@example.org"}, to=("t@example.org",))
    [d] = deliver(notify(closed), NOTICE, {})
    assert not d.ok and d.attempts == 3 and "refused" in d.error.lower()


def test_a_server_without_starttls_is_not_sent_the_mail_in_clear(tmp_path):
    with SmtpServer(tmp_path, tls=False) as smtp:
        [d] = deliver(notify(mail_channel(smtp)), NOTICE, {"SMTP_PW": smtp.password})
        assert not d.ok and d.attempts == 1 and "STARTTLS" in d.error, d
        assert smtp.messages == [] and smtp.collected.attempts == 0
        plain = MailChannel(name="lan", host="127.0.0.1", port=smtp.port, security="none",
                            **{"from": "f@example.org"}, to=("t@example.org",))
        [d] = deliver(notify(plain), NOTICE, {})
        assert d.ok and len(smtp.collected.wait_for(1)) == 1


def test_missing_secret_is_one_clear_error_not_retried(tmp_path):
    with SmtpServer(tmp_path) as smtp:
        [d] = deliver(notify(mail_channel(smtp)), NOTICE, {})
    assert not d.ok and d.attempts == 1
    assert "environment variable SMTP_PW" in d.error and "not set" in d.error


def test_webhook_500_and_hang_are_retried_and_bounded():
    with HttpServer(status=500) as http:
        [d] = deliver(notify(WebhookChannel(name="h", url_env="URL", token_env="T")), NOTICE,
                      {"URL": http.url + "?secret-in-url", "T": "tok-456"})
        assert not d.ok and d.attempts == 3 and http.collected.attempts == 3
        assert "HTTP 500" in d.error and "tok-456" not in d.error and "secret-in-url" not in d.error
    with HttpServer(hang=True) as http:
        start = time.monotonic()
        out = deliver(notify(WebhookChannel(name="h1", url=http.url), WebhookChannel(name="h2", url=http.url),
                             retries=1, timeout_seconds=0.5), NOTICE, {})
        took = time.monotonic() - start
        assert [d.ok for d in out] == [False, False] and all("timed out" in d.error for d in out), out
        assert all(d.attempts == 2 for d in out)
    # two channels in parallel: about 2 × 0.5 s + 0.05 s, not twice that
    assert took < 1.9, took


@pytest.mark.parametrize("event", ["recovered", "summary"])
def test_other_events_render(event):
    n = Notice(event=event, target="amd64", guest="g", run_id="r2", run_url="http://ui/runs/r2",
               previous_run_id="r1", previous_run_url="http://ui/runs/r1",
               markdown="| target | result |\n|---|---|\n| amd64 | ok |\n", extra={"headline": "1 ok"})
    assert event.upper() in n.subject.upper()
    text = n.text()
    assert ("http://ui/runs/r1" in text) if event == "recovered" else ("| amd64 | ok |" in text)
    assert json.loads(n.payload("json"))["event"] == event


def test_notify_package_does_not_import_dagster():
    import subprocess
    import sys

    code = ("import sys, fruix_dagster.notify; sys.exit(1 if any(m == 'dagster' or m.startswith('dagster.') "
            "for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
