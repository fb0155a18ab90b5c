"""The ssh transport against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import hashlib
import shlex
import subprocess

import pytest

from fruix_dagster.errors import GuestError, HostKeyError
from fruix_dagster.guest.detached import DetachedSteps, StepSpec
from fruix_dagster.guest.ssh import SshTransport
from fruix_dagster.tree.manifest import manifest_from_tar


def transport_for(guest, **kw) -> SshTransport:
    args = dict(host=guest.host, port=guest.port, user=guest.user,
                known_hosts=str(guest.known_hosts), private_key=str(guest.client_key),
                connect_timeout=5, io_timeout=20, retries=3)
    args.update(kw)
    return SshTransport(**args)


def test_run_captures_output_status_and_input(ssh_guest):
    with transport_for(ssh_guest) as t:
        res = t.run(["sh", "-c", 'cat; echo err >&2; exit 3'], input=b"hello\n")
        assert (res.exit_status, res.stdout, res.stderr) == (3, b"hello\n", b"err\n")
        big = t.run(["sh", "-c", "head -c 20000000 /dev/zero; head -c 3000000 /dev/zero >&2"])
        assert (len(big.stdout), len(big.stderr)) == (20_000_000, 3_000_000)
        t.write_file("/var/tmp/x y", b"data\x00\xff")
        assert t.read_file("/var/tmp/x y") == b"data\x00\xff"
        assert t.free_bytes("/var/tmp") > 0
        assert t.run(["readlink", "/proc/self/exe"]).stdout  # runs at all
        shell = t.run(["sh", "-c", "readlink /proc/$PPID/exe"]).stdout.strip()
        assert shell.endswith(b"dash")


def test_argv_is_never_interpreted_by_the_guest_shell(ssh_guest):
    hostile = ["a b", "$(touch /var/tmp/pwned)", "`touch /var/tmp/pwned`", "x;touch /var/tmp/pwned",
               "'q'\"q\"", "line1\nline2", "*", "$HOME", "-n"]
    with transport_for(ssh_guest) as t:
        res = t.run(["printf", "%s\\0", *hostile])
        assert res.stdout.split(b"\0")[:-1] == [h.encode() for h in hostile]
        assert not t.run(["test", "-e", "/var/tmp/pwned"]).ok


def test_tar_stream_of_a_tree_matches_the_guest(ssh_guest):
    with transport_for(ssh_guest) as t:
        with t.tar_stream(ssh_guest.source_root) as stream:
            manifest = manifest_from_tar(stream)
        listing = t.run(["sh", "-c", 'cd "$1" && find . -type f | wc -l', "sh", ssh_guest.source_root])
        assert manifest.file_count >= int(listing.stdout)
        entry = manifest.get(b"Makefile")
        data = t.read_file(f"{ssh_guest.source_root}/Makefile")
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        with pytest.raises(GuestError, match="exited"):
            with t.tar_stream("/nonexistent") as stream:
                stream.read()


def test_unknown_host_key_is_refused_before_anything_runs(ssh_guest, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = transport_for(ssh_guest, known_hosts=str(empty))
    logins_before = ssh_guest.sshd_log.read_text().count("Accepted publickey")
    with pytest.raises(HostKeyError) as err:
        t.run(["touch", "/var/tmp/should-not-exist"])
    message = str(err.value)
    assert ssh_guest.host_key_fingerprint in message
    assert f"[{ssh_guest.host}]:{ssh_guest.port} ssh-ed25519 " in message
    assert "not in" in message
    assert not ssh_guest.exec(["test", "-e", "/var/tmp/should-not-exist"], check=False).returncode == 0
    assert ssh_guest.sshd_log.read_text().count("Accepted publickey") == logins_before


def test_changed_host_key_is_refused(ssh_guest, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    pub = (tmp_path / "k.pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{ssh_guest.host}]:{ssh_guest.port} {pub[0]} {pub[1]}\n")
    t = transport_for(ssh_guest, known_hosts=str(wrong))
    with pytest.raises(HostKeyError) as err:
        t.run(["touch", "/var/tmp/should-not-exist"])
    assert "CHANGED" in str(err.value)
    assert ssh_guest.host_key_fingerprint in str(err.value)
    assert ssh_guest.exec(["test", "-e", "/var/tmp/should-not-exist"], check=False).returncode != 0


def test_wrong_key_is_a_clear_error(ssh_guest, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    t = transport_for(ssh_guest, private_key=str(tmp_path / "k"))
    with pytest.raises(GuestError, match="expected to log in as root"):
        t.connect()


def test_reconnects_after_the_connection_is_killed(ssh_guest):
    with transport_for(ssh_guest) as t:
        assert t.run(["true"]).ok
        assert ssh_guest.kill_connections() >= 1
        assert t.run(["echo", "again"]).stdout == b"again\n"
        assert t.reconnects == 1


def test_detached_step_survives_a_killed_connection(ssh_guest):
    with transport_for(ssh_guest) as t:
        steps = DetachedSteps(t, "/var/tmp/fruix-native-build")
        spec = StepSpec("s", ("sh", "-c", "echo start; sleep 3; echo end"), "/", "c" * 64)
        launch = steps.launch(spec)
        assert ssh_guest.kill_connections() >= 1
        import time
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, _ = steps.poll(launch.step_dir, 0)
            if status.finished:
                break
            time.sleep(0.2)
        status, log = steps.poll(launch.step_dir, 0)
        assert (status.exit_status, log) == (0, b"start\nend\n")


def test_a_connection_lost_during_login_is_retried_not_called_a_refused_key(ssh_guest, monkeypatch):
    """The real sshd's connection dies in the middle of public-key login (as when the
    guest's network drops or a test kills connections): paramiko says
    "Authentication failed: transport shut down or saw EOF". That is a lost
    connection, retried like any other, not "key … was refused"."""
    import paramiko.auth_handler

    real = paramiko.auth_handler.AuthHandler.wait_for_response
    cut = []

    def cut_while_waiting_once(self, event):
        if not cut:
            cut.append(True)
            # The login request is on its way; the TCP connection to the real sshd
            # goes away before its answer arrives.
            self.transport.sock.shutdown(2)
        return real(self, event)

    monkeypatch.setattr(paramiko.auth_handler.AuthHandler, "wait_for_response", cut_while_waiting_once)
    with transport_for(ssh_guest, retries=2) as t:
        t.connect()
        assert t.run(["echo", "in"]).stdout == b"in\n"
    assert cut == [True]
    # A key the guest does not accept is still one clear refusal, not retried.
    monkeypatch.setattr(paramiko.auth_handler.AuthHandler, "wait_for_response", real)
    other = ssh_guest.state_dir / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(GuestError, match="was refused"):
        with transport_for(ssh_guest, private_key=str(other)) as t:
            t.connect()
