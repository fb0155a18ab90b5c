"""A XenAPI client with the safety the SDK leaves out.

The real ``XenAPI`` SDK (``import XenAPI``) does the wire format and the
re-login on ``SESSION_INVALID``; this module adds what an unattended build
farm needs around it:

* **Timeouts.**  The SDK's transport has none: a pool that accepts the TCP
  connection and never answers would hang a run forever.  :class:`TimeoutTransport`
  / :class:`TimeoutSafeTransport` subclass ``xmlrpc.client.Transport`` /
  ``SafeTransport`` and give every connection ``request_timeout`` seconds for
  connect, TLS handshake and each read.
* **TLS.**  Certificates are verified against the system trust store by
  default; ``ca_file`` pins a CA (or the pool's own certificate) instead;
  ``insecure = true`` switches verification off and is logged every time.
* **Sessions.**  Login with originator ``fruix-dagster``; one SDK session per
  thread (an SDK session is one HTTP connection and not thread-safe); every
  session is logged out by :meth:`XapiClient.close`, guarded so a failing
  logout never hides the real error.
* **The password** is read from the environment variable named in the
  settings at login time and kept only inside the SDK session object.  No
  message, log line or exception text built here contains it (messages are
  scrubbed as a second line of defence).
* **Errors.**  Every failure becomes a :class:`~fruix_dagster.errors.HypervisorError`
  (or :class:`~fruix_dagster.errors.ConfigError` for a missing password
  variable or CA file) that says what was expected, what was found and what
  to do.  :class:`XapiCallError` carries the XAPI error code and arguments so
  the lifecycle layer can decide between retry and failure.  Transport
  drops and refused connections are retried a bounded number of times;
  timeouts are not (the time is already spent).
* **Tasks.**  :meth:`XapiClient.run_task` calls ``Async.<method>``, polls the
  task until it leaves ``pending`` (bounded), strips the ``<value>`` wrapper
  off the result and always destroys the task.

Plain Python; no dagster import.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import threading
import time
import xml.parsers.expat
import xmlrpc.client
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import XenAPI

from fruix_dagster.errors import ConfigError, HypervisorError

__all__ = [
    "API_VERSION",
    "ORIGINATOR",
    "TimeoutSafeTransport",
    "TimeoutTransport",
    "XapiCallError",
    "XapiClient",
    "XapiTimeout",
    "XapiUnreachable",
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


#: Answers of a pool that is (re)starting: retried like a dropped connection.
_TRANSIENT_POOL_CODES = ("HOST_STILL_BOOTING", "HOST_HAS_NO_MANAGEMENT_IP")

_HINTS = {
    "HANDLE_INVALID": "the object no longer exists on the pool (VM destroyed or re-created "
                      "during the run?); check xcpng.vm_uuid / vm_name",
    "RBAC_PERMISSION_DENIED": "the account lacks a role for this call; give it the VM Power Admin "
                              "role (or higher) on the pool",
    "PERMISSION_DENIED": "the account may not do this; check its role on the pool",
    "MESSAGE_METHOD_UNKNOWN": "the pool's XAPI does not know this call; XCP-ng 8.2 or later is expected",
    "HOST_STILL_BOOTING": "the pool's toolstack is still starting; try again in a minute",
}


class XapiCallError(HypervisorError):
    """XAPI answered a call (or a task) with ``ErrorDescription = [code, arg, …]``."""

    def __init__(self, message: str, *, method: str, details: list[str]):
        super().__init__(message)
        self.method = method
        self.details = [str(d) for d in details]
        self.code = self.details[0] if self.details else ""


class XapiUnreachable(HypervisorError):
    """The pool could not be reached, refused TLS, or did not answer in time."""


class XapiTimeout(XapiUnreachable):
    """No answer (or no task completion) within the allowed time."""


# --------------------------------------------------------------------------
# transports with timeouts
# --------------------------------------------------------------------------


class _TimeoutMixin:
    timeout: float | None = None

    def make_connection(self, host):  # type: ignore[no-untyped-def]
        conn = super().make_connection(host)  # type: ignore[misc]
        if self.timeout is not None:
            conn.timeout = self.timeout  # used by connect() (TCP and the TLS handshake)
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
        return conn


class TimeoutTransport(_TimeoutMixin, xmlrpc.client.Transport):
    """``xmlrpc.client.Transport`` whose connections time out after ``timeout`` seconds."""

    def __init__(self, timeout: float | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout


class TimeoutSafeTransport(_TimeoutMixin, xmlrpc.client.SafeTransport):
    """``xmlrpc.client.SafeTransport(context=…)`` whose connections time out after ``timeout`` seconds."""

    def __init__(self, timeout: float | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

_VALUE_RE = re.compile(r"\s*<value>(.*)</value>\s*", re.DOTALL)


def parse_task_result(result: Any) -> Any:
    """A task's ``result`` field without its XML-RPC ``<value>`` wrapper.

    xapi stores the result of an ``Async.*`` call as the marshalled XML-RPC
    value, e.g. ``"<value>OpaqueRef:…</value>"``; void results are ``""``.
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
    except Exception:  # not well-formed: strip the tags the simple way
        m = _VALUE_RE.fullmatch(text)
        return m.group(1) if m else text


