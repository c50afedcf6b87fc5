"""Every query in docs/sql.md runs, returns rows, and every view and macro is documented.

The database is written through the real write path (tests/storage/analyst_fixtures.py) with
data relative to now, and the queries run the way analysts run them: on the read-only
replica with external access disabled.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage.views import SCALAR_MACROS, TABLE_MACROS, VIEWS

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.S | re.M)


def doc_queries() -> list[tuple[str, str]]:
    """(question heading, SQL) for every ```sql block in docs/sql.md."""
    text = DOC.read_text(encoding="utf-8")
    queries = []
    for match in SQL_BLOCK.finditer(text):
        headings = re.findall(r"^#{2,4} (.+)$", text[: match.start()], re.M)
        queries.append((headings[-1] if headings else "?", match.group(1).strip()))
    return queries


QUERIES = doc_queries()


def test_the_docs_hold_at_least_ten_example_queries():
    assert len(QUERIES) >= 10
    assert len({sql for _, sql in QUERIES}) == len(QUERIES)


@pytest.mark.parametrize(("question", "sql"), QUERIES, ids=[q for q, _ in QUERIES])
def test_every_documented_query_runs_and_answers(analyst_db, question, sql):
    from storage.queries import open_analyst

    con = open_analyst(analyst_db)
    try:
        (external,) = con.execute("SELECT current_setting('enable_external_access')").fetchone()
        assert external is False
        frame = con.execute(sql).df()
    finally:
        con.close()
    assert len(frame) > 0, f"{question!r} returned no rows"
    assert frame.notna().any().any()


def test_the_energy_alert_query_returns_the_surge_headlines(analyst_db):
    from storage.queries import read_only_query

    (sql,) = [sql for question, sql in QUERIES if "yesterday's Energy alert" in question]
    frame = read_only_query(analyst_db, sql)
    assert (frame["severity"] == "critical").all()
    assert frame["headline"].str.contains("OPEC|crude|oil|Brent|Refiners|Shale", case=False).all()


def test_every_view_and_macro_and_column_is_documented(analyst_db):
    from storage.queries import read_only_query

    text = DOC.read_text(encoding="utf-8")
    for view, columns in VIEWS.items():
        assert f"### `{view}`" in text, view
        actual = tuple(read_only_query(analyst_db, f"SELECT * FROM {view} LIMIT 0").columns)
        assert actual == columns, view
        section = text.split(f"### `{view}`", 1)[1].split("\n### ", 1)[0]
        for column in columns:
            assert f"`{column}`" in section, f"{view}.{column} is not documented"
    for macro in [*TABLE_MACROS, *SCALAR_MACROS]:
        assert f"`{macro}(" in text, macro
