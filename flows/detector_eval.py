"""A labelled evaluation set for the spike detector, and the script that scores it.

    python -m flows.detector_eval [--weeks 4] [--seeds 6] [--plot docs/detector_example.png]

The set holds three families of 5-minute series, each with injected spikes of known size
(4, 5, 6 and 8 standard deviations, lasting 1 to 3 windows). The size is read in one of two
units (``--unit``; the default scores both, on the same seeds and the same detector settings):

* ``noise``: the TRUE sd of the local noise at the spike's window (the residual after the
  seasonal pattern, trend and shift: sqrt(dispersion x mean) for counts, the noise scale for
  continuous series). The hardest reading;
* ``series``: the robust sd of the series itself, MAD x 1.4826 of the key's NON-spike values in
  the 7 days (2016 windows) before the spike's onset, or of all the key's non-spike values when
  fewer than one day (288) of non-spike windows precede the onset (or their MAD is 0). It
  includes the seasonal swing, as in NAB-style benchmarks.

The families:

* ``counts``: negative-binomial counts with an hour-of-day profile (market hours busy, nights
  quiet), quiet weekends, a trend, one persistent level shift, and two noise bursts (three hours
  at three times the variance) that are NOT labelled: alerts there are false;
* ``gauss`` / ``heavy``: a continuous series with the same structure, Gaussian or Student-t
  (5 degrees of freedom) noise;
* ``texts``: counts built from ``../shared/data``: labelled finance tweets sampled onto a
  synthetic timeline (their own label mix, a seasonal arrival rate), one series per sentiment,
  each deduplicated by story id; spikes are bursts of extra tweets of that sentiment.

A spike counts as found when the detector is alerting at its first or second window
(``within 2 windows``); its delay is the window of the first alert minus the onset. Every
alert episode that opens outside a spike (or the two windows after it) and outside the 2 hours
after a level shift is a false alert. Precision is found spikes' episodes over all episodes
(level-shift episodes aside). Nothing here is tuned on the test seeds: the seeds are drawn
from ``--seed-base``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flows.detector import DetectorConfig, score_series

logger = logging.getLogger(__name__)

WINDOW = pd.Timedelta(minutes=5)
PER_DAY = 288
SPIKE_SIZES = (4.0, 5.0, 6.0, 8.0)
STORY_HORIZON = PER_DAY  # a story counts again after a day
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UNITS = ("noise", "series")
TRAILING = 7 * PER_DAY  # the series-robust sd looks back one week ...
MIN_TRAILING = PER_DAY  # ... and needs a day of non-spike windows, else the whole series


@dataclass
class Spike:
    onset: int
    duration: int
    size_sd: float
    unit_sd: float = float("nan")  # one sd in the series' own units, in the chosen reading


@dataclass
class LabelledSeries:
    name: str
    family: str
    times: pd.DatetimeIndex
    values: np.ndarray
    spikes: list[Spike]
    shifts: list[int]  # onsets of persistent level shifts
    bursts: list[tuple[int, int]]  # unlabelled noise bursts [start, end)


def _profile(n: int, start: pd.Timestamp, rng: np.random.Generator) -> np.ndarray:
    """A multiplicative seasonal profile: busy market hours, quiet nights and weekends."""
    times = pd.date_range(start, periods=n, freq=WINDOW)
    hour = np.asarray(times.hour + times.minute / 60)
    busy = np.exp(-(((hour - 15.0) / 3.5) ** 2))  # peaks at 15:00 UTC (US open)
    amplitude = rng.uniform(1.0, 3.0)
    weekend = np.where(np.asarray(times.day_of_week) >= 5, rng.uniform(0.3, 0.6), 1.0)
    return (0.4 + amplitude * busy) / (0.4 + amplitude * 0.35) * weekend


def spike_mask(n: int, spikes: list[Spike]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for s in spikes:
        mask[s.onset : s.onset + s.duration] = True
    return mask


def _robust_sd(values: np.ndarray) -> float:
    median = np.median(values)
    return 1.4826 * float(np.median(np.abs(values - median)))


def series_robust_sd(values: np.ndarray, spikes: list[Spike], onset: int) -> float:
    """MAD x 1.4826 of the non-spike values in the 7 days before ``onset``.

    Falls back to all non-spike values of the series when fewer than a day of them precede the
    onset or their MAD is 0 (and to 1.0 if that is 0 too). Spike windows never count.
    """
    clean = ~spike_mask(len(values), spikes)
    lo = max(0, onset - TRAILING)
    trailing = values[lo:onset][clean[lo:onset]]
    sd = _robust_sd(trailing) if len(trailing) >= MIN_TRAILING else 0.0
    if sd <= 0.0:
        sd = _robust_sd(values[clean])
    return sd if sd > 0.0 else 1.0


def _set_units(spikes, values: np.ndarray, unit: str, noise_sd) -> None:
    """Give every spike its unit (call before injecting: ``values`` must be spike-free)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    for s in spikes:
        s.unit_sd = (
            noise_sd(s.onset) if unit == "noise" else series_robust_sd(values, spikes, s.onset)
        )


