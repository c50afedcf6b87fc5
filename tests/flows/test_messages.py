from datetime import UTC, datetime

import pytest

from flows.messages import BadMessage, parse_message

KAFKA_TS = 1_795_000_000_000


def parse(raw: bytes, **kw):
    return parse_message(raw, kafka_timestamp_ms=KAFKA_TS, **kw)


def test_full_message_parses_with_every_optional_field():
    message = parse(
        b'{"id": "a1", "text": "Oil slumps", "title": "Oil", "source": "wire", "url": "https://x",'
        b' "lang": "en", "tickers": ["XOM", "CVX"], "published_at": "2026-11-20T10:15:00+08:00"}'
    )
    assert message.id == "a1" and message.tickers == ["XOM", "CVX"]
    assert message.published_at == datetime(2026, 11, 20, 2, 15, tzinfo=UTC)


def test_missing_published_at_falls_back_to_kafka_timestamp():
    message = parse(b'{"id": "a", "text": "t"}')
    assert message.published_at == datetime.fromtimestamp(KAFKA_TS / 1000, tz=UTC)


def test_z_suffix_and_unknown_keys_are_accepted():
    message = parse(b'{"id": "a", "text": "t", "published_at": "2026-11-20T10:00:00Z", "extra": 1}')
    assert message.published_at.hour == 10


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        (b'{"text": "t"}', "id is missing"),
        (b'{"id": 7, "text": "t"}', "id must be a string"),
        (b'{"id": "  ", "text": "t"}', "id is empty"),
        (b'{"id": "a"}', "text is missing"),
        (b'{"id": "a", "text": ""}', "text is empty"),
        (b'{"id": "a", "text": "   "}', "text is empty"),
        (b'{"id": "a", "text": 5}', "text must be a string"),
        (b'{"id": "a", "text": "t", "published_at": "yesterday"}', "not an RFC 3339"),
        (b'{"id": "a", "text": "t", "published_at": "2026-11-20T10:00:00"}', "no UTC offset"),
        (b'{"id": "a", "text": "t", "published_at": "2026-11-20"}', "no time of day"),
        (b'{"id": "a", "text": "t", "published_at": 1700000000}', "published_at must be a string"),
        (b'{"id": "a", "text": "t", "tickers": "XOM"}', "tickers must be a list"),
        (b'{"id": "a", "text": "t", "tickers": [1]}', "tickers must be a list"),
        (b'{"id": "a", "text": "t", "title": 3}', "title must be a string"),
        (b'{"id": "a", "text": "t\\u0000x"}', "NUL"),
    ],
)
def test_contract_violations_name_the_reason(raw, reason):
    with pytest.raises(BadMessage, match=reason):
        parse(raw)


def test_null_value_and_oversized_text_are_rejected():
    with pytest.raises(BadMessage, match="null value"):
        parse_message(None, kafka_timestamp_ms=KAFKA_TS)
    with pytest.raises(BadMessage, match="more than the limit"):
        parse(b'{"id": "a", "text": "' + b"x" * 50 + b'"}', max_text_chars=10)
