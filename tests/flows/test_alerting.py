"""Noise controls one by one (pure), then detection over a real DuckDB file and the alert lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.alerting import (
    KeyControl,
    Mute,
    NoiseControls,
    batches,
    count_key,
    decide,
    parse_key,
    route,
    top_terms,
)
from flows.detector import Score

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = count_key(topic="Energy | Oil", sentiment="negative")


def opened(observed=12.0, score=6.0) -> Score:
    return Score(observed, 1.0, 1.0, score, True, True, False, True)


DEFAULTS = NoiseControls()


def decision(controls=DEFAULTS, control=None, at=NOW - timedelta(minutes=10), score=None):
    return decide(
        key=KEY,
        score=score or opened(),
        window_start=at,
        control=control or KeyControl(),
        controls=controls,
        now=NOW,
    )


def test_keys_round_trip_topics_with_separators():
    assert parse_key(KEY) == {
        "kind": "count",
        "topic": "Energy | Oil",
        "ticker": None,
        "sentiment": "negative",
    }
    assert parse_key(count_key(ticker="AAPL", sentiment="negative"))["ticker"] == "AAPL"


def test_an_opening_episode_raises_and_notifies():
    assert decision() == decision().__class__(True, True, "")


def test_hysteresis_only_windows_that_open_an_episode_raise():
    still_open = Score(12.0, 1.0, 1.0, 3.0, True, False, False, True)
    assert not decision(score=still_open).raise_alert


def test_minimum_volume():
    held = decision(NoiseControls(min_count=5), score=opened(observed=4))
    assert not held.raise_alert and held.reason.startswith("minimum volume")
    assert decision(NoiseControls(min_count=5), score=opened(observed=5)).raise_alert


def test_minimum_volume_raises_once_the_episode_reaches_it():
    still_open = Score(7.0, 1.0, 1.0, 4.5, True, False, False, True)
    waiting = KeyControl(awaiting_volume=True)
    assert decision(NoiseControls(min_count=5), waiting, score=still_open).raise_alert
    assert not decision(NoiseControls(min_count=5), KeyControl(), score=still_open).raise_alert
    thin = Score(3.0, 1.0, 1.0, 4.5, True, False, False, True)
    assert decision(NoiseControls(min_count=5), waiting, score=thin).reason.startswith("minimum")
    assert KeyControl.from_state(waiting.state()) == waiting


def test_per_key_cooldown():
    recent = KeyControl(last_alert_t=(NOW - timedelta(minutes=40)).timestamp())
    assert decision(NoiseControls(cooldown=timedelta(hours=1)), recent, at=NOW).reason == "cooldown"
    assert decision(NoiseControls(cooldown=timedelta(minutes=30)), recent, at=NOW).raise_alert


def test_mute_windows_record_but_do_not_notify():
    absolute = Mute(
        "topic=Energy | Oil", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1)
    )
    daily = Mute("topic=Energy | Oil;sentiment=negative", daily=(time(11, 0), time(12, 0)))
    other = Mute("topic=Earnings", start=NOW - timedelta(hours=1))
    for mute in (absolute, daily):
        d = decision(NoiseControls(mutes=(mute,)), at=NOW - timedelta(minutes=30))
        assert d.raise_alert and not d.notify and d.reason == "muted"
    assert decision(NoiseControls(mutes=(other,))).notify
    assert decision(NoiseControls(mutes=(daily,)), at=NOW + timedelta(hours=2)).notify


def test_replays_and_backfills_never_notify():
    old = decision(NoiseControls(max_notify_age=timedelta(hours=6)), at=NOW - timedelta(hours=7))
    assert old.raise_alert and not old.notify and old.reason.startswith("backfill")
    off = decision(NoiseControls(notify=False))
    assert off.raise_alert and not off.notify


def test_severity_floor_per_channel():
    alerts = [{"alert_id": s, "severity": s} for s in ("medium", "high", "critical")]
    assert [a["alert_id"] for a in route(alerts, "high")] == ["high", "critical"]
    assert len(route(alerts, "medium")) == 3


def test_digest_when_many_fire_together():
    alerts = [{"alert_id": str(i)} for i in range(5)]
    assert batches(alerts, 4) == [alerts]
    assert batches(alerts[:3], 4) == [[a] for a in alerts[:3]]


def test_top_terms_prefer_words_unusual_for_the_key():
    window = ["OPEC cuts output, crude slumps", "crude slumps on OPEC cut", "crude prices slump"]
    background = ["prices steady", "prices rise", "prices fall", "prices mixed"] * 5
    terms = top_terms(window, background)
    assert terms[0] == "crude" and "prices" not in terms[:2]


# -- over a real DuckDB file ------------------------------------------------------------------


def news_frame(rows):
    frame = pd.DataFrame(
        rows, columns=["id", "text", "published_at", "sentiment", "topic", "tickers"]
    )
    return frame.assign(
        source="wire",
        title=None,
        url=None,
        lang="en",
        sentiment_score=0.9,
        topic_score=0.9,
        model_version="m",
        kafka_topic="t",
        kafka_partition=0,
        kafka_offset=range(len(frame)),
    )


def store(con, frame):
    from flows.stories import story_ids
    from storage.writer import store_batch

    frame = frame.assign(story_id=story_ids(frame["text"].tolist()))
    store_batch(
        con,
        scored=frame,
        dead_letters=pd.DataFrame(columns=["topic", "partition", "offset", "raw", "error"]),
        consumer="c",
        topic="t",
        next_offsets={0: len(frame)},
        run_id="r",
    )


def history(end: datetime, copies: int = 1):
    """Six hours of sparse news, then 12 distinct negative oil stories (each in `copies` copies)."""
    start = end - timedelta(hours=6)
    rows = []
    for i in range(72):
        s = ["neutral", "positive", "negative"][i % 3] if i % 9 else "neutral"
        rows.append(
            (
                f"bg{i}",
                f"{['fed', 'earnings', 'oil'][i % 3]} {s} note {i}",
                start + timedelta(minutes=5 * i),
                s,
                ["Fed", "Earnings", "Energy | Oil"][i % 3],
                None,
            )
        )
    surge = end - timedelta(minutes=30)
    for i in range(12):
        for c in range(copies):
            text = f"Refinery fire number {i} sends crude sharply lower in {['Texas', 'Ohio', 'Utah', 'Iowa'][i % 4]} district {i * 7}"
            rows.append(
                (
                    f"s{i}-{c}",
                    f"RT @desk{c}: {text} https://t.co/{c}x" if c else text,
                    surge + timedelta(seconds=10 * i + c),
                    "negative",
                    "Energy | Oil",
                    ["XOM"],
                )
            )
    return news_frame(rows)


@pytest.fixture
def con(tmp_path):
    from storage.db import connect

    connection = connect(tmp_path / "yuqing.duckdb")
    yield connection
    connection.close()


def settings(**alerts):
    from flows.config import Settings

    return Settings(_env_file=None, alerts=alerts)


def test_detection_counts_stories_not_copies_and_raises_an_explained_alert(con, tiny_model_dir):
    from flows.alerting import detect_alerts
    from nlp.inference import Classifier

    end = NOW.replace(second=0)
    store(con, history(end, copies=3))
    result = detect_alerts(
        con, settings=settings(), run_id="r", classifier=Classifier.load(tiny_model_dir), now=end
    )
    raised = result.raised
    count = raised[(raised["kind"] == "count") & raised["ticker"].isna()]
    assert list(count["topic"]) == ["Energy | Oil"]
    alert = count.iloc[0]
    assert alert["observed"] <= 12  # 36 copies, 12 stories
    import json

    explanation = json.loads(alert["explanation"])
    assert (
        len({h["story_id"] for h in explanation["headlines"]}) == len(explanation["headlines"]) == 3
    )
    assert all(h["copies"] >= 3 for h in explanation["headlines"]), explanation["headlines"]
    assert "crude" in explanation["top_terms"] and explanation["top_tickers"] == ["XOM"]
    assert explanation["sentiment_drivers"]["tokens"]
    assert explanation["expected"] < 2 and alert["notify"]
    states = dict(con.execute("SELECT key, state FROM detector_state").fetchall())
    assert KEY in states
    # A second pass sees no new windows and raises nothing again.
    again = detect_alerts(con, settings=settings(), run_id="r2", now=end)
    assert again.raised.empty and again.windows == 0


def test_replayed_history_is_recorded_without_notifying(con):
    from flows.alerting import detect_alerts

    end = NOW - timedelta(days=3)
    store(con, history(end))
    raised = detect_alerts(con, settings=settings(), run_id="r", now=NOW).raised
    assert len(raised) >= 1 and not raised["notify"].any()
    from storage.alerts import pending_alerts

    assert pending_alerts(con).empty


def test_alert_lifecycle_through_the_cli(tmp_path, monkeypatch):
    from flows.alerting import detect_alerts
    from flows.cli import app
    from storage.db import connect

    db = tmp_path / "y.duckdb"
    con = connect(db)
    store(con, history(NOW))
    # A close level no score falls below keeps the episode, and so the alert, open.
    detect_alerts(con, settings=settings(close_level=-40), run_id="r", now=NOW)
    (alert_id,) = con.execute(
        "SELECT alert_id FROM alerts WHERE status = 'open' LIMIT 1"
    ).fetchall()[0]
    con.close()
    runner = CliRunner()
    listed = runner.invoke(app, ["alerts", "list", "--db", str(db)])
    assert listed.exit_code == 0 and alert_id[:12] in listed.output
    ack = runner.invoke(app, ["alerts", "ack", alert_id[:8], "--by", "ana", "--db", str(db)])
    assert ack.exit_code == 0 and "acknowledged by ana" in ack.output
    done = runner.invoke(app, ["alerts", "resolve", alert_id, "--by", "bo", "--db", str(db)])
    assert done.exit_code == 0 and "resolved by bo" in done.output
    late = runner.invoke(app, ["alerts", "ack", alert_id[:8], "--db", str(db)])
    assert late.exit_code != 0 and "only open alerts" in str(late.exception)
    resolved = runner.invoke(
        app, ["alerts", "list", "--status", "resolved", "--json", "--db", str(db)]
    )
    import json

    row = json.loads(resolved.output.splitlines()[0])
    assert (row["status"], row["acknowledged_by"], row["resolved_by"]) == ("resolved", "ana", "bo")
    missing = runner.invoke(app, ["alerts", "resolve", "ffffffff", "--db", str(db)])
    assert missing.exit_code != 0
