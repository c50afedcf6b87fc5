"""Series shapes the labelled set does not have, and what the detector does on them.

    python -m flows.detector_shapes [--days 14] [--seeds 3]

The evaluation set (``flows.detector_eval``) has smooth daily profiles. Real series also have
steps at the same minute every day (a market open; NAB's ``art_daily`` series), values that
are mostly one number (a quantised gauge: 0, now and then 0.5), feed outages (a busy key
empty for hours), and a first hour with no history. For each shape the table gives the alert episodes a day after the first week, with
the default detector and with one of its safeguards switched off:

* ``no fine correction``: ``fine_gate`` so high that the 5-minute time-of-day correction is
  never used;
* ``no recurrence rule``: ``recur_within = 0``, so an alert at yesterday's time (or last
  week's) is not taken as a daily (weekly) pattern;
* ``no blip rule``: ``max_opens_per_day`` so high that a key alerting all day never learns
  its alerting windows.

The last rows are plain noise (Gaussian, Poisson), where every episode is a false alert. Then
come two shares: of seasonal count series whose feed was silent for 3 hours, those that alert
within 2 hours of it coming back, with the outage rule and without it (``outage_p = 0``, so
the empty hours are learnt as a new level); and of plain Gaussian series, those that score
3.75 or more in their first hour (before the detector may alert, but a backtest of
``anomaly_score`` would count it). Last, a gauge with busy weekday afternoons and flat
weekends (``weekday_gauge``), over five weeks: the alert episodes a week in weeks 3-5, with
the weekly recurrence rule and without it (``recur_days = (1,)``). Without it an hour of the
week that alerted once is never learnt, so some series alert at that hour every week.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

import numpy as np
import pandas as pd

from flows.detector import DetectorConfig, score_series
from flows.detector_eval import PER_DAY, WINDOW

logger = logging.getLogger(__name__)

START = pd.Timestamp("2014-04-01", tz="UTC")
WEEK_START = pd.Timestamp("2014-04-07", tz="UTC")  # a Monday
WEEKLY_DAYS = 35
VARIANTS = {
    "default": {},
    "no fine correction": {"fine_gate": 1e9},
    "no recurrence rule": {"recur_within": 0.0},
    "no blip rule": {"max_opens_per_day": 10**6},
}


def daily_steps(days: int, rng: np.random.Generator, *, counts: bool):
    """A square daily pattern like NAB's art_daily series: 20 at night, 67 at 9:00, 80 from
    10:00 to 18:00, 31 and 22 in the evening; steps an hourly curve cannot follow. Counts are
    Poisson around it; otherwise the noise is uniform on +-2."""
    times = pd.date_range(START, periods=days * PER_DAY, freq=WINDOW)
    hour = np.asarray(times.hour + times.minute / 60)
    levels = [(9, 10, 67.0), (10, 18, 80.0), (18, 19, 31.0), (19, 20, 22.0)]
    mean = np.select(
        [(hour >= a) & (hour < b) for a, b, _ in levels], [v for *_, v in levels], 20.0
    )
    if counts:
        return times, rng.poisson(mean).astype(float)
    return times, mean + rng.uniform(-2, 2, len(times))


def quantised(days: int, rng: np.random.Generator):
    """0, and 0.5 in one window of fifteen: a gauge that is mostly one number."""
    times = pd.date_range(START, periods=days * PER_DAY, freq=WINDOW)
    return times, (rng.standard_normal(len(times)) > 1.5) * 0.5


def outage(days: int, rng: np.random.Generator, hours: int = 3):
    """Seasonal Poisson counts (14.4 a window at the 15:00 peak, 2.4 at night) with the feed
    silent for ``hours`` from 12:00 on day 9: those windows are empty."""
    times = pd.date_range(START, periods=days * PER_DAY, freq=WINDOW)
    hour = np.asarray(times.hour + times.minute / 60)
    values = rng.poisson(8.0 * (0.3 + 1.5 * np.exp(-(((hour - 15) / 3) ** 2)))).astype(float)
    start = 9 * PER_DAY + 12 * 12
    values[start : start + 12 * hours] = 0.0
    return times, values


def weekday_gauge(days: int, rng: np.random.Generator):
    """A continuous gauge (noise sd 1) whose weekday afternoons peak 16 sd above the night
    (a bell curve at 15:00) and whose weekends are 0.4 of that pattern; it starts on a
    Monday."""
    times = pd.date_range(WEEK_START, periods=days * PER_DAY, freq=WINDOW)
    hour = np.asarray(times.hour + times.minute / 60)
    weekend = np.where(np.asarray(times.day_of_week) >= 5, 0.4, 1.0)
    busy = 0.4 + 2.0 * np.exp(-(((hour - 15) / 3.5) ** 2))
    return times, 100 + 8 * (busy * weekend - 1) + rng.standard_normal(len(times))


def plain(days: int, rng: np.random.Generator, *, counts: bool):
    times = pd.date_range(START, periods=days * PER_DAY, freq=WINDOW)
    if counts:
        return times, rng.poisson(5.0, len(times)).astype(float)
    return times, 50 + rng.standard_normal(len(times))


SHAPES = {
    "daily steps (continuous)": lambda days, rng: daily_steps(days, rng, counts=False),
    "daily steps (counts)": lambda days, rng: daily_steps(days, rng, counts=True),
    "quantised 0 / 0.5": quantised,
    "plain Gaussian noise": lambda days, rng: plain(days, rng, counts=False),
    "plain Poisson(5) counts": lambda days, rng: plain(days, rng, counts=True),
}


def episodes_per_day(times, values, config: DetectorConfig, after_day: int = 7) -> float:
    opened = np.flatnonzero(score_series(times, values, config)["opened"].to_numpy())
    days = len(values) / PER_DAY - after_day
    return float((opened >= after_day * PER_DAY).sum() / days)


def comeback_share(seeds: int, config: DetectorConfig, hours: int = 3) -> float:
    """The share of ``outage`` series with an episode opening within 2 hours of the feed's
    return."""
    back = 9 * PER_DAY + 12 * 12 + 12 * hours
    hits = 0
    for seed in range(4 * seeds):
        times, values = outage(14, np.random.default_rng(seed), hours)
        opened = np.flatnonzero(score_series(times, values, config)["opened"].to_numpy())
        hits += bool(((opened >= back) & (opened < back + 24)).any())
    return hits / (4 * seeds)


def weekly_rate(seeds: int, config: DetectorConfig) -> float:
    """Alert episodes a week in weeks 3-5 of ``4 x seeds`` five-week ``weekday_gauge``
    series."""
    opened_late = 0
    for seed in range(4 * seeds):
        times, values = weekday_gauge(WEEKLY_DAYS, np.random.default_rng(seed))
        opened = np.flatnonzero(score_series(times, values, config)["opened"].to_numpy())
        opened_late += int((opened >= 14 * PER_DAY).sum())
    return opened_late / (4 * seeds) / (WEEKLY_DAYS / 7 - 2)


def first_hour_share(seeds: int, level: float) -> float:
    """The share of plain Gaussian series (sd 1 or 20) scoring ``level`` in their first hour."""
    times = pd.date_range(START, periods=PER_DAY // 24, freq=WINDOW)
    hits = 0
    for seed in range(20 * seeds):
        rng = np.random.default_rng(seed)
        values = 100 + rng.normal(0, 20 if seed % 2 else 1, len(times))
        hits += bool((score_series(times, values)["anomaly_score"] >= level).any())
    return hits / (20 * seeds)


def table(days: int, seeds: int) -> pd.DataFrame:
    rows = []
    for shape, make in SHAPES.items():
        row = {"shape": shape}
        for variant, overrides in VARIANTS.items():
            config = replace(DetectorConfig(), **overrides)
            rates = [
                episodes_per_day(*make(days, np.random.default_rng(seed)), config)
                for seed in range(seeds)
            ]
            row[variant] = round(float(np.mean(rates)), 2)
        rows.append(row)
        logger.info("scored %s", shape)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.detector_shapes", description=__doc__)
    parser.add_argument("--days", type=int, default=14, help="days per series (at least 8)")
    parser.add_argument("--seeds", type=int, default=3, help="series per shape")
    args = parser.parse_args(argv)
    if args.days < 8 or args.seeds < 1:
        parser.exit(2, "detector_shapes: --days must be at least 8 and --seeds at least 1\n")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    frame = table(args.days, args.seeds)
    out = sys.stdout
    out.write(f"Alert episodes per day after day 7 ({args.seeds} series of {args.days} days)\n\n")
    out.write("| " + " | ".join(frame.columns) + " |\n")
    out.write("|" + "---|" * len(frame.columns) + "\n")
    for row in frame.itertuples(index=False):
        out.write("| " + " | ".join(str(v) for v in row) + " |\n")
    back = comeback_share(args.seeds, DetectorConfig())
    back_off = comeback_share(args.seeds, DetectorConfig(outage_p=0.0))
    out.write(
        f"\nCount series alerting within 2 hours of a 3-hour outage's end: {back:.2f} "
        f"(no outage rule: {back_off:.2f})\n"
    )
    share = first_hour_share(args.seeds, 3.75)
    out.write(f"Plain Gaussian series scoring >= 3.75 in their first hour: {share:.2f}\n")
    weekly = weekly_rate(args.seeds, DetectorConfig())
    weekly_off = weekly_rate(args.seeds, DetectorConfig(recur_days=(1,)))
    out.write(
        f"Weekday/weekend gauges ({WEEKLY_DAYS} days): alert episodes a week in weeks 3-5: "
        f"{weekly:.2f} (no weekly recurrence: {weekly_off:.2f})\n"
    )


if __name__ == "__main__":
    main()
