"""Sending a :class:`~.notice.Notice` to the channels of ``[notify]``.

Mail goes through the standard library's ``smtplib`` (STARTTLS, implicit
TLS or plain; ``login`` only over TLS), webhooks through
``urllib.request`` (POST, or PUT with a transaction id for Matrix's
``/send/m.room.message/{txnId}``).  Both cover what is needed with nothing to
install; ``requests``/``httpx`` and ``aiosmtplib`` were considered and bring
nothing a one-shot POST or mail needs.

Every channel is tried ``1 + retries`` times, waiting ``backoff_seconds``,
then twice that, … between attempts, each attempt bounded by
``timeout_seconds``; channels are sent to in parallel, so one hanging channel
does not hold back another.  Nothing here raises for a channel that fails:
:func:`deliver` returns one :class:`Delivery` per channel and the caller logs
and marks the failures.  Secrets (the SMTP password, the bearer token, a
URL read from ``url_env``) are read from the environment at send time and
removed from every error text this module returns.
"""

from __future__ import annotations

import concurrent.futures
import os
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Callable, Mapping
from urllib.parse import urlsplit

from fruix_dagster.errors import FruixError
from fruix_dagster.notify.notice import Notice
from fruix_dagster.settings import Channel, MailChannel, NotifySettings, WebhookChannel

USER_AGENT = "fruix-dagster-notify/1"


class ChannelError(FruixError):
    """One attempt at a channel failed; ``final`` when retrying cannot help."""

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final


@dataclass(frozen=True)
class Delivery:
    channel: str
    kind: str
    ok: bool
    attempts: int
    #: why it failed (secrets removed); '' when it was sent
    error: str = ""

    def describe(self) -> str:
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.ok:
            return f"{self.channel} ({self.kind}): sent ({tries})"
        return f"{self.channel} ({self.kind}): NOT sent after {tries}: {self.error}"


def _secret(environ: Mapping[str, str], name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = environ.get(name, "")
    if not value:
        raise ChannelError(f"the environment variable {name} ({what}) is not set or empty; "
                           "set it in the daemon's environment", final=True)
    return value


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ChannelError(f"cannot read ca_file {ca_file}: {exc}", final=True) from None


def send_mail(channel: MailChannel, notice: Notice, environ: Mapping[str, str], timeout: float) -> None:
    password = _secret(environ, channel.password_env, "the SMTP password")
    msg = EmailMessage()
    msg["Subject"] = notice.subject
    msg["From"] = channel.from_
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=notice.key, domain=channel.from_.rsplit("@", 1)[1])
    msg.set_content(notice.text())
    port = channel.smtp_port
    try:
        if channel.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(channel.host, port, timeout=timeout,
                                                   context=_tls_context(channel.ca_file))
        else:
            smtp = smtplib.SMTP(channel.host, port, timeout=timeout)
        with smtp:
            if channel.security == "starttls":
                smtp.starttls(context=_tls_context(channel.ca_file))
            if channel.user is not None and password is not None:
                smtp.login(channel.user, password)
            refused = smtp.send_message(msg)
        if refused:
            raise ChannelError(f"the server refused recipients: {', '.join(sorted(refused))}", final=True)
    except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS offered: retrying will not add it
        raise ChannelError(f"SMTP {channel.host}:{port}: {exc}", final=True) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise ChannelError(f"the SMTP server refused the login of {channel.user!r} ({exc.smtp_code})",
                           final=True) from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise ChannelError(f"the SMTP server answered {exc.smtp_code} {text.strip()}",
                           final=500 <= exc.smtp_code < 600) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError(f"SMTP {channel.host}:{port}: {_os_error(exc)}") from None


def send_webhook(channel: WebhookChannel, notice: Notice, environ: Mapping[str, str], timeout: float) -> None:
    url = channel.url if channel.url is not None else _secret(environ, channel.url_env, "the webhook URL")
    assert url is not None
    token = _secret(environ, channel.token_env, "the bearer token")
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    method = "POST"
    if channel.format == "matrix":  # PUT …/send/m.room.message/{txnId}: a retry is not a second message
        url, method = url.rstrip("/") + "/" + notice.key, "PUT"
    request = urllib.request.Request(url, data=notice.payload(channel.format), headers=headers, method=method)
    context = _tls_context(channel.ca_file) if urlsplit(url).scheme == "https" else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            response.read(1 << 16)
    except urllib.error.HTTPError as exc:
        raise ChannelError(f"the webhook answered HTTP {exc.code} {exc.reason}",
                           final=400 <= exc.code < 500 and exc.code not in (408, 429)) from None
    except urllib.error.URLError as exc:
        raise ChannelError(f"webhook {where(channel)}: {_os_error(exc.reason)}") from None
    except (OSError, ValueError) as exc:  # socket timeouts while reading, a malformed URL from url_env
        raise ChannelError(f"webhook {where(channel)}: {_os_error(exc)}") from None


def where(channel: Channel) -> str:
    """A channel's address as it may be logged: host only, never a URL's path or query."""
    if isinstance(channel, MailChannel):
        return f"{channel.host}:{channel.smtp_port}"
    if isinstance(channel, WebhookChannel) and channel.url is not None:
        parts = urlsplit(channel.url)
        return f"{parts.scheme}://{parts.netloc}"
    return f"(the URL in ${getattr(channel, 'url_env', '')})"


def _os_error(exc: object) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


_SENDERS: dict[type, Callable[..., None]] = {MailChannel: send_mail, WebhookChannel: send_webhook}


def _secrets_of(channel: Channel, environ: Mapping[str, str]) -> list[str]:
    names = [getattr(channel, n, None) for n in ("password_env", "token_env", "url_env")]
    return [environ[n] for n in names if n and environ.get(n)]


def redact(text: str, secrets: list[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def send_one(channel: Channel, notice: Notice, settings: NotifySettings,
             environ: Mapping[str, str] = os.environ, sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """Send to one channel with retries and backoff; never raises for a channel failure."""
    send = _SENDERS[type(channel)]
    attempts, error = 0, ""
    wait = settings.backoff_seconds
    for attempt in range(1 + settings.retries):
        attempts = attempt + 1
        try:
            send(channel, notice, environ, settings.timeout_seconds)
            return Delivery(channel.name, channel.kind, True, attempts)
        except ChannelError as exc:
            error = str(exc)
            if exc.final:
                break
        if attempt < settings.retries:
            sleep(wait)
            wait *= 2
    return Delivery(channel.name, channel.kind, False, attempts, redact(error, _secrets_of(channel, environ)))


def deliver(settings: NotifySettings, notice: Notice, environ: Mapping[str, str] = os.environ,
            sleep: Callable[[float], None] = time.sleep) -> list[Delivery]:
    """Send ``notice`` to every channel subscribed to its event, in parallel, in file order."""
    channels = settings.channels_for(notice.event)
    if not channels:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(channels),
                                               thread_name_prefix="fruix-notify") as pool:
        futures = [pool.submit(send_one, c, notice, settings, environ, sleep) for c in channels]
        return [f.result() for f in futures]
