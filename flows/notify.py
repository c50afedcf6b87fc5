"""Alert delivery: one rendering per channel kind, a severity floor per channel, digests.

* ``json://`` / ``jsons://`` webhooks get a JSON document with a stable schema
  (``yuqing.alert/v1``, or ``yuqing.alert-digest/v1`` for a digest) posted directly, with the
  alert id as ``Idempotency-Key`` header and field, so a receiver can drop redeliveries.
* ``slack://`` and ``msteams://`` get markdown (apprise turns it into Slack mrkdwn blocks and a
  Teams card); ``mailto://`` / ``mailtos://`` get HTML, which apprise sends as
  multipart/alternative with a plain-text part; every other apprise URL gets plain text.

apprise's ``notify()`` returns False instead of raising, so every result is checked. An alert
that was not delivered keeps ``notified_at`` NULL and is retried by the next run (a webhook
receiver sees the same idempotency key again). URLs can carry tokens: they are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
import httpx

from flows.alerting import batches, route

logger = logging.getLogger(__name__)

SCHEMA = "yuqing.alert/v1"
DIGEST_SCHEMA = "yuqing.alert-digest/v1"


@dataclass(frozen=True)
class AlertMessage:
    title: str
    body: str  # plain text
    markdown: str = ""
    html: str = ""
    payload: dict | None = None  # the webhook document
    idempotency_key: str = ""


def _explanation(alert: Mapping) -> dict:
    value = alert.get("explanation")
    if isinstance(value, str) and value:
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value) -> list:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return list(value)


def _iso(value) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _subject(alert: Mapping) -> str:
    ticker = alert.get("ticker")
    if isinstance(ticker, str) and ticker:
        return f"${ticker}"
    return str(alert["topic"])


def _what(alert: Mapping) -> str:
    if alert.get("kind") == "share":
        return f"{alert['sentiment']} share jump"
    return f"{alert['sentiment']} surge"


def alert_payload(alert: Mapping) -> dict:
    """The webhook document of one alert (schema ``yuqing.alert/v1``; fields only get added)."""
    explanation = _explanation(alert)
    message = render_text(alert)
    return {
        "schema": SCHEMA,
        "alert_id": alert["alert_id"],
        "idempotency_key": alert["alert_id"],
        "title": render_title(alert),
        "message": message,
        "kind": alert.get("kind") or "count",
        "severity": alert["severity"],
        "status": alert.get("status") or "open",
        "topic": alert["topic"],
        "sentiment": alert["sentiment"],
        "ticker": alert.get("ticker") if isinstance(alert.get("ticker"), str) else None,
        "window_start": _iso(alert["window_start"]),
        "window_end": _iso(alert["window_end"]),
        "observed": int(alert["observed"]),
        "expected": round(float(alert["expected"]), 3),
        "score": round(float(alert["score"]), 3),
        "headlines": explanation.get("headlines")
        or [{"headline": h} for h in _list(alert.get("headlines"))],
        "top_terms": _list(alert.get("top_terms")),
        "top_tickers": _list(alert.get("top_tickers")),
        "sentiment_drivers": explanation.get("sentiment_drivers"),
        "share": explanation.get("share"),
        "created_at": _iso(alert.get("created_at")),
    }


def render_title(alert: Mapping) -> str:
    return (
        f"[yuqing] {str(alert['severity']).upper()}: {_what(alert)} in {_subject(alert)} "
        f"({int(alert['observed'])} vs {float(alert['expected']):.1f} expected)"
    )


def _window(alert: Mapping) -> str:
    return f"{alert['window_start']:%Y-%m-%d %H:%M}–{alert['window_end']:%H:%M} UTC"


def _drivers_text(drivers: Mapping | None) -> str | None:
    if not drivers or not drivers.get("tokens"):
        return None
    words = ", ".join(f"{t['word']} ({t['attribution']:+.2f})" for t in drivers["tokens"])
    return f"model read it as {drivers['label']} ({drivers['probability']:.0%}) because of: {words}"


def render_text(alert: Mapping) -> str:
    """Plain-text rendering of one alert row (the alerts table's columns)."""
    explanation = _explanation(alert)
    lines = [
        f"Topic: {alert['topic']}"
        + (f"  Ticker: ${alert['ticker']}" if isinstance(alert.get("ticker"), str) else ""),
        f"Window: {_window(alert)}",
        f"Observed {alert['sentiment']} stories: {int(alert['observed'])} (expected "
        f"{float(alert['expected']):.2f}, score {float(alert['score']):.1f})",
        f"Severity: {alert['severity']}",
    ]
    share = explanation.get("share")
    if share:
        lines.append(
            f"Share: {share['observed']:.0%} of {share['total']} stories (expected {share['expected']:.0%})"
        )
    headlines = explanation.get("headlines") or [
        {"headline": h} for h in _list(alert.get("headlines"))
    ]
    if headlines:
        lines.append("Top headlines:")
        lines += [
            f"  - {h['headline']}" + (f" (x{h['copies']})" if h.get("copies", 1) > 1 else "")
            for h in headlines
        ]
    if _list(alert.get("top_terms")):
        lines.append("Top terms: " + ", ".join(_list(alert["top_terms"])))
    if _list(alert.get("top_tickers")):
        lines.append("Top tickers: " + ", ".join(f"${t}" for t in _list(alert["top_tickers"])))
    drivers = _drivers_text(explanation.get("sentiment_drivers"))
    if drivers:
        lines.append(
            f"Why negative: {drivers}" if alert["sentiment"] == "negative" else f"Why: {drivers}"
        )
    lines.append(f"Alert id: {alert['alert_id']}")
    return "\n".join(lines)


def render_markdown(alert: Mapping) -> str:
    """Slack / Teams: a bold header, a fact list, quoted headlines."""
    explanation = _explanation(alert)
    lines = [
        f"**{render_title(alert).removeprefix('[yuqing] ')}**",
        "",
        f"- *Window:* {_window(alert)}",
        f"- *Observed:* {int(alert['observed'])} stories, *expected* {float(alert['expected']):.1f} "
        f"(score {float(alert['score']):.1f})",
    ]
    if _list(alert.get("top_terms")):
        lines.append("- *Top terms:* " + ", ".join(f"`{t}`" for t in _list(alert["top_terms"])))
    if _list(alert.get("top_tickers")):
        lines.append("- *Top tickers:* " + ", ".join(f"${t}" for t in _list(alert["top_tickers"])))
    drivers = _drivers_text(explanation.get("sentiment_drivers"))
    if drivers:
        lines.append(f"- *Why:* {drivers}")
    headlines = explanation.get("headlines") or [
        {"headline": h} for h in _list(alert.get("headlines"))
    ]
    if headlines:
        lines += ["", "*Top headlines*"] + [f"> {h['headline']}" for h in headlines]
    lines += [
        "",
        f"`alert {alert['alert_id']}` — ack with `yuqing alerts ack {alert['alert_id'][:8]}`",
    ]
    return "\n".join(lines)


def _html_fragment(alert: Mapping) -> str:
    e = html.escape
    explanation = _explanation(alert)
    rows = [
        ("Window", _window(alert)),
        ("Observed", f"{int(alert['observed'])} stories"),
        ("Expected", f"{float(alert['expected']):.2f}"),
        ("Score", f"{float(alert['score']):.1f} ({alert['severity']})"),
    ]
    if _list(alert.get("top_terms")):
        rows.append(("Top terms", ", ".join(_list(alert["top_terms"]))))
    if _list(alert.get("top_tickers")):
        rows.append(("Top tickers", ", ".join(f"${t}" for t in _list(alert["top_tickers"]))))
    # Lines of "label: value" rather than a table: the plain-text part apprise derives from the
    # HTML then reads the same way.
    facts = "".join(f"<p style='margin:2px 0'><b>{e(k)}:</b> {e(v)}</p>" for k, v in rows)
    headlines = explanation.get("headlines") or [
        {"headline": h} for h in _list(alert.get("headlines"))
    ]
    items = "".join(f"<li>{e(h['headline'])}</li>" for h in headlines)
    drivers = explanation.get("sentiment_drivers")
    drivers_html = ""
    if drivers and drivers.get("tokens"):
        words = ", ".join(
            f"<span style='background:#fdd;padding:1px 4px;border-radius:3px'>{e(t['word'])} "
            f"<small>({t['attribution']:+.2f})</small></span>"
            for t in drivers["tokens"]
        )
        drivers_html = (
            f"<h3>Why the model read the top headline as {e(drivers['label'])} "
            f"({drivers['probability']:.0%})</h3><p>{words}</p>"
        )
    return (
        f"<h2>{e(render_title(alert))}</h2>{facts}"
        f"<h3>Top headlines</h3><ul>{items}</ul>{drivers_html}"
        f"<p style='color:#666'>Alert id {e(alert['alert_id'])}</p>"
    )


def render_html(alert: Mapping) -> str:
    """E-mail: a small self-contained HTML document."""
    return f"<html><body style='font-family:sans-serif'>{_html_fragment(alert)}</body></html>"


def render_alert(alert: Mapping) -> AlertMessage:
    return AlertMessage(
        title=render_title(alert),
        body=render_text(alert),
        markdown=render_markdown(alert),
        html=render_html(alert),
        payload=alert_payload(alert),
        idempotency_key=alert["alert_id"],
    )


def render_digest(alerts: Sequence[Mapping]) -> AlertMessage:
    """One message for many alerts that fired together."""
    ids = sorted(a["alert_id"] for a in alerts)
    key = hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:24]
    worst = max(alerts, key=lambda a: float(a["score"]))
    title = f"[yuqing] DIGEST: {len(alerts)} alerts, worst {str(worst['severity']).upper()} in {_subject(worst)}"
    lines = [
        f"- [{a['severity']}] {_what(a)} in {_subject(a)}: {int(a['observed'])} vs "
        f"{float(a['expected']):.1f} expected at {a['window_start']:%Y-%m-%d %H:%M} UTC (alert {a['alert_id']})"
        for a in alerts
    ]
    # The worst alert keeps its whole explanation, so a digest still says why.
    body = "\n".join(lines) + "\n\nThe worst of them:\n" + render_text(worst)
    html_body = (
        "<html><body style='font-family:sans-serif'><h2>"
        + html.escape(title)
        + "</h2><ul>"
        + "".join(f"<li>{html.escape(line[2:])}</li>" for line in lines)
        + "</ul><hr>"
        + _html_fragment(worst)
        + "</body></html>"
    )
    payload = {
        "schema": DIGEST_SCHEMA,
        "digest_id": key,
        "idempotency_key": key,
        "title": title,
        "message": body,
        "alerts": [alert_payload(a) for a in alerts],
    }
    return AlertMessage(title, body, f"**{title}**\n\n{body}", html_body, payload, key)


