"""Failure, stuck and recovery messages from real build runs, through Dagster's run-status sensor
machinery, to a real SMTP server and a real HTTP server on loopback."""

from __future__ import annotations

import json

import dagster as dg

from fruix_dagster.defs.notify import FAILURE_SENSOR, RECOVERY_SENSOR
from tests.conftest import make_local_build
from tests.support.loopback import HttpServer, SmtpServer

PW_ENV, TOKEN_ENV = "FRUIX_TEST_SMTP_PW", "FRUIX_TEST_HOOK_TOKEN"
TOKEN = "hook-token-0f9e8d"
UI = "http://ui.example:3000/"
# world_stage (distribution) and kernel_build both fail: two failed steps, one run
FAILING = {"world_make_vars": {"SAMPLE_FAIL": "distribution"}, "kernel_make_vars": {"SAMPLE_FAIL": "buildkernel"}}


def notify_toml(smtp: SmtpServer, hooks: list[str], **notify) -> str:
    opts = {"retries": 1, "backoff_seconds": 0.05, "timeout_seconds": 2.0, **notify}
    out = [f'[notify]\nui_url = "{UI}"'] + [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    out.append(f'[[notify.channel]]\nname = "ops"\nkind = "mail"\nhost = "127.0.0.1"\nport = {smtp.port}\n'
               f'user = "{smtp.user}"\npassword_env = "{PW_ENV}"\nca_file = "{smtp.ca.ca_file}"\n'
               'from = "fruix@example.org"\nto = ["ops@example.org"]')
    for i, url in enumerate(hooks):
        out.append(f'[[notify.channel]]\nname = "hook{i}"\nkind = "webhook"\nurl = "{url}"\n'
                   f'token_env = "{TOKEN_ENV}"\non = ["failure", "stuck", "recovered"]')
    return "\n".join(out) + "\n"


class Ticks:
    """Evaluates the notify sensors as the daemon does, carrying each sensor's cursor."""

    def __init__(self, lb):
        self.lb, self.cursors = lb, {}
        for name in (FAILURE_SENSOR, RECOVERY_SENSOR):
            assert self(name).skip_message.startswith("Initiating")  # the machinery starts "from now"

    def __call__(self, name: str):
        defs = self.lb.defs()
        with dg.build_sensor_context(instance=self.lb.instance, definitions=defs,
                                     cursor=self.cursors.get(name)) as ctx:
            data = defs.resolve_sensor_def(name).evaluate_tick(ctx)
        self.cursors[name] = data.cursor
        return data


def test_failed_run_one_mail_recovery_one_more(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with SmtpServer(tmp_path / "smtp") as smtp, HttpServer() as http:
        monkeypatch.setenv(PW_ENV, smtp.password)
        lb = make_local_build(tmp_path, build=FAILING, extra=notify_toml(smtp, [http.url]))
        ticks = Ticks(lb)
        result = lb.run()
        assert not result.success
        failed = sorted(e.step_key for e in result.all_events if e.is_step_failure)
        assert failed == ["kernel_build", "world_stage"]
        data = ticks(FAILURE_SENSOR)
        assert [r.error for r in data.dagster_run_reactions] == [None]
        [mail] = smtp.collected.wait_for(1)
        ticks(FAILURE_SENSOR)  # a second tick finds nothing new
        assert len(smtp.messages) == 1 and len(http.requests) == 1

        body = mail.get_content()
        run_id = result.run_id
        assert mail["Subject"].startswith("[fruix] FAILED: target amd64 on guest local at ")
        assert f"{UI}runs/{run_id}" in body
        assert "error: unknown type name 'sample_fail_t' (SAMPLE_FAIL=buildkernel)" in body  # the first error lines (sample_src freebsd.sh)
        assert "log:    " + str(lb.build_root) in body
        assert "stage:  >>> " in body
        first, other = ("kernel_build", "world_stage") if "at kernel_build" in mail["Subject"] \
            else ("world_stage", "kernel_build")
        assert f"also failed: {other}" in body
        hook = json.loads(http.requests[0].body)
        assert hook["event"] == "failure" and hook["run_id"] == run_id and hook["step"] == first
        assert any("error: unknown type name 'sample_fail_t'" in line for line in hook["first_errors"])
        assert http.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"

        # the fix lands: the first success sends "recovered", the next success nothing
        lb.rewrite(extra=notify_toml(smtp, [http.url]))
        ok = lb.run()
        assert ok.success
        ticks(FAILURE_SENSOR)
        data = ticks(RECOVERY_SENSOR)
        assert [r.error for r in data.dagster_run_reactions] == [None]
        mails = smtp.collected.wait_for(2)
        assert mails[1]["Subject"] == "[fruix] RECOVERED: target amd64 on guest local"
        text = mails[1].get_content()
        assert f"{UI}runs/{ok.run_id}" in text and f"{UI}runs/{run_id}" in text
        assert lb.run(select=["freebsd_source"]).success
        ticks(RECOVERY_SENSOR)
        assert len(smtp.messages) == 2 and [json.loads(r.body)["event"] for r in http.requests] == \
            ["failure", "recovered"]


def test_stuck_step_sends_stuck(tmp_path, monkeypatch):
    with SmtpServer(tmp_path / "smtp") as smtp:
        monkeypatch.setenv(PW_ENV, smtp.password)
        build = {"silent_timeout_minutes": 0.05, "make_vars": {"SAMPLE_SLEEP": "600"}}
        lb = make_local_build(tmp_path, build=build, extra=notify_toml(smtp, []))
        ticks = Ticks(lb)
        assert not lb.run(select=["freebsd_source", "world_build"]).success
        ticks(FAILURE_SENSOR)
        [mail] = smtp.collected.wait_for(1)
    assert mail["Subject"] == "[fruix] STUCK: target amd64 on guest local at world_build"
    assert "over the silence limit" in mail.get_content()


def test_failing_channels_leave_the_build_alone_and_keep_secrets(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with SmtpServer(tmp_path / "smtp") as smtp, HttpServer(status=500) as h500, HttpServer(hang=True) as hung:
        monkeypatch.setenv(PW_ENV, smtp.password)
        smtp.answer = "451 4.3.0 mailbox busy, try again later"
        lb = make_local_build(tmp_path, build=FAILING, extra=notify_toml(smtp, [h500.url, hung.url]))
        ticks = Ticks(lb)
        result = lb.run()
        assert not result.success
        assert sorted(e.step_key for e in result.all_events if e.is_step_failure) == ["kernel_build", "world_stage"]
        capfd.readouterr()
        data = ticks(FAILURE_SENSOR)
        out = capfd.readouterr()
        logged = out.out + out.err  # the sensor's log (the daemon keeps it with the tick)
        [reaction] = data.dagster_run_reactions
        assert reaction.dagster_run.run_id == result.run_id
        error = reaction.error.to_string()
        assert "not delivered to 3 of 3 channels" in error
        assert "451" in error and "HTTP 500" in error and "timed out" in error
        # every attempt was made, and the failure is logged
        assert smtp.collected.attempts == 2 and h500.collected.attempts == 2 and hung.collected.attempts == 2
        assert "ops (mail): NOT sent after 2 attempts" in logged and "hook0 (webhook): NOT sent" in logged
        # the cursor moved on: the next tick does not send again
        ticks(FAILURE_SENSOR)
        assert smtp.collected.attempts == 2
        run = lb.instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        events = "\n".join(str(e) for e in lb.instance.all_logs(result.run_id))
        for secret in (smtp.password, TOKEN):
            assert secret not in error and secret not in logged and secret not in events
            assert secret not in json.dumps(dict(run.tags))


def test_a_run_dagster_will_retry_gets_no_message_and_no_recovery(tmp_path, monkeypatch):
    with SmtpServer(tmp_path / "smtp") as smtp:
        monkeypatch.setenv(PW_ENV, smtp.password)
        lb = make_local_build(tmp_path, extra=notify_toml(smtp, []))
        ticks = Ticks(lb)
        # fails at once, no make step: kernel_stage needs kernel_build
        retried = lb.run(select=["kernel_stage"])
        assert not retried.success
        # what Dagster's run_retries sets on a run whose worker died
        lb.instance.add_run_tags(retried.run_id, {"dagster/will_retry": "true"})
        final = lb.run(select=["kernel_stage"])
        assert not final.success
        ticks(FAILURE_SENSOR)
        [mail] = smtp.collected.wait_for(1)
        assert final.run_id in mail.get_content() and retried.run_id not in mail.get_content()
        assert "materialize freebsd_source" in mail.get_content()  # the one-line error, whole
