"""dagster-webserver and dagster-daemon for one test: a DAGSTER_HOME, a settings file, GraphQL.

The servers run from the repository root with its ``workspace.yaml`` (code
location ``fruix_dagster``), a copy of its ``dagster.yaml`` (so the
``GuestRunCoordinator`` and the per-guest queue limit are the real ones) and
``FRUIX_CONFIG`` naming the test's settings file.  Each is started in its own
process group and only those groups are signalled (tests/ui/conftest.py's
``ManagedProcess``).  :meth:`Servers.graphql` posts to ``/graphql`` exactly as
the UI does.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import dagster as dg

from tests.ui.conftest import BIN, REPO, ManagedProcess, free_port, live_group_members

LOCATION = "fruix_dagster"
REPOSITORY = "__repository__"
START_TIMEOUT = 300.0


@dataclass
class Servers:
    base_url: str
    home: Path
    webserver: ManagedProcess
    daemon: ManagedProcess

    def logs(self) -> str:
        return (f"--- dagster-webserver ---\n{self.webserver.log_tail(60)}\n"
                f"--- dagster-daemon ---\n{self.daemon.log_tail(60)}")

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 120) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(self.base_url + "/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        assert "errors" not in out, f"{out['errors']}\n{self.logs()}"
        return out["data"]

    def wait_ready(self, instance: dg.DagsterInstance) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        wanted = {"QUEUED_RUN_COORDINATOR", "SCHEDULER", "BACKFILL"} if self.daemon.proc is not None else set()
        while True:
            assert self.webserver.alive() and (self.daemon.alive() or not wanted), self.logs()
            try:
                with urllib.request.urlopen(self.base_url + "/server_info", timeout=5) as resp:
                    served = resp.status == 200
            except (urllib.error.URLError, OSError):
                served = False
            beats = set(instance.get_daemon_heartbeats())
            if served and wanted <= beats:
                loaded = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries "
                                      "{ name loadStatus } } } }")["workspaceOrError"]["locationEntries"]
                if [(e["name"], e["loadStatus"]) for e in loaded] == [(LOCATION, "LOADED")]:
                    return
            assert time.monotonic() < deadline, f"servers not ready after {START_TIMEOUT:.0f}s\n{self.logs()}"
            time.sleep(0.5)


@contextmanager
def dagster_servers(home: Path, settings_path: Path, log_dir: Path, *, daemon: bool = True) -> Iterator[Servers]:
    """Start both servers on ``home`` and ``settings_path``; ``$DAGSTER_HOME`` must be ``home``
    (the repository's dagster.yaml reads its storage directory from it)."""
    assert os.environ.get("DAGSTER_HOME") == str(home)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    # create the SQLite storages here: two fresh processes migrating the same new files race
    dg.DagsterInstance.from_config(str(home)).dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(DAGSTER_HOME=str(home), FRUIX_CONFIG=str(settings_path),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    port = free_port()
    servers = Servers(
        base_url=f"http://127.0.0.1:{port}", home=home,
        webserver=ManagedProcess("dagster-webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1",
                                                       "-p", str(port), "-w", "workspace.yaml"],
                                 env, log_dir / "webserver.log"),
        daemon=ManagedProcess("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                              env, log_dir / "daemon.log"),
    )
    try:
        servers.webserver.start()
        if daemon:
            servers.daemon.start()
        yield servers
    finally:
        servers.daemon.stop()
        servers.webserver.stop()
    leftovers = [pid for proc in (servers.webserver, servers.daemon) if proc.proc is not None
                 for pid in live_group_members(proc.pgid)]
    assert not leftovers, f"processes left after stopping the servers: {leftovers}"


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}"""

RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { locationOrLoadError { __typename } }
    ... on PythonError { message }
  }
}"""

START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message stack }
  }
}"""


def materialize_like_the_ui(servers: Servers, assets: list[str], partition: str) -> str:
    """What the asset graph's *Materialize* button sends: the implicit asset job, the partition tag only
    (no check selection: the selected assets' checks come with them, as the UI selects them)."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                     "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [a]} for a in assets]},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "runConfigData": {},
    }
    res = servers.graphql(LAUNCH_RUN, {"params": params})["launchPipelineExecution"]
    assert res["__typename"] == "LaunchRunSuccess", f"{res}\n{servers.logs()}"
    return res["run"]["runId"]


def backfill_assets(servers: Servers, assets: list[str], partitions: list[str],
                    tags: dict[str, str] | None = None) -> str:
    """The UI's asset backfill (Materialize → partitions → Launch backfill)."""
    params = {"assetSelection": [{"path": [a]} for a in assets], "partitionNames": partitions,
              "fromFailure": False, "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    res = servers.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert res["__typename"] == "LaunchBackfillSuccess", f"{res}\n{servers.logs()}"
    return res["backfillId"]


def start_schedule(servers: Servers, name: str) -> None:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": name}
    res = servers.graphql(START_SCHEDULE, {"selector": selector})["startSchedule"]
    assert res["__typename"] == "ScheduleStateResult", f"{res}\n{servers.logs()}"


def reload_location(servers: Servers) -> None:
    """The UI's *Reload* of the code location (definitions built from the settings file again)."""
    res = servers.graphql(RELOAD, {"name": LOCATION})["reloadRepositoryLocation"]
    assert res["__typename"] == "WorkspaceLocationEntry", f"{res}\n{servers.logs()}"
    assert res["locationOrLoadError"]["__typename"] == "RepositoryLocation", f"{res}\n{servers.logs()}"