# -- channels ---------------------------------------------------------------------------------


class Channel:
    """One destination URL with a severity floor."""

    def __init__(self, url: str, min_severity: str = "medium") -> None:
        self.min_severity = min_severity
        self.scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        self._webhook: tuple[str, dict, tuple[str, str] | None] | None = None
        self._apprise: apprise.Apprise | None = None
        if self.scheme in ("json", "jsons"):
            self._webhook = _webhook_target(url)
        else:
            self._apprise = apprise.Apprise()
            if not self._apprise.add(url):
                self._apprise = None  # never echo the URL: it may hold a token

    @property
    def valid(self) -> bool:
        return self._webhook is not None or self._apprise is not None

    def send(self, message: AlertMessage) -> bool:
        if self._webhook is not None:
            return _post_json(*self._webhook, message)
        if self._apprise is None:
            return False
        if self.scheme in ("slack", "msteams"):
            body, body_format = message.markdown or message.body, apprise.NotifyFormat.MARKDOWN
        elif self.scheme in ("mailto", "mailtos"):
            body, body_format = message.html or message.body, apprise.NotifyFormat.HTML
        else:
            body, body_format = message.body, apprise.NotifyFormat.TEXT
        return bool(self._apprise.notify(title=message.title, body=body, body_format=body_format))


