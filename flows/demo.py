"""The one-command demo: embedded broker, quick model, replayed stream with a surge, one run.

The stream is built from the labelled finance tweets: a day of background news spread evenly
over the last 24 hours, then, four hours before the end, a 20-minute burst of negative
oil-and-energy headlines. It also carries a few malformed messages and redeliveries, so the
summary shows dead letters and de-duplication at work. Unless ``YUQING_ALERT_URLS`` is already
set, a local HTTP receiver stands in for the alert webhook and a local SMTP server (aiosmtpd) for
the risk desk's mailbox: the alerts arrive as the webhook's JSON document and as an HTML e-mail
with a plain-text part (through apprise's ``mailto://``), both carrying the explanation, and
both are saved in the workdir (``notifications.jsonl``, ``mail/*.eml``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from flows.config import Settings
from flows.replay import replay_file
from infra.broker import EmbeddedBroker
from infra.mailbox import Mailbox, plain_text
from infra.webhook import WebhookReceiver

logger = logging.getLogger(__name__)

HUB_DATASETS = {
    "sentiment": "zeroshot/twitter-financial-news-sentiment",
    "topic": "zeroshot/twitter-financial-news-topic",
}
SURGE_PATTERN = re.compile(
    r"\b(?:oil|crude|opec|brent|wti|natural gas|energy|exxon|chevron|shale|refiner\w*|petroleum)\b",
    re.I,
)
CASHTAG = re.compile(r"\$([A-Z]{1,6})\b")


class DemoError(RuntimeError):
    """The demo cannot start; the message is one line."""


@dataclass(frozen=True)
class DemoPaths:
    workdir: Path

    @property
    def model(self) -> Path:
        return self.workdir / "model"

    @property
    def db(self) -> Path:
        return self.workdir / "yuqing.duckdb"

    @property
    def stream(self) -> Path:
        return self.workdir / "stream.jsonl"

    @property
    def notifications(self) -> Path:
        return self.workdir / "notifications.jsonl"

    @property
    def mail(self) -> Path:
        return self.workdir / "mail"


def data_sources(data_dir: Path | None) -> dict[str, str]:
    """Where the demo's labelled data comes from: a local folder, else Hugging Face ids."""
    if data_dir is None:
        return dict(HUB_DATASETS)
    sources = {task: data_dir / task / "train.csv" for task in ("sentiment", "topic")}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise DemoError(f"--data {data_dir} lacks {', '.join(missing)}")
    return {task: str(path) for task, path in sources.items()}


def _message(message_id: str, text: str, published_at: datetime, source: str) -> dict:
    message = {
        "id": message_id,
        "text": text,
        "source": source,
        "published_at": published_at.isoformat().replace("+00:00", "Z"),
        "lang": "en",
    }
    tickers = sorted(set(CASHTAG.findall(text)))
    if tickers:
        message["tickers"] = tickers
    return message


def build_demo_stream(
    *,
    sentiment: pd.DataFrame,
    topic: pd.DataFrame,
    end: datetime,
    n_background: int = 3000,
    n_surge: int = 60,
    seed: int = 7,
) -> list[bytes]:
    """The demo's Kafka values, in publication order, malformed ones included."""
    rng = np.random.default_rng(seed)
    start = end - timedelta(hours=24)
    surge_pool = sentiment[
        (sentiment["label"] == "negative") & sentiment["text"].str.contains(SURGE_PATTERN)
    ]
    if len(surge_pool) < 20:
        raise DemoError("the sentiment data has too few negative energy headlines to stage a surge")
    surge = surge_pool.sample(n=min(n_surge, len(surge_pool)), random_state=seed)
    pool = pd.concat([topic["text"], sentiment.drop(surge.index)["text"]], ignore_index=True)
    background = pool.sample(n=min(n_background, len(pool)), random_state=seed).tolist()

    seconds = np.sort(rng.uniform(0, 24 * 3600, size=len(background)))
    items = [
        _message(f"demo-{i:06d}", text, start + timedelta(seconds=float(s)), "demo-wire")
        for i, (text, s) in enumerate(zip(background, seconds, strict=True))
    ]
    surge_start = start + timedelta(hours=20)
    surge_seconds = np.sort(rng.uniform(0, 20 * 60, size=len(surge)))
    items += [
        _message(
            f"demo-surge-{i:04d}",
            text,
            surge_start + timedelta(seconds=float(s)),
            "demo-energy-desk",
        )
        for i, (text, s) in enumerate(zip(surge["text"], surge_seconds, strict=True))
    ]
    items.sort(key=lambda m: m["published_at"])
    values = [json.dumps(m, ensure_ascii=False).encode() for m in items]
    redeliveries = [values[int(i)] for i in rng.choice(len(values), size=10, replace=False)]
    malformed = [
        b"this is not json",
        b'{"id": "demo-bad-1", "text": ""}',
        b'{"id": 42, "text": "numeric id"}',
        b'{"id": "demo-bad-2", "text": "ok", "published_at": "yesterday-ish"}',
        b'{"id": "demo-bad-3", "text": "\xff\xfe not utf-8"}',
        b'["an", "array"]',
    ]
    return values + redeliveries + malformed


