"""Guest-session messages are filed under the step that caused them (issue 15 item 6).

A real Dagster run (the build job's in-process executor: one resource, one guest
session for the whole run) against the real sshd fixture.  The SSH connection is
killed for real while ``kernel_build`` — not the run's first step — follows its
detached ``buildkernel``; the reconnect message must be in that step's event log.
The after-run messages (build-root gc, xcpng after-run policy, logout) belong to
the run, not to a step: they are filed run-level (``step_key`` None).
"""

from __future__ import annotations

import threading

from tests.conftest import make_ssh_build
from tests.test_ssh_build import step_runs, wait_for


def _logs(instance, run_id: str, needle: str) -> list:
    return [e for e in instance.all_logs(run_id) if e.dagster_event is None and needle in e.user_message]


def test_reconnect_is_filed_under_the_step_that_reconnected(ssh_guest, tmp_path):
    sb = make_ssh_build(tmp_path, ssh_guest, build={
        "jobs": 2, "min_free_gib": 0.5,
        "make_vars": {"SAMPLE_SLEEP": "4", "SAMPLE_SLEEP_STAGE": "buildkernel"}})
    # a stray harness-layout directory: the build-root gc after the run removes it and says so
    ssh_guest.exec(["mkdir", "-p", "/var/tmp/fruix-native-build/artifact-stray"])
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", sb.run()))
    runner.start()
    try:
        wait_for(lambda: step_runs(sb.build_root, "buildkernel") == 1, 90, "buildkernel to start")
        wait_for(lambda: ssh_guest.connection_pids(), 20, "the orchestrator's connection")
        killed = ssh_guest.kill_connections()
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
