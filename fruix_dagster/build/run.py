"""Running one make step detached on a guest and following it to the end."""

from __future__ import annotations

import os
import re
import shlex
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Callable, Iterator

from fruix_dagster.build.buildconf import write_conf
from fruix_dagster.build.make import MakeStep
from fruix_dagster.build.markers import (LogScanner, Marker, epoch_cleaned, marker_offsets,
                                         reported_seconds, stage_durations)
from fruix_dagster.build.output import LiveLog, StepOutput, copy_log
from fruix_dagster.build.triage import Triage
from fruix_dagster.errors import BuildError, GuestError, StepTimeout, TransportError
from fruix_dagster.guest.detached import DetachedSteps, Launch


@dataclass
class StepOutcome:
    step: MakeStep
    launch: Launch
    exit_status: int
    duration_s: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    log_bytes: int = 0
    #: seconds from the step's start to each '>>> ' marker, one key per marker
    marker_offsets: dict[str, float] = field(default_factory=dict)
    #: the command the guest's step record says ran (for a reused step: the
    #: earlier run's, which may differ from today's settings in -jN)
    recorded_command: str = ""
    #: what make printed as its own duration ("World built in N seconds")
    make_seconds: int | None = None
    #: the full log's copy on the host (None without a LiveLog)
    host_log_path: str | None = None
    #: depend-cleanup.sh removed the object tree (a new .clean_build_epoch in
    #: the source): an incremental build that was in fact a clean one
    epoch_clean: bool = False

    @property
    def command(self) -> str:
        return self.recorded_command or self.step.command

    @property
    def build_jobs(self) -> int | None:
        """N of the -jN the step ran with (None: without -j)."""
        try:
            argv = shlex.split(self.command)
        except ValueError:
            return None
        for a in argv:
            if m := re.fullmatch(r"-j(\d+)", a):
                return int(m[1])
        return None

    @property
    def clean_build(self) -> str:
        """How clean the build was: "requested" (WITH_CLEAN=yes in the command
        that ran), "epoch" (incremental asked, but the object tree's
        .clean_build_epoch was older than the source's, so it was removed), "no"."""
        try:
            argv = shlex.split(self.command)
        except ValueError:
            argv = []
        if "WITH_CLEAN=yes" in argv:
            return "requested"
        return "epoch" if self.epoch_clean else "no"

    @property
    def ran_make(self) -> bool:
        return self.launch.action != "reused"

    @property
    def log_path(self) -> str:
        return self.launch.log_path


@dataclass(frozen=True)
class Limits:
    timeout_s: float | None = None        # wall clock since the step started
    silent_s: float | None = None         # no new log bytes for this long
    poll_s: float = 1.0                   # upper bound of the poll interval


def run_step(
    steps: DetachedSteps,
    step: MakeStep,
    *,
    limits: Limits = Limits(),
    on_marker: Callable[[Marker, int | None], None] | None = None,
    on_info: Callable[[str], None] | None = None,
    busy_wait: float = 0.0,
    force: bool = False,
    live: LiveLog | None = None,
) -> StepOutcome:
    """Start (or attach to, or reuse) the step and follow its log to the end.

    With ``live``, every chunk read goes to the host copy of the log and to
    the live stream (capped); a reused step's log is copied once if the host
    has no copy yet.

    Raises BuildError with the exit status, the first error lines and the
    last 40 log lines when the step fails; StepTimeout when a limit is hit
    (the step's processes are stopped on the guest first).
    """
    info = on_info or (lambda _msg: None)
    if step.conf is not None:
        write_conf(steps.transport, steps.build_root, step.conf)
    launch = steps.launch(step, force=force, busy_wait=busy_wait, on_wait=lambda why: info(f"waiting: {why}"))
    for w in launch.warnings:
        info(f"WARNING: {w}")
    info(f"{step.name}: {launch.action} in {launch.step_dir}")
    # Following scans for markers only (one pass per chunk); a failed step's
    # triage reads its whole log once, afterwards (see _triage).
    scanner = LogScanner(errors=False)
    offset = 0
    host_log = None
    if launch.action == "reused":
        status, _ = steps.poll(launch.step_dir, 0, 0)
        if live is not None:
            host_log = str(copy_log(lambda: _chunks(steps, launch.step_dir, 0), live.host_log))
    else:
        out = live.open(f"===== {step.name}: {launch.action} in {launch.step_dir}\n"
                        f"===== {step.command}\n") if live is not None else None
        try:
            status = _follow(steps, launch, step, scanner, limits, on_marker, out)
        except StepTimeout:
            if out is not None:
                out.close()   # the step was stopped: its log is complete
            raise
        except BaseException:
            if out is not None:
                out.abandon()
            raise
        if out is not None:
            host_log = str(out.close())
        offset = scanner.bytes_seen
    started, finished = steps.read_times(launch.step_dir)
    duration = float(finished - started) if started is not None and finished is not None else 0.0
    marks = steps.read_markers(launch.step_dir)
    outcome = StepOutcome(step, launch, status.exit_status if status.exit_status is not None else -1,
                          duration, stage_durations(marks, finished), offset,
                          marker_offsets(marks, started), steps.read_command(launch.step_dir),
                          reported_seconds(marks), host_log, epoch_cleaned(marks))
    if status.state == "vanished" or outcome.exit_status != 0:
        raise _failure(step, launch, status.state, outcome.exit_status,
                       _triage(steps, launch.step_dir, host_log, status.log_size))
    return outcome


