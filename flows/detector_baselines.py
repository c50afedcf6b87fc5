"""Published streaming spike detectors, re-implemented for the evaluation (flows/detector_eval.py).

Each function takes a labelled series and returns one score per window computed from that
window and the ones before it; the evaluation alerts where the score reaches a threshold
(chosen on the dev seeds; the authors' own threshold is reported too). All are one-sided
(upward), since yuqing alerts on surges.

* ``rolling_z_score``: (x - mean) / sd of the trailing day (288 windows), the classic
  3-sigma rule and Numenta NAB's "windowed Gaussian" baseline.
* ``skyline_score``: Etsy Skyline's ensemble of 3-sigma rules in the seven-algorithm form that
  NAB ships (median absolute deviation, first hour average, stddev from average, stddev from
  moving average, mean subtraction cumulation, least squares, histogram bins), each on the
  trailing day (Skyline's FULL_DURATION) and the average of the last three points where the
  original uses it; the score is the fraction of algorithms that fire (Skyline alerts on a
  consensus of 6 of 9, i.e. 2/3: 5 of these 7).
* ``seasonal_esd_score``: a streaming form of Twitter's AnomalyDetectionVec (seasonal hybrid
  ESD): the seasonal component is the median of the same time of day over the trailing 14
  days, the residual is scored robustly (median and MAD of the trailing 14 days of residuals)
  and divided by the generalised ESD critical value for that many points at alpha = 0.05
  (direction "pos"), so the authors' rule is score >= 1.
* ``oracle_score``: not a real detector. yuqing's scan statistic (the largest z of the sum of
  the last 1, 2 or 3 windows) computed with the TRUE expected value and noise law of every
  window, which no detector knows; it shows how much any detector could find on this set.

This module is pure numpy/scipy (no Kafka, Prefect or DuckDB).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special, stats

DAY = 288
SCAN = 3


def _trailing(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) rows ending at each window (that window included), NaN before the start."""
    padded = np.r_[np.full(width - 1, np.nan), values.astype(float)]
    return sliding_window_view(padded, width)


def rolling_z_score(series, _threshold: float = float("nan")) -> np.ndarray:
    x = pd.Series(series.values.astype(float))
    past = x.shift(1).rolling(DAY, min_periods=12)
    z = (x - past.mean()) / past.std()
    return z.replace([np.inf, -np.inf], np.nan).fillna(0.0).to_numpy()


def skyline_score(series, _threshold: float = float("nan")) -> np.ndarray:
    x = series.values.astype(float)
    n = len(x)
    w = _trailing(x, DAY)  # (n, DAY)
    valid = ~np.isnan(w)
    count = valid.sum(axis=1)
    tail = pd.Series(x).rolling(3, min_periods=1).mean().to_numpy()  # tail_avg
    votes = np.zeros(n)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        median = np.nanmedian(w, axis=1)
        dev = np.abs(w - median[:, None])
        mad = np.nanmedian(dev, axis=1)
        votes += (mad > 0) & ((x - median) / mad > 6)  # median_absolute_deviation
        # first_hour_average: the hour that started a day ago
        hour = np.full(n, np.nan)
        hour_sd = np.full(n, np.nan)
        if n > DAY:
            block = sliding_window_view(x, 12)  # block[i] = x[i : i + 12]
            idx = np.arange(DAY, n)
            hour[idx] = block[idx - DAY].mean(axis=1)
            hour_sd[idx] = block[idx - DAY].std(axis=1, ddof=1)
        votes += tail - hour > 3 * hour_sd
        mean, sd = np.nanmean(w, axis=1), np.nanstd(w, axis=1, ddof=1)
        votes += tail - mean > 3 * sd  # stddev_from_average
        ewm = pd.Series(x).ewm(com=50)
        votes += x - ewm.mean().to_numpy() > 3 * ewm.std().to_numpy()  # ..._from_moving_average
        prev = w[:, :-1]
        votes += x - np.nanmean(prev, axis=1) > 3 * np.nanstd(prev, axis=1, ddof=1)  # cumulation
        votes += _least_squares(w, valid, count)
        votes += _histogram_bins(w, tail)
    votes[count < 12] = 0
    return votes / 7.0


