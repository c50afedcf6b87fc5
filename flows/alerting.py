"""From detector scores to alerts: keys, noise controls and explanations.

The noise controls are pure and each one is a small function or field here:

* hysteresis: the detector opens an episode at ``open_level`` and closes it below
  ``close_level``; an alert is raised when an episode opens and resolved when it closes;
* minimum volume: an episode raises nothing while its window holds fewer than ``min_count``
  stories; it raises at the first window of the episode that reaches it (the scan statistic
  can open an episode on the first, still thin, window of a surge);
* per-key cooldown: a key that alerted less than ``cooldown`` ago raises nothing;
* mute windows per key: the alert is recorded with notify=false (reason "muted");
* replays and backfills: alerts on windows older than ``max_notify_age``, or any alert while
  ``notify`` is off, are recorded with notify=false and never notified;
* a severity floor per channel and one digest when many alerts go out together
  (``route`` and ``batches``, used by flows/notify.py).

``detect_alerts`` wires them to DuckDB (storage/alerts.py) and the model's explain function.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

import pandas as pd

from flows.detector import (
    SEVERITY_RANK,
    DetectorConfig,
    Score,
    SeriesDetector,
    ShareDetector,
)

logger = logging.getLogger(__name__)

# -- keys -----------------------------------------------------------------------------------


def _value(text: str) -> str:
    return str(text).replace(";", ",")


def count_key(*, sentiment: str, topic: str | None = None, ticker: str | None = None) -> str:
    """``count;topic=Energy | Oil;sentiment=negative`` or ``count;ticker=AAPL;sentiment=...``."""
    field_name, value = ("ticker", ticker) if ticker else ("topic", topic)
    return f"count;{field_name}={_value(value)};sentiment={_value(sentiment)}"


def share_key(*, topic: str, sentiment: str) -> str:
    return f"share;topic={_value(topic)};sentiment={_value(sentiment)}"


def parse_key(key: str) -> dict:
    kind, *parts = key.split(";")
    fields = dict(p.split("=", 1) for p in parts)
    return {
        "kind": kind,
        "topic": fields.get("topic"),
        "ticker": fields.get("ticker"),
        "sentiment": fields["sentiment"],
    }


# -- noise controls ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mute:
    key: str
    start: datetime | None = None
    end: datetime | None = None
    daily: tuple[time, time] | None = None

    def matches(self, key: str) -> bool:
        """``key`` is "field=value" pairs joined by ";" (e.g. "topic=Earnings;sentiment=negative");
        every pair must equal the alert key's field."""
        fields = parse_key(key) if key.count(";") >= 2 else {}
        wanted = dict(p.split("=", 1) for p in self.key.split(";") if "=" in p)
        return bool(wanted) and all(fields.get(k) == v.strip() for k, v in wanted.items())

    def covers(self, key: str, at: datetime) -> bool:
        if not self.matches(key):
            return False
        if self.daily is not None:
            start, end = self.daily
            now = at.astimezone(UTC).time()
            in_daily = start <= now < end if start <= end else (now >= start or now < end)
            if not in_daily:
                return False
        if self.start is not None and at < self.start:
            return False
        return not (self.end is not None and at >= self.end)


@dataclass(frozen=True)
class NoiseControls:
    min_count: int = 5
    cooldown: timedelta = timedelta(hours=1)
    max_notify_age: timedelta | None = timedelta(hours=6)
    notify: bool = True
    mutes: tuple[Mute, ...] = ()
    digest_min: int = 4


@dataclass
class KeyControl:
    """What the controls remember per key (saved beside the detector state)."""

    open_alert: str | None = None  # the alert of the current episode, resolved when it closes
    last_alert_t: float | None = None  # epoch seconds of the last alert's window
    awaiting_volume: bool = False  # the open episode was held back by the minimum volume

    def state(self) -> dict:
        return {
            "open_alert": self.open_alert,
            "last_alert_t": self.last_alert_t,
            "awaiting_volume": self.awaiting_volume,
        }

    @classmethod
    def from_state(cls, state: dict | None) -> KeyControl:
        state = state or {}
        return cls(
            state.get("open_alert"), state.get("last_alert_t"), bool(state.get("awaiting_volume"))
        )