def load_demo_data(sources: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    from nlp.data import load_labeled

    return load_labeled(sources["sentiment"]), load_labeled(sources["topic"])


def ensure_model(
    paths: DemoPaths, sources: dict[str, str], sentiment: pd.DataFrame, topic: pd.DataFrame
) -> bool:
    """Train a quick model into the workdir unless one is there; True when it trained."""
    if (paths.model / "yuqing_model.json").is_file():
        logger.info("using the model already in %s", paths.model)
        return False
    from nlp.train import TrainConfig, train

    logger.info("training a quick model into %s (first run only)", paths.model)
    train(sentiment=sentiment, topic=topic, out_dir=paths.model, config=TrainConfig(quick=True))
    return True


def run_demo(*, workdir: Path, data_dir: Path | None) -> dict:
    """Run the whole demo; return what it did (the CLI prints it)."""
    from flows.monitor import monitor

    paths = DemoPaths(Path(workdir).resolve())
    paths.workdir.mkdir(parents=True, exist_ok=True)
    sources = data_sources(data_dir)
    sentiment, topic = load_demo_data(sources)
    trained = ensure_model(paths, sources, sentiment, topic)

    # The broker is new and empty each time, so the offsets in an old database would not
    # match it: the demo starts from a fresh database.
    for stale in (paths.db, paths.db.with_suffix(".duckdb.wal"), paths.notifications):
        stale.unlink(missing_ok=True)
    for stale in paths.mail.glob("*.eml"):
        stale.unlink()
    # On the hour, so the staged surge starts on an alert-window boundary (any window that
    # divides an hour): otherwise where it falls in a window depends on the minute of the run.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    values = build_demo_stream(sentiment=sentiment, topic=topic, end=end)
    paths.stream.write_bytes(b"\n".join(values) + b"\n")

    with (
        EmbeddedBroker(log_path=paths.workdir / "broker.log") as broker,
        WebhookReceiver(record_path=paths.notifications) as receiver,
        Mailbox(folder=paths.mail) as mailbox,
    ):
        env = {
            "YUQING_KAFKA_BOOTSTRAP": broker.bootstrap,
            "YUQING_TOPIC": "news",
            "YUQING_DB": str(paths.db),
            "YUQING_MODEL": str(paths.model),
        }
        if not os.environ.get("YUQING_ALERT_URLS"):
            env["YUQING_ALERT_URLS"] = f"{receiver.url('/yuqing-alerts')},{mailbox.url()}"
        previous = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            settings = Settings()
            replayed = replay_file(
                paths.stream, settings=settings, topic=settings.topic, partitions=3
            )
            summary = monitor()
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        notifications = list(receiver.received)
        emails = [
            {
                "subject": str(message["Subject"]),
                "to": str(message["To"]),
                "parts": [part.get_content_type() for part in message.iter_parts()],
                "text": plain_text(message),
                "file": str(path),
            }
            for message, path in zip(mailbox.received, mailbox.saved, strict=True)
        ]
    return {
        "workdir": str(paths.workdir),
        "db": str(paths.db),
        "model": str(paths.model),
        "trained": trained,
        "replayed": replayed,
        "summary": summary,
        "notifications": notifications,
        "notifications_file": str(paths.notifications),
        "emails": emails,
        "mail_folder": str(paths.mail),
    }
