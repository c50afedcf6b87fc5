"""The one place that opens DuckDB.

DuckDB allows one read-write process or many read-only processes on a file, never both at
once. The pipeline (``yuqing run``) is the only writer and holds its connection only for the
length of a run; analysts open the file read-only between runs. ``connect`` waits a bounded
time for the lock instead of failing at once, and every ``duckdb.Error`` leaves this package
as a ``StorageError`` with a one-line message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from storage.migrations import apply_migrations

logger = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A DuckDB operation failed; the message is one line and safe to show a user."""


class DatabaseLockedError(StorageError):
    """Another process holds the database file."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _is_lock_error(error: duckdb.Error) -> bool:
    text = str(error).lower()
    return "could not set lock" in text or "conflicting lock" in text


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def _lock_holder(error: duckdb.Error) -> str:
    """'PID 123, /usr/bin/python3' from DuckDB's lock error, or 'another process'."""
    match = _LOCK_HOLDER.search(str(error))
    if not match:
        return "another process"
    return f"another process (PID {match['pid']}, {match['program']})"


def connect(
    path: str | Path, *, read_only: bool = False, lock_timeout_s: float = 0.0
) -> duckdb.DuckDBPyConnection:
    """Open the yuqing database; a writer also brings the schema up to date.

    ``lock_timeout_s`` is how long to keep retrying while another process holds the file.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise StorageError(
            f"no yuqing database at {path}: run 'yuqing run' (or 'yuqing demo') first"
        )
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the folder for {path}: {_one_line(e)}") from e
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as e:
            if _is_lock_error(e) and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if _is_lock_error(e):
                raise DatabaseLockedError(
                    f"{path} is locked by {_lock_holder(e)}: another 'yuqing run', or a "
                    "connection that opened the main file instead of its analyst replica; "
                    f"waited {lock_timeout_s:g}s, retry when it is closed"
                ) from e
            raise StorageError(f"cannot open {path}: {_one_line(e)}") from e
    try:
        con.execute("SET TimeZone = 'UTC'")
        if not read_only:
            apply_migrations(con)
    except duckdb.Error as e:
        con.close()
        raise StorageError(f"cannot prepare {path}: {_one_line(e)}") from e
    return con


@contextmanager
def transaction(
    con: duckdb.DuckDBPyConnection, *, before_commit: Callable[[], None] | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run a block in one transaction: all of it is committed, or none of it.

    ``before_commit`` runs after the block and right before ``COMMIT`` (the crash tests kill
    the process there, or a moment later, inside the commit)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        if before_commit is not None:
            before_commit()
    except BaseException:
        con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error as e:
        raise StorageError(f"commit failed: {_one_line(e)}") from e


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise DuckDB errors from a block as StorageError naming the action."""
    try:
        yield
    except duckdb.Error as e:
        raise StorageError(f"{action}: {_one_line(e)}") from e