@dataclass(frozen=True)
class Decision:
    raise_alert: bool
    notify: bool = False
    reason: str = ""  # why not raised, or why not notified


def decide(
    *,
    key: str,
    score: Score,
    window_start: datetime,
    control: KeyControl,
    controls: NoiseControls,
    now: datetime,
) -> Decision:
    """Whether an opening episode (or one held back by the minimum volume until now) raises an
    alert, and whether that alert is notified."""
    if not (score.opened or (control.awaiting_volume and score.alerting)):
        return Decision(False, reason="no episode opened")
    if score.observed < controls.min_count:
        return Decision(False, reason=f"minimum volume: {score.observed:g} < {controls.min_count}")
    t = window_start.timestamp()
    if (
        control.last_alert_t is not None
        and t - control.last_alert_t < controls.cooldown.total_seconds()
    ):
        return Decision(False, reason="cooldown")
    if not controls.notify:
        return Decision(True, False, "notifications off (replay or backfill)")
    if controls.max_notify_age is not None and now - window_start > controls.max_notify_age:
        return Decision(True, False, "backfill: window older than max_notify_age")
    if any(m.covers(key, window_start) for m in controls.mutes):
        return Decision(True, False, "muted")
    return Decision(True, True, "")


def route(alerts: Sequence[dict], min_severity: str) -> list[dict]:
    """The alerts a channel with this severity floor receives."""
    floor = SEVERITY_RANK[min_severity]
    return [a for a in alerts if SEVERITY_RANK.get(str(a["severity"]), 0) >= floor]


def batches(alerts: list[dict], digest_min: int) -> list[list[dict]]:
    """One message per alert, or a single digest when ``digest_min`` or more go out together."""
    if len(alerts) >= digest_min:
        return [alerts]
    return [[a] for a in alerts]


def controls_from_settings(settings) -> NoiseControls:
    from flows.config import parse_duration

    a = settings.alerts
    mutes = []
    for m in a.mute:
        daily = None
        if m.daily:
            start, end = (time.fromisoformat(p) for p in m.daily.split("-"))
            daily = (start, end)
        mutes.append(Mute(m.key, _utc(m.start), _utc(m.end), daily))
    return NoiseControls(
        min_count=settings.alert_min_count,
        cooldown=parse_duration(a.cooldown),
        max_notify_age=parse_duration(a.max_notify_age),
        notify=a.notify,
        mutes=tuple(mutes),
        digest_min=a.digest_min,
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- explanations -----------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]{2,}")
_URLISH = re.compile(r"https?://\S+|\bt\.co/\S+")
STOPWORDS = frozenset(
    """the and for with that this from are was were has have had its not but you your our they
    their them his her him she will would can could should may might been being about into over
    after before than then there here what when where which who whom why how all any each more
    most other some such only own same too very just also amp via says said new rt inc co ltd corp
    per one two out off up down now today week year years stock stocks shares""".split()
)


def top_terms(texts: Sequence[str], background: Sequence[str] = (), n: int = 5) -> list[str]:
    """Words frequent in ``texts`` and unusual against ``background`` (log-ratio weighted)."""
    here = Counter(_words(texts))
    base = Counter(_words(background))
    total_base = sum(base.values()) + 1
    total_here = sum(here.values()) + 1

    def weight(word: str) -> float:
        ratio = ((here[word] + 0.5) / total_here) / ((base[word] + 0.5) / total_base)
        return here[word] * math.log1p(ratio)

    ranked = sorted(
        (w for w, c in here.items() if c >= 2 or len(texts) < 4), key=lambda w: (-weight(w), w)
    )
    return ranked[:n]


