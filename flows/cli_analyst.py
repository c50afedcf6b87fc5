"""The analysts' commands: ``yuqing dashboard``, ``yuqing export`` and the output of ``yuqing sql``.

Everything here reads through ``storage.queries`` (the read-only analysts' replica), so none of
it can block or disturb a pipeline run. Errors are ``AnalystError`` (one line on stderr, via
``flows.cli.main``) or ``typer.BadParameter`` for a bad option.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class AnalystError(RuntimeError):
    """An analyst command cannot go on; the message is one line."""


class ResultFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


class ExportFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


# ---------------------------------------------------------------------------------------------
# yuqing sql: errors and output


_LINE_MARK = re.compile(r"^LINE (\d+): (.*)$")


def format_sql_error(message: str) -> str:
    """DuckDB's multi-line error as one line that keeps where it points.

    ``Parser Error: syntax error at or near "WHERE"\\n\\nLINE 1: SELECT 1 WHERE\\n  ^``
    becomes ``Parser Error: syntax error at or near "WHERE" (line 1, column 10: SELECT 1 WHERE)``.
    """
    lines = message.splitlines()
    where = ""
    for i, line in enumerate(lines):
        match = _LINE_MARK.match(line)
        if not match:
            continue
        prefix = len(line) - len(match.group(2))
        caret = lines[i + 1] if i + 1 < len(lines) else ""
        column = caret.find("^") - prefix + 1 if "^" in caret else None
        text = match.group(2).strip()
        where = f"line {match.group(1)}" + (f", column {column}" if column else "") + f": {text}"
        lines = lines[:i]
        break
    head = " ".join(" ".join(lines).split())
    return f"{head} ({where})" if where else head


def sql_error_message(error: Exception) -> str:
    """One line for a failed query: DuckDB's own message with the line and column it points at."""
    import duckdb

    cause = error.__cause__
    if isinstance(cause, duckdb.Error) and any(
        _LINE_MARK.match(line) for line in str(cause).splitlines()
    ):
        return format_sql_error(str(cause))
    return " ".join(str(error).split())


def _plain(value):
    """A cell as JSON/CSV can hold it: lists stay lists, arrays become lists, NaN becomes None."""
    import pandas as pd

    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or (not isinstance(value, str | bytes) and pd.isna(value)):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return value


def _csv_ready(frame):
    """List and struct cells as JSON text, so a CSV reader gets them back intact."""
    out = frame.copy()
    for column in out.columns:
        if (
            out[column].dtype == object
            and out[column].map(lambda v: hasattr(v, "tolist") or isinstance(v, list | dict)).any()
        ):
            out[column] = out[column].map(
                lambda v: None if v is None else json.dumps(_plain(v), default=str)
            )
    return out


def render_table(frame, *, max_rows: int = 200) -> str:
    """The frame as DuckDB's box table (column names and types), row count below.

    Long results show their first and last rows (use --format csv for all of them); the width
    is the terminal's, or 250 columns when the output is not a terminal.
    """
    import contextlib
    import io
    import shutil

    import duckdb

    if not len(frame.columns):
        return "(no columns)"
    width = shutil.get_terminal_size((250, 40)).columns if sys.stdout.isatty() else 250
    con = duckdb.connect()
    buffer = io.StringIO()
    try:
        con.execute("SET TimeZone = 'UTC'")
        with contextlib.redirect_stdout(buffer):
            con.from_df(frame).show(max_width=width, max_rows=max_rows, max_col_width=80)
    finally:
        con.close()
    text = buffer.getvalue().rstrip("\n")
    if f"{len(frame)} rows (" in text.rsplit("\n", 1)[-1]:  # DuckDB already counted them
        return text
    return text + f"\n({len(frame)} row{'s' if len(frame) != 1 else ''})"


