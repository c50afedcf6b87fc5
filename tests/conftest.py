"""Shared fixtures: a real tansu broker, a real tiny trained model, Prefect's test harness,
and a real local webhook receiver. Nothing here is a mock."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Word lists that make a synthetic labelled set a tiny model can learn in seconds.
SENTIMENT_WORDS = {
    "negative": ["plunges", "slumps", "downgrade", "losses", "crash", "warning"],
    "neutral": ["reports", "schedules", "announces", "meeting", "update", "files"],
    "positive": ["soars", "upgrade", "record", "beats", "rally", "surges"],
}
TOPIC_WORDS = {
    "Energy | Oil": ["oil", "crude", "opec", "refinery"],
    "Fed | Central Banks": ["fed", "powell", "rates", "ecb"],
    "Earnings": ["earnings", "quarter", "eps", "revenue"],
}


def synthetic_labeled(seed: int = 0, n: int = 240) -> tuple[pd.DataFrame, pd.DataFrame]:
    import random

    rng = random.Random(seed)
    sentiment, topic = [], []
    for i in range(n):
        s = list(SENTIMENT_WORDS)[i % 3]
        t = list(TOPIC_WORDS)[i % 3]
        words = [rng.choice(SENTIMENT_WORDS[s]), rng.choice(TOPIC_WORDS[t]), f"item{i}"]
        rng.shuffle(words)
        sentiment.append((" ".join(words), s))
        topic.append((" ".join(words), t))
    return (
        pd.DataFrame(sentiment, columns=["text", "label"]),
        pd.DataFrame(topic, columns=["text", "label"]),
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A real (tiny, random-init) encoder with both heads quick-trained on synthetic data."""
    from nlp.testing import make_tiny_base
    from nlp.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-model")
    base = make_tiny_base(root / "base")
    sentiment, topic = synthetic_labeled()
    out = root / "model"
    train(
        sentiment=sentiment,
        topic=topic,
        out_dir=out,
        config=TrainConfig(base=base, quick=True, quick_steps=150),
    )
    return out


@pytest.fixture(scope="session")
def broker():
    """One tansu broker on a free loopback port for the whole session."""
    from infra.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def topic_name() -> str:
    return f"news-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def webhook():
    from infra.webhook import WebhookReceiver

    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def yuqing_env(monkeypatch, tmp_path, broker, topic_name, tiny_model_dir):
    """Point every YUQING_* setting at this test's broker topic, DuckDB file and model."""
    monkeypatch.chdir(tmp_path)  # no stray yuqing.toml is read
    values = {
        "YUQING_KAFKA_BOOTSTRAP": broker.bootstrap,
        "YUQING_TOPIC": topic_name,
        "YUQING_DB": str(tmp_path / "yuqing.duckdb"),
        "YUQING_MODEL": str(tiny_model_dir),
        "YUQING_ALERT_URLS": "",
        "YUQING_KAFKA_TIMEOUT_S": "10",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def news(message_id: str, text: str, published_at: datetime | None = None, **extra) -> dict:
    message = {"id": message_id, "text": text, **extra}
    if published_at is not None:
        message["published_at"] = published_at.astimezone(UTC).isoformat()
    return message


def produce_values(bootstrap: str, topic: str, values: list[bytes], partitions: int = 3) -> None:
    from flows.config import Settings
    from flows.kafka_io import ensure_topic, open_producer, produce

    options = Settings(kafka_bootstrap=bootstrap).kafka_client_options()
    ensure_topic(client_options=options, topic=topic, partitions=partitions)
    producer = open_producer(client_options=options)
    try:
        produce(producer, topic=topic, messages=[(None, v, None) for v in values])
    finally:
        producer.close()


def encode(message: dict) -> bytes:
    return json.dumps(message).encode()


def surge_messages(
    *, topic_word: str = "oil", end: datetime | None = None, prefix: str = "m"
) -> list[dict]:
    """Six hours of sparse mixed news, then a burst of negative items on one topic."""
    # Recent by default: alerts on windows older than alerts.max_notify_age are backfill.
    if end is None:  # on a 5-minute boundary, so the 4-minute burst sits in one window
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        end = now - timedelta(minutes=now.minute % 5)
    start = end - timedelta(hours=6)
    messages = []
    for i in range(72):  # one item every 5 minutes, rotating topics and sentiments
        s = ["reports", "soars", "plunges"][i % 3] if i % 9 else "reports"
        t = ["fed", "earnings", "oil"][i % 3]
        messages.append(
            news(f"{prefix}-bg-{i}", f"{t} {s} item{i}", start + timedelta(minutes=5 * i))
        )
    burst_start = end - timedelta(minutes=30)
    for i in range(12):
        messages.append(
            news(
                f"{prefix}-surge-{i}",
                f"{topic_word} plunges crash warning item{i}",
                burst_start + timedelta(seconds=20 * i),
            )
        )
    return messages


@pytest.fixture(scope="session")
def analyst_db(tmp_path_factory) -> Path:
    """A realistic yuqing database (two weeks of news up to now, alerts, runs) and its replica."""
    from tests.storage.analyst_fixtures import build_analyst_db

    return build_analyst_db(tmp_path_factory.mktemp("analyst") / "yuqing.duckdb")
