"""fruix_dagster.settings: the settings file → validated, frozen model."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from fruix_dagster import settings as S
from fruix_dagster.errors import ConfigError, FruixError
from fruix_dagster.settings.messages import toml_key, toml_value
from fruix_dagster.settings.model import known_keys
from fruix_dagster.settings import (
    EMBEDDED_SOURCE,
    BuildSettings,
    HistorySettings,
    ScheduleSettings,
    SensorSettings,
    SliceSettings,
    SourceSettings,
    StoreSettings,
    check_config_text,
    embedded_default,
    load_settings,
    render_settings,
)

VM_UUID = "90490f2e-1c5b-4a8e-9d6f-3b2a1c0d9e8f"

# The example from DESIGN.md ("Settings file"), with a complete vm_uuid.
DESIGN_EXAMPLE = f"""
[build]
jobs = 8
build_root = "/var/tmp/fruix-native-build"
make = "make"
make_vars = {{ WITHOUT_CLEAN = "yes" }}   # NAME=VALUE pairs, validated
timeout_hours = 12
silent_timeout_minutes = 120

[source]
from = "system-metadata"       # or "path"
metadata = "/run/current-system/metadata/store-layout.scm"
store_root = "/frx/store"
name = "default"               # selects <store_root>/<hash>-freebsd-source-<name>
# path = "/usr/src"            # with from = "path"

[store]
root = "/var/lib/fruix-dagster/artifacts"
keep = 5                       # materializations kept per asset and target

[[guest]]
name = "fruix-amd64"
kind = "xcpng"                 # local | ssh | xcpng
host = "192.0.2.10"            # omit for xcpng to use the address from guest metrics
user = "root"
private_key = "~/.ssh/fruix_ed25519"
known_hosts = "~/.ssh/known_hosts"
xcpng = {{ url = "https://xcp.example/", username = "root", password_env = "XCPNG_PASSWORD", vm_uuid = "{VM_UUID}", after = "keep-running" }}