def _spike_onsets(n: int, count: int, rng: np.random.Generator, avoid: list[int]) -> list[int]:
    onsets: list[int] = []
    while len(onsets) < count:
        onset = int(rng.integers(24, n - 12))  # from the third hour on: cold start included
        if all(abs(onset - o) > 48 for o in onsets + avoid):
            onsets.append(onset)
    return sorted(onsets)


def _layout(n: int, rng: np.random.Generator, spikes_per_week: int, weeks: int):
    shift = int(rng.integers(n // 3, 2 * n // 3))
    bursts = []
    for _ in range(2):
        b = int(rng.integers(PER_DAY, n - 36))
        bursts.append((b, b + 36))
    avoid = [shift] + [b for b, _ in bursts] + [e for _, e in bursts]
    onsets = _spike_onsets(n, spikes_per_week * weeks, rng, avoid)
    spikes = [
        Spike(o, int(rng.integers(1, 4)), float(SPIKE_SIZES[i % len(SPIKE_SIZES)]))
        for i, o in enumerate(onsets)
    ]
    return shift, bursts, spikes


def count_series(
    rng: np.random.Generator,
    *,
    weeks: int,
    base: float,
    name: str,
    spikes_per_week: int = 3,
    unit: str = "noise",
) -> LabelledSeries:
    n = weeks * 7 * PER_DAY
    start = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday
    mean = base * _profile(n, start, rng)
    mean *= np.linspace(1.0, rng.uniform(0.7, 1.4), n)  # trend
    shift, bursts, spikes = _layout(n, rng, spikes_per_week, weeks)
    mean[shift:] *= rng.choice([0.6, 1.6])
    dispersion = np.full(n, rng.uniform(1.0, 1.6))
    for b, e in bursts:
        dispersion[b:e] *= 3.0
    values = _neg_binomial(rng, mean, dispersion)
    _set_units(spikes, values, unit, lambda t: math.sqrt(dispersion[t] * mean[t]))
    for s in spikes:
        values[s.onset : s.onset + s.duration] += math.ceil(s.size_sd * s.unit_sd)
    times = pd.date_range(start, periods=n, freq=WINDOW)
    return LabelledSeries(name, "counts", times, values.astype(float), spikes, [shift], bursts)


def _neg_binomial(rng: np.random.Generator, mean: np.ndarray, dispersion: np.ndarray):
    over = dispersion > 1.0001
    values = rng.poisson(mean).astype(np.int64)
    r = mean[over] / (dispersion[over] - 1.0)
    values[over] = rng.negative_binomial(r, 1.0 / dispersion[over])
    return values


def continuous_series(
    rng: np.random.Generator,
    *,
    weeks: int,
    heavy: bool,
    name: str,
    spikes_per_week: int = 3,
    unit: str = "noise",
) -> LabelledSeries:
    n = weeks * 7 * PER_DAY
    start = pd.Timestamp("2026-01-05", tz="UTC")
    sigma = 1.0
    level = 100.0 + 8.0 * (_profile(n, start, rng) - 1.0)  # seasonal swing of ~8 sd
    level += np.linspace(0.0, rng.uniform(-10, 10), n)  # trend
    shift, bursts, spikes = _layout(n, rng, spikes_per_week, weeks)
    level[shift:] += rng.choice([-8.0, 8.0])
    scale = np.full(n, sigma)
    for b, e in bursts:
        scale[b:e] *= 3.0
    if heavy:  # Student t(5) scaled to a robust sd of 1 (its MAD is 0.727 x 1.4826 = 1.078)
        noise = rng.standard_t(5, size=n) / 1.078
    else:
        noise = rng.standard_normal(n)
    values = level + scale * noise
    _set_units(spikes, values, unit, lambda t: sigma)
    for s in spikes:
        values[s.onset : s.onset + s.duration] += s.size_sd * s.unit_sd
    times = pd.date_range(start, periods=n, freq=WINDOW)
    family = "heavy" if heavy else "gauss"
    return LabelledSeries(name, family, times, values, spikes, [shift], bursts)


def text_series(
    rng: np.random.Generator,
    texts: pd.DataFrame,
    *,
    weeks: int,
    base: float,
    spikes_per_week: int = 3,
    seed_name: str = "",
    unit: str = "noise",
) -> list[LabelledSeries]:
    """Per-sentiment story counts of labelled tweets sampled onto a synthetic timeline."""
    n = weeks * 7 * PER_DAY
    start = pd.Timestamp("2026-01-05", tz="UTC")
    rate = base * _profile(n, start, rng)
    arrivals = rng.poisson(rate)
    window_of = np.repeat(np.arange(n), arrivals)
    picks = rng.integers(0, len(texts), size=len(window_of))
    items = pd.DataFrame({"window": window_of, "text": texts["text"].to_numpy()[picks]}).assign(
        label=texts["label"].to_numpy()[picks]
    )
    out = []
    times = pd.date_range(start, periods=n, freq=WINDOW)
    for label in sorted(texts["label"].unique()):
        pool = texts[texts["label"] == label]["text"].to_numpy()
        share = float((texts["label"] == label).mean())
        _, bursts, spikes = _layout(n, rng, spikes_per_week, weeks)
        mine = items[items["label"] == label][["window", "text"]]
        # The series-robust sd needs the spike-free story counts (not needed for "noise").
        clean = _story_counts(mine, n) if unit == "series" else np.zeros(n)
        _set_units(spikes, clean, unit, lambda t, p=share: math.sqrt(max(p * rate[t], 0.05)))
        extra = []
        for s in spikes:
            size = math.ceil(s.size_sd * s.unit_sd)
            for w in range(s.onset, s.onset + s.duration):
                for text in rng.choice(pool, size=size, replace=False):
                    extra.append((w, f"{text} {rng.integers(1 << 30)}"))  # distinct stories
        mine = pd.concat([mine, pd.DataFrame(extra, columns=["window", "text"])])
        counts = _story_counts(mine, n)
        out.append(
            LabelledSeries(f"texts-{seed_name}-{label}", "texts", times, counts, spikes, [], [])
        )
    return out


def _story_counts(frame: pd.DataFrame, n: int) -> np.ndarray:
    """Distinct stories per window of ``frame`` (columns window, text)."""
    from flows.stories import story_ids

    frame = frame.sort_values("window", kind="stable")
    frame = frame.assign(story=story_ids(frame["text"].tolist()))
    counts = np.zeros(n)
    last_counted: dict[str, int] = {}
    # A story counts once, in the first window that carries it within STORY_HORIZON.
    for window, story in zip(frame["window"], frame["story"], strict=True):
        if window - last_counted.get(story, -STORY_HORIZON) >= STORY_HORIZON:
            counts[window] += 1
            last_counted[story] = window
    return counts


def build_set(
    *, weeks: int, seeds: list[int], with_texts: bool = True, unit: str = "noise"
) -> list[LabelledSeries]:
    series: list[LabelledSeries] = []
    texts = None
    sentiment_csv = SHARED_DATA / "sentiment" / "train.csv"
    if with_texts and sentiment_csv.is_file():
        texts = pd.read_csv(sentiment_csv)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for base in (3.0, 10.0, 40.0):
            name = f"counts-{seed}-{base:g}"
            series.append(count_series(rng, weeks=weeks, base=base, name=name, unit=unit))
        for heavy, name in ((False, f"gauss-{seed}"), (True, f"heavy-{seed}")):
            series.append(continuous_series(rng, weeks=weeks, heavy=heavy, name=name, unit=unit))
        if texts is not None:
            series += text_series(
                rng, texts, weeks=weeks, base=30.0, seed_name=str(seed), unit=unit
            )
    return series


@dataclass
class SeriesResult:
    name: str
    family: str
    weeks: float
    spikes: int
    found: int
    delays: list[int]
    true_episodes: int
    false_episodes: int
    shift_episodes: int


def evaluate_series(
    series: LabelledSeries, config: DetectorConfig
) -> tuple[SeriesResult, pd.DataFrame]:
    scored = score_series(series.times, series.values, config)
    alert = scored["alert"].to_numpy().astype(bool)
    openings = np.flatnonzero(scored["opened"].to_numpy())
    found, delays = 0, []
    explained = np.zeros(len(alert), dtype=bool)
    for s in series.spikes:
        explained[s.onset : s.onset + s.duration + 2] = True
        hits = np.flatnonzero(alert[s.onset : s.onset + 2])
        if len(hits):
            found += 1
            delays.append(int(hits[0]))
    shifted = np.zeros(len(alert), dtype=bool)
    for shift in series.shifts:
        shifted[shift : shift + 24] = True
    true_episodes = int(explained[openings].sum())
    shift_episodes = int((shifted[openings] & ~explained[openings]).sum())
    false_episodes = len(openings) - true_episodes - shift_episodes
    result = SeriesResult(
        series.name,
        series.family,
        len(alert) / (7 * PER_DAY),
        len(series.spikes),
        found,
        delays,
        true_episodes,
        false_episodes,
        shift_episodes,
    )
    return result, scored


def summarise(results: list[SeriesResult], by: str = "family") -> pd.DataFrame:
    frame = pd.DataFrame([r.__dict__ for r in results])
    rows = []
    groups = list(frame.groupby(by)) + [("all", frame)]
    for name, g in groups:
        delays = [d for ds in g["delays"] for d in ds]
        episodes = g["true_episodes"].sum() + g["false_episodes"].sum()
        rows.append(
            {
                by: name,
                "keys": len(g),
                "spikes": int(g["spikes"].sum()),
                "recall": g["found"].sum() / max(1, g["spikes"].sum()),
                "precision": g["true_episodes"].sum() / max(1, episodes),
                "mean_delay_windows": float(np.mean(delays)) if delays else float("nan"),
                "false_alerts_per_key_week": g["false_episodes"].sum() / g["weeks"].sum(),
            }
        )
    return pd.DataFrame(rows)


def recall_by_size(series_list: list[LabelledSeries], scored: list[pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for series, frame in zip(series_list, scored, strict=True):
        alert = frame["alert"].to_numpy().astype(bool)
        for s in series.spikes:
            rows.append((s.size_sd, s.duration, bool(alert[s.onset : s.onset + 2].any())))
    frame = pd.DataFrame(rows, columns=["size_sd", "duration", "found"])
    table = frame.pivot_table(index="size_sd", columns="duration", values="found", aggfunc="mean")
    table.columns = [f"recall, {d} window{'s' if d > 1 else ''}" for d in table.columns]
    overall = frame.groupby("size_sd").agg(spikes=("found", "size"), recall=("found", "mean"))
    return overall.join(table).reset_index()


def plot_series(series: LabelledSeries, scored: pd.DataFrame, path: Path, days: int = 7) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = days * PER_DAY
    times, values = series.times[:n], series.values[:n]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, height_ratios=[3, 1.3])
    top.plot(times, values, lw=0.6, color="0.35", label="observed")
    top.plot(times, scored["expected"][:n], lw=1.0, color="tab:blue", label="expected (baseline)")
    for i, s in enumerate(s for s in series.spikes if s.onset < n):
        top.axvspan(
            times[s.onset],
            times[min(n - 1, s.onset + s.duration)],
            color="tab:orange",
            alpha=0.35,
            label="injected spike" if i == 0 else None,
        )
    for i, (b, e) in enumerate((b, e) for b, e in series.bursts if b < n):
        top.axvspan(
            times[b],
            times[min(n - 1, e)],
            color="tab:purple",
            alpha=0.12,
            label="noise burst (unlabelled)" if i == 0 else None,
        )
    opened = np.flatnonzero(scored["opened"].to_numpy()[:n])
    top.scatter(times[opened], values[opened], color="tab:red", zorder=5, s=25, label="alert opens")
    top.set_ylabel("stories per 5 min")
    top.legend(loc="upper left", fontsize=8, ncol=3)
    top.set_title(f"{series.name}: detections over {days} days")
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


def run(
    *,
    weeks: int,
    seeds: list[int],
    config: DetectorConfig,
    plot: Path | None,
    unit: str = "noise",
):
    series_list = build_set(weeks=weeks, seeds=seeds, unit=unit)
    results, scored = [], []
    for series in tqdm(series_list, desc=f"scoring ({unit} sd)", unit="series"):
        result, frame = evaluate_series(series, config)
        results.append(result)
        scored.append(frame)
    if plot is not None:
        example = next(i for i, s in enumerate(series_list) if s.family == "texts")
        plot_series(series_list[example], scored[example], plot)
    return summarise(results), recall_by_size(series_list, scored), results


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table, floats to three places."""

    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=6, help="how many seeds (each: 8 keys)")
    parser.add_argument("--seed-base", type=int, default=1000)
    parser.add_argument("--open-level", type=float, default=DetectorConfig().open_level)
    parser.add_argument("--close-level", type=float, default=DetectorConfig().close_level)
    parser.add_argument("--plot", type=Path, default=None, help="drawn for the first unit")
    parser.add_argument(
        "--unit",
        choices=[*UNITS, "both"],
        default="both",
        help="spike size in sd of the local noise, of the series (MAD x 1.4826), or both",
    )
    args = parser.parse_args(argv)
    config = replace(DetectorConfig(), open_level=args.open_level, close_level=args.close_level)
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    units = UNITS if args.unit == "both" else (args.unit,)
    out = sys.stdout
    out.write(
        f"open_level={config.open_level} close_level={config.close_level} "
        f"weeks={args.weeks} seeds={seeds[0]}..{seeds[-1]}\n"
    )
    for i, unit in enumerate(units):
        plot = args.plot if i == 0 else None
        summary, by_size, _ = run(
            weeks=args.weeks, seeds=seeds, config=config, plot=plot, unit=unit
        )
        label = {"noise": "true local-noise sd", "series": "series robust sd (MAD x 1.4826)"}
        out.write(f"\n### spike size in units of the {label[unit]} (--unit {unit})\n\n")
        out.write(markdown(summary) + "\n\n")
        out.write(markdown(by_size) + "\n")
        out.flush()
    if args.plot is not None:
        out.write(f"\nplot written to {args.plot}\n")


if __name__ == "__main__":
    main()
