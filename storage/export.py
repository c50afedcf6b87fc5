"""Scored news out of the analysts' replica, as Parquet or CSV files for other tools.

The rows come through ``storage.queries.open_analyst`` (the read-only replica, external access
off), so an export never blocks a run, and they stream in Arrow record batches, so memory stays
flat however long the range. The file is written next to its destination and moved into place,
so a failed export leaves no half-written file.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from storage.db import StorageError, _one_line, translate_errors
from storage.queries import open_analyst
from storage.writer import NEWS_COLUMNS

EXPORT_FORMATS = ("parquet", "csv")
BATCH_ROWS = 100_000
# what analysts see of a stored item: the scored_news columns without the Kafka coordinates
EXPORT_COLUMNS = (
    *(c for c in NEWS_COLUMNS if not c.startswith("kafka_")),
    "story_id",
    "ingested_at",
)


def _timestamp_literal(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("export bounds must carry a time zone")
    return f"TIMESTAMPTZ '{value.isoformat()}'"


def export_query(*, since: datetime | None, until: datetime | None, fmt: str) -> str:
    """The SELECT behind an export; CSV gets tickers as one space-separated string."""
    columns = [
        "array_to_string(tickers, ' ') AS tickers" if c == "tickers" and fmt == "csv" else c
        for c in EXPORT_COLUMNS
    ]
    where = []
    if since is not None:
        where.append(f"published_at >= {_timestamp_literal(since)}")
    if until is not None:
        where.append(f"published_at < {_timestamp_literal(until)}")
    return (
        f"SELECT {', '.join(columns)} FROM scored_news"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY published_at, id"
    )


def export_scored_news(
    db: str | Path,
    *,
    output: str | Path,
    fmt: str,
    since: datetime | None = None,
    until: datetime | None = None,
    replica: str | Path | None = None,
) -> int:
    """Write scored news published in [since, until) to ``output``; return the row count."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use {' or '.join(EXPORT_FORMATS)})")
    if since is not None and until is not None and since >= until:
        raise ValueError(
            f"empty range: since {since.isoformat()} is not before until {until.isoformat()}"
        )
    output = Path(output)
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.part"
    rows = 0
    con = open_analyst(db, replica=replica)
    try:
        with translate_errors("exporting scored news"):
            relation = con.sql(export_query(since=since, until=until, fmt=fmt))
            # DuckDB 2 calls it to_arrow_reader; 1.x releases fetch_arrow_reader
            stream = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
            batches = stream(BATCH_ROWS)
        writer = (
            pq.ParquetWriter(staging, batches.schema, compression="zstd")
            if fmt == "parquet"
            else pa_csv.CSVWriter(staging, batches.schema)
        )
        with writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        os.replace(staging, output)
    except OSError as e:
        raise StorageError(f"cannot write {output}: {e.strerror or _one_line(e)}") from e
    finally:
        con.close()
        staging.unlink(missing_ok=True)
    return rows