def _words(texts: Sequence[str]):
    for text in texts:
        for word in _WORD.findall(_URLISH.sub(" ", str(text))):
            word = word.lower().strip("'-")
            if word not in STOPWORDS and len(word) > 2:
                yield word


def representative_headlines(items: pd.DataFrame, n: int) -> list[dict]:
    """One headline per story, most-copied and most confident first."""
    if items.empty:
        return []
    stories = (
        items.groupby("story")
        .agg(
            headline=("headline", "first"),
            copies=("headline", "size"),
            confidence=("sentiment_score", "max"),
        )
        .reset_index()
        .sort_values(["copies", "confidence", "headline"], ascending=[False, False, True])
    )
    return [
        {
            "story_id": r.story,
            "headline": str(r.headline)[:280],
            "copies": int(r.copies),
            "confidence": round(float(r.confidence), 4),
        }
        for r in stories.head(n).itertuples()
    ]


def top_tickers(items: pd.DataFrame, n: int = 5) -> list[str]:
    counts: Counter[str] = Counter()
    for tickers in items.get("tickers", pd.Series(dtype=object)):
        if isinstance(tickers, list | tuple) or hasattr(tickers, "tolist"):
            counts.update(set(list(tickers)))
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def sentiment_drivers(classifier, text: str, *, steps: int, n: int = 5) -> dict | None:
    """The words that drove the model's sentiment on ``text`` (integrated gradients)."""
    if classifier is None or not text:
        return None
    from nlp.explain import ExplainError, explain

    try:
        explanation = explain(classifier.model, text, task="sentiment", steps=steps)
    except ExplainError as e:
        logger.warning("could not explain a headline: %s", e)
        return None
    return {
        "headline": text[:280],
        "label": explanation.label,
        "probability": round(explanation.score, 4),
        "tokens": [
            {"word": word, "attribution": round(value, 4)} for word, value in explanation.top(n)
        ],
    }


# -- wiring: detect over the stored news --------------------------------------------------------


@dataclass
class DetectionResult:
    raised: pd.DataFrame  # alert rows inserted
    resolved: list[str] = field(default_factory=list)  # alert ids auto-resolved
    suppressed: Counter = field(default_factory=Counter)  # reason -> episodes held back
    keys: int = 0
    windows: int = 0


ALERT_FRAME_COLUMNS = [
    "kind",
    "topic",
    "sentiment",
    "ticker",
    "window_start",
    "window_end",
    "observed",
    "expected",
    "score",
    "severity",
    "headlines",
    "top_terms",
    "top_tickers",
    "explanation",
    "notify",
    "status",
    "run_id",
]