[[target]]
name = "amd64"
guest = "fruix-amd64"
target = "amd64"
target_arch = "amd64"
kernconf = "GENERIC"
"""

LOCAL_GUEST = '[[guest]]\nname = "a"\nkind = "local"\n'
TARGET = '[[target]]\nname = "amd64"\nguest = "a"\n'


def write(tmp_path: Path, text: str, name: str = "fruix.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), **extra}


# --------------------------------------------------------------------------
# Valid files
# --------------------------------------------------------------------------


def test_design_example_loads(tmp_path):
    # Host files (private_key, known_hosts) need not exist at load time:
    # tmp_path/home/.ssh does not exist at all.
    environ = env(tmp_path)
    home = environ["HOME"]
    s = load_settings(write(tmp_path, DESIGN_EXAMPLE), environ)

    assert s.source_file == str(tmp_path / "fruix.toml")
    assert s.build.jobs == 8
    assert s.build.make_vars == (("WITHOUT_CLEAN", "yes"),)
    assert s.build.timeout_hours == 12.0 and isinstance(s.build.timeout_hours, float)
    assert s.build.silent_timeout_minutes == 120.0
    assert s.source.from_ == "system-metadata" and s.source.path is None
    assert s.store == StoreSettings(root="/var/lib/fruix-dagster/artifacts", keep=5)

    (g,) = s.guests
    assert (g.name, g.kind, g.system, g.host, g.port, g.user) == ("fruix-amd64", "xcpng", "fruix", "192.0.2.10", 22, "root")
    assert g.private_key == f"{home}/.ssh/fruix_ed25519"
    assert g.known_hosts == f"{home}/.ssh/known_hosts"
    assert not os.path.exists(g.private_key)
    x = g.xcpng
    assert x is not None
    assert (x.url, x.username, x.password_env, x.vm_uuid, x.vm_name) == (
        "https://xcp.example/", "root", "XCPNG_PASSWORD", VM_UUID, None
    )
    assert (x.after, x.revert_to, x.boot_timeout, x.insecure, x.request_timeout) == ("keep-running", None, 600, False, 60.0)

    (t,) = s.targets
    assert (t.name, t.guest, t.target, t.target_arch, t.kernconf) == ("amd64", "fruix-amd64", "amd64", "amd64", "GENERIC")
    assert s.guest_for("amd64") is g
    assert s.target_names == ("amd64",)


def test_defaults_applied(tmp_path):
    s = load_settings(write(tmp_path, LOCAL_GUEST + TARGET), env(tmp_path))
    assert s.build == BuildSettings()
    assert s.build.jobs == 8 and s.build.build_root == "/var/tmp/fruix-native-build" and s.build.retries == 3
    assert s.build.min_free_gib == 12.0 and s.build.clean is False
    assert s.source == SourceSettings()
    assert s.source.metadata == "/run/current-system/metadata/store-layout.scm" and s.source.store_root == "/frx/store"
    assert s.store == StoreSettings(root="/var/lib/fruix-dagster/artifacts", keep=5)
    assert s.slices == SliceSettings()
    assert s.slices.headers == ("usr/include/**", "usr/share/mk/**")
    assert s.schedule == ScheduleSettings(cron="0 2 * * *", timezone="UTC", enabled=True)
    assert s.sensor == SensorSettings(interval_seconds=300, enabled=True)
    assert s.history == HistorySettings(size_change_pct=10.0)
    (g,) = s.guests
    assert (g.kind, g.system, g.host, g.port, g.user, g.known_hosts, g.xcpng) == ("local", "plain", None, None, None, None, None)
    assert (g.connect_timeout, g.keepalive, g.io_timeout) == (15.0, 30, 300.0)
    (t,) = s.targets
    assert (t.target, t.target_arch, t.kernconf) == ("amd64", "amd64", "GENERIC")


def test_remote_guest_defaults_and_host_paths(tmp_path, monkeypatch):
    environ = env(tmp_path)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative host paths must NOT resolve against the cwd
    p = write(
        conf_dir,
        """
        [store]
        root = "artifacts/../store"
        [[guest]]
        name = "s"
        kind = "ssh"
        host = "builder.example.org"
        private_key = "keys/id_ed25519"
        passphrase_env = "KEY_PASS"
        [[guest]]
        name = "x"
        kind = "xcpng"
        password_env = "SSH_PW"
        xcpng = { url = "http://xcp.example:8080", password_env = "XAPI_PW", vm_name = "fruix builder", after = "revert", revert_to = "clean", address_cidr = "192.0.2.7/24", ca_file = "~/ca.pem" }
        [[target]]
        name = "arm64"
        guest = "x"
        target = "arm64"
        [[target]]
        name = "riscv"
        guest = "s"
        target_arch = "riscv64"
        """,
    )
    s = load_settings(p, environ)
    assert s.store.root == str(conf_dir / "store")
    sg, xg = s.guests
    assert (sg.system, sg.port, sg.user) == ("fruix", 22, "root")
    assert sg.private_key == str(conf_dir / "keys" / "id_ed25519")
    assert sg.known_hosts == environ["HOME"] + "/.ssh/known_hosts"
    assert sg.passphrase_env == "KEY_PASS" and sg.password_env is None
    assert xg.host is None and xg.private_key is None and xg.password_env == "SSH_PW"
    assert xg.xcpng.url == "http://xcp.example:8080/"
    assert xg.xcpng.vm_name == "fruix builder" and xg.xcpng.vm_uuid is None
    assert xg.xcpng.username == "root"
    assert (xg.xcpng.after, xg.xcpng.revert_to) == ("revert", "clean")
    assert xg.xcpng.address_cidr == "192.0.2.0/24"
    assert xg.xcpng.ca_file == environ["HOME"] + "/ca.pem"
    # FreeBSD's own TARGET <-> TARGET_ARCH defaults.
    assert (s.targets[0].target, s.targets[0].target_arch) == ("arm64", "aarch64")
    assert (s.targets[1].target, s.targets[1].target_arch) == ("riscv", "riscv64")
    assert s.guest_for("riscv") is sg


def test_make_vars_sorted_hashable_and_per_step(tmp_path):
    p = write(
        tmp_path,
        """
        [build]
        make_vars = { WITH_B = "1", A_FIRST = "x y", "SRCCONF" = "/dev/null", "MK.DOTTED" = "v" }
        kernel_make_vars = { WITH_B = "kernel", KERNFAST = "yes" }
        world_make_vars = { WITHOUT_TESTS = "yes" }
        """ + LOCAL_GUEST + TARGET,
    )
    s = load_settings(p, env(tmp_path))
    assert s.build.make_vars == (("A_FIRST", "x y"), ("MK.DOTTED", "v"), ("SRCCONF", "/dev/null"), ("WITH_B", "1"))
    hash(s)
    assert dict(s.build.make_vars_for("buildkernel"))["WITH_B"] == "kernel"
    assert "KERNFAST" in dict(s.build.make_vars_for("installkernel"))
    assert "KERNFAST" not in dict(s.build.make_vars_for("buildworld"))
    assert dict(s.build.make_vars_for("distribution"))["WITHOUT_TESTS"] == "yes"
    assert "WITHOUT_TESTS" not in dict(s.build.make_vars_for("buildkernel"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.build.jobs = 3  # type: ignore[misc]


def test_key_files_keep_defaults_and_add_extras(tmp_path):
    p = write(tmp_path, '[slices]\nkey_files = ["boot/kernel/kernel", "bin/sh"]\n' + LOCAL_GUEST + TARGET)
    s = load_settings(p, env(tmp_path))
    assert s.slices.key_files == ("boot/kernel/kernel", "boot/loader.efi", "usr/include/sys/param.h", "bin/sh")


def test_lookup_helpers(tmp_path):
    s = load_settings(write(tmp_path, LOCAL_GUEST + TARGET), env(tmp_path))
    assert s.guest("a").name == "a"
    assert s.target("amd64").guest == "a"
    with pytest.raises(ConfigError, match=r"no \[\[guest\]\] named 'b' \(known guests: a\)"):
        s.guest("b")
    with pytest.raises(ConfigError, match=r"no \[\[target\]\] named 'i386' \(known targets: amd64\)"):
        s.guest_for("i386")


# --------------------------------------------------------------------------
# Embedded default and FRUIX_CONFIG
# --------------------------------------------------------------------------


def test_embedded_default_with_dagster_home(tmp_path):
    dh = tmp_path / "dh"
    s = embedded_default({"DAGSTER_HOME": str(dh), "HOME": "/nonexistent"})
    assert s.source_file == EMBEDDED_SOURCE
    assert s.build.build_root == f"{dh}/fruix/build-root"
    assert s.store.root == f"{dh}/fruix/artifacts"
    assert s.build.jobs == (os.cpu_count() or 1)
    assert s.source.from_ == "path"
    assert s.source.path == str(Path(S.__file__).resolve().parent.parent / "sample_src")  # fruix_dagster/sample_src
    assert [(g.name, g.kind, g.system) for g in s.guests] == [("local", "local", "plain")]
    (t,) = s.targets
    assert (t.name, t.guest, t.target, t.target_arch, t.kernconf) == ("amd64", "local", "amd64", "amd64", "GENERIC")
    assert s.schedule == ScheduleSettings() and s.slices == SliceSettings()


def test_embedded_default_without_dagster_home(tmp_path):
    environ = env(tmp_path)
    s = embedded_default(environ)
    base = environ["HOME"] + "/.local/state/fruix-dagster"
    assert s.build.build_root == base + "/fruix/build-root"
    assert s.store.root == base + "/fruix/artifacts"
    # Empty DAGSTER_HOME counts as unset.
    assert embedded_default({**environ, "DAGSTER_HOME": ""}) == s


def test_embedded_default_relative_dagster_home_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = embedded_default({"DAGSTER_HOME": "dh/./x/..", "HOME": "/nonexistent"})
    assert s.build.build_root == f"{tmp_path}/dh/fruix/build-root"


def test_fruix_config_selects_the_file(tmp_path):
    environ = env(tmp_path)
    assert load_settings(None, environ).source_file == EMBEDDED_SOURCE
    assert load_settings(None, {**environ, "FRUIX_CONFIG": ""}).source_file == EMBEDDED_SOURCE
    p = write(tmp_path, "[build]\njobs = 3\n" + LOCAL_GUEST + TARGET)
    s = load_settings(None, {**environ, "FRUIX_CONFIG": str(p)})
    assert s.build.jobs == 3 and s.source_file == str(p)


def test_fruix_config_missing_file_gives_clear_message(tmp_path):
    missing = tmp_path / "nope" / "fruix.toml"
    with pytest.raises(ConfigError) as ei:
        load_settings(None, {"FRUIX_CONFIG": str(missing), "HOME": str(tmp_path)})
    msg = str(ei.value)
    assert str(missing) in msg
    assert "No such file or directory" in msg
    assert "set FRUIX_CONFIG to a readable TOML file or unset it for the embedded default" in msg
    assert "\n" not in msg and "Traceback" not in msg


def test_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="set FRUIX_CONFIG to a readable TOML file"):
        load_settings(tmp_path, env(tmp_path))  # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[build]\nmake = "m\xe4ke"\n')
    with pytest.raises(ConfigError, match="not valid TOML: the file is not UTF-8"):
        load_settings(bad, env(tmp_path))


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

RICH = f"""
[build]
jobs = 32
build_root = "/usr/obj/fruix build"
make = "/usr/bin/make"
make_vars = {{ "A.B" = "dotted", QUOTES = "say \\"hi\\" \\\\ 'there'", SHELLY = "$(rm -rf /); `x` && y", NL = "line1 line2 spaced", UNI = "\u00e9\u2603" }}
kernel_make_vars = {{ KERNFAST = "yes" }}
world_make_vars = {{ WITHOUT_TESTS = "yes" }}
clean = true
timeout_hours = 0.5
silent_timeout_minutes = 1e-3
min_free_gib = 0
retries = 0

