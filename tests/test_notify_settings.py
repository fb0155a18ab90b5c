"""``[notify]`` settings: channels, defaults, round trip, and one clear message per bad value."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from fruix_dagster.errors import ConfigError
from fruix_dagster.settings import MailChannel, WebhookChannel, load_settings, render_settings

BASE = '[[guest]]\nname = "a"\nkind = "local"\n[[target]]\nname = "amd64"\nguest = "a"\n'
MAIL = ('[[notify.channel]]\nname = "ops"\nkind = "mail"\nhost = "smtp.example"\n'
        'from = "fruix@example.org"\nto = ["ops@example.org"]\n')
HOOK = '[[notify.channel]]\nname = "chat"\nkind = "webhook"\nurl = "https://hooks.example/x?room=1"\n'

GOOD = """
[notify]
ui_url = "http://dagster.example:3000"
retries = 3
backoff_seconds = 0.5
summary_cron = "0 7 * * 1-5"
summary_timezone = "Europe/Berlin"

[[notify.channel]]
name = "ops"
kind = "mail"
on = ["failure", "stuck", "recovered", "summary"]
host = "smtp.example"
port = 2525
security = "tls"
user = "fruix"
password_env = "SMTP_PASSWORD"
ca_file = "ca.pem"
from = "fruix@example.org"
to = ["ops@example.org", "builds@example.org"]

[[notify.channel]]
name = "slack"
kind = "webhook"
on = ["failure", "recovered"]
url_env = "SLACK_WEBHOOK_URL"
format = "slack"

[[notify.channel]]
name = "matrix"
kind = "webhook"
url = "https://matrix.example/_matrix/client/v3/rooms/!r:example/send/m.room.message"
format = "matrix"
token_env = "MATRIX_TOKEN"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fruix.toml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp_path / "home"), **extra}


def test_channels_load_with_their_kinds_and_defaults(tmp_path):
    s = load_settings(write(tmp_path, GOOD + BASE), env(tmp_path))
    n = s.notify
    assert n.ui_url == "http://dagster.example:3000/"
    assert (n.retries, n.backoff_seconds, n.timeout_seconds) == (3, 0.5, 10.0)
    assert (n.summary_cron, n.summary_timezone) == ("0 7 * * 1-5", "Europe/Berlin")
    mail, slack, matrix = n.channels
    assert isinstance(mail, MailChannel) and isinstance(slack, WebhookChannel)
    assert mail.smtp_port == 2525 and mail.ca_file == str(tmp_path / "ca.pem")
    assert mail.to == ("ops@example.org", "builds@example.org") and mail.from_ == "fruix@example.org"
    assert matrix.on == ("failure", "stuck", "recovered", "summary")  # the default: everything
    assert [c.name for c in n.channels_for("summary")] == ["ops", "matrix"]
    assert matrix.url.endswith("/send/m.room.message")  # webhook URLs are kept exactly as written
    # ports by security when not set
    s2 = load_settings(write(tmp_path, MAIL + BASE), env(tmp_path))
    assert s2.notify.channels[0].smtp_port == 587 and s2.notify.channels[0].security == "starttls"
    assert load_settings(write(tmp_path, BASE), env(tmp_path)).notify.channels == ()


def test_notify_round_trips_through_check_config(tmp_path):
    original = load_settings(write(tmp_path, GOOD + BASE), env(tmp_path, SMTP_PASSWORD="hunter2-secret"))
    text = render_settings(original)
    data = tomllib.loads(text)
    assert [c["name"] for c in data["notify"]["channel"]] == ["ops", "slack", "matrix"]
    assert "hunter2-secret" not in text
    other = tmp_path / "other"
    other.mkdir()
    assert load_settings(write(other, text), env(tmp_path)) == original