#: consecutive follow streams that may fail with a lost connection before no
#: byte or status arrived between them (each reopen reconnects with backoff)
STREAM_RETRIES = 5


def _follow(steps: DetachedSteps, launch: Launch, step: MakeStep, scanner: LogScanner,
            limits: Limits, on_marker: Callable[[Marker, int | None], None] | None,
            out: StepOutput | None = None):
    """Follow the step over streams (see DetachedSteps.stream) until it ends or a limit is hit.

    A stream that ends at its bound, or whose connection is lost, is reopened
    at the exact byte reached."""
    offset = 0
    last_growth = time.monotonic()
    failures = 0
    why = None
    while why is None:
        frames = 0
        try:
            with closing(steps.stream(launch.step_dir, offset, poll_s=limits.poll_s)) as stream:
                for status, data in stream:
                    frames += 1
                    failures = 0
                    if data:
                        if out is not None:
                            out.write(data)
                        offset += len(data)
                        last_growth = time.monotonic()
                        for marker in scanner.feed(data):
                            if on_marker:
                                on_marker(marker, status.elapsed)
                        if offset < status.log_size:
                            continue          # the rest of this frame is on its way
                    if status.finished and offset >= status.log_size:
                        for marker in scanner.finish():
                            if on_marker:
                                on_marker(marker, status.elapsed)
                        return status
                    why = _over_limit(limits, status.elapsed, time.monotonic() - last_growth)
                    if why:
                        break
        except TransportError:
            failures += 1
            if failures > STREAM_RETRIES:
                raise
            continue
        if frames == 0 and why is None:
            raise GuestError(
                f"following {launch.step_dir}: expected at least one status line from the guest's "
                f"follow command, it printed nothing")
    steps.kill(launch.step_dir)
    for data in _chunks(steps, launch.step_dir, offset):
        if out is not None:
            out.write(data)
        offset += len(data)
    triage = _triage(steps, launch.step_dir, None, offset).triage(launch.log_path, None)
    raise StepTimeout(
        f"{step.name} timed out: it {why}; its processes were stopped on the guest.\n"
        + _details(step, triage),
        exit_status=None, log_path=launch.log_path, triage=triage)


def _over_limit(limits: Limits, elapsed: int | None, silent: float) -> str | None:
    if limits.timeout_s is not None and elapsed is not None and elapsed > limits.timeout_s:
        return f"ran {elapsed} s, over the wall-clock limit of {limits.timeout_s:g} s"
    if limits.silent_s is not None and silent > limits.silent_s:
        return f"printed nothing for {silent:.0f} s, over the silence limit of {limits.silent_s:g} s"
    return None


def _triage(steps: DetachedSteps, step_dir: str, host_log: str | None, log_size: int) -> LogScanner:
    """The whole log of a failed step through a full scanner (first errors,
    where make stopped, stage, tail), read once: from the host copy when it
    holds all ``log_size`` bytes, else from the guest in big pieces.  The
    first error may be 100,000 lines before the end; following never paid
    for error scanning (build/markers.py ``errors=False``)."""
    scanner = LogScanner()
    if host_log is not None and os.path.getsize(host_log) >= log_size:
        with open(host_log, "rb") as f:
            while data := f.read(8 << 20):
                scanner.feed(data)
    else:
        for data in _chunks(steps, step_dir, 0):
            scanner.feed(data)
    scanner.finish()
    return scanner


def _chunks(steps: DetachedSteps, step_dir: str, offset: int) -> Iterator[bytes]:
    """The log from ``offset`` to its current end, in big pieces over one stream."""
    for _status, data in steps.stream(step_dir, offset, follow=False):
        if data:
            yield data


def _details(step: MakeStep, triage: Triage) -> str:
    return f"command: {step.command}\n" + triage.summary()


def _failure(step: MakeStep, launch: Launch, state: str, exit_status: int,
             scanner: LogScanner) -> BuildError:
    triage = scanner.triage(launch.log_path, None if state == "vanished" else exit_status)
    if state == "vanished":
        head = (f"{step.name} was expected to finish with status 0, but its process vanished "
                f"without an exit status (killed, or the guest rebooted); re-run to build it anew")
    else:
        where = f" in {triage.stopped_in}" if triage.stopped_in else ""
        cause = f": {triage.first_errors[0]}" if triage.first_errors else ""
        head = (f"{step.name} failed with exit status {exit_status} (expected 0){where}{cause}; "
                f"fix the cause shown below and re-materialize — build failures are not retried")
    return BuildError(head + "\n" + _details(step, triage),
                      exit_status=exit_status, log_path=launch.log_path, triage=triage)
