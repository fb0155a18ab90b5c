"""Light automation through the real daemon: a source change shows as stale before any run.

The daemon's ``source_change_sensor`` observes the guest's source cheaply
(``guest_source``; no tree streamed or hashed).  After an edit in the source
tree the next tick records a new data version, and the UI's GraphQL API
reports ``freebsd_source`` and the build and stage assets STALE while no run
has started (``[sensor] build = false``).  With ``build = true`` the
same tick starts one run for the target, which makes everything FRESH again,
and later ticks start nothing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import dagster as dg

from fruix_dagster.defs.observation import GUEST_SOURCE, SENSOR, last_observed
from fruix_dagster.defs.records import latest
from tests.conftest import LocalBuild, copy_sample
from tests.support.dagster_servers import dagster_servers

STALENESS = """
query Nodes($partition: String) {
  assetNodes(assetKeys: [{path: ["freebsd_source"]}, {path: ["world_build"]}, {path: ["kernel_build"]},
                         {path: ["world_stage"]}, {path: ["kernel_stage"]}]) {
    assetKey { path }
    staleStatus(partition: $partition)
    staleCauses(partition: $partition) { key { path } category reason dependency { path } }
  }
}"""


BUILT = ("freebsd_source", "world_build", "kernel_build", "world_stage", "kernel_stage")


def toml(build: bool) -> str:
    return f"""
[schedule]
enabled = false
[sensor]
enabled = true
interval_seconds = 10
build = {'true' if build else 'false'}
"""


def staleness(servers) -> dict[str, dict]:
    data = servers.graphql(STALENESS, {"partition": "amd64"})["assetNodes"]
    return {n["assetKey"]["path"][0]: n for n in data}


def poll(what: str, fn, servers, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s\n{servers.logs()}"
        time.sleep(1)


@contextmanager
def built(tmp_path, monkeypatch, *, build: bool):
    """Servers and daemon up, the source observed once, then one full build of amd64."""
    home = tmp_path / "dagster-home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    src = copy_sample(tmp_path / "src", read_only=False)
    lb = LocalBuild(tmp_path, tmp_path / "fruix.toml", None)  # type: ignore[arg-type]
    lb.rewrite(extra=toml(build=build))
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    with dagster_servers(home, lb.settings_path, tmp_path) as servers:
        instance = dg.DagsterInstance.from_config(str(home))
        lb.instance = instance
        servers.wait_ready(instance)
        # the sensor's first tick observes the source before the first build reads it
        read_version = poll("the first observation", lambda: last_observed(instance, "amd64"), servers)
        assert read_version.startswith("listing:"), read_version
        assert lb.run().success
        assert latest(instance, "freebsd_source", "amd64").metadata["source_observation"] == read_version
        assert {n: s["staleStatus"] for n, s in staleness(servers).items()} == dict.fromkeys(BUILT, "FRESH")
        try:
            yield servers, instance, src, read_version
        finally:
            instance.dispose()


def edit(src) -> None:
    with open(src / "Makefile", "a") as f:
        f.write("# edited\n")


def test_a_source_change_marks_the_build_assets_stale_before_any_run(tmp_path, monkeypatch):
    with built(tmp_path, monkeypatch, build=False) as (servers, instance, src, read_version):
        edit(src)   # the next tick observes it; [sensor] build = false: no run starts
        changed = poll("a new guest_source observation",
                       lambda: (v := last_observed(instance, "amd64")) != read_version and v, servers)
        assert changed.startswith("listing:"), changed
        nodes = poll("the build assets STALE", lambda: (n := staleness(servers)) and all(
            s["staleStatus"] == "STALE" for s in n.values()) and n, servers, timeout=60)
        for name in BUILT:
            causes = nodes[name]["staleCauses"]
            assert any(c["category"] == "DATA" and c["key"]["path"] == [GUEST_SOURCE]
                       and "new data version" in c["reason"] for c in causes), (name, causes)
        assert len(build_runs(instance)) == 1, [r.job_name for r in instance.get_runs()]


def test_a_source_change_starts_one_run_for_its_target(tmp_path, monkeypatch):
    with built(tmp_path, monkeypatch, build=True) as (servers, instance, src, read_version):
        [first] = build_runs(instance)
        # nothing changed: the sensor's ticks after the build request nothing
        poll("two sensor ticks after the build", lambda: len(
            [t for t in sensor_ticks(instance) if t.timestamp > first_end(instance, first)]) >= 2,
            servers, timeout=120)
        assert [r.run_id for r in build_runs(instance)] == [first.run_id]
        edit(src)
        run = poll("a source-change run", lambda: next(
            (r for r in build_runs(instance) if r.run_id != first.run_id), None), servers)
        assert run.tags.get("fruix/guest") == "local" and run.tags.get("dagster/partition") == "amd64"
        assert run.tags.get("fruix/trigger") == "source-change" and run.job_name == "build_target"
        done = poll("the source-change run to finish", lambda: (
            r := instance.get_run_by_id(run.run_id)) and r.is_finished and r, servers, timeout=300)
        assert done.status == dg.DagsterRunStatus.SUCCESS, servers.logs()
        poll("everything FRESH again", lambda: all(
            s["staleStatus"] == "FRESH" for s in staleness(servers).values()), servers, timeout=60)
        # the run read the edited tree: what it recorded is the current observation
        changed = last_observed(instance, "amd64")
        assert changed != read_version
        assert latest(instance, "freebsd_source", "amd64").metadata["source_observation"] == changed
        # two more automation ticks after the run: what the run read is what is observed: no run
        end = first_end(instance, done)
        poll("two sensor ticks after the run", lambda: len(
            [t for t in sensor_ticks(instance) if t.timestamp > end]) >= 2, servers, timeout=120)
        # (refresh_history runs after each successful build: host-only, not a build)
        assert len(build_runs(instance)) == 2, [(r.job_name, r.tags) for r in instance.get_runs()]


def build_runs(instance) -> list:
    return [r for r in instance.get_runs() if r.job_name != "refresh_history"]


def first_end(instance, run) -> float:
    end = instance.get_run_record_by_id(run.run_id).end_time
    assert end is not None
    return end


def sensor_ticks(instance):
    state = next((s for s in instance.all_instigator_state() if s.name == SENSOR), None)
    if state is None:
        return []
    return instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=20)
