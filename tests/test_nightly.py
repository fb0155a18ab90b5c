"""Nightly builds: schedule, change detection, sensor, timeouts."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dagster as dg
import pytest

from fruix_dagster.defs.records import latest
from fruix_dagster.defs.schedules import SCHEDULE, SENSOR
from tests.conftest import make_local_build, make_ssh_build
from tests.support.sshguest import render_store_layout

STEPS = ("buildworld", "buildkernel", "installworld", "distribution", "installkernel")


def step_counts(root: Path) -> dict[str, int]:
    counts = dict.fromkeys(STEPS, 0)
    for d in (root / "steps").iterdir():
        if d.name.endswith(".current"):
            continue
        name = d.name.rsplit("-", 1)[0]
        if name not in counts:   # srcsync: the build path's sync, not a make step
            continue
        counts[name] += (1 if (d / "started").exists() else 0) + len(list(d.glob("attempt-*/started")))
    return counts


def test_schedule_requests_one_run_per_target_with_guest_tags(tmp_path):
    lb = make_local_build(tmp_path)
    lb.rewrite(guests=[{"name": "g1", "kind": "local"}, {"name": "g2", "kind": "local"}],
               targets=[{"name": "amd64", "guest": "g1"}, {"name": "arm64", "guest": "g2"}],
               extra='[schedule]\ncron = "30 3 * * *"\ntimezone = "Europe/Berlin"\n')
    defs = lb.defs()
    schedule = defs.resolve_schedule_def(SCHEDULE)
    assert schedule.cron_schedule == "30 3 * * *"
    assert schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    at = dt.datetime(2026, 11, 28, 3, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    with dg.build_schedule_context(scheduled_execution_time=at, instance=lb.instance,
                                   repository_def=defs.get_repository_def()) as ctx:
        requests = list(schedule.evaluate_tick(ctx).run_requests)
    assert sorted(r.partition_key for r in requests) == ["amd64", "arm64"]
    tags = {r.partition_key: r.tags for r in requests}
    assert tags["amd64"]["fruix/guest"] == "g1" and tags["arm64"]["fruix/guest"] == "g2"
    assert all(r.tags["fruix/trigger"] == "nightly" for r in requests)
    assert len({r.run_key for r in requests}) == 2


def test_only_what_changed_is_rebuilt(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest)
    root = sb.build_root
    assert sb.run().success
    assert step_counts(root) == dict.fromkeys(STEPS, 1)
    paths = {a: latest(sb.instance, a, "amd64").metadata["path"]
             for a in ("world_stage", "kernel_stage", "headers_slice", "bootloader_slice")}

    # nothing changed: no make step, same data versions
    assert sb.run().success
    assert step_counts(root) == dict.fromkeys(STEPS, 1)
    assert latest(sb.instance, "world_build", "amd64").metadata["step_action"] == "reused"

    # kernconf changed: only the kernel steps
    sb.rewrite(targets=[{"name": "amd64", "guest": "fruix-amd64", "kernconf": "MINIMAL"}])
    assert sb.run().success
    assert step_counts(root) == {**dict.fromkeys(STEPS, 1), "buildkernel": 2, "installkernel": 2}
    assert latest(sb.instance, "kernel_stage", "amd64").metadata["path"] != paths["kernel_stage"]
    assert latest(sb.instance, "world_stage", "amd64").metadata["path"] == paths["world_stage"]

    # a slice spec changed: only that slice is carved again, no make step
    sb.rewrite(targets=[{"name": "amd64", "guest": "fruix-amd64", "kernconf": "MINIMAL"}],
               slices={"headers": ["usr/include/sys/**", "usr/share/mk/**"]})
    assert sb.run().success
    assert step_counts(root) == {**dict.fromkeys(STEPS, 1), "buildkernel": 2, "installkernel": 2}
    assert latest(sb.instance, "headers_slice", "amd64").metadata["path"] != paths["headers_slice"]
    assert latest(sb.instance, "bootloader_slice", "amd64").metadata["path"] == paths["bootloader_slice"]

    # the guest's system now declares another source store: everything is rebuilt
    new_hash = "ab" * 20
    store = ssh_guest.add_source_store(new_hash)
    ssh_guest.set_store_layout(render_store_layout([store]))
    defs = sb.defs()
    sensor = defs.resolve_sensor_def(SENSOR)
    with dg.build_sensor_context(instance=sb.instance, definitions=defs) as ctx:
        result = sensor(ctx)
    for event in result.asset_events:    # stored as the daemon stores a tick's runless events
        sb.instance.report_runless_asset_event(event)
    requests = result.run_requests
    assert [r.partition_key for r in requests] == ["amd64"]
    assert [e.tags["dagster/data_version"] for e in result.asset_events] == [f"store:{new_hash}"]
    assert requests[0].tags["fruix/trigger"] == "source-change"
    assert sb.run().success
    assert latest(sb.instance, "freebsd_source", "amd64").metadata["store_hash"] == new_hash
    assert step_counts(root) == {"buildworld": 2, "buildkernel": 3, "installworld": 2,
                                 "distribution": 2, "installkernel": 3}
    with dg.build_sensor_context(instance=sb.instance, definitions=defs) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)


@pytest.mark.parametrize("limit", ["silence", "wall-clock"])
def test_a_hung_step_is_stopped_within_the_limit(ssh_guest, tmp_path, limit):
    build = {"jobs": 2, "min_free_gib": 0.5, "make_vars": {"SAMPLE_SLEEP": "600"}}
    if limit == "silence":
        build["silent_timeout_minutes"] = 0.1        # 6 s
    else:
        build["timeout_hours"] = 8 / 3600            # 8 s
    sb = make_ssh_build(tmp_path, ssh_guest, build=build)
    result = sb.run()
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert failure.step_key == "world_build"
    message = failure.step_failure_data.error.to_string()
    assert "timed out" in message and "last 40 lines" in message
    assert ">>> stage 4.2: building libraries" in message  # the log tail
    # How long the step had been running, or silent, when the watchdog stopped it
    # (the watchdog's own measurement, in its message), not the wall time of the
    # whole run, which on a loaded machine is mostly setting up Dagster and SSH.
    if limit == "silence":
        seen = int(re.search(r"printed nothing for (\d+) s", message).group(1))
        assert 6 <= seen <= 6 + 10
    else:
        seen = int(re.search(r"ran (\d+) s, over the wall-clock limit", message).group(1))
        assert 8 < seen <= 8 + 10
    leftovers = [p for p in ssh_guest.processes() if "sleep" in p[1] or "make" in p[1]]
    assert leftovers == []


def tick(lb):
    defs = lb.defs()
    at = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=at, instance=lb.instance,
                                   repository_def=defs.get_repository_def()) as ctx:
        return list(defs.resolve_schedule_def(SCHEDULE).evaluate_tick(ctx).run_requests)


def test_nightly_with_nothing_changed_only_rereads_the_source(tmp_path):
    lb = make_local_build(tmp_path)
    [first] = tick(lb)
    assert first.asset_selection is None and first.tags["fruix/changed"] == "yes"
    assert lb.run().success
    before = step_counts(lb.build_root)
    [noop] = tick(lb)
    assert noop.asset_selection == [dg.AssetKey("freebsd_source")]
    assert noop.tags["fruix/changed"] == "no"
    job = lb.defs().resolve_job_def("build_target")
    result = job.execute_in_process(instance=lb.instance, partition_key="amd64", tags=noop.tags,
                                    asset_selection=noop.asset_selection)
    assert result.success
    assert step_counts(lb.build_root) == before
    # the re-read source has the same data version, so nothing downstream becomes stale
    from fruix_dagster.defs.records import recent
    versions = [r.data_version for r in recent(lb.instance, "freebsd_source", "amd64", 2)]
    assert len(versions) == 2 and versions[0] == versions[1] is not None
    lb.rewrite(targets=[{"name": "amd64", "guest": "local", "kernconf": "MINIMAL"}])
    [changed] = tick(lb)
    assert changed.asset_selection is None and changed.tags["fruix/changed"] == "yes"


def test_a_successful_build_run_requests_its_history_refresh(tmp_path):
    from fruix_dagster.defs.schedules import HISTORY_SENSOR

    lb = make_local_build(tmp_path)
    result = lb.run(select=["freebsd_source"])
    assert result.success
    defs = lb.defs()
    sensor = defs.resolve_sensor_def(HISTORY_SENSOR)
    run = lb.instance.get_run_by_id(result.run_id)
    ctx = dg.build_run_status_sensor_context(sensor_name=HISTORY_SENSOR,
                                             dagster_event=result.get_run_success_event(),
                                             dagster_instance=lb.instance, dagster_run=run,
                                             repository_def=defs.get_repository_def())
    request = sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "amd64" and request.run_key == f"history:{result.run_id}"
    assert sensor.job_name == "refresh_history"  # the job every request of this sensor runs
    # a build_history run of an unbuilt target still succeeds (an empty history)
    refresh = defs.resolve_job_def(sensor.job_name).execute_in_process(
        instance=lb.instance, partition_key="amd64", tags=request.tags)
    assert refresh.success
