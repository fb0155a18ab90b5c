"""A XenAPI client with the safety the SDK leaves out.

The real ``XenAPI`` SDK (``import XenAPI``) does the wire format and the
re-login on ``SESSION_INVALID``; this module adds what an unattended build
farm needs around it:

* **Timeouts and TLS** (:mod:`~fruix_dagster.hypervisor.xapi_transport`).  Every
  connection gets ``request_timeout`` seconds for connect, TLS handshake and
  each read (the SDK's transport has none).  Certificates are verified
  against the system trust store by default; ``ca_file`` pins a CA (or the
  pool's own certificate) instead; ``insecure = true`` switches verification
  off and is logged every time.
* **Sessions.**  Login with originator ``fruix-dagster``; one SDK session per
  thread (an SDK session is one HTTP connection and not thread-safe); every
  session is logged out by :meth:`XapiClient.close`, guarded so a failing
  logout never hides the real error.
* **The password** is read from the environment variable named in the
  settings at login time and kept only inside the SDK session object.  No
  message, log line or exception text built here contains it (messages are
  scrubbed as a second line of defence).
* **Errors** (:mod:`~fruix_dagster.hypervisor.xapi_errors`).  Every failure
  becomes a :class:`~fruix_dagster.errors.HypervisorError` (or
  :class:`~fruix_dagster.errors.ConfigError` for a missing password variable
  or CA file) that says what was expected, what was found and what to do.
  :class:`XapiCallError` carries the XAPI error code and arguments so the
  lifecycle layer can decide between retry and failure.  Transport drops and
  refused connections are retried a bounded number of times; timeouts are
  not (the time is already spent).
* **Tasks.**  :meth:`XapiClient.run_task` calls ``Async.<method>``, polls the
  task until it leaves ``pending`` (bounded), strips the ``<value>`` wrapper
  off the result and always destroys the task.

Plain Python; no dagster import.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
import xml.parsers.expat
import xmlrpc.client
from typing import Any, Callable, Mapping

import XenAPI

from fruix_dagster.errors import ConfigError, HypervisorError
from fruix_dagster.hypervisor.xapi_errors import (
    CALL_ERRORS,
    TRANSIENT_POOL_CODES,
    XapiCallError,
    XapiTimeout,
    XapiUnreachable,
    call_failure,
    short,
    translate,
)
from fruix_dagster.hypervisor.xapi_transport import (
    TimeoutSafeTransport,
    TimeoutTransport,
    display_url,
    ssl_context,
)

__all__ = [
    "API_VERSION",
    "ORIGINATOR",
    "TimeoutSafeTransport",
    "TimeoutTransport",
    "XapiCallError",
    "XapiClient",
    "XapiTimeout",
    "XapiUnreachable",
    "display_url",
    "parse_task_result",
]

#: The ``originator`` of every session (shows in ``xe session-list`` / the pool's audit log).
ORIGINATOR = "fruix-dagster"
#: The API version sent at login (xapi accepts any; 1.0 is what the SDK's own examples send).
API_VERSION = "1.0"

Log = Callable[[str], None]

#: How often a dropped or refused connection is retried, and the first backoff (doubles).
CONNECT_RETRIES = 3
CONNECT_BACKOFF = 1.0

_RETRYABLE_NET = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                  http.client.RemoteDisconnected, http.client.BadStatusLine)

_VALUE_RE = re.compile(r"\s*<value>(.*)</value>\s*", re.DOTALL)
#: What ``xmlrpc.client.loads`` raises for a value that does not unmarshal: not XML (ExpatError),
#: incomplete (ResponseError), a bad <int>/<double>/<base64> (ValueError), a bad <boolean> (TypeError).
MALFORMED_VALUE = (xml.parsers.expat.ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError)


def parse_task_result(result: Any, *, log: Log | None = None, what: str = "a task") -> Any:
    """A task's ``result`` field without its XML-RPC ``<value>`` wrapper.

    xapi stores the result of an ``Async.*`` call as the marshalled XML-RPC
    value, e.g. ``"<value>OpaqueRef:…</value>"``; void results are ``""``.
    A wrapper that does not unmarshal (``MALFORMED_VALUE``) is stripped the
    simple way, and ``log`` is told so.
    """
    if not isinstance(result, str):
        return result
    text = result.strip()
    if not text:
        return ""
    if not text.startswith("<value"):
        return text
    try:
        params, _ = xmlrpc.client.loads(
            "<methodResponse><params><param>" + text + "</param></params></methodResponse>")
        return params[0] if params else ""
    except MALFORMED_VALUE as exc:  # not well-formed: strip the tags the simple way
        m = _VALUE_RE.fullmatch(text)
        stripped = m.group(1) if m else text
        if log is not None:
            log(f"xcpng: the result of {what} is not a well-formed XML-RPC value "
                f"({type(exc).__name__}: {exc}); using {stripped[:80]!r}")
        return stripped


class XapiClient:
    """XenAPI sessions (one per thread) on one pool, with timeouts, TLS and clean errors.

    ``where`` prefixes configuration errors (e.g. ``"/etc/fruix.toml: guest 'x'"``).
    """

    def __init__(
        self,
        url: str,
        username: str,
        password_env: str,
        *,
        ca_file: str | None = None,
        insecure: bool = False,
        request_timeout: float = 60.0,
        environ: Mapping[str, str] | None = None,
        log: Log | None = None,
        where: str = "xcpng",
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.display = display_url(self.url)
        self.username = username
        self.password_env = password_env
        self.ca_file = ca_file
        self.insecure = insecure
        self.request_timeout = float(request_timeout)
        self.environ = os.environ if environ is None else environ
        self.log: Log = log or (lambda _m: None)
        self.where = where
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[XenAPI.Session] = []
        self._ssl_context = None
        #: sessions logged in / logged out by this client (for logs and tests)
        self.logins = 0
        self.logouts = 0

    @classmethod
    def from_settings(cls, xs: Any, *, environ: Mapping[str, str] | None = None,
                      log: Log | None = None, where: str = "xcpng") -> "XapiClient":
        """From :class:`fruix_dagster.settings.XcpngSettings`."""
        return cls(xs.url, xs.username, xs.password_env, ca_file=xs.ca_file, insecure=xs.insecure,
                   request_timeout=xs.request_timeout, environ=environ, log=log, where=where)

    # -- secrets ----------------------------------------------------------------
    def _password(self) -> str:
        value = self.environ.get(self.password_env)
        if not value:
            raise ConfigError(
                f"{self.where}: xcpng.password_env: expected the environment variable "
                f"{self.password_env} to hold the XAPI password of {self.username!r} for "
                f"{self.display}, found it {'empty' if value == '' else 'not set'}; export "
                f"{self.password_env} in the environment of the Dagster process")
        return value

    def scrub(self, text: str) -> str:
        """``text`` with the password (if any is set) replaced by ``<redacted>``."""
        value = self.environ.get(self.password_env)
        if value and value in text:
            text = text.replace(value, "<redacted>")
        return text

    def error(self, cls: type[HypervisorError], message: str, **kw: Any) -> HypervisorError:
        """``cls(message)`` with the password scrubbed out of the message."""
        return cls(self.scrub(message), **kw)

    # -- transport --------------------------------------------------------------
    def _context(self):
        if self._ssl_context is None:
            self._ssl_context = ssl_context(insecure=self.insecure, ca_file=self.ca_file,
                                            where=self.where, display=self.display)
        return self._ssl_context

    def _transport(self) -> xmlrpc.client.Transport:
        if self.url.startswith("https:"):
            return TimeoutSafeTransport(self.request_timeout, context=self._context())
        return TimeoutTransport(self.request_timeout)

    # -- sessions ---------------------------------------------------------------
    def session(self) -> XenAPI.Session:
        """This thread's logged-in SDK session (logged in on first use)."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._login()
            self._local.session = s
        return s

    def _login(self) -> XenAPI.Session:
        password = self._password()
        if self.insecure and self.url.startswith("https:"):
            self.log(f"xcpng: WARNING: TLS certificate verification for {self.display} is OFF "
                     f"(insecure = true); anyone on the path can read the XAPI password")
        transport = self._transport()
        s = XenAPI.Session(self.url, transport=transport)
        s._fruix_transport = transport  # type: ignore[attr-defined]
        self._retrying("session.login_with_password",
                       lambda: s.xenapi.login_with_password(self.username, password, API_VERSION, ORIGINATOR),
                       transport)
        with self._lock:
            self._sessions.append(s)
            self.logins += 1
        self.log(f"xcpng: logged in to {self.display} as {self.username} (originator {ORIGINATOR})")
        return s

    def close(self) -> None:
        """Log out every session of this client.

        A logout the pool or the network fails (``CALL_ERRORS``) is logged, never raised: it must
        not hide the error that ended the run.  Anything else is a bug and is raised.
        """
        with self._lock:
            sessions, self._sessions = self._sessions, []
        self._local = threading.local()
        for s in sessions:
            try:
                if s.handle is not None:
                    s.xenapi.session.logout()
                with self._lock:
                    self.logouts += 1
            except CALL_ERRORS as exc:  # a failed logout must not hide anything
                self.log(self.scrub(f"xcpng: logout from {self.display} failed ({type(exc).__name__}: "
                                    f"{exc}); the session expires on the pool by itself"))
            finally:
                self._reset(getattr(s, "_fruix_transport", None))

    def __enter__(self) -> "XapiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------
    def call(self, method: str, *args: Any) -> Any:
        """``session.xenapi.<method>(*args)``; errors become HypervisorError subclasses."""
        s = self.session()
        fn: Any = s.xenapi
        for part in method.split("."):
            fn = getattr(fn, part)
        return self._retrying(method, lambda: fn(*args), getattr(s, "_fruix_transport", None))

    def _retrying(self, method: str, fn: Callable[[], Any], transport: Any) -> Any:
        attempt = 0
        while True:
            try:
                return fn()
            except XenAPI.Failure as exc:
                details = [str(d) for d in (exc.details or [])]
                if details and details[0] in TRANSIENT_POOL_CODES and attempt < CONNECT_RETRIES:
                    delay = CONNECT_BACKOFF * (2 ** attempt)
                    self.log(f"xcpng: {method}: {details[0]} from {self.display}; retrying in {delay:g} s")
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise call_failure(self, method, details) from None
            except _RETRYABLE_NET as exc:
                self._reset(transport)
                if attempt >= CONNECT_RETRIES:
                    raise self.error(
                        XapiUnreachable,
                        f"{method} on {self.display}: expected XAPI to answer, but the connection "
                        f"failed {attempt + 1} times ({type(exc).__name__}: {exc}); check that the "
                        f"url is right and the pool's toolstack is running (xe-toolstack-restart "
                        f"on the host)") from exc
                delay = CONNECT_BACKOFF * (2 ** attempt)
                self.log(f"xcpng: {method}: {type(exc).__name__} from {self.display}; retrying in {delay:g} s")
                time.sleep(delay)
                attempt += 1
            except CALL_ERRORS as exc:
                self._reset(transport)
                raise translate(self, method, exc) from exc

    def _reset(self, transport: Any) -> None:
        """Drop the (possibly half-used) HTTP connection so the next call starts clean."""
        if transport is not None:
            try:
                transport.close()
            except OSError as exc:  # closing the socket of a connection that already failed
                self.log(f"xcpng: closing the connection to {self.display} failed "
                         f"({type(exc).__name__}: {exc}); the next call opens a new one")

    # -- tasks ------------------------------------------------------------------
    def run_task(self, method: str, *args: Any, timeout: float, what: str | None = None) -> Any:
        """``Async.<method>(*args)``, polled to completion within ``timeout`` seconds.

        Returns the task's result without its ``<value>`` wrapper.  A failed
        task raises :class:`XapiCallError` with the task's ``error_info``; a
        task still pending at the deadline is cancelled and raises
        :class:`XapiTimeout`.  The task is destroyed in every case.
        """
        what = what or method
        task = self.call("Async." + method, *args)
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        try:
            pause = 0.05
            while True:
                status = self.call("task.get_status", task)
                if status == "success":
                    return parse_task_result(self.call("task.get_result", task), log=self.log, what=what)
                if status in ("failure", "cancelled"):
                    info = [str(x) for x in (self.call("task.get_error_info", task) or [])]
                    if not info:
                        info = ["TASK_CANCELLED", task] if status == "cancelled" else ["UNKNOWN_ERROR"]
                    raise self.error(
                        XapiCallError, f"{what}: XAPI answered {short(info)}", method=method, details=info)
                now = time.monotonic()
                if now >= deadline:
                    try:
                        self.call("task.cancel", task)
                    except HypervisorError as exc:  # it is destroyed below either way
                        self.log(f"xcpng: could not cancel task {task} of {method}: {exc}")
                    raise self.error(
                        XapiTimeout,
                        f"{what}: the XAPI task {method} was still {status} after {now - started:.0f} s "
                        f"(allowed {timeout:g} s); it was cancelled")
                time.sleep(min(pause, max(0.0, deadline - now)))
                pause = min(pause * 1.5, 1.0)
        finally:
            try:
                self.call("task.destroy", task)
            except HypervisorError as exc:
                self.log(f"xcpng: could not destroy task {task} of {method}: {exc}")
