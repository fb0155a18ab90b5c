"""A fake XAPI (the XCP-ng / XenServer toolstack) speaking XAPI's XML-RPC wire format.

Drive it with the real SDK only::

    import XenAPI
    s = XenAPI.Session(xapi_server.http_url)
    s.xenapi.login_with_password("root", xapi_server.password, "1.0", "fruix-dagster")
    vm = s.xenapi.VM.get_by_uuid(fake_vm.uuid)
    task = s.xenapi.Async.VM.start(vm, False, False)
    s.xenapi.task.get_status(task)      # "pending" → "success"
    s.xenapi.task.get_result(task)      # "" (void) or "<value>OpaqueRef:…</value>"
    s.xenapi.task.destroy(task)

(``xenapi.login_with_password`` returns ``None`` in the SDK; the session ref
is ``s._session`` / ``s.handle``.  The SDK logs in again by itself and retries
a call, up to 3 times, when a call fails with ``SESSION_INVALID``.)

Wire format, as XAPI does it
----------------------------
* POST ``/`` (or ``/RPC2``), XML-RPC; every response is a struct
  ``{"Status": "Success", "Value": …}`` or
  ``{"Status": "Failure", "ErrorDescription": [code, arg, …]}`` (all strings).
* strings go out untyped (``<value>text</value>``), API ``int`` values as
  strings (``"1073741824"``), booleans as ``<boolean>``, floats as ``<double>``,
  dates as ``<dateTime.iso8601>20250101T00:00:00Z</dateTime.iso8601>``.
* refs are ``OpaqueRef:<uuid>``; no ref is ``OpaqueRef:NULL``.
* error codes and arguments follow xapi's sources: ``SESSION_INVALID [session]``,
  ``SESSION_AUTHENTICATION_FAILED [user, "Authentication failure"]``,
  ``UUID_INVALID ["VM", uuid]``, ``HANDLE_INVALID [class, ref]``,
  ``MESSAGE_METHOD_UNKNOWN [method]``,
  ``MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected, received]`` (counts include
  the session), ``FIELD_TYPE_ERROR [param]``,
  ``VM_BAD_POWER_STATE [vm, expected, actual]`` (lower case, several expected
  states joined by ", ", e.g. "paused, suspended, running"),
  ``VM_IS_TEMPLATE [vm, op]``, ``VM_IS_SNAPSHOT [vm, op]``,
  ``OTHER_OPERATION_IN_PROGRESS ["VM.<op in progress>", vm]``,
  ``ONLY_REVERT_SNAPSHOT []``, ``TASK_CANCELLED [task]``.

The model
---------
One host, one pool, VMs made by :meth:`FakeXapiServer.make_vm`, tasks, guest
metrics.  Objects are records (dicts) served by generic messages for every
class (``VM``, ``VM_metrics``, ``VM_guest_metrics``, ``task``, ``host``,
``pool``): ``get_all``, ``get_all_records``, ``get_record``, ``get_by_uuid``,
``get_by_name_label`` (where there is a name), ``get_<field>``.  VM lifecycle:
``VM.start(vm, start_paused, force)``, ``start_on(vm, host, …)``,
``clean_shutdown``, ``hard_shutdown``, ``shutdown``, ``clean_reboot``,
``hard_reboot``, ``pause``, ``unpause``, ``suspend``,
``resume(vm, start_paused, force)``, ``resume_on``, ``revert(snapshot)``,
``snapshot(vm, name)``, ``checkpoint(vm, name)`` — and each as ``Async.VM.*``
returning a task.  ``task.destroy``, ``task.cancel``; ``session.logout``,
``session.get_this_host``; ``pool.get_master`` etc. come from the records.

Power states move as in xapi (start: Halted → Running/Paused; clean_shutdown:
Running → Halted; hard_shutdown/shutdown: Running/Paused/Suspended → Halted;
suspend: Running → Suspended; resume: Suspended → Running/Paused; pause /
unpause; revert: a running VM is hard-shut-down first, then takes the
snapshot's power state — Halted for a disk-only snapshot, Suspended for a
checkpoint).  An operation in progress on a VM (its delay) blocks other
lifecycle operations with OTHER_OPERATION_IN_PROGRESS (hard_shutdown may
overtake, as in xapi).  Snapshots are templates (``is_a_template`` true) and
refuse ``start`` with VM_IS_SNAPSHOT.

Test controls
-------------
``fail_next(method, [code, args…], times=1)``, ``delay(method, seconds)``,
``hang(method)``, ``hang_connections()``, ``drop_next(method)``,
``invalidate_sessions()``, ``on_start/on_shutdown/on_power_state(vm_uuid, cb)``,
``set_guest_address(vm_uuid, address, after_seconds=2.0)``,
``set_guest_networks(…)``.  Method matching: a key ``"VM.start"`` matches
``VM.start`` *and* ``Async.VM.start`` (for the async call the failure/delay is
the task's); ``"Async.VM.start"`` matches only the async call; ``"*"`` matches
everything (``delay``/``hang`` only).

Recorded for assertions: :attr:`FakeXapiServer.calls` (:class:`Call`:
method, session, args with the password redacted, originator and user of the
session, outcome, result or error, scheme, connection id), ``logins``,
``login_failures``, ``logouts``, ``task_destroys``, ``destroyed_tasks``,
``hook_calls``, ``hook_errors``, ``tls_errors``, ``connections``.

The password is kept in memory only (``server.password``); the server writes
nothing but its TLS certificates and keys to disk and logs nothing.
"""

from __future__ import annotations

import copy
import datetime as _dt
import http.server
import itertools
import os
import socket
import socketserver
import ssl
import threading
import time
import uuid as _uuid
import xmlrpc.client
from xml.parsers.expat import ExpatError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape as _xml_escape

import pytest

from .test_ca import CertAuthority, IssuedCert, self_signed

NULL_REF = "OpaqueRef:NULL"
POWER_STATES = ("Halted", "Paused", "Running", "Suspended")
REDACTED = "<redacted>"
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

#: Listener kinds for :meth:`FakeXapiServer.url`.
LISTENER_KINDS = ("http", "https", "self-signed", "untrusted", "wrong-host", "expired")

_ALL_STATES = ("Halted", "Paused", "Suspended", "Running")  # xapi's order in error messages
_OP_STATES: dict[str, tuple[str, ...]] = {
    "start": ("Halted",), "start_on": ("Halted",),
    "unpause": ("Paused",),
    "resume": ("Suspended",), "resume_on": ("Suspended",),
    "clean_reboot": ("Running",), "clean_shutdown": ("Running",),
    "pause": ("Running",), "suspend": ("Running",),
    "hard_reboot": ("Paused", "Running"),
    "checkpoint": ("Paused", "Suspended", "Running"),
    "shutdown": ("Paused", "Suspended", "Running"),
    "hard_shutdown": ("Paused", "Suspended", "Running"),
    "revert": _ALL_STATES, "snapshot": _ALL_STATES,
}
# Parameters after the session: (name, type); type is a class name (a ref), bool or str.
_OP_PARAMS: dict[str, tuple[tuple[str, Any], ...]] = {
    "start": (("vm", "VM"), ("start_paused", bool), ("force", bool)),
    "start_on": (("vm", "VM"), ("host", "host"), ("start_paused", bool), ("force", bool)),
    "resume": (("vm", "VM"), ("start_paused", bool), ("force", bool)),
    "resume_on": (("vm", "VM"), ("host", "host"), ("start_paused", bool), ("force", bool)),
    "clean_shutdown": (("vm", "VM"),), "hard_shutdown": (("vm", "VM"),), "shutdown": (("vm", "VM"),),
    "clean_reboot": (("vm", "VM"),), "hard_reboot": (("vm", "VM"),),
    "pause": (("vm", "VM"),), "unpause": (("vm", "VM"),), "suspend": (("vm", "VM"),),
    "revert": (("snapshot", "VM"),),
    "snapshot": (("vm", "VM"), ("new_name", str)),
    "checkpoint": (("vm", "VM"), ("new_name", str)),
}
_OPTIONAL_PARAMS = {"snapshot": 1}  # VM.snapshot(vm, new_name[, ignore_vdis])
_SNAPSHOT_OPS = {"revert", "clone", "copy", "export", "destroy", "hard_shutdown", "metadata_export"}
_TEMPLATE_OPS = {"clone", "copy", "export", "metadata_export", "provision"}
_ALLOWED_OPS_ORDER = ("snapshot", "checkpoint", "revert", "start", "start_on", "pause", "unpause",
                      "clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot", "shutdown",
                      "suspend", "resume", "resume_on")
