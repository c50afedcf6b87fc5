"""The most any detector can find of the evaluation set's spikes: a Neyman-Pearson bound.

    python -m flows.detector_bound [--size 4] [--alarms-per-week 1] [--samples 400000]
                                   [--on-set dev|test]

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

No detector knows a spike's size or shape in advance either. The second table bounds a test
that is told the baseline, the law and the onset but not that: the likelihood-ratio test against
the mixture of the set's sizes and shapes (a Bayes test, whose power against the mixture is its
average power over the set's spikes). Beside it, the power at the same size of yuqing's own
statistic (the largest z of the sums of the last 1-3 windows) computed with the true law: how
far the statistic itself is from the best test. ``--on-set`` averages the blind bound over the
spikes of the evaluation's dev or test seeds, from the true expected value and law at each
onset.

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

from flows.detector_eval import (
    MAX_DELAY,
    PER_WEEK,
    SPIKE_SIZES,
    T_DF,
    count_excess,
    markdown,
    spike_shape,
)

RISES = (1, 2, 3)
RATES = (0.3, 0.5, 1.0, 3.0, 10.0)  # Poisson means shown in the tables
HALF_LIVES = tuple(np.linspace(1.0, 4.0, 7))
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
    return count_robust_sd(mu, mu)


def count_pmf(mean: float, variance: float, top: int) -> np.ndarray:
    """P(X = 0..top) for counts of this mean and variance: Poisson, or a negative binomial
    when the variance is larger (as the set draws them)."""
    x = np.arange(top + 1)
    if variance <= mean * 1.0001:
        return stats.poisson.pmf(x, mean)
    return stats.nbinom.pmf(x, mean**2 / (variance - mean), mean / variance)


def count_top(mean: float, variance: float, extra: float = 0.0) -> int:
    """A count above which the law (plus ``extra`` Poisson arrivals) has no mass worth keeping."""
    sd = math.sqrt(variance + extra)
    return int(mean + extra + 12.0 * sd + 10)


def count_robust_sd(mean: float, variance: float) -> float:
    """1.4826 x the median of |X - mean| for the counts of :func:`count_pmf`."""
    x = np.arange(count_top(mean, variance) + 1)
    dist = np.abs(x - mean)
    order = np.argsort(dist, kind="stable")
    cdf = np.cumsum(count_pmf(mean, variance, len(x) - 1)[order])
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


# -- a test that is not told the spike's size or shape -----------------------------------------
#
# No detector knows how big a spike will be or how it will rise and decay. The test with the
# best power on average over the set's spikes is then the likelihood-ratio test of the noise
# against the mixture of the set's spike sizes and shapes (a Bayes test: its average power is
# the power against the mixture), so its average power bounds the recall of every detector on
# such spikes, still told the true baseline, noise law and onset.


def spike_mixture(sizes=SPIKE_SIZES) -> list[np.ndarray]:
    """The heights (robust sd) of every spike the set draws, equally likely: each size, rise and
    half-life."""
    return [h for size in sizes for h in shapes(size)]


def _log_mean_exp(parts: np.ndarray) -> np.ndarray:
    """log of the mean of exp over the first axis."""
    top = parts.max(axis=0)
    return top + np.log(np.mean(np.exp(parts - top), axis=0))


def blind_count_power(
    mean: float, variance: float, alpha: float, rng, n: int, max_cells: int = 2_000_000
) -> float:
    """Best average power over the set's spikes on counts of this mean and variance, for a test
    that is not told the spike's size or shape; a spike is extra Poisson arrivals. Exact while
    the windows have at most ``max_cells`` joint outcomes worth keeping, else Monte Carlo with
    ``n`` draws (ties of the ratio, which matter only for sparse counts, are not randomised)."""
    unit = count_robust_sd(mean, variance)
    excess = np.array([count_excess(h, unit) for h in spike_mixture()])  # spikes x windows
    top = count_top(mean, variance, float(excess.max()))
    x = np.arange(top + 1)
    noise = count_pmf(mean, variance, top)
    spiked = {e: np.convolve(noise, stats.poisson.pmf(x, e))[: top + 1] for e in np.unique(excess)}
    windows = excess.shape[1]
    if (top + 1) ** windows <= max_cells:  # exact: every outcome of the windows
        p0 = noise
        for _ in range(windows - 1):
            p0 = np.multiply.outer(p0, noise)
        p1 = np.zeros_like(p0)
        for row in excess:
            cell = spiked[row[0]]
            for e in row[1:]:
                cell = np.multiply.outer(cell, spiked[e])
            p1 += cell / len(excess)
        return lr_power(p0.ravel(), p1.ravel(), alpha)
    # Monte Carlo: the ratio's 1 - alpha quantile under noise, then how often a spike passes it
    log_noise = np.log(np.maximum(noise, 1e-300))
    log_spiked = {e: np.log(np.maximum(v, 1e-300)) for e, v in spiked.items()}

    def log_ratio(draws: np.ndarray) -> np.ndarray:
        per_spike = np.stack(
            [sum(log_spiked[e][draws[:, w]] for w, e in enumerate(row)) for row in excess]
        )
        return _log_mean_exp(per_spike) - log_noise[draws].sum(axis=1)

    cdf = np.cumsum(noise)

    def draw(size: int, extra: np.ndarray) -> np.ndarray:
        base = np.searchsorted(cdf, rng.random((size, windows)) * cdf[-1])
        return np.minimum(base + rng.poisson(extra), top)

    cut = np.quantile(log_ratio(draw(n, np.zeros(windows))), 1.0 - alpha)
    which = rng.integers(0, len(excess), n // 10)
    return float(np.mean(log_ratio(draw(len(which), excess[which])) > cut))


def blind_continuous_power(law: str, alpha: float, rng, n: int) -> float:
    """The same on Gaussian (``gauss``) or Student t(5) (``t5``) noise, in robust sd."""
    heights = np.array(spike_mixture())
    if law == "gauss":
        shifts, sample, logpdf = heights, rng.standard_normal, stats.norm.logpdf
    else:
        shifts = heights / T_SCALE

        def sample(size):
            return rng.standard_t(T_DF, size=size)

        def logpdf(v):
            return stats.t.logpdf(v, T_DF)

    def log_ratio(v: np.ndarray) -> np.ndarray:
        per_spike = np.stack([logpdf(v - s).sum(axis=1) for s in shifts])
        return _log_mean_exp(per_spike) - logpdf(v).sum(axis=1)

    windows = heights.shape[1]
    cut = np.quantile(log_ratio(sample((n, windows))), 1.0 - alpha)
    which = rng.integers(0, len(shifts), n // 10)
    return float(np.mean(log_ratio(sample((len(which), windows)) + shifts[which]) > cut))


def _threshold_power(null: np.ndarray, spiked: np.ndarray, alpha: float) -> float:
    """Power of the (randomised) test "score >= c" of size ``alpha``, from samples."""
    values = np.unique(null)[::-1]
    for v in values:
        size = np.mean(null >= v)
        if size > alpha:
            above = np.mean(null > v)
            share = (alpha - above) / (size - above)
            return float(np.mean(spiked > v) + share * np.mean(spiked == v))
    return 1.0


def scan_power(law: str, alpha: float, rng, n: int, mean: float = 1.0) -> float:
    """Average power over the set's spikes of yuqing's statistic computed with the true law
    (``detector_baselines.oracle_score``: the largest z of the sums of the last 1-3 windows),
    opening in any of the windows a detection may use, as a test of size ``alpha``. ``law``:
    ``poisson`` (of this ``mean``), ``gauss`` or ``t5``."""
    from flows.detector_baselines import SCAN, scan_z

    heights = np.array(spike_mixture())
    lead = SCAN - 1  # windows before the onset that the first sums reach back to
    windows = lead + heights.shape[1]
    which = rng.integers(0, len(heights), n // 4)
    if law == "poisson":
        unit = poisson_robust_sd(mean)
        excess = np.array([count_excess(h, unit) for h in heights])[which]
        null = rng.poisson(mean, (n, windows)).astype(float)
        spiked = rng.poisson(mean, (len(which), windows)) + 0.0
        spiked[:, lead:] += rng.poisson(excess)
    else:
        if law == "gauss":
            null, spiked = (
                rng.standard_normal((n, windows)),
                rng.standard_normal((len(which), windows)),
            )
        else:
            null = rng.standard_t(T_DF, (n, windows)) * T_SCALE
            spiked = rng.standard_t(T_DF, (len(which), windows)) * T_SCALE
        spiked[:, lead:] += heights[which]

    def score(x: np.ndarray) -> np.ndarray:  # the best over the windows a detection may use
        mu = np.full(x.shape, mean if law == "poisson" else 0.0)
        sd = np.full(x.shape, {"poisson": math.sqrt(mean), "gauss": 1.0}.get(law, T_SD))
        return scan_z(law, x, mu, sd)[:, lead:].max(axis=1)

    return _threshold_power(score(null), score(spiked), alpha)


def set_ceiling(series, alarms_per_week: float = 1.0, mc: int = 200_000) -> pd.DataFrame:
    """The blind bound at every spike of a labelled set (``flows.detector_eval``), from the true
    expected value and noise law at its onset (held over the windows after it), per family."""
    alpha = size_of(alarms_per_week)
    rng = np.random.default_rng(0)
    cache: dict[tuple, float] = {}
    rows = []
    for s in series:
        for spike in s.spikes:
            if s.law in ("gauss", "t5"):
                key: tuple = (s.law, 0.0, 0.0)
            else:  # counts: the onset's mean (2 digits) and variance / mean (1 decimal)
                mean = float(s.expected[spike.onset])
                ratio = float(s.noise_sd[spike.onset]) ** 2 / mean if s.law == "nb" else 1.0
                key = ("counts", float(f"{mean:.2g}"), max(round(ratio, 1), 1.0))
            if key not in cache:
                law, mean, ratio = key
                cache[key] = (
                    blind_count_power(mean, mean * ratio, alpha, rng, mc)
                    if law == "counts"
                    else blind_continuous_power(law, alpha, rng, mc)
                )
            rows.append((s.family, cache[key]))
    frame = pd.DataFrame(rows, columns=["family", "bound"])
    table = frame.groupby("family", sort=False)["bound"].agg(spikes="size", best_recall="mean")
    table.loc["all"] = (len(frame), frame["bound"].mean())
    return table.reset_index()


def size_of(alarms_per_week: float) -> float:
    """The test's size: the chance a detector with this many false alerts a week opens in one
    of the windows a detection may use."""
    return min(1.0, (MAX_DELAY + 1) * alarms_per_week / PER_WEEK)


def blind_bounds(alarms_per_week: float, rates=RATES, mc: int = 400_000) -> pd.DataFrame:
    """The bound for a test not told the spike's size or shape, over the set's mix of sizes
    (``SPIKE_SIZES``) and shapes, per noise law."""
    alpha = size_of(alarms_per_week)
    rng = np.random.default_rng(0)
    rows = [
        (
            f"Poisson, mean {mu:g}",
            blind_count_power(mu, mu, alpha, rng, mc),
            scan_power("poisson", alpha, rng, mc, mu),
        )
        for mu in rates
    ]
    for name, law in (("Gaussian", "gauss"), (f"Student t({T_DF})", "t5")):
        rows.append(
            (name, blind_continuous_power(law, alpha, rng, mc), scan_power(law, alpha, rng, mc))
        )
    return pd.DataFrame(rows, columns=["noise", "best_recall", "yuqing_scan_true_law"])


def bounds(size: float, alarms_per_week: float, rates=RATES, mc: int = 400_000) -> pd.DataFrame:
    """The bound, averaged over the set's spike shapes, per noise law."""
    alpha = size_of(alarms_per_week)
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
        "--samples", type=int, default=400_000, help="Monte Carlo draws (continuous laws)"
    )
    parser.add_argument(
        "--on-set",
        choices=("dev", "test"),
        help="also the blind bound at every spike of the evaluation's dev or test seeds",
    )
    args = parser.parse_args(argv)
    if args.size <= 0 or args.alarms_per_week <= 0 or args.samples < 1000:
        parser.error("--size and --alarms-per-week must be positive, --samples at least 1000")
    budget = f"found within {MAX_DELAY} windows, at {args.alarms_per_week:g} false alert(s) a week"
    table = bounds(args.size, args.alarms_per_week, mc=args.samples)
    sys.stdout.write(f"told the spike, {args.size:g} robust sd, {budget}:\n\n{markdown(table)}\n")
    sizes = ", ".join(f"{v:g}" for v in SPIKE_SIZES)
    blind = blind_bounds(args.alarms_per_week, mc=args.samples)
    sys.stdout.write(
        f"\nnot told its size or shape (the set's mix: {sizes} robust sd), {budget}:\n\n"
        f"{markdown(blind)}\n"
    )
    if args.on_set:
        from flows.detector_eval import DEV_SEEDS, TEST_SEEDS, build_set

        seeds = DEV_SEEDS if args.on_set == "dev" else TEST_SEEDS
        series = build_set(weeks=4, seeds=seeds)
        per_family = set_ceiling(series, args.alarms_per_week, mc=args.samples)
        sys.stdout.write(f"\nnot told, at the {args.on_set} seeds' spikes:\n\n")
        sys.stdout.write(markdown(per_family) + "\n")


if __name__ == "__main__":
    main()