def _least_squares(w: np.ndarray, valid: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Skyline's least_squares: the mean of the last three residuals of a fitted line > 3 sd."""
    t = np.where(valid, np.arange(w.shape[1])[None, :], np.nan)
    tm, ym = np.nanmean(t, axis=1), np.nanmean(w, axis=1)
    slope = np.nansum((t - tm[:, None]) * (w - ym[:, None]), axis=1) / np.nansum(
        (t - tm[:, None]) ** 2, axis=1
    )
    errors = w - (ym[:, None] + slope[:, None] * (t - tm[:, None]))
    sd = np.sqrt(np.nanmean(errors**2, axis=1))
    last = errors[:, -3:].mean(axis=1)
    return (count >= 3) & (last > 3 * sd) & (np.round(sd) != 0) & (np.round(last) != 0)


def _histogram_bins(w: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Skyline's histogram_bins: the tail average falls in one of 15 bins holding <= 20 points
    (upward only: above the median)."""
    lo, hi = np.nanmin(w, axis=1), np.nanmax(w, axis=1)
    width = (hi - lo) / 15
    with np.errstate(invalid="ignore", divide="ignore"):
        bins = np.clip(np.floor((w - lo[:, None]) / width[:, None]), 0, 14)
        tail_bin = np.floor((tail - lo) / width)
    in_bin = (bins == tail_bin[:, None]).sum(axis=1)
    inside = (tail_bin >= 1) & (tail_bin <= 14) & (width > 0)
    return inside & (in_bin <= 20) & (tail > np.nanmedian(w, axis=1))


def seasonal_esd_score(
    series, _threshold: float = float("nan"), days: int = 14, alpha: float = 0.05
) -> np.ndarray:
    x = series.values.astype(float)
    n = len(x)
    lagged = np.full((n, days), np.nan)
    for k in range(1, min(days, (n - 1) // DAY) + 1):
        lagged[k * DAY :, k - 1] = x[: n - k * DAY]
    with _quiet():
        seasonal = np.nanmedian(lagged, axis=1)
    residual = pd.Series(x - seasonal)
    past = residual.shift(1).rolling(days * DAY, min_periods=DAY // 2)
    centre = past.median()
    deviation = (residual - centre).abs().shift(1)
    mad = deviation.rolling(days * DAY, min_periods=DAY // 2).median() * 1.4826
    m = past.count().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        t = stats.t.ppf(1 - alpha / np.maximum(m, 3), np.maximum(m - 2, 1))
        critical = (m - 1) * t / np.sqrt((m - 2 + t**2) * m)
        score = ((residual - centre) / mad).to_numpy() / critical
    return np.nan_to_num(score, nan=0.0, posinf=0.0, neginf=0.0)


class _quiet:
    """Silence numpy's all-NaN-slice warnings (the first windows have no history)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


# -- the oracle -----------------------------------------------------------------------------------


def count_z(x: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """z of the mid-p upper tail of a count with this mean and variance (NB or Poisson)."""
    x = np.round(np.maximum(x, 0))
    mean = np.maximum(mean, 1e-9)
    over = variance > mean * 1.0001
    at_least = np.where(x > 0, special.gammainc(np.maximum(x, 1e-9), mean), 1.0)
    pmf = stats.poisson.pmf(x, mean)
    if over.any():
        r = mean[over] ** 2 / (variance[over] - mean[over])
        p = mean[over] / variance[over]
        xo = x[over]
        at_least[over] = np.where(xo > 0, special.betainc(np.maximum(xo, 1e-9), r, 1 - p), 1.0)
        pmf[over] = stats.nbinom.pmf(xo, r, p)
    tail = np.clip(at_least - 0.5 * pmf, 1e-300, 1.0)
    return -special.ndtri(tail)


def noise_z(law: str, residual: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """z of one window ``residual`` above ``mean`` under a series' true noise law (nb, poisson,
    t5 or gauss) with this sd."""
    if law in ("nb", "poisson"):
        return count_z(mean + residual, mean, sd**2 if law == "nb" else mean)
    if law == "t5":
        tau = sd / np.sqrt(5 / 3)  # the t scale of noise with this sd
        return -special.ndtri(np.clip(stats.t.sf(residual / tau, 5), 1e-300, 1.0))
    return residual / sd


def _trailing_sums(a: np.ndarray, k: int) -> np.ndarray:
    """The sums of the last ``k`` values along the last axis (of fewer at the start)."""
    out = np.array(a, dtype=float)
    for j in range(1, k):
        out[..., j:] += a[..., :-j]
    return out


def scan_z(law: str, x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """yuqing's scan statistic with the true law (nb, poisson, t5 or gauss) of every window:
    the largest z of the sums of the last 1..SCAN windows, along the last axis."""
    best = np.full(np.shape(x), -np.inf)
    if law in ("nb", "poisson"):
        variance = sd**2 if law == "nb" else mu
        for k in range(1, SCAN + 1):
            sums = [_trailing_sums(a, k) for a in (x, mu, variance)]
            best = np.maximum(best, count_z(*sums))
        return best
    u = noise_z(law, x - mu, mu, sd)
    for k in range(1, SCAN + 1):
        best = np.maximum(best, _trailing_sums(u, k) / np.sqrt(k))
    return best


def oracle_score(series, _threshold: float = float("nan")) -> np.ndarray:
    return scan_z(series.law, series.values.astype(float), series.expected, series.noise_sd)
