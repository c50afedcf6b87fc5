"""A labelled evaluation set for the spike detector, the baselines it is compared with, and
the script that scores them all in one run.

    python -m flows.detector_eval [--weeks 4] [--plot docs/alerts_detections.png]
        [--compare-module old_detector.py]   # e.g. from `git show REV:flows/detector.py`

Every threshold (yuqing's ``open_level`` included) is chosen on the DEV seeds (the lowest at
which every family has at most BUDGET false alerts per key and week) and the tables are reported
for the DEV and the separate TEST seeds; nothing is tuned on the TEST seeds.

The set (per seed, 5-minute windows, ``--weeks`` weeks; every series has busy US hours, quiet
nights and weekends, a trend, one persistent level shift and two unlabelled noise bursts of
three hours at twice the noise sd):

* ``counts``: negative-binomial counts at base rates 3, 10 and 40 per window (each key's
  variance is either a multiple of the mean or mean + mean^2 / r, picked at random);
* ``sparse``: the same at base rate 1 (mostly 0 or 1 per window);
* ``gauss`` / ``heavy``: a continuous series with Gaussian or Student-t(5) noise;
* ``texts``: one story-count series per sentiment, built from ``../shared/data``: labelled
  finance tweets arrive on the seasonal timeline, each with 0-3 copies (a new t.co link,
  ``RT @outlet:``, an outlet credit, a changed case or a "BREAKING:" prefix) that arrive in
  the same or the next two windows, plus two unlabelled "copy storms" per week (one story
  copied 20-40 times within ten minutes). The series counts distinct stories
  (``flows/stories.py``), as the monitor does.

Spikes: three per key and week, of 4, 5, 6 or 8 robust sd at their peak, rising over 1, 2 or
3 windows (linearly) and decaying with a half-life of 1-4 windows until they are below half a
robust sd. For a text series a spike is that many extra distinct stories (each with copies).

The robust sd of a spike is that of the residual noise around the expected value: 1.4826 x
the median of |x - mu| over the spike-free series, where mu is the true expected value of
each window (the seasonal pattern, trend and shift without noise), taken over the windows
whose mu is within 20% of mu at the spike's onset (at least a day of windows: the closest
ones). For the continuous series this is 1 (Gaussian, and Student-t scaled to a MAD of 1).

Scoring: a spike is found when an alert is open at its onset or within the 2 windows after
(delay <= 2 windows; the tables also show delay <= 1). Alert episodes are runs of alerting
windows (runs with gaps of at most 2 windows count as one). An episode that opens outside
every spike (onset to two windows after its end) and outside the 2 hours after a level shift
is a false alert.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from flows.detector import MAD_SD, DetectorConfig, score_series
from flows.detector_baselines import noise_z

logger = logging.getLogger(__name__)

WINDOW = pd.Timedelta(minutes=5)
PER_DAY = 288
PER_WEEK = 7 * PER_DAY
START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday
SPIKE_SIZES = (4.0, 5.0, 6.0, 8.0)
DEV_SEEDS = tuple(range(1000, 1006))
TEST_SEEDS = tuple(range(2000, 2010))
FAMILIES = ("counts", "sparse", "gauss", "heavy", "texts")
T_DF = 5  # the heavy family's Student t
T_MAD = 0.7267  # ... its MAD (0.72669 rounded, as the set has always been built)
MAX_DELAY = 2  # found = alerting at the onset or within this many windows after it
MERGE_GAP = 2  # alert runs this close together are one episode
SHIFT_GRACE = 24  # episodes opening this soon after a level shift are neither true nor false
BUDGET = 1.0  # false alerts per key and week allowed in every family when tuning
STORY_HORIZON = PER_DAY  # a story counts again after a day (alerts.story_lookback)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# -- the labelled series -----------------------------------------------------------------------


@dataclass
class Spike:
    onset: int
    size_sd: float
    rise: int
    half_life: float
    unit_sd: float = float("nan")  # one robust sd at the onset, in the series' units
    excess: np.ndarray = field(default_factory=lambda: np.zeros(0))  # added per window

    @property
    def end(self) -> int:
        return self.onset + len(self.excess)


@dataclass
class LabelledSeries:
    name: str
    family: str
    values: np.ndarray  # what the detectors see
    expected: np.ndarray  # the true expected value of every window (no noise, no spikes)
    noise_sd: np.ndarray  # the true noise sd of every window (bursts included)
    spikes: list[Spike]
    shifts: list[int]
    bursts: list[tuple[int, int]]  # unlabelled noise bursts [start, end)
    storms: list[int] = field(default_factory=list)  # unlabelled copy storms (texts)
    law: str = "nb"  # the noise law: nb, gauss, t5 (for the oracle)

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.date_range(START, periods=len(self.values), freq=WINDOW)

    @cached_property
    def evidence(self) -> list[float]:
        """`spike_evidence` of every spike: the series' alone, so worked out once, not at
        every threshold a detector is evaluated at."""
        return [spike_evidence(self, s) for s in self.spikes]


def spike_shape(size: float, rise: int, half_life: float, max_len: int = 24) -> np.ndarray:
    """Heights in robust sd: a linear rise to ``size`` over ``rise`` windows, then a decay."""
    heights = [size * (k + 1) / rise for k in range(rise)]
    j = 1
    while len(heights) < max_len:
        h = size * 0.5 ** (j / half_life)
        if h < 0.5:
            break
        heights.append(h)
        j += 1
    return np.asarray(heights)


def robust_unit(clean: np.ndarray, expected: np.ndarray, onset: int) -> float:
    """1.4826 x median |x - mu| over the spike-free windows whose mu is close to the onset's."""
    mu = expected[onset]
    near = np.abs(expected - mu) <= 0.2 * abs(mu)
    if near.sum() < PER_DAY:
        near = np.zeros(len(expected), dtype=bool)
        near[np.argsort(np.abs(expected - mu), kind="stable")[:PER_DAY]] = True
    sd = 1.4826 * float(np.median(np.abs(clean[near] - expected[near])))
    return sd if sd > 0 else float(np.sqrt(max(mu, 1e-3)))


