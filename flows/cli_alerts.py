"""``yuqing alerts list|ack|resolve`` and ``yuqing detect`` (the detector on a CSV series)."""

from __future__ import annotations

import getpass
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

alerts_app = typer.Typer(
    name="alerts",
    help="List, acknowledge and resolve alerts (status: open → acknowledged → resolved).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class AlertsError(Exception):
    """A failure to report as one line (registered in cli.py's known errors)."""


class Status(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


def _db(db: Path | None) -> Path:
    from flows.cli import _settings

    return db or _settings().db


def _connect(db: Path | None):
    from storage.db import connect

    return connect(_db(db), lock_timeout_s=10)


DbOption = Annotated[Path | None, typer.Option(help="DuckDB file (default: YUQING_DB).")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who does it (default: your user).")]


@alerts_app.command("list")
def list_command(
    status: Annotated[Status | None, typer.Option(help="Only alerts with this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most alerts to show.")] = 50,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the newest alerts first."""
    from storage.alerts import list_alerts
    from storage.db import connect

    path = _db(db)
    if not path.exists():
        raise AlertsError(f"no yuqing database at {path}: run 'yuqing run' first")
    con = connect(path, read_only=True)
    try:
        frame = list_alerts(con, status=status.value if status else None, limit=limit)
    finally:
        con.close()
    if as_json:
        for row in frame.to_dict("records"):
            typer.echo(json.dumps(row, default=str))
        return
    if frame.empty:
        typer.echo("no alerts" + (f" with status {status.value}" if status else ""))
        return
    for a in frame.itertuples():
        subject = f"${a.ticker}" if isinstance(a.ticker, str) else a.topic
        typer.echo(
            f"{a.alert_id[:12]}  {a.status:<12} {a.severity:<8} {a.kind:<5} {subject} "
            f"{a.sentiment}  {a.window_start:%Y-%m-%d %H:%M} UTC  {a.observed} vs "
            f"{a.expected:.1f} (score {a.score:.1f})" + ("" if a.notify else "  [not notified]")
        )


def _change(alert_ids: list[str], db: Path | None, by: str | None, action: str) -> None:
    from storage import alerts as store

    who = by or getpass.getuser()
    con = _connect(db)
    try:
        for given in alert_ids:
            try:
                alert_id = store.resolve_id(con, given)
            except store.AlertNotFound as e:
                raise AlertsError(str(e)) from None
            if action == "ack":
                status = store.acknowledge(con, alert_id, by=who)
                if status != "acknowledged":
                    raise AlertsError(
                        f"alert {alert_id[:12]} is {status}; only open alerts can be acknowledged"
                    )
            else:
                status = store.resolve(con, alert_id, by=who)
            typer.echo(f"{alert_id[:12]} {status} by {who}")
    finally:
        con.close()


@alerts_app.command("ack")
def ack_command(
    alert_ids: Annotated[list[str], typer.Argument(help="Alert ids (or unique prefixes).")],
    by: ByOption = None,
    db: DbOption = None,
) -> None:
    """Acknowledge open alerts: someone is on it."""
    _change(alert_ids, db, by, "ack")


@alerts_app.command("resolve")
def resolve_command(
    alert_ids: Annotated[list[str], typer.Argument(help="Alert ids (or unique prefixes).")],
    by: ByOption = None,
    db: DbOption = None,
) -> None:
    """Resolve alerts (open or acknowledged)."""
    _change(alert_ids, db, by, "resolve")


def detect_command(
    input_csv: Annotated[Path, typer.Option("--input", help="CSV with timestamp,value columns.")],
    output_csv: Annotated[
        Path, typer.Option("--output", help="Where to write timestamp,value,anomaly_score,alert.")
    ],
    open_level: Annotated[
        float, typer.Option(help="Score (z) at which an alert opens.", min=0.1)
    ] = 3.65,
    close_level: Annotated[float, typer.Option(help="Score below which it closes.")] = 2.0,
) -> None:
    """Backtest the spike detector on a series: each row is scored from the rows before it."""
    from dataclasses import replace

    from flows.detector import (
        DetectorConfig,
        SeriesFileError,
        detect_file,
        infer_window,
        read_series_csv,
    )

    try:
        window = infer_window(read_series_csv(input_csv)["time"])
        config = replace(
            DetectorConfig(window=window), open_level=open_level, close_level=close_level
        )
        out = detect_file(input_csv, output_csv, config)
    except SeriesFileError as e:
        raise AlertsError(str(e)) from None
    missing = int(out["value"].isna().sum())
    typer.echo(
        f"scored {len(out) - missing} rows ({window} windows) into {output_csv}: "
        f"{int(out['alert'].sum())} alerting rows"
        + (f"; {missing} rows without a value left unscored" if missing else "")
    )