def detect_alerts(
    con, *, settings, run_id: str, classifier=None, now: datetime | None = None
) -> DetectionResult:
    """Advance every key's detector over the closed windows it has not seen; raise alerts."""
    import json

    from flows.config import parse_duration
    from storage import alerts as store

    now = now or datetime.now(UTC)
    a = settings.alerts
    window = settings.window_delta
    w = int(window.total_seconds())
    config = DetectorConfig(window=window, open_level=a.open_level, close_level=a.close_level)
    controls = controls_from_settings(settings)
    first, last = store.news_time_range(con)
    result = DetectionResult(raised=pd.DataFrame(columns=ALERT_FRAME_COLUMNS))
    if first is None:
        return result
    horizon = math.floor(last.timestamp() / w) * w  # windows before this one are closed
    earliest = max(
        math.floor(first.timestamp() / w) * w, horizon - parse_duration(a.catch_up).total_seconds()
    )
    states = store.load_detector_states(con)
    starts = [
        s["detector"]["last_t"] + w
        for s in states.values()
        if s.get("detector", {}).get("last_t") is not None
    ]
    since = max(earliest, min(starts)) if starts else earliest  # the oldest window not yet seen
    since_dt = datetime.fromtimestamp(since, UTC)
    horizon_dt = datetime.fromtimestamp(horizon, UTC)
    lookback = parse_duration(a.story_lookback)
    counts = store.story_counts(
        con, since=since_dt, until=horizon_dt, window=window, lookback=lookback
    )
    series: dict[str, dict[float, int]] = {}
    totals: dict[str, dict[float, int]] = {}
    for r in counts.itertuples(index=False):
        series.setdefault(count_key(topic=r.topic, sentiment=r.sentiment), {})[r.window_t] = int(
            r.stories
        )
        bucket = totals.setdefault(r.topic, {})
        bucket[r.window_t] = bucket.get(r.window_t, 0) + int(r.stories)
    if a.ticker_keys:
        by_ticker = store.story_counts(
            con, since=since_dt, until=horizon_dt, window=window, lookback=lookback, by_ticker=True
        )
        for r in by_ticker[by_ticker["sentiment"].isin(a.sentiments)].itertuples(index=False):
            series.setdefault(count_key(ticker=r.ticker, sentiment=r.sentiment), {})[r.window_t] = (
                int(r.stories)
            )
    keys = set(series) | {k for k in states if k.startswith("count;")}
    if a.share_alerts:
        keys |= {share_key(topic=t, sentiment=s) for t in totals for s in a.sentiments}
        keys |= {k for k in states if k.startswith("share;")}

    new_states: dict[str, dict] = {}
    rows: list[dict] = []
    for key in sorted(keys):
        parts = parse_key(key)
        saved = states.get(key, {})
        control = KeyControl.from_state(saved.get("control"))
        if parts["kind"] == "share":
            detector = ShareDetector.from_state(saved.get("detector"), config)
            part_series = series.get(
                count_key(topic=parts["topic"], sentiment=parts["sentiment"]), {}
            )
            total_series = totals.get(parts["topic"], {})
        else:
            detector = SeriesDetector.from_state(saved.get("detector"), config)
            part_series = series.get(key, {})
        if detector.last_t is not None:
            start = detector.last_t + w
        else:
            first_seen = min(part_series) if part_series else horizon
            start = max(since, first_seen - 86400)  # a new key: a day of zeros before it
        start = max(start, horizon - parse_duration(a.catch_up).total_seconds())
        t = start
        while t < horizon:
            value = part_series.get(t, 0)
            if parts["kind"] == "share":
                score = detector.update(t, value, total_series.get(t, 0))
            else:
                score = detector.update(t, value)
            result.windows += 1
            window_start = datetime.fromtimestamp(t, UTC)
            if score.closed and control.open_alert:
                result.resolved.append(control.open_alert)
                control.open_alert = None
            if not score.alerting:
                control.awaiting_volume = False
            elif parts["sentiment"] not in a.sentiments:
                pass  # tracked (its share and its baseline), but its surges do not alert
            elif score.opened or control.awaiting_volume:
                decision = decide(
                    key=key,
                    score=score,
                    window_start=window_start,
                    control=control,
                    controls=controls,
                    now=now,
                )
                held_for_volume = decision.reason.startswith("minimum volume")
                if not decision.raise_alert and (score.opened or not held_for_volume):
                    result.suppressed[decision.reason.split(":")[0]] += 1  # once per episode
                control.awaiting_volume = held_for_volume
                if decision.raise_alert:
                    rows.append(
                        {
                            "key": key,
                            **parts,
                            "window_start": window_start,
                            "window_end": window_start + window,
                            "observed": int(score.observed),
                            "expected": float(score.expected),
                            "score": float(score.score),
                            "severity": score.severity,
                            "notify": decision.notify,
                            "reason": decision.reason,
                            "total": total_series.get(t, 0) if parts["kind"] == "share" else None,
                        }
                    )
                    control.last_alert_t = t
                    control.open_alert = rows[-1]["token"] = f"pending:{len(rows)}"
            t += w
        new_states[key] = {"detector": detector.state(), "control": control.state()}
    result.keys = len(keys)

    frame = pd.DataFrame(
        [
            _explained(con, row, classifier=classifier, settings=settings, run_id=run_id)
            for row in rows
        ],
        columns=[*ALERT_FRAME_COLUMNS, "key"],
    )
    real_ids = dict(zip([row["token"] for row in rows], _ids_for(frame), strict=True))
    if not frame.empty:
        frame["explanation"] = frame["explanation"].map(json.dumps)
        result.raised = store.insert_alerts(con, frame.drop(columns=["key"]))
    for saved in new_states.values():  # placeholders become the inserted alerts' ids
        token = saved["control"]["open_alert"]
        saved["control"]["open_alert"] = real_ids.get(token, token)
    result.resolved = [real_ids.get(token, token) for token in result.resolved]
    for alert_id in result.resolved:
        store.resolve(con, alert_id, by="yuqing: score fell below close_level")
    store.save_detector_states(con, new_states)
    return result


