"""``yuqing dashboard``: one self-contained HTML file with Plotly charts and client-side filters.

Why a file and not a served page: it opens offline from a mail attachment or a shared drive,
needs no process to keep alive and no port to open on a production host, and it is a snapshot
that says which data it shows ("as of" the last committed run). Plotly's JavaScript is inlined,
so the file needs no network at all. Re-run the command (or schedule it after each run) for
fresh numbers.

The data behind it comes from the analysts' read-only replica through
``storage.queries.open_analyst`` (one connection, one committed state): hourly sentiment counts per topic (and per ticker, so the
ticker filter can recompute the charts in the browser), the alerts of the period with their
explanations, and the most confident negative headlines.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pandas as pd

from storage.db import translate_errors
from storage.queries import open_analyst

TEMPLATE = "dashboard.html"
MAX_HEADLINES = 3000  # most confident negative items embedded; the page shows the top of the filter
MAX_ALERTS = 500


def _literal(value: datetime | None, default: str) -> str:
    return f"TIMESTAMPTZ '{value.isoformat()}'" if value is not None else default


def _iso(value) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).tz_convert(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _explanation(text) -> object:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return str(text)


def dashboard_data(
    db: str | Path,
    *,
    since: datetime | None,
    until: datetime | None,
    replica: str | Path | None = None,
) -> dict:
    """Everything the page shows, as plain JSON-ready structures (one consistent snapshot)."""
    con = open_analyst(db, replica=replica)
    try:
        with translate_errors("reading the dashboard data"):
            return _collect(con, since=since, until=until)
    finally:
        con.close()


def _collect(con, *, since: datetime | None, until: datetime | None) -> dict:
    start, end = (
        _literal(since, "TIMESTAMPTZ '-infinity'"),
        _literal(until, "TIMESTAMPTZ 'infinity'"),
    )
    cube = con.execute(
        f"""
        SELECT hour, topic, '' AS ticker, negative, neutral, positive
        FROM sentiment_by_topic_hourly
        WHERE hour >= time_bucket(INTERVAL '1 hour', {start}) AND hour < {end}
        UNION ALL
        SELECT time_bucket(INTERVAL '1 hour', published_at) AS hour, topic, ticker,
               count(*) FILTER (sentiment = 'negative') AS negative,
               count(*) FILTER (sentiment = 'neutral') AS neutral,
               count(*) FILTER (sentiment = 'positive') AS positive
        FROM (SELECT published_at, topic, sentiment, unnest(tickers) AS ticker FROM news
              WHERE tickers IS NOT NULL)
        WHERE published_at >= time_bucket(INTERVAL '1 hour', {start}) AND published_at < {end}
        GROUP BY ALL
        ORDER BY hour, topic, ticker
        """
    ).df()
    alerts = con.execute(
        f"""
        SELECT alert_id, status, severity, kind, topic, ticker, sentiment, window_start,
               window_end, observed, expected, score, headlines, top_terms, top_tickers,
               CAST(explanation AS VARCHAR) AS explanation, created_at, acknowledged_by,
               resolved_by
        FROM alerts
        WHERE window_end > {start} AND window_start < {end}
        ORDER BY window_start DESC, topic
        LIMIT {MAX_ALERTS}
        """
    ).df()
    headlines = con.execute(
        f"""
        SELECT published_at, topic, tickers, coalesce(title, text) AS headline, source, url,
               sentiment_score
        FROM news
        WHERE sentiment = 'negative' AND published_at >= {start} AND published_at < {end}
        ORDER BY sentiment_score DESC, published_at DESC
        LIMIT {MAX_HEADLINES}
        """
    ).df()
    freshness = (
        con.execute(
            """
        SELECT (SELECT max(ingested_at) FROM news) AS last_ingested,
               (SELECT max(finished_at) FROM runs WHERE status = 'completed') AS last_run,
               (SELECT count(*) FROM news) AS total_items
        """
        )
        .df()
        .iloc[0]
    )
    return {
        "generated_at": _iso(datetime.now(UTC)),
        "since": _iso(since),
        "until": _iso(until),
        # the replica holds every committed batch: as of the later of the last run's end and
        # the last stored batch (a run in progress publishes after each batch)
        "as_of": max(
            filter(None, [_iso(freshness["last_run"]), _iso(freshness["last_ingested"])]),
            default=None,
        ),
        "total_items": int(freshness["total_items"]),
        "cube": [
            [_iso(r.hour), r.topic, r.ticker, int(r.negative), int(r.neutral), int(r.positive)]
            for r in cube.itertuples(index=False)
        ],
        "alerts": [
            {
                **{k: _jsonable(v) for k, v in row.items() if k != "explanation"},
                "window_start": _iso(row["window_start"]),
                "window_end": _iso(row["window_end"]),
                "created_at": _iso(row["created_at"]),
                "explanation": _explanation(row["explanation"]),
            }
            for row in alerts.to_dict("records")
        ],
        "headlines": [
            {
                "published_at": _iso(row["published_at"]),
                "topic": row["topic"],
                "tickers": _jsonable(row["tickers"]) or [],
                "headline": row["headline"][:400],
                "source": row["source"],
                "url": row["url"],
                "confidence": round(float(row["sentiment_score"]), 4),
            }
            for row in headlines.to_dict("records")
        ],
    }


def _script_json(data: dict) -> str:
    """JSON safe inside <script>: no '</' can close the element early."""
    text = json.dumps(data, ensure_ascii=False, default=str, allow_nan=False)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_dashboard(data: dict) -> str:
    """The HTML page: the template with Plotly's JavaScript and the data inlined."""
    from plotly.offline import get_plotlyjs

    template = resources.files("flows").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return template.replace("/*__PLOTLY_JS__*/", get_plotlyjs()).replace(
        "__YUQING_DATA__", _script_json(data)
    )


def build_dashboard(
    db: str | Path,
    *,
    output: str | Path,
    since: datetime | None,
    until: datetime | None,
    replica: str | Path | None = None,
) -> dict:
    """Write the dashboard for [since, until) to ``output``; return what it holds."""
    data = dashboard_data(db, since=since, until=until, replica=replica)
    html = render_dashboard(data)
    output = Path(output)
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        staging.write_text(html, encoding="utf-8")
        os.replace(staging, output)
    finally:
        staging.unlink(missing_ok=True)
    all_rows = [row for row in data["cube"] if row[2] == ""]
    return {
        "items": sum(row[3] + row[4] + row[5] for row in all_rows),
        "topics": len({row[1] for row in all_rows}),
        "alerts": len(data["alerts"]),
        "headlines": len(data["headlines"]),
        "as_of": data["as_of"],
        "bytes": len(html.encode()),
    }
