"""What a message says: one :class:`Notice` per event, rendered as mail text or webhook JSON.

The failure facts come from the step failure's error text, which
``build/run.py`` writes in a fixed shape (a head line, then ``command:``,
``log:``, ``first errors:`` and ``last 40 lines:`` blocks); :func:`triage`
reads that shape back.  It is the only place that knows it, so a richer
triage (issue 13) can replace it without touching the senders.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

from fruix_dagster.errors import FruixError

#: how the silence watchdog in build/run.py words a stuck step
SILENCE = re.compile(r"over the silence limit of ")
FIRST_ERRORS = 10
#: what a compiler, linker or tool error looks like in a build log (cc, ld, make's own words)
_CAUSE = re.compile(r"(?:^|:\s)(?:fatal\s)?error:|undefined reference to|^ld(?:\.lld)?: error|"
                    r"^make(?:\[\d+\])?: don't know how to make|No such file or directory$", re.I)

_TITLES = {"failure": "FAILED", "stuck": "STUCK", "recovered": "RECOVERED", "summary": "summary"}


@dataclass(frozen=True)
class Triage:
    """The facts of one failed step, read from its error text."""

    headline: str
    command: str = ""
    log_path: str = ""
    first_errors: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()

    @property
    def last_marker(self) -> str:
        """The last ``>>>`` stage marker in the log tail ('' when none is there)."""
        for line in reversed(self.tail):
            if line.startswith(">>> "):
                return line
        return ""

    @property
    def stuck(self) -> bool:
        return bool(SILENCE.search(self.headline))


def triage(message: str) -> Triage:
    """Read a step failure's error text (BuildError/StepTimeout shape, or any other error)."""
    lines = message.splitlines()
    if not lines:
        return Triage(headline="(no error message)")
    headline, command, log_path = lines[0].strip(), "", ""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines[1:]:
        if line.startswith("command: "):
            command, current = line[len("command: "):], None
        elif line.startswith("log: "):
            log_path, current = line[len("log: "):], None
        elif line in ("first errors:", "last 40 lines:"):
            current = blocks.setdefault(line, [])
        elif current is not None and line.startswith("  "):
            current.append(line[2:])
        elif current is None and not blocks and not command:
            headline += " " + line.strip()  # a FruixError message that wraps
    tail = blocks.get("last 40 lines:", [])
    # make's "*** Error code 1" says only *that* it failed; the cause is the compiler's line above it
    first = list(dict.fromkeys([x for x in tail if _CAUSE.search(x)] + blocks.get("first errors:", [])))
    if not first and not command:  # not a make step (a refused precondition, a lost guest…)
        first = [x for x in lines[1:] if x.strip()]
    return Triage(headline=headline, command=command, log_path=log_path,
                  first_errors=tuple(first[:FIRST_ERRORS]), tail=tuple(tail))


@dataclass(frozen=True)
class Notice:
    """One message: failure, stuck, recovered or summary."""

    event: str
    target: str = ""
    guest: str = ""
    run_id: str = ""
    run_url: str = ""
    job: str = ""
    step: str = ""
    stage: str = ""
    failure: Triage | None = None
    #: failed steps besides the first (a run can fail in several)
    other_steps: tuple[str, ...] = ()
    previous_run_id: str = ""
    previous_run_url: str = ""
    #: the summary's Markdown (event "summary")
    markdown: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable per event and run: the idempotency key (Matrix transaction id)."""
        return "fruix-" + hashlib.sha256(f"{self.event}\0{self.run_id}\0{self.markdown}".encode()).hexdigest()[:32]

    @property
    def subject(self) -> str:
        if self.event == "summary":
            return f"[fruix] build summary: {self.extra.get('headline', '')}".rstrip(": ")
        what = f"[fruix] {_TITLES[self.event]}: target {self.target} on guest {self.guest}"
        if self.event in ("failure", "stuck") and self.step:
            what += f" at {self.step}"
        return what

    def text(self) -> str:
        """The plain-text body (mail, Slack/Matrix fallback)."""
        if self.event == "summary":
            return self.markdown
        out = [self.subject.removeprefix("[fruix] "), f"run:    {self.run_url}"]
        if self.event == "recovered":
            out.append(f"after the failed run {self.previous_run_id}: {self.previous_run_url}")
            return "\n".join(out) + "\n"
        if self.step:
            out.append(f"step:   {self.step}")
        if self.stage:
            out.append(f"stage:  {self.stage}")
        t = self.failure
        if t is not None:
            if t.log_path:
                out.append(f"log:    {t.log_path}")
            out.append(f"error:  {t.headline}")
            if t.first_errors:
                out += ["first error lines:"] + [f"  {x}" for x in t.first_errors]
        if self.other_steps:
            out.append(f"also failed: {', '.join(self.other_steps)}")
        return "\n".join(out) + "\n"

    def as_json(self) -> dict[str, Any]:
        t = self.failure
        return {
            "event": self.event, "title": self.subject.removeprefix("[fruix] "), "text": self.text(),
            "target": self.target, "guest": self.guest, "job": self.job,
            "run_id": self.run_id, "run_url": self.run_url, "step": self.step, "stage": self.stage,
            "error": t.headline if t else "", "first_errors": list(t.first_errors) if t else [],
            "log_path": t.log_path if t else "", "other_failed_steps": list(self.other_steps),
            "previous_run_id": self.previous_run_id, "previous_run_url": self.previous_run_url,
            "markdown": self.markdown,
        }

    def payload(self, fmt: str) -> bytes:
        """The webhook body: ``json`` (the fields above), ``slack`` (incoming-webhook
        ``text``/``blocks``) or ``matrix`` (an ``m.room.message`` event)."""
        if fmt == "json":
            body: dict[str, Any] = self.as_json()
        elif fmt == "slack":
            text = self.text()
            link = f"<{self.run_url}|run {self.run_id[:8]}>" if self.run_url else ""
            body = {"text": f"{self.subject.removeprefix('[fruix] ')}\n{text}",
                    "blocks": [{"type": "header", "text": {"type": "plain_text",
                                                           "text": self.subject.removeprefix("[fruix] ")[:150]}},
                               {"type": "section", "text": {"type": "mrkdwn",
                                                            "text": (f"{link}\n" if link else "") + "```" + text[:2900] + "```"}}]}
        elif fmt == "matrix":
            text = self.text()
            body = {"msgtype": "m.text", "body": text, "format": "org.matrix.custom.html",
                    "formatted_body": f"<p><strong>{html.escape(self.subject.removeprefix('[fruix] '))}</strong></p>"
                                      f"<pre>{html.escape(text)}</pre>"}
        else:
            raise FruixError(f"webhook format must be json, slack or matrix, got {fmt!r}")
        return json.dumps(body, ensure_ascii=False).encode()
