"""The guest's own /etc/src.conf and /etc/make.conf do not reach a pinned build.

The SSH test guest has a private, writable /etc (an overlay inside its mount
namespace, tests/support/sshguest.py): the test writes the guest's real
/etc/src.conf and /etc/make.conf over ssh, as root on a FreeBSD machine
would.  share/mk reads them by default (src.sys.mk ``SRCCONF?= /etc/src.conf``,
sys.mk ``__MAKE_CONF?= /etc/make.conf``) -- a make run in the guest without
the product's settings shows that -- and the product's build, which passes
SRCCONF, __MAKE_CONF and SRC_ENV_CONF itself, ignores them.  The settings
have no "use the guest's files" mode, so there is no unpinned product build.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from fruix_dagster.build.buildconf import BuildConf
from fruix_dagster.build.make import plan_build
from fruix_dagster.build.run import run_step
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.ssh import SshTransport

ROOT = "/var/tmp/fruix-native-build"
SHIM = "building lib32 shim libraries"


def ssh(guest, command: str) -> str:
    p = subprocess.run(guest.ssh_command(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=300)
    assert p.returncode == 0, f"{command} failed ({p.returncode}):\n{p.stdout[-4000:]}"
    return p.stdout


def host_file(path: str) -> bytes | None:
    return Path(path).read_bytes() if Path(path).exists() else None


def test_the_guests_etc_src_conf_does_not_reach_a_pinned_build(ssh_guest):
    host_before = {p: host_file(p) for p in ("/etc/src.conf", "/etc/make.conf")}
    ssh(ssh_guest, "printf 'WITHOUT_LIB32=yes\\n' > /etc/src.conf && "
                   "printf 'CFLAGS+= -DFROM_THE_GUESTS_ETC\\n' > /etc/make.conf")
    assert {p: host_file(p) for p in host_before} == host_before, "the host's /etc was written"
    assert ssh(ssh_guest, "cat /etc/src.conf") == "WITHOUT_LIB32=yes\n"

    # share/mk's defaults: a make in the guest without the product reads both files.
    plain = ssh(ssh_guest, f"cd {shlex.quote(ssh_guest.source_root)} && env MAKEOBJDIRPREFIX={ROOT}/plain-obj "
                           "SRC_ENV_CONF=/dev/null bmake -j2 TARGET=amd64 TARGET_ARCH=amd64 buildworld")
    assert SHIM not in plain and " -DFROM_THE_GUESTS_ETC " in plain

    t = SshTransport(host=ssh_guest.host, port=ssh_guest.port, known_hosts=str(ssh_guest.known_hosts),
                     private_key=str(ssh_guest.client_key), connect_timeout=5, io_timeout=60)
    try:
        steps = DetachedSteps(t, ROOT)
        plan = plan_build(build_root=ROOT, make="bmake", jobs=2, source_root=ssh_guest.source_root,
                          source_hash=ssh_guest.store_hash, target_name="amd64", target="amd64", target_arch="amd64",
                          kernconf="GENERIC", conf=BuildConf())
        outcome = run_step(steps, plan.steps["buildworld"])
        log = ssh_guest.guest_path(outcome.log_path).read_text()
        assert SHIM in log, "the guest's /etc/src.conf reached a pinned build"
        assert "FROM_THE_GUESTS_ETC" not in log, "the guest's /etc/make.conf reached a pinned build"
        assert "SRCCONF=/dev/null" in outcome.command and "__MAKE_CONF=/dev/null" in outcome.command
    finally:
        t.close()
