"""Writes a batch of results, dead letters and consumer offsets in one transaction.

Everything goes in as pandas frames (``executemany`` is orders of magnitude slower). The
consumer's next offsets are stored in the same transaction as the rows they cover, so a crash
at any point either keeps both or neither: a message is never lost and never stored twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd

from storage.db import transaction, translate_errors

NEWS_COLUMNS = (
    "id",
    "published_at",
    "source",
    "title",
    "text",
    "url",
    "lang",
    "tickers",
    "sentiment",
    "sentiment_score",
    "topic",
    "topic_score",
    "model_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
DEAD_LETTER_COLUMNS = ("topic", "partition", "offset", "raw", "error")


@dataclass(frozen=True)
class StoreResult:
    inserted: int
    duplicates: int
    dead_lettered: int


def _check_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing}")


def known_ids(con: duckdb.DuckDBPyConnection, ids: list[str]) -> set[str]:
    """The subset of ``ids`` already stored (redeliveries), so they need no scoring."""
    if not ids:
        return set()
    probe = pd.DataFrame({"id": pd.Series(ids, dtype="string")})  # noqa: F841 - read by the SQL below
    with translate_errors("looking up stored ids"):
        rows = con.execute("SELECT n.id FROM news n JOIN probe p ON n.id = p.id").fetchall()
    return {row[0] for row in rows}


def load_offsets(con: duckdb.DuckDBPyConnection, *, consumer: str, topic: str) -> dict[int, int]:
    """Stored next offsets of ``consumer`` on ``topic``, by partition."""
    with translate_errors("reading consumer offsets"):
        rows = con.execute(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = ? AND topic = ?",
            [consumer, topic],
        ).fetchall()
    return {partition: offset for partition, offset in rows}


def store_batch(
    con: duckdb.DuckDBPyConnection,
    *,
    scored: pd.DataFrame,
    dead_letters: pd.DataFrame,
    consumer: str,
    topic: str,
    next_offsets: Mapping[int, int],
    run_id: str | None = None,
    before_commit: Callable[[], None] | None = None,
) -> StoreResult:
    """Store scored news, dead letters and the consumer's next offsets atomically.

    Within the batch and against the table, the first copy of an id wins; later copies are
    counted as duplicates and not stored. ``before_commit`` runs right before the COMMIT.
    """
    _check_columns(scored, NEWS_COLUMNS, "scored")
    _check_columns(dead_letters, DEAD_LETTER_COLUMNS, "dead-letter")
    now = datetime.now(UTC)
    columns = [*NEWS_COLUMNS, *(["story_id"] if "story_id" in scored.columns else [])]
    batch_news = scored.loc[:, columns].drop_duplicates("id", keep="first")
    batch_news = batch_news.assign(ingested_at=now, run_id=run_id)
    batch_dead = dead_letters.loc[:, list(DEAD_LETTER_COLUMNS)].assign(
        received_at=now, run_id=run_id
    )
    batch_offsets = pd.DataFrame(
        {
            "consumer": consumer,
            "topic": topic,
            "partition": pd.Series(list(next_offsets.keys()), dtype="int32"),
            "next_offset": pd.Series(list(next_offsets.values()), dtype="int64"),
            "updated_at": now,
        }
    )
    with translate_errors("storing a batch"), transaction(con, before_commit=before_commit):
        con.register("batch_news", batch_news)
        con.register("batch_dead", batch_dead)
        con.register("batch_offsets", batch_offsets)
        try:
            (inserted,) = con.execute(
                """
                INSERT INTO news BY NAME
                SELECT * FROM batch_news b
                WHERE NOT EXISTS (SELECT 1 FROM news n WHERE n.id = b.id)
                """
            ).fetchone()
            (dead,) = con.execute(
                "INSERT INTO dead_letters BY NAME SELECT * FROM batch_dead ON CONFLICT DO NOTHING"
            ).fetchone()
            if len(batch_offsets):
                con.execute(
                    "INSERT OR REPLACE INTO consumer_offsets BY NAME SELECT * FROM batch_offsets"
                )
        finally:
            for name in ("batch_news", "batch_dead", "batch_offsets"):
                con.unregister(name)
    return StoreResult(inserted=inserted, duplicates=len(scored) - inserted, dead_lettered=dead)


def record_run(con: duckdb.DuckDBPyConnection, summary: Mapping[str, object]) -> None:
    """Append one row to ``runs`` (the run summary analysts and on-call can query)."""
    frame = pd.DataFrame([dict(summary)])
    with translate_errors("recording the run"):
        con.register("run_row", frame)
        try:
            con.execute("INSERT OR REPLACE INTO runs BY NAME SELECT * FROM run_row")
        finally:
            con.unregister("run_row")
