"""The message contract on the news topic, and its validation.

A message is a UTF-8 JSON object with required ``id`` (non-empty string, the idempotency key)
and ``text`` (non-empty string), and optional ``title``, ``source``, ``published_at``
(RFC 3339 with a UTC offset; the Kafka timestamp when absent), ``url``, ``lang`` and
``tickers`` (list of strings). Keys outside the contract are ignored, so producers can add
fields without breaking the monitor. Anything that breaks the contract raises ``BadMessage``
with a one-line reason, which the flow stores in ``dead_letters`` next to the raw bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

OPTIONAL_STRINGS = ("title", "source", "url", "lang")
# A published_at further ahead of the clock than this is a lie, not skew: it would open alert
# windows years away, so such a message is dead-lettered.
MAX_FUTURE_SKEW = timedelta(days=1)


class BadMessage(ValueError):
    """The message breaks the contract; ``str(error)`` is the reason stored with it."""


@dataclass(frozen=True, slots=True)
class NewsMessage:
    id: str
    text: str
    published_at: datetime
    title: str | None = None
    source: str | None = None
    url: str | None = None
    lang: str | None = None
    tickers: list[str] | None = None


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime, or raise BadMessage."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadMessage(f"published_at is not an RFC 3339 timestamp: {value[:64]!r}") from None
    if "T" not in text.upper() and " " not in text:
        raise BadMessage(f"published_at has no time of day: {value[:64]!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadMessage(f"published_at has no UTC offset: {value[:64]!r}")
    return parsed.astimezone(UTC)


def _optional_string(payload: dict, key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMessage(f"{key} must be a string, got {type(value).__name__}")
    return value


def parse_message(
    raw: bytes | None, *, kafka_timestamp_ms: int | None, max_text_chars: int = 100_000
) -> NewsMessage:
    """Validate one raw Kafka value against the contract."""
    if raw is None:
        raise BadMessage("empty message (null value)")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadMessage(f"not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        payload = json.loads(decoded)
    except json.JSONDecodeError as e:
        raise BadMessage(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise BadMessage("not JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadMessage(f"not a JSON object: got {type(payload).__name__}")

    message_id = payload.get("id")
    if message_id is None:
        raise BadMessage("id is missing")
    if not isinstance(message_id, str):
        raise BadMessage(f"id must be a string, got {type(message_id).__name__}")
    if not message_id.strip():
        raise BadMessage("id is empty")

    text = payload.get("text")
    if text is None:
        raise BadMessage("text is missing")
    if not isinstance(text, str):
        raise BadMessage(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise BadMessage("text is empty")
    if len(text) > max_text_chars:
        raise BadMessage(f"text has {len(text)} characters, more than the limit {max_text_chars}")
    if "\x00" in text or "\x00" in message_id:
        raise BadMessage("id or text contains a NUL character")

    published = payload.get("published_at")
    if published is None:
        if kafka_timestamp_ms is None or kafka_timestamp_ms < 0:
            raise BadMessage("published_at is missing and the Kafka record has no timestamp")
        published_at = datetime.fromtimestamp(kafka_timestamp_ms / 1000, tz=UTC)
    elif isinstance(published, str):
        published_at = parse_timestamp(published)
    else:
        raise BadMessage(f"published_at must be a string, got {type(published).__name__}")
    if published_at > datetime.now(UTC) + MAX_FUTURE_SKEW:
        raise BadMessage(
            f"published_at {published_at:%Y-%m-%dT%H:%M:%SZ} is more than "
            f"{MAX_FUTURE_SKEW.days} day(s) in the future"
        )

    tickers = payload.get("tickers")
    if tickers is not None:
        if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
            raise BadMessage("tickers must be a list of strings")

    optional = {key: _optional_string(payload, key) for key in OPTIONAL_STRINGS}
    return NewsMessage(
        id=message_id, text=text, published_at=published_at, tickers=tickers, **optional
    )
