"""The analysts' views and macros (migration 3) against independent computations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from storage.views import VIEWS


def query(db, sql: str) -> pd.DataFrame:
    from storage.queries import read_only_query

    return read_only_query(db, sql)


def test_hourly_view_matches_a_pandas_recount(analyst_db):
    news = query(analyst_db, "SELECT topic, published_at, sentiment FROM scored_news")
    news["hour"] = news["published_at"].dt.floor("h")
    expected = (
        news.groupby(["topic", "hour"])["sentiment"]
        .value_counts()
        .unstack(fill_value=0)
        .reset_index()
    )
    expected["n"] = expected[["negative", "neutral", "positive"]].sum(axis=1)
    expected["net_sentiment"] = (expected["positive"] - expected["negative"]) / expected["n"]
    view = query(analyst_db, "SELECT * FROM sentiment_by_topic_hourly")
    merged = view.merge(expected, on=["topic", "hour"], suffixes=("", "_pd"), how="outer")
    assert len(merged) == len(view) == len(expected)
    for column in ("n", "negative", "neutral", "positive", "net_sentiment"):
        assert (merged[column] - merged[f"{column}_pd"]).abs().max() < 1e-12, column


def test_ticker_view_counts_each_ticker_of_an_item_on_its_utc_day(analyst_db):
    news = query(analyst_db, "SELECT published_at, sentiment, tickers FROM scored_news")
    rows = news.dropna(subset=["tickers"]).explode("tickers")
    rows["day"] = rows["published_at"].dt.tz_convert("UTC").dt.date
    expected = rows.groupby(["tickers", "day"]).size()
    view = query(analyst_db, "SELECT ticker, day, n FROM sentiment_by_ticker_daily")
    view["day"] = pd.to_datetime(view["day"]).dt.date
    got = view.set_index(["ticker", "day"])["n"].sort_index()
    assert got.to_dict() == expected.sort_index().to_dict()
    xom = view[view["ticker"] == "XOM"].sort_values("day")
    assert xom["n"].sum() == int(rows["tickers"].eq("XOM").sum())


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_hours_and_days_are_utc_in_any_client_time_zone(analyst_db, zone):
    replica = analyst_db.with_name("yuqing.analyst.duckdb")
    con = duckdb.connect(str(replica), read_only=True)
    try:
        con.execute(f"SET TimeZone = '{zone}'")
        (bad_hours,) = con.execute(
            "SELECT count(*) FROM sentiment_by_topic_hourly WHERE epoch(hour) % 3600 <> 0"
        ).fetchone()
        (days,) = con.execute(
            "SELECT count(DISTINCT day) FROM sentiment_by_ticker_daily"
        ).fetchone()
        (utc_days,) = con.execute(
            """SELECT count(DISTINCT CAST(published_at AT TIME ZONE 'UTC' AS DATE))
               FROM (SELECT published_at FROM news WHERE tickers IS NOT NULL)"""
        ).fetchone()
        (first_hour,) = con.execute(
            "SELECT min(epoch(hour)) FROM sentiment_by_topic_hourly"
        ).fetchone()
        (first_item,) = con.execute("SELECT min(epoch(published_at)) FROM news").fetchone()
    finally:
        con.close()
    assert bad_hours == 0
    assert days == utc_days
    assert first_hour == first_item // 3600 * 3600


def test_open_alerts_are_the_unresolved_ones(analyst_db):
    statuses = query(analyst_db, "SELECT topic, status FROM open_alerts ORDER BY topic")
    assert statuses.to_dict("records") == [
        {"topic": "Earnings", "status": "acknowledged"},
        {"topic": "Energy | Oil", "status": "open"},
    ]
    assert set(query(analyst_db, "SELECT * FROM open_alerts").columns) == set(VIEWS["open_alerts"])


def test_alert_items_follow_the_alert_s_key_and_window(analyst_db):
    alerts = query(
        analyst_db, "SELECT alert_id, topic, ticker, window_start, window_end FROM alerts"
    )
    for alert in alerts.itertuples():
        items = query(analyst_db, f"SELECT * FROM alert_items('{alert.alert_id}')")
        assert len(items) > 0, alert.topic
        assert (items["published_at"] >= alert.window_start).all()
        assert (items["published_at"] < alert.window_end).all()
        assert (items["sentiment"] == "negative").all()
        if isinstance(alert.ticker, str):
            assert all(alert.ticker in list(t) for t in items["tickers"])
        else:
            assert (items["topic"] == alert.topic).all()
        assert items["sentiment_score"].is_monotonic_decreasing
    energy = alerts[alerts["topic"] == "Energy | Oil"].iloc[0]
    headlines = query(analyst_db, f"SELECT headline FROM alert_items('{energy.alert_id}')")
    assert headlines["headline"].str.contains(r"\(update \d+\)").sum() == 24  # the whole surge


def test_net_sentiment_macro_agrees_with_sentiment_between(analyst_db):
    both = query(
        analyst_db,
        """
        SELECT b.topic, b.net_sentiment AS between_value,
               net_sentiment(b.topic, now() - INTERVAL 3 DAY, now()) AS macro_value
        FROM sentiment_between(now() - INTERVAL 3 DAY, now()) b
        """,
    )
    assert len(both) == 5
    assert (both["between_value"] - both["macro_value"]).abs().max() < 1e-12
    (empty,) = query(
        analyst_db, "SELECT net_sentiment('No such topic', now() - INTERVAL 1 DAY, now())"
    ).iloc[0]
    assert pd.isna(empty)


def test_model_versions_join_the_registry_with_usage(analyst_db):
    from tests.storage.analyst_fixtures import NEW_MODEL, OLD_MODEL

    versions = query(analyst_db, "SELECT * FROM model_versions ORDER BY trained_at").set_index(
        "model_version"
    )
    assert list(versions.index) == [OLD_MODEL, NEW_MODEL]
    used = query(analyst_db, "SELECT model_version, count(*) AS n FROM news GROUP BY ALL")
    for row in used.itertuples():
        assert versions.loc[row.model_version, "items_scored"] == row.n
    assert versions.loc[NEW_MODEL, "sentiment_macro_f1"] == pytest.approx(0.86)
    assert versions.loc[OLD_MODEL, "topic_macro_f1"] == pytest.approx(0.77)


def test_register_model_keeps_the_first_registration(tmp_path):
    from storage.db import connect
    from storage.registry import register_model

    con = connect(tmp_path / "y.duckdb")
    try:
        assert register_model(
            con,
            model_version="m-1",
            base_model="base",
            trained_at="2026-11-01T10:00:00+00:00",
            metrics={"sentiment": {"macro_f1": 0.7}},
        )
        assert not register_model(
            con, model_version="m-1", base_model="other", trained_at=None, metrics=None
        )
        rows = con.execute(
            "SELECT model_version, base_model, trained_at, sentiment_macro_f1, items_scored "
            "FROM model_versions"
        ).fetchall()
    finally:
        con.close()
    assert rows == [("m-1", "base", datetime(2026, 11, 1, 10, tzinfo=UTC), 0.7, 0)]


def test_migration_3_upgrades_a_version_2_database_with_data(tmp_path):
    from storage.db import connect
    from storage.migrations import MIGRATIONS, current_version

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    current_version(con)
    for migration in MIGRATIONS[:2]:
        con.execute(migration.sql)
        con.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            [migration.version, migration.name],
        )
    now = datetime.now(UTC)
    con.execute(
        """
        INSERT INTO news (id, published_at, text, tickers, sentiment, sentiment_score, topic,
                          topic_score, model_version, kafka_topic, kafka_partition,
                          kafka_offset, ingested_at)
        VALUES ('a', ?, 'x', ['XOM'], 'negative', 0.9, 'Energy | Oil', 0.8, 'm', 'news', 0, 0, ?),
               ('b', ?, 'y', NULL, 'positive', 0.9, 'Energy | Oil', 0.8, 'm', 'news', 0, 1, ?)
        """,
        [now - timedelta(minutes=5), now, now - timedelta(minutes=4), now],
    )
    con.close()

    con = connect(path)  # the writer brings the schema up to date
    try:
        assert current_version(con) == 3
        assert con.execute(
            "SELECT n, net_sentiment FROM sentiment_by_topic_hourly WHERE topic = 'Energy | Oil'"
        ).fetchall() in ([(2, 0.0)], [(1, -1.0), (1, 1.0)], [(1, 1.0), (1, -1.0)])
        assert con.execute("SELECT ticker, n FROM sentiment_by_ticker_daily").fetchall() == [
            ("XOM", 1)
        ]
        assert con.execute("SELECT model_version, items_scored FROM model_versions").fetchall() == [
            ("m", 2)
        ]
    finally:
        con.close()
