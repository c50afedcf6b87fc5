"""The most any detector can find of the evaluation set's spikes: a Neyman-Pearson bound.

    python -m flows.detector_bound [--size 4] [--alarms-per-week 1] [--samples 400000]

Give a detector everything no detector has: the true expected value, the true noise law, the
moment a spike starts and its exact shape. It still has to decide from the windows up to
``MAX_DELAY`` after the onset (the evaluation counts a spike as found only then). The best test
of "this spike starts here" on those windows is the likelihood-ratio test (the Neyman-Pearson
lemma), so its power bounds the recall of every detector.

The false-alarm budget: a detector with at most ``alarms_per_week`` false alerts a week opens in
a spike-free window with a probability of ``alarms_per_week / PER_WEEK`` on average. A spike is
found when the alert opens in any of the ``MAX_DELAY + 1`` windows, so the test may have a size
of up to ``MAX_DELAY + 1`` times that, which is generous. Spikes start at random times, and the
power of the best test is concave in its size, so a detector that spends its budget unevenly
over the day finds no more on average.

Spikes have the set's shapes (``flows.detector_eval``): a peak of ``size`` robust sd, a linear
rise over 1, 2 or 3 windows, a decay with a half-life of 1-4 windows (the bound is averaged over
these shapes). The robust sd is the set's, 1.4826 x median |x - mu|, here of the noise law
itself. Noise laws: Poisson counts, Gaussian, and Student t(5) scaled to a robust sd of 1 (the
heavy family). A count spike is modelled as news arriving at a higher rate: extra Poisson
arrivals whose means are the heights, rounded as the set rounds them (the peak rounded up). The
set itself adds a fixed number of stories; a test told that number would know a floor under the
count, which no real spike gives, so this bounds real spikes rather than the set's.

docs/alerts.md ("Is the target met?") has the results. Diagnostic only: the product never
runs this.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import pandas as pd
from scipy import special, stats

from flows.detector_eval import MAX_DELAY, PER_WEEK, count_excess, markdown, spike_shape

RISES = (1, 2, 3)
HALF_LIVES = tuple(np.linspace(1.0, 4.0, 7))
T_DF = 5
T_SCALE = 1.0 / (float(stats.t.ppf(0.75, T_DF)) * 1.4826)  # the t(5) scale of robust sd 1
T_SD = T_SCALE * math.sqrt(T_DF / (T_DF - 2))  # ... and its sd


def shapes(size: float) -> list[np.ndarray]:
    """The heights (robust sd) of the set's spike shapes over the windows a detection may use."""
    return [
        spike_shape(size, rise, half_life)[: MAX_DELAY + 1]
        for rise in RISES
        for half_life in HALF_LIVES
    ]


def poisson_robust_sd(mu: float) -> float:
    """1.4826 x the median of |X - mu| for X ~ Poisson(mu)."""
    top = int(stats.poisson.ppf(1 - 1e-12, mu)) + 1
    x = np.arange(top + 1)
    dist = np.abs(x - mu)
    order = np.argsort(dist, kind="stable")
    cdf = np.cumsum(stats.poisson.pmf(x[order], mu))
    return 1.4826 * float(dist[order][np.searchsorted(cdf, 0.5)])


def lr_power(p0: np.ndarray, p1: np.ndarray, alpha: float) -> float:
    """Power at size ``alpha`` of the (randomised) likelihood-ratio test between two discrete
    laws given as probabilities of the same outcomes."""
    ratio = np.where(p0 > 0, p1 / np.maximum(p0, 1e-300), np.inf)
    order = np.argsort(-ratio, kind="stable")
    size = np.concatenate([[0.0], np.cumsum(p0[order])])
    power = np.concatenate([[0.0], np.cumsum(p1[order])])
    return float(np.interp(alpha, size, power))


def poisson_bound(mu: float, excess: np.ndarray, alpha: float) -> float:
    """Best power of a test for ``excess`` extra counts in windows of Poisson(``mu``) noise."""
    grids = []
    for e in excess:
        top = int(stats.poisson.ppf(1 - 1e-10, mu + e)) + 1
        grids.append(np.arange(top + 1))
    cells = np.meshgrid(*grids, indexing="ij")
    p0 = np.ones(cells[0].shape)
    p1 = np.ones(cells[0].shape)
    for x, e in zip(cells, excess, strict=True):
        p0 *= stats.poisson.pmf(x, mu)
        p1 *= stats.poisson.pmf(x, mu + e)
    return lr_power(p0.ravel(), p1.ravel(), alpha)


def gaussian_bound(heights: np.ndarray, alpha: float) -> float:
    """Best power for a known mean shift ``heights`` (in sd) on Gaussian noise."""
    return float(special.ndtr(np.linalg.norm(heights) + special.ndtri(alpha)))


def t_bound(heights: np.ndarray, alpha: float, rng: np.random.Generator, n: int) -> float:
    """Best power for a known shift ``heights`` (robust sd) on Student t(5) noise, by Monte
    Carlo: the likelihood ratio's 1 - ``alpha`` quantile under noise, then how often a spike
    passes it."""
    shift = heights / T_SCALE

    def log_ratio(x: np.ndarray) -> np.ndarray:
        return (stats.t.logpdf(x - shift, T_DF) - stats.t.logpdf(x, T_DF)).sum(axis=1)

    null = log_ratio(rng.standard_t(T_DF, size=(n, len(shift))))
    cut = np.quantile(null, 1.0 - alpha)
    spiked = log_ratio(rng.standard_t(T_DF, size=(n // 10, len(shift))) + shift)
    return float(np.mean(spiked > cut))


def bounds(
    size: float, alarms_per_week: float, rates=(0.3, 0.5, 1.0, 3.0, 10.0), mc: int = 400_000
) -> pd.DataFrame:
    """The bound, averaged over the set's spike shapes, per noise law."""
    alpha = min(1.0, (MAX_DELAY + 1) * alarms_per_week / PER_WEEK)
    heights = shapes(size)
    rows = []
    for mu in rates:
        unit = poisson_robust_sd(mu)
        power = [poisson_bound(mu, count_excess(h, unit), alpha) for h in heights]
        rows.append((f"Poisson, mean {mu:g}", unit / math.sqrt(mu), float(np.mean(power))))
    rows.append(("Gaussian", 1.0, float(np.mean([gaussian_bound(h, alpha) for h in heights]))))
    rng = np.random.default_rng(0)
    power = [t_bound(h, alpha, rng, mc) for h in heights]
    rows.append((f"Student t({T_DF})", 1.0 / T_SD, float(np.mean(power))))
    return pd.DataFrame(rows, columns=["noise", "robust_sd / sd", "best_recall"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flows.detector_bound", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", type=float, default=4.0, help="spike peak in robust sd")
    parser.add_argument("--alarms-per-week", type=float, default=1.0)
    parser.add_argument(
        "--samples", type=int, default=400_000, help="Monte Carlo draws for the t(5) bound"
    )
    args = parser.parse_args(argv)
    if args.size <= 0 or args.alarms_per_week <= 0 or args.samples < 1000:
        parser.error("--size and --alarms-per-week must be positive, --samples at least 1000")
    table = bounds(args.size, args.alarms_per_week, mc=args.samples)
    sys.stdout.write(
        f"spikes of {args.size:g} robust sd, found within {MAX_DELAY} windows, "
        f"at {args.alarms_per_week:g} false alert(s) per week:\n\n{markdown(table)}\n"
    )


if __name__ == "__main__":
    main()
