"""A realistic yuqing database for the analysts' tests, written through the real write path.

Two weeks of hourly news over five topics up to the current hour (so "this week", "yesterday"
and "the last 24 hours" always hold rows), with tickers, two model versions, dead letters,
run rows, and three alerts: yesterday's critical Energy surge (open), a ticker alert three
days ago (acknowledged) and a Fed alert six days ago (resolved). Everything goes in through
``storage.writer.store_batch``, ``storage.alerts.insert_alerts``, ``storage.registry`` and
``storage.writer.record_run``, exactly as the pipeline writes it.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pandas as pd

TOPICS = {
    # topic: (items per hour, P(negative), P(positive), tickers, words)
    "Energy | Oil": (2, 0.30, 0.30, ["XOM", "CVX", "BP"], ["crude", "OPEC", "refinery", "Brent"]),
    "Fed | Central Banks": (2, 0.25, 0.25, [], ["Powell", "rate path", "ECB", "yields"]),
    "Earnings": (3, 0.25, 0.40, ["AAPL", "MSFT", "NVDA"], ["quarter", "EPS", "guidance"]),
    "M&A | Investments": (1, 0.20, 0.40, ["MSFT", "PFE"], ["deal", "takeover", "stake"]),
    "Stock Movement": (2, 0.35, 0.35, ["TSLA", "AAPL", "NVDA"], ["shares", "rally", "slide"]),
}
VERBS = {
    "negative": ["plunges on", "slumps after", "warns over", "hit by"],
    "neutral": ["reports", "schedules call on", "files update on", "comments on"],
    "positive": ["soars on", "beats estimates on", "upgraded after", "rallies on"],
}
OLD_MODEL = "all-MiniLM-L6-v2-0a1b2c3d4e"
NEW_MODEL = "all-MiniLM-L6-v2-5f6a7b8c9d"
SURGE_HEADLINES = [
    "OPEC+ talks collapse, crude plunges 8% in an hour",
    "Brent slumps as Saudi Arabia floods the market",
    "Refiners warn of margin crash as crude glut deepens",
    "Exxon and Chevron shares hit by oil price rout",
    "Oil producers face losses as prices crash below $60",
    "Shale drillers slump after OPEC output shock",
]


def yesterday_noon(now: datetime) -> datetime:
    return datetime.combine(now.date() - timedelta(days=1), time(12), tzinfo=UTC)


def news_rows(now: datetime, *, seed: int = 11) -> pd.DataFrame:
    """Two weeks of hourly items up to ``now``, plus yesterday's Energy surge at 12:00 UTC."""
    rng = random.Random(seed)
    end = now.replace(minute=0, second=0, microsecond=0)
    rows = []
    for hour in range(14 * 24, -1, -1):
        start = end - timedelta(hours=hour)
        for topic, (per_hour, p_neg, p_pos, tickers, words) in TOPICS.items():
            if hour < 7 * 24 and topic == "Stock Movement":
                p_neg, p_pos = 0.5, 0.2  # this week turned more negative
            for _ in range(per_hour):
                draw = rng.random()
                sentiment = (
                    "negative"
                    if draw < p_neg
                    else "positive"
                    if draw < p_neg + p_pos
                    else "neutral"
                )
                ticker = rng.choice(tickers) if tickers and rng.random() < 0.7 else None
                subject = ticker or rng.choice(words)
                rows.append(
                    {
                        "published_at": start + timedelta(seconds=rng.randrange(3600)),
                        "topic": topic,
                        "sentiment": sentiment,
                        "title": f"{subject} {rng.choice(VERBS[sentiment])} {rng.choice(words)}",
                        "tickers": [ticker] if ticker else None,
                        "source": rng.choice(["wire", "feed", "social"]),
                    }
                )
    surge_start = yesterday_noon(now)
    for i in range(24):
        rows.append(
            {
                "published_at": surge_start + timedelta(seconds=45 * i),
                "topic": "Energy | Oil",
                "sentiment": "negative",
                "title": SURGE_HEADLINES[i % len(SURGE_HEADLINES)] + f" (update {i})",
                "tickers": ["XOM", "CVX"] if i % 2 else ["XOM"],
                "source": "energy-desk",
            }
        )
    for days, topic, tickers, count, title in (
        (3, "Earnings", ["AAPL"], 3, "AAPL warns over guidance"),
        (6, "Fed | Central Banks", None, 2, "Powell warns over rate path"),
    ):  # the items behind the two older alerts (see alert_rows)
        window = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
        rows += [
            {
                "published_at": window + timedelta(minutes=10 * (i + 1)),
                "topic": topic,
                "sentiment": "negative",
                "title": f"{title} ({i + 1})",
                "tickers": tickers,
                "source": "wire",
            }
            for i in range(count)
        ]
    rows.append(  # markup in a headline must show as text, never run as HTML or script
        {
            "published_at": surge_start + timedelta(minutes=30),
            "topic": "Energy | Oil",
            "sentiment": "negative",
            "title": "Crude <b>crash</b> </script><script>window.pwned=1</script> & more",
            "tickers": ["BP"],
            "source": "social",
        }
    )
    frame = pd.DataFrame(rows).sort_values("published_at", ignore_index=True)
    frame = frame[frame["published_at"] <= now].reset_index(drop=True)
    n = len(frame)
    frame["id"] = [f"fx-{i:06d}" for i in range(n)]
    frame["text"] = frame["title"] + ". More in the full story."
    frame["url"] = [f"https://news.example/{i}" for i in range(n)]
    frame["lang"] = "en"
    frame["sentiment_score"] = [round(rng.uniform(0.45, 0.99), 3) for _ in range(n)]
    frame["topic_score"] = [round(rng.uniform(0.5, 0.99), 3) for _ in range(n)]
    frame.loc[frame["title"].str.contains("<b>", regex=False), "sentiment_score"] = 0.999
    frame["model_version"] = [
        OLD_MODEL if t < now - timedelta(days=10) else NEW_MODEL for t in frame["published_at"]
    ]
    frame["kafka_topic"] = "news"
    frame["kafka_partition"] = [i % 3 for i in range(n)]
    frame["kafka_offset"] = [i // 3 for i in range(n)]
    return frame


def alert_rows(now: datetime) -> pd.DataFrame:
    surge = yesterday_noon(now)
    three_days = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    six_days = (now - timedelta(days=6)).replace(minute=0, second=0, microsecond=0)
    rows = [
        {
            "kind": "count",
            "topic": "Energy | Oil",
            "sentiment": "negative",
            "ticker": None,
            "window_start": surge,
            "window_end": surge + timedelta(minutes=20),
            "observed": 24,
            "expected": 1.4,
            "score": 14.2,
            "severity": "critical",
            "headlines": SURGE_HEADLINES[:3],
            "top_terms": ["crude", "opec", "plunges", "glut"],
            "top_tickers": ["XOM", "CVX"],
            "explanation": json.dumps(
                {
                    "summary": "24 negative Energy | Oil items in 20 minutes against 1.4 expected",
                    "baseline": 1.4,
                    "z": 14.2,
                }
            ),
            "status": "open",
        },
        {
            "kind": "count",
            "topic": "Earnings",
            "sentiment": "negative",
            "ticker": "AAPL",
            "window_start": three_days,
            "window_end": three_days + timedelta(hours=1),
            "observed": 3,
            "expected": 0.4,
            "score": 6.1,
            "severity": "medium",
            "headlines": ["AAPL warns over guidance"],
            "top_terms": ["guidance", "warns"],
            "top_tickers": ["AAPL"],
            "explanation": json.dumps({"summary": "AAPL negative items well above baseline"}),
            "status": "acknowledged",
            "acknowledged_at": three_days + timedelta(hours=2),
            "acknowledged_by": "risk-desk",
        },
        {
            "kind": "share",
            "topic": "Fed | Central Banks",
            "sentiment": "negative",
            "ticker": None,
            "window_start": six_days,
            "window_end": six_days + timedelta(hours=1),
            "observed": 2,
            "expected": 0.5,
            "score": 9.3,
            "severity": "high",
            "headlines": ["Powell warns over rate path"],
            "top_terms": ["powell", "rates"],
            "top_tickers": [],
            "explanation": json.dumps({"summary": "negative share of Fed news jumped"}),
            "status": "resolved",
            "resolved_at": six_days + timedelta(hours=5),
            "resolved_by": "risk-desk",
        },
    ]
    frame = pd.DataFrame(rows)
    frame["run_id"] = "fixture-run-2"
    frame["notify"] = True
    return frame


def build_analyst_db(path: Path, *, now: datetime | None = None) -> Path:
    """Fill a new yuqing database at ``path`` and publish its analysts' replica."""
    from storage.alerts import insert_alerts
    from storage.db import connect
    from storage.registry import register_model
    from storage.replica import publish_replica
    from storage.writer import record_run, store_batch

    now = now or datetime.now(UTC)
    news = news_rows(now)
    con = connect(path)
    try:
        register_model(
            con,
            model_version=OLD_MODEL,
            base_model="sentence-transformers/all-MiniLM-L6-v2",
            trained_at=now - timedelta(days=30),
            metrics={"sentiment": {"macro_f1": 0.81}, "topic": {"macro_f1": 0.77}},
        )
        register_model(
            con,
            model_version=NEW_MODEL,
            base_model="sentence-transformers/all-MiniLM-L6-v2",
            trained_at=(now - timedelta(days=11)).isoformat(),
            metrics={"sentiment": {"macro_f1": 0.86}, "topic": {"macro_f1": 0.83}},
        )
        half = len(news) // 2
        for run, (part, dead) in enumerate(
            [
                (news.iloc[:half], []),
                (
                    news.iloc[half:],
                    [(b"not json", "not JSON: Expecting value"), (b"{}", "missing id")],
                ),
            ],
            start=1,
        ):
            dead_frame = pd.DataFrame(
                [
                    ("news", 0, 10_000 + run * 10 + i, raw, error)
                    for i, (raw, error) in enumerate(dead)
                ],
                columns=["topic", "partition", "offset", "raw", "error"],
            )
            offsets = part.groupby("kafka_partition")["kafka_offset"].max() + 1
            stored = store_batch(
                con,
                scored=part,
                dead_letters=dead_frame,
                consumer="yuqing",
                topic="news",
                next_offsets={int(p): int(o) for p, o in offsets.items()},
                run_id=f"fixture-run-{run}",
            )
            started = now - timedelta(minutes=30 - 10 * run)
            record_run(
                con,
                {
                    "run_id": f"fixture-run-{run}",
                    "started_at": started,
                    "finished_at": started + timedelta(seconds=42),
                    "status": "completed",
                    "messages_read": len(part) + len(dead),
                    "scored": stored.inserted,
                    "duplicates": stored.duplicates,
                    "dead_lettered": stored.dead_lettered,
                    "alerts_raised": 3 if run == 2 else 0,
                    "alerts_notified": 3 if run == 2 else 0,
                    "model_version": NEW_MODEL,
                    "error": None,
                },
            )
        insert_alerts(con, alert_rows(now))
        publish_replica(con, path)
    finally:
        con.close()
    return path
