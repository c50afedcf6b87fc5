"""Rendering and delivery through a real local HTTP receiver and a real local SMTP server."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime, timedelta
from email import policy

import pytest

from flows.notify import SCHEMA, Notifier, alert_payload, render_alert

T = datetime(2026, 11, 25, 11, 30, tzinfo=UTC)


def alert(alert_id="a1b2c3d4e5f6a1b2c3d4e5f6", severity="high", score=7.0) -> dict:
    explanation = {
        "headlines": [
            {
                "story_id": "s1",
                "headline": "Refinery fire sends crude lower",
                "copies": 3,
                "confidence": 0.97,
            }
        ],
        "top_terms": ["refinery", "crude"],
        "top_tickers": ["XOM"],
        "sentiment_drivers": {
            "headline": "Refinery fire sends crude lower",
            "label": "negative",
            "probability": 0.93,
            "tokens": [{"word": "fire", "attribution": 0.8}, {"word": "lower", "attribution": 0.5}],
        },
    }
    return {
        "alert_id": alert_id,
        "kind": "count",
        "topic": "Energy | Oil",
        "sentiment": "negative",
        "ticker": None,
        "window_start": T,
        "window_end": T + timedelta(minutes=5),
        "observed": 12,
        "expected": 0.4,
        "score": score,
        "severity": severity,
        "headlines": ["Refinery fire sends crude lower"],
        "top_terms": ["refinery", "crude"],
        "top_tickers": ["XOM"],
        "explanation": json.dumps(explanation),
        "status": "open",
        "created_at": T,
    }


def test_webhook_gets_a_stable_schema_with_an_idempotency_key(webhook):
    notifier = Notifier([webhook.url("/hooks")])
    assert notifier.deliver([alert()], digest_min=4) == {alert()["alert_id"]: True}
    payload = webhook.received[0]["payload"]
    assert payload["schema"] == SCHEMA and payload["idempotency_key"] == alert()["alert_id"]
    assert set(payload) >= {
        "title",
        "message",
        "observed",
        "expected",
        "headlines",
        "top_terms",
        "top_tickers",
        "sentiment_drivers",
    }
    assert payload["sentiment_drivers"]["tokens"][0]["word"] == "fire"
    assert payload["headlines"][0]["copies"] == 3 and "Alert id:" in payload["message"]


def test_failed_webhook_reports_false(webhook):
    webhook.status = 500
    assert Notifier([webhook.url()]).deliver([alert()], digest_min=4) == {
        alert()["alert_id"]: False
    }


def test_severity_floor_and_digest_per_channel(webhook):
    notifier = Notifier(
        channels=[(webhook.url("/all"), "medium"), (webhook.url("/pager"), "critical")]
    )
    alerts = [
        alert(f"{i:024d}", severity=s, score=sc)
        for i, (s, sc) in enumerate(
            [("medium", 4.5), ("high", 7), ("critical", 10), ("medium", 4.2)]
        )
    ]
    outcome = notifier.deliver(alerts, digest_min=4)
    assert all(outcome.values())
    by_path = {}
    for r in webhook.received:
        by_path.setdefault(r["path"], []).append(r["payload"])
    assert len(by_path["/all"]) == 1 and len(by_path["/all"][0]["alerts"]) == 4  # one digest
    assert by_path["/all"][0]["schema"] == "yuqing.alert-digest/v1"
    assert "The worst of them" in by_path["/all"][0]["message"]  # it keeps its explanation
    assert "Refinery fire sends crude lower" in by_path["/all"][0]["message"]
    assert [p["alert_id"] for p in by_path["/pager"]] == [alerts[2]["alert_id"]]


def test_slack_and_teams_get_markdown():
    message = render_alert(alert())
    assert message.markdown.startswith("**HIGH: negative surge in Energy | Oil")
    assert "> Refinery fire sends crude lower" in message.markdown and "`crude`" in message.markdown
    assert Notifier(["slack://T000/B000/XXXXXXXX", "msteams://a/b/c/d"]).configured


def test_email_is_html_with_a_plain_text_part():
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")
    from infra.broker import free_port

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.content)
            return "250 OK"

    port = free_port()
    controller = aiosmtpd.Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = f"mailto://127.0.0.1:{port}?from=yuqing@example.com&to=risk@example.com&mode=insecure"
        assert Notifier([url]).deliver([alert()], digest_min=4) == {alert()["alert_id"]: True}
    finally:
        controller.stop()
    message = email.message_from_bytes(received[0], policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    html_part = message.get_body(("html",)).get_content()
    text_part = message.get_body(("plain",)).get_content()
    assert "Refinery fire sends crude lower" in html_part and "fire" in html_part
    assert "Refinery fire sends crude lower" in text_part and "<" not in text_part.replace("<=", "")
    assert "HIGH" in message["Subject"]


def test_payload_of_a_row_without_explanation():
    row = alert()
    row["explanation"] = None
    assert alert_payload(row)["headlines"] == [{"headline": "Refinery fire sends crude lower"}]
