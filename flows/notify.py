"""Alert delivery through apprise (webhooks, Slack, Teams, e-mail, ...).

apprise's ``notify()`` returns False instead of raising, so every result is checked. An alert
that was not delivered keeps ``notified_at`` NULL and is retried by the next run. URLs can
carry tokens: they are never logged, only counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import apprise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertMessage:
    title: str
    body: str


def render_alert(alert: Mapping) -> AlertMessage:
    """Plain-text rendering of one alert row (the alerts table's columns)."""
    window = f"{alert['window_start']:%Y-%m-%d %H:%M}–{alert['window_end']:%H:%M} UTC"
    title = (
        f"[yuqing] {str(alert['severity']).upper()}: {alert['sentiment']} surge in "
        f"{alert['topic']} ({alert['observed']} vs {alert['expected']:.1f} expected)"
    )
    lines = [
        f"Topic: {alert['topic']}",
        f"Window: {window}",
        f"Observed {alert['sentiment']} items: {alert['observed']} (expected {alert['expected']:.2f}, "
        f"score {alert['score']:.1f})",
        f"Severity: {alert['severity']}",
    ]
    headlines = alert.get("headlines")
    if headlines is not None and len(headlines):
        lines.append("Top headlines:")
        lines.extend(f"  - {h}" for h in headlines)
    lines.append(f"Alert id: {alert['alert_id']}")
    return AlertMessage(title=title, body="\n".join(lines))


class Notifier:
    """Sends messages to every configured apprise URL; a send succeeds only if all succeed."""

    def __init__(self, urls: Sequence[str]) -> None:
        self._apprise = apprise.Apprise()
        self.bad_urls = 0
        for url in urls:
            if not self._apprise.add(url):
                # Never echo the URL: it may hold a token.
                self.bad_urls += 1
        if self.bad_urls:
            logger.error(
                "%d alert URL(s) were not understood by apprise and are ignored", self.bad_urls
            )

    @property
    def configured(self) -> bool:
        return len(self._apprise) > 0

    def send(self, message: AlertMessage) -> bool:
        if not self.configured:
            return False
        return bool(self._apprise.notify(title=message.title, body=message.body))
