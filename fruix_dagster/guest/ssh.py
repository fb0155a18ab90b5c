"""The ``ssh`` transport: a running guest reached with paramiko.

* Host keys are checked strictly against the configured ``known_hosts``; an
  unknown or changed key is refused (HostKeyError, never retried) with the
  presented key's SHA256 fingerprint and the exact line that would trust it.
  Nothing is sent to the guest before the key is accepted.
* Key authentication (passphrase from an environment variable) or a password
  from an environment variable; the secrets never appear in messages.
* Connect timeout, keepalive, and an I/O timeout on every channel: a frozen
  peer is noticed by the channel timeout, not by keepalive.
* ``run`` reconnects with backoff on transport failures (bounded by
  ``retries``); every command this project runs through ``run`` is
  idempotent by design (see ``detached``).  Streams are not retried here:
  their consumers restart them whole.
* Throughput: aes128-gcm preferred when the server offers it, an 8 MiB
  window, 256 KiB packets, and reads of at least the window size.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import paramiko

from fruix_dagster.errors import GuestError, HostKeyError, TransportError
from fruix_dagster.guest.transport import ByteStream, CommandResult, Transport

WINDOW = 8 << 20
PACKET = 256 << 10
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")


def host_key_entry_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SshTransport(Transport):
    def __init__(
        self,
        *,
        host: str,
        port: int = 22,
        user: str = "root",
        known_hosts: str,
        private_key: str | None = None,
        passphrase_env: str | None = None,
        password_env: str | None = None,
        connect_timeout: float = 15.0,
        keepalive: int = 30,
        io_timeout: float = 300.0,
        retries: int = 3,
        environ: dict[str, str] | None = None,
        on_reconnect=None,
    ):
        self.host, self.port, self.user = host, port, user
        self.known_hosts = known_hosts
        self.private_key = private_key
        self.passphrase_env = passphrase_env
        self.password_env = password_env
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.io_timeout = io_timeout
        self.retries = retries
        self.environ = os.environ if environ is None else environ
        self.on_reconnect = on_reconnect
        self.description = f"ssh {user}@{host_key_entry_name(host, port)}"
        self._t: paramiko.Transport | None = None
        #: how many times a lost connection was re-established
        self.reconnects = 0

    # -- connection ------------------------------------------------------------
    def _connect(self) -> paramiko.Transport:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise TransportError(
                f"{self.description}: expected an SSH server to accept a connection within "
                f"{self.connect_timeout:g} s, got: {exc}; check that the guest is up and the address "
                f"and port are right") from exc
        t = paramiko.Transport(sock, default_window_size=WINDOW, default_max_packet_size=PACKET)
        opts = t.get_security_options()
        supported = tuple(opts.ciphers)
        opts.ciphers = tuple(c for c in _FAST_CIPHERS if c in supported) + tuple(
            c for c in supported if c not in _FAST_CIPHERS)
        try:
            t.start_client(timeout=self.connect_timeout)
            self._verify_host_key(t)
            self._authenticate(t)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            t.close()
            raise TransportError(f"{self.description}: SSH handshake failed: {exc}") from exc
        except BaseException:
            t.close()
            raise
        if self.keepalive:
            t.set_keepalive(self.keepalive)
        return t

    def _verify_host_key(self, t: paramiko.Transport) -> None:
        key = t.get_remote_server_key()
        name = host_key_entry_name(self.host, self.port)
        line = f"{name} {key.get_name()} {key.get_base64()}"
        try:
            known = paramiko.HostKeys(self.known_hosts)
        except FileNotFoundError:
            known = paramiko.HostKeys()
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(
                f"{self.description}: cannot read known_hosts {self.known_hosts}: {exc}") from exc
        entries = known.lookup(name)
        if not entries:
            raise HostKeyError(
                f"{self.description}: refused: the guest's host key is not in {self.known_hosts} "
                f"(expected a known key for {name}, found none). The guest presented "
                f"{key.get_name()} {key.fingerprint}. If that is the guest's key (compare with "
                f"`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on its console), add this line "
                f"to {self.known_hosts}:\n{line}")
        expected = entries.get(key.get_name())
        if expected is None or expected != key:
            have = ", ".join(f"{k} {v.fingerprint}" for k, v in entries.items())
            raise HostKeyError(
                f"{self.description}: refused: the guest presented {key.get_name()} "
                f"{key.fingerprint}, but {self.known_hosts} expects {have} for {name} — the host "
                f"key CHANGED (reinstalled guest, or someone in the middle). If the change is "
                f"legitimate, replace the old entry with:\n{line}")

    def _authenticate(self, t: paramiko.Transport) -> None:
        errors = []
        if self.private_key:
            passphrase = self.environ.get(self.passphrase_env) if self.passphrase_env else None
            try:
                pkey = paramiko.PKey.from_path(os.path.expanduser(self.private_key), passphrase)
            except FileNotFoundError as exc:
                raise GuestError(
                    f"{self.description}: private key {self.private_key} was expected to exist, "
                    f"it does not; fix private_key in the settings file") from exc
            except (paramiko.SSHException, ValueError) as exc:
                hint = (f" (is {self.passphrase_env} set?)" if self.passphrase_env
                        else " (encrypted? name the passphrase variable in passphrase_env)")
                raise GuestError(
                    f"{self.description}: cannot load private key {self.private_key}: "
                    f"{type(exc).__name__}{hint}") from exc
            try:
                t.auth_publickey(self.user, pkey)
                if t.is_authenticated():
                    return
            except paramiko.AuthenticationException as exc:
                if not t.is_active():
                    # The connection died during login ("transport shut down or saw
                    # EOF"): a transport failure, retried like any other drop, not a
                    # refused key.
                    raise
                errors.append(f"key {self.private_key} ({pkey.fingerprint}) was refused: {exc}")
        if self.password_env:
            password = self.environ.get(self.password_env)
            if not password:
                errors.append(f"password variable {self.password_env} is not set")
            else:
                try:
                    t.auth_password(self.user, password)
                    if t.is_authenticated():
                        return
                except paramiko.AuthenticationException:
                    if not t.is_active():
                        raise  # died during login: a transport failure (see above)
                    errors.append(f"the password from {self.password_env} was refused")
        raise GuestError(
            f"{self.description}: expected to log in as {self.user}, but "
            + "; ".join(errors or ["no credentials are configured"])
            + "; check the guest's authorized_keys and the settings file")

    def _transport(self) -> paramiko.Transport:
        if self._t is not None and self._t.is_active():
            return self._t
        if self._t is not None:
            self._t.close()
            self._t = None
            self.reconnects += 1
            if self.on_reconnect:
                self.on_reconnect(self.reconnects)
        self._t = self._connect()
        return self._t

    def connect(self) -> None:
        """Connect now (fails fast on a refused host key or bad credentials)."""
        self._with_retries(lambda: self._transport())

    def close(self) -> None:
        if self._t is not None:
            self._t.close()
            self._t = None

    def _with_retries(self, fn):
        attempt = 0
        while True:
            try:
                return fn()
            except TransportError:
                if self._t is not None:
                    self._t.close()
                if attempt >= self.retries:
                    raise
                time.sleep(min(10.0, 0.5 * (2 ** attempt)))
                attempt += 1

    # -- commands ----------------------------------------------------------------
    def _open_channel(self, argv: Sequence[str]) -> paramiko.Channel:
        t = self._transport()
        try:
            chan = t.open_session(window_size=WINDOW, max_packet_size=PACKET,
                                  timeout=self.connect_timeout)
            chan.settimeout(self.io_timeout)
            chan.exec_command(shlex.join(argv))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"{self.description}: could not start a command: {exc}") from exc
        return chan

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        argv = tuple(argv)
        return self._with_retries(lambda: self._run_once(argv, input, timeout))

    def _run_once(self, argv: tuple[str, ...], input: bytes | None,
                  timeout: float | None) -> CommandResult:
        chan = self._open_channel(argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if input:
                chan.sendall(input)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            chan.settimeout(0.5)
            silent_since = time.monotonic()
            while True:
                got = False
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(WINDOW)
                    got = True
                try:
                    data = chan.recv(WINDOW)
                except socket.timeout:
                    data = None
                if data:
                    out += data
                    got = True
                elif data == b"":
                    break
                now = time.monotonic()
                if got:
                    silent_since = now
                elif now - silent_since > self.io_timeout:
                    raise TransportError(
                        f"{self.description}: no data for {self.io_timeout:g} s from `{argv[0]}`; "
                        f"the guest seems frozen")
                if deadline is not None and now > deadline:
                    raise GuestError(
                        f"{self.description}: `{argv[0]}` was expected to finish within "
                        f"{timeout:g} s and did not")
            status = self._exit_status(chan, argv)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(WINDOW)
            return CommandResult(argv, status, bytes(out), bytes(err))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"{self.description}: connection lost running `{argv[0]}`: {exc}") from exc
        finally:
            _close_quietly(chan)

    def _exit_status(self, chan: paramiko.Channel, argv: Sequence[str]) -> int:
        if not chan.status_event.wait(self.io_timeout):
            raise TransportError(
                f"{self.description}: `{argv[0]}` closed its output but no exit status arrived "
                f"within {self.io_timeout:g} s")
        status = chan.exit_status
        if status == -1 or (self._t is not None and not self._t.is_active()):
            raise TransportError(
                f"{self.description}: the connection was lost while `{argv[0]}` ran "
                f"(no exit status)")
        return status

    @contextmanager
    def open_stream(self, argv: Sequence[str]) -> Iterator[ByteStream]:
        argv = tuple(argv)
        chan = self._with_retries(lambda: self._open_channel(argv))
        stream = _ChannelReader(chan, self)
        try:
            chan.shutdown_write()
            yield stream
            status = self._exit_status(chan, argv)
            err = bytearray()
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(WINDOW)
            CommandResult(argv, status, b"", bytes(err)).check(f"streaming from {self.description}")
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"{self.description}: connection lost streaming `{argv[0]}`: {exc}") from exc
        finally:
            _close_quietly(chan)


def _close_quietly(chan: paramiko.Channel) -> None:
    """Close a channel whose connection may be dead: paramiko then raises a bare
    EOFError from close(), which would replace the TransportError being raised."""
    try:
        chan.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass


class _ChannelReader:
    """``read(n)`` over a channel, receiving at least the window size per call.

    paramiko's ``recv(n)`` with n smaller than what it has buffered copies the
    backlog on every call; so we always ask for the whole window and hand it
    out in slices of a memoryview (one copy per byte).
    """

    def __init__(self, chan: paramiko.Channel, owner: SshTransport):
        self.chan = chan
        self.owner = owner
        self._buf = memoryview(b"")
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [bytes(self._buf)]
            self._buf = memoryview(b"")
            while chunk := self._recv():
                parts.append(chunk)
            return b"".join(parts)
        if not self._buf:
            if self._eof:
                return b""
            data = self._recv()
            if len(data) <= n:
                return data
            self._buf = memoryview(data)
        data, self._buf = self._buf[:n], self._buf[n:]
        return bytes(data)

    def _recv(self) -> bytes:
        if self._eof:
            return b""
        try:
            data = self.chan.recv(WINDOW)
        except socket.timeout as exc:
            raise TransportError(
                f"{self.owner.description}: the stream delivered nothing for "
                f"{self.owner.io_timeout:g} s; the guest seems frozen") from exc
        if not data:
            self._eof = True
            # A killed connection looks like a clean EOF: on a live one the exit
            # status arrives with (or right after) the EOF; paramiko also sets
            # status_event when the channel closes, so this wait is short.
            self.chan.status_event.wait(self.owner.io_timeout)
            if self.chan.exit_status == -1 or (self.owner._t is not None and not self.owner._t.is_active()):
                raise TransportError(f"{self.owner.description}: the connection was lost mid-stream")
        return data