[source]
from = "path"
path = "/usr/src"
name = "main+local.1"

[store]
root = "relative/store"
keep = 1

[slices]
headers = ["usr/include/**"]
bootloader = ["boot/loader.efi"]
key_files = ["bin/sh"]

[schedule]
cron = "*/15   1-5,7 * * 0"
timezone = "Europe/Berlin"
enabled = false

[sensor]
interval_seconds = 10
enabled = false

[history]
size_change_pct = 2.5

[[guest]]
name = "local"
kind = "local"
system = "fruix"
io_timeout = 5

[[guest]]
name = "ssh.one"
kind = "ssh"
system = "plain"
host = "2001:db8::1"
port = 2222
user = "builder"
password_env = "SSH_PW"
keepalive = 0
connect_timeout = 1.5

[[guest]]
name = "xcp"
kind = "xcpng"
private_key = "/k/id"
passphrase_env = "PP"
known_hosts = "/k/known\\thosts"  # a control character a host path may hold: rendered and read back
xcpng = {{ url = "https://xcp.example/api", password_env = "XAPI_PW", vm_uuid = "{VM_UUID.upper()}", after = "shutdown", revert_to = "pre-build", boot_timeout = 1, insecure = true, request_timeout = 0.25 }}

[[target]]
name = "amd64"
guest = "local"

