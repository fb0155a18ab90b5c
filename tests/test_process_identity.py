"""Process identities: the recorded worker is this very process, or provably not."""

from __future__ import annotations

import dataclasses
import subprocess
import time

from fruix_dagster import process_identity as pi


def test_this_process_is_alive_and_round_trips():
    me = pi.current()
    assert pi.ProcessIdentity.from_json(me.to_json()) == me
    assert pi.judge(me).state == "alive"


def test_a_recycled_pid_is_not_the_worker():
    stranger = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    try:
        me = pi.current()
        fake = dataclasses.replace(me, pid=stranger.pid)  # the stranger's number, the worker's start time
        verdict = pi.judge(fake)
        assert verdict.state == "dead" and "another process" in verdict.reason
        assert pi.started_after(stranger.pid, 0.0) is True
    finally:
        stranger.kill()
        stranger.wait()


def test_gone_zombie_and_rebooted_workers_are_dead():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until it has exited but is not yet reaped (a zombie)
        fields_before = pi._stat_fields(child.pid)
        if fields_before[0] == "Z":
            break
    zombie = dataclasses.replace(pi.current(), pid=child.pid, starttime=int(fields_before[19]))
    assert fields_before[0] == "Z"
    verdict = pi.judge(zombie)
    assert verdict.state == "dead" and "exited" in verdict.reason
    child.wait()
    verdict = pi.judge(zombie)
    assert verdict.state == "dead" and "no such process" in verdict.reason
    assert pi.started_after(child.pid, 0.0) is None
    rebooted = dataclasses.replace(pi.current(), boot_id="00000000-0000-0000-0000-000000000000")
    verdict = pi.judge(rebooted)
    assert verdict.state == "dead" and "rebooted" in verdict.reason


def test_what_this_host_cannot_see_is_never_dead(monkeypatch):
    me = dataclasses.replace(pi.current(), machine_id="1" * 32)
    facts = pi.host_facts()
    monkeypatch.setattr(pi, "host_facts", lambda: {**facts, "machine_id": "1" * 32})
    for other in (dataclasses.replace(me, host="build-orchestrator-2", pid=999999999),
                  dataclasses.replace(me, machine_id="0" * 32, pid=999999999),
                  dataclasses.replace(me, pidns=me.pidns + 1, pid=999999999)):
        assert pi.judge(other).state == "unseen", other
