"""Replaying a file of news into Kafka: JSON lines as they are, CSV or Parquet rows as messages."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from flows.config import Settings
from flows.kafka_io import ensure_topic, message_key_value, open_producer, produce
from flows.messages import BadMessage, parse_timestamp

logger = logging.getLogger(__name__)

CONTRACT_FIELDS = ("id", "text", "title", "source", "published_at", "url", "lang", "tickers")
Record = tuple[bytes | None, bytes, int | None]


class ReplayError(ValueError):
    """The replay file cannot be read; the message is one line."""


def _timestamp_ms(published_at: object) -> int | None:
    if not isinstance(published_at, str):
        return None
    try:
        return int(parse_timestamp(published_at).timestamp() * 1000)
    except BadMessage:
        return None


def _jsonl_records(path: Path) -> Iterator[Record]:
    """Each non-blank line is sent byte for byte, even a malformed one (it will dead-letter)."""
    with open(path, "rb") as lines:
        for line in lines:
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue
            key, timestamp_ms = None, None
            try:
                message = json.loads(value)
                if isinstance(message, dict):
                    key = message["id"].encode() if isinstance(message.get("id"), str) else None
                    timestamp_ms = _timestamp_ms(message.get("published_at"))
            except ValueError:
                pass
            yield key, value, timestamp_ms


def _tickers(value: object) -> list[str] | None:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str) and value.strip():
        return [t for t in re.split(r"[\s,;|]+", value.strip()) if t]
    return None


def _table_records(frame: pd.DataFrame) -> Iterator[Record]:
    if "text" not in frame.columns:
        raise ReplayError(f"the file needs a 'text' column; it has {list(frame.columns)}")
    for row in frame.to_dict("records"):
        message = {
            k: v
            for k, v in row.items()
            if k in CONTRACT_FIELDS
            and v is not None
            and not (isinstance(v, float) and math.isnan(v))
        }
        if "tickers" in message:
            message["tickers"] = _tickers(message["tickers"])
        if "id" not in message:  # stable, so replaying a file twice redelivers, never duplicates
            message["id"] = hashlib.sha256(str(message.get("text", "")).encode()).hexdigest()[:20]
        elif not isinstance(message["id"], str):
            message["id"] = str(message["id"])
        key, value = message_key_value(message)
        yield key, value, _timestamp_ms(message.get("published_at"))


def stream_records(path: Path) -> tuple[int, Iterator[Record]]:
    """(count, records) for a .jsonl/.ndjson, .csv or .parquet file."""
    if not path.is_file():
        raise ReplayError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, "rb") as f:
            count = sum(1 for line in f if line.strip())
        return count, _jsonl_records(path)
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise ReplayError(f"cannot replay {path.name}: use .jsonl, .csv or .parquet")
    except (OSError, ValueError, pd.errors.ParserError) as e:
        if isinstance(e, ReplayError):
            raise
        raise ReplayError(f"cannot read {path}: {' '.join(str(e).split())}") from e
    return len(frame), _table_records(frame)


def replay_file(
    path: Path, *, settings: Settings, topic: str, partitions: int = 3, progress: bool = True
) -> int:
    """Send every record of ``path`` to ``topic`` (created if missing); return the count sent."""
    count, records = stream_records(Path(path))
    options = settings.kafka_client_options()
    ensure_topic(client_options=options, topic=topic, partitions=partitions)
    producer = open_producer(client_options=options, attempts=settings.kafka_connect_attempts)
    try:
        with tqdm(total=count, desc=f"replay → {topic}", unit="msg", disable=not progress) as bar:
            sent = produce(producer, topic=topic, messages=records, progress=bar)
    finally:
        producer.close()
    logger.info("replayed %d messages from %s into %r", sent, path, topic)
    return sent
