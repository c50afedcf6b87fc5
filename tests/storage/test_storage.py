from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from storage import alerts as alert_store
from storage.db import DatabaseLockedError, StorageError, connect
from storage.migrations import MIGRATIONS
from storage.queries import read_only_query, sentiment_mix
from storage.writer import NEWS_COLUMNS, known_ids, load_offsets, store_batch

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def scored_frame(ids, *, sentiment="negative", topic="Energy | Oil", start=T0) -> pd.DataFrame:
    rows = []
    for i, message_id in enumerate(ids):
        rows.append(
            {
                "id": message_id,
                "published_at": start + timedelta(seconds=10 * i),
                "source": "wire",
                "title": None,
                "text": f"text {message_id}",
                "url": None,
                "lang": "en",
                "tickers": ["XOM"],
                "sentiment": sentiment,
                "sentiment_score": 0.9,
                "topic": topic,
                "topic_score": 0.8,
                "model_version": "test-1",
                "kafka_topic": "news",
                "kafka_partition": 0,
                "kafka_offset": i,
            }
        )
    return pd.DataFrame(rows, columns=list(NEWS_COLUMNS))


def dead_frame(offsets) -> pd.DataFrame:
    return pd.DataFrame(
        [("news", 1, o, b"\xff raw", "not UTF-8") for o in offsets],
        columns=["topic", "partition", "offset", "raw", "error"],
    )


@pytest.fixture
def con(tmp_path):
    connection = connect(tmp_path / "y.duckdb")
    yield connection
    connection.close()


def test_migrations_record_their_versions_and_run_once(tmp_path):
    path = tmp_path / "m.duckdb"
    connect(path).close()
    con = connect(path)  # second open applies nothing new
    rows = con.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
    columns = [r[0] for r in con.execute("DESCRIBE scored_news").fetchall()]
    assert columns[:10] == [
        "id",
        "published_at",
        "source",
        "title",
        "text",
        "sentiment",
        "sentiment_score",
        "topic",
        "topic_score",
        "model_version",
    ]
    dead_columns = [r[0] for r in con.execute("DESCRIBE dead_letters").fetchall()]
    assert dead_columns[:6] == ["topic", "partition", "offset", "raw", "error", "received_at"]
    con.close()


def test_store_batch_is_idempotent_by_id_and_keeps_the_first_copy(con):
    first = store_batch(
        con,
        scored=scored_frame(["a", "b"]),
        dead_letters=dead_frame([5]),
        consumer="c",
        topic="news",
        next_offsets={0: 2, 1: 6},
        run_id="r1",
    )
    assert (first.inserted, first.duplicates, first.dead_lettered) == (2, 0, 1)
    again = scored_frame(["b", "c", "c"])
    again.loc[0, "text"] = "a different text for b"
    second = store_batch(
        con,
        scored=again,
        dead_letters=dead_frame([5]),
        consumer="c",
        topic="news",
        next_offsets={0: 5},
        run_id="r2",
    )
    assert (second.inserted, second.duplicates, second.dead_lettered) == (1, 2, 0)
    assert con.execute("SELECT text FROM news WHERE id = 'b'").fetchone()[0] == "text b"
    assert con.execute("SELECT count(*) FROM scored_news").fetchone()[0] == 3
    assert load_offsets(con, consumer="c", topic="news") == {0: 5, 1: 6}
    assert known_ids(con, ["a", "zzz", "c"]) == {"a", "c"}
    raw = con.execute('SELECT raw, error, "offset" FROM dead_letters').fetchone()
    assert raw == (b"\xff raw", "not UTF-8", 5)


def test_a_failed_batch_leaves_neither_rows_nor_offsets(con):
    bad = scored_frame(["x"])
    bad["sentiment"] = None  # violates NOT NULL inside the transaction
    with pytest.raises(StorageError, match="storing a batch"):
        store_batch(
            con,
            scored=bad,
            dead_letters=dead_frame([1]),
            consumer="c",
            topic="news",
            next_offsets={0: 1},
        )
    assert con.execute("SELECT count(*) FROM news").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    assert load_offsets(con, consumer="c", topic="news") == {}


