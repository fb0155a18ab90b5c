"""The HTTP side of a XenAPI session: connections with timeouts, and TLS.

* **Timeouts.**  The SDK's transport has none: a pool that accepts the TCP
  connection and never answers would hang a run forever.  :class:`TimeoutTransport`
  / :class:`TimeoutSafeTransport` subclass ``xmlrpc.client.Transport`` /
  ``SafeTransport`` and give every connection ``request_timeout`` seconds for
  connect, TLS handshake and each read.
* **TLS.**  :func:`ssl_context`: certificates are verified against the system
  trust store by default; ``ca_file`` pins a CA (or the pool's own
  certificate) instead; ``insecure`` switches verification off (the client
  logs that at every login).

Plain Python; no dagster import.
"""

from __future__ import annotations

import os
import ssl
import xmlrpc.client
from typing import Any
from urllib.parse import urlsplit

from fruix_dagster.errors import ConfigError


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


def ssl_context(*, insecure: bool, ca_file: str | None, where: str, display: str) -> ssl.SSLContext:
    """The TLS context for a pool: system trust store, a pinned ``ca_file``, or no verification."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_file:
        try:
            return ssl.create_default_context(cafile=os.path.expanduser(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"{where}: xcpng.ca_file: expected a readable PEM file with the CA (or "
                f"the pool's own certificate) that signed {display}'s certificate, "
                f"got {ca_file} ({reason}); fix ca_file") from None
    return ssl.create_default_context()


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
