"""Config values with shell metacharacters reach the guest's make unchanged (hypothesis).

Values travel settings file → validated settings → build plan → make argv →
SSH exec → detached step on a real sshd whose login shell is dash.  A
recorder stands in for make and writes the argv and environment it actually
received.  Checked both ways, for all five steps: every configured pair
(``make_vars``, plus ``world_make_vars`` or ``kernel_make_vars``) reaches make
exactly, and make receives nothing but those and the harness's own words.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from fruix_dagster.build.plan import plan_for_target
from fruix_dagster.graph import KERNEL_STEPS, STEP_NAMES
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.ssh import SshTransport
from fruix_dagster.settings import load_settings
from tests.conftest import write_settings
from tests.support.sshguest import SshGuest

RECORDER = "/var/tmp/rec/make"
RECORD = "/var/tmp/rec/last"
NASTY = list(";$()`'\"\\|&<>*?[]{}~#!= -") + ["$(touch /var/tmp/pwned)", "`id`", "'; rm -rf /var/tmp; '"]
# make variable values with control characters (newline, tab, DEL, C1) are refused by the
# settings (tests/test_settings.py); everything else printable must reach make unchanged
text = st.lists(st.one_of(st.sampled_from(NASTY), st.characters(min_codepoint=32, max_codepoint=0x2FF,
                                                                blacklist_categories=("Cc",))),
                max_size=12).map("".join)
root_part = st.lists(st.one_of(st.sampled_from(NASTY),
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


def expected_make_words(step: str, build_root: str, configured: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """What make must receive for ``step`` (README: the harness's commands): the words that are
    not assignments, and every ``NAME=value`` — ours plus exactly the configured pairs."""
    ours = {"TARGET": "amd64", "TARGET_ARCH": "amd64"}
    if step.startswith("build"):
        words = ["-j3", step]
        ours["WITHOUT_CLEAN"] = "yes"
    else:
        words = [step]
        stage = "stage/t/kernel" if step == "installkernel" else "stage/t/world"
        ours.update({"DESTDIR": f"{build_root}/{stage}", "DB_FROM_SRC": "yes"})
    if "kernel" in step:
        ours["KERNCONF"] = "GENERIC"
    assert not set(ours) & set(configured)
    return words, {**ours, **configured}


@hsettings(max_examples=100, deadline=None,  # 500 detached make steps over SSH
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(make_vars=st.dictionaries(var_name, text, max_size=4), root=root_part,
       kernel_vars=st.dictionaries(var_name, text, max_size=2),
       world_vars=st.dictionaries(var_name, text, max_size=2))
def test_metacharacters_are_never_interpreted(guest, transport, tmp_path_factory, make_vars, root, kernel_vars,
                                              world_vars):
    path = tmp_path_factory.mktemp("cfg") / "fruix.toml"
    build_root = f"/var/tmp/{root}"
    write_settings(
        path,
        build={"jobs": 3, "build_root": build_root, "make": RECORDER, "make_vars": make_vars,
               "kernel_make_vars": kernel_vars, "world_make_vars": world_vars},
        source={"from": "path", "path": guest.source_root},
        guests=[guest.ssh_settings(name="g")], targets=[{"name": "t", "guest": "g"}])
    s = load_settings(path)
    plan = plan_for_target(s, "t", source_root=guest.source_root, source_hash="0" * 64)
    steps = DetachedSteps(transport, s.build.build_root)
    for name in STEP_NAMES:
        step = plan.steps[name]
        launch = steps.launch(step, force=True)
        assert launch.action == "started"
        deadline = time.monotonic() + 30
        while not steps.poll(launch.step_dir, 0, 0)[0].finished:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert steps.poll(launch.step_dir, 0, 0)[0].exit_status == 0
        recorded = [w.decode() for w in guest.exec(["cat", RECORD]).stdout.split(b"\0")[:-1]]
        assert recorded[:2] == [f"{build_root}/obj", guest.source_root]
        # both directions: every configured pair reaches make unchanged, and nothing else does
        configured = {**make_vars, **(kernel_vars if name in KERNEL_STEPS else world_vars)}
        words, assignments = expected_make_words(name, build_root, configured)
        got = [tuple(w.split("=", 1)) for w in recorded[2:] if "=" in w]
        assert [w for w in recorded[2:] if "=" not in w] == words
        assert len(got) == len(dict(got)) and dict(got) == assignments
    assert guest.exec(["test", "-e", "/var/tmp/pwned"], check=False).returncode != 0
    assert guest.exec(["test", "-d", "/var/tmp/rec"], check=False).returncode == 0