_NAMED_CLASSES = ("VM", "host", "pool", "task")
_CLASSES = ("VM", "VM_metrics", "VM_guest_metrics", "task", "host", "pool")


def new_ref() -> str:
    return f"OpaqueRef:{_uuid.uuid4()}"


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


# ---------------------------------------------------------------- wire format

def xapi_value(v: Any) -> str:
    """One XML-RPC ``<value>`` the way xapi writes it (untyped strings, ints as strings)."""
    if isinstance(v, bool):
        return f"<value><boolean>{1 if v else 0}</boolean></value>"
    if isinstance(v, int):
        return f"<value>{v}</value>"
    if isinstance(v, float):
        return f"<value><double>{v!r}</double></value>"
    if isinstance(v, str):
        return f"<value>{_xml_escape(v)}</value>"
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_dt.timezone.utc)
        return f"<value><dateTime.iso8601>{v.strftime('%Y%m%dT%H:%M:%SZ')}</dateTime.iso8601></value>"
    if isinstance(v, (list, tuple, set, frozenset)):
        return "<value><array><data>" + "".join(xapi_value(x) for x in v) + "</data></array></value>"
    if isinstance(v, dict):
        return ("<value><struct>"
                + "".join(f"<member><name>{_xml_escape(str(k))}</name>{xapi_value(x)}</member>"
                          for k, x in v.items())
                + "</struct></value>")
    if v is None:  # xapi has no nil; never produced by the model, but be total
        return "<value></value>"
    raise TypeError(f"cannot marshal {type(v).__name__}")


def xapi_response(value: Any) -> bytes:
    return ("<methodResponse><params><param>" + xapi_value(value)
            + "</param></params></methodResponse>").encode("utf-8")


def success(value: Any) -> dict:
    return {"Status": "Success", "Value": value}


def failure(description: list) -> dict:
    return {"Status": "Failure", "ErrorDescription": [str(x) for x in description]}


class XapiFailure(Exception):
    """An XAPI error: ``ErrorDescription`` is ``[code, arg, …]``."""

    def __init__(self, code: str, *args: Any) -> None:
        self.description = [str(code)] + [str(a) for a in args]
        super().__init__(self.description)


# --------------------------------------------------------------- records

@dataclass
class Call:
    """One XML-RPC call as the server received it."""

    seq: int
    method: str
    session: str | None          # the session ref passed (None for a login)
    args: tuple                  # parameters after the session; a login's password is redacted
    user: str | None             # login user / the session's user
    originator: str | None       # login originator / the session's originator
    path: str
    scheme: str                  # "http" or "https"
    listener: str                # listener kind ("http", "https", "self-signed", …)
    connection: int              # connection id (keep-alive connections carry several calls)
    user_agent: str | None
    time: float                  # time.monotonic() at receipt
    outcome: str = "pending"     # "Success" | "Failure" | "hung" | "dropped" | "error"
    result: Any = None
    error: list[str] | None = None
    task: str | None = None      # the task an Async.* call created

    @property
    def ok(self) -> bool:
        return self.outcome == "Success"


@dataclass
class _SessionInfo:
    user: str
    originator: str | None
    version: str | None
    created: float


@dataclass
class _VMState:
    """Per-VM state that is not part of the XAPI record."""

    networks: dict[str, str] | None = None
    address_after: float = 2.0
    running_since: float | None = None
    clean_shutdown_error: list[str] | None = None
    hooks: dict[str, list[Callable]] = field(default_factory=lambda: {"start": [], "shutdown": [], "power": []})


@dataclass
class _TaskRun:
    ref: str
    method: str
    started: float
    delay: float
    wake: threading.Event
    cancel_requested: bool = False
    cancellable: bool = True
    destroy_pending: bool = False
    thread: threading.Thread | None = None


