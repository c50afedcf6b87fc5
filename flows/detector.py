"""Streaming trend-spike detector: a seasonal, robust baseline per key, scored as a z value.

One ``SeriesDetector`` follows one series (a key's count per window, or any numeric series
given to ``yuqing detect``). Each ``update`` costs O(1), uses only earlier windows, and its
whole state is a small JSON-safe dict, so it survives restarts.

The baseline
    expected = level x daily[hour of day] x weekly[hour of week]      (counts)
    expected = level + daily[hour of day] + weekly[hour of week]      (any other series)
Every seasonal slot is an EWMA that is shrunk towards "no seasonal effect" by its number of
observations (``(n f + k) / (n + k)``), so a new or sparse key starts from its own global
level and grows a profile as data arrives: it works from the first hour. Updates see a
Huber-clipped value (at most ``clip`` standard deviations from the expectation), and windows
inside an alert episode do not update the baseline at all, so past spikes do not inflate it.
An episode that lasts longer than ``adapt_after`` windows is a level shift, not a spike: the
level is re-anchored to the median of the recent windows and the episode closes.

The score
    counts: the tail probability P(X >= x) (mid-p) of a negative binomial with the expected
            mean and variance ``dispersion x mean`` (Poisson when not over-dispersed), turned
            into the equivalent one-sided normal z, so low counts get exact tails;
    others: (x - expected) / robust sd, the sd an EWMA of clipped absolute residuals.
The score is the larger of the current window's z and the z of the current plus the previous
window (a surge spread over two windows is caught by their sum). Scores are z values on every
series, so one threshold means the same false-alarm rate everywhere. An episode opens when
the score reaches ``open_level`` and closes when it falls below ``close_level`` (hysteresis).

``ShareDetector`` scores a share (e.g. negative items / all items of a topic) against its
robust EWMA with binomial tails, so a jump of the negative share while volume stays flat is
caught even when no count spikes.

This module knows nothing of Kafka, Prefect or DuckDB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from scipy import special

STATE_VERSION = 1
MAX_SCORE = 38.0  # -ndtri of the smallest double
SEVERITIES = ((9.0, "critical"), (6.0, "high"), (0.0, "medium"))
SEVERITY_RANK = {"medium": 1, "high": 2, "critical": 3}
HOURS_PER_WEEK = 168


@dataclass(frozen=True)
class DetectorConfig:
    window: timedelta = timedelta(minutes=5)
    open_level: float = 4.0  # an episode opens at this score (z)
    close_level: float = 2.0  # and closes below this one (hysteresis)
    alpha: float = 0.02  # level and scale EWMA weight per window (memory ~ 1/alpha windows)
    daily_alpha: float = 0.05  # hour-of-day slot weight (12 updates a day at 5-minute windows)
    weekly_alpha: float = 0.1  # hour-of-week slot weight (12 updates a week)
    daily_shrink: float = 4.0  # observations a slot needs before it counts half (x 1/level
    weekly_shrink: float = 4.0  # for sparse counts, so a slot learns from ~4 items, not 4 zeros)
    clip: float = 3.0  # Huber clip, in standard deviations
    min_history: int = 12  # windows before a series may alert (one hour at 5 minutes)
    adapt_after: int = 24  # episode windows after which it is a level shift
    min_rate: float = 0.05  # floor of the expected count, so empty keys are not alarmed by 1 item
    pair_windows: bool = True  # also score the sum of this and the previous window


def severity_for(score: float) -> str:
    return next(name for floor, name in SEVERITIES if score >= floor)


def z_from_tail(p: float) -> float:
    """The one-sided normal z whose upper tail is ``p`` (clipped to +-MAX_SCORE)."""
    if not p > 0.0:
        return MAX_SCORE
    if p >= 1.0:
        return -MAX_SCORE
    return float(min(MAX_SCORE, max(-MAX_SCORE, -special.ndtri(p))))


def count_tail(x: float, mean: float, dispersion: float) -> float:
    """Mid-p upper tail P(X > x) + P(X = x)/2 of a count with this mean and variance ratio."""
    x = max(0.0, round(x))
    if dispersion <= 1.01:  # Poisson: P(X >= x) is the regularised lower incomplete gamma
        at_least = special.gammainc(x, mean) if x > 0 else 1.0
        log_pmf = x * math.log(mean) - mean - math.lgamma(x + 1)
    else:  # negative binomial with mean m, variance d m: r = m / (d - 1), p = 1 / d
        r, p = mean / (dispersion - 1.0), 1.0 / dispersion
        at_least = special.betainc(x, r, 1.0 - p) if x > 0 else 1.0
        log_pmf = (
            math.lgamma(x + r)
            - math.lgamma(r)
            - math.lgamma(x + 1)
            + r * math.log(p)
            + x * math.log1p(-p)
        )
    return float(at_least - 0.5 * math.exp(log_pmf))


def _learn_slot(
    values: list[float], counts: list[float], slot: int, weight: float, target: float, alpha: float
) -> None:
    """Move one seasonal slot towards ``target``: a running mean at first, then an EWMA."""
    if weight <= 0:
        return
    counts[slot] += weight
    rate = weight * max(alpha, 1.0 / (counts[slot] + 2.0))
    values[slot] += rate * (target - values[slot])


def _shrunk(value: float, n: float, k: float, neutral: float) -> float:
    return (n * value + k * neutral) / (n + k)


def _slots(t: datetime | pd.Timestamp | float) -> tuple[int, int, float]:
    """(hour of day, hour of week with Monday 00h = 0, fraction) of the slot centre just before
    ``t``; the seasonal value at ``t`` interpolates between that slot and the next one."""
    seconds = t if isinstance(t, int | float) else pd.Timestamp(t).timestamp()
    position = seconds / 3600 - 0.5  # hours since the first slot centre
    hours = math.floor(position)
    weekday = (hours // 24 + 3) % 7  # 1970-01-01 was a Thursday
    return hours % 24, weekday * 24 + hours % 24, position - hours


@dataclass
class Score:
    observed: float
    expected: float
    sd: float
    score: float
    alerting: bool  # the window is inside an alert episode
    opened: bool  # the episode opened at this window
    closed: bool  # the episode that was open closed at this window
    ready: bool  # the series has enough history to alert

    @property
    def severity(self) -> str:
        return severity_for(self.score)


@dataclass
class SeriesDetector:
    """A seasonal robust baseline for one series. ``state()`` / ``from_state`` round-trip it."""

    config: DetectorConfig = field(default_factory=DetectorConfig)
    counts: bool = True  # integer, non-negative so far; switches off for good otherwise
    n: int = 0
    level: float = 0.0
    scale: float = 0.0  # counts: mean |Pearson residual|; others: mean |residual|
    daily: list[float] = field(default_factory=lambda: [0.0] * 24)
    daily_n: list[float] = field(default_factory=lambda: [0.0] * 24)
    weekly: list[float] = field(default_factory=lambda: [0.0] * HOURS_PER_WEEK)
    weekly_n: list[float] = field(default_factory=lambda: [0.0] * HOURS_PER_WEEK)
    episode: int = 0  # windows in the current alert episode (0: none open)
    recent: list[float] = field(default_factory=list)  # deseasonalised values, newest last
    previous: tuple[float, float] | None = None  # (observed, expected) of the last window
    last_t: float | None = None  # epoch seconds of the last window

    # -- the model ----------------------------------------------------------------------
    def _season(self, t: float) -> tuple[float, float]:
        hour, week_hour, f = _slots(t)
        c = self.config
        neutral = 1.0 if self.counts else 0.0
        sparse = max(1.0, 1.0 / max(self.level, c.min_rate)) if self.counts else 1.0
        k_d, k_w = c.daily_shrink * sparse, c.weekly_shrink * sparse
        nxt, wnxt = (hour + 1) % 24, (week_hour + 1) % HOURS_PER_WEEK
        d = (1 - f) * _shrunk(self.daily[hour], self.daily_n[hour], k_d, neutral) + f * _shrunk(
            self.daily[nxt], self.daily_n[nxt], k_d, neutral
        )
        w = (1 - f) * _shrunk(
            self.weekly[week_hour], self.weekly_n[week_hour], k_w, neutral
        ) + f * _shrunk(self.weekly[wnxt], self.weekly_n[wnxt], k_w, neutral)
        return d, w

    def expected_at(self, t: float) -> float:
        d, w = self._season(t)
        if self.counts:
            return max(self.config.min_rate, self.level * d * w)
        return self.level + d + w

    def _sd(self, expected: float) -> float:
        if self.counts:
            return math.sqrt(self.dispersion * expected)
        floor = 1e-9 + 1e-6 * abs(self.level)
        return max(floor, 1.2533 * self.scale)

    @property
    def dispersion(self) -> float:
        """Variance / mean of the counts, at least 1 (Poisson)."""
        return max(1.0, (self.scale / 0.7979) ** 2) if self.n > 1 else 1.0

    def _z(self, observed: float, expected: float, sd: float) -> float:
        if self.counts:
            return z_from_tail(count_tail(observed, expected, self.dispersion))
        return max(-MAX_SCORE, min(MAX_SCORE, (observed - expected) / sd))

    # -- one window ----------------------------------------------------------------------
    def update(self, t: datetime | pd.Timestamp | float, value: float) -> Score:
        """Score the window at ``t`` holding ``value``, then learn from it."""
        c = self.config
        t = t if isinstance(t, int | float) else pd.Timestamp(t).timestamp()
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"value must be a finite number, got {value!r}")
        if self.counts and (value < 0 or value != round(value)):
            self._become_continuous()
        if self.n == 0:
            self.level = value
        expected = self.expected_at(t)
        sd = self._sd(expected)
        score = self._z(value, expected, sd)
        if c.pair_windows and self.previous is not None and score > 1.0:
            prev_observed, prev_expected = self.previous
            pair_expected = expected + prev_expected
            pair_sd = math.sqrt(sd**2 + self._sd(prev_expected) ** 2)
            score = max(score, self._z(value + prev_observed, pair_expected, pair_sd))
        ready = self.n >= c.min_history
        was_open = self.episode > 0
        if was_open:
            alerting = score >= c.close_level
        else:
            alerting = ready and score >= c.open_level
        opened = alerting and not was_open
        closed = was_open and not alerting
        self.episode = self.episode + 1 if alerting else 0

        d, w = self._season(t)
        deseasonalised = (
            value / max(d * w, 1e-3) if self.counts else value - d - w
        )  # for level shifts
        self.recent = ([*self.recent, deseasonalised])[-c.adapt_after :]
        if self.episode > c.adapt_after:  # a level shift: accept the new normal
            self.level = float(np.median(self.recent))
            self.episode = 0
            alerting, closed = False, True
        elif not alerting:
            self._learn(t, value, expected, sd)
        self.previous = (value, expected)
        self.last_t = t
        self.n += 1
        return Score(value, expected, sd, score, alerting, opened, closed, ready)

    def _learn(self, t: float, value: float, expected: float, sd: float) -> None:
        c = self.config
        warm = 1.0 / (self.n + 1)
        a_level = max(c.alpha, warm)
        clipped = min(max(value, expected - c.clip * sd), expected + c.clip * sd)
        if self.n == 0:
            clipped = value
        d, w = self._season(t)
        if self.counts:
            residual = abs(value - expected) / math.sqrt(expected)
            self.scale += max(c.alpha, warm) * (min(residual, c.clip * 2) - self.scale)
            level = max(self.level, c.min_rate)
            self.level += a_level * (clipped / max(d * w, 1e-3) - self.level)
            target_d = min(4.0, clipped / max(level * w, 1e-3))
            target_w = min(4.0, clipped / max(level * d, 1e-3))
        else:
            residual = abs(value - expected)
            if self.n >= 2:
                self.scale += max(c.alpha, warm) * (
                    min(residual, c.clip * max(sd, 1e-12)) - self.scale
                )
            else:
                self.scale += warm * (residual - self.scale)
            self.level += a_level * (clipped - d - w - self.level)
            target_d = clipped - self.level - w
            target_w = clipped - self.level - d
        if self.n >= 1:
            hour, week_hour, f = _slots(t)
            for slot, weight in ((hour, 1 - f), ((hour + 1) % 24, f)):
                _learn_slot(self.daily, self.daily_n, slot, weight, target_d, c.daily_alpha)
            for slot, weight in ((week_hour, 1 - f), ((week_hour + 1) % HOURS_PER_WEEK, f)):
                _learn_slot(self.weekly, self.weekly_n, slot, weight, target_w, c.weekly_alpha)

    def _become_continuous(self) -> None:
        """A non-count value arrived: keep the level, restart the seasonal profile as offsets."""
        self.counts = False
        if self.n:
            self.scale = 1.2533 * math.sqrt(self.dispersion * max(self.level, self.config.min_rate))
        self.daily, self.daily_n = [0.0] * 24, [0.0] * 24
        self.weekly, self.weekly_n = [0.0] * HOURS_PER_WEEK, [0.0] * HOURS_PER_WEEK
        self.previous = None

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict:
        """A JSON-safe dict of everything the detector has learnt (not its config)."""
        return {
            "version": STATE_VERSION,
            "type": "series",
            "counts": self.counts,
            "n": self.n,
            "level": self.level,
            "scale": self.scale,
            "daily": self.daily,
            "daily_n": self.daily_n,
            "weekly": self.weekly,
            "weekly_n": self.weekly_n,
            "episode": self.episode,
            "recent": self.recent,
            "previous": list(self.previous) if self.previous is not None else None,
            "last_t": self.last_t,
        }

    @classmethod
    def from_state(cls, state: dict | None, config: DetectorConfig) -> SeriesDetector:
        if not state:
            return cls(config=config)
        if state.get("version") != STATE_VERSION or state.get("type") != "series":
            raise ValueError(f"unknown detector state version {state.get('version')!r}")
        previous = state.get("previous")
        return cls(
            config=config,
            counts=bool(state["counts"]),
            n=int(state["n"]),
            level=float(state["level"]),
            scale=float(state["scale"]),
            daily=[float(v) for v in state["daily"]],
            daily_n=[float(v) for v in state["daily_n"]],
            weekly=[float(v) for v in state["weekly"]],
            weekly_n=[float(v) for v in state["weekly_n"]],
            episode=int(state["episode"]),
            recent=[float(v) for v in state["recent"]],
            previous=tuple(previous) if previous is not None else None,
            last_t=state.get("last_t"),
        )


@dataclass
class ShareDetector:
    """A robust EWMA of a share k/n (e.g. the negative share of a topic), scored with binomial
    tails widened by the observed over-dispersion."""

    config: DetectorConfig = field(default_factory=DetectorConfig)
    min_total: int = 10  # windows with fewer items are neither scored nor learnt from
    n: int = 0
    share: float = 0.0
    scale: float = 0.0  # mean |Pearson residual|
    episode: int = 0
    last_t: float | None = None

    @property
    def dispersion(self) -> float:
        return max(1.0, (self.scale / 0.7979) ** 2) if self.n > 5 else 1.0

    def update(self, t: datetime | pd.Timestamp | float, part: int, total: int) -> Score:
        c = self.config
        t = t if isinstance(t, int | float) else pd.Timestamp(t).timestamp()
        self.last_t = t
        if total < self.min_total:
            return Score(
                float(part), self.share * total, 0.0, 0.0, self.episode > 0, False, False, False
            )
        if self.n == 0:
            self.share = part / total
        p = min(max(self.share, 0.5 / (total + 1)), 1 - 0.5 / (total + 1))
        expected = p * total
        sd = math.sqrt(self.dispersion * total * p * (1 - p))
        if part > 0:
            tail = special.bdtrc(part - 1, total, p) - 0.5 * math.exp(
                math.lgamma(total + 1)
                - math.lgamma(part + 1)
                - math.lgamma(total - part + 1)
                + part * math.log(p)
                + (total - part) * math.log1p(-p)
            )
        else:
            tail = 1.0
        score = z_from_tail(tail) / math.sqrt(self.dispersion)
        ready = self.n >= c.min_history
        was_open = self.episode > 0
        alerting = score >= c.close_level if was_open else ready and score >= c.open_level
        opened, closed = alerting and not was_open, was_open and not alerting
        self.episode = self.episode + 1 if alerting else 0
        if self.episode > c.adapt_after:
            self.share, self.episode = part / total, 0
            alerting, closed = False, True
        elif not alerting:
            a = max(c.alpha, 1.0 / (self.n + 1))
            residual = (part - expected) / math.sqrt(total * p * (1 - p))
            self.scale += a * (min(abs(residual), 2 * c.clip) - self.scale)
            clipped = min(max(part, expected - c.clip * sd), expected + c.clip * sd)
            self.share += a * (clipped / total - self.share)
        self.n += 1
        return Score(float(part), expected, sd, score, alerting, opened, closed, ready)

    def state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "type": "share",
            "n": self.n,
            "share": self.share,
            "scale": self.scale,
            "episode": self.episode,
            "last_t": self.last_t,
        }

    @classmethod
    def from_state(cls, state: dict | None, config: DetectorConfig) -> ShareDetector:
        if not state:
            return cls(config=config)
        if state.get("version") != STATE_VERSION or state.get("type") != "share":
            raise ValueError(f"unknown detector state version {state.get('version')!r}")
        return cls(
            config=config,
            n=int(state["n"]),
            share=float(state["share"]),
            scale=float(state["scale"]),
            episode=int(state["episode"]),
            last_t=state.get("last_t"),
        )


def score_series(
    timestamps: Iterable, values: Iterable[float], config: DetectorConfig | None = None
) -> pd.DataFrame:
    """Score a whole series in order; each row sees only the rows before it.

    Returns columns anomaly_score, alert (1 inside an alert episode), expected, opened.
    """
    detector = SeriesDetector(config=config or DetectorConfig())
    rows = [
        (s.score, int(s.alerting), s.expected, s.opened)
        for s in (detector.update(t, v) for t, v in zip(timestamps, values, strict=True))
    ]
    return pd.DataFrame(rows, columns=["anomaly_score", "alert", "expected", "opened"])


class SeriesFileError(ValueError):
    """A series file the detector cannot read; the message is one line."""


def read_series_csv(path) -> pd.DataFrame:
    """Read and validate a ``timestamp,value`` CSV; rows keep their order."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SeriesFileError(f"no such file: {path}") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise SeriesFileError(f"cannot read {path}: {' '.join(str(e).split())}") from e
    missing = [c for c in ("timestamp", "value") if c not in frame.columns]
    if missing:
        raise SeriesFileError(
            f"{path} needs columns timestamp,value; it lacks {','.join(missing)} "
            f"(has {','.join(frame.columns) or 'none'})"
        )
    if frame.empty:
        raise SeriesFileError(f"{path} has no rows")
    times = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="mixed")
    bad = times.isna()
    if bad.any():
        row = int(bad.idxmax())
        raise SeriesFileError(
            f"row {row + 2}: timestamp {frame['timestamp'].iloc[row]!r} is not a date/time"
        )
    values = pd.to_numeric(frame["value"].str.strip(), errors="coerce")
    bad = values.isna() | ~np.isfinite(values.fillna(0))
    if bad.any():
        row = int(bad.idxmax())
        raise SeriesFileError(
            f"row {row + 2}: value {frame['value'].iloc[row]!r} is not a finite number"
        )
    backwards = times.diff() < pd.Timedelta(0)
    if backwards.any():
        row = int(backwards.idxmax())
        raise SeriesFileError(f"row {row + 2}: timestamps must not go backwards")
    return pd.DataFrame({"timestamp": frame["timestamp"], "time": times, "value": values})


def infer_window(times: pd.Series) -> timedelta:
    """The series' typical spacing (median positive step); 5 minutes for a single row."""
    steps = times.diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    return steps.median().to_pytimedelta() if len(steps) else timedelta(minutes=5)


def detect_file(input_path, output_path, config: DetectorConfig | None = None) -> pd.DataFrame:
    """``yuqing detect``: write timestamp,value,anomaly_score,alert for every input row."""
    series = read_series_csv(input_path)
    config = config or DetectorConfig(window=infer_window(series["time"]))
    scores = score_series(series["time"], series["value"], config)
    out = pd.DataFrame(
        {
            "timestamp": series["timestamp"],
            "value": series["value"],
            "anomaly_score": scores["anomaly_score"].round(4),
            "alert": scores["alert"],
        }
    )
    try:
        out.to_csv(output_path, index=False)
    except OSError as e:
        raise SeriesFileError(f"cannot write {output_path}: {e.strerror or e}") from e
    return out
