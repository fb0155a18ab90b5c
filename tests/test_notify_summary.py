"""The summary: a schedule (notify.summary_cron) launching notify_summary, one mail with every
target's last build against the median, size and digest changes; the same text on build_history."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd

from fruix_dagster.defs.history import HISTORY_JOB
from fruix_dagster.defs.notify import SUMMARY_JOB, SUMMARY_SCHEDULE
from fruix_dagster.notify.summary import RunFact, summary_markdown
from tests.conftest import make_local_build
from tests.support.loopback import SmtpServer
from tests.test_notify_sensors import PW_ENV, UI, notify_toml


def test_summary_markdown_from_plain_facts():
    runs = [RunFact("r3" * 8, "amd64", "SUCCESS", 1000.0, 1000.0 + 660),
            RunFact("r2" * 8, "amd64", "FAILURE", 900.0, 910.0),
            RunFact("r1" * 8, "amd64", "SUCCESS", 0.0, 600.0),
            RunFact("a1" * 8, "arm64", "FAILURE", 0.0, 30.0)]
    frame = pd.DataFrame([
        {"target": "amd64", "asset": "kernel_stage", "storage_id": 1, "size_bytes": 10_000_000, "tree_sha256": "a"},
        {"target": "amd64", "asset": "kernel_stage", "storage_id": 5, "size_bytes": 11_000_000, "tree_sha256": "b"},
        {"target": "amd64", "asset": "world_stage", "storage_id": 2, "size_bytes": 50_000_000, "tree_sha256": "w"},
        {"target": "amd64", "asset": "world_stage", "storage_id": 6, "size_bytes": 50_000_000, "tree_sha256": "w"},
    ])
    head, md = summary_markdown(["amd64", "arm64", "riscv"], runs, frame, "http://ui/")
    assert head == "3 targets: 1 ok, 1 failed (arm64), 1 never built"
    rows = md.splitlines()
    assert rows[2].startswith(f"| amd64 | ok ([r3r3r3r3](http://ui/runs/{'r3' * 8})) | 11.0 min vs median 10.0 min of 1 (1.10×)")
    assert "world 50.0 MB (=), kernel 11.0 MB (+10.0%)" in rows[2] and rows[2].endswith("| kernel |")
    assert rows[3].startswith("| arm64 | FAILURE (") and "no earlier successful build" in rows[3]
    assert rows[4] == "| riscv | no build yet | — | — | — |"


def test_summary_schedule_sends_one_mail_and_build_history_shows_the_same(tmp_path, monkeypatch):
    with SmtpServer(tmp_path / "smtp") as smtp:
        monkeypatch.setenv(PW_ENV, smtp.password)
        extra = notify_toml(smtp, [], summary_cron="0 7 * * *", summary_timezone="Europe/Berlin")
        lb = make_local_build(tmp_path, extra=extra)
        first = lb.run()
        assert first.success
        # the kernel is rebuilt with a time stamp: its digest changes, the world's does not
        lb.rewrite(build={"kernel_make_vars": {"SAMPLE_TIMESTAMP": "yes"}}, extra=extra)
        second = lb.run()
        assert second.success

        defs = lb.defs()
        schedule = defs.resolve_schedule_def(SUMMARY_SCHEDULE)
        assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 7 * * *", "Europe/Berlin")
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        at = dt.datetime(2026, 12, 2, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        with dg.build_schedule_context(scheduled_execution_time=at, instance=lb.instance,
                                       repository_def=defs.get_repository_def()) as ctx:
            [request] = schedule.evaluate_tick(ctx).run_requests
        assert request.job_name in (None, SUMMARY_JOB) and schedule.job_name == SUMMARY_JOB
        result = defs.resolve_job_def(SUMMARY_JOB).execute_in_process(instance=lb.instance, tags=request.tags)
        assert result.success
        [mail] = smtp.collected.wait_for(1)
    assert mail["Subject"] == "[fruix] build summary: 1 target: 1 ok"
    body = mail.get_content().replace("\r\n", "\n")
    [row] = [line for line in body.splitlines() if line.startswith("| amd64 |")]
    assert f"({UI}runs/{second.run_id})" in row
    assert "vs median" in row and "of 1 (" in row
    assert row.endswith("| kernel |"), row
    assert "world " in row and "(=)" in row  # the world stage did not change

    history = lb.defs().resolve_job_def(HISTORY_JOB).execute_in_process(instance=lb.instance, partition_key="amd64")
    assert history.success
    mats = lb.instance.fetch_materializations(dg.AssetKey("build_history"), limit=1).records
    shown = mats[0].asset_materialization.metadata["summary"].value
    assert row in shown.splitlines()  # the summary's row, word for word, on build_history


def test_no_summary_cron_no_schedule(tmp_path):
    lb = make_local_build(tmp_path)
    assert [s.name for s in lb.defs().schedules] == ["nightly_build"]
