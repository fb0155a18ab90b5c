"""The detached step protocol on the local transport (the SSH transport reuses it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fruix_dagster.errors import FenceError, GuestError
from fruix_dagster.guest.detached import DetachedSteps, StepSpec
from fruix_dagster.guest.fence import check_build_root, remove_tree
from fruix_dagster.guest.local import LocalTransport


def spec(name: str, script: str, fp: str = "a" * 64, cwd: str = "/") -> StepSpec:
    return StepSpec(name, ("sh", "-c", script), cwd, fp)


def follow(ds: DetachedSteps, step_dir: str, timeout: float = 30) -> tuple[int | None, bytes]:
    data, off = b"", 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, chunk = ds.poll(step_dir, off)
        data += chunk
        off += len(chunk)
        if status.finished and off >= status.log_size:
            return status.exit_status, data
        time.sleep(0.05)
    raise AssertionError("step did not finish")


@pytest.fixture
def steps(tmp_path) -> DetachedSteps:
    return DetachedSteps(LocalTransport(), str(tmp_path / "root"))


def test_runs_detached_and_records_everything(steps, tmp_path):
    launch = steps.launch(spec("s", "echo out; echo err >&2; echo '>>> stage 1: x'; exit 7", cwd=str(tmp_path)))
    assert launch.action == "started"
    rc, log = follow(steps, launch.step_dir)
    assert rc == 7
    assert b"out\n" in log and b"err\n" in log
    d = Path(launch.step_dir)
    assert (d / "command").read_text().strip() == "sh -c 'echo out; echo err >&2; echo '\"'\"'>>> stage 1: x'\"'\"'; exit 7'"
    assert (d / "cwd").read_text().strip() == str(tmp_path)
    assert (d / "status").read_text().strip() == "7"
    assert float((d / "finished").read_text()) >= float((d / "started").read_text())
    assert steps.read_markers(launch.step_dir)[0][1] == ">>> stage 1: x"
    assert not (Path(steps.build_root) / ".lock").exists()


def test_attach_while_running_then_reuse_then_force(steps):
    s = spec("s", "sleep 1; echo done")
    first = steps.launch(s)
    second = steps.launch(s)
    assert (first.action, second.action) == ("started", "attached")
    assert follow(steps, first.step_dir)[0] == 0
    assert steps.reusable(s)
    assert steps.launch(s).action == "reused"
    forced = steps.launch(s, force=True)
    assert forced.action == "started"
    follow(steps, forced.step_dir)
    assert (Path(forced.step_dir) / "attempt-1" / "log").read_bytes() == b"done\n"


def test_failed_step_runs_anew_and_keeps_every_log(steps):
    marker = Path(steps.build_root).parent / "flag"
    s = spec("s", f'if [ -e {marker} ]; then echo second; else echo first; exit 1; fi')
    assert follow(steps, steps.launch(s).step_dir)[0] == 1
    marker.write_text("")
    launch = steps.launch(s)
    assert launch.action == "started"
    assert follow(steps, launch.step_dir) == (0, b"second\n")
    assert (Path(launch.step_dir) / "attempt-1" / "log").read_bytes() == b"first\n"
    assert (Path(launch.step_dir) / "attempt-1" / "status").read_text().strip() == "1"


def test_an_older_success_is_not_reused_after_another_fingerprint_ran(steps):
    a, b = spec("s", "echo a", fp="a" * 64), spec("s", "echo b", fp="b" * 64)
    follow(steps, steps.launch(a).step_dir)
    follow(steps, steps.launch(b).step_dir)
    assert not steps.reusable(a)
    assert steps.launch(a).action == "started"


def test_build_root_lock_refuses_a_second_step(steps):
    running = steps.launch(spec("one", "sleep 3"))
    with pytest.raises(GuestError, match="is in use"):
        steps.launch(spec("two", "echo hi"))
    follow(steps, running.step_dir)
    assert steps.launch(spec("two", "echo hi")).action == "started"


def test_stale_lock_is_taken_over_with_a_warning(steps):
    lock = Path(steps.build_root) / ".lock"
    lock.mkdir(parents=True)
    (lock / "pid").write_text("999999\n")
    (lock / "step").write_text("/gone\n")
    launch = steps.launch(spec("s", "echo ok"))
    assert launch.action == "started"
    assert launch.warnings and "stale lock" in launch.warnings[0]
    assert follow(steps, launch.step_dir)[0] == 0


def test_kill_stops_the_whole_tree(steps):
    launch = steps.launch(spec("s", "sleep 300 & sleep 300; wait"))
    time.sleep(0.5)
    pid = int((Path(launch.step_dir) / "pid").read_text())
    steps.kill(launch.step_dir)
    status, _ = steps.poll(launch.step_dir, 0)
    assert status.state == "vanished"
    assert not _running(pid)
    leftovers = os.popen("ps -eo stat=,args= | grep 'sleep 300' | grep -v grep").read().splitlines()
    assert [line for line in leftovers if not line.startswith("Z")] == []


def _running(pid: int) -> bool:
    """Alive and not a zombie (this sandbox's pid 1 may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("root", ["/", "relative/dir", "/var", "/var/tmp/../etc", "/var//tmp", "/a/./b"])
def test_unsafe_build_roots_are_refused(root):
    with pytest.raises(FenceError):
        check_build_root(root)


def test_remove_tree_is_fenced(tmp_path):
    t = LocalTransport()
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (root / "inside" / "f").write_text("x")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("keep")
    (root / "link").symlink_to(precious)
    (root / "via").symlink_to(tmp_path)
    with pytest.raises(FenceError):
        remove_tree(t, str(root), str(tmp_path / "precious"))
    with pytest.raises(FenceError):
        remove_tree(t, str(root), f"{root}/../precious")
    with pytest.raises(FenceError, match="symlink"):
        remove_tree(t, str(root), str(root / "link"))
    with pytest.raises(FenceError, match="outside"):
        remove_tree(t, str(root), str(root / "via" / "precious"))
    assert (precious / "keep").read_text() == "keep"
    remove_tree(t, str(root), str(root / "inside"))
    assert not (root / "inside").exists()
    linked_root = tmp_path / "linked-root"
    linked_root.symlink_to(precious)
    with pytest.raises(FenceError, match="itself a symlink"):
        remove_tree(t, str(linked_root), str(linked_root / "keep"))
    assert (precious / "keep").read_text() == "keep"


def test_stream_follows_a_running_step_to_its_end_in_one_command(steps, tmp_path):
    # prints in bursts with pauses: frames with bytes, frames without, then the end
    script = "i=0; while [ $i -lt 6 ]; do printf 'line %s\\n' $i; i=$((i + 1)); sleep 0.3; done; exit 3"
    launch = steps.launch(spec("s", script, cwd=str(tmp_path)))
    got, statuses = b"", []
    for status, data in steps.stream(launch.step_dir, 0, poll_s=0.2):
        got += data
        statuses.append(status)
    last = statuses[-1]
    assert (last.state, last.exit_status, last.log_size) == ("exited", 3, len(got))
    assert got == b"".join(b"line %d\n" % i for i in range(6))
    assert any(s.state == "running" for s in statuses)
    assert last.elapsed is not None and last.elapsed >= 1
    # resuming at any byte gives exactly the rest (what a reconnect does)
    for off in (1, 7, len(got) - 1, len(got)):
        rest = b"".join(d for _s, d in steps.stream(launch.step_dir, off, follow=False))
        assert rest == got[off:], off


def test_stream_ends_at_its_bound_and_a_new_one_resumes_at_the_offset(steps, tmp_path):
    launch = steps.launch(spec("s", "echo a; sleep 2.5; echo b", cwd=str(tmp_path)))
    t0 = time.monotonic()
    first = list(steps.stream(launch.step_dir, 0, poll_s=0.2, bound_s=1))
    assert time.monotonic() - t0 < 2.4
    assert not first[-1][0].finished
    off = sum(len(d) for _s, d in first)
    assert b"".join(d for _s, d in first) == b"a\n"[:off]
    rest = list(steps.stream(launch.step_dir, off, poll_s=0.2))
    assert rest[-1][0].finished and rest[-1][0].exit_status == 0
    assert b"".join(d for _s, d in first + rest) == b"a\nb\n"


def test_stream_of_a_big_finished_log_comes_in_big_exact_pieces(steps, tmp_path):
    from fruix_dagster.guest.step_log import STREAM_CHUNK
    launch = steps.launch(spec("s", "true", cwd=str(tmp_path)))
    follow(steps, launch.step_dir)
    log = Path(launch.log_path)
    body = b"".join(b"%07d cc -c x.c\n" % i for i in range(1_500_000))   # ~24 MB
    log.write_bytes(body)
    pieces = [d for _s, d in steps.stream(launch.step_dir, 5, follow=False)]
    assert b"".join(pieces) == body[5:]
    assert max(map(len, pieces)) <= STREAM_CHUNK


def _marker_step(steps, tmp_path):
    script = "echo '>>> stage 1: a'; sleep 0.3; echo '>>> stage 2: b'; sleep 0.3; echo '>>> stage 3: c'"
    launch = steps.launch(spec("m", script, cwd=str(tmp_path)))
    assert follow(steps, launch.step_dir)[0] == 0
    return launch, steps.read_markers(launch.step_dir), steps.read_times(launch.step_dir)


def test_markers_and_times_are_sub_second_where_date_has_N(steps, tmp_path):
    from fruix_dagster.build.markers import stage_durations
    launch, marks, (started, finished) = _marker_step(steps, tmp_path)
    text = (Path(launch.step_dir) / "markers").read_text().split()
    assert re.fullmatch(r"[0-9]+\.[0-9]{9}", text[0]), text
    assert [t for _ts, t in marks] == [">>> stage 1: a", ">>> stage 2: b", ">>> stage 3: c"]
    assert started <= marks[0][0] < marks[1][0] < marks[2][0] <= finished
    # 0.3 s pauses: visible only with sub-second stamps
    d = stage_durations(marks, finished)
    assert 0.25 <= d["stage 1"] < 1.5 and 0.25 <= d["stage 2"] < 1.5, d
    assert (Path(launch.step_dir) / "started").read_text().strip() != str(int(started))


def test_markers_are_whole_seconds_where_date_lacks_N(steps, tmp_path, monkeypatch):
    # a date(1) like FreeBSD's before %N: %N comes out as a literal N
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = shutil.which("date")
    (bindir / "date").write_text(
        "#!/bin/sh\n"
        'case "$1" in *%N*) set -- "$(printf %s "$1" | sed s/%N/N/g)" ;; esac\n'
        f'exec {real} "$@"\n')
    (bindir / "date").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    launch, marks, (started, finished) = _marker_step(steps, tmp_path)
    for line in (Path(launch.step_dir) / "markers").read_text().splitlines():
        assert re.fullmatch(r"[0-9]+ >>> stage [123]: [abc]", line), line
    assert re.fullmatch(r"[0-9]+", (Path(launch.step_dir) / "started").read_text().strip())
    assert [t for _ts, t in marks] == [">>> stage 1: a", ">>> stage 2: b", ">>> stage 3: c"]
    assert all(ts == int(ts) for ts, _t in marks)
    assert started is not None and finished is not None and started <= marks[0][0] <= finished


def _make_step(name: str, script: str, cwd: str):
    from fruix_dagster.build.make import MakeStep
    return MakeStep(name, ("sh", "-c", script), cwd, name[0] * 64)


@pytest.mark.parametrize("limits, why", [
    (dict(silent_s=1.0), "printed nothing for"),
    (dict(timeout_s=1.0), "over the wall-clock limit of 1 s"),
])
def test_run_step_limits_stop_a_streamed_step_and_keep_its_log(steps, tmp_path, limits, why):
    from fruix_dagster.build.run import Limits, run_step
    from fruix_dagster.errors import StepTimeout
    # prints a marker and an error, then stays silent (silence) or keeps printing (wall clock)
    body = "sleep 20" if "silent_s" in limits else "i=0; while [ $i -lt 100 ]; do echo tick; i=$((i + 1)); sleep 0.2; done"
    step = _make_step("quiet", f"echo '>>> stage 1: x'; echo 'x.c:1:2: error: boom'; {body}", str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(StepTimeout) as exc:
        run_step(steps, step, limits=Limits(poll_s=0.2, **limits))
    assert time.monotonic() - t0 < 15
    assert why in str(exc.value)
    assert "x.c:1:2: error: boom" in exc.value.triage.first_errors[0]
    ps = subprocess.run(["ps", "-A", "-o", "args="], capture_output=True, text=True, check=True).stdout
    assert not [p for p in ps.splitlines() if "echo 'x.c:1:2: error: boom'" in p]
