"""The demo path with real parts: stream building, and a whole demo run on a small data folder."""

from __future__ import annotations

import email
import json
import shutil
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pandas as pd
import pytest

from flows.demo import DemoError, build_demo_stream, data_sources
from flows.messages import BadMessage, parse_message

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def demo_data(n_surge: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    sentiment = pd.DataFrame(
        [(f"crude oil plunges as refinery shuts {i}", "negative") for i in range(n_surge)]
        + [(f"fed reports quarterly meeting {i}", "neutral") for i in range(200)]
        + [(f"stocks rally on earnings beat {i}", "positive") for i in range(60)],
        columns=["text", "label"],
    )
    topic = pd.DataFrame(
        [(f"fed holds rates steady {i}", "Fed | Central Banks") for i in range(150)]
        + [(f"quarterly earnings revenue update {i}", "Earnings") for i in range(150)],
        columns=["text", "label"],
    )
    return sentiment, topic


def test_stream_has_a_day_of_news_a_surge_bad_messages_and_redeliveries():
    sentiment, topic = demo_data()
    values = build_demo_stream(
        sentiment=sentiment, topic=topic, end=END, n_background=300, n_surge=30
    )
    good, bad = [], 0
    for value in values:
        try:
            good.append(parse_message(value, kafka_timestamp_ms=None))
        except BadMessage:
            bad += 1
    assert bad == 6
    ids = [m.id for m in good]
    assert len(ids) - len(set(ids)) == 10  # redeliveries
    surge = [m for m in good if m.id.startswith("demo-surge-")]
    assert len({m.id for m in surge}) == 30 and all("oil" in m.text for m in surge)
    assert all(END - timedelta(hours=24) <= m.published_at <= END for m in good)
    surge_times = sorted(m.published_at for m in surge)
    assert surge_times[-1] - surge_times[0] <= timedelta(minutes=20)


def test_stream_needs_enough_surge_material():
    sentiment, topic = demo_data(n_surge=5)
    with pytest.raises(DemoError, match="too few"):
        build_demo_stream(sentiment=sentiment, topic=topic, end=END)


def test_data_folder_must_hold_both_files(tmp_path):
    with pytest.raises(DemoError, match="lacks"):
        data_sources(tmp_path)
    assert data_sources(None)["sentiment"].startswith("zeroshot/")


def test_whole_demo_raises_an_alert_and_notifies(
    tmp_path, tiny_model_dir, prefect_harness, monkeypatch, capsys
):
    from flows.demo import run_demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("YUQING_ALERT_URLS", raising=False)
    data = tmp_path / "data"
    sentiment, topic = demo_data(n_surge=60)
    for task, frame in (("sentiment", sentiment), ("topic", topic)):
        (data / task).mkdir(parents=True)
        frame.to_csv(data / task / "train.csv", index=False)
    workdir = tmp_path / "demo"
    shutil.copytree(
        tiny_model_dir, workdir / "model"
    )  # skip training: the tiny model knows "oil"/"plunges"

    result = run_demo(workdir=workdir, data_dir=data)

    summary = result["summary"]
    assert result["trained"] is False and summary["status"] == "completed"
    assert summary["dead_lettered"] == 6 and summary["duplicates"] == 10
    assert summary["scored"] == result["replayed"] - 16
    assert summary["alerts_raised"] >= 1 and {a["topic"] for a in summary["alerts"]} == {
        "Energy | Oil"
    }
    assert summary["alerts_notified"] == summary["alerts_raised"]
    lines = (workdir / "notifications.jsonl").read_text().splitlines()
    payloads = [json.loads(line)["payload"] for line in lines]
    assert payloads and all(p["title"].startswith("[yuqing]") for p in payloads)
    # The explanation travels in the webhook document ...
    alert = next(p for p in [*payloads, *(a for p in payloads for a in p.get("alerts", []))]
                 if p.get("schema") == "yuqing.alert/v1")  # fmt: skip
    assert alert["headlines"] and "oil" in alert["headlines"][0]["headline"]
    assert alert["observed"] > alert["expected"] and alert["idempotency_key"] == alert["alert_id"]
    assert alert["sentiment_drivers"]["tokens"] and alert["top_terms"]
    # ... and in the e-mail the local SMTP server received (HTML with a plain-text part)
    assert len(result["emails"]) == len(payloads)
    mail = result["emails"][0]
    assert mail["parts"] == ["text/plain", "text/html"] and mail["subject"].startswith("[yuqing]")
    assert "Top headlines" in mail["text"] and "oil" in mail["text"]
    assert "Observed: " in mail["text"] and "Expected: " in mail["text"]
    assert "Why the model read the top headline as negative" in mail["text"]
    saved = email.message_from_bytes(Path(mail["file"]).read_bytes(), policy=policy.default)
    html = saved.get_body(("html",)).get_content()
    assert "Top headlines" in html and "Why the model read the top headline" in html
    assert (workdir / "yuqing.duckdb").is_file()
    # What the command prints shows the explanation of both.
    from flows.cli import print_demo

    capsys.readouterr()
    print_demo(result)
    printed = capsys.readouterr().out
    assert "its explanation (webhook JSON, schema yuqing.alert/v1)" in printed
    assert "E-mails received by the local SMTP server: " in printed
    assert "| Why the model read the top headline as negative" in printed
