"""Shared pieces of the xcpng tests (no tests here).

An ``xcpng`` guest in these tests is a :class:`FakeXapiServer` VM wired to a
real :class:`SshGuest`: starting the VM starts the guest's sshd, shutting it
down stops it, and its guest metrics report the guest's loopback address.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.support.xapi_fake import FakeVM, FakeXapiServer

PASSWORD_ENV = "FRUIX_TEST_XAPI_PASSWORD"
#: distinctive, so a search for it in logs and files cannot match anything else
PASSWORD = "xapi-S3cr3t:pässwörd/7c1f-ZZQ"
WRONG_PASSWORD = "wrong-xapi-pw:91b3-QQZ"


def use_password(server: FakeXapiServer, monkeypatch, value: str = PASSWORD) -> None:
    """The pool's password is PASSWORD; the environment holds ``value``."""
    server.password = PASSWORD
    monkeypatch.setenv(PASSWORD_ENV, value)


def stopped_guest(factory, name: str = "vm-guest"):
    """An SshGuest whose port and known_hosts are fixed (started once, then stopped)."""
    guest = factory(name=name, start=True)
    guest.stop()
    return guest


def wire_vm(server: FakeXapiServer, guest, *, name_label: str = "fruix-amd64", power_state: str = "Halted",
            address_after: float = 0.3, **kw) -> FakeVM:
    """A fake VM whose power state drives ``guest`` and whose metrics report its address."""
    vm = server.make_vm(name_label=name_label, power_state=power_state, **kw)
    vm.on_start(guest.start)
    vm.on_shutdown(guest.stop)
    if power_state == "Running":
        guest.start()
    server.set_guest_address(vm.uuid, guest.address, after_seconds=address_after)
    return vm


def xcpng_guest_table(guest, vm: FakeVM, server: FakeXapiServer, *, listener: str = "http",
                      static: bool = False, name: str = "fruix-amd64", **xcpng) -> dict:
    """A ``[[guest]]`` table of kind xcpng for ``guest`` behind ``vm``."""
    g = guest.ssh_settings(name=name, connect_timeout=5.0, io_timeout=60.0)
    g["kind"] = "xcpng"
    if not static:
        g.pop("host")
    x = {"url": server.url(listener), "username": "root", "password_env": PASSWORD_ENV,
         "vm_uuid": vm.uuid, "boot_timeout": 30, "request_timeout": 10}
    if listener == "https":
        x["ca_file"] = str(server.ca_file)
    x.update(xcpng)
    g["xcpng"] = {k: v for k, v in x.items() if v is not None}
    return g


FAKE_SHUTDOWN = """#!/bin/sh
# test stand-in for FreeBSD's shutdown(8): record the request, power nothing off
printf '%s\\n' "$*" > /var/tmp/fruix-test-poweroff
exit 0
"""


def install_fake_shutdown(guest) -> Path:
    """Put a harmless ``shutdown`` first on the guest's PATH (/usr/local/sbin, in the guest's
    private /usr overlay) and return the host path of the file it writes when run.

    Must be called while the guest is stopped (the overlay's upper dir is not
    changed under a mounted overlay)."""
    assert not guest.running
    sbin = guest.state_dir / "usr-upper" / "local" / "sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    script = sbin / "shutdown"
    script.write_text(FAKE_SHUTDOWN)
    script.chmod(0o755)
    return guest.guest_path("/var/tmp/fruix-test-poweroff")


def halt_when(path: Path, vm: FakeVM, stop: threading.Event) -> threading.Thread:
    """A thread that powers ``vm`` off (as the guest would) once ``path`` appears."""
    def watch() -> None:
        while not stop.is_set():
            if path.exists():
                vm.set_power_state("Halted")
                return
            stop.wait(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


class BannerServer:
    """A TCP listener on 127.0.0.1 that greets every connection with an SSH banner."""

    def __init__(self, banner: bytes = b"SSH-2.0-OpenSSH_9.6 FreeBSD\r\n") -> None:
        self.banner = banner
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                conn.sendall(self.banner)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def banner_server():
    server = BannerServer()
    try:
        yield server
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
