"""The analysts' SQL surface: stable views and macros, documented in docs/sql.md.

The SQL here ships inside migration 3 (``storage/migrations.py``), so it is append-only like
every migration: never edit ``ANALYST_VIEWS_V3``; to change a view, add the next migration with
``CREATE OR REPLACE VIEW``. Views and macros live in the database file, so they work on the
read-only replica analysts open, with external access disabled, from any DuckDB client.

Macro bodies are inlined where they are called, so their table aliases carry the macro's name
(``alert_items_a``): a short alias such as ``a`` would capture a caller's ``a.alert_id``.

Hours and days are UTC whatever the client's time zone: ``time_bucket`` buckets TIMESTAMPTZ
values in UTC, and days are taken from ``published_at AT TIME ZONE 'UTC'``.
"""

from __future__ import annotations

# Every view and macro, with the columns it returns: docs/sql.md documents exactly these and
# tests/storage/test_views.py checks both against the database.
VIEWS: dict[str, tuple[str, ...]] = {
    "sentiment_by_topic_hourly": (
        "topic",
        "hour",
        "n",
        "negative",
        "neutral",
        "positive",
        "net_sentiment",
        "avg_confidence",
    ),
    "sentiment_by_ticker_daily": (
        "ticker",
        "day",
        "n",
        "negative",
        "neutral",
        "positive",
        "net_sentiment",
        "topics",
    ),
    "open_alerts": (
        "alert_id",
        "status",
        "severity",
        "kind",
        "topic",
        "ticker",
        "sentiment",
        "window_start",
        "window_end",
        "observed",
        "expected",
        "score",
        "headlines",
        "top_terms",
        "top_tickers",
        "explanation",
        "created_at",
        "acknowledged_at",
        "acknowledged_by",
        "notified_at",
        "age",
    ),
    "model_versions": (
        "model_version",
        "base_model",
        "trained_at",
        "registered_at",
        "sentiment_macro_f1",
        "topic_macro_f1",
        "items_scored",
        "first_used_at",
        "last_used_at",
        "metrics",
    ),
}
TABLE_MACROS: dict[str, tuple[str, ...]] = {
    "sentiment_between": ("topic", "n", "negative", "neutral", "positive", "net_sentiment"),
    "alert_items": (
        "published_at",
        "headline",
        "source",
        "sentiment",
        "sentiment_score",
        "topic",
        "tickers",
        "id",
    ),
}
SCALAR_MACROS: tuple[str, ...] = ("net_sentiment",)

ANALYST_VIEWS_V3 = """
CREATE VIEW sentiment_by_topic_hourly AS
SELECT topic,
       time_bucket(INTERVAL '1 hour', published_at) AS hour,
       count(*) AS n,
       count(*) FILTER (sentiment = 'negative') AS negative,
       count(*) FILTER (sentiment = 'neutral') AS neutral,
       count(*) FILTER (sentiment = 'positive') AS positive,
       (count(*) FILTER (sentiment = 'positive') - count(*) FILTER (sentiment = 'negative'))
           / count(*) AS net_sentiment,
       avg(sentiment_score) AS avg_confidence
FROM news
GROUP BY topic, hour;

CREATE VIEW sentiment_by_ticker_daily AS
SELECT ticker,
       day,
       count(*) AS n,
       count(*) FILTER (sentiment = 'negative') AS negative,
       count(*) FILTER (sentiment = 'neutral') AS neutral,
       count(*) FILTER (sentiment = 'positive') AS positive,
       (count(*) FILTER (sentiment = 'positive') - count(*) FILTER (sentiment = 'negative'))
           / count(*) AS net_sentiment,
       list(DISTINCT topic ORDER BY topic) AS topics
FROM (
    SELECT unnest(tickers) AS ticker,
           CAST(published_at AT TIME ZONE 'UTC' AS DATE) AS day,
           sentiment,
           topic
    FROM news
    WHERE tickers IS NOT NULL
)
GROUP BY ticker, day;

CREATE VIEW open_alerts AS
SELECT alert_id, status, severity, kind, topic, ticker, sentiment, window_start, window_end,
       observed, expected, score, headlines, top_terms, top_tickers, explanation,
       created_at, acknowledged_at, acknowledged_by, notified_at,
       now() - created_at AS age
FROM alerts
WHERE status IN ('open', 'acknowledged');

CREATE VIEW model_versions AS
WITH used AS (
    SELECT model_version,
           count(*) AS items_scored,
           min(ingested_at) AS first_used_at,
           max(ingested_at) AS last_used_at
    FROM news
    GROUP BY model_version
)
SELECT coalesce(r.model_version, u.model_version) AS model_version,
       r.base_model,
       r.trained_at,
       r.registered_at,
       TRY_CAST(r.metrics ->> '$.sentiment.macro_f1' AS DOUBLE) AS sentiment_macro_f1,
       TRY_CAST(r.metrics ->> '$.topic.macro_f1' AS DOUBLE) AS topic_macro_f1,
       coalesce(u.items_scored, 0) AS items_scored,
       u.first_used_at,
       u.last_used_at,
       r.metrics
FROM model_registry r
FULL OUTER JOIN used u ON r.model_version = u.model_version;

CREATE MACRO sentiment_between(range_start, range_end) AS TABLE
SELECT topic,
       count(*) AS n,
       count(*) FILTER (sentiment = 'negative') AS negative,
       count(*) FILTER (sentiment = 'neutral') AS neutral,
       count(*) FILTER (sentiment = 'positive') AS positive,
       (count(*) FILTER (sentiment = 'positive') - count(*) FILTER (sentiment = 'negative'))
           / count(*) AS net_sentiment
FROM news
WHERE published_at >= range_start AND published_at < range_end
GROUP BY topic;

CREATE MACRO net_sentiment(topic_name, range_start, range_end) AS (
    SELECT (count(*) FILTER (sentiment = 'positive') - count(*) FILTER (sentiment = 'negative'))
               / nullif(count(*), 0)
    FROM news
    WHERE topic = topic_name AND published_at >= range_start AND published_at < range_end
);

CREATE MACRO alert_items(wanted_alert_id) AS TABLE
SELECT alert_items_n.published_at,
       coalesce(alert_items_n.title, alert_items_n.text) AS headline,
       alert_items_n.source,
       alert_items_n.sentiment,
       alert_items_n.sentiment_score,
       alert_items_n.topic,
       alert_items_n.tickers,
       alert_items_n.id
FROM alerts alert_items_a
JOIN news alert_items_n
  ON alert_items_n.sentiment = alert_items_a.sentiment
 AND alert_items_n.published_at >= alert_items_a.window_start
 AND alert_items_n.published_at < alert_items_a.window_end
 AND CASE WHEN alert_items_a.ticker IS NULL THEN alert_items_n.topic = alert_items_a.topic
          ELSE list_contains(alert_items_n.tickers, alert_items_a.ticker) END
WHERE alert_items_a.alert_id = wanted_alert_id
ORDER BY alert_items_n.sentiment_score DESC, alert_items_n.published_at;
"""