def test_the_before_commit_hook_runs_inside_the_transaction(con):
    """The crash tests kill the process from this hook: it sees every row, uncommitted."""
    seen = []

    def hook() -> None:
        seen.append(con.execute("SELECT count(*) FROM news").fetchone()[0])
        raise RuntimeError("died before COMMIT")

    with pytest.raises(RuntimeError, match="died before COMMIT"):
        store_batch(
            con,
            scored=scored_frame(["a", "b"]),
            dead_letters=dead_frame([1]),
            consumer="c",
            topic="news",
            next_offsets={0: 3},
            before_commit=hook,
        )
    assert seen == [2]  # inside the transaction, after the inserts
    assert con.execute("SELECT count(*) FROM news").fetchone()[0] == 0  # rolled back
    assert load_offsets(con, consumer="c", topic="news") == {}


def test_alerts_are_raised_once_per_window_and_track_delivery(con):
    store_batch(
        con,
        scored=scored_frame([f"n{i}" for i in range(6)]),
        dead_letters=dead_frame([]),
        consumer="c",
        topic="news",
        next_offsets={0: 6},
        run_id="r1",
    )
    windows = alert_store.windows_of_run(con, run_id="r1", window=timedelta(minutes=5))
    assert windows["window_start"].tolist() == [pd.Timestamp(T0)]
    counts = alert_store.window_counts(
        con,
        topics=["Energy | Oil"],
        since=T0 - timedelta(hours=1),
        until=T0 + timedelta(hours=1),
        window=timedelta(minutes=5),
    )
    assert counts["negative"].tolist() == [6]
    spike = pd.DataFrame(
        [
            {
                "topic": "Energy | Oil",
                "sentiment": "negative",
                "window_start": T0,
                "window_end": T0 + timedelta(minutes=5),
                "observed": 6,
                "expected": 0.5,
                "score": 7.0,
                "severity": "medium",
                "headlines": ["text n0"],
                "run_id": "r1",
            }
        ]
    )
    assert len(alert_store.insert_alerts(con, spike)) == 1
    assert len(alert_store.insert_alerts(con, spike)) == 0  # a re-run never raises it again
    pending = alert_store.pending_alerts(con)
    assert len(pending) == 1
    alert_id = pending.iloc[0]["alert_id"]
    alert_store.record_delivery(con, alert_id=alert_id, delivered=False, error="HTTP 500")
    assert len(alert_store.pending_alerts(con)) == 1
    alert_store.record_delivery(con, alert_id=alert_id, delivered=True, error=None)
    assert alert_store.pending_alerts(con).empty
    attempts, notified = con.execute("SELECT notify_attempts, notified_at FROM alerts").fetchone()
    assert attempts == 2 and notified is not None
    headlines = alert_store.top_headlines(
        con,
        topic="Energy | Oil",
        sentiment="negative",
        start=T0,
        end=T0 + timedelta(minutes=5),
        limit=2,
    )
    assert len(headlines) == 2


def test_read_only_query_reads_but_cannot_write(tmp_path):
    path = tmp_path / "r.duckdb"
    con = connect(path)
    store_batch(
        con,
        scored=scored_frame(["a"]),
        dead_letters=dead_frame([]),
        consumer="c",
        topic="news",
        next_offsets={0: 1},
        run_id="r1",
    )
    assert sentiment_mix(con)["negative"].tolist() == [1]
    con.close()
    assert read_only_query(path, "SELECT id FROM scored_news")["id"].tolist() == ["a"]
    for statement in (
        "INSERT INTO news (id) VALUES ('b')",
        "DELETE FROM news",
        f"COPY news TO '{tmp_path / 'out.csv'}'",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
    ):
        with pytest.raises(StorageError):
            read_only_query(path, statement)
    assert not (tmp_path / "out.csv").exists()


def test_a_locked_database_gives_a_clear_error_after_waiting(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "l.duckdb"
    connect(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,sys,time; c=duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(DatabaseLockedError, match="locked by another process"):
            connect(path, read_only=True, lock_timeout_s=0.3)
    finally:
        holder.kill()
        holder.wait()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "n.duckdb"
    connect(path).close()
    raw = duckdb.connect(str(path))
    raw.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    raw.close()
    with pytest.raises(StorageError, match="newer than this yuqing"):
        connect(path)
