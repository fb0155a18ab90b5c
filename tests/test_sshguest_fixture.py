"""The SSH test guest itself: a real sshd on loopback, shaped like a Fruix guest.

These tests use the system OpenSSH client (strict host-key checking against
the guest's known_hosts) and paramiko, and check every property the product's
SSH tests rely on.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

try:
    from tests.support.fixtures import ssh_guest, ssh_guest_factory  # noqa: F401
    from tests.support.sshguest import DEFAULT_SOURCE_TREE, DEV_PROFILE, SshGuest, render_store_layout
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from support.fixtures import ssh_guest, ssh_guest_factory  # noqa: F401
    from support.sshguest import DEFAULT_SOURCE_TREE, DEV_PROFILE, SshGuest, render_store_layout



@pytest.fixture
def ssh_guest_source_tree(tmp_path_factory) -> Path:
    """The repository's sample tree; a small FreeBSD-shaped stand-in while it does not exist yet."""
    if DEFAULT_SOURCE_TREE.is_dir() and any(DEFAULT_SOURCE_TREE.iterdir()):
        return DEFAULT_SOURCE_TREE
    root = tmp_path_factory.mktemp("stand-in-src")
    files = {
        "Makefile": "all:\n\t@echo buildworld\n",
        "sys/sys/param.h": "#define __FreeBSD_version 1500000\n",
        "sys/amd64/conf/GENERIC": "ident GENERIC\n",
        "share/mk/bsd.prog.mk": "# bsd.prog.mk\n",
        "stand/lua/loader.lua": "-- loader\n",
        "bin/sh/main.c": "int main(void) { return 0; }\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink("sys/sys", root / "sys-link")
    return root


def ssh(guest: SshGuest, command: str, *options: str, input: bytes | None = None, timeout: float = 60):
    return subprocess.run(guest.ssh_command(command, *options), input=input, capture_output=True,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


def ok(guest: SshGuest, command: str) -> str:
    r = ssh(guest, command)
    assert r.returncode == 0, (command, r.returncode, r.stdout, r.stderr)
    return r.stdout.decode()


def manifest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            else:
                out[rel] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def paramiko_client(guest: SshGuest, known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or guest.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def namespace_is_gone(ns: tuple[int, int]) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                st = os.stat(f"/proc/{entry.name}/ns/mnt")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == ns:
                return False
    return True


def mounts_mentioning(text: str) -> list[str]:
    """Mount table lines naming ``text``, across the mount namespaces of all processes."""
    hits = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                info = Path(f"/proc/{entry.name}/mountinfo").read_text()
            except OSError:
                continue
            hits += [f"{entry.name}: {line}" for line in info.splitlines() if text in line]
    return hits


# --------------------------------------------------------------------- login


def test_system_ssh_client_logs_in_with_strict_host_key_checking(ssh_guest):
    assert ssh_guest.host == "127.0.0.2"
    assert ssh_guest.user == "root"
    assert ok(ssh_guest, "id -u").strip() == "0"
    kh = ssh_guest.known_hosts.read_text().splitlines()
    assert kh == [f"[127.0.0.2]:{ssh_guest.port} {ssh_guest.host_public_key()}"]
    assert ssh_guest.authorized_keys.read_text().split()[:2] == Path(f"{ssh_guest.client_key}.pub").read_text().split()[:2]


def test_paramiko_logs_in_and_sees_the_recorded_host_key(ssh_guest):
    client = paramiko_client(ssh_guest)
    try:
        client.connect(ssh_guest.host, port=ssh_guest.port, username="root", key_filename=str(ssh_guest.client_key),
                       look_for_keys=False, allow_agent=False, timeout=10)
        server_key = client.get_transport().get_remote_server_key()
        assert server_key.fingerprint == ssh_guest.host_key_fingerprint
        assert ssh_guest.host_key_fingerprint.startswith("SHA256:")
        _, stdout, _ = client.exec_command("echo $0; realpath /usr/include")
        assert stdout.read().decode().split() == ["dash", f"{DEV_PROFILE}/usr/include"]
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_wrong_or_missing_host_key_is_refused(ssh_guest, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts.wrong"
    wrong.write_text(f"[{ssh_guest.host}]:{ssh_guest.port} {kind} {blob}\n")
    r = ssh(ssh_guest, "true", "-o", f"UserKnownHostsFile={wrong}")
    assert r.returncode == 255
    assert b"Host key verification failed" in r.stderr or b"HOST IDENTIFICATION HAS CHANGED" in r.stderr, r.stderr

    empty = tmp_path / "known_hosts.empty"
    empty.write_text("")
    r = ssh(ssh_guest, "true", "-o", f"UserKnownHostsFile={empty}")
    assert r.returncode == 255 and b"Host key verification failed" in r.stderr, r.stderr

    client = paramiko_client(ssh_guest, wrong)
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(ssh_guest.host, port=ssh_guest.port, username="root", key_filename=str(ssh_guest.client_key),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def test_only_the_client_key_is_authorized_and_passwords_are_off(ssh_guest, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    argv = ssh_guest.ssh_command("true")
    argv[argv.index("-i") + 1] = str(stranger)
    r = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    assert r.returncode == 255 and b"Permission denied" in r.stderr, r.stderr

    client = paramiko_client(ssh_guest)
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(ssh_guest.host, port=ssh_guest.port, username="root", password="anything",
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def test_optional_password_login(ssh_guest_factory):
    host_shadow = Path("/etc/shadow").read_bytes()
    guest = ssh_guest_factory("pw", password="fruix-test-pw")
    client = paramiko_client(guest)
    try:
        client.connect(guest.host, port=guest.port, username="root", password="fruix-test-pw",
                       look_for_keys=False, allow_agent=False, timeout=10)
        _, stdout, _ = client.exec_command("echo $0")
        assert stdout.read().decode().strip() == "dash"
    finally:
        client.close()
    client = paramiko_client(guest)
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(guest.host, port=guest.port, username="root", password="wrong",
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()
    assert Path("/etc/shadow").read_bytes() == host_shadow  # the password exists only inside the guest
    assert ok(guest, "grep -c '^root:[$]6[$]' /etc/shadow").strip() == "1"
    assert ok(guest, "id -un").strip() == "root"  # key login still works too


# ------------------------------------------------------------ Fruix shape


def test_login_shell_is_dash_and_tar_is_bsdtar(ssh_guest):
    lines = ok(ssh_guest, "echo $0; readlink /proc/$$/exe; tar --version").splitlines()
    assert lines[0] == "dash"
    assert lines[1] == "/usr/bin/dash"
    assert lines[2].startswith("bsdtar ")
    # the host is untouched
    assert Path("/etc/passwd").read_text().startswith("root:") and ":/bin/dash\n" not in Path("/etc/passwd").read_text().splitlines()[0] + "\n"
    assert b"GNU tar" in subprocess.run(["tar", "--version"], capture_output=True).stdout


def test_usr_include_and_mk_resolve_into_the_development_profile_and_cc_works(ssh_guest):
    out = ok(ssh_guest, "realpath /usr/include /usr/share/mk; readlink /run/current-development;"
                        " for t in cc make ld sha256sum; do command -v $t; done").splitlines()
    assert out[:3] == [f"{DEV_PROFILE}/usr/include", f"{DEV_PROFILE}/usr/share/mk", DEV_PROFILE]
    assert all(line.startswith("/") for line in out[3:]) and len(out) == 7
    assert ok(ssh_guest, "test -f /usr/share/mk/sys.mk && test -f /run/current-development/usr/include/stdio.h && echo yes").strip() == "yes"
    assert os.path.realpath("/usr/include") == "/usr/include"  # host unchanged

    hello = b'#include <stdio.h>\nint main(void) { puts("hello from the guest"); return 0; }\n'
    r = ssh(ssh_guest, "mkdir -p /var/tmp/hello && cat > /var/tmp/hello/hello.c && cd /var/tmp/hello"
                       " && cc -o hello hello.c && ./hello", input=hello)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from the guest\n"
    assert (ssh_guest.guest_path("/var/tmp/hello") / "hello").is_file()
    assert not Path("/var/tmp/hello").exists()

    # the profile is read-only, like a store item
    r = ssh(ssh_guest, "touch /usr/include/fruix-probe")
    assert r.returncode != 0 and b"Read-only file system" in r.stderr


def test_source_store_is_read_only_and_matches_the_source_tree(ssh_guest, ssh_guest_source_tree):
    root = ssh_guest.source_root
    assert root == f"/frx/store/{ssh_guest.store_hash}-freebsd-source-default/tree"
    listing = ok(ssh_guest, f"cd {root} && find . -type f -exec sha256sum {{}} + ; find . -type l -exec sh -c 'for l; do echo \"link:$(readlink \"$l\")  $l\"; done' _ {{}} +")
    seen = {}
    for line in listing.splitlines():
        digest, rel = line.split("  ", 1)
        seen[rel[2:]] = digest
    assert seen == manifest(ssh_guest_source_tree)

    some_file = next(rel for rel, d in seen.items() if not d.startswith("link:"))
    for cmd in (f"touch {root}/new-file", f"echo x >> {root}/{some_file}", f"rm {root}/{some_file}",
                f"mkdir /frx/store/{'0' * 40}-intruder"):
        r = ssh(ssh_guest, cmd)
        assert r.returncode != 0, cmd
        assert b"Read-only file system" in r.stderr, (cmd, r.stderr)
    assert manifest(ssh_guest.guest_path(root)) == manifest(ssh_guest_source_tree)


def test_store_layout_is_readable_and_settable(ssh_guest):
    text = ok(ssh_guest, "cat /run/current-system/metadata/store-layout.scm")
    assert text.lstrip(";; ").count("(store-layout") == 1
    assert f'"{ssh_guest.source_store}"' in text
    assert text.count("(") == text.count(")")
    assert ok(ssh_guest, f"test -d {ssh_guest.source_store}/tree && echo yes").strip() == "yes"

    other = ssh_guest.add_source_store("a" * 40, "default")
    assert other == f"/frx/store/{'a' * 40}-freebsd-source-default"
    ssh_guest.set_store_layout(render_store_layout([other]))
    text = ok(ssh_guest, "cat /run/current-system/metadata/store-layout.scm")
    assert f'"{other}"' in text and ssh_guest.source_store not in text
    assert ok(ssh_guest, f"ls {other}/tree | wc -l").strip() != "0"
    ssh_guest.set_store_layout(b"(store-layout (version 1) (items ()))\n")
    assert ok(ssh_guest, "cat /run/current-system/metadata/store-layout.scm") == "(store-layout (version 1) (items ()))\n"


def test_exec_runs_inside_the_namespace_and_guest_path_maps_private_dirs(ssh_guest):
    r = ssh_guest.exec(["realpath", "/usr/include"])
    assert r.stdout.decode().strip() == f"{DEV_PROFILE}/usr/include"
    assert r.args == ["realpath", "/usr/include"]
    ssh_guest.exec(["sh", "-c", "cat > /var/tmp/fruix-native-build-probe"], input=b"probe\n")
    assert ssh_guest.guest_path("/var/tmp/fruix-native-build-probe").read_bytes() == b"probe\n"
    assert ok(ssh_guest, "cat /var/tmp/fruix-native-build-probe") == "probe\n"
    assert ssh_guest.exec(["false"], check=False).returncode == 1
    with pytest.raises(subprocess.CalledProcessError):
        ssh_guest.exec(["false"])
    assert ssh_guest.guest_path("/run/current-system/metadata/store-layout.scm").is_file()
    with pytest.raises(ValueError):
        ssh_guest.guest_path("/etc/passwd")


def test_ssh_settings_is_a_guest_table(ssh_guest):
    s = ssh_guest.ssh_settings()
    assert s == {"name": "guest", "kind": "ssh", "host": "127.0.0.2", "port": ssh_guest.port, "user": "root",
                 "private_key": str(ssh_guest.client_key), "known_hosts": str(ssh_guest.known_hosts)}
    assert ssh_guest.ssh_settings(name="fruix-amd64")["name"] == "fruix-amd64"


# ------------------------------------------------------------- isolation


def test_two_guests_have_private_var_tmp_frx_and_run(ssh_guest_factory):
    a = ssh_guest_factory("guest-a")
    b = ssh_guest_factory("guest-b", store_hash="b" * 40)
    assert a.host != b.host
    ok(a, "mkdir -p /var/tmp/fruix-native-build && echo a > /var/tmp/fruix-native-build/who && echo a > /run/who")
    ok(b, "mkdir -p /var/tmp/fruix-native-build && echo b > /var/tmp/fruix-native-build/who")
    assert ok(a, "cat /var/tmp/fruix-native-build/who") == "a\n"
    assert ok(b, "cat /var/tmp/fruix-native-build/who") == "b\n"
    assert ssh(b, "cat /run/who").returncode != 0
    assert ssh(a, f"ls /frx/store/{'b' * 40}-freebsd-source-default").returncode != 0
    assert ok(b, f"ls -d /frx/store/{'b' * 40}-freebsd-source-default/tree").strip()
    assert not Path("/var/tmp/fruix-native-build/who").exists()
    assert not Path(f"/frx/store/{'b' * 40}-freebsd-source-default").exists()  # host's /frx untouched
    assert a.guest_path("/var/tmp/fruix-native-build/who").read_text() == "a\n"
    assert b.guest_path("/var/tmp/fruix-native-build/who").read_text() == "b\n"


def test_state_persists_across_restart(ssh_guest):
    ok(ssh_guest, "mkdir -p /var/tmp/fruix-native-build/obj && echo kept > /var/tmp/fruix-native-build/obj/f")
    port, fp, pid = ssh_guest.port, ssh_guest.host_key_fingerprint, ssh_guest.pid
    ssh_guest.stop()
    assert not ssh_guest.running
    ssh_guest.start()
    ssh_guest.start()  # idempotent
    assert (ssh_guest.port, ssh_guest.host_key_fingerprint) == (port, fp)
    assert ssh_guest.pid != pid  # (namespace inode numbers get reused at once, so compare pids)
    assert ok(ssh_guest, "cat /var/tmp/fruix-native-build/obj/f") == "kept\n"


# ------------------------------------------------------- processes, drops


def _wait(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_kill_connections_drops_the_session_but_detached_work_survives(ssh_guest):
    proc = subprocess.Popen(
        ssh_guest.ssh_command("nohup sh -c 'sleep 30' </dev/null >/dev/null 2>&1 & echo started; exec sleep 60"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready and proc.stdout.readline() == b"started\n"
        assert _wait(lambda: any(cmd == "sleep 30" for _, cmd in ssh_guest.processes()))
        assert len(ssh_guest.connection_pids()) >= 1
        assert proc.poll() is None  # session alive

        killed = ssh_guest.kill_connections()
        assert killed >= 1
        proc.wait(timeout=15)  # the client notices its connection is gone
        assert proc.returncode == 255, proc.stderr.read()
        assert ssh_guest.connection_pids() == []

        sleepers = [pid for pid, cmd in ssh_guest.processes() if cmd == "sleep 30"]
        assert len(sleepers) == 1
        time.sleep(0.3)
        assert Path(f"/proc/{sleepers[0]}").exists()
        assert ssh_guest.running and ok(ssh_guest, "echo again") == "again\n"  # listener still serves
        # the finished session's sshd may outlive its client by a moment
        assert _wait(lambda: ssh_guest.connection_pids() == [])
        assert ssh_guest.kill_connections() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_stop_leaves_no_processes_and_no_mounts(ssh_guest):
    ok(ssh_guest, "nohup sh -c 'sleep 300' </dev/null >/dev/null 2>&1 &")
    assert _wait(lambda: any(cmd == "sleep 300" for _, cmd in ssh_guest.processes()))
    pid, ns, port = ssh_guest.pid, ssh_guest.mount_namespace, ssh_guest.port
    state = str(ssh_guest.state_dir)
    host_mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET,SOURCE,OPTIONS"], capture_output=True, text=True).stdout
    assert state not in host_mounts  # never visible on the host
    assert mounts_mentioning(state)  # ... but present in the guest namespace

    ssh_guest.stop()

    assert not Path(f"/proc/{pid}").exists()
    assert namespace_is_gone(ns)
    assert mounts_mentioning(state) == []
    assert state not in subprocess.run(["findmnt", "-rn", "-o", "TARGET,SOURCE,OPTIONS"], capture_output=True, text=True).stdout
    assert ssh_guest.processes() == []
    with pytest.raises(OSError):
        socket.create_connection((ssh_guest.host, port), timeout=2).close()
    ssh_guest.stop()  # idempotent


def test_context_manager_and_start_time(tmp_path, ssh_guest_source_tree):
    guest = SshGuest(tmp_path / "timed", address="127.0.0.9", source_tree=ssh_guest_source_tree)
    t0 = time.monotonic()
    with guest:
        elapsed = time.monotonic() - t0
        assert guest.running and ok(guest, "echo up") == "up\n"
        ns = guest.mount_namespace
    print(f"SshGuest.start() took {guest.last_start_seconds:.3f}s (with-block entry {elapsed:.3f}s)")
    assert guest.last_start_seconds < 10
    assert not guest.running and namespace_is_gone(ns)
    t0 = time.monotonic()
    guest.start()
    try:
        print(f"SshGuest.start() (warm restart) took {guest.last_start_seconds:.3f}s")
    finally:
        guest.stop()


def test_state_dir_that_the_guest_would_hide_is_rejected():
    with pytest.raises(RuntimeError, match="shadows"):
        SshGuest("/var/tmp/guest-x")


def test_restart_moves_to_a_new_port_when_the_old_one_is_taken(ssh_guest, monkeypatch):
    import sys

    old_port = ssh_guest.port
    ssh_guest.stop()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((ssh_guest.host, old_port))
    squatter.listen()
    try:
        # pretend the port looked free when it was chosen, so sshd itself hits EADDRINUSE
        monkeypatch.setattr(sys.modules[SshGuest.__module__], "_port_free", lambda address, port: True)
        ssh_guest.start()
        assert ssh_guest.port != old_port
        assert ssh_guest.known_hosts.read_text().startswith(f"[{ssh_guest.host}]:{ssh_guest.port} ")
        assert ok(ssh_guest, "echo moved") == "moved\n"
        assert "Address already in use" in ssh_guest.sshd_log.read_text()
    finally:
        squatter.close()
