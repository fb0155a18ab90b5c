"""What a failed XenAPI call becomes: one HypervisorError that says what was expected, found and to do.

* :class:`XapiCallError`: XAPI answered ``ErrorDescription = [code, arg, …]``
  (the code and arguments are kept, so the lifecycle layer can decide
  between retry and failure); :func:`call_failure` words it, with a hint for
  the codes that have one (wrong password, pool member, RBAC, …).
* :class:`XapiUnreachable` / :class:`XapiTimeout`: the pool could not be
  reached, refused TLS, answered something that is not XML-RPC, or did not
  answer in time; :func:`translate` words each kind of wire failure.

Every message passes through the client's ``scrub`` (no password in any
message, even if the pool echoes it).

Plain Python; no dagster import.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import xml.parsers.expat
import xmlrpc.client
from typing import TYPE_CHECKING

import XenAPI

from fruix_dagster.errors import HypervisorError

if TYPE_CHECKING:
    from fruix_dagster.hypervisor.xapi import XapiClient

#: What a call through the SDK can raise: XAPI's answer (``XenAPI.Failure``); the network, TLS and
#: timeouts (``OSError``); HTTP (``http.client.HTTPException``); XML-RPC (``xmlrpc.client.Error``:
#: ``Fault``, ``ProtocolError``, ``ResponseError``) and a body that is not XML (``ExpatError``); and an
#: answer of the wrong shape: ``ValueError``/``TypeError`` from xmlrpc.client's unmarshaller, and
#: ``TypeError``/``IndexError`` from the SDK's ``_parse_result`` (it concatenates a non-dict answer to a
#: string, and reads ``ErrorDescription[0]``).  Anything else is a bug here and is not translated.
CALL_ERRORS = (XenAPI.Failure, OSError, http.client.HTTPException, xmlrpc.client.Error,
               xml.parsers.expat.ExpatError, ValueError, TypeError, IndexError)

#: Answers of a pool that is (re)starting: retried like a dropped connection.
TRANSIENT_POOL_CODES = ("HOST_STILL_BOOTING", "HOST_HAS_NO_MANAGEMENT_IP")

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


def short(details: list[str], limit: int = 6) -> str:
    """``CODE (arg, arg, …)`` of an XAPI error description."""
    shown = ", ".join(details[1:limit + 1]) + (", …" if len(details) > limit + 1 else "")
    return f"{details[0]}" + (f" ({shown})" if shown else "") if details else "(no error code)"


def call_failure(c: "XapiClient", method: str, details: list[str]) -> HypervisorError:
    """The error for XAPI's answer ``details`` to ``method``."""
    code = details[0] if details else ""
    if code == "SESSION_AUTHENTICATION_FAILED":
        return c.error(
            XapiCallError,
            f"{c.display} refused the login of {c.username!r} (SESSION_AUTHENTICATION_FAILED): "
            f"expected the password in ${c.password_env} to be that user's XAPI password; check "
            f"xcpng.username and the value of {c.password_env} (and that the account is not "
            f"locked or restricted by RBAC)", method=method, details=details)
    if code == "HOST_IS_SLAVE":
        master = details[1] if len(details) > 1 else "the pool master"
        return c.error(
            XapiCallError,
            f"{c.display} is a pool member, not the pool master (HOST_IS_SLAVE): the API is "
            f"served by the master at {master}; set xcpng.url to the master's address",
            method=method, details=details)
    hint = _HINTS.get(code)
    return c.error(
        XapiCallError,
        f"{method} on {c.display} failed: XAPI answered {short(details)}"
        + (f"; {hint}" if hint else ""),
        method=method, details=details)


def translate(c: "XapiClient", method: str, exc: BaseException) -> HypervisorError:
    """The error for a call to ``method`` that failed with ``exc`` (one of ``CALL_ERRORS``
    other than ``XenAPI.Failure``) before XAPI could answer it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        how = (f"the CA in ca_file = {c.ca_file}" if c.ca_file
               else "the system trust store")
        return c.error(
            XapiUnreachable,
            f"{c.display}: the TLS certificate is not trusted ({exc.verify_message or exc.reason}); "
            f"expected a certificate verified by {how}. Pin the pool's CA or its own "
            f"certificate with xcpng.ca_file = \"/path/to/pool.pem\" (on the host: "
            f"/etc/xensource/xapi-ssl.pem holds it), or — only on a network you trust — set "
            f"xcpng.insecure = true")
    if isinstance(exc, ssl.SSLError):
        return c.error(
            XapiUnreachable,
            f"{c.display}: TLS handshake failed ({exc}); check that the url's scheme and port "
            f"are right (https:// for port 443)")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return c.error(
            XapiTimeout,
            f"{method} on {c.display}: expected an answer within request_timeout = "
            f"{c.request_timeout:g} s, got none (the server accepted the connection, or not, "
            f"but never answered); check the pool's health (xe-toolstack-restart on the host) "
            f"or raise xcpng.request_timeout")
    if isinstance(exc, socket.gaierror):
        return c.error(
            XapiUnreachable,
            f"{c.display}: cannot resolve the host name ({exc}); fix xcpng.url")
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return c.error(
            XapiUnreachable,
            f"{method} on {c.display}: expected an XML-RPC answer, got HTTP {exc.errcode} "
            f"{exc.errmsg}; check that xcpng.url points at the pool master's XAPI (https://host/)")
    if isinstance(exc, xmlrpc.client.Fault):
        return c.error(
            XapiUnreachable,
            f"{method} on {c.display}: the XenAPI SDK gave up: {exc.faultString} "
            f"(fault {exc.faultCode}); check the pool's health and the credentials")
    if isinstance(exc, xml.parsers.expat.ExpatError):
        return c.error(
            XapiUnreachable,
            f"{method} on {c.display}: expected an XML-RPC answer, got something that is not "
            f"XML ({exc}); check that xcpng.url points at XAPI")
    if isinstance(exc, OSError):
        return c.error(
            XapiUnreachable,
            f"{method} on {c.display}: expected to reach XAPI, got {type(exc).__name__}: {exc}; "
            f"check the url and the network path to the pool")
    return c.error(
        HypervisorError,
        f"{method} on {c.display}: unexpected {type(exc).__name__}: {exc}")
