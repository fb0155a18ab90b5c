"""The Dagster UI for real: dagster-webserver and dagster-daemon on loopback, Debian's chromium.

``dagster_ui`` (module scope) starts, from the repository root and with the
repository's ``workspace.yaml``:

* ``dagster-webserver -h 127.0.0.1 -p <free port> -w workspace.yaml``
* ``dagster-daemon run -w workspace.yaml`` (dequeues runs launched from the
  UI, runs schedules)

each in its own session/process group, with a fresh ``DAGSTER_HOME`` holding
a copy of the repository's ``dagster.yaml`` and ``FRUIX_CONFIG`` unset, so
the embedded default (the local guest building ``sample_src`` into
``$DAGSTER_HOME/fruix``) is what the UI shows.  Readiness is HTTP polling of
``/server_info`` and the daemon's heartbeats; at teardown each group gets
SIGTERM, then SIGKILL if anything of it is still alive after the grace period.
Only these two groups are ever signalled.

``browser`` (module scope) is Playwright driving ``/usr/bin/chromium`` with a
fresh user-data directory (Playwright's own browser downloads are never
used).  ``page`` is a new tab per test; on failure it saves a screenshot and
prints the tails of the server logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest
from playwright.sync_api import Error as PlaywrightError

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("FRUIX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
START_TIMEOUT = 120.0
STOP_GRACE = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_group_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in process group ``pgid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..." — comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


@dataclass
class ManagedProcess:
    """A command started in its own session; stopped by signalling that group only."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = REPO
    proc: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid          # start_new_session: the leader's pid is the group id

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_group(self, deadline: float) -> bool:
        while True:
            if self.proc is not None:
                self.proc.poll()     # reap the leader
            if not live_group_members(self.pgid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        if live_group_members(self.pgid):
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self._wait_group(time.monotonic() + STOP_GRACE):
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._wait_group(time.monotonic() + 10.0)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])


@dataclass
class DagsterUI:
    base_url: str
    home: Path
    webserver: ManagedProcess
    daemon: ManagedProcess

    def url(self, path: str) -> str:
        return self.base_url + path

    def instance(self) -> dg.DagsterInstance:
        """A new instance object on the same DAGSTER_HOME as the servers.

        The repository's dagster.yaml reads ``base_dir`` from ``$DAGSTER_HOME``,
        so the variable is set while the instance is created.
        """
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DAGSTER_HOME", str(self.home))
            return dg.DagsterInstance.from_config(str(self.home))

    def logs(self) -> str:
        return (f"--- dagster-webserver ({self.webserver.log_path}) ---\n{self.webserver.log_tail()}\n"
                f"--- dagster-daemon ({self.daemon.log_path}) ---\n{self.daemon.log_tail()}")


def _wait_for_server_info(ui: DagsterUI) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if not ui.webserver.alive():
            raise RuntimeError(f"dagster-webserver exited with status {ui.webserver.proc.returncode}\n{ui.logs()}")
        try:
            with urllib.request.urlopen(ui.url("/server_info"), timeout=5) as resp:
                info = json.loads(resp.read())
                if resp.status == 200 and info.get("dagster_webserver_version"):
                    return info
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"dagster-webserver not answering /server_info after {START_TIMEOUT:.0f}s "
                       f"(last: {last!r})\n{ui.logs()}")


def _wait_for_daemon(ui: DagsterUI) -> None:
    """Until the daemon's run-queue and scheduler loops have sent a heartbeat."""
    wanted = {"QUEUED_RUN_COORDINATOR", "SCHEDULER"}
    deadline = time.monotonic() + START_TIMEOUT
    with ui.instance() as instance:
        while True:
            if not ui.daemon.alive():
                raise RuntimeError(f"dagster-daemon exited with status {ui.daemon.proc.returncode}\n{ui.logs()}")
            beats = instance.get_daemon_heartbeats()
            if wanted <= set(beats):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster-daemon: no heartbeat from {sorted(wanted - set(beats))} after "
                                   f"{START_TIMEOUT:.0f}s\n{ui.logs()}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ui_artifacts(tmp_path_factory) -> Path:
    """Where the screenshots go (graph.png, asset.png, failure-*.png)."""
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory) -> Iterator[DagsterUI]:
    tmp = tmp_path_factory.mktemp("dagster-ui")
    home = tmp / "dagster-home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != "FRUIX_CONFIG" and not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    port = free_port()
    ui = DagsterUI(
        base_url=f"http://127.0.0.1:{port}",
        home=home,
        webserver=ManagedProcess("dagster-webserver",
                                 [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                  "-w", "workspace.yaml"], env, tmp / "webserver.log"),
        daemon=ManagedProcess("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                              env, tmp / "daemon.log"),
    )
    try:
        # create the SQLite storages once, here: two fresh processes migrating
        # the same new files at once race ("table alembic_version already exists")
        ui.instance().dispose()
        ui.webserver.start()
        info = _wait_for_server_info(ui)
        assert info["dagster_version"] == dg.__version__, info
        ui.daemon.start()
        _wait_for_daemon(ui)
        yield ui
    finally:
        ui.daemon.stop()
        ui.webserver.stop()
    leftovers = live_group_members(ui.webserver.pgid) + live_group_members(ui.daemon.pgid)
    assert not leftovers, f"processes left after stopping the servers: {leftovers}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium; make test does)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000}, locale="en-US", timezone_id="UTC")
        try:
            yield context
        finally:
            context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def page(request, browser, dagster_ui, ui_artifacts):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    tab = browser.new_page()
    # the first page load of a new instance shows a "Join the Dagster community" modal
    # (and the mouse must not stay where "Skip" was: hovering a graph node adds highlighted edges)
    def skip_community_modal() -> None:
        tab.get_by_role("button", name="Skip", exact=True).click()
        tab.mouse.move(0, 0)

    tab.add_locator_handler(tab.get_by_text("Join the Dagster community"), skip_community_modal)
    yield tab
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        shot = ui_artifacts / f"failure-{request.node.name}.png"
        try:
            tab.screenshot(path=str(shot))
        except PlaywrightError as exc:  # diagnostics only: the test has failed already
            shot = f"(no screenshot: {exc})"
        print(f"\nscreenshot: {shot}\nurl: {tab.url}\n{dagster_ui.logs()}", file=sys.stderr)
    tab.close()
