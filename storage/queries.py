"""Read-side queries: run summaries and the analysts' read-only SQL entry point.

Analysts read the replica the pipeline publishes after each commit (storage/replica.py), so
they never wait for, or block, a running ``yuqing run``. Until a first replica exists they
read the main file read-only, which waits for the writer's lock.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from storage.db import StorageError, _one_line, connect, translate_errors
from storage.replica import REPLICA_SUFFIX, replica_path_for


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


def analyst_path(path: str | Path, replica: str | Path | None = None) -> Path:
    """The file analysts read for database ``path``: its replica when one has been published."""
    path = Path(path)
    if path.name.endswith(REPLICA_SUFFIX):
        return path
    candidate = Path(replica) if replica else replica_path_for(path)
    return candidate if candidate.exists() else path


def open_analyst(
    path: str | Path, *, replica: str | Path | None = None, lock_timeout_s: float = 30.0
) -> duckdb.DuckDBPyConnection:
    """A read-only connection for analysts, with external access off and settings locked.

    It reads the published replica of ``path`` (or ``replica``); before the first replica
    exists it reads ``path`` itself, read-only, waiting up to ``lock_timeout_s`` for a writer.
    The connection sees one committed state until it is closed: reconnect for fresher data.
    """
    source = analyst_path(path, replica)
    if source != Path(path):
        try:
            con = duckdb.connect(
                str(source), read_only=True, config={"enable_external_access": False}
            )
        except duckdb.Error as e:
            raise StorageError(f"cannot open {source}: {_one_line(e)}") from e
    else:
        con = connect(source, read_only=True, lock_timeout_s=lock_timeout_s)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as e:
        con.close()
        raise StorageError(f"cannot prepare {source}: {_one_line(e)}") from e
    return con


def _refusal(error: duckdb.Error) -> str:
    text = _one_line(error)
    if isinstance(error, duckdb.PermissionException) or "read-only mode" in text:
        return f"refused, queries are read-only: {text}"
    return text


def read_only_query(
    path: str | Path,
    sql: str,
    *,
    replica: str | Path | None = None,
    lock_timeout_s: float = 30.0,
) -> pd.DataFrame:
    """Run one analyst query on a read-only connection with external access disabled.

    The connection cannot write the database, and with external access off it cannot COPY
    to files, ATTACH other databases or INSTALL/LOAD extensions either.
    """
    con = open_analyst(path, replica=replica, lock_timeout_s=lock_timeout_s)
    try:
        try:
            return con.execute(sql).df()
        except duckdb.Error as e:
            raise StorageError(_refusal(e)) from e
    finally:
        con.close()
