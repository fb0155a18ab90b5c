"""``[notify]``: who is told about failed, stuck and recovered builds, and the summary.

::

    [notify]
    ui_url = "http://dagster.example:3000/"   # run links: <ui_url>runs/<run_id>
    summary_cron = "0 7 * * *"               # optional: the summary schedule
    [[notify.channel]]
    name = "ops"
    kind = "mail"                            # mail | webhook
    on = ["failure", "stuck", "recovered", "summary"]
    host = "smtp.example"
    ...

Channels are a discriminated union on ``kind`` (:class:`MailChannel`,
:class:`WebhookChannel`), like guests.  Secrets (SMTP password, bearer token,
a webhook URL that embeds its own secret) are only ever *names* of
environment variables here.  The rules that only ``[notify]`` uses live in
this module rather than in ``rules.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, model_validator

from fruix_dagster.settings import rules as R
from fruix_dagster.settings.messages import CHANNEL_KINDS, CONTROL, bad, expect, show, toml_value
from fruix_dagster.settings.table import _frozen, _Table

#: what a channel can be told about (``on = [...]``)
EVENTS = ("failure", "stuck", "recovered", "summary")
SECURITY = ("starttls", "tls", "none")
#: the SMTP port of each ``security`` when ``port`` is not set (RFC 6409, RFC 8314, RFC 5321)
DEFAULT_SMTP_PORT = {"starttls": 587, "tls": 465, "none": 25}

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _nonempty_array(v: Any, expected: str) -> list:
    """``v`` as a list, or the one message for a bare string, a non-array or an empty array."""
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, str):
        raise expect(expected, v, f"write [{toml_value(v)}]", typed=True)
    if not isinstance(v, list) or not v:
        raise expect(expected, v, typed=not isinstance(v, list))
    return v


def _events(v: Any) -> tuple[str, ...]:
    v = _nonempty_array(v, f"must be a non-empty array of {', '.join(repr(e) for e in EVENTS)}")
    for i, e in enumerate(v):
        if not isinstance(e, str) or e not in EVENTS:
            raise expect(f"must be one of {', '.join(EVENTS)}", e, typed=not isinstance(e, str), sub=f"[{i}]")
        if e in v[:i]:
            raise bad(f"must not repeat an event, got {show(e)} twice; remove one", f"[{i}]")
    return tuple(v)


def _addresses(v: Any) -> tuple[str, ...]:
    v = _nonempty_array(v, "must be a non-empty array of mail addresses (user@domain)")
    for i, a in enumerate(v):
        if not isinstance(a, str) or not _ADDRESS.fullmatch(a):
            raise expect("must be a mail address (user@domain, no display name)", a,
                         typed=not isinstance(a, str), sub=f"[{i}]")
    return tuple(v)


def _address(v: Any) -> str:
    expected = "must be a mail address (user@domain, no display name)"
    if not _ADDRESS.fullmatch(R.string(v, expected)):
        raise expect(expected, v)
    return v


def _webhook_url(v: Any) -> str:
    """An http(s) URL, kept exactly as written (a webhook's path and query are its own)."""
    expected = "must be an http:// or https:// URL"
    s = R.string(v, expected)
    try:
        parts = urlsplit(s)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not CONTROL.search(s) \
            and " " not in s and not parts.fragment
        if ok:
            parts.port  # raises ValueError on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise expect(expected, s, "no spaces, control characters or #fragment")
    if parts.username or parts.password:
        # not echoed: the user part may hold a secret
        raise bad(f"{expected} without user:password@, got a URL with credentials (not shown); "
                  "put a bearer token in an environment variable and name it in token_env")
    return s


Events = R._rule(tuple[str, ...], _events)
Addresses = R._rule(tuple[str, ...], _addresses)
Address = R._rule(str, _address)
WebhookUrl = R._rule(str, _webhook_url)

_CHANNEL_NAME = R.pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@_frozen
class Channel(_Table):
    """What every channel kind has."""

    _what = "[[notify.channel]]"
    name: _CHANNEL_NAME
    kind: str
    on: Events = EVENTS


@_frozen
class MailChannel(Channel):
    _required = {"host": "required for kind 'mail' (the SMTP server's address or DNS name), got nothing",
                 "from": "required for kind 'mail' (the sender address, user@domain), got nothing",
                 "to": "required for kind 'mail' (an array of recipient addresses), got nothing"}
    kind: Literal["mail"] = "mail"
    host: R.Host = "localhost"
    port: R.opt(R.integer(1, 65535)) = None
    security: R.choice(*SECURITY) = "starttls"
    user: R.opt(R.text("must be a non-empty SMTP user name without control characters")) = None
    password_env: R.opt(R.EnvName) = None
    ca_file: R.opt(R.HostPath) = None
    from_: Address = Field(default="fruix@localhost", alias="from")
    to: Addresses = ()

    @model_validator(mode="after")
    def _login(self) -> MailChannel:
        if self.password_env is not None and self.user is None:
            raise bad(f"only meaningful with user, got {show(self.password_env)} without a user; set user",
                      ".password_env")
        if self.user is not None and self.password_env is None:
            raise bad(f"required with user = {show(self.user)} (the NAME of an environment variable holding "
                      "the SMTP password), got nothing", ".password_env")
        if self.security == "none" and self.user is not None:
            raise bad(f"cannot be 'none' with user = {show(self.user)} (the password would cross the network "
                      "in clear), got 'none'; use starttls or tls", ".security")
        if self.security == "none" and self.ca_file is not None:
            raise bad(f"only meaningful with security = starttls or tls, got {show(self.ca_file)} with "
                      "security = 'none'; remove it", ".ca_file")
        return self

    @property
    def smtp_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_SMTP_PORT[self.security]


@_frozen
class WebhookChannel(Channel):
    kind: Literal["webhook"] = "webhook"
    url: Optional[WebhookUrl] = None
    url_env: R.opt(R.EnvName) = None
    format: R.choice("json", "slack", "matrix") = "json"
    token_env: R.opt(R.EnvName) = None
    ca_file: R.opt(R.HostPath) = None

    @model_validator(mode="after")
    def _one_url(self) -> WebhookChannel:
        if self.url is not None and self.url_env is not None:
            raise bad(f"needs exactly one of url / url_env, got both (url = {show(self.url)}, url_env = "
                      f"{show(self.url_env)}); remove one")
        if self.url is None and self.url_env is None:
            raise bad("needs exactly one of url / url_env (url_env: the NAME of an environment variable "
                      "holding a URL that is itself a secret, as Slack's are), got neither")
        if self.format == "matrix" and self.token_env is None:
            raise bad("required with format = 'matrix' (the NAME of an environment variable holding the "
                      "Matrix access token), got nothing", ".token_env")
        return self


def _channel_kind(v: Any) -> Any:
    if isinstance(v, dict):
        if "name" not in v:
            raise bad("required (a name matching [A-Za-z0-9][A-Za-z0-9._-]*), got nothing", ".name")
        if "kind" not in v:
            raise bad(f"required (one of {', '.join(CHANNEL_KINDS)}), got nothing", ".kind")
        if not isinstance(v["kind"], str) or v["kind"] not in CHANNEL_KINDS:
            raise expect(f"must be one of {', '.join(CHANNEL_KINDS)}", v["kind"],
                         typed=not isinstance(v["kind"], str), sub=".kind")
    elif not isinstance(v, Channel):
        raise expect("must be a table ([[notify.channel]])", v, typed=True)
    return v


AnyChannel = Annotated[Union[MailChannel, WebhookChannel], Field(discriminator="kind"),
                       BeforeValidator(_channel_kind)]


def _channels(v: Any) -> Any:
    if isinstance(v, dict):
        raise expect("must be an array of tables ([[notify.channel]])", v,
                     "write [[notify.channel]] instead of [notify.channel]")
    if not isinstance(v, (list, tuple)):
        raise expect("must be an array of tables ([[notify.channel]])", v, typed=True)
    return v


@_frozen
class NotifySettings(_Table):
    _what, _single = "[notify]", "notify"
    ui_url: R.Url = "http://127.0.0.1:3000/"
    retries: R.integer(0, 10) = 2
    backoff_seconds: R.number(ge=0) = 1.0
    timeout_seconds: R.number(gt=0) = 10.0
    summary_cron: R.opt(R.Cron) = None
    summary_timezone: R.TimeZone = "UTC"
    channels: Annotated[tuple[AnyChannel, ...], BeforeValidator(_channels)] = Field(default=(), alias="channel")

    @model_validator(mode="after")
    def _unique(self) -> NotifySettings:
        seen: dict[str, int] = {}
        for i, c in enumerate(self.channels):
            if c.name in seen:
                raise bad(f"must be unique (channel[{seen[c.name]}] already uses it), got {show(c.name)}",
                          f".channel[{i}].name")
            seen[c.name] = i
        return self

    def channels_for(self, event: str) -> tuple[Channel, ...]:
        """The channels whose ``on`` includes ``event``, in file order."""
        return tuple(c for c in self.channels if event in c.on)
