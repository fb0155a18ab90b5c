"""Real servers on loopback for the notification tests.

``SmtpServer``: aiosmtpd in a thread, STARTTLS with a test CA certificate and
AUTH (only over TLS, as aiosmtpd requires by default); every accepted message
is parsed with :mod:`email` and kept.  With ``tls=False`` it offers neither STARTTLS nor AUTH.  ``answer`` makes it refuse (e.g.
``"451 4.3.0 try later"``) at DATA.

``HttpServer``: :class:`http.server.ThreadingHTTPServer`; every request's
method, path, headers and body are kept; ``status`` is what it answers,
``hang`` makes it read the request and never answer (until stopped).

Both are started and stopped by the test that uses them (context managers).
"""

from __future__ import annotations

import email
import email.policy
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.test_ca import CertAuthority


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Collected:
    def __init__(self) -> None:
        self.items: list = []
        self.attempts = 0
        self.cond = threading.Condition()

    def add(self, item) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 30.0) -> list:
        """Wait until at least ``n`` items arrived; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.items) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} items within {timeout} s, got {len(self.items)}")
                self.cond.wait(left)
            return list(self.items)


class _Handler:
    def __init__(self, server: "SmtpServer") -> None:
        self.server = server

    async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        with self.server.collected.cond:
            self.server.collected.attempts += 1
        if self.server.answer:
            return self.server.answer
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.server.collected.add(msg)
        return "250 OK"


class SmtpServer:
    """aiosmtpd on 127.0.0.1 with STARTTLS (certificate from a test CA) and AUTH."""

    def __init__(self, directory: Path, user: str = "fruix", password: str = "s3cret-smtp-pw",
                 tls: bool = True) -> None:
        self.ca = CertAuthority(directory / "ca")
        self.cert = self.ca.issue()
        self.user, self.password = user, password
        self.port = free_port()
        self.answer = ""
        self.collected = _Collected()
        self.logins: list[str] = []
        tls_args = dict(tls_context=self.cert.server_context(), require_starttls=True,
                        authenticator=self._auth, auth_require_tls=True) if tls else {}
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **tls_args)

    def _auth(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user \
            and auth_data.password.decode() == self.password
        self.logins.append(auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?")
        return AuthResult(success=ok, handled=False)

    @property
    def messages(self) -> list[EmailMessage]:
        return list(self.collected.items)

    def __enter__(self) -> "SmtpServer":
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    status: int = 200
    hang: bool = False
    collected: _Collected = field(default_factory=_Collected)

    def __post_init__(self) -> None:
        outer = self
        self._release = threading.Event()

        class H(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.collected.cond:
                    outer.collected.attempts += 1
                if outer.hang:
                    outer._release.wait(60)
                    return
                outer.collected.add(Request(self.command, self.path, dict(self.headers.items()), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PUT = _any

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def requests(self) -> list[Request]:
        return list(self.collected.items)

    def __enter__(self) -> "HttpServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
