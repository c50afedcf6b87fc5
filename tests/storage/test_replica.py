"""The analysts' replica: published after commits, read while the writer keeps writing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pandas as pd
import pytest

from storage.db import StorageError, connect, transaction
from storage.queries import analyst_path, open_analyst, read_only_query
from storage.replica import publish_replica, replica_path_for


def write_pair(con, n: int, start: int) -> None:
    """One transaction that adds n rows to two tables: a reader must always see them equal."""
    frame = pd.DataFrame({"i": range(start, start + n)})  # noqa: F841 - read by the SQL below
    with transaction(con):
        con.execute("INSERT INTO a SELECT i FROM frame")
        con.execute("INSERT INTO b SELECT i FROM frame")


def make_db(path):
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE a (i BIGINT); CREATE TABLE b (i BIGINT)")
    return con


def test_replica_path_sits_beside_the_database(tmp_path):
    assert replica_path_for(tmp_path / "yuqing.duckdb") == tmp_path / "yuqing.analyst.duckdb"


def test_reader_keeps_its_snapshot_while_a_new_replica_is_published(tmp_path):
    db = tmp_path / "w.duckdb"
    con = make_db(db)
    write_pair(con, 10, 0)
    publish_replica(con, db)
    replica = replica_path_for(db)
    old = duckdb.connect(str(replica), read_only=True)
    assert old.execute("SELECT count(*) FROM a").fetchone()[0] == 10

    write_pair(con, 5, 10)
    publish_replica(con, db)
    # The open connection still reads the replaced file: one consistent, older state.
    assert old.execute("SELECT count(*) FROM a").fetchone()[0] == 10
    old.close()
    fresh = duckdb.connect(str(replica), read_only=True)
    assert fresh.execute("SELECT count(*), (SELECT count(*) FROM b) FROM a").fetchone() == (15, 15)
    fresh.close()
    con.close()


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    db = tmp_path / "w.duckdb"
    con = make_db(db)
    leftover = tmp_path / ".w.analyst.duckdb.999999.tmp"
    leftover.write_bytes(b"half a copy")
    publish_replica(con, db)
    con.close()
    assert not leftover.exists() and replica_path_for(db).exists()


READER = textwrap.dedent(
    """
    import sys, duckdb
    path, queries = sys.argv[1], int(sys.argv[2])
    errors = inconsistent = 0
    seen = set()
    for _ in range(queries):
        try:
            con = duckdb.connect(path, read_only=True)
            a, b = con.execute("SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)").fetchone()
            con.close()
            inconsistent += a != b
            seen.add(a)
        except duckdb.Error as e:
            errors += 1
            print("ERROR", e, file=sys.stderr)
    print(errors, inconsistent, len(seen))
    """
)


def test_readers_in_other_processes_never_fail_while_the_writer_publishes(tmp_path):
    db = tmp_path / "w.duckdb"
    con = make_db(db)
    write_pair(con, 1, 0)
    publish_replica(con, db)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(replica_path_for(db)), "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    start = 1
    while any(r.poll() is None for r in readers):
        write_pair(con, 500, start)
        start += 500
        publish_replica(con, db)
    con.close()
    for reader in readers:
        out, err = reader.communicate()
        errors, inconsistent, distinct = map(int, out.split())
        assert (errors, inconsistent) == (0, 0), err
        assert distinct >= 2  # the readers really saw the data move


def test_queries_read_the_replica_and_fall_back_to_the_main_file(tmp_path):
    db = tmp_path / "yuqing.duckdb"
    con = connect(db)
    con.close()
    assert analyst_path(db) == db  # no replica yet: the main file, read-only
    assert read_only_query(db, "SELECT count(*) AS n FROM news")["n"].tolist() == [0]

    con = connect(db)
    con.execute("CREATE TABLE marker AS SELECT 'replica' AS v")
    publish_replica(con, db)
    con.execute("DROP TABLE marker")  # committed in main, not yet published
    # The writer still holds the main file; analysts read the replica without waiting.
    assert read_only_query(db, "SELECT v FROM marker")["v"].tolist() == ["replica"]
    reader = open_analyst(db)
    with pytest.raises(duckdb.Error, match="read-only"):
        reader.execute("INSERT INTO marker VALUES ('x')")
    reader.close()
    with pytest.raises(StorageError, match="^refused, queries are read-only"):
        read_only_query(db, f"COPY marker TO '{tmp_path / 'out.csv'}'")
    assert not (tmp_path / "out.csv").exists()
    con.close()