def _profile(n: int, rng: np.random.Generator) -> np.ndarray:
    """A multiplicative seasonal profile: busy US market hours, quiet nights and weekends."""
    times = pd.date_range(START, periods=n, freq=WINDOW)
    hour = np.asarray(times.hour + times.minute / 60)
    busy = np.exp(-(((hour - 15.0) / 3.5) ** 2))  # peaks at 15:00 UTC
    amplitude = rng.uniform(1.0, 3.0)
    weekend = np.where(np.asarray(times.day_of_week) >= 5, rng.uniform(0.3, 0.6), 1.0)
    return (0.4 + amplitude * busy) / (0.4 + amplitude * 0.35) * weekend


def _layout(n: int, rng: np.random.Generator, *, weeks: int, storms: bool = False):
    """Where the level shift, the bursts, the storms and the spikes go (apart from each other)."""
    shift = int(rng.integers(n // 3, 2 * n // 3))
    taken = [shift]

    def free_spot(lo: int, hi: int, length: int) -> int:
        while True:
            at = int(rng.integers(lo, hi))
            if all(abs(at - t) > 48 + length for t in taken):
                taken.append(at)
                return at

    bursts = [(b, b + 36) for b in (free_spot(PER_DAY, n - 40, 36) for _ in range(2))]
    storm_at = sorted(free_spot(PER_DAY, n - 4, 2) for _ in range(2 * weeks)) if storms else []
    spikes = []
    for i in range(3 * weeks):
        onset = free_spot(24, n - 30, 24)  # from the third hour on: cold start included
        spikes.append(
            Spike(
                onset=onset,
                size_sd=SPIKE_SIZES[i % len(SPIKE_SIZES)],
                rise=int(rng.integers(1, 4)),
                half_life=float(rng.uniform(1.0, 4.0)),
            )
        )
    spikes.sort(key=lambda s: s.onset)
    return shift, bursts, storm_at, spikes


def count_excess(heights: np.ndarray, unit: float) -> np.ndarray:
    """Extra counts per window of a spike of ``heights`` robust sd of ``unit`` each: rounded,
    and the peak rounded up (a spike is at least its size)."""
    excess = np.round(heights * unit)
    peak = int(np.argmax(heights))
    excess[peak] = math.ceil(heights[peak] * unit - 1e-9)
    return excess


def _inject(values: np.ndarray, spikes: list[Spike], *, counts: bool) -> np.ndarray:
    out = values.astype(float).copy()
    for s in spikes:
        heights = spike_shape(s.size_sd, s.rise, s.half_life)
        if counts:
            excess = np.trim_zeros(count_excess(heights, s.unit_sd), "b")
        else:
            excess = heights * s.unit_sd
        s.excess = excess[: len(out) - s.onset]
        out[s.onset : s.end] += s.excess
    return out


def count_series(
    rng: np.random.Generator, *, weeks: int, base: float, name: str, family: str = "counts"
) -> LabelledSeries:
    n = weeks * PER_WEEK
    mean = base * _profile(n, rng) * np.linspace(1.0, rng.uniform(0.7, 1.4), n)
    shift, bursts, _, spikes = _layout(n, rng, weeks=weeks)
    mean[shift:] *= rng.choice([0.6, 1.6])
    dispersion = rng.uniform(1.0, 1.6)  # variance / mean at the base rate
    if rng.random() < 0.5:
        variance = dispersion * mean
    else:  # gamma-Poisson: variance grows with the square of the mean
        variance = mean + (dispersion - 1.0) * mean**2 / base
    for b, e in bursts:
        variance[b:e] *= 4.0
    clean = _neg_binomial(rng, mean, variance).astype(float)
    for s in spikes:
        s.unit_sd = robust_unit(clean, mean, s.onset)
    values = _inject(clean, spikes, counts=True)
    return LabelledSeries(name, family, values, mean, np.sqrt(variance), spikes, [shift], bursts)


def _neg_binomial(rng: np.random.Generator, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    over = variance > mean * 1.0001
    values = rng.poisson(mean).astype(np.int64)
    r = mean[over] ** 2 / (variance[over] - mean[over])
    values[over] = rng.negative_binomial(r, mean[over] / variance[over])
    return values


def continuous_series(
    rng: np.random.Generator, *, weeks: int, heavy: bool, name: str
) -> LabelledSeries:
    n = weeks * PER_WEEK
    level = 100.0 + 8.0 * (_profile(n, rng) - 1.0)  # a seasonal swing of ~8 sd
    level += np.linspace(0.0, rng.uniform(-10, 10), n)  # trend
    shift, bursts, _, spikes = _layout(n, rng, weeks=weeks)
    level[shift:] += rng.choice([-8.0, 8.0])
    scale = np.ones(n)
    for b, e in bursts:
        scale[b:e] = 2.0
    if heavy:  # Student t(5) scaled to a MAD-based sd of 1
        noise = rng.standard_t(T_DF, size=n) / (T_MAD * MAD_SD)
    else:
        noise = rng.standard_normal(n)
    clean = level + scale * noise
    for s in spikes:
        s.unit_sd = robust_unit(clean, level, s.onset)
    values = _inject(clean, spikes, counts=False)
    family, law = ("heavy", "t5") if heavy else ("gauss", "gauss")
    sd = scale * (math.sqrt(T_DF / (T_DF - 2)) / (T_MAD * MAD_SD) if heavy else 1.0)
    return LabelledSeries(name, family, values, level, sd, spikes, [shift], bursts, law=law)


# -- text series: labelled tweets with copies, counted as distinct stories ---------------------


@dataclass(frozen=True)
class TextPool:
    by_label: dict[str, np.ndarray]  # background stories per sentiment (one text per story)
    reservoir: np.ndarray  # other distinct stories, for spikes and storms


@cache
def load_text_pool(data_dir: Path = SHARED_DATA) -> TextPool | None:
    """Distinct stories of the labelled sentiment data, and of the topic data as a reservoir."""
    from flows.stories import story_ids

    sentiment_csv, topic_csv = (
        data_dir / "sentiment" / "train.csv",
        data_dir / "topic" / "train.csv",
    )
    if not (sentiment_csv.is_file() and topic_csv.is_file()):
        return None
    sentiment, topic = pd.read_csv(sentiment_csv), pd.read_csv(topic_csv)
    texts = [*sentiment["text"], *topic["text"]]
    ids = story_ids(texts)
    first = ~pd.Series(ids).duplicated().to_numpy()  # one text per story; no story twice
    keep_sentiment = first[: len(sentiment)]
    kept = sentiment[keep_sentiment]
    by_label = {label: g["text"].to_numpy() for label, g in kept.groupby("label")}
    reservoir = topic["text"].to_numpy()[first[len(sentiment) :]]
    return TextPool(by_label, reservoir)


_OUTLETS = ("Reuters", "WSJ", "FT", "Bloomberg", "CNBC", "MarketWatch")


def copy_of(text: str, rng: np.random.Generator) -> str:
    """A wire copy or retweet of ``text`` that differs by link, prefix, credit, case or a word."""
    import re

    bare = re.sub(r"https?://\S+", "", text).strip()
    link = "https://t.co/" + "".join(rng.choice(list(string.ascii_letters), size=10))
    outlet = str(rng.choice(_OUTLETS))
    kind = int(rng.integers(5))
    if kind == 0:
        return f"{bare} {link}"
    if kind == 1:
        return f"RT @{outlet}: {text}"
    if kind == 2:
        return f"{bare} - {outlet} {link}"
    if kind == 3:
        return bare.upper() if rng.random() < 0.5 else bare.lower()
    return f"BREAKING: {bare} {link}"


def text_series(
    rng: np.random.Generator, pool: TextPool, *, weeks: int, base: float, seed: int
) -> list[LabelledSeries]:
    """One distinct-story count series per sentiment."""
    n = weeks * PER_WEEK
    rate = base * _profile(n, rng) * np.linspace(1.0, rng.uniform(0.8, 1.25), n)
    sizes = {label: len(texts) for label, texts in pool.by_label.items()}
    total = sum(sizes.values())
    reservoir = iter(rng.permutation(pool.reservoir))
    items: list[tuple[int, str, str]] = []  # (window, text, label): background and storms
    extra: list[tuple[int, str, str]] = []  # the spikes' stories and their copies

    def publish(into: list, window: int, text: str, label: str) -> None:
        into.append((window, text, label))
        for _ in range(int(rng.integers(0, 3))):  # 0-2 copies, now or in the next 2 windows
            into.append((min(n - 1, window + int(rng.integers(0, 3))), copy_of(text, rng), label))

    series = []
    for label in sorted(pool.by_label):
        mean = rate * sizes[label] / total
        shift, bursts, storms, spikes = _layout(n, rng, weeks=weeks, storms=True)
        # The background cycles through the label's stories: no story repeats within a day.
        background = pool.by_label[label]
        arrivals = rng.poisson(mean)
        passes = 1 + int(arrivals.sum()) // len(background)
        order = np.concatenate([rng.permutation(len(background)) for _ in range(passes)])
        windows = np.repeat(np.arange(n), arrivals)
        for window, text in zip(windows, background[order[: len(windows)]], strict=True):
            publish(items, int(window), str(text), label)
        for window in storms:  # one story copied 20-40 times within ten minutes
            text = str(next(reservoir))
            items.append((window, text, label))
            for _ in range(int(rng.integers(20, 41))):
                items.append((window + int(rng.integers(0, 2)), copy_of(text, rng), label))
        series.append(
            LabelledSeries(
                f"texts-{seed}-{label}",
                "texts",
                np.zeros(n),
                mean,
                np.sqrt(mean),
                spikes,
                [],
                [],
                storms,
                law="poisson",
            )  # fmt: skip
        )
    clean = _stories(items, n)
    for s in series:
        label = s.name.rsplit("-", 1)[1]
        for spike in s.spikes:
            spike.unit_sd = robust_unit(clean[label], s.expected, spike.onset)
            shape = spike_shape(spike.size_sd, spike.rise, spike.half_life)
            for offset, stories in enumerate(count_excess(shape, spike.unit_sd).astype(int)):
                for _ in range(stories):
                    if spike.onset + offset < n:
                        publish(extra, spike.onset + offset, str(next(reservoir)), label)
    # The spikes' stories are new (no background story is near them), so counting them apart
    # from the background gives the same totals as counting everything together.
    added = _stories(extra, n)
    for s in series:
        label = s.name.rsplit("-", 1)[1]
        spiked = added.get(label, np.zeros(n))
        s.values = clean[label] + spiked
        for spike in s.spikes:  # the excess that reached the counts, copies deduplicated
            spike.excess = np.trim_zeros(spiked[spike.onset : spike.onset + 24], "b")
    return series


def _stories(items: list[tuple[int, str, str]], n: int) -> dict[str, np.ndarray]:
    """Distinct stories per window and label: a story counts in the first window it appears,
    and again only after a day (as the monitor counts them)."""
    from flows.stories import story_ids

    frame = pd.DataFrame(items, columns=["window", "text", "label"])
    frame = frame.sort_values("window", kind="stable")
    frame["story"] = story_ids(frame["text"].tolist())
    counts = {label: np.zeros(n) for label in frame["label"].unique()}
    last: dict[tuple[str, str], int] = {}
    for window, label, story in zip(frame["window"], frame["label"], frame["story"], strict=True):
        if window - last.get((label, story), -STORY_HORIZON) >= STORY_HORIZON:
            counts[label][window] += 1
            last[(label, story)] = window
    return counts


def build_set(*, weeks: int, seeds, with_texts: bool = True) -> list[LabelledSeries]:
    pool = load_text_pool() if with_texts else None
    out: list[LabelledSeries] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for base in (3.0, 10.0, 40.0):
            out.append(count_series(rng, weeks=weeks, base=base, name=f"counts-{seed}-{base:g}"))
        out.append(count_series(rng, weeks=weeks, base=1.0, name=f"sparse-{seed}", family="sparse"))
        out.append(continuous_series(rng, weeks=weeks, heavy=False, name=f"gauss-{seed}"))
        out.append(continuous_series(rng, weeks=weeks, heavy=True, name=f"heavy-{seed}"))
        if pool is not None:
            out += text_series(rng, pool, weeks=weeks, base=8.0, seed=seed)
    return out


# -- scoring ------------------------------------------------------------------------------------


def episodes(alert: np.ndarray, gap: int = MERGE_GAP) -> list[tuple[int, int]]:
    """Runs of alerting windows [start, end), runs at most ``gap`` windows apart merged."""
    idx = np.flatnonzero(alert)
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


@dataclass
class SeriesResult:
    name: str
    family: str
    weeks: float
    found: list[tuple[float, int, int | None, float]]  # (size_sd, rise, delay or None, mu)
    true_episodes: int
    false_episodes: int
    evidence: list[float] = field(default_factory=list)  # spike_evidence, one per spike
    onsets: list[int] = field(default_factory=list)  # the window of each spike's onset


def spike_evidence(series: LabelledSeries, spike: Spike) -> float:
    """How rare the spike is as noise: the largest one-window z, over the windows a detection
    may come in (the onset and MAX_DELAY after), of the true expected value plus the spike's
    excess under the series' true noise law, as a Gaussian z. On Gaussian noise it is the
    spike's height in sd; a "4 robust sd" spike is a much weaker event on a sparse or skewed
    count (a 2-story peak at 0.3 expected stories is a 2-sd event) or on Student-t noise."""
    k = min(MAX_DELAY + 1, len(spike.excess), len(series.values) - spike.onset)
    window = slice(spike.onset, spike.onset + k)
    mu, sd = series.expected[window], series.noise_sd[window]
    return float(np.max(noise_z(series.law, spike.excess[:k], mu, sd)))


def evaluate(series: LabelledSeries, alert: np.ndarray) -> SeriesResult:
    n = len(alert)
    explained = np.zeros(n, dtype=bool)
    for s in series.spikes:
        explained[s.onset : s.end + 2] = True
    grace = np.zeros(n, dtype=bool)
    for shift in series.shifts:
        grace[shift : shift + SHIFT_GRACE] = True
    found = []
    for s in series.spikes:
        hits = np.flatnonzero(alert[s.onset : s.onset + MAX_DELAY + 1])
        delay = int(hits[0]) if len(hits) else None
        found.append((s.size_sd, s.rise, delay, float(series.expected[s.onset])))
    opens = np.array([start for start, _ in episodes(alert)], dtype=int)
    true_episodes = int(explained[opens].sum()) if len(opens) else 0
    false_episodes = int((~explained[opens] & ~grace[opens]).sum()) if len(opens) else 0
    return SeriesResult(
        series.name,
        series.family,
        n / PER_WEEK,
        found,
        true_episodes,
        false_episodes,
        series.evidence,
        [s.onset for s in series.spikes],
    )


def family_order(names) -> list[str]:
    """The distinct family names: FAMILIES' first, in its order, then others as they appear."""
    rank = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(dict.fromkeys(names), key=lambda f: rank.get(f, len(rank)))


def summarise(results: list[SeriesResult]) -> pd.DataFrame:
    """Per family and overall: recall (delay <= 2 and <= 1), precision, delay, false alerts."""
    rows = []
    for name in [*family_order(r.family for r in results), "all"]:
        group = [r for r in results if name in ("all", r.family)]
        delays = [d for r in group for _, _, d, _ in r.found]
        hits = [d for d in delays if d is not None]
        true_eps = sum(r.true_episodes for r in group)
        false_eps = sum(r.false_episodes for r in group)
        per_key = [r.false_episodes / r.weeks for r in group]
        rows.append(
            {
                "family": name,
                "keys": len(group),
                "spikes": len(delays),
                "recall": len(hits) / max(1, len(delays)),
                "recall_d1": sum(d <= 1 for d in hits) / max(1, len(delays)),
                "precision": true_eps / max(1, true_eps + false_eps),
                "mean_delay": float(np.mean(hits)) if hits else float("nan"),
                "false_per_key_week": false_eps / sum(r.weeks for r in group),
                "worst_key": max(per_key),
            }
        )
    return pd.DataFrame(rows)


def recall_by_size(results: list[SeriesResult], families=None) -> pd.DataFrame:
    rows = [
        (size, rise, delay)
        for r in results
        if families is None or r.family in families
        for size, rise, delay, _ in r.found
    ]
    frame = pd.DataFrame(rows, columns=["size_sd", "rise", "delay"])
    frame["found"] = frame["delay"].notna()
    frame["found_d1"] = frame["delay"].fillna(99) <= 1
    table = frame.groupby("size_sd").agg(
        spikes=("found", "size"), recall=("found", "mean"), recall_d1=("found_d1", "mean")
    )
    by_rise = frame.pivot_table(index="size_sd", columns="rise", values="found", aggfunc="mean")
    by_rise.columns = [f"rise {r}" for r in by_rise.columns]
    return table.join(by_rise).reset_index()


COUNT_FAMILIES = ("counts", "sparse", "texts")
RATE_BINS = (0.0, 1.0, 3.0, 10.0, float("inf"))


def recall_by_rate(results: list[SeriesResult]) -> pd.DataFrame:
    """Recall of the count families' spikes by the expected count at the onset: at low
    counts a spike of a few robust sd is a handful of items, and Poisson tails are long."""
    rows = [
        (mu, size, delay is not None)
        for r in results
        if r.family in COUNT_FAMILIES
        for size, _, delay, mu in r.found
    ]
    frame = pd.DataFrame(rows, columns=["mu", "size_sd", "found"])
    labels = [f"{lo:g}-{hi:g}" if hi < float("inf") else f">= {lo:g}" for lo, hi in
              zip(RATE_BINS, RATE_BINS[1:], strict=False)]  # fmt: skip
    frame["expected_at_onset"] = pd.cut(frame["mu"], RATE_BINS, labels=labels, right=False)
    table = frame.groupby("expected_at_onset", observed=True).agg(
        spikes=("found", "size"), recall=("found", "mean")
    )
    four = frame[frame["size_sd"] == SPIKE_SIZES[0]].groupby("expected_at_onset", observed=True)
    table[f"recall at {SPIKE_SIZES[0]:g} sd"] = four["found"].mean()
    return table.reset_index()


EVIDENCE_BINS = (-math.inf, 3.0, 4.0, 5.0, 6.0, math.inf)


def _found_by_evidence(results: list[SeriesResult]) -> list[tuple[float, bool]]:
    """(spike_evidence, found) of every spike."""
    return [
        (z, delay is not None)
        for r in results
        for z, (_, _, delay, _) in zip(r.evidence, r.found, strict=True)
    ]


def recall_by_evidence(results: list[SeriesResult]) -> pd.DataFrame:
    """Recall by ``spike_evidence``: how rare each spike's peak is as noise, whatever its
    size in robust sd. The target's "4 robust sd" is a 4-sd event only on Gaussian noise."""
    frame = pd.DataFrame(_found_by_evidence(results), columns=["z", "found"])
    labels = [f"< {hi:g}" if lo == -math.inf else f">= {lo:g}" if hi == math.inf else f"{lo:g}-{hi:g}"
              for lo, hi in zip(EVIDENCE_BINS, EVIDENCE_BINS[1:], strict=False)]  # fmt: skip
    frame["peak_as_noise_sd"] = pd.cut(frame["z"], EVIDENCE_BINS, labels=labels, right=False)
    return (
        frame.groupby("peak_as_noise_sd", observed=True)
        .agg(spikes=("found", "size"), recall=("found", "mean"))
        .reset_index()
    )


def recall_by_week(results: list[SeriesResult]) -> pd.DataFrame:
    """Recall per family by the week of the spike's onset: week 1 is the cold start (the
    series start together, so week 1 is every key's first)."""
    rows = [
        (r.family, onset // PER_WEEK + 1, delay is not None)
        for r in results
        for onset, (_, _, delay, _) in zip(r.onsets, r.found, strict=True)
    ]
    frame = pd.DataFrame(rows, columns=["family", "week", "found"])
    frame = pd.concat([frame, frame.assign(family="all")])
    table = frame.pivot_table(index="family", columns="week", values="found", aggfunc="mean")
    table.columns = [f"week {w}" for w in table.columns]
    later = frame[frame["week"] > 1].groupby("family")["found"].mean()
    table["after week 1"] = later
    order = [f for f in (*family_order(r.family for r in results), "all") if f in table.index]
    return table.loc[order].reset_index()


def recall_of_events(results: list[SeriesResult], at_least: float = 4.0) -> float:
    """Recall over the spikes whose peak is at least an ``at_least``-sd event as noise."""
    hits = [found for z, found in _found_by_evidence(results) if z >= at_least]
    return float(np.mean(hits)) if hits else float("nan")


# -- detectors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A detector under evaluation: ``scores(series)`` and alerts from a threshold."""

    name: str
    scores: Callable[[LabelledSeries, float], np.ndarray]  # -> alert (bool) per window
    thresholds: tuple[float, ...]  # the grid searched on the dev seeds
    published: float | None = None  # the threshold its authors use, if it has one
    score_once: bool = True  # False: the threshold changes the detector's state (yuqing)


def _grid(lo: float, hi: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.round(np.arange(lo, hi + step / 2, step), 3))


def yuqing_candidate(overrides: dict | None = None) -> Candidate:
    """yuqing, or yuqing with some `DetectorConfig` fields changed (named after them)."""
    base = replace(DetectorConfig(), **(overrides or {}))  # unknown fields raise TypeError here

    def alerts(series: LabelledSeries, open_level: float) -> np.ndarray:
        config = replace(base, open_level=open_level)
        return score_series(series.times, series.values, config)["alert"].to_numpy().astype(bool)

    name = "yuqing" + (" " + json.dumps(overrides, sort_keys=True) if overrides else "")
    return Candidate(name, alerts, _grid(3.2, 6.0, 0.05), base.open_level, False)


def module_candidate(path: Path) -> Candidate:
    """Another version of flows/detector.py (e.g. ``git show REV:flows/detector.py > f.py``),
    scored like yuqing, so a change can be compared with what it replaces on the same set."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"detector_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)

    def alerts(series: LabelledSeries, open_level: float) -> np.ndarray:
        config = replace(module.DetectorConfig(), open_level=open_level)
        scored = module.score_series(series.times, series.values, config)
        return scored["alert"].to_numpy().astype(bool)

    levels = tuple(float(v) for v in np.arange(3.5, 8.01, 0.25))
    return Candidate(f"{path.name}", alerts, levels, module.DetectorConfig().open_level, False)


def candidates() -> list[Candidate]:
    from flows import detector_baselines as b

    return [
        yuqing_candidate(),
        Candidate("oracle scan", b.oracle_score, _grid(3.0, 6.0, 0.05)),
        Candidate("rolling z (1 day)", b.rolling_z_score, _grid(3.0, 15.0, 0.25), 3.0),
        Candidate("Skyline ensemble", b.skyline_score, tuple(k / 7 for k in range(1, 8)), 5 / 7),
        Candidate("seasonal ESD (ADVec-style)", b.seasonal_esd_score, _grid(0.8, 5.0, 0.1), 1.0),
    ]


def run_candidate(
    candidate: Candidate, series_list: list[LabelledSeries], threshold: float, cache: dict
) -> list[SeriesResult]:
    results = []
    for series in series_list:
        if candidate.score_once:
            key = (candidate.name, series.name)
            if key not in cache:
                cache[key] = candidate.scores(series, float("nan"))
            alert = cache[key] >= threshold
        else:
            alert = candidate.scores(series, threshold)
        results.append(evaluate(series, alert))
    return results


def tune(
    candidate: Candidate, dev: list[LabelledSeries], cache: dict
) -> tuple[float, pd.DataFrame]:
    """The lowest threshold whose false alerts stay within BUDGET per key and week in every
    family on the dev seeds (the highest threshold of the grid if none does)."""
    for threshold in candidate.thresholds:
        summary = summarise(run_candidate(candidate, dev, threshold, cache))
        if (summary["false_per_key_week"] <= BUDGET).all():
            return float(threshold), summary
    return float(candidate.thresholds[-1]), summary


# -- output -------------------------------------------------------------------------------------


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table, floats to two places."""

    def cell(v) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def plot_series(series: LabelledSeries, scored: pd.DataFrame, path: Path, days: int = 7) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = days * PER_DAY
    times, values = series.times[:n], series.values[:n]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, height_ratios=[3, 1.3])
    top.plot(times, values, lw=0.6, color="0.35", label="observed (distinct stories)")
    top.plot(times, scored["expected"][:n], lw=1.0, color="tab:blue", label="expected (baseline)")
    spans = [(s.onset, s.end, "tab:orange", 0.35, "injected spike") for s in series.spikes]
    spans += [(b, e, "tab:purple", 0.15, "noise burst (unlabelled)") for b, e in series.bursts]
    spans += [(w, w + 2, "tab:green", 0.3, "copy storm (unlabelled)") for w in series.storms]
    labelled = set()
    for start, end, color, alpha, label in spans:
        if start < n:
            top.axvspan(times[start], times[min(n - 1, end)], color=color, alpha=alpha,
                        label=None if label in labelled else label)  # fmt: skip
            labelled.add(label)
    opened = np.flatnonzero(scored["opened"].to_numpy()[:n])
    top.scatter(times[opened], values[opened], color="tab:red", zorder=5, s=25, label="alert opens")
    top.set_ylabel("stories per 5 min")
    top.set_ylim(0, 1.35 * max(1.0, float(values.max())))
    top.legend(loc="upper left", fontsize=8, ncol=3)
    top.set_title(f"{series.name}: detections over {days} days (a test seed)")
    bottom.plot(times, scored["anomaly_score"][:n], lw=0.6, color="0.3")
    bottom.axhline(DetectorConfig().open_level, color="tab:red", lw=0.8, ls="--", label="open")
    bottom.axhline(DetectorConfig().close_level, color="tab:green", lw=0.8, ls=":", label="close")
    bottom.set_ylim(-4, 15)
    bottom.set_ylabel("score (z)")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_set_arguments(parser: argparse.ArgumentParser) -> None:
    """--weeks, --dev-seeds and --test-seeds, shared with flows/share_eval.py."""
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--dev-seeds", type=int, default=len(DEV_SEEDS), help="how many dev seeds")
    parser.add_argument(
        "--test-seeds", type=int, default=len(TEST_SEEDS), help="how many test seeds"
    )


def seeds_from(parser: argparse.ArgumentParser, args) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The dev and test seeds the arguments ask for (a one-line usage error if they make no set)."""
    if args.weeks < 1:
        parser.error("--weeks must be at least 1")
    if args.dev_seeds < 1:
        parser.error("--dev-seeds must be at least 1 (thresholds are tuned on them)")
    if args.test_seeds < 0:
        parser.error("--test-seeds must be 0 or more")
    return DEV_SEEDS[: args.dev_seeds], TEST_SEEDS[: args.test_seeds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_arguments(parser)
    parser.add_argument("--only", default="", help="comma-separated detector names (default: all)")
    parser.add_argument("--plot", type=Path, default=None, help="a week of a test text series")
    parser.add_argument(
        "--compare-module",
        type=Path,
        default=None,
        help="another version of flows/detector.py to score beside the current one",
    )
    parser.add_argument(
        "--no-texts",
        action="store_true",
        help="leave out the series built from ../shared/data (the other families score in seconds)",
    )
    parser.add_argument(
        "--overrides",
        default=None,
        metavar="JSON",
        help='also score yuqing with these DetectorConfig fields changed, e.g. {"burst_alpha": 0.05}',
    )
    args = parser.parse_args(argv)
    dev_seeds, test_seeds = seeds_from(parser, args)
    if args.plot is not None and args.test_seeds < 1:
        parser.error("--plot draws a test series: it needs --test-seeds 1 or more")
    extra = [module_candidate(args.compare_module)] if args.compare_module else []
    if args.overrides is not None:
        try:
            overrides = json.loads(args.overrides)
            if not isinstance(overrides, dict):
                raise TypeError(f"expected a JSON object, got {args.overrides!r}")
            extra.append(yuqing_candidate(overrides))
        except (ValueError, TypeError) as e:
            parser.error(f"--overrides: {e}")
    out = sys.stdout
    out.write(f"weeks={args.weeks} dev seeds={list(dev_seeds)} test seeds={list(test_seeds)}\n")
    texts = not args.no_texts
    splits = {"dev": build_set(weeks=args.weeks, seeds=dev_seeds, with_texts=texts)}
    if test_seeds:  # --test-seeds 0: a dev-only run, for trying a change without the test seeds
        splits["test"] = build_set(weeks=args.weeks, seeds=test_seeds, with_texts=texts)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    comparison = []
    for candidate in [*candidates(), *extra]:
        if wanted and candidate.name not in wanted and candidate not in extra:
            continue
        cache: dict = {}
        tuned, _ = tune(candidate, splits["dev"], cache)
        settings = [(tuned, "tuned on dev")]
        if candidate.published is not None and not math.isclose(candidate.published, tuned):
            label = "published" if candidate.score_once else "default"
            settings.append((candidate.published, label))
        for value, label in settings:
            for split, series_list in splits.items():
                results = run_candidate(candidate, series_list, value, cache)
                setting = f"{value:.3g} ({label})"
                if candidate.name.startswith("yuqing") or candidate.name == "oracle scan":
                    title = f"{candidate.name}, threshold {setting}, {split} seeds"
                    out.write(f"\n#### {title}\n\n{markdown(summarise(results))}\n\n")
                    out.write(markdown(recall_by_size(results)) + "\n\n")
                    out.write(markdown(recall_by_rate(results)) + "\n\n")
                    out.write(markdown(recall_by_evidence(results)) + "\n\n")
                    out.write(markdown(recall_by_week(results)) + "\n")
                summary = summarise(results).set_index("family")
                comparison.append({
                    "detector": candidate.name, "threshold": setting, "seeds": split,
                    "recall": summary.loc["all", "recall"],
                    "recall_d1": summary.loc["all", "recall_d1"],
                    "recall_4sd": recall_by_size(results).set_index("size_sd").loc[4.0, "recall"],
                    "recall_4sd_events": recall_of_events(results),
                    "precision": summary.loc["all", "precision"],
                    "false_per_key_week": summary.loc["all", "false_per_key_week"],
                    "worst_family": summary.drop(index="all")["false_per_key_week"].max(),
                })  # fmt: skip
        out.flush()
    out.write("\n#### comparison\n\n" + markdown(pd.DataFrame(comparison)) + "\n")
    if args.plot is not None:
        example = next(s for s in splits["test"] if s.family == "texts" and "negative" in s.name)
        plot_series(example, score_series(example.times, example.values), args.plot)
        out.write(f"\nplot written to {args.plot}\n")


if __name__ == "__main__":
    main()
