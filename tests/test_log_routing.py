"""Guest-session messages are filed under the step that caused them (issue 15 item 6).

A real Dagster run (the build job's in-process executor: one resource, one guest
session for the whole run) against the real sshd fixture.  The SSH connection is
killed for real while ``kernel_build`` — not the run's first step — follows its
detached ``buildkernel``; the reconnect message must be in that step's event log.
The after-run messages (build-root gc, xcpng after-run policy, logout) belong to
the run, not to a step: they are filed run-level (``step_key`` None).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from tests.conftest import REPO, make_ssh_build
from tests.test_ssh_build import step_runs, wait_for


def _logs(instance, run_id: str, needle: str) -> list:
    return [e for e in instance.all_logs(run_id) if e.dagster_event is None and needle in e.user_message]


SLOW_KERNEL = {"jobs": 2, "min_free_gib": 0.5,
               "make_vars": {"SAMPLE_SLEEP": "4", "SAMPLE_SLEEP_STAGE": "buildkernel"}}


def _drop_during_buildkernel(sb, guest) -> int:
    """Kill the orchestrator's SSH connection (the sshd children serving it) while buildkernel runs."""
    wait_for(lambda: step_runs(sb.build_root, "buildkernel") == 1, 90, "buildkernel to start")
    wait_for(lambda: guest.connection_pids(), 20, "the orchestrator's connection")
    return guest.kill_connections()


def test_reconnect_is_filed_under_the_step_that_reconnected(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest, build=SLOW_KERNEL)
    # a stray harness-layout directory: the build-root gc after the run removes it and says so
    ssh_guest.exec(["mkdir", "-p", "/var/tmp/fruix-native-build/artifact-stray"])
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", sb.run()))
    runner.start()
    try:
        killed = _drop_during_buildkernel(sb, ssh_guest)
    finally:
        runner.join(240)
    assert not runner.is_alive()
    assert killed >= 1
    result = outcome["result"]
    assert result.success
    assert step_runs(sb.build_root, "buildkernel") == 1  # reattached, not restarted
    run_id = result.run_id
    steps = [e.step_key for e in sb.instance.all_logs(run_id)
             if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_START"]
    assert steps[0] == "freebsd_source" and "kernel_build" in steps
    reconnects = _logs(sb.instance, run_id, "reconnected to ssh ")
    assert reconnects, "the reconnect was not logged"
    gc = _logs(sb.instance, run_id, "build-root gc on fruix-amd64: removed")
    print("\n".join(f"{e.step_key}: {e.user_message}" for e in reconnects + gc))
    assert {e.step_key for e in reconnects} == {"kernel_build"}, [
        (e.step_key, e.user_message) for e in reconnects]
    assert [(e.step_key, "artifact-stray" in e.user_message) for e in gc] == [(None, True)], [
        (e.step_key, e.user_message) for e in gc]


def test_the_in_process_cli_build_prints_the_reconnect_on_stderr(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest, build=SLOW_KERNEL)
    env = {**os.environ, "FRUIX_CONFIG": str(sb.settings_path),
           "DAGSTER_HOME": sb.instance.root_directory}
    out_path, err_path = tmp_path / "build.out", tmp_path / "build.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:  # files: a full pipe cannot stall it
        proc = subprocess.Popen([sys.executable, "-m", "fruix_dagster.cli", "build"], env=env, cwd=REPO,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            killed = _drop_during_buildkernel(sb, ssh_guest)
        finally:
            proc.wait(timeout=240)
    stderr = err_path.read_text(errors="replace")
    assert killed >= 1
    assert proc.returncode == 0, stderr[-3000:]
    assert step_runs(sb.build_root, "buildkernel") == 1
    lines = [line for line in stderr.splitlines() if "reconnected to ssh " in line]
    assert lines, stderr[-3000:]
    # the console logger's line names the step: "… - <run id> - kernel_build - reconnected to …"
    assert all(" - kernel_build - reconnected to ssh " in line for line in lines), lines
    assert "reconnected" not in out_path.read_text(errors="replace")
