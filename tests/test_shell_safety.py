"""Config values with shell metacharacters reach the guest's make unchanged (hypothesis).

Values travel settings file → validated settings → make argv → SSH exec →
detached step on a real sshd whose login shell is dash.  A recorder stands in
for make and writes the argv and environment it actually received.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from fruix_dagster.build.make import plan_build
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.ssh import SshTransport
from fruix_dagster.settings import load_settings
from tests.conftest import write_settings
from tests.support.sshguest import SshGuest

RECORDER = "/var/tmp/rec/make"
RECORD = "/var/tmp/rec/last"
NASTY = list(";$()`'\"\\|&<>*?[]{}~#!= \n\t-") + ["$(touch /var/tmp/pwned)", "`id`", "'; rm -rf /var/tmp; '"]
text = st.lists(st.one_of(st.sampled_from(NASTY), st.characters(min_codepoint=32, max_codepoint=0x2FF)),
                max_size=12).map("".join)
root_part = st.lists(st.one_of(st.sampled_from([c for c in NASTY if c not in "\n\t"]),
                               st.characters(min_codepoint=33, max_codepoint=126)),
                     min_size=1, max_size=10).map("".join).filter(
    lambda s: "/" not in s and s not in (".", ".."))
var_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in {"MAKEOBJDIRPREFIX", "DESTDIR", "TARGET", "TARGET_ARCH", "KERNCONF",
                        "DB_FROM_SRC", "WITHOUT_CLEAN"})


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    g = SshGuest(tmp_path_factory.mktemp("shell-safety") / "guest", address="127.0.0.9")
    g.start()
    g.exec(["sh", "-c", f'mkdir -p /var/tmp/rec && printf \'%s\\n\' "#!/bin/sh" '
                        f'\'printf "%s\\\\0" "$MAKEOBJDIRPREFIX" "$PWD" "$@" > {RECORD}\' > {RECORDER} '
                        f'&& chmod 755 {RECORDER}'])
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def transport(guest):
    t = SshTransport(host=guest.host, port=guest.port, known_hosts=str(guest.known_hosts),
                     private_key=str(guest.client_key), connect_timeout=5, io_timeout=30)
    yield t
    t.close()


@hsettings(max_examples=200, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(make_vars=st.dictionaries(var_name, text, max_size=4), root=root_part,
       kernel_vars=st.dictionaries(var_name, text, max_size=2))
def test_metacharacters_are_never_interpreted(guest, transport, tmp_path_factory, make_vars, root, kernel_vars):
    path = tmp_path_factory.mktemp("cfg") / "fruix.toml"
    build_root = f"/var/tmp/{root}"
    write_settings(
        path,
        build={"build_root": build_root, "make": RECORDER, "make_vars": make_vars,
               "kernel_make_vars": kernel_vars},
        source={"from": "path", "path": guest.source_root},
        guests=[guest.ssh_settings(name="g")], targets=[{"name": "t", "guest": "g"}])
    s = load_settings(path)
    b = s.build
    plan = plan_build(build_root=b.build_root, make=b.make, jobs=3, source_root=s.source.path,
                      source_hash="0" * 64, target="amd64", target_arch="amd64", kernconf="GENERIC",
                      make_vars={n: b.make_vars_for(n) for n in ("buildworld", "buildkernel")})
    steps = DetachedSteps(transport, b.build_root)
    for name in ("buildworld", "buildkernel"):
        step = plan.steps[name]
        launch = steps.launch(step, force=True)
        assert launch.action == "started"
        deadline = time.monotonic() + 30
        while not steps.poll(launch.step_dir, 0, 0)[0].finished:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert steps.poll(launch.step_dir, 0, 0)[0].exit_status == 0
        recorded = guest.exec(["cat", RECORD]).stdout.split(b"\0")[:-1]
        expected = [f"{build_root}/obj", guest.source_root, *step.argv[3:]]
        assert recorded == [e.encode() for e in expected]
        assert set(make_vars.items()) | (set(kernel_vars.items()) if name == "buildkernel" else set()) \
            >= {(k, v) for k, v in (a.decode().split("=", 1) for a in recorded[3:] if b"=" in a)
                if k not in ("TARGET", "TARGET_ARCH", "KERNCONF", "WITHOUT_CLEAN")}
    assert guest.exec(["test", "-e", "/var/tmp/pwned"], check=False).returncode != 0
    assert guest.exec(["test", "-d", "/var/tmp/rec"], check=False).returncode == 0
