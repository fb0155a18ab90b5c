"""One run per guest from every launch path, through the real webserver, daemon and run queue.

Two targets (``generic``, ``minimal``: kernel configurations GENERIC and
MINIMAL of the sample tree) live on one local guest.  Runs are launched

1. as the asset graph's *Materialize* button launches them: the implicit
   asset job ``__ASSET_JOB`` with only the ``dagster/partition`` tag (GraphQL
   ``launchPipelineExecution``, as the UI sends it);
2. as an asset backfill over both partitions (``launchPartitionBackfill``;
   the tag ``fruix/force=true`` so the kernel is really rebuilt);
3. by the ``nightly_build`` schedule, ticked by the daemon (cron every minute).

While each batch runs, the instance is polled: never more than one run of the
guest is in progress, and a second run waits QUEUED while the first runs.
Afterwards every run succeeded and carries ``fruix/guest=local`` (written by
``GuestRunCoordinator``: the launches did not set it), the runs' start/end
times do not overlap, and the guest's step records (``started``/``finished``
of every step directory, including archived attempts) do not overlap either.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from fruix_dagster.defs.coordinator import GUEST_TAG, TARGET_TAG, guest_for_run
from fruix_dagster.errors import ConfigError
from fruix_dagster.settings import load_settings
from tests.conftest import LocalBuild, copy_sample
from tests.support.dagster_servers import (
    backfill_assets,
    dagster_servers,
    materialize_like_the_ui,
    start_schedule,
)

TARGETS = [{"name": "generic", "guest": "local", "kernconf": "GENERIC"},
           {"name": "minimal", "guest": "local", "kernconf": "MINIMAL"}]
IN_PROGRESS = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}
DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
PHASE_TIMEOUT = 1500.0
RESET_SCHEDULE = """
mutation Reset($selector: ScheduleSelector!) {
  resetSchedule(scheduleSelector: $selector) { __typename }
}"""


def step_records(build_root: Path) -> list[tuple[float, float, str]]:
    """(started, finished, step dir) of every step the guest ran, archived attempts included."""
    out = []
    for started in (build_root / "steps").glob("**/started"):
        d = started.parent
        out.append((float(started.read_text()), float((d / "finished").read_text()), str(d.relative_to(build_root))))
    return sorted(out)


def watch(instance: dg.DagsterInstance, select, *, at_least: int, servers, what: str) -> list[dg.DagsterRun]:
    """Poll until ``at_least`` runs matching ``select`` exist and all are done.

    Fails at once if two runs of one guest are ever in progress together; also
    fails unless some run was seen QUEUED while another one of its guest ran.
    """
    deadline = time.monotonic() + PHASE_TIMEOUT
    saw_waiting = False
    while True:
        runs = [r for r in instance.get_runs() if select(r)]
        busy = [r for r in runs if r.status in IN_PROGRESS]
        by_guest: dict[str, list[str]] = {}
        for r in busy:
            by_guest.setdefault(r.tags.get(GUEST_TAG, "?"), []).append(r.run_id)
        assert all(len(v) == 1 for v in by_guest.values()), f"{what}: two runs of one guest at once: {by_guest}"
        if busy and any(r.status == dg.DagsterRunStatus.QUEUED for r in runs):
            saw_waiting = True
        if len(runs) >= at_least and all(r.status in DONE for r in runs):
            break
        assert time.monotonic() < deadline, (
            f"{what}: not done after {PHASE_TIMEOUT:.0f}s: {[(r.run_id[:8], r.status.value) for r in runs]}\n"
            f"{servers.logs()}")
        time.sleep(0.3)
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * len(runs), (
        f"{what}: {[(r.run_id[:8], r.status.value) for r in runs]}\n{servers.logs()}")
    assert saw_waiting, f"{what}: no run ever waited in the queue"
    for r in runs:
        assert r.tags.get(GUEST_TAG) == "local", (what, r.tags)
        assert r.tags.get(TARGET_TAG) == r.tags.get("dagster/partition"), (what, r.tags)
    return runs


def assert_serial(instance: dg.DagsterInstance, runs: list[dg.DagsterRun], build_root: Path) -> None:
    records = sorted((instance.get_run_record_by_id(r.run_id) for r in runs), key=lambda rec: rec.start_time)
    for a, b in zip(records, records[1:]):
        assert b.start_time >= a.end_time, f"run {b.dagster_run.run_id} started before {a.dagster_run.run_id} ended"
    steps = step_records(build_root)
    for (s1, f1, n1), (s2, _f2, n2) in zip(steps, steps[1:]):
        assert s2 >= f1, f"step {n2} started before {n1} finished"


def test_one_run_per_guest_from_the_ui_a_backfill_and_the_schedule(tmp_path, monkeypatch):
    home = tmp_path / "dagster-home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    copy_sample(tmp_path / "src")
    lb = LocalBuild(tmp_path, tmp_path / "fruix.toml", None)  # type: ignore[arg-type]
    lb.rewrite(targets=TARGETS, extra="""
        [schedule]
        cron = "* * * * *"
        timezone = "UTC"
        enabled = false
        [sensor]
        enabled = false
        """)
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    with dagster_servers(home, lb.settings_path, tmp_path) as servers:
        instance = dg.DagsterInstance.from_config(str(home))
        lb.instance = instance
        for target in ("generic", "minimal"):   # what the kernel builds need, in-process
            assert lb.run(target, select=["freebsd_source", "world_build"]).success
        servers.wait_ready(instance)
        steps_before = len(step_records(lb.build_root))

        # 1. the UI's Materialize button, one partition each
        ids = {materialize_like_the_ui(servers, ["kernel_build"], t) for t in ("generic", "minimal")}
        ui_runs = watch(instance, lambda r: r.run_id in ids, at_least=2, servers=servers, what="UI")
        assert len(step_records(lb.build_root)) == steps_before + 2   # buildkernel GENERIC and MINIMAL

        # 2. an asset backfill over both partitions
        backfill = backfill_assets(servers, ["kernel_build"], ["generic", "minimal"], {"fruix/force": "true"})
        bf_runs = watch(instance, lambda r: r.tags.get("dagster/backfill") == backfill, at_least=2,
                        servers=servers, what="backfill")
        assert len(step_records(lb.build_root)) == steps_before + 4   # both rebuilt (forced)

        # 3. the schedule, ticked by the daemon at the next minute
        start_schedule(servers, "nightly_build")
        deadline = time.monotonic() + 180
        while not [r for r in instance.get_runs() if r.tags.get("dagster/schedule_name") == "nightly_build"]:
            assert time.monotonic() < deadline, f"no scheduled run after 180 s\n{servers.logs()}"
            time.sleep(0.5)
        servers.graphql(RESET_SCHEDULE, {"selector": {"repositoryLocationName": "fruix_dagster",
                                                      "repositoryName": "__repository__",
                                                      "scheduleName": "nightly_build"}})
        sched_runs = watch(instance, lambda r: r.tags.get("dagster/schedule_name") == "nightly_build",
                           at_least=2, servers=servers, what="schedule")
        assert {r.tags["dagster/partition"] for r in sched_runs} == {"generic", "minimal"}
        assert len(step_records(lb.build_root)) > steps_before + 4    # installworld, installkernel, …

        assert_serial(instance, ui_runs + bf_runs + sched_runs, lb.build_root)
        for key in ("kernel_stage", "headers_slice"):
            for target in ("generic", "minimal"):
                mats = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[target]), limit=1)
                assert mats.records, (key, target)
        instance.dispose()


# --------------------------------------------------------------------------- the tag, run by run


def settings_two_guests(tmp_path: Path):
    p = tmp_path / "fruix.toml"
    p.write_text("""
