"""Read-side queries: run summaries and the analysts' read-only SQL entry point."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from storage.db import StorageError, _one_line, connect, translate_errors


def sentiment_mix(con: duckdb.DuckDBPyConnection, *, run_id: str | None = None) -> pd.DataFrame:
    """Per topic: items and the count of each sentiment (of one run, or of everything)."""
    where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
    with translate_errors("summarising sentiment per topic"):
        return con.execute(
            f"""
            SELECT topic, count(*) AS n,
                   count(*) FILTER (sentiment = 'negative') AS negative,
                   count(*) FILTER (sentiment = 'neutral')  AS neutral,
                   count(*) FILTER (sentiment = 'positive') AS positive
            FROM news {where}
            GROUP BY topic ORDER BY n DESC, topic
            """,
            params,
        ).df()


def read_only_query(path: str | Path, sql: str, *, lock_timeout_s: float = 30.0) -> pd.DataFrame:
    """Run one analyst query on a read-only connection with external access disabled.

    The connection cannot write the database, and with external access off it cannot COPY
    to files or ATTACH other databases either.
    """
    con = connect(path, read_only=True, lock_timeout_s=lock_timeout_s)
    try:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            return con.execute(sql).df()
        except duckdb.Error as e:
            raise StorageError(_one_line(e)) from e
    finally:
        con.close()
