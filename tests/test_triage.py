"""Failure triage on real-shaped FreeBSD build output, fed in odd-sized chunks.

Inputs are written from the real sources' wording: Makefile.inc1 headers
(main: hitmoon/fb16-loongarch; 14.x: sobomax/freebsd14_vendor; 13.x:
freebsd-src 13-CURRENT), bmake's failure output (contrib/bmake/unit-tests/
jobs-error-nested.exp for bmake 20250804 under -j, compat-error.exp for compat
mode, directive-error.exp for .error since bmake 2024; the older '"file" line
N:' and "stopped in" forms of 13.x/14.x), clang's "file:line:col: error:".
"""

from __future__ import annotations

import pytest

from fruix_dagster.build.markers import LogScanner
from fruix_dagster.build.triage import Triage

HR = "-" * 62
D = "Tue Dec  1 19:07:07 UTC 2026"


def header(text: str) -> str:
    return f"\n{HR}\n>>> {text}\n{HR}\n"


def world_head(everything: str) -> str:
    return (f"{HR}\n>>> World build started on {D}\n{HR}\n" + header("Rebuilding the temporary build tree")
            + header("stage 1.1: legacy release compatibility shims") + header("stage 1.2: bootstrap tools")
            + ">>> Deleting stale dependencies...\n" + header("stage 4.2: building libraries")
            + header(everything))


# main / 15.0 under -j: two branches fail, interleaved, another is aborted.
MAIN_J = world_head("stage 4.4: building everything") + """--- cat.o ---
cc -O2 -pipe -c /usr/src/bin/cat/cat.c -o cat.o
--- ls.o ---
cc -O2 -pipe -c /usr/src/bin/ls/ls.c -o ls.o
--- cat.o ---
/usr/src/bin/cat/cat.c:12:5: error: use of undeclared identifier 'foo'
   12 |     foo = 1;
      |     ^
--- ls.o ---
/usr/src/bin/ls/ls.c:40:1: error: unknown type name 'bar_t'
--- cat.o ---
1 error generated.
*** [cat.o] Error code 1

make[4]: stopped making "all" in /usr/src/bin/cat
make[4]: 1 error

make[4]: stopped making "all" in /usr/src/bin/cat
--- ls.o ---
*** [ls.o] Error code 1

make[4]: stopped making "all" in /usr/src/bin/ls
--- all_subdir_usr.bin ---
A failure has been detected in another branch of the parallel make

make[4]: stopped making "all" in /usr/src/usr.bin/grep
*** [all_subdir_bin] Error code 2

make[2]: stopped making "all" in /usr/src
make[2]: 1 error

make[2]: stopped making "all" in /usr/src
*** [everything] Error code 2

make[1]: stopped making "buildworld" in /usr/src
make[1]: 1 error

make[1]: stopped making "buildworld" in /usr/src
"""

# 14.x without -j (compat.c): "*** Error code 1", "Stop.", "stopped in".
STABLE14_COMPAT = world_head("stage 4.4: building everything") + """cc -O2 -pipe -c /usr/src/lib/libc/gen/err.c -o err.o
/usr/src/lib/libc/gen/err.c:7:10: fatal error: 'stdio.h' file not found
1 error generated.
*** Error code 1

Stop.
make[4]: stopped in /usr/src/lib/libc
*** Error code 1

Stop.
make[3]: stopped in /usr/src/lib
*** Error code 1

Stop.
make[2]: stopped in /usr/src
"""

# 13.x -j, old bmake: "stopped in", bare "1 error", stage 4.3 everything.
RELENG13_J = world_head("stage 4.3: building everything") + """--- hello.o ---
*** [hello.o] Error code 1

make[4]: stopped in /usr/src/usr.bin/hello
1 error

make[4]: stopped in /usr/src/usr.bin/hello
"""

# A .error while reading Makefile.inc1 (15.0: file:line:; 14.x: "file" line N:),
# with an .info before it that is not an error.
def directive(new: bool) -> str:
    where = "/usr/src/Makefile.inc1:1893:" if new else '"/usr/src/Makefile.inc1" line 1893:'
    info = "/usr/src/Makefile.inc1:243:" if new else '"/usr/src/Makefile.inc1" line 243:'
    return (f"make[1]: {info} The src.conf WITHOUT_CLEAN option can now be used instead of NO_CLEAN.\n"
            f"make[1]: {where} Missing KERNCONF /usr/src/sys/amd64/conf/NOPE\n\n"
            "make[1]: stopped in /usr/src\n*** Error code 1\n\nStop.\nmake: stopped in /usr/src\n")


INSTALL = (f"{HR}\n>>> Install check world started on {D}\n{HR}\n"
           "ERROR: Required auditdistd user is missing, see /usr/src/UPDATING.\n"
           "*** Error code 1\n\nStop.\nmake[1]: stopped in /usr/src\n")


def triage_of(log: str, chunk: int, path: str = "/b/steps/x/log") -> Triage:
    scanner = LogScanner()
    data = log.encode()
    for i in range(0, len(data), chunk):
        scanner.feed(data[i:i + chunk])
    scanner.finish()
    return scanner.triage(path, 2)


CHUNKS = [1, 7, 61, 4096, 1 << 20]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_main_parallel_interleaved(chunk: int) -> None:
    t = triage_of(MAIN_J, chunk)
    assert t.first_errors[:2] == ("/usr/src/bin/cat/cat.c:12:5: error: use of undeclared identifier 'foo'",
                                  "/usr/src/bin/ls/ls.c:40:1: error: unknown type name 'bar_t'")
    assert t.first_errors[2:] == ("*** [cat.o] Error code 1", "*** [ls.o] Error code 1",
                                  "*** [all_subdir_bin] Error code 2", "*** [everything] Error code 2")
    assert t.stopped_in == "/usr/src/bin/cat"
    assert t.stage == ">>> stage 4.4: building everything"
    assert t.log_path == "/b/steps/x/log" and t.tail[-1] == 'make[1]: stopped making "buildworld" in /usr/src'
    s = t.summary()
    assert s.index("use of undeclared") < s.index("stopped in: /usr/src/bin/cat") < s.index("stage: >>> stage 4.4")
    assert t.metadata()["stopped_in"] == "/usr/src/bin/cat"