def _ids_for(frame: pd.DataFrame) -> list[str]:
    from storage.alerts import alert_key

    return [
        alert_key(
            topic=r.topic,
            sentiment=r.sentiment,
            window_start=r.window_start,
            window_end=r.window_end,
            kind=r.kind,
            ticker=r.ticker if isinstance(r.ticker, str) else None,
        )
        for r in frame.itertuples()
    ]


def _explained(con, row: dict, *, classifier, settings, run_id: str) -> dict:
    """The alert row with its explanation: headlines, terms, tickers, sentiment drivers."""
    from storage import alerts as store

    a = settings.alerts
    items = store.window_items(
        con,
        start=row["window_start"],
        end=row["window_end"],
        sentiment=row["sentiment"],
        topic=row["topic"],
        ticker=row["ticker"],
    )
    background = store.window_items(
        con,
        start=row["window_start"] - timedelta(hours=24),
        end=row["window_start"],
        sentiment=row["sentiment"],
        topic=row["topic"],
        ticker=row["ticker"],
    )
    headlines = representative_headlines(items, a.headlines)
    terms = top_terms(items["text"].tolist(), background["text"].tolist())
    tickers = top_tickers(items)
    drivers = sentiment_drivers(
        classifier, headlines[0]["headline"] if headlines else "", steps=a.explain_steps
    )
    topic = row["topic"]
    if topic is None:  # a ticker key: the topic most of its stories carry
        topic = (
            str(items["topic"].mode().iloc[0])
            if "topic" in items and len(items)
            else f"${row['ticker']}"
        )
    explanation = {
        "key": row["key"],
        "kind": row["kind"],
        "observed": row["observed"],
        "expected": round(row["expected"], 3),
        "score": round(row["score"], 3),
        "severity": row["severity"],
        "window_start": row["window_start"].isoformat(),
        "window_end": row["window_end"].isoformat(),
        "headlines": headlines,
        "top_terms": terms,
        "top_tickers": tickers,
        "sentiment_drivers": drivers,
        "notify_reason": row["reason"] or None,
    }
    if row["kind"] == "share":
        explanation["share"] = {
            "observed": round(row["observed"] / max(1, row["total"]), 4),
            "expected": round(row["expected"] / max(1, row["total"]), 4),
            "total": row["total"],
        }
    return {
        "kind": row["kind"],
        "topic": topic,
        "sentiment": row["sentiment"],
        "ticker": row["ticker"],
        "window_start": row["window_start"],
        "window_end": row["window_end"],
        "observed": row["observed"],
        "expected": row["expected"],
        "score": row["score"],
        "severity": row["severity"],
        "headlines": [h["headline"] for h in headlines],
        "top_terms": terms,
        "top_tickers": tickers,
        "explanation": explanation,
        "notify": row["notify"],
        "status": "open",
        "run_id": run_id,
        "key": row["key"],
    }