def write_result(frame, fmt: ResultFormat, output: Path | None) -> None:
    """Write a query result to ``output`` (or stdout) in ``fmt``."""
    if fmt is ResultFormat.parquet and output is None:
        raise typer.BadParameter("parquet is binary: give --output FILE", param_hint="--format")
    if fmt is ResultFormat.table:
        text = render_table(frame) + "\n"
    elif fmt is ResultFormat.csv:
        text = _csv_ready(frame).to_csv(index=False)
    elif fmt is ResultFormat.json:
        records = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
        text = json.dumps(records, default=str, ensure_ascii=False) + "\n"
    else:
        text = None
    if output is None:
        sys.stdout.write(text)
        return
    try:
        if text is None:
            frame.to_parquet(output, index=False)
        else:
            output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise AnalystError(f"cannot write {output}: {e.strerror or e}") from e
    typer.echo(f"wrote {len(frame)} rows to {output}", err=True)


# ---------------------------------------------------------------------------------------------
# time bounds


def parse_when(text: str, *, now: datetime, option: str) -> datetime:
    """'2026-11-20', '2026-11-20T09:30Z', 'now', 'today', 'yesterday' or a duration ago ('7d')."""
    from flows.config import parse_duration

    value = text.strip()
    lowered = value.lower()
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    if lowered == "now":
        return now
    if lowered == "today":
        return midnight
    if lowered == "yesterday":
        return midnight - timedelta(days=1)
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"not a date, time or duration: {text!r} "
            "(use e.g. 2026-11-20, 2026-11-20T09:30Z, today, yesterday or 7d for 7 days ago)",
            param_hint=option,
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _bounds(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    now = datetime.now(UTC)
    start = parse_when(since, now=now, option="--since") if since else None
    end = parse_when(until, now=now, option="--until") if until else None
    if start is not None and end is not None and start >= end:
        raise typer.BadParameter(
            f"--since {start.isoformat()} is not before --until {end.isoformat()}",
            param_hint="--since/--until",
        )
    return start, end


def _sources(db: Path | None) -> tuple[Path, Path | None]:
    """The database and its replica: --db with the replica beside it, else the settings'."""
    if db is not None:
        return db, None
    from pydantic import ValidationError

    from flows.config import Settings

    try:
        settings = Settings()
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise AnalystError(f"invalid setting {where}: {first['msg']}") from e
    return settings.db, settings.analyst_replica


# ---------------------------------------------------------------------------------------------
# commands (registered on the app in flows/cli.py)


DbOption = Annotated[
    Path | None,
    typer.Option(help="DuckDB file (default: YUQING_DB); its analysts' replica is read."),
]


def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    since: Annotated[
        str | None,
        typer.Option(help="First publication time: 2026-11-20, 2026-11-20T09:30Z, today, 7d."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Publication time to stop before (default: no limit).")
    ] = None,
    output_format: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="parquet or csv (default: from the --output suffix)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write scored news published in [since, until) as Parquet or CSV for other tools."""
    if output_format is None:
        suffix = output.suffix.lower().lstrip(".")
        if suffix not in {f.value for f in ExportFormat}:
            raise typer.BadParameter(
                f"cannot tell the format from {output.name!r}: give --format parquet or csv",
                param_hint="--format",
            )
        output_format = ExportFormat(suffix)
    start, end = _bounds(since, until)
    if not output.parent.is_dir():
        raise AnalystError(f"cannot write {output}: no folder {output.parent}")
    from storage.export import export_scored_news

    path, replica = _sources(db)
    rows = export_scored_news(
        path, replica=replica, output=output, fmt=output_format.value, since=start, until=end
    )
    typer.echo(f"wrote {rows} scored news items to {output} ({output_format.value})")


def dashboard(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="HTML file to write (self-contained).")
    ] = Path("yuqing-dashboard.html"),
    since: Annotated[
        str, typer.Option(help="Start of the period shown: 2026-11-20, today, 7d (7 days ago).")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(help="End of the period shown (default: now).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the dashboard: one self-contained HTML file (charts, alerts, headlines, filters)."""
    start, end = _bounds(since, until)
    if not output.parent.is_dir():
        raise AnalystError(f"cannot write {output}: no folder {output.parent}")
    from flows.dashboard import build_dashboard

    path, replica = _sources(db)
    info = build_dashboard(path, replica=replica, output=output, since=start, until=end)
    typer.echo(
        f"dashboard written to {output} ({info['items']} items, {info['topics']} topics, "
        f"{info['alerts']} alerts, data as of {info['as_of'] or 'never'})"
    )
