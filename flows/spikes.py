"""Negative-news spike detection: a pure function of per-window counts.

For each topic, count negative items per window of ``published_at``. A window's expected count
is the topic's mean negative count over the baseline period before it (empty windows count as
zero), after trimming the busiest 5% of baseline windows so that past spikes do not inflate
the baseline, and never below ``floor_rate`` so that a quiet topic is not alarmed by a handful
of items. The window alerts when it holds at least ``min_count`` negative items and the
Poisson probability of seeing that many or more, given the expected rate, is below
``10 ** -threshold``. The score is that -log10 probability; severity grades it.

This module knows nothing of Kafka, Prefect or DuckDB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

SEVERITIES = ((12.0, "critical"), (9.0, "high"), (0.0, "medium"))


@dataclass(frozen=True)
class SpikeRule:
    window: timedelta = timedelta(minutes=5)
    baseline: timedelta = timedelta(hours=24)
    min_count: int = 5
    threshold: float = 6.0
    floor_rate: float = 0.5
    trim_fraction: float = 0.05


def poisson_log10_tail(observed: int, expected: float) -> float:
    """log10 P(X >= observed) for X ~ Poisson(expected), stable for tiny tails."""
    if observed <= 0:
        return 0.0
    if observed <= expected:
        return math.log10(max(1e-300, 1.0 - _poisson_cdf(observed - 1, expected)))
    log_term = observed * math.log(expected) - expected - math.lgamma(observed + 1)
    log_total, k = log_term, observed
    while True:  # terms shrink geometrically once k > expected
        k += 1
        log_term += math.log(expected) - math.log(k)
        if log_term < log_total - 40:
            break
        log_total = np.logaddexp(log_total, log_term)
    return float(log_total / math.log(10))


def _poisson_cdf(k: int, expected: float) -> float:
    term = math.exp(-expected)
    total = term
    for i in range(1, k + 1):
        term *= expected / i
        total += term
    return min(1.0, total)


def severity_for(score: float) -> str:
    return next(name for floor, name in SEVERITIES if score >= floor)


def trimmed_mean(values: np.ndarray, trim_fraction: float) -> float:
    if len(values) == 0:
        return 0.0
    keep = len(values) - int(len(values) * trim_fraction)
    return float(np.sort(values)[:keep].mean())


def detect_spikes(
    counts: pd.DataFrame, *, candidates: pd.DataFrame, rule: SpikeRule = SpikeRule()
) -> pd.DataFrame:
    """Score candidate (topic, window_start) pairs against each topic's baseline.

    ``counts`` has columns topic, window_start (aligned to ``rule.window``), negative: the
    negative count of every non-empty window from ``baseline`` before the earliest candidate
    on. ``candidates`` has columns topic, window_start. Returns one row per alerting
    candidate: topic, window_start, window_end, observed, expected, score, severity.
    """
    columns = ["topic", "window_start", "window_end", "observed", "expected", "score", "severity"]
    if candidates.empty:
        return pd.DataFrame(columns=columns)
    by_topic = {
        topic: frame.set_index("window_start")["negative"]
        for topic, frame in counts.groupby("topic")
    }
    n_baseline = max(1, int(rule.baseline / rule.window))
    rows = []
    for topic, window_start in (
        candidates[["topic", "window_start"]].drop_duplicates().itertuples(index=False)
    ):
        series = by_topic.get(topic)
        observed = int(series.get(window_start, 0)) if series is not None else 0
        if observed < rule.min_count:
            continue
        history_start = window_start - n_baseline * rule.window
        if series is not None:
            past = series[(series.index >= history_start) & (series.index < window_start)]
            # Windows with no negative items are zeros, not missing values.
            baseline = np.zeros(n_baseline)
            slots = ((past.index - history_start) / rule.window).astype(int)
            baseline[np.asarray(slots)] = past.to_numpy()
        else:
            baseline = np.zeros(n_baseline)
        expected = max(rule.floor_rate, trimmed_mean(baseline, rule.trim_fraction))
        score = -poisson_log10_tail(observed, expected)
        if score >= rule.threshold:
            rows.append(
                (
                    topic,
                    window_start,
                    window_start + rule.window,
                    observed,
                    expected,
                    score,
                    severity_for(score),
                )
            )
    return pd.DataFrame(rows, columns=columns)