# (id, file text, dotted key, found value as it must appear)
INVALID = [
    ("notify-not-table", "notify = 1\n" + BASE, "notify", "1"),
    ("notify-unknown", "[notify]\ncolour = 1\n" + BASE, "notify", "'colour'"),
    ("ui-url-scheme", '[notify]\nui_url = "ftp://x/"\n' + BASE, "notify.ui_url", "'ftp://x/'"),
    ("retries-negative", "[notify]\nretries = -1\n" + BASE, "notify.retries", "-1"),
    ("timeout-zero", "[notify]\ntimeout_seconds = 0\n" + BASE, "notify.timeout_seconds", "got 0"),
    ("summary-cron", '[notify]\nsummary_cron = "daily"\n' + BASE, "notify.summary_cron", "'daily'"),
    ("summary-tz", '[notify]\nsummary_timezone = "Mars/Olympus"\n' + BASE, "notify.summary_timezone", "'Mars/Olympus'"),
    ("channel-single-table", '[notify.channel]\nname = "x"\nkind = "mail"\n' + BASE, "notify.channel", "[[notify.channel]]"),
    ("channel-kind", '[[notify.channel]]\nname = "x"\nkind = "pager"\n' + BASE, "notify.channel[0].kind", "'pager'"),
    ("channel-no-kind", '[[notify.channel]]\nname = "x"\n' + BASE, "notify.channel[0].kind", "got nothing"),
    ("channel-no-name", '[[notify.channel]]\nkind = "mail"\n' + BASE, "notify.channel[0].name", "got nothing"),
    ("channel-dup-name", MAIL + MAIL + BASE, "notify.channel[1].name", "'ops'"),
    ("on-unknown-event", MAIL + 'on = ["failure", "succes"]\n' + BASE, "notify.channel[0].on[1]", "'succes'"),
    ("on-string", MAIL + 'on = "failure"\n' + BASE, "notify.channel[0].on", "'failure'"),
    ("on-repeat", MAIL + 'on = ["failure", "failure"]\n' + BASE, "notify.channel[0].on[1]", "'failure' twice"),
    ("on-empty", MAIL + "on = []\n" + BASE, "notify.channel[0].on", "an empty array"),
    ("mail-no-host", '[[notify.channel]]\nname = "m"\nkind = "mail"\nfrom = "a@b"\nto = ["c@d"]\n' + BASE,
     "notify.channel[0].host", "got nothing"),
    ("mail-bad-to", MAIL.replace('["ops@example.org"]', '["ops at example"]') + BASE, "notify.channel[0].to[0]", "'ops at example'"),
    ("mail-to-string", MAIL.replace('["ops@example.org"]', '"ops@example.org"') + BASE, "notify.channel[0].to", "write ["),
    ("mail-bad-from", MAIL.replace('"fruix@example.org"', '"Fruix <f@x>"') + BASE, "notify.channel[0].from", "'Fruix <f@x>'"),
    ("mail-security", MAIL + 'security = "ssl"\n' + BASE, "notify.channel[0].security", "'ssl'"),
    ("mail-port", MAIL + "port = 70000\n" + BASE, "notify.channel[0].port", "70000"),
    ("mail-user-no-password", MAIL + 'user = "fruix"\n' + BASE, "notify.channel[0].password_env", "got nothing"),
    ("mail-password-no-user", MAIL + 'password_env = "PW"\n' + BASE, "notify.channel[0].password_env", "'PW'"),
    ("mail-login-in-clear", MAIL + 'user = "u"\npassword_env = "PW"\nsecurity = "none"\n' + BASE,
     "notify.channel[0].security", "'none'"),
    ("mail-unknown-key", MAIL + 'url = "https://x/"\n' + BASE, "notify.channel[0]", "'url'"),
    ("hook-no-url", '[[notify.channel]]\nname = "h"\nkind = "webhook"\n' + BASE, "notify.channel[0]", "got neither"),
    ("hook-both-urls", HOOK + 'url_env = "U"\n' + BASE, "notify.channel[0]", "got both"),
    ("hook-url-scheme", HOOK.replace("https://hooks.example/x?room=1", "file:///etc/passwd") + BASE,
     "notify.channel[0].url", "'file:///etc/passwd'"),
    ("hook-format", HOOK + 'format = "teams"\n' + BASE, "notify.channel[0].format", "'teams'"),
    ("hook-matrix-no-token", HOOK + 'format = "matrix"\n' + BASE, "notify.channel[0].token_env", "got nothing"),
    ("hook-token-env-bad", HOOK + 'token_env = "xoxb-123-abc"\n' + BASE, "notify.channel[0].token_env", "not shown"),
]


@pytest.mark.parametrize("text,key,found", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_bad_notify_settings_give_one_clear_message(tmp_path, text, key, found):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env(tmp_path))
    msg = str(ei.value)
    assert msg.startswith(f"{p}: {key}: "), msg
    assert found in msg, msg
    assert "\n" not in msg and "Traceback" not in msg and "pydantic" not in msg, msg
    assert len(msg) < 600, msg


def test_secrets_in_the_wrong_place_are_not_echoed(tmp_path):
    for text in (HOOK + 'token_env = "xoxb-123-abc"\n',
                 HOOK.replace("https://hooks.example/x?room=1", "https://bot:xoxb-123-abc@hooks.example/x")):
        with pytest.raises(ConfigError) as ei:
            load_settings(write(tmp_path, text + BASE), env(tmp_path))
        assert "xoxb-123-abc" not in str(ei.value) and "notify.channel[0]" in str(ei.value)


def test_invalid_cases_are_distinct():
    assert len({c[0] for c in INVALID}) == len(INVALID) == len({c[1] for c in INVALID})
