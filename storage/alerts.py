"""Alert rows: the counts the detector needs, raising alerts once, and delivery bookkeeping."""

from __future__ import annotations

import hashlib
import json
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


def alert_key(
    *,
    topic: str,
    sentiment: str,
    window_start: datetime,
    window_end: datetime,
    kind: str = "count",
    ticker: str | None = None,
) -> str:
    """Deterministic alert id: the same window of the same key always gets the same id."""
    text = f"{topic}\x1f{sentiment}\x1f{window_start.isoformat()}\x1f{window_end.isoformat()}"
    if kind != "count" or ticker:
        text += f"\x1f{kind}\x1f{ticker or ''}"
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
    kinds = frame["kind"] if "kind" in frame.columns else pd.Series("count", index=frame.index)
    tickers = frame["ticker"] if "ticker" in frame.columns else pd.Series(None, index=frame.index)
    frame["alert_id"] = [
        alert_key(
            topic=r.topic,
            sentiment=r.sentiment,
            window_start=r.window_start,
            window_end=r.window_end,
            kind=kind,
            ticker=ticker if isinstance(ticker, str) else None,
        )
        for r, kind, ticker in zip(frame.itertuples(), kinds, tickers, strict=True)
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
    """Alerts to notify and not yet delivered, oldest first (notify=false ones never are)."""
    with translate_errors("reading pending alerts"):
        return con.execute(
            "SELECT * FROM alerts WHERE notified_at IS NULL AND notify ORDER BY window_start, topic"
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


# -- detector state ---------------------------------------------------------------------


def load_detector_states(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """Every key's saved detector state."""
    with translate_errors("reading detector state"):
        rows = con.execute("SELECT key, state FROM detector_state").fetchall()
    return {key: json.loads(state) for key, state in rows}


def save_detector_states(con: duckdb.DuckDBPyConnection, states: dict[str, dict]) -> None:
    """Insert or replace the state of each given key, in one transaction."""
    if not states:
        return
    frame = pd.DataFrame(  # noqa: F841 - read by the SQL below
        {
            "key": list(states),
            "state": [json.dumps(v, separators=(",", ":")) for v in states.values()],
            "updated_at": datetime.now(UTC),
        }
    )
    with translate_errors("saving detector state"), transaction(con):
        con.execute(
            "INSERT OR REPLACE INTO detector_state BY NAME "
            "SELECT key, state::JSON AS state, updated_at FROM frame"
        )


# -- what the detector counts -------------------------------------------------------------


def news_time_range(con: duckdb.DuckDBPyConnection) -> tuple[datetime | None, datetime | None]:
    """(earliest, latest) published_at in news."""
    with translate_errors("reading the news time range"):
        return con.execute("SELECT min(published_at), max(published_at) FROM news").fetchall()[0]


def story_counts(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    window: timedelta,
    lookback: timedelta,
    by_ticker: bool = False,
) -> pd.DataFrame:
    """Distinct stories per key and window in [since, until).

    A story (``coalesce(story_id, id)``) counts once per key, in the first window it appears
    in, looking ``lookback`` further back, so copies from ten outlets count once. Columns:
    topic, sentiment, window_t (window start, epoch seconds, aligned to the epoch), stories
    (by_ticker: ticker instead of topic).
    """
    group = "ticker" if by_ticker else "topic"
    seconds = int(window.total_seconds())
    source = (
        "SELECT unnest(tickers) AS ticker, sentiment, coalesce(story_id, id) AS story, "
        "published_at FROM news WHERE published_at >= ? AND published_at < ? AND tickers IS NOT NULL"
        if by_ticker
        else "SELECT topic, sentiment, coalesce(story_id, id) AS story, published_at FROM news "
        "WHERE published_at >= ? AND published_at < ?"
    )
    with translate_errors("counting stories per window"):
        return con.execute(
            f"""
            WITH items AS ({source}),
            firsts AS (
                SELECT {group}, sentiment, story, min(published_at) AS first_at
                FROM items GROUP BY ALL
            )
            SELECT {group}, sentiment,
                   floor(epoch(first_at) / {seconds}) * {seconds} AS window_t,
                   count(*) AS stories
            FROM firsts WHERE first_at >= ?
            GROUP BY ALL ORDER BY ALL
            """,
            [since - lookback, until, since],
        ).df()


def window_items(
    con: duckdb.DuckDBPyConnection,
    *,
    start: datetime,
    end: datetime,
    sentiment: str,
    topic: str | None = None,
    ticker: str | None = None,
) -> pd.DataFrame:
    """The items of one key's window: story, headline, text, sentiment_score, tickers."""
    where = "topic = ?" if ticker is None else "list_contains(tickers, ?)"
    with translate_errors("reading a window's items"):
        return con.execute(
            f"""
            SELECT coalesce(story_id, id) AS story, coalesce(title, text) AS headline, text,
                   sentiment_score, tickers, topic, published_at
            FROM news
            WHERE {where} AND sentiment = ? AND published_at >= ? AND published_at < ?
            ORDER BY published_at
            """,
            [ticker if ticker is not None else topic, sentiment, start, end],
        ).df()


# -- lifecycle ----------------------------------------------------------------------------

STATUSES = ("open", "acknowledged", "resolved")


class AlertNotFound(LookupError):
    """No alert has this id (or id prefix), or the prefix is ambiguous."""


def list_alerts(
    con: duckdb.DuckDBPyConnection, *, status: str | None = None, limit: int = 50
) -> pd.DataFrame:
    """The newest alerts first, optionally of one status."""
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    with translate_errors("listing alerts"):
        return con.execute(
            f"""
            SELECT alert_id, status, kind, severity, topic, sentiment, ticker, window_start,
                   window_end, observed, expected, score, notify, notified_at,
                   acknowledged_by, resolved_by, headlines
            FROM alerts {where} ORDER BY window_start DESC, alert_id LIMIT ?
            """,
            [*params, limit],
        ).df()


def resolve_id(con: duckdb.DuckDBPyConnection, id_or_prefix: str) -> str:
    """The full alert id for an id or a unique prefix of one (at least 4 characters)."""
    prefix = id_or_prefix.strip()
    if len(prefix) < 4:
        raise AlertNotFound(f"alert id {prefix!r} is too short: give at least 4 characters")
    with translate_errors("finding an alert"):
        rows = con.execute(
            "SELECT alert_id FROM alerts WHERE starts_with(alert_id, ?) LIMIT 2", [prefix]
        ).fetchall()
    if not rows:
        raise AlertNotFound(f"no alert with id {prefix!r}")
    if len(rows) > 1:
        raise AlertNotFound(f"alert id {prefix!r} is ambiguous: give more characters")
    return rows[0][0]


def acknowledge(con: duckdb.DuckDBPyConnection, alert_id: str, *, by: str) -> str:
    """Mark an open alert acknowledged; returns the status it has afterwards."""
    with translate_errors("acknowledging an alert"):
        con.execute(
            """
            UPDATE alerts SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = ?
            WHERE alert_id = ? AND status = 'open'
            """,
            [by, alert_id],
        )
        return con.execute("SELECT status FROM alerts WHERE alert_id = ?", [alert_id]).fetchall()[
            0
        ][0]


def resolve(
    con: duckdb.DuckDBPyConnection, alert_id: str, *, by: str, at: datetime | None = None
) -> str:
    """Mark an alert resolved (from open or acknowledged); returns its status afterwards."""
    with translate_errors("resolving an alert"):
        con.execute(
            """
            UPDATE alerts SET status = 'resolved', resolved_at = coalesce(?, now()), resolved_by = ?
            WHERE alert_id = ? AND status <> 'resolved'
            """,
            [at, by, alert_id],
        )
        return con.execute("SELECT status FROM alerts WHERE alert_id = ?", [alert_id]).fetchall()[
            0
        ][0]


def recent_stories(con: duckdb.DuckDBPyConnection, *, lookback: timedelta) -> list[tuple[str, str]]:
    """(classified text, story_id) of stored news published within ``lookback`` of the newest."""
    with translate_errors("reading recent stories"):
        return con.execute(
            """
            SELECT CASE WHEN title IS NULL OR starts_with(text, title) THEN text
                        ELSE title || chr(10) || text END, story_id
            FROM news
            WHERE story_id IS NOT NULL
              AND published_at >= (SELECT max(published_at) FROM news) - ?::INTERVAL
            ORDER BY published_at
            """,
            [f"{int(lookback.total_seconds())} seconds"],
        ).fetchall()
