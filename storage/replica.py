"""The analysts' read replica: a copy of the database published after each commit.

DuckDB lets one process write a file or many processes read it, never both. The pipeline is
the only writer, so analysts read a replica instead: after a commit, the writer (the one
process holding the read-write connection) runs ``CHECKPOINT`` so the main file holds every
committed change and no WAL, copies the file to a temporary file next to the replica, fsyncs
it, and ``os.replace()``s it onto ``<stem>.analyst.duckdb``. The rename is atomic, so a reader
opens either the previous replica or the new one, never a half-written file; a reader that
already has the previous replica open keeps reading that file (its inode lives on until the
reader closes it), so every query sees one committed state. Readers never take the writer's
lock, and the writer never waits for readers.

Freshness: the replica is as of the last published commit (the last stored batch of the
running run, or the end of the last run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from storage.db import StorageError, _one_line

logger = logging.getLogger(__name__)

REPLICA_SUFFIX = ".analyst.duckdb"


def replica_path_for(db_path: str | Path) -> Path:
    """Where the replica of ``db_path`` lives by default: ``<stem>.analyst.duckdb`` beside it."""
    path = Path(db_path)
    return path.with_name(path.stem + REPLICA_SUFFIX)


def publish_replica(
    con: duckdb.DuckDBPyConnection,
    db_path: str | Path,
    replica_path: str | Path | None = None,
    *,
    before_replace: Callable[[], None] | None = None,
) -> float:
    """Checkpoint the writer's database and atomically replace the replica with a copy of it.

    Call it only between transactions, from the process that holds the read-write
    connection ``con``. Returns the seconds it took. ``before_replace`` runs after the copy
    is durable and before the rename (the fault-injection tests kill the process there).
    """
    started = time.perf_counter()
    source = Path(db_path)
    target = Path(replica_path) if replica_path else replica_path_for(source)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    remove_stale_temporaries(target)  # left by a writer killed mid-copy; only one writer runs
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error as e:
        raise StorageError(
            f"cannot checkpoint {source} for the analyst replica: {_one_line(e)}"
        ) from e
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src, open(temporary, "wb") as dst:
            shutil.copyfileobj(src, dst, length=8 * 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temporary, target)
        _fsync_dir(target.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise StorageError(
            f"cannot publish the analyst replica {target}: {e.strerror or _one_line(e)}"
        ) from e
    elapsed = time.perf_counter() - started
    logger.debug("analyst replica %s published in %.3fs", target, elapsed)
    return elapsed


def remove_stale_temporaries(replica_path: str | Path) -> int:
    """Delete temporary copies a killed writer left behind; returns how many."""
    target = Path(replica_path)
    removed = 0
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
