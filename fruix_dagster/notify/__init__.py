"""Telling people: failure, stuck, recovered and summary messages by mail and webhook.

Plain Python (no dagster import).  ``notice.py`` says what a message holds
and renders it; ``send.py`` sends it to the ``[notify]`` channels with
retries; ``summary.py`` is the morning summary from the build history.  The
Dagster sensors and the summary schedule that decide *when* to send are in
``fruix_dagster/defs/notify.py``; nothing is ever sent from a build step.
"""

from fruix_dagster.notify.notice import Notice, Triage, triage
from fruix_dagster.notify.send import Delivery, deliver, send_one

__all__ = ["Delivery", "Notice", "Triage", "deliver", "send_one", "triage"]
