"""Make output on the host: the full log next to the artifacts, live and capped on the run's stdout.

* :class:`StepOutput` on its own: every chunk reaches the host copy; the live
  stream gets whole chunks (one write each) up to the cap, cut at a line end,
  then one line naming the host copy; the host copy is complete and appears
  under its name only when closed.
* A real build of the sample tree through Dagster (in-process, the instance's
  local compute-log manager): the run's captured stdout holds the compiler
  lines of buildworld; ``log_path`` is the host copy, byte-for-byte the guest's
  log; the number of event-log records stays small (no event per line).
"""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg

from fruix_dagster.build.output import StepOutput, copy_log, host_log_path
from fruix_dagster.defs.records import latest
from tests.conftest import make_local_build


class CountingStream(io.BytesIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, b):  # type: ignore[override]
        self.writes += 1
        return super().write(b)


def test_step_output_copies_everything_and_streams_up_to_the_cap(tmp_path):
    dest = host_log_path(tmp_path / "store", "amd64", "buildworld-0123456789abcdef")
    stream = CountingStream()
    out = StepOutput(dest, stream, cap_bytes=100, header="===== buildworld\n")
    chunks = [b"".join(b"line %02d of the log\n" % (i + j) for j in range(3)) for i in range(0, 30, 3)]
    for c in chunks:
        out.write(c)
    assert not dest.exists() and dest.with_name(dest.name + ".partial").exists()
    assert out.close() == dest
    assert dest.read_bytes() == b"".join(chunks)
    assert not dest.with_name(dest.name + ".partial").exists()
    shown = stream.getvalue()
    body = shown[len(b"===== buildworld\n"):]
    streamed, _, notice = body.partition(b"\n[fruix] ")
    assert len(streamed) <= 100 and streamed.endswith(b"\n") or streamed.endswith(b"log")
    assert b"".join(chunks).startswith(streamed.rstrip(b"\n"))
    assert b"build.stdout_max_mib" in notice and str(dest).encode() in notice
    # header, whole chunks up to the cap, the cut chunk, the notice — never a write per line
    assert stream.writes <= 2 + 100 // len(chunks[0]) + 2


def test_step_output_cap_zero_streams_nothing_and_copy_log_copies_once(tmp_path):
    dest = tmp_path / "logs" / "t" / "s.log"
    stream = CountingStream()
    out = StepOutput(dest, stream, cap_bytes=0, header="x\n")
    out.write(b"a\n" * 10)
    out.close()
    assert stream.getvalue() == b"" and dest.read_bytes() == b"a\n" * 10

    data = b"0123456789" * 1000
    calls = []

    def chunks():
        calls.append(1)
        for off in range(0, len(data), 4096):
            yield data[off:off + 4096]

    other = tmp_path / "other.log"
    assert copy_log(chunks, other).read_bytes() == data
    n = len(calls)
    copy_log(chunks, other)               # already on the host: not read again
    assert len(calls) == n == 1


def test_build_output_reaches_the_runs_stdout_and_the_host(tmp_path):
    # 3,000 more lines of output in the middle of buildworld (the sample tree's SAMPLE_EXTRA_LOG)
    lb = make_local_build(tmp_path, build={"world_make_vars": {"SAMPLE_EXTRA_LOG": "3000"}})
    result = lb.run(select=["freebsd_source", "world_build"])
    assert result.success
    meta = latest(lb.instance, "world_build", "amd64").metadata
    host = Path(meta["log_path"])
    guest = Path(meta["guest_log_path"])
    assert host.parent == tmp_path / "store" / "logs" / "amd64"
    assert host.read_bytes() == guest.read_bytes()
    log_text = host.read_text()
    compiler = [line for line in log_text.splitlines() if " -c " in line and " -o " in line]
    assert len(compiler) >= 10, log_text[:3000]
    assert "filler output line 3000 of 3000" in log_text

    captured = list((Path(lb.instance.root_directory) / "storage" / result.run_id / "compute_logs").glob("*.out"))
    assert captured, "no captured stdout file"
    stdout = "".join(p.read_text(errors="replace") for p in captured)
    assert "===== buildworld: started" in stdout
    assert compiler[0] in stdout and compiler[-1] in stdout
    events = lb.instance.get_records_for_run(result.run_id, limit=10_000).records
    assert len(events) < 100 < 3000 < len(log_text.splitlines()), (len(events), len(log_text.splitlines()))
    assert "filler output line 3000 of 3000" in stdout
    assert dg.DagsterEventType.LOGS_CAPTURED in {e.event_log_entry.dagster_event_type for e in events}
