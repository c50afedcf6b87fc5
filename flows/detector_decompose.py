"""Where the detector loses against the oracle: swap the truth in for one part at a time.

    python -m flows.detector_decompose [--family counts|sparse] [--level 3.75] [--seeds 6]

On the dev seeds of `flows.detector_eval` (count families only, whose true law is a negative
binomial with a known mean and variance per window), each series is scored by the detector
as it is, and by copies of it in which the truth replaces

- the expected value (the baseline): `expected_at` returns the true mean of the window;
- the variance: `dispersion_at` returns the true variance / mean of the window being scored,
  and nothing widens it (no burst or cold-start inflation);
- the burst inflation alone, or all inflation (burst and cold start), switched off.

Everything else (the learning, the scan, the episodes) is the detector's own. It prints recall
(delay <= 2 windows) and false alerts per key and week for every combination at one level, and
the baseline's error after the first week (in true noise sd) split into a slow part (the mean
error of each day), a fast part (the rest) and the part of the fast one that is a bias by hour.
docs/alerts_research.md ("Stop 13") has the results. Diagnostic only: the product never runs this.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
import pandas as pd

from flows.detector import DetectorConfig, SeriesDetector, _epoch
from flows.detector_eval import (
    DEV_SEEDS,
    PER_DAY,
    PER_WEEK,
    LabelledSeries,
    build_set,
    evaluate,
    markdown,
    summarise,
)

# (expected value, variance law, inflation) per row of the table
VARIANTS = (
    ("learnt", "learnt", "burst and cold start"),
    ("true", "learnt", "burst and cold start"),
    ("true", "learnt", "cold start only"),
    ("true", "learnt", "none"),
    ("learnt", "learnt", "cold start only"),
    ("learnt", "true", "none"),
    ("true", "true", "none"),
)
FAMILIES = ("counts", "sparse")


class _TruthDetector(SeriesDetector):
    """The detector with parts of its model replaced by the series' truth."""

    def __init__(self, config: DetectorConfig, series: LabelledSeries, variant: tuple):
        super().__init__(config=config)
        times = np.array([_epoch(t) for t in series.times])
        self._truth_mean = dict(zip(times.tolist(), series.expected.tolist(), strict=True))
        ratio = series.noise_sd**2 / np.maximum(series.expected, 1e-9)
        self._truth_dispersion = dict(zip(times.tolist(), ratio.tolist(), strict=True))
        self._mean, self._variance, self._inflate = variant
        self._now: float | None = None

    def update(self, t, value):
        self._now = _epoch(t)
        return super().update(t, value)

    def expected_at(self, t):
        if self._mean == "true":
            return max(self.config.min_rate, self._truth_mean[_epoch(t)])
        return super().expected_at(t)

    def dispersion_at(self, expected: float) -> float:
        # the window being scored (learning clips older windows with it too: close enough, the
        # true dispersion moves slowly)
        if self._variance == "true" and self._now in self._truth_dispersion:
            return max(1.0, self._truth_dispersion[self._now])
        return super().dispersion_at(expected)

    def _inflation(self) -> float:
        if self._inflate == "none":
            return 1.0
        if self._inflate == "cold start only":
            return 1.0 + self.config.cold_start / (self.learnt + 1.0)
        return super()._inflation()


def score(series: LabelledSeries, config: DetectorConfig, variant: tuple) -> pd.DataFrame:
    detector = _TruthDetector(config, series, variant)
    rows = [
        (s.expected, int(s.alerting))
        for s in (detector.update(t, v) for t, v in zip(series.times, series.values, strict=True))
    ]
    return pd.DataFrame(rows, columns=["expected", "alert"])


def baseline_error(series: LabelledSeries, expected: np.ndarray) -> dict:
    """The baseline's error in true noise sd after week 1, away from spikes, bursts, shifts."""
    n = len(expected)
    keep = np.zeros(n, dtype=bool)
    keep[PER_WEEK:] = True
    for spike in series.spikes:
        keep[max(0, spike.onset - 3) : spike.end + 24] = False
    for start, end in series.bursts:
        keep[start : end + 24] = False
    for shift in series.shifts:
        keep[shift : shift + PER_DAY] = False
    frame = pd.DataFrame(
        {
            "error": (expected - series.expected) / series.noise_sd,
            "day": np.arange(n) // PER_DAY,
            "hour": (np.arange(n) % PER_DAY) // 12,
        }
    )[keep]
    slow = frame.groupby("day")["error"].transform("mean")
    fast = frame["error"] - slow
    return {
        "mae": frame["error"].abs().mean(),
        "slow_sd": slow.std(),
        "fast_sd": fast.std(),
        "hour_bias_sd": fast.groupby(frame["hour"]).mean().std(),
    }


def decompose(series_list: list[LabelledSeries], level: float) -> tuple[pd.DataFrame, dict]:
    config = replace(DetectorConfig(), open_level=level)
    rows, errors = [], []
    for variant in VARIANTS:
        results = []
        for series in series_list:
            scored = score(series, config, variant)
            results.append(evaluate(series, scored["alert"].to_numpy().astype(bool)))
            if variant == VARIANTS[0]:
                errors.append(baseline_error(series, scored["expected"].to_numpy()))
        overall = summarise(results).set_index("family").loc["all"]
        rows.append(
            {
                "expected value": variant[0],
                "variance": variant[1],
                "inflation": variant[2],
                "recall": overall["recall"],
                "false_per_key_week": overall["false_per_key_week"],
            }
        )
    error = pd.DataFrame(errors).mean().round(3).to_dict()
    return pd.DataFrame(rows), error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.detector_decompose", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--family", choices=FAMILIES, default="counts")
    parser.add_argument("--level", type=float, default=DetectorConfig().open_level)
    parser.add_argument("--seeds", type=int, default=len(DEV_SEEDS), help="how many dev seeds")
    parser.add_argument("--weeks", type=int, default=4)
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= len(DEV_SEEDS):
        parser.error(f"--seeds must be 1..{len(DEV_SEEDS)}, got {args.seeds}")
    if args.weeks < 2:
        parser.error(
            f"--weeks must be at least 2 (the error is measured after week 1), got {args.weeks}"
        )
    series_list = [
        s
        for s in build_set(weeks=args.weeks, seeds=DEV_SEEDS[: args.seeds], with_texts=False)
        if s.family == args.family
    ]
    table, error = decompose(series_list, args.level)
    sys.stdout.write(
        f"{args.family}: {len(series_list)} keys x {args.weeks} weeks, level {args.level}\n\n"
        f"{markdown(table)}\n\nbaseline error after week 1 (true noise sd): {error}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