def display_url(url: str) -> str:
    """The URL without any user:password@ part (never shown)."""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{p.port}" if p.port else "")
        return f"{p.scheme}://{netloc}{p.path or '/'}"
    except ValueError:
        return "<unparsable URL>"


def _short(details: list[str], limit: int = 6) -> str:
    shown = ", ".join(details[1:limit + 1]) + (", …" if len(details) > limit + 1 else "")
    return f"{details[0]}" + (f" ({shown})" if shown else "") if details else "(no error code)"


# --------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------


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
        self._ssl_context: ssl.SSLContext | None = None
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

    def _error(self, cls: type[HypervisorError], message: str, **kw: Any) -> HypervisorError:
        return cls(self.scrub(message), **kw)

    # -- transport --------------------------------------------------------------
    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            if self.insecure:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif self.ca_file:
                try:
                    ctx = ssl.create_default_context(cafile=os.path.expanduser(self.ca_file))
                except (OSError, ssl.SSLError) as exc:
                    reason = getattr(exc, "strerror", None) or str(exc)
                    raise ConfigError(
                        f"{self.where}: xcpng.ca_file: expected a readable PEM file with the CA (or "
                        f"the pool's own certificate) that signed {self.display}'s certificate, "
                        f"got {self.ca_file} ({reason}); fix ca_file") from None
            else:
                ctx = ssl.create_default_context()
            self._ssl_context = ctx
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
        """Log out every session of this client; never raises (problems are logged)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        self._local = threading.local()
        for s in sessions:
            try:
                if s.handle is not None:
                    s.xenapi.session.logout()
                with self._lock:
                    self.logouts += 1
            except Exception as exc:  # noqa: BLE001 - a failed logout must not hide anything
                self.log(self.scrub(f"xcpng: logout from {self.display} failed ({type(exc).__name__}: "
                                    f"{exc}); the session expires on the pool by itself"))
            finally:
                t = getattr(s, "_fruix_transport", None)
                if t is not None:
                    try:
                        t.close()
                    except Exception:  # noqa: BLE001
                        pass

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
                if details and details[0] in _TRANSIENT_POOL_CODES and attempt < CONNECT_RETRIES:
                    delay = CONNECT_BACKOFF * (2 ** attempt)
                    self.log(f"xcpng: {method}: {details[0]} from {self.display}; retrying in {delay:g} s")
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise self._failure(method, details) from None
            except _RETRYABLE_NET as exc:
                self._reset(transport)
                if attempt >= CONNECT_RETRIES:
                    raise self._error(
                        XapiUnreachable,
                        f"{method} on {self.display}: expected XAPI to answer, but the connection "
                        f"failed {attempt + 1} times ({type(exc).__name__}: {exc}); check that the "
                        f"url is right and the pool's toolstack is running (xe-toolstack-restart "
                        f"on the host)") from exc
                delay = CONNECT_BACKOFF * (2 ** attempt)
                self.log(f"xcpng: {method}: {type(exc).__name__} from {self.display}; retrying in {delay:g} s")
                time.sleep(delay)
                attempt += 1
            except Exception as exc:  # noqa: BLE001 - translated below, or re-raised
                self._reset(transport)
                raise self._translate(method, exc) from exc

    @staticmethod
    def _reset(transport: Any) -> None:
        """Drop the (possibly half-used) HTTP connection so the next call starts clean."""
        if transport is not None:
            try:
                transport.close()
            except Exception:  # noqa: BLE001
                pass

    def _failure(self, method: str, details: list[str]) -> HypervisorError:
        code = details[0] if details else ""
        if code == "SESSION_AUTHENTICATION_FAILED":
            return self._error(
                XapiCallError,
                f"{self.display} refused the login of {self.username!r} (SESSION_AUTHENTICATION_FAILED): "
                f"expected the password in ${self.password_env} to be that user's XAPI password; check "
                f"xcpng.username and the value of {self.password_env} (and that the account is not "
                f"locked or restricted by RBAC)", method=method, details=details)
        if code == "HOST_IS_SLAVE":
            master = details[1] if len(details) > 1 else "the pool master"
            return self._error(
                XapiCallError,
                f"{self.display} is a pool member, not the pool master (HOST_IS_SLAVE): the API is "
                f"served by the master at {master}; set xcpng.url to the master's address",
                method=method, details=details)
        hint = _HINTS.get(code)
        return self._error(
            XapiCallError,
            f"{method} on {self.display} failed: XAPI answered {_short(details)}"
            + (f"; {hint}" if hint else ""),
            method=method, details=details)

    def _translate(self, method: str, exc: BaseException) -> HypervisorError:
        if isinstance(exc, HypervisorError):
            return exc
        if isinstance(exc, ConfigError):
            return exc  # type: ignore[return-value]
        if isinstance(exc, ssl.SSLCertVerificationError):
            how = (f"the CA in ca_file = {self.ca_file}" if self.ca_file
                   else "the system trust store")
            return self._error(
                XapiUnreachable,
                f"{self.display}: the TLS certificate is not trusted ({exc.verify_message or exc.reason}); "
                f"expected a certificate verified by {how}. Pin the pool's CA or its own "
                f"certificate with xcpng.ca_file = \"/path/to/pool.pem\" (on the host: "
                f"/etc/xensource/xapi-ssl.pem holds it), or — only on a network you trust — set "
                f"xcpng.insecure = true")
        if isinstance(exc, ssl.SSLError):
            return self._error(
                XapiUnreachable,
                f"{self.display}: TLS handshake failed ({exc}); check that the url's scheme and port "
                f"are right (https:// for port 443)")
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return self._error(
                XapiTimeout,
                f"{method} on {self.display}: expected an answer within request_timeout = "
                f"{self.request_timeout:g} s, got none (the server accepted the connection, or not, "
                f"but never answered); check the pool's health (xe-toolstack-restart on the host) "
                f"or raise xcpng.request_timeout")
        if isinstance(exc, socket.gaierror):
            return self._error(
                XapiUnreachable,
                f"{self.display}: cannot resolve the host name ({exc}); fix xcpng.url")
        if isinstance(exc, xmlrpc.client.ProtocolError):
            return self._error(
                XapiUnreachable,
                f"{method} on {self.display}: expected an XML-RPC answer, got HTTP {exc.errcode} "
                f"{exc.errmsg}; check that xcpng.url points at the pool master's XAPI (https://host/)")
        if isinstance(exc, xmlrpc.client.Fault):
            return self._error(
                XapiUnreachable,
                f"{method} on {self.display}: the XenAPI SDK gave up: {exc.faultString} "
                f"(fault {exc.faultCode}); check the pool's health and the credentials")
        if isinstance(exc, xml.parsers.expat.ExpatError):
            return self._error(
                XapiUnreachable,
                f"{method} on {self.display}: expected an XML-RPC answer, got something that is not "
                f"XML ({exc}); check that xcpng.url points at XAPI")
        if isinstance(exc, OSError):
            return self._error(
                XapiUnreachable,
                f"{method} on {self.display}: expected to reach XAPI, got {type(exc).__name__}: {exc}; "
                f"check the url and the network path to the pool")
        return self._error(
            HypervisorError,
            f"{method} on {self.display}: unexpected {type(exc).__name__}: {exc}")

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
                    return parse_task_result(self.call("task.get_result", task))
                if status in ("failure", "cancelled"):
                    info = [str(x) for x in (self.call("task.get_error_info", task) or [])]
                    if not info:
                        info = ["TASK_CANCELLED", task] if status == "cancelled" else ["UNKNOWN_ERROR"]
                    raise self._error(
                        XapiCallError, f"{what}: XAPI answered {_short(info)}", method=method, details=info)
                now = time.monotonic()
                if now >= deadline:
                    try:
                        self.call("task.cancel", task)
                    except HypervisorError:
                        pass
                    raise self._error(
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
