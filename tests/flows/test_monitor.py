"""End to end through real parts: tansu broker → Prefect flow → tiny model → DuckDB → webhook."""

from __future__ import annotations

import duckdb
import pytest

from tests.conftest import encode, news, produce_values, surge_messages

pytestmark = pytest.mark.usefixtures("prefect_harness")

BAD_VALUES = [
    b"not json at all",
    b"\xff\xfe\x00 not utf-8",
    b'["not", "an", "object"]',
    encode({"id": 17, "text": "numeric id"}),
    encode({"id": "bad-empty", "text": ""}),
    encode({"text": "no id"}),
    encode({"id": "bad-time", "text": "t", "published_at": "last tuesday"}),
]


def db_rows(path: str, sql: str):
    con = duckdb.connect(path, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_good_bad_and_redelivered_messages_land_exactly_once(yuqing_env, broker, topic_name):
    from flows.monitor import monitor

    good = surge_messages()
    good_values = [encode(m) for m in good]
    redeliveries = good_values[:7]
    produce_values(broker.bootstrap, topic_name, good_values + BAD_VALUES + redeliveries)

    summary = monitor()

    db = yuqing_env["YUQING_DB"]
    assert summary["status"] == "completed"
    assert summary["messages_read"] == len(good) + len(BAD_VALUES) + len(redeliveries)
    assert (summary["scored"], summary["dead_lettered"], summary["duplicates"]) == (
        len(good),
        len(BAD_VALUES),
        7,
    )
    stored = db_rows(db, "SELECT id, count(*) FROM scored_news GROUP BY id")
    assert sorted(i for i, _ in stored) == sorted(m["id"] for m in good)
    assert all(n == 1 for _, n in stored)
    dead = db_rows(db, 'SELECT raw, error, topic, partition, "offset" FROM dead_letters')
    assert sorted(r[0] for r in dead) == sorted(BAD_VALUES)
    assert all(r[1] and r[2] == topic_name and r[3] >= 0 and r[4] >= 0 for r in dead)
    reasons = {r[0]: r[1] for r in dead}
    assert "not UTF-8" in reasons[BAD_VALUES[1]] and "id must be a string" in reasons[BAD_VALUES[3]]
    row = db_rows(
        db,
        "SELECT sentiment, topic, sentiment_score, topic_score, model_version FROM scored_news LIMIT 1",
    )[0]
    assert (
        row[0] in {"negative", "neutral", "positive"}
        and 0 < row[2] <= 1
        and 0 < row[3] <= 1
        and row[4]
    )
    assert db_rows(db, "SELECT status, scored FROM runs") == [("completed", len(good))]

    # A second run finds nothing new and changes nothing.
    again = monitor()
    assert (again["messages_read"], again["scored"], again["alerts_raised"]) == (0, 0, 0)
    assert db_rows(db, "SELECT count(*) FROM news")[0][0] == len(good)
    assert db_rows(db, "SELECT count(*) FROM dead_letters")[0][0] == len(BAD_VALUES)

    # New messages, plus a late redelivery of an old id, are picked up where the last run stopped.
    produce_values(
        broker.bootstrap, topic_name, [encode(news("late-1", "fed reports item")), good_values[0]]
    )
    third = monitor()
    assert (third["messages_read"], third["scored"], third["duplicates"]) == (2, 1, 1)
    assert db_rows(db, "SELECT count(*) FROM news")[0][0] == len(good) + 1


def test_surge_alerts_once_and_waits_for_the_webhook(
    yuqing_env, broker, topic_name, webhook, monkeypatch
):
    from flows.monitor import monitor

    monkeypatch.setenv("YUQING_ALERT_URLS", webhook.url("/hooks/yuqing"))
    produce_values(broker.bootstrap, topic_name, [encode(m) for m in surge_messages()])
    db = yuqing_env["YUQING_DB"]

    webhook.status = 500  # the notifier is down
    first = monitor()
    assert first["alerts_raised"] >= 1
    assert {a["topic"] for a in first["alerts"]} == {"Energy | Oil"}
    assert first["alerts_notified"] == 0 and first["alerts_pending"] == first["alerts_raised"]
    assert webhook.received == []
    pending = db_rows(
        db, "SELECT count(*) FROM alerts WHERE notified_at IS NULL AND notify_attempts >= 1"
    )[0][0]
    assert pending == first["alerts_raised"]

    webhook.status = 200  # back up: the next run delivers each pending alert once
    second = monitor()
    assert second["alerts_raised"] == 0 and second["alerts_notified"] == first["alerts_raised"]
    assert len(webhook.received) == first["alerts_raised"]
    payload = webhook.received[0]["payload"]
    assert webhook.received[0]["path"] == "/hooks/yuqing"
    assert "Energy | Oil" in payload["title"] and "Alert id:" in payload["message"]

    third = monitor()  # nothing is sent twice
    assert third["alerts_notified"] == 0 and len(webhook.received) == first["alerts_raised"]
    rows = db_rows(
        db, "SELECT topic, sentiment, observed, expected, severity, notified_at FROM alerts"
    )
    assert all(
        r[0] == "Energy | Oil" and r[1] == "negative" and r[2] >= 5 and r[3] > 0 and r[5]
        for r in rows
    )


def test_unreachable_broker_fails_clearly_and_writes_no_batch(yuqing_env, monkeypatch):
    from flows.kafka_io import KafkaUnavailable
    from flows.monitor import monitor
    from infra.broker import free_port

    monkeypatch.setenv("YUQING_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("YUQING_KAFKA_TIMEOUT_S", "1")
    monkeypatch.setenv("YUQING_KAFKA_CONNECT_ATTEMPTS", "1")
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        monitor()
    db = yuqing_env["YUQING_DB"]
    assert db_rows(db, "SELECT count(*) FROM news")[0][0] == 0
    assert db_rows(db, "SELECT count(*) FROM consumer_offsets")[0][0] == 0
    status, error = db_rows(db, "SELECT status, error FROM runs")[0]
    assert status == "failed" and "cannot reach Kafka" in error


def test_each_run_publishes_its_summary_artifacts(yuqing_env, broker, topic_name):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.monitor import MIX_ARTIFACT_KEY, SUMMARY_ARTIFACT_KEY, monitor

    produce_values(broker.bootstrap, topic_name, [encode(m) for m in surge_messages(prefix="art")])
    summary = monitor()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT_KEY, MIX_ARTIFACT_KEY])
            )
        )
    mine = [a for a in artifacts if str(a.flow_run_id) == summary["run_id"]]
    by_key = {a.key: a for a in mine}
    assert set(by_key) == {SUMMARY_ARTIFACT_KEY, MIX_ARTIFACT_KEY}
    markdown = by_key[SUMMARY_ARTIFACT_KEY].data
    assert f"| {summary['messages_read']} | {summary['scored']} |" in markdown
    assert "Energy | Oil" in markdown.replace("\\|", "|")


MODEL_PROBE = (
    "import sys; from flows.monitor import monitor; s = monitor(); "
    "print(s['messages_read'], s['model_version'] is not None, 'torch' in sys.modules)"
)


def test_a_run_with_nothing_new_does_not_load_the_model(
    yuqing_env, broker, topic_name, tmp_path, monkeypatch
):
    """An idle scheduled run pays for neither torch nor the weights; a busy one loads them."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from flows.monitor import monitor
    from nlp.manifest import ModelError

    def probe() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", MODEL_PROBE],
            env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-3:]

    produce_values(broker.bootstrap, topic_name, [])  # the topic exists, empty
    assert probe() == ["0", "True", "False"]  # read nothing, knew the model, no torch
    produce_values(broker.bootstrap, topic_name, [encode(news("busy-1", "oil plunges item"))])
    assert probe() == ["1", "True", "True"]
    # A folder that is not a model still fails the run at its start, before Kafka is read.
    monkeypatch.setenv("YUQING_MODEL", str(tmp_path / "no-model"))
    with pytest.raises(ModelError, match="not a yuqing model directory"):
        monitor()