@pytest.mark.parametrize("chunk", CHUNKS)
def test_14_compat_and_13_parallel(chunk: int) -> None:
    t = triage_of(STABLE14_COMPAT, chunk)
    assert t.first_errors == ("/usr/src/lib/libc/gen/err.c:7:10: fatal error: 'stdio.h' file not found",
                              "*** Error code 1", "*** Error code 1", "*** Error code 1")
    assert t.stopped_in == "/usr/src/lib/libc"
    t = triage_of(RELENG13_J, chunk)
    assert t.first_errors == ("*** [hello.o] Error code 1",)
    assert t.stopped_in == "/usr/src/usr.bin/hello"
    assert t.stage == ">>> stage 4.3: building everything"


@pytest.mark.parametrize("new", [True, False])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_error_directive_but_not_info(new: bool, chunk: int) -> None:
    t = triage_of(directive(new), chunk)
    assert len(t.first_errors) == 2
    assert t.first_errors[0].endswith(" Missing KERNCONF /usr/src/sys/amd64/conf/NOPE")
    assert t.first_errors[1] == "*** Error code 1"
    assert t.stopped_in == "/usr/src"
    assert t.stage is None


def test_install_check_error_line() -> None:
    t = triage_of(INSTALL, 13)
    assert t.first_errors == ("ERROR: Required auditdistd user is missing, see /usr/src/UPDATING.",
                              "*** Error code 1")
    assert t.stage == f">>> Install check world started on {D}"


def test_first_error_100000_lines_before_the_end() -> None:
    filler = "".join(f"cc -O2 -pipe -c /usr/src/sys/dev/x{i}.c -o x{i}.o\n" for i in range(100_000))
    log = MAIN_J.replace("--- ls.o ---\ncc -O2", "--- ls.o ---\n" + filler + "cc -O2", 1)
    t = triage_of(log, 1 << 20)
    assert t.first_errors[0].startswith("/usr/src/bin/cat/cat.c:12:5: error:")
    assert t.stopped_in == "/usr/src/bin/cat"
    assert len(t.tail) == 40


def test_ignored_errors_are_not_errors() -> None:
    t = triage_of("*** [x] Error code 1 (ignored)\nok\n", 5)
    assert t.first_errors == () and t.stopped_in is None
    assert "none recognised" in t.summary()


@pytest.mark.parametrize("chunk", CHUNKS)
def test_compat_failing_command_line_is_a_cause(chunk: int) -> None:
    """compat.c prints "*** Error code N" right after the failing command's output."""
    log = (header("Installing everything started on " + D)
           + "install -o root -g wheel -m 444 stdio.h /stage/usr/include/stdio.h\n"
           "cp: /stage/usr/include/stdio.h: No space left on device\n"
           "*** Error code 1\n\nStop.\nmake[3]: stopped in /usr/src/include\n")
    t = triage_of(log, chunk)
    assert t.first_errors == ("cp: /stage/usr/include/stdio.h: No space left on device", "*** Error code 1")
    assert t.stopped_in == "/usr/src/include"
    assert t.stage == f">>> Installing everything started on {D}"


# A real 15.0 buildkernel failure under -j (riscv64-unknown-freebsd15.0, bmake
# 20250804), the tail a user posted verbatim (search index id 68404767865; the
# cc lines were shortened there already): the compiler's fatal error, the jobs-mode
# "*** [t] Error code N", 'stopped making "t" in DIR' with the error count,
# time(1)'s line in between, and make without [N] at the top.
REAL_15_KERNEL = """\
--- ofw_cpu.o ---
cc -target riscv64-unknown-freebsd15.0 ... /usr/src/sys/dev/ofw/ofw_cpu.c
--- ofw_fdt.o ---
--- ofw_cpu.o ---
In file included from /usr/src/sys/dev/ofw/ofw_cpu.c:46:
/usr/src/sys/dev/clk/clk.h:36:10: fatal error: 'clknode_if.h' file not found
   36 | #include "clknode_if.h"
      |          ^~~~~~~~~~~~~~
--- ofw_fdt.o ---
cc -target riscv64-unknown-freebsd15.0 ... /usr/src/sys/dev/ofw/ofw_fdt.c
--- ofw_cpu.o ---
1 error generated.
*** [ofw_cpu.o] Error code 1

make[2]: stopped making "all" in /usr/obj/usr/src/riscv.riscv64/sys/SMOLFIRE-VM
make[2]: 1 error

make[2]: stopped making "all" in /usr/obj/usr/src/riscv.riscv64/sys/SMOLFIRE-VM
        6.96 real        14.40 user         1.15 sys

make[1]: stopped making "buildkernel" in /usr/src

make: stopped making "buildkernel" in /usr/src
"""


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_real_15_kernel_failure(chunk: int) -> None:
    t = triage_of(REAL_15_KERNEL, chunk)
    assert t.first_errors == ("/usr/src/sys/dev/clk/clk.h:36:10: fatal error: 'clknode_if.h' file not found",
                              "*** [ofw_cpu.o] Error code 1")
    assert t.stopped_in == "/usr/obj/usr/src/riscv.riscv64/sys/SMOLFIRE-VM"
    assert t.stage is None   # the excerpt holds no stage header
