"""`yuqing export` and `yuqing sql --format/--output`, as users run them (real subprocesses)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.flows.test_cli import yuqing


def one_line_error(result, fragment: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_export_parquet_holds_the_scored_news_of_the_range(analyst_db, tmp_path):
    from storage.queries import read_only_query

    since = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    until = since + timedelta(days=1)
    out = tmp_path / "news.parquet"
    result = yuqing(
        "export", "--db", str(analyst_db), "--since", since.isoformat(), "--until",
        until.isoformat(), "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    expected = read_only_query(
        analyst_db,
        f"SELECT id FROM scored_news WHERE published_at >= TIMESTAMPTZ '{since.isoformat()}' "
        f"AND published_at < TIMESTAMPTZ '{until.isoformat()}' ORDER BY published_at, id",
    )
    assert table.column("id").to_pylist() == expected["id"].tolist()
    assert f"wrote {len(expected)} scored news items" in result.stdout
    frame = table.to_pandas()
    assert frame["published_at"].min() >= pd.Timestamp(since)
    assert frame["published_at"].max() < pd.Timestamp(until)
    assert {"sentiment", "sentiment_score", "topic", "topic_score", "model_version"} <= set(
        frame.columns
    )
    assert str(table.schema.field("tickers").type) == "list<element: string>"
    assert list(tmp_path.iterdir()) == [out]  # no staging file left behind


def test_export_csv_reads_back_with_tickers_as_text(analyst_db, tmp_path):
    out = tmp_path / "yesterday.csv"
    result = yuqing(
        "export", "--db", str(analyst_db), "--since", "yesterday", "--until", "today",
        "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert len(frame) > 24  # at least yesterday's surge
    assert frame["tickers"].dropna().str.fullmatch(r"[A-Z]+( [A-Z]+)*").all()
    assert (frame["sentiment"].isin(["negative", "neutral", "positive"])).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "the day before"], "not a date, time or duration"),
        (["--since", "today", "--until", "yesterday"], "is not before --until"),
        (["--format", "xlsx"], "Invalid value for '--format'"),
    ],
)
def test_export_bad_arguments_are_one_line(analyst_db, tmp_path, args, message):
    out = tmp_path / "out.parquet"
    result = yuqing("export", "--db", str(analyst_db), "--output", str(out), *args)
    one_line_error(result, message)
    assert not out.exists()


def test_export_without_a_known_suffix_asks_for_the_format(analyst_db, tmp_path):
    result = yuqing("export", "--db", str(analyst_db), "--output", str(tmp_path / "news.dat"))
    one_line_error(result, "give --format parquet or csv")


def test_export_into_a_missing_folder_is_one_line(analyst_db, tmp_path):
    result = yuqing("export", "--db", str(analyst_db), "--output", str(tmp_path / "no" / "x.csv"))
    one_line_error(result, "no folder")


QUERY = "SELECT topic, n, negative, net_sentiment FROM sentiment_between(now() - INTERVAL 7 DAY, now()) ORDER BY topic"


def test_sql_table_output_is_a_readable_box_with_types_and_a_row_count(analyst_db):
    result = yuqing("sql", "--db", str(analyst_db), QUERY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("┌") and "topic" in lines[1] and "varchar" in lines[2]
    assert "Energy | Oil" in result.stdout
    assert lines[-1] == "(5 rows)"


def test_sql_csv_json_and_parquet_agree(analyst_db, tmp_path):
    csv = yuqing("sql", "--db", str(analyst_db), QUERY, "--format", "csv")
    as_json = yuqing("sql", "--db", str(analyst_db), QUERY, "--format", "json")
    out = tmp_path / "mix.parquet"
    parquet = yuqing("sql", "--db", str(analyst_db), QUERY, "--format", "parquet", "-o", str(out))
    for result in (csv, as_json, parquet):
        assert result.returncode == 0, result.stderr
    from io import StringIO

    from_csv = pd.read_csv(StringIO(csv.stdout))
    from_json = pd.DataFrame(json.loads(as_json.stdout))
    from_parquet = pd.read_parquet(out)
    assert (
        from_csv["topic"].tolist() == from_json["topic"].tolist() == from_parquet["topic"].tolist()
    )
    assert from_csv["n"].tolist() == from_parquet["n"].tolist()
    assert "wrote 5 rows" in parquet.stderr


def test_sql_lists_and_json_survive_csv_and_json(analyst_db):
    query = "SELECT alert_id, top_terms, explanation FROM open_alerts WHERE topic = 'Energy | Oil'"
    csv = yuqing("sql", "--db", str(analyst_db), query, "--format", "csv")
    as_json = yuqing("sql", "--db", str(analyst_db), query, "--format", "json")
    from io import StringIO

    row = pd.read_csv(StringIO(csv.stdout)).iloc[0]
    assert json.loads(row["top_terms"]) == ["crude", "opec", "plunges", "glut"]
    record = json.loads(as_json.stdout)[0]
    assert record["top_terms"] == ["crude", "opec", "plunges", "glut"]
    assert json.loads(record["explanation"])["baseline"] == 1.4


def test_sql_parquet_needs_an_output_file(analyst_db):
    result = yuqing("sql", "--db", str(analyst_db), "SELECT 1", "--format", "parquet")
    one_line_error(result, "give --output FILE")


def test_sql_errors_point_at_the_line_and_column(analyst_db):
    result = yuqing("sql", "--db", str(analyst_db), "SELECT topic\nFORM scored_news")
    one_line_error(result, 'syntax error at or near "scored_news"')
    assert "(line 2, column 6: FORM scored_news)" in result.stderr
    result = yuqing("sql", "--db", str(analyst_db), "SELECT topik FROM scored_news")
    one_line_error(result, 'Referenced column "topik" not found')
    assert "line 1, column 8" in result.stderr


@pytest.mark.parametrize("command", ["export", "dashboard"])
def test_the_analyst_commands_have_help(command):
    result = yuqing(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"yuqing {command}" in result.stdout and "--since" in result.stdout