[[target]]
name = "ppc64"
guest = "xcp"
target = "powerpc"
target_arch = "powerpc64"
kernconf = "GENERIC64.debug"
"""


@pytest.mark.parametrize("case", ["design", "rich", "embedded"])
def test_render_load_round_trip(tmp_path, case):
    environ = env(tmp_path, XAPI_PW="hunter2-secret", DAGSTER_HOME=str(tmp_path / "dh"))
    if case == "embedded":
        original = embedded_default(environ)
    else:
        original = load_settings(write(tmp_path, DESIGN_EXAMPLE if case == "design" else RICH), environ)
    text = render_settings(original)
    tomllib.loads(text)  # valid TOML
    assert "hunter2-secret" not in text
    other = tmp_path / "other"
    other.mkdir()
    again = load_settings(write(other, text, "rendered.toml"), environ)
    assert again == original
    assert hash(again) == hash(original)
    assert render_settings(again).splitlines()[2:] == text.splitlines()[2:]


def test_rich_file_values(tmp_path):
    s = load_settings(write(tmp_path, RICH), env(tmp_path))
    mv = dict(s.build.make_vars)
    assert mv["SHELLY"] == "$(rm -rf /); `x` && y"
    assert mv["NL"] == "line1 line2 spaced"
    assert mv["A.B"] == "dotted"
    assert s.build.silent_timeout_minutes == 0.001
    assert s.store.root == str(tmp_path / "relative" / "store")
    assert s.schedule.cron == "*/15 1-5,7 * * 0"
    assert s.guests[2].xcpng.vm_uuid == VM_UUID  # canonical lower case
    assert s.guests[2].xcpng.url == "https://xcp.example/api/"
    assert s.guests[1].host == "2001:db8::1"


def test_guest_kinds_are_a_discriminated_union_and_code_built_models_are_validated(tmp_path):
    s = load_settings(write(tmp_path, RICH), env(tmp_path))
    assert [type(g) for g in s.guests] == [S.LocalGuest, S.SshGuest, S.XcpngGuest]
    assert all(isinstance(g, S.Guest) for g in s.guests)
    x = s.guests[2].xcpng
    y = dataclasses.replace(x, url="http://other.example", vm_uuid=VM_UUID.upper())
    assert (y.url, y.vm_uuid) == ("http://other.example/", VM_UUID)  # the same normalization as a file
    with pytest.raises(pydantic.ValidationError):
        dataclasses.replace(x, boot_timeout=0)


def test_check_config_text(tmp_path):
    p = write(tmp_path, DESIGN_EXAMPLE)
    text = check_config_text(p, env(tmp_path))
    data = tomllib.loads(text)
    assert data["guest"][0]["xcpng"]["vm_uuid"] == VM_UUID
    assert data["build"]["retries"] == 3  # defaults written out
    with pytest.raises(ConfigError):
        check_config_text(tmp_path / "missing.toml", env(tmp_path))


# --------------------------------------------------------------------------
# Invalid files: one ConfigError naming the dotted key and the found value
# --------------------------------------------------------------------------

SSH = '[[guest]]\nname = "a"\nkind = "ssh"\n'
XCP = '[[guest]]\nname = "a"\nkind = "xcpng"\nprivate_key = "/k"\n'
XT = f'url = "https://x/", password_env = "P", vm_uuid = "{VM_UUID}"'

# (id, file text, dotted key, found value as it must appear in the message)
INVALID = [
    ("toml-syntax", "[build\njobs = 8\n" + LOCAL_GUEST + TARGET, "not valid TOML", "line 1"),
    ("unknown-top-level", "colour = 1\n" + LOCAL_GUEST + TARGET, "top level", "'colour'"),
    ("unknown-nested", "[build]\njbos = 8\n" + LOCAL_GUEST + TARGET, "build", "'jbos'"),
    ("unknown-in-xcpng", XCP + f"xcpng = {{ {XT}, colour = 1 }}\n" + TARGET, "guest[0].xcpng", "'colour'"),
    ("unknown-in-make-vars-is-a-name", "[build]\nmake_vars = { \"BAD-NAME\" = \"x\" }\n" + LOCAL_GUEST + TARGET, "build.make_vars", "'BAD-NAME'"),
    ("unknown-in-target", LOCAL_GUEST + TARGET + 'arch = "x"\n', "target[0]", "'arch'"),
    ("jobs-zero", "[build]\njobs = 0\n" + LOCAL_GUEST + TARGET, "build.jobs", "got 0"),
    ("jobs-string", '[build]\njobs = "8"\n' + LOCAL_GUEST + TARGET, "build.jobs", "'8'"),
    ("jobs-bool", "[build]\njobs = true\n" + LOCAL_GUEST + TARGET, "build.jobs", "true"),
    ("jobs-float", "[build]\njobs = 8.0\n" + LOCAL_GUEST + TARGET, "build.jobs", "8.0"),
    ("build-root-slash", '[build]\nbuild_root = "/"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'/'"),
    ("build-root-relative", '[build]\nbuild_root = "var/tmp/b"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'var/tmp/b'"),
    ("build-root-dotdot", '[build]\nbuild_root = "/var/tmp/../b"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'/var/tmp/../b'"),
    ("build-root-shallow", '[build]\nbuild_root = "/var"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'/var'"),
    ("build-root-trailing", '[build]\nbuild_root = "/var/tmp/b/"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'/var/tmp/b/'"),
    ("build-root-double-slash", '[build]\nbuild_root = "/var//b"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'/var//b'"),
    ("build-root-tilde", '[build]\nbuild_root = "~/b"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'~/b'"),
    ("build-root-newline", '[build]\nbuild_root = "/var/tmp/a\\nb"\n' + LOCAL_GUEST + TARGET, "build.build_root", "'/var/tmp/a\\nb'"),
    ("make-with-space", '[build]\nmake = "make -s"\n' + LOCAL_GUEST + TARGET, "build.make", "'make -s'"),
    ("make-var-reserved", '[build]\nmake_vars = { DESTDIR = "/tmp/x" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.DESTDIR", "'/tmp/x'"),
    ("kernel-var-reserved", '[build]\nkernel_make_vars = { KERNCONF = "LINT" }\n' + LOCAL_GUEST + TARGET, "build.kernel_make_vars.KERNCONF", "'LINT'"),
    ("make-var-bad-name", '[build]\nmake_vars = { "1ABC" = "x" }\n' + LOCAL_GUEST + TARGET, "build.make_vars", "'1ABC'"),
    ("make-var-int", "[build]\nmake_vars = { WITH_X = 1 }\n" + LOCAL_GUEST + TARGET, "build.make_vars.WITH_X", "got 1 (an integer"),
    ("make-var-bool", "[build]\nworld_make_vars = { WITH_X = true }\n" + LOCAL_GUEST + TARGET, "build.world_make_vars.WITH_X", "got true"),
    ("make-var-nul", '[build]\nmake_vars = { X = "a\\u0000b" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.X", "'a\\x00b'"),
    # issue 13 item 8: a control character in a make variable value (a newline would end make's command line)
    ("make-var-newline", '[build]\nmake_vars = { X = "a\\nrm -rf /" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.X", "'a\\nrm -rf /'"),
    ("make-var-cr", '[build]\nkernel_make_vars = { KERNFAST = "yes\\r" }\n' + LOCAL_GUEST + TARGET, "build.kernel_make_vars.KERNFAST", "'yes\\r'"),
    ("make-var-tab", '[build]\nworld_make_vars = { WITHOUT_TESTS = "yes\\tno" }\n' + LOCAL_GUEST + TARGET, "build.world_make_vars.WITHOUT_TESTS", "'yes\\tno'"),
    ("make-var-esc", '[build]\nmake_vars = { "MK.X" = "\\u001b[31mred" }\n' + LOCAL_GUEST + TARGET, 'build.make_vars."MK.X"', "'\\x1b[31mred'"),
    ("make-var-del", '[build]\nmake_vars = { X = "a\\u007f" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.X", "'a\\x7f'"),
    ("make-var-unit-separator", '[build]\nmake_vars = { X = "a\\u001fb" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.X", "'a\\x1fb'"),
    ("make-var-c1-csi", '[build]\nmake_vars = { X = "a\\u009b2J" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.X", "'a\\x9b2J'"),
    ("make-var-unquoted-dot", '[build]\nmake_vars = { A.B = "x" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.A", "a table"),
    ("clean-with-without-clean", '[build]\nclean = true\nmake_vars = { WITHOUT_CLEAN = "yes" }\n' + LOCAL_GUEST + TARGET, "build.make_vars.WITHOUT_CLEAN", "'yes'"),
    ("timeout-zero", "[build]\ntimeout_hours = 0\n" + LOCAL_GUEST + TARGET, "build.timeout_hours", "got 0"),
    ("timeout-inf", "[build]\ntimeout_hours = inf\n" + LOCAL_GUEST + TARGET, "build.timeout_hours", "inf"),
    ("min-free-negative", "[build]\nmin_free_gib = -1.5\n" + LOCAL_GUEST + TARGET, "build.min_free_gib", "-1.5"),
    ("retries-negative", "[build]\nretries = -1\n" + LOCAL_GUEST + TARGET, "build.retries", "-1"),
    ("owner-not-team-or-mail", '[assets]\nowners = ["bob"]\n' + LOCAL_GUEST + TARGET, "assets.owners[0]", "'bob'"),
    ("asset-tag-bad-value", '[assets]\ntags = { tier = "a b" }\n' + LOCAL_GUEST + TARGET, "assets.tags.tier", "'a b'"),
    ("stdout-cap-negative", "[build]\nstdout_max_mib = -2\n" + LOCAL_GUEST + TARGET, "build.stdout_max_mib", "-2"),
    ("keep-steps-zero", "[build]\nkeep_steps = 0\n" + LOCAL_GUEST + TARGET, "build.keep_steps", "0"),
    ("source-path-missing", '[source]\nfrom = "path"\n' + LOCAL_GUEST + TARGET, "source.path", "nothing"),
    ("source-path-with-metadata", '[source]\npath = "/usr/src"\n' + LOCAL_GUEST + TARGET, "source.path", "'/usr/src'"),
    ("source-from-bad", '[source]\nfrom = "git"\n' + LOCAL_GUEST + TARGET, "source.from", "'git'"),
    ("source-name-bad", '[source]\nname = "-x"\n' + LOCAL_GUEST + TARGET, "source.name", "'-x'"),
    ("store-keep-zero", "[store]\nkeep = 0\n" + LOCAL_GUEST + TARGET, "store.keep", "got 0"),
    ("store-collect-retries-negative", "[store]\ncollect_retries = -1\n" + LOCAL_GUEST + TARGET,
     "store.collect_retries", "-1"),
    ("store-collect-backoff-negative", "[store]\ncollect_backoff_seconds = -2\n" + LOCAL_GUEST + TARGET,
     "store.collect_backoff_seconds", "-2"),
    ("store-keep-log-days-negative", "[store]\nkeep_log_days = -1\n" + LOCAL_GUEST + TARGET,
     "store.keep_log_days", "-1"),
    ("no-root-user-root", '[build]\nno_root_user = "root"\n' + LOCAL_GUEST + TARGET, "build.no_root_user", "'root'"),
    ("no-root-user-spaces", '[build]\nno_root_user = "a b; rm"\n' + LOCAL_GUEST + TARGET, "build.no_root_user",
     "'a b; rm'"),
    ("store-root-nul", '[store]\nroot = "a\\u0000"\n' + LOCAL_GUEST + TARGET, "store.root", "'a\\x00'"),
    ("build-as-array", "[[build]]\njobs = 1\n" + LOCAL_GUEST + TARGET, "build", "(an array)"),
    ("guest-as-table", '[guest]\nname = "a"\nkind = "local"\n' + TARGET, "guest", "(a table)"),
    ("no-guest", TARGET, "guest", "nothing"),
    ("guest-kind-bad", LOCAL_GUEST + '[[guest]]\nname = "b"\nkind = "vmware"\n' + TARGET, "guest[1].kind", "'vmware'"),
    ("guest-kind-missing", '[[guest]]\nname = "a"\n' + TARGET, "guest[0].kind", "nothing"),
    ("guest-name-bad", '[[guest]]\nname = "a b"\nkind = "local"\n' + TARGET, "guest[0].name", "'a b'"),
    ("duplicate-guests", LOCAL_GUEST + LOCAL_GUEST + TARGET, "guest[1].name", "'a'"),
    ("guest-system-bad", LOCAL_GUEST + 'system = "linux"\n' + TARGET, "guest[0].system", "'linux'"),
    ("local-with-host", LOCAL_GUEST + 'host = "192.0.2.1"\n' + TARGET, "guest[0].host", "'192.0.2.1'"),
    ("local-with-xcpng", LOCAL_GUEST + f"xcpng = {{ {XT} }}\n" + TARGET, "guest[0].xcpng", "a table"),
    ("ssh-without-host", SSH + 'private_key = "/k"\n' + TARGET, "guest[0].host", "nothing"),
    ("ssh-bad-host", SSH + 'host = "-oProxyCommand=x"\nprivate_key = "/k"\n' + TARGET, "guest[0].host", "'-oProxyCommand=x'"),
    ("ssh-without-key-or-password", SSH + 'host = "h"\n' + TARGET, "guest[0].private_key", "neither"),
    ("ssh-port-range", SSH + 'host = "h"\nprivate_key = "/k"\nport = 70000\n' + TARGET, "guest[0].port", "70000"),
    ("ssh-user-bad", SSH + 'host = "h"\nprivate_key = "/k"\nuser = "Root"\n' + TARGET, "guest[0].user", "'Root'"),
    ("ssh-passphrase-without-key", SSH + 'host = "h"\npassword_env = "P"\npassphrase_env = "Q"\n' + TARGET, "guest[0].passphrase_env", "'Q'"),
    ("ssh-with-xcpng", SSH + f'host = "h"\nprivate_key = "/k"\nxcpng = {{ {XT} }}\n' + TARGET, "guest[0].xcpng", "a table"),
    ("keepalive-negative", LOCAL_GUEST + "keepalive = -1\n" + TARGET, "guest[0].keepalive", "-1"),
    ("io-timeout-zero", LOCAL_GUEST + "io_timeout = 0.0\n" + TARGET, "guest[0].io_timeout", "0.0"),
    ("xcpng-without-table", XCP + TARGET, "guest[0].xcpng", "nothing"),
    ("xcpng-uuid-and-name", XCP + f'xcpng = {{ {XT}, vm_name = "builder-vm" }}\n' + TARGET, "guest[0].xcpng", "'builder-vm'"),
    ("xcpng-neither-uuid-nor-name", XCP + 'xcpng = { url = "https://x/", password_env = "P" }\n' + TARGET, "guest[0].xcpng", "neither"),
    ("xcpng-uuid-not-canonical", XCP + 'xcpng = { url = "https://x/", password_env = "P", vm_uuid = "90490f2e" }\n' + TARGET, "guest[0].xcpng.vm_uuid", "'90490f2e'"),
    ("xcpng-bad-after", XCP + f'xcpng = {{ {XT}, after = "destroy" }}\n' + TARGET, "guest[0].xcpng.after", "'destroy'"),
    ("xcpng-revert-without-revert-to", XCP + f'xcpng = {{ {XT}, after = "revert" }}\n' + TARGET, "guest[0].xcpng.revert_to", "nothing"),
    ("xcpng-insecure-and-ca-file", XCP + f'xcpng = {{ {XT}, insecure = true, ca_file = "/etc/ca.pem" }}\n' + TARGET, "guest[0].xcpng.insecure", "'/etc/ca.pem'"),
    ("xcpng-url-scheme", XCP + f'xcpng = {{ url = "ftp://x/", password_env = "P", vm_uuid = "{VM_UUID}" }}\n' + TARGET, "guest[0].xcpng.url", "'ftp://x/'"),
    ("xcpng-password-env-missing", XCP + f'xcpng = {{ url = "https://x/", vm_uuid = "{VM_UUID}" }}\n' + TARGET, "guest[0].xcpng.password_env", "nothing"),
    ("xcpng-bad-cidr", XCP + f'xcpng = {{ {XT}, address_cidr = "192.0.2.0/33" }}\n' + TARGET, "guest[0].xcpng.address_cidr", "'192.0.2.0/33'"),
    ("xcpng-boot-timeout", XCP + f"xcpng = {{ {XT}, boot_timeout = 0 }}\n" + TARGET, "guest[0].xcpng.boot_timeout", "got 0"),
    ("target-unknown-guest", LOCAL_GUEST + '[[target]]\nname = "amd64"\nguest = "x"\n', "target[0].guest", "'x'"),
    ("target-guest-missing", LOCAL_GUEST + '[[target]]\nname = "amd64"\n', "target[0].guest", "nothing"),
    ("target-name-bad", LOCAL_GUEST + '[[target]]\nname = "amd.64"\nguest = "a"\n', "target[0].name", "'amd.64'"),
    ("duplicate-targets", LOCAL_GUEST + TARGET + TARGET, "target[1].name", "'amd64'"),
    ("target-arch-mismatch", LOCAL_GUEST + TARGET + 'target = "amd64"\ntarget_arch = "aarch64"\n', "target[0].target_arch", "'aarch64'"),
    ("target-arch-charset", LOCAL_GUEST + TARGET + 'target = "AMD64"\n', "target[0].target", "'AMD64'"),
    ("kernconf-bad", LOCAL_GUEST + TARGET + 'kernconf = "GEN ERIC"\n', "target[0].kernconf", "'GEN ERIC'"),
    ("empty-targets", "target = []\n" + LOCAL_GUEST, "target", "an empty array"),
    ("no-targets", LOCAL_GUEST, "target", "nothing"),
    ("bad-cron-fields", '[schedule]\ncron = "0 2 * *"\n' + LOCAL_GUEST + TARGET, "schedule.cron", "'0 2 * *'"),
    ("bad-cron-charset", '[schedule]\ncron = "0 2 * * MON"\n' + LOCAL_GUEST + TARGET, "schedule.cron", "'0 2 * * MON'"),
    ("bad-timezone", '[schedule]\ntimezone = "Mars/Olympus"\n' + LOCAL_GUEST + TARGET, "schedule.timezone", "'Mars/Olympus'"),
    ("timezone-directory", '[schedule]\ntimezone = "Europe"\n' + LOCAL_GUEST + TARGET, "schedule.timezone", "'Europe'"),
    ("sensor-interval", "[sensor]\ninterval_seconds = 9\n" + LOCAL_GUEST + TARGET, "sensor.interval_seconds", "got 9"),
    ("enabled-string", '[sensor]\nenabled = "yes"\n' + LOCAL_GUEST + TARGET, "sensor.enabled", "'yes'"),
    ("history-pct", "[history]\nsize_change_pct = 0\n" + LOCAL_GUEST + TARGET, "history.size_change_pct", "got 0"),
    ("glob-dotdot", '[slices]\nheaders = ["usr/../etc/**"]\n' + LOCAL_GUEST + TARGET, "slices.headers[0]", "'usr/../etc/**'"),
    ("glob-absolute", '[slices]\nbootloader = ["boot/x", "/boot/loader"]\n' + LOCAL_GUEST + TARGET, "slices.bootloader[1]", "'/boot/loader'"),
    ("glob-empty-component", '[slices]\nheaders = ["usr//include"]\n' + LOCAL_GUEST + TARGET, "slices.headers[0]", "'usr//include'"),
    ("glob-list-empty", "[slices]\nheaders = []\n" + LOCAL_GUEST + TARGET, "slices.headers", "an empty array"),
    ("glob-not-list", '[slices]\nheaders = "usr/include/**"\n' + LOCAL_GUEST + TARGET, "slices.headers", "'usr/include/**'"),
    ("key-file-glob", '[slices]\nkey_files = ["boot/kernel/*"]\n' + LOCAL_GUEST + TARGET, "slices.key_files[0]", "'boot/kernel/*'"),
]


@pytest.mark.parametrize("text,key,found", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_file(tmp_path, text, key, found):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env(tmp_path))
    msg = str(ei.value)
    assert isinstance(ei.value, FruixError)
    assert msg.startswith(f"{p}: "), msg
    assert f": {key}: " in msg or f": {key} " in msg, msg
    assert found in msg, msg
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert len(msg) < 600, msg


def test_invalid_cases_are_distinct():
    assert len(INVALID) >= 16
    assert len({c[0] for c in INVALID}) == len(INVALID)
    assert len({c[1] for c in INVALID}) == len(INVALID)


def test_message_shapes(tmp_path):
    """The exact wording of a few messages the brief spells out."""
    def msg(text):
        with pytest.raises(ConfigError) as ei:
            load_settings(write(tmp_path, text), env(tmp_path))
        return str(ei.value).split(": ", 1)[1]

    assert msg("[build]\njobs = 0\n" + LOCAL_GUEST + TARGET) == "build.jobs: must be an integer ≥ 1, got 0"
    assert msg("[build]\njbos = 8\n" + LOCAL_GUEST + TARGET).startswith(
        "build: unknown key 'jbos' (known keys: build_root, clean, "
    )
    assert "did you mean 'jobs'?" in msg("[build]\njbos = 8\n" + LOCAL_GUEST + TARGET)
    assert msg(LOCAL_GUEST + '[[guest]]\nname = "b"\nkind = "vmware"\n' + TARGET) == (
        "guest[1].kind: must be one of local, ssh, xcpng, got 'vmware'"
    )
    assert msg('[[guest]]\nname = "a"\nkind = "local"\n[[guest]]\nname = "b"\nkind = "local"\n'
               '[[target]]\nname = "t"\nguest = "x"\n') == (
        "target[0].guest: names no [[guest]] (known guests: a, b), got 'x'"
    )
    assert "quote it" in msg("[build]\nmake_vars = { WITH_X = 1 }\n" + LOCAL_GUEST + TARGET)
    assert "write 8 without quotes" in msg('[build]\njobs = "8"\n' + LOCAL_GUEST + TARGET)
    reserved = msg('[build]\nmake_vars = { MAKEOBJDIRPREFIX = "/x" }\n' + LOCAL_GUEST + TARGET)
    assert "reserved" in reserved and "<build_root>/obj" in reserved


def test_every_reserved_make_var_is_rejected_and_srcconf_is_not(tmp_path):
    assert set(S.RESERVED_MAKE_VARS) == {"MAKEOBJDIRPREFIX", "DESTDIR", "TARGET", "TARGET_ARCH", "KERNCONF", "DB_FROM_SRC"}
    for name in S.RESERVED_MAKE_VARS:
        for table in ("make_vars", "kernel_make_vars", "world_make_vars"):
            p = write(tmp_path, f'[build]\n{table} = {{ {name} = "x" }}\n' + LOCAL_GUEST + TARGET)
            with pytest.raises(ConfigError, match=rf"build\.{table}\.{name}: is reserved"):
                load_settings(p, env(tmp_path))
    p = write(tmp_path, '[build]\nmake_vars = { SRCCONF = "/dev/null", destdir = "lower case is not DESTDIR" }\n' + LOCAL_GUEST + TARGET)
    assert dict(load_settings(p, env(tmp_path)).build.make_vars)["SRCCONF"] == "/dev/null"


@pytest.mark.parametrize("char,named", [("\n", "a newline, U+000A"), ("\r", "a carriage return, U+000D"),
                                        ("\t", "a tab, U+0009"), ("\x00", "NUL, U+0000"), ("\x1b", "ESC, U+001B"),
                                        ("\x7f", "DEL, U+007F"), ("\x1f", "a control character, U+001F"),
                                        ("\x85", "a control character, U+0085")])
def test_make_var_control_character_is_refused_with_one_message(tmp_path, char, named):
    """Issue 13 item 8: make would run the text after a newline as a second shell command."""
    for table in ("make_vars", "kernel_make_vars", "world_make_vars"):
        doc = {"build": {table: {"WITH_X": f"yes{char}touch /tmp/pwned"}},
               "guest": [{"name": "a", "kind": "local"}], "target": [{"name": "amd64", "guest": "a"}]}
        p = tmp_path / "ctl.toml"
        p.write_text("".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items()), encoding="utf-8")
        with pytest.raises(ConfigError) as ei:
            load_settings(p, env(tmp_path))
        msg = str(ei.value)
        assert msg.startswith(f"{p}: build.{table}.WITH_X: must be a string without control characters "
                              "(make would run the text after a newline as a second shell command), got "), msg
        assert f"({named}, at position 3); write the value on one line" in msg, msg
        assert "\n" not in msg and "\r" not in msg and char not in msg, msg
    # spaces, quotes and shell syntax stay allowed: they reach make as one argv word
    p = write(tmp_path, '[build]\nmake_vars = { X = "a b  c; $(d) \\"e\\"" }\n' + LOCAL_GUEST + TARGET)
    assert dict(load_settings(p, env(tmp_path)).build.make_vars)["X"] == 'a b  c; $(d) "e"'


def test_misplaced_top_level_key_gets_a_hint(tmp_path):
    p = write(tmp_path, LOCAL_GUEST + "target = []\n")
    with pytest.raises(ConfigError, match=r"guest\[0\]: unknown key 'target' .*move it above the first \[table\] header"):
        load_settings(p, env(tmp_path))


def test_secret_like_env_name_is_not_echoed(tmp_path):
    p = write(tmp_path, SSH + 'host = "h"\npassword_env = "hunter2!pw"\n' + TARGET)
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env(tmp_path))
    assert "guest[0].password_env" in str(ei.value)
    assert "hunter2" not in str(ei.value)


def test_settings_module_does_not_import_dagster():
    code = "import sys, fruix_dagster.settings; sys.exit(1 if any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules) else 0)"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------
# Fuzz: any TOML document gives a Settings or one ConfigError, nothing else
# --------------------------------------------------------------------------

_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["/", "/var/tmp/x", "..", "local", "ssh", "xcpng", "revert", "path", "a", VM_UUID, "https://x/", "~", "0 2 * * *"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
_paths = st.sampled_from(
    [("build",), ("source",), ("store",), ("slices",), ("schedule",), ("sensor",), ("history",), ("guest",), ("target",)]
    + [("build", k) for k in known_keys(S.BuildSettings)]
    + [("source", k) for k in known_keys(S.SourceSettings)]
    + [("slices", k) for k in known_keys(S.SliceSettings)]
    + [("schedule", k) for k in known_keys(S.ScheduleSettings)]
    + [("guest", 0, k) for k in known_keys(S.Guest)]
    + [("guest", 0, "xcpng", k) for k in known_keys(S.XcpngSettings)]
    + [("target", 0, k) for k in known_keys(S.Target)]
)


def _base_doc() -> dict:
    return tomllib.loads(DESIGN_EXAMPLE)


@hsettings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(_paths, _values), min_size=1, max_size=3))
def test_fuzz_never_anything_but_config_error(tmp_path, mutations):
    doc = _base_doc()
    for path, value in mutations:
        node = doc
        for part in path[:-1]:
            node = node[part] if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and part < len(node) else None
            if not isinstance(node, (dict, list)):
                break
        else:
            if isinstance(node, dict):
                node[path[-1]] = value
    text = "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items())
    p = tmp_path / "fuzz.toml"
    p.write_text(text, encoding="utf-8")
    try:
        s = load_settings(p, {"HOME": "/home/fuzz"})
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith(f"{p}: ") and "\n" not in msg and "Traceback" not in msg
    else:
        r = tmp_path / "rendered.toml"
        r.write_text(render_settings(s), encoding="utf-8")
        assert load_settings(r, {"HOME": "/home/fuzz"}) == s