class _Match:
    """Per-method test controls (sync/async matching, see the module docstring)."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    @staticmethod
    def keys_for(method: str) -> list[str]:
        keys = [method]
        if method.startswith("Async."):
            keys.append(method[len("Async."):])
        keys.append("*")
        return keys

    def get(self, method: str, default=None):
        for k in self.keys_for(method):
            if k in self.items:
                return self.items[k]
        return default


def networks_for(address: str | None, ipv6: str | None = "fe80::1") -> dict[str, str]:
    """A guest metrics ``networks`` map for one interface (device 0)."""
    nets: dict[str, str] = {}
    if address:
        nets["0/ip"] = address
        nets["0/ipv4/0"] = address
    if ipv6:
        nets["0/ipv6/0"] = ipv6
    return nets


# --------------------------------------------------------------- handles

class FakeVM:
    """A test-side handle on one VM (or snapshot) of a :class:`FakeXapiServer`."""

    def __init__(self, server: "FakeXapiServer", ref: str) -> None:
        self.server = server
        self.ref = ref

    def _get(self, key: str):
        with self.server._lock:
            return copy.deepcopy(self.server._record("VM", self.ref)[key])

    @property
    def uuid(self) -> str:
        return self._get("uuid")

    @property
    def name_label(self) -> str:
        return self._get("name_label")

    @property
    def power_state(self) -> str:
        return self._get("power_state")

    @property
    def guest_metrics(self) -> str:
        with self.server._lock:
            self.server._refresh()
        return self._get("guest_metrics")

    @property
    def record(self) -> dict:
        with self.server._lock:
            self.server._refresh()
            return copy.deepcopy(self.server._record("VM", self.ref))

    @property
    def snapshots(self) -> list["FakeVM"]:
        return [FakeVM(self.server, r) for r in self._get("snapshots")]

    @property
    def clean_shutdown_error(self) -> list[str] | None:
        return self.server._vmx[self.ref].clean_shutdown_error

    @clean_shutdown_error.setter
    def clean_shutdown_error(self, value: list[str] | None) -> None:
        """Make ``clean_shutdown``/``clean_reboot`` fail with this (``"{vm}"`` = the ref)."""
        self.server._vmx[self.ref].clean_shutdown_error = list(value) if value else None

    def set_power_state(self, state: str, hooks: bool = True) -> None:
        self.server.set_power_state(self.uuid, state, hooks=hooks)

    def snapshot(self, name_label: str, power_state: str = "Halted", uuid: str | None = None) -> "FakeVM":
        return self.server.add_snapshot(self.uuid, name_label, power_state=power_state, uuid=uuid)

    def set_guest_address(self, address: str | None, after_seconds: float = 2.0) -> None:
        self.server.set_guest_address(self.uuid, address, after_seconds)

    def on_start(self, callback: Callable[[], Any]) -> None:
        self.server.on_start(self.uuid, callback)

    def on_shutdown(self, callback: Callable[[], Any]) -> None:
        self.server.on_shutdown(self.uuid, callback)

    def wait_power_state(self, state: str, timeout: float = 10.0) -> None:
        self.server.wait_for(lambda: self.power_state == state, timeout,
                             f"VM {self.name_label} to reach {state}")

    def __repr__(self) -> str:
        try:
            return f"<FakeVM {self.name_label!r} {self.uuid} {self.power_state}>"
        except XapiFailure:
            return f"<FakeVM {self.ref} (destroyed)>"


# --------------------------------------------------------------- HTTP layer

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "xapi"
    sys_version = ""

    def __init__(self, request, client_address, server, conn_id: int) -> None:
        self.conn_id = conn_id
        super().__init__(request, client_address, server)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - never log anything
        pass

    def do_GET(self) -> None:
        self.send_error(404)

    def do_POST(self) -> None:
        listener: _Listener = self.server  # type: ignore[assignment]
        if self.path.split("?", 1)[0] not in ("/", "/RPC2"):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        response = listener.fake._handle_request(body, self)
        if response is None:  # hung (until stop) or dropped: no answer, close
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(response)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(response)


class _Listener(http.server.HTTPServer):
    """One listening socket; a thread per connection (tracked, joined by ``stop``)."""

    allow_reuse_address = True

    def __init__(self, fake: "FakeXapiServer", kind: str, ssl_context: ssl.SSLContext | None) -> None:
        self.fake = fake
        self.kind = kind
        self.scheme = "https" if ssl_context else "http"
        self.ssl_context = ssl_context
        super().__init__(("127.0.0.1", 0), _Handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       name=f"xapi-fake-{kind}-listener", daemon=True)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no getfqdn() lookup
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request, client_address) -> None:
        t = threading.Thread(target=self._serve_connection, args=(request, client_address),
                             name=f"xapi-fake-{self.kind}-conn", daemon=True)
        self.fake._track(t)
        t.start()

    def _serve_connection(self, sock: socket.socket, client_address) -> None:
        fake = self.fake
        conn_id = fake._conn_open(sock, self.kind)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls
            if fake._hang_new_connections:
                fake._stop.wait()  # accepted, never read, never answered
                return
            if self.ssl_context is not None:
                sock.settimeout(10)
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    fake.tls_errors.append(f"{self.kind}: {exc}")
                    return
                finally:
                    fake._conn_replace(conn_id, sock)
                sock.settimeout(None)
            _Handler(sock, client_address, self, conn_id)
        except (OSError, ValueError):
            pass  # peer went away, or stop() shut the socket down
        except Exception as exc:  # pragma: no cover - a bug in the fake
            fake.internal_errors.append(f"connection {conn_id}: {exc!r}")
        finally:
            fake._conn_close(conn_id)
            try:
                sock.close()
            except OSError:
                pass


# --------------------------------------------------------------- the server

class FakeXapiServer:
    """A fake XAPI on 127.0.0.1; see the module docstring.

    ``FakeXapiServer(workdir, username="root", password="…")``; use as a
    context manager or call :meth:`start` / :meth:`stop`.  ``workdir`` holds
    the TLS material only.
    """

    def __init__(self, workdir: str | os.PathLike, username: str = "root",
                 password: str = "fake-xapi-password", *, host_name: str = "xcp-ng-fake",
                 listeners: Iterable[str] = ("http", "https")) -> None:
        self.workdir = Path(workdir)
        self.username = username
        self.password = password
        self.host_name = host_name
        self._initial_listeners = tuple(listeners)

        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = False
        self._stopped = False
        self._listeners: dict[str, _Listener] = {}
        self._ca: CertAuthority | None = None
        self._certs: dict[str, IssuedCert] = {}

        self._threads: list[threading.Thread] = []
        self._conns: dict[int, socket.socket] = {}
        self._conn_ids = itertools.count(1)
        self._hang_new_connections = False
        self._hang_all_requests = False

        self._db: dict[str, dict[str, dict]] = {c: {} for c in _CLASSES}
        self._vmx: dict[str, _VMState] = {}
        self._tasks: dict[str, _TaskRun] = {}
        self._sessions: dict[str, _SessionInfo] = {}
        self._domids = itertools.count(1)

        self._fail = _Match()     # key -> list of [description, remaining]
        self._delay = _Match()    # key -> seconds
        self._hang = _Match()     # key -> True
        self._drop = _Match()     # key -> remaining count

        self._calls: list[Call] = []
        self._seq = itertools.count(1)
        self.logins = 0
        self.login_failures = 0
        self.logouts = 0
        self.task_destroys = 0
        self.destroyed_tasks: list[str] = []
        self.hook_calls: list[tuple[str, str, str, str]] = []   # (vm_uuid, hook, old, new)
        self.hook_errors: list[tuple[str, str, BaseException]] = []
        self.tls_errors: list[str] = []
        self.internal_errors: list[str] = []
        self.connections = 0

        self.host_ref = new_ref()
        self.pool_ref = new_ref()
        self._db["host"][self.host_ref] = {
            "uuid": str(_uuid.uuid4()), "name_label": host_name, "name_description": "Default install",
            "hostname": host_name, "address": "127.0.0.1", "enabled": True,
            "API_version_major": 2, "API_version_minor": 21, "API_version_vendor": "XenSource",
            "API_version_vendor_implementation": {},
            "software_version": {"product_brand": "XCP-ng", "product_version": "8.3.0",
                                 "platform_name": "XCP", "xapi": "24.19"},
            "resident_VMs": [], "allowed_operations": [], "current_operations": {},
            "other_config": {}, "memory_overhead": 0, "cpu_info": {"cpu_count": "8"},
            "edition": "xcp-ng", "tags": [],
        }
        self._db["pool"][self.pool_ref] = {
            "uuid": str(_uuid.uuid4()), "name_label": "", "name_description": "",
            "master": self.host_ref, "default_SR": NULL_REF, "other_config": {}, "tags": [],
            "ha_enabled": False,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "FakeXapiServer":
        if self._started:
            return self
        self._started = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        for kind in self._initial_listeners:
            self._listener(kind)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listeners, release hung requests, close connections, join all threads."""
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        self._stop.set()
        with self._lock:
            for run in self._tasks.values():
                run.wake.set()
            listeners = list(self._listeners.values())
        for lst in listeners:
            lst.shutdown()
            lst.server_close()
        with self._lock:
            for sock in self._conns.values():
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for t in [lst.thread for lst in listeners] + self._thread_list():
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._thread_list() if t.is_alive()]
        if alive:
            self.internal_errors.append(f"threads still alive after stop: {alive}")

    def __enter__(self) -> "FakeXapiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def check(self) -> None:
        """Raise if a hook failed, the fake hit an internal error or a thread outlived :meth:`stop`."""
        problems = [f"hook {hook} for VM {uuid} raised {exc!r}" for uuid, hook, exc in self.hook_errors]
        problems += self.internal_errors
        if problems:
            raise AssertionError("fake XAPI: " + "; ".join(problems))

    def _track(self, t: threading.Thread) -> None:
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _thread_list(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _conn_open(self, sock: socket.socket, kind: str) -> int:
        with self._lock:
            conn_id = next(self._conn_ids)
            self._conns[conn_id] = sock
            self.connections += 1
            return conn_id

    def _conn_replace(self, conn_id: int, sock: socket.socket) -> None:
        with self._lock:
            if conn_id in self._conns:
                self._conns[conn_id] = sock

    def _conn_close(self, conn_id: int) -> None:
        with self._lock:
            self._conns.pop(conn_id, None)

    # ------------------------------------------------------------ listeners / TLS

    @property
    def ca(self) -> CertAuthority:
        with self._lock:
            if self._ca is None:
                self._ca = CertAuthority(self.workdir / "tls" / "ca", name="fake XAPI test CA")
            return self._ca

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that issued the ``https`` listener's certificate (pin it)."""
        return self.ca.ca_file

    def _cert(self, kind: str) -> IssuedCert:
        with self._lock:
            if kind not in self._certs:
                tls = self.workdir / "tls"
                if kind == "https":
                    cert = self.ca.issue(stem="server")
                elif kind == "wrong-host":
                    cert = self.ca.issue(hosts=("xcp.example",), stem="wrong-host")
                elif kind == "expired":
                    cert = self.ca.issue(expired=True, stem="expired")
                elif kind == "self-signed":
                    cert = self_signed(tls / "self-signed", name=self.host_name)
                elif kind == "untrusted":
                    cert = CertAuthority(tls / "untrusted-ca", name="some other CA").issue(stem="server")
                else:
                    raise ValueError(f"unknown listener kind {kind!r}; one of {LISTENER_KINDS}")
                self._certs[kind] = cert
            return self._certs[kind]

    def cert_file(self, kind: str = "https") -> Path:
        """The server certificate a listener presents (for ``self-signed``: the file to pin)."""
        return self._cert(kind).cert_file

    def _listener(self, kind: str) -> _Listener:
        if kind not in LISTENER_KINDS:
            raise ValueError(f"unknown listener kind {kind!r}; one of {LISTENER_KINDS}")
        with self._lock:
            if kind not in self._listeners:
                if self._stopped:
                    raise RuntimeError("fake XAPI server is stopped")
                ctx = None if kind == "http" else self._cert(kind).server_context()
                lst = _Listener(self, kind, ctx)
                self._listeners[kind] = lst
                lst.thread.start()
            return self._listeners[kind]

    def url(self, kind: str = "http") -> str:
        """URL of a listener, started on first use: ``http``, ``https`` (cert from :attr:`ca_file`),
        ``self-signed`` (pin :meth:`cert_file`), ``untrusted`` (another CA), ``wrong-host``
        (trusted CA, issued for ``xcp.example``), ``expired`` (trusted CA, expired)."""
        lst = self._listener(kind)
        return f"{lst.scheme}://127.0.0.1:{lst.port}/"

    @property
    def http_url(self) -> str:
        return self.url("http")

    @property
    def https_url(self) -> str:
        return self.url("https")

    def ssl_context(self, kind: str = "https") -> ssl.SSLContext:
        """A client context that trusts what a careful client would pin for ``kind``:
        the test CA, or for ``self-signed`` the host's own certificate."""
        if kind == "self-signed":
            return self._cert(kind).client_context()
        return ssl.create_default_context(cafile=str(self.ca_file))

    def sdk_session(self, kind: str = "http", *, timeout: float | None = None,
                    context: ssl.SSLContext | None = None):
        """A real ``XenAPI.Session`` on a listener (TLS verified against :meth:`ssl_context`)."""
        import XenAPI

        url = self.url(kind)
        if url.startswith("https:"):
            transport = TimeoutSafeTransport(timeout=timeout, context=context or self.ssl_context(kind))
        else:
            transport = TimeoutTransport(timeout=timeout)
        return XenAPI.Session(url, transport=transport)

    # ------------------------------------------------------------ test controls

    def fail_next(self, method: str, error: list | tuple | str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` fail with ``error`` ([code, arg, …]).

        For ``Async.*`` (and a key ``"VM.start"`` matching ``Async.VM.start``) the
        task fails instead, after the method's delay; ``SESSION_INVALID`` is
        always answered on the call itself.  ``"{vm}"``, ``"{session}"``,
        ``"{task}"`` in the arguments are replaced by the call's refs."""
        desc = [error] if isinstance(error, str) else list(error)
        with self._lock:
            self._fail.items.setdefault(method, []).append([desc, times])

    def clear_failures(self) -> None:
        with self._lock:
            self._fail.items.clear()

    def delay(self, method: str, seconds: float | None) -> None:
        """Answer ``method`` after ``seconds``; for a VM operation the VM is busy (and an Async
        task "pending") for that long.  ``None``/0 removes the delay."""
        with self._lock:
            if seconds:
                self._delay.items[method] = float(seconds)
            else:
                self._delay.items.pop(method, None)

    def hang(self, method: str = "*") -> None:
        """Read requests for ``method`` and never answer (until :meth:`unhang` for new requests,
        until :meth:`stop` for those already hung)."""
        with self._lock:
            self._hang.items[method] = True

    def unhang(self, method: str = "*") -> None:
        with self._lock:
            self._hang.items.pop(method, None)

    def hang_connections(self, on: bool = True) -> None:
        """New TCP connections are accepted and never read (no TLS handshake either); requests on
        connections already open are read and never answered."""
        self._hang_new_connections = on
        self._hang_all_requests = on

    def drop_next(self, method: str, times: int = 1) -> None:
        """The next ``times`` requests for ``method`` are read, then the connection is closed
        without an answer (the client sees the server disconnect)."""
        with self._lock:
            self._drop.items[method] = self._drop.items.get(method, 0) + times

    def invalidate_sessions(self) -> int:
        """Forget every session (a toolstack restart); returns how many there were."""
        with self._lock:
            n = len(self._sessions)
            self._sessions.clear()
            return n

    def invalidate_session(self, session_ref: str) -> None:
        with self._lock:
            self._sessions.pop(session_ref, None)

    @property
    def sessions(self) -> dict[str, dict]:
        """Live sessions: ref -> {"user", "originator", "version"}."""
        with self._lock:
            return {r: {"user": s.user, "originator": s.originator, "version": s.version}
                    for r, s in self._sessions.items()}

    # ------------------------------------------------------------ recorded calls

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.01)

    # ------------------------------------------------------------ model: VMs

    def make_vm(self, uuid: str | None = None, name_label: str = "fruix-amd64", power_state: str = "Halted",
                snapshots: Iterable[str | dict] = (), *, is_a_template: bool = False,
                guest_address: str | None = None, address_after: float = 2.0,
                clean_shutdown_error: list[str] | None = None, **fields: Any) -> FakeVM:
        """Add a VM.  ``snapshots``: names (disk-only snapshots, Halted) or dicts
        ``{"name_label": …, "power_state": "Suspended", "uuid": …}`` (a checkpoint is Suspended).
        ``fields`` override record fields (``memory_static_max=…``, ``other_config={…}``)."""
        if power_state not in POWER_STATES:
            raise ValueError(f"power_state must be one of {POWER_STATES}")
        with self._lock:
            ref = self._new_vm_record(uuid, name_label, power_state, is_a_template=is_a_template, **fields)
            self._vmx[ref].clean_shutdown_error = list(clean_shutdown_error) if clean_shutdown_error else None
            if power_state in ("Running", "Paused"):
                self._vmx[ref].running_since = time.monotonic() if power_state == "Running" else None
            for snap in snapshots:
                spec = {"name_label": snap} if isinstance(snap, str) else dict(snap)
                self._add_snapshot(ref, spec.pop("name_label"), spec.pop("power_state", "Halted"),
                                   spec.pop("uuid", None), **spec)
            if guest_address is not None:
                self._vmx[ref].networks = networks_for(guest_address)
                self._vmx[ref].address_after = address_after
            self._update_allowed(ref)
        return FakeVM(self, ref)

    def vm(self, key: str) -> FakeVM:
        """A VM by uuid, ref or name label (first match)."""
        with self._lock:
            vms = self._db["VM"]
            if key in vms:
                return FakeVM(self, key)
            for ref, rec in vms.items():
                if rec["uuid"] == key:
                    return FakeVM(self, ref)
            for ref, rec in vms.items():
                if rec["name_label"] == key:
                    return FakeVM(self, ref)
        raise KeyError(key)

    @property
    def vms(self) -> list[FakeVM]:
        with self._lock:
            return [FakeVM(self, r) for r in self._db["VM"]]

    def add_snapshot(self, vm_uuid: str, name_label: str, power_state: str = "Halted",
                     uuid: str | None = None) -> FakeVM:
        with self._lock:
            ref = self._add_snapshot(self.vm(vm_uuid).ref, name_label, power_state, uuid)
        return FakeVM(self, ref)

    def set_power_state(self, vm_uuid: str, state: str, hooks: bool = True) -> None:
        """Change a VM's power state from outside the API (the guest powered itself off, …)."""
        if state not in POWER_STATES:
            raise ValueError(state)
        ref = self.vm(vm_uuid).ref
        with self._lock:
            events = self._set_power(ref, state)
            self._update_allowed(ref)
        if hooks:
            self._fire_hooks(events)

    def on_start(self, vm_uuid: str, callback: Callable[[], Any]) -> None:
        """``callback()`` runs when the VM enters Running (start, resume, unpause, revert to a
        running snapshot), after the power state changed and before the operation returns."""
        with self._lock:
            self._vmx[self.vm(vm_uuid).ref].hooks["start"].append(callback)

    def on_shutdown(self, vm_uuid: str, callback: Callable[[], Any]) -> None:
        """``callback()`` runs when the VM enters Halted (any shutdown, revert of a running VM)."""
        with self._lock:
            self._vmx[self.vm(vm_uuid).ref].hooks["shutdown"].append(callback)

    def on_power_state(self, vm_uuid: str, callback: Callable[[str, str], Any]) -> None:
        """``callback(old, new)`` on every power state change."""
        with self._lock:
            self._vmx[self.vm(vm_uuid).ref].hooks["power"].append(callback)

    def set_guest_address(self, vm_uuid: str, address: str | None, after_seconds: float = 2.0) -> None:
        """Once the VM has been Running for ``after_seconds``, ``VM.get_guest_metrics`` is a
        metrics ref whose networks report ``address`` (``0/ip``, ``0/ipv4/0``; plus
        ``0/ipv6/0`` fe80::1); before that ``OpaqueRef:NULL``.  ``None``: never."""
        self.set_guest_networks(vm_uuid, networks_for(address) if address else None, after_seconds)

    def set_guest_networks(self, vm_uuid: str, networks: dict[str, str] | None,
                           after_seconds: float = 2.0) -> None:
        """Like :meth:`set_guest_address` with an explicit ``networks`` map."""
        with self._lock:
            st = self._vmx[self.vm(vm_uuid).ref]
            st.networks = dict(networks) if networks is not None else None
            st.address_after = after_seconds
            self._refresh()

    # ------------------------------------------------------------ model: tasks

    def task(self, ref: str) -> dict:
        """A copy of a task's record (KeyError once destroyed)."""
        with self._lock:
            self._refresh()
            return copy.deepcopy(self._db["task"][ref])

    @property
    def tasks(self) -> dict[str, dict]:
        """Live tasks: ref -> record copy."""
        with self._lock:
            self._refresh()
            return copy.deepcopy(self._db["task"])

    # ------------------------------------------------------------ internals: records

    def _record(self, cls: str, ref: Any) -> dict:
        try:
            return self._db[cls][ref]
        except (KeyError, TypeError):
            raise XapiFailure("HANDLE_INVALID", cls, ref) from None

    def _new_vm_record(self, uuid: str | None, name_label: str, power_state: str, *,
                       is_a_template: bool = False, is_a_snapshot: bool = False,
                       snapshot_of: str = NULL_REF, **fields: Any) -> str:
        ref = new_ref()
        metrics_ref = new_ref()
        running = power_state in ("Running", "Paused")
        now = _utcnow()
        rec: dict[str, Any] = {
            "uuid": uuid or str(_uuid.uuid4()),
            "allowed_operations": [], "current_operations": {},
            "name_label": name_label, "name_description": "",
            "power_state": power_state, "user_version": 1,
            "is_a_template": is_a_template or is_a_snapshot, "is_default_template": False,
            "suspend_VDI": NULL_REF, "resident_on": self.host_ref if running else NULL_REF,
            "scheduled_to_be_resident_on": NULL_REF, "affinity": NULL_REF,
            "memory_overhead": 11534336, "memory_target": 1073741824 if running else 0,
            "memory_static_max": 1073741824, "memory_dynamic_max": 1073741824,
            "memory_dynamic_min": 1073741824, "memory_static_min": 536870912,
            "VCPUs_params": {}, "VCPUs_max": 2, "VCPUs_at_startup": 2,
            "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
            "actions_after_crash": "restart",
            "consoles": [], "VIFs": [], "VBDs": [], "VUSBs": [], "crash_dumps": [], "VTPMs": [],
            "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
            "PV_bootloader_args": "", "PV_legacy_args": "",
            "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"}, "HVM_shadow_multiplier": 1.0,
            "platform": {"viridian": "false", "acpi": "1", "apic": "true", "pae": "true", "nx": "true"},
            "PCI_bus": "", "other_config": {}, "domid": next(self._domids) if running else -1,
            "domarch": "", "last_boot_CPU_flags": {}, "is_control_domain": False,
            "metrics": metrics_ref, "guest_metrics": NULL_REF, "last_booted_record": "",
            "recommendations": "", "xenstore_data": {}, "ha_always_run": False, "ha_restart_priority": "",
            "is_a_snapshot": is_a_snapshot, "snapshot_of": snapshot_of, "snapshots": [],
            "snapshot_time": now if is_a_snapshot else EPOCH, "transportable_snapshot_id": "",
            "blobs": {}, "tags": [], "blocked_operations": {}, "snapshot_info": {}, "snapshot_metadata": "",
            "parent": NULL_REF, "children": [], "bios_strings": {}, "protection_policy": NULL_REF,
            "is_snapshot_from_vmpp": False, "snapshot_schedule": NULL_REF, "is_vmss_snapshot": False,
            "appliance": NULL_REF, "start_delay": 0, "shutdown_delay": 0, "order": 0,
            "VGPUs": [], "attached_PCIs": [], "suspend_SR": NULL_REF, "version": 0,
            "generation_id": "0:0", "hardware_platform_version": 0, "has_vendor_device": False,
            "requires_reboot": False, "reference_label": "", "domain_type": "hvm", "NVRAM": {},
            "pending_guidances": [],
        }
        rec.update(fields)
        if any(r["uuid"] == rec["uuid"] for r in self._db["VM"].values()):
            raise ValueError(f"a VM with uuid {rec['uuid']} exists")
        self._db["VM"][ref] = rec
        self._db["VM_metrics"][metrics_ref] = {
            "uuid": str(_uuid.uuid4()), "memory_actual": rec["memory_target"],
            "VCPUs_number": rec["VCPUs_at_startup"] if running else 0, "VCPUs_utilisation": {},
            "VCPUs_CPU": {}, "VCPUs_params": {}, "VCPUs_flags": {}, "state": [],
            "start_time": now if running else EPOCH, "install_time": now, "last_updated": EPOCH,
            "other_config": {}, "hvm": True, "nested_virt": False, "nomigrate": False,
            "current_domain_type": "hvm" if running else "unspecified",
        }
        self._vmx[ref] = _VMState()
        if rec["resident_on"] == self.host_ref:
            self._record("host", self.host_ref)["resident_VMs"].append(ref)
        return ref

    def _add_snapshot(self, vm_ref: str, name_label: str, power_state: str = "Halted",
                      uuid: str | None = None, **fields: Any) -> str:
        if power_state not in POWER_STATES:
            raise ValueError(f"power_state must be one of {POWER_STATES}")
        vm = self._record("VM", vm_ref)
        snap = self._new_vm_record(uuid, name_label, power_state, is_a_snapshot=True, snapshot_of=vm_ref,
                                   resident_on=NULL_REF, domid=-1,
                                   memory_static_max=vm["memory_static_max"], VCPUs_max=vm["VCPUs_max"],
                                   **fields)
        vm["snapshots"].append(snap)
        self._update_allowed(snap)
        return snap

    # ------------------------------------------------------------ internals: lazy state

    def _refresh(self) -> None:
        """Bring time-dependent state up to date: guest metrics appearing, task progress."""
        now = time.monotonic()
        for ref, vm in self._db["VM"].items():
            st = self._vmx[ref]
            have = vm["guest_metrics"] != NULL_REF
            if vm["power_state"] in ("Halted", "Suspended"):
                if have:
                    self._destroy_guest_metrics(ref)
                continue
            if have:
                gm = self._db["VM_guest_metrics"].get(vm["guest_metrics"])
                if gm is not None:
                    nets = st.networks or {}
                    if gm["networks"] != nets:
                        gm["networks"] = dict(nets)
                        gm["last_updated"] = _utcnow()
                continue
            if (vm["power_state"] == "Running" and st.networks is not None and st.running_since is not None
                    and now - st.running_since >= st.address_after):
                gm_ref = new_ref()
                self._db["VM_guest_metrics"][gm_ref] = {
                    "uuid": str(_uuid.uuid4()),
                    "os_version": {"name": "FreeBSD", "distro": "freebsd", "uname": "15.0-CURRENT"},
                    "netbios_name": {}, "PV_drivers_version": {}, "PV_drivers_up_to_date": False,
                    "memory": {}, "disks": {}, "networks": dict(st.networks), "other": {},
                    "last_updated": _utcnow(), "other_config": {}, "live": True,
                    "can_use_hotplug_vbd": "unspecified", "can_use_hotplug_vif": "unspecified",
                    "PV_drivers_detected": False,
                }
                vm["guest_metrics"] = gm_ref
        for ref, run in self._tasks.items():
            rec = self._db["task"].get(ref)
            if rec is not None and rec["status"] == "pending" and run.delay > 0:
                rec["progress"] = round(min(0.99, (now - run.started) / run.delay), 2)

    def _destroy_guest_metrics(self, vm_ref: str) -> None:
        vm = self._db["VM"][vm_ref]
        self._db["VM_guest_metrics"].pop(vm["guest_metrics"], None)
        vm["guest_metrics"] = NULL_REF

    def _set_power(self, ref: str, new: str) -> list[tuple[str, str, str]]:
        vm = self._record("VM", ref)
        old = vm["power_state"]
        if old == new:
            return []
        st = self._vmx[ref]
        host = self._record("host", self.host_ref)
        metrics = self._db["VM_metrics"].get(vm["metrics"])
        vm["power_state"] = new
        if new in ("Running", "Paused"):
            if old in ("Halted", "Suspended"):
                vm["domid"] = next(self._domids)
                vm["resident_on"] = self.host_ref
                vm["memory_target"] = vm["memory_static_max"]
                if ref not in host["resident_VMs"]:
                    host["resident_VMs"].append(ref)
                if metrics is not None:
                    metrics["start_time"] = _utcnow()
                    metrics["VCPUs_number"] = vm["VCPUs_at_startup"]
                    metrics["current_domain_type"] = vm["domain_type"]
            if new == "Running":
                st.running_since = time.monotonic()
        else:
            vm["domid"] = -1
            vm["resident_on"] = NULL_REF
            vm["memory_target"] = 0
            if ref in host["resident_VMs"]:
                host["resident_VMs"].remove(ref)
            st.running_since = None
            if vm["guest_metrics"] != NULL_REF:
                self._destroy_guest_metrics(ref)
            if metrics is not None:
                metrics["VCPUs_number"] = 0
                metrics["current_domain_type"] = "unspecified"
        return [(ref, old, new)]

    def _reboot(self, ref: str) -> None:
        vm = self._record("VM", ref)
        vm["domid"] = next(self._domids)
        self._vmx[ref].running_since = time.monotonic()
        if vm["guest_metrics"] != NULL_REF:
            self._destroy_guest_metrics(ref)

    def _fire_hooks(self, events: list[tuple[str, str, str]]) -> None:
        for ref, old, new in events:
            with self._lock:
                st = self._vmx.get(ref)
                if st is None:
                    continue
                uuid = self._db["VM"][ref]["uuid"]
                todo: list[tuple[str, Callable, tuple]] = [("power", cb, (old, new)) for cb in st.hooks["power"]]
                if new == "Running":
                    todo += [("start", cb, ()) for cb in st.hooks["start"]]
                if new == "Halted":
                    todo += [("shutdown", cb, ()) for cb in st.hooks["shutdown"]]
            for hook, cb, args in todo:
                self.hook_calls.append((uuid, hook, old, new))
                try:
                    cb(*args)
                except BaseException as exc:  # noqa: BLE001 - reported by check()
                    self.hook_errors.append((uuid, hook, exc))

    # ------------------------------------------------------------ internals: operations

    def _op_error(self, op: str, ref: str) -> XapiFailure | None:
        vm = self._record("VM", ref)
        state = vm["power_state"]
        if state not in _OP_STATES[op]:
            return XapiFailure("VM_BAD_POWER_STATE", ref, ", ".join(s.lower() for s in _OP_STATES[op]),
                               state.lower())
        current = list(vm["current_operations"].values())
        if current and not self._concurrent_ok(op, current):
            cur = current[0] if len(current) == 1 else "{" + ",".join(current) + "}"
            return XapiFailure("OTHER_OPERATION_IN_PROGRESS", f"VM.{cur}", ref)
        if vm["is_a_template"] and not vm["is_a_snapshot"] and op not in _TEMPLATE_OPS:
            return XapiFailure("VM_IS_TEMPLATE", ref, op)
        if vm["is_a_snapshot"] and op not in _SNAPSHOT_OPS:
            return XapiFailure("VM_IS_SNAPSHOT", ref, op)
        if op == "revert" and not vm["is_a_snapshot"]:
            return XapiFailure("ONLY_REVERT_SNAPSHOT")
        if op in ("clean_shutdown", "clean_reboot") and self._vmx[ref].clean_shutdown_error:
            return XapiFailure(*[a.replace("{vm}", ref) for a in self._vmx[ref].clean_shutdown_error])
        return None

    @staticmethod
    def _concurrent_ok(op: str, current: list[str]) -> bool:
        if op in ("snapshot", "checkpoint") and all(c in ("snapshot", "checkpoint") for c in current):
            return True
        if op == "hard_shutdown":
            return "hard_shutdown" not in current
        if op == "hard_reboot":
            return not any(c in ("hard_shutdown", "hard_reboot") for c in current)
        return False

    def _update_allowed(self, ref: str) -> None:
        vm = self._db["VM"].get(ref)
        if vm is None:
            return
        vm["allowed_operations"] = [op for op in _ALLOWED_OPS_ORDER if self._op_error(op, ref) is None]

    def _run_op(self, op: str, args: list, *, method: str, injected: list | None,
                run: _TaskRun | None, session: str) -> Any:
        """Run one VM operation (in the request thread, or in an Async task's thread)."""
        ref = args[0]
        delay = self._delay.get(method, 0.0)
        opid = run.ref if run else new_ref()
        marked: list[tuple[str, str]] = []
        with self._lock:
            vm = self._record("VM", ref)
            if op in ("start_on", "resume_on"):
                self._record("host", args[1])
            target = vm["snapshot_of"] if op == "revert" and vm["snapshot_of"] in self._db["VM"] else None
            if injected is None:
                err = self._op_error(op, ref)
                if err is None and op == "revert":
                    # xapi: "reverting" on the VM, which must not be busy; a running VM is
                    # hard-shut-down first (see _apply)
                    if target is None:
                        err = XapiFailure("VM_REVERT_FAILED", ref, vm["snapshot_of"])
                    elif self._db["VM"][target]["current_operations"]:
                        cur = list(self._db["VM"][target]["current_operations"].values())
                        err = XapiFailure("OTHER_OPERATION_IN_PROGRESS", f"VM.{cur[0]}", target)
                if err is not None:
                    raise err
            vm["current_operations"][opid] = op
            marked.append((ref, opid))
            if target is not None:
                self._db["VM"][target]["current_operations"][opid] = "reverting"
                marked.append((target, opid))
            for r, _ in marked:
                self._update_allowed(r)
        events: list[tuple[str, str, str]] = []
        try:
            if delay > 0:
                wake = run.wake if run else self._stop
                wake.wait(delay)
            if self._stop.is_set():
                raise _Stopping()
            if run is not None:
                with self._lock:
                    if run.cancel_requested:
                        raise XapiFailure("TASK_CANCELLED", run.ref)
                    run.cancellable = False
                    rec = self._db["task"].get(run.ref)
                    if rec is not None:
                        rec["allowed_operations"] = []
            if injected is not None:
                raise XapiFailure(*self._substitute(injected, session, ref, run.ref if run else None))
            with self._lock:
                result, events = self._apply(op, ref, args)
            self._fire_hooks(events)
            return result
        finally:
            with self._lock:
                for r, oid in marked:
                    if r in self._db["VM"]:
                        self._db["VM"][r]["current_operations"].pop(oid, None)
                        self._update_allowed(r)

    def _apply(self, op: str, ref: str, args: list) -> tuple[Any, list]:
        events: list[tuple[str, str, str]] = []
        if op in ("start", "start_on", "resume", "resume_on"):
            start_paused = args[-2]
            events += self._set_power(ref, "Paused" if start_paused else "Running")
        elif op in ("clean_shutdown", "hard_shutdown", "shutdown"):
            events += self._set_power(ref, "Halted")
        elif op in ("clean_reboot", "hard_reboot"):
            if self._record("VM", ref)["power_state"] == "Paused":
                events += self._set_power(ref, "Running")
            self._reboot(ref)
        elif op == "pause":
            events += self._set_power(ref, "Paused")
        elif op == "unpause":
            events += self._set_power(ref, "Running")
        elif op == "suspend":
            events += self._set_power(ref, "Suspended")
        elif op == "revert":
            snap = self._record("VM", ref)
            target = snap["snapshot_of"]
            if self._record("VM", target)["power_state"] != "Halted":
                events += self._set_power(target, "Halted")
            events += self._set_power(target, snap["power_state"])
            self._record("VM", target)["parent"] = ref
            self._update_allowed(target)
        elif op in ("snapshot", "checkpoint"):
            snap = self._add_snapshot(ref, args[1], "Suspended" if op == "checkpoint" else "Halted")
            self._update_allowed(ref)
            return snap, events
        self._update_allowed(ref)
        return None, events

    @staticmethod
    def _substitute(desc: list, session: str | None, vm: str | None, task: str | None) -> list[str]:
        out = []
        for a in desc:
            a = str(a)
            if vm is not None:
                a = a.replace("{vm}", vm)
            if session is not None:
                a = a.replace("{session}", session)
            if task is not None:
                a = a.replace("{task}", task)
            out.append(a)
        return out

    def _take_injection(self, method: str) -> list | None:
        with self._lock:
            for key in _Match.keys_for(method)[:-1]:  # no "*" for failures
                queue = self._fail.items.get(key)
                if queue:
                    entry = queue[0]
                    entry[1] -= 1
                    if entry[1] <= 0:
                        queue.pop(0)
                    if not queue:
                        del self._fail.items[key]
                    return list(entry[0])
        return None

    def _take_drop(self, method: str) -> bool:
        with self._lock:
            for key in _Match.keys_for(method):
                n = self._drop.items.get(key, 0)
                if n > 0:
                    if n == 1:
                        del self._drop.items[key]
                    else:
                        self._drop.items[key] = n - 1
                    return True
        return False

    # ------------------------------------------------------------ internals: tasks

    def _new_task(self, method: str, session: str) -> _TaskRun:
        ref = new_ref()
        self._db["task"][ref] = {
            "uuid": str(_uuid.uuid4()), "name_label": method, "name_description": "",
            "allowed_operations": ["cancel"], "current_operations": {},
            "created": _utcnow(), "finished": EPOCH, "status": "pending",
            "resident_on": self.host_ref, "progress": 0.0, "type": "<none/>", "result": "",
            "error_info": [], "other_config": {}, "subtask_of": NULL_REF, "subtasks": [],
            "backtrace": "()",
        }
        run = _TaskRun(ref, method, time.monotonic(), self._delay.get(method, 0.0), threading.Event())
        self._tasks[ref] = run
        return run

    def _run_task(self, run: _TaskRun, op: str, args: list, injected: list | None, session: str) -> None:
        try:
            result = self._run_op(op, args, method=run.method, injected=injected, run=run, session=session)
        except _Stopping:
            return
        except XapiFailure as f:
            self._finish_task(run, "cancelled" if f.description[0] == "TASK_CANCELLED" else "failure",
                              error=f.description)
        except Exception as exc:  # pragma: no cover - a bug in the fake
            self.internal_errors.append(f"task {run.method}: {exc!r}")
            self._finish_task(run, "failure", error=["INTERNAL_ERROR", repr(exc)])
        else:
            self._finish_task(run, "success",
                              result="" if result is None else xapi_value(result))

    def _finish_task(self, run: _TaskRun, status: str, result: str = "", error: list[str] | None = None) -> None:
        with self._lock:
            rec = self._db["task"].get(run.ref)
            if rec is None:
                return
            rec.update(status=status, finished=_utcnow(), result=result, error_info=list(error or []),
                       allowed_operations=[], current_operations={})
            if status == "success":
                rec["progress"] = 1.0
            if run.destroy_pending:
                self._destroy_task(run.ref)

    def _destroy_task(self, ref: str) -> None:
        self._db["task"].pop(ref, None)
        self._tasks.pop(ref, None)
        self.destroyed_tasks.append(ref)

    # ------------------------------------------------------------ request handling

    def _handle_request(self, body: bytes, handler: _Handler) -> bytes | None:
        listener: _Listener = handler.server  # type: ignore[assignment]
        try:
            params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError) as exc:
            return xapi_response(failure(["XMLRPC_UNMARSHAL_FAILURE", str(exc)]))
        method = method or ""
        params = list(params)
        login = method.startswith("session.login") or method.startswith("session.slave_local_login")
        session = None if login or not params else params[0]
        if login:
            args = tuple(params[:1]) + ((REDACTED,) if len(params) > 1 else ()) + tuple(params[2:])
            user = params[0] if params and isinstance(params[0], str) else None
            originator = params[3] if len(params) > 3 and isinstance(params[3], str) else None
        else:
            args = tuple(params[1:])
            with self._lock:
                info = self._sessions.get(session) if isinstance(session, str) else None
            user = info.user if info else None
            originator = info.originator if info else None
        call = Call(seq=next(self._seq), method=method, session=session if isinstance(session, str) else None,
                    args=args, user=user, originator=originator, path=handler.path, scheme=listener.scheme,
                    listener=listener.kind, connection=handler.conn_id,
                    user_agent=handler.headers.get("User-Agent"), time=time.monotonic())
        with self._lock:
            self._calls.append(call)
            hang = self._hang_all_requests or bool(self._hang.get(method))
        if hang:
            call.outcome = "hung"
            self._stop.wait()
            return None
        if self._take_drop(method):
            call.outcome = "dropped"
            return None
        try:
            value = self._dispatch(method, params, call)
            response = success(value)
            call.outcome, call.result = "Success", value
        except XapiFailure as f:
            response = failure(f.description)
            call.outcome, call.error = "Failure", f.description
        except _Stopping:
            call.outcome = "hung"
            return None
        except Exception as exc:  # a bug in the fake: answer like xapi does, and report it
            self.internal_errors.append(f"{method}: {exc!r}")
            response = failure(["INTERNAL_ERROR", repr(exc)])
            call.outcome, call.error = "error", response["ErrorDescription"]
        return xapi_response(response)

    def _sleep(self, method: str) -> None:
        d = self._delay.get(method, 0.0)
        if d:
            self._stop.wait(d)
            if self._stop.is_set():
                raise _Stopping()

    def _dispatch(self, method: str, params: list, call: Call) -> Any:
        if method == "session.login_with_password":
            self._sleep(method)
            return self._login(params, call)
        is_async = method.startswith("Async.")
        base = method[len("Async."):] if is_async else method
        cls, _, verb = base.partition(".")
        handler, nargs = self._lookup(cls, verb, is_async)
        if handler is None:
            raise XapiFailure("MESSAGE_METHOD_UNKNOWN", method)
        optional = _OPTIONAL_PARAMS.get(verb, 0) if cls == "VM" else 0
        if not (nargs + 1 <= len(params) <= nargs + 1 + optional):
            raise XapiFailure("MESSAGE_PARAMETER_COUNT_MISMATCH", method, nargs + 1, len(params))
        session = params[0]
        with self._lock:
            if not isinstance(session, str) or session not in self._sessions:
                raise XapiFailure("SESSION_INVALID", session)
        args = params[1:]
        if cls == "VM" and verb in _OP_PARAMS:
            for (pname, ptype), value in zip(_OP_PARAMS[verb], args):
                if (ptype is bool and not isinstance(value, bool)) or \
                        (ptype is not bool and not isinstance(value, str)):
                    raise XapiFailure("FIELD_TYPE_ERROR", pname)
            injected = self._take_injection(method)
            if injected and injected[0] == "SESSION_INVALID":
                raise XapiFailure(*self._substitute(injected, session, args[0], None))
            if is_async:
                with self._lock:
                    run = self._new_task(method, session)
                call.task = run.ref
                t = threading.Thread(target=self._run_task, args=(run, verb, args, injected, session),
                                     name=f"xapi-fake-task-{method}", daemon=True)
                run.thread = t
                self._track(t)
                t.start()
                return run.ref
            result = handler(verb, args, method=method, injected=injected, session=session)
            return "" if result is None else result
        self._sleep(method)
        injected = self._take_injection(method)
        if injected:
            raise XapiFailure(*self._substitute(injected, session, args[0] if args and cls == "VM" else None,
                                                args[0] if args and cls == "task" else None))
        with self._lock:
            if handler == "logout":
                self._sessions.pop(session, None)
                self.logouts += 1
                return ""
            self._refresh()
            return copy.deepcopy(handler(*args))

    def _lookup(self, cls: str, verb: str, is_async: bool) -> tuple[Callable | None, int]:
        if cls == "VM" and verb in _OP_PARAMS:
            return (lambda op, args, **kw: self._run_op(op, args, run=None, **kw)), len(_OP_PARAMS[verb])
        if is_async:
            return None, 0
        if cls == "session":
            if verb == "logout":
                return "logout", 0  # type: ignore[return-value] - handled by _dispatch
            if verb == "get_this_host":
                return (lambda s: self.host_ref if s in self._sessions else _raise(
                    XapiFailure("HANDLE_INVALID", "session", s))), 1
            return None, 0
        if cls == "task" and verb == "destroy":
            return self._task_destroy, 1
        if cls == "task" and verb == "cancel":
            return self._task_cancel, 1
        if cls not in _CLASSES:
            return None, 0
        table = self._db[cls]
        if verb == "get_all":
            return (lambda: list(table)), 0
        if verb == "get_all_records":
            return (lambda: dict(table)), 0
        if verb == "get_record":
            return (lambda ref: self._record(cls, ref)), 1
        if verb == "get_by_uuid":
            def by_uuid(uuid):
                for ref, rec in table.items():
                    if rec["uuid"] == uuid:
                        return ref
                raise XapiFailure("UUID_INVALID", cls, uuid)
            return by_uuid, 1
        if verb == "get_by_name_label" and cls in _NAMED_CLASSES:
            return (lambda label: [r for r, rec in table.items() if rec.get("name_label") == label]), 1
        if verb.startswith("get_"):
            fieldname = verb[len("get_"):]
            if fieldname in self._fields(cls):
                return (lambda ref: self._record(cls, ref)[fieldname]), 1
        return None, 0

    def _fields(self, cls: str) -> set[str]:
        with self._lock:
            known = {
                "VM_guest_metrics": {"uuid", "os_version", "netbios_name", "PV_drivers_version",
                                     "PV_drivers_up_to_date", "memory", "disks", "networks", "other",
                                     "last_updated", "other_config", "live", "can_use_hotplug_vbd",
                                     "can_use_hotplug_vif", "PV_drivers_detected"},
                "task": {"uuid", "name_label", "name_description", "allowed_operations",
                         "current_operations", "created", "finished", "status", "resident_on", "progress",
                         "type", "result", "error_info", "other_config", "subtask_of", "subtasks",
                         "backtrace"},
            }.get(cls, set())
            for rec in self._db[cls].values():
                known |= set(rec)
            return known

    def _login(self, params: list, call: Call) -> str:
        if not (2 <= len(params) <= 4):
            raise XapiFailure("MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", 4, len(params))
        injected = self._take_injection("session.login_with_password")
        if injected:
            with self._lock:
                self.login_failures += 1
            raise XapiFailure(*injected)
        user, pw = params[0], params[1]
        version = params[2] if len(params) > 2 else None
        originator = params[3] if len(params) > 3 else None
        with self._lock:
            if user != self.username or pw != self.password:
                self.login_failures += 1
                raise XapiFailure("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
            ref = new_ref()
            self._sessions[ref] = _SessionInfo(str(user), originator if isinstance(originator, str) else None,
                                               version if isinstance(version, str) else None, time.monotonic())
            self.logins += 1
        return ref

    def _task_destroy(self, ref: str) -> str:
        self._record("task", ref)
        run = self._tasks.get(ref)
        self.task_destroys += 1
        if run is not None and self._db["task"][ref]["status"] in ("pending", "cancelling"):
            run.destroy_pending = True
            self._db["task"][ref]["current_operations"] = {"task": "destroy"}
        else:
            self._destroy_task(ref)
        return ""

    def _task_cancel(self, ref: str) -> str:
        rec = self._record("task", ref)
        run = self._tasks.get(ref)
        if run is not None and rec["status"] == "pending" and run.cancellable:
            run.cancel_requested = True
            rec["status"] = "cancelling"
            rec["current_operations"] = {new_ref(): "cancel"}
            run.wake.set()
        return ""


class _Stopping(Exception):
    """The server is stopping: abandon the request without an answer."""


def _raise(exc: BaseException):
    raise exc


# ------------------------------------------------------------------ transports

class _TimeoutMixin:
    timeout: float | None = None

    def make_connection(self, host):
        conn = super().make_connection(host)  # type: ignore[misc]
        if self.timeout is not None:
            conn.timeout = self.timeout
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
        return conn


class TimeoutTransport(_TimeoutMixin, xmlrpc.client.Transport):
    """``xmlrpc.client.Transport`` with a socket timeout (for ``XenAPI.Session(url, transport=…)``)."""

    def __init__(self, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout


class TimeoutSafeTransport(_TimeoutMixin, xmlrpc.client.SafeTransport):
    """``SafeTransport(context=…)`` with a socket timeout."""

    def __init__(self, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout


# ------------------------------------------------------------------ fixture

@pytest.fixture
def xapi_server(tmp_path):
    """A started :class:`FakeXapiServer` (http + https listeners), stopped and checked at teardown.

    User ``root``, password ``server.password``; TLS material in ``tmp_path/"xapi"``."""
    server = FakeXapiServer(tmp_path / "xapi")
    server.start()
    try:
        yield server
    finally:
        server.stop()
    server.check()