[[guest]]
name = "g1"
kind = "local"
[[guest]]
name = "g2"
kind = "local"
[[target]]
name = "a"
guest = "g1"
[[target]]
name = "b"
guest = "g1"
[[target]]
name = "c"
guest = "g2"
""")
    return load_settings(p)


def test_guest_tag_for_each_kind_of_run(tmp_path):
    s = settings_two_guests(tmp_path)

    def tag(job="__ASSET_JOB", tags=None, keys=None, config=None):
        return guest_for_run(s, job_name=job, tags=tags or {}, asset_keys=keys, run_config=config or {})

    # UI Materialize / backfill / automation: implicit asset job, partition tag only
    assert tag(tags={"dagster/partition": "c"}, keys=frozenset({"kernel_build"})) == \
        {GUEST_TAG: "g2", TARGET_TAG: "c"}
    # the whole job, e.g. `dagster job launch -j build_target` or a re-execution
    assert tag(job="build_target", tags={"dagster/partition": "a"}) == {GUEST_TAG: "g1", TARGET_TAG: "a"}
    # a partition range on one guest
    assert tag(tags={"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "b"},
               keys=frozenset({"world_build"})) == {GUEST_TAG: "g1"}
    # rebuild_check names its target in op config
    assert tag(job="rebuild_check", config={"ops": {"rebuild_twice": {"config": {"target": "c"}}}}) == \
        {GUEST_TAG: "g2", TARGET_TAG: "c"}
    # no guest needed: slices carved from the store, the history
    assert tag(tags={"dagster/partition": "a"}, keys=frozenset({"headers_slice", "bootloader_slice"})) == {}
    assert tag(job="refresh_history", tags={"dagster/partition": "a"}) == {}
    # bad input: one clear error
    with pytest.raises(ConfigError, match="partition 'zz' is not a target"):
        tag(tags={"dagster/partition": "zz"}, keys=frozenset({"world_build"}))
    with pytest.raises(ConfigError, match="one run builds on one guest"):
        tag(tags={"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"},
            keys=frozenset({"world_build"}))
