"""FreeBSD '>>> ' marker parsing across chunk boundaries, old and new wording."""

from __future__ import annotations

import pytest

from fruix_dagster.build.markers import LogScanner, classify, marker_offsets, reported_seconds, stage_durations

LOG = b"""cc -O2 -c foo.c
--------------------------------------------------------------
>>> World build started on Fri Nov 27 13:00:00 UTC 2026
--------------------------------------------------------------
>>> stage 1.1: legacy release compatibility shims
>>> stage 4.2: building libraries
not a >>> marker in the middle
>>> stage 4.3: building everything
cc: error: no such file
*** Error code 1
ERROR: Required auditdistd user is missing
--------------------------------------------------------------
>>> World build completed on Fri Nov 27 13:00:07 UTC 2026
>>> World built in 7 seconds, ncpu: 2, make -j2
>>> Kernel build for GENERIC started on Fri Nov 27 13:01:00 UTC 2026
>>> Kernel build for GENERIC completed on Fri Nov 27 13:02:00 UTC 2026
>>> Kernel(s)  GENERIC built in 60 seconds, ncpu: 2, make -j2
>>> stage 3: cross tools
>>> stage 2.1: cleaning up the object tree"""


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
def test_markers_errors_and_tail_at_any_chunking(chunk):
    scanner = LogScanner()
    found = []
    for i in range(0, len(LOG), chunk):
        found += scanner.feed(LOG[i:i + chunk])
    found += scanner.finish()
    kinds = [(m.kind, m.stage) for m in found]
    assert kinds == [
        ("world-started", None), ("stage", "1.1"), ("stage", "4.2"), ("stage", "4.3"),
        ("world-completed", None), ("built-in", None), ("kernel-started", None),
        ("kernel-completed", None), ("built-in", None), ("stage", "3"), ("stage", "2.1"),
    ]
    assert [m.seconds for m in found if m.kind == "built-in"] == [7, 60]
    # causes first (the compiler's and the ERROR: line), then make's own line
    assert scanner.errors == ["cc: error: no such file", "ERROR: Required auditdistd user is missing",
                              "*** Error code 1"]
    assert scanner.tail(2) == [">>> stage 3: cross tools", ">>> stage 2.1: cleaning up the object tree"]


def test_old_wording_is_classified():
    assert classify(">>> stage 4.4: building everything").stage == "4.4"
    assert classify(">>> stage 5.1: building 32 bit shim libraries").stage == "5.1"
    assert classify(">>> Installing everything started on now").kind == "header"
    assert classify(">>> Deleting stale dependencies...").kind == "other"
    assert classify(">>> stage 4.3.1: building lib32 shim libraries").stage == "4.3.1"


def test_huge_log_keeps_only_a_bounded_tail():
    scanner = LogScanner()
    line = b"x" * 99 + b"\n"
    for _ in range(200):
        scanner.feed(line * 1000)
    assert scanner.bytes_seen == 200 * 100_000
    assert len(scanner._tail) <= 2 * 256 * 1024 + 100_000
    assert scanner.tail(3) == ["x" * 99] * 3


def test_stage_durations_from_timestamped_markers():
    marks = [(100, ">>> World build started on x"), (101, ">>> stage 1.1: a"),
             (105, ">>> stage 4.2: b"), (130, ">>> World build completed on y")]
    assert stage_durations(marks, 131) == {"World build started on x": 1, "stage 1.1": 4, "stage 4.2": 25}


def test_unboxed_lines_do_not_end_a_stage():
    """main's Makefile.inc1: '>>> Deleting stale dependencies...' (twice) and
    '>>> Deleting stale files in build tree...' are printed inside stages."""
    d = "Tue Dec  1 19:07:07 UTC 2026"
    marks = [(0, f">>> World build started on {d}"),
             (2, ">>> Deleting stale files in build tree..."),
             (3, ">>> Rebuilding the temporary build tree"),
             (4, ">>> stage 1.1: legacy release compatibility shims"),
             (10, ">>> stage 1.2: bootstrap tools"),
             (11, ">>> Deleting stale dependencies..."),
             (40, ">>> Deleting stale dependencies..."),
             (50, ">>> stage 2.3: build tools"),
             (90, ">>> stage 4.4: building everything"),
             (500, f">>> World build completed on {d}"),
             (500, ">>> World built in 500 seconds, ncpu: 8, make -j8")]
    assert stage_durations(marks, 501) == {
        "World build": 3, "Rebuilding the temporary build tree": 1, "stage 1.1": 6,
        "stage 1.2": 40, "stage 2.3": 40, "stage 4.4": 410}
    offsets = marker_offsets(marks, 0)
    assert offsets["Deleting stale dependencies..."] == 11
    assert offsets["Deleting stale dependencies... (2)"] == 40
    assert len(offsets) == len(marks)


def test_install_and_kernel_install_times_are_read():
    """reinstall and installkernel of main/15.0 (Makefile.inc1)."""
    d = "Tue Dec  1 19:07:07 UTC 2026"
    marks = [(0, f">>> Install check world started on {d}"), (1, ">>> Making hierarchy"),
             (3, f">>> Installing everything started on {d}"),
             (60, f">>> Installing everything completed on {d}"),
             (60, ">>> Install world completed in 60 seconds, ncpu: 8")]
    assert stage_durations(marks, 61) == {"Install check world": 1, "Making hierarchy": 2,
                                          "Installing everything": 57}
    assert reported_seconds(marks) == 60
    kmarks = [(0, f">>> Install check kernel started on {d}"), (0, f">>> Installing kernel GENERIC on {d}"),
              (9, f">>> Installing kernel GENERIC completed on {d}"),
              (9, ">>> Install kernel(s) GENERIC completed in 9 seconds, ncpu: 8")]
    assert stage_durations(kmarks, 9) == {"Install check kernel": 0, "Installing kernel GENERIC": 9}
    assert reported_seconds(kmarks) == 9