def _webhook_target(url: str) -> tuple[str, dict, tuple[str, str] | None]:
    """apprise's json:// URL syntax: json[s]://[user:pass@]host[:port]/path[?+Header=value]."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme.lower() == "jsons" else "http"
    headers = {k[1:]: v for k, v in parse_qsl(parts.query) if k.startswith("+")}
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return f"{scheme}://{netloc}{parts.path or '/'}", headers, auth


def _post_json(target: str, headers: dict, auth, message: AlertMessage) -> bool:
    all_headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": message.idempotency_key,
        **headers,
    }
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    document = message.payload or {"title": message.title, "message": message.body}
    try:
        response = httpx.post(
            target, content=json.dumps(document, default=str), headers=all_headers, timeout=10.0
        )
    except httpx.HTTPError as e:
        logger.warning("webhook delivery failed: %s", type(e).__name__)
        return False
    if response.status_code >= 300:
        logger.warning("webhook answered HTTP %d", response.status_code)
        return False
    return True


class Notifier:
    """Sends alerts to every channel whose severity floor they clear."""

    def __init__(self, urls: Sequence[str] = (), channels: Sequence[tuple[str, str]] = ()) -> None:
        self.channels: list[Channel] = []
        self.bad_urls = 0
        for url, floor in [*((u, "medium") for u in urls), *channels]:
            channel = Channel(url, floor)
            if channel.valid:
                self.channels.append(channel)
            else:
                self.bad_urls += 1
        if self.bad_urls:
            logger.error("%d alert URL(s) were not understood and are ignored", self.bad_urls)

    @property
    def configured(self) -> bool:
        return bool(self.channels)

    def send(self, message: AlertMessage) -> bool:
        """Send one message to every channel (no severity floor); True if all succeed."""
        results = [c.send(message) for c in self.channels]
        return bool(results) and all(results)

    def deliver(self, alerts: Sequence[dict], *, digest_min: int) -> dict[str, bool]:
        """Send each alert to the channels it clears, digesting big groups; alert_id -> ok.

        An alert counts as delivered when every channel that should get it accepted it; an
        alert no channel wants (below every floor) counts as delivered.
        """
        outcome = {a["alert_id"]: True for a in alerts}
        for channel in self.channels:
            mine = route(alerts, channel.min_severity)
            for group in batches(mine, digest_min):
                message = render_alert(group[0]) if len(group) == 1 else render_digest(group)
                ok = channel.send(message)
                for alert in group:
                    outcome[alert["alert_id"]] = outcome[alert["alert_id"]] and ok
        return outcome
