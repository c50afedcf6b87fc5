"""Alert rows: the counts the detector needs, raising alerts once, and delivery bookkeeping."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd

from storage.db import transaction, translate_errors

ALERT_COLUMNS = (
    "alert_id",
    "topic",
    "sentiment",
    "window_start",
    "window_end",
    "observed",
    "expected",
    "score",
    "severity",
    "headlines",
    "created_at",
    "notified_at",
    "notify_attempts",
    "last_error",
    "run_id",
)


def _interval(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())} seconds"


def alert_key(*, topic: str, sentiment: str, window_start: datetime, window_end: datetime) -> str:
    """Deterministic alert id: the same window of the same key always gets the same id."""
    text = f"{topic}\x1f{sentiment}\x1f{window_start.isoformat()}\x1f{window_end.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def windows_of_run(
    con: duckdb.DuckDBPyConnection, *, run_id: str, window: timedelta, sentiment: str = "negative"
) -> pd.DataFrame:
    """(topic, window_start) of every window that received new ``sentiment`` items in a run."""
    with translate_errors("finding the windows a run touched"):
        return con.execute(
            f"""
            SELECT DISTINCT topic, time_bucket(INTERVAL '{_interval(window)}', published_at) AS window_start
            FROM news WHERE run_id = ? AND sentiment = ?
            """,
            [run_id, sentiment],
        ).df()


def window_counts(
    con: duckdb.DuckDBPyConnection,
    *,
    topics: list[str],
    since: datetime,
    until: datetime,
    window: timedelta,
    sentiment: str = "negative",
) -> pd.DataFrame:
    """Per topic and window in [since, until): the count of ``sentiment`` items (non-empty only)."""
    probe = pd.DataFrame({"topic": pd.Series(topics, dtype="string")})  # noqa: F841 - read by the SQL below
    with translate_errors("counting items per window"):
        return con.execute(
            f"""
            SELECT n.topic, time_bucket(INTERVAL '{_interval(window)}', n.published_at) AS window_start,
                   count(*) AS negative
            FROM news n JOIN probe p ON n.topic = p.topic
            WHERE n.sentiment = ? AND n.published_at >= ? AND n.published_at < ?
            GROUP BY ALL
            """,
            [sentiment, since, until],
        ).df()


def top_headlines(
    con: duckdb.DuckDBPyConnection,
    *,
    topic: str,
    sentiment: str,
    start: datetime,
    end: datetime,
    limit: int = 3,
) -> list[str]:
    """The most confident distinct headlines of a window (title, else text)."""
    with translate_errors("reading headlines"):
        rows = con.execute(
            """
            SELECT coalesce(title, text) AS headline, max(sentiment_score) AS confidence
            FROM news
            WHERE topic = ? AND sentiment = ? AND published_at >= ? AND published_at < ?
            GROUP BY headline ORDER BY confidence DESC, headline LIMIT ?
            """,
            [topic, sentiment, start, end, limit],
        ).fetchall()
    return [row[0][:280] for row in rows]


def insert_alerts(con: duckdb.DuckDBPyConnection, alerts: pd.DataFrame) -> pd.DataFrame:
    """Insert alerts whose window has none yet; return the rows actually inserted."""
    if alerts.empty:
        return alerts
    frame = alerts.copy()
    frame["alert_id"] = [
        alert_key(
            topic=r.topic,
            sentiment=r.sentiment,
            window_start=r.window_start,
            window_end=r.window_end,
        )
        for r in frame.itertuples()
    ]
    frame["created_at"] = datetime.now(UTC)
    with translate_errors("raising alerts"), transaction(con):
        con.register("new_alerts", frame)
        try:
            inserted = con.execute(
                """
                INSERT INTO alerts BY NAME
                SELECT * FROM new_alerts
                WHERE alert_id NOT IN (SELECT alert_id FROM alerts)
                ON CONFLICT DO NOTHING
                RETURNING alert_id
                """
            ).fetchall()
        finally:
            con.unregister("new_alerts")
    ids = {row[0] for row in inserted}
    return frame[frame["alert_id"].isin(ids)].reset_index(drop=True)


def pending_alerts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Alerts not yet delivered, oldest first."""
    with translate_errors("reading pending alerts"):
        return con.execute(
            "SELECT * FROM alerts WHERE notified_at IS NULL ORDER BY window_start, topic"
        ).df()


def record_delivery(
    con: duckdb.DuckDBPyConnection, *, alert_id: str, delivered: bool, error: str | None
) -> None:
    """Mark one delivery attempt: delivered alerts get notified_at, failed ones keep pending."""
    with translate_errors("recording an alert delivery"):
        con.execute(
            """
            UPDATE alerts SET
                notify_attempts = notify_attempts + 1,
                notified_at = CASE WHEN ? THEN now() ELSE NULL END,
                last_error = ?
            WHERE alert_id = ?
            """,
            [delivered, error, alert_id],
        )
