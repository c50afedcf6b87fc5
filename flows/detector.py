"""Streaming trend-spike detector: a seasonal, robust baseline per key and a scan statistic.

One ``SeriesDetector`` follows one series (a key's distinct stories per window, or any numeric
series given to ``yuqing detect``). Each ``update`` costs O(1), uses only earlier windows, and
the whole state is a small JSON-safe dict, so it survives restarts.

The baseline
    counts:  expected = level x daily[hour of day] x weekly[day of week] x hourly[hour of week]
    others:  expected = level + hourly[hour of week], the hour-of-week offsets shrunk towards
             daily[hour of day] + weekly[day of week] while they have seen few windows (a slot
             not seen yet is daily + weekly)
The hour-of-day and hour-of-week profiles are interpolated between hourly slots. For counts
every factor is a ratio of two exponentially weighted sums (counts seen / counts the other
factors expected), with a few pseudo-items at "no effect", so a new or sparse key starts from
its own level, learns a slot from items rather than from empty windows, and can never blow
up on a window with a tiny expectation. For other series the offsets are fitted to the
interpolated curve by normalised least-mean-squares steps, so peaks are not flattened. The
hour-of-week term catches what hour of day and day of week miss (a flatter weekend
afternoon). For counts the first day teaches only the level and the daily profile; the day of
week and hour-of-week factors learn after it, against a daily profile that means something.
A fine time-of-day correction (one slot per 5 minutes of the day, from the second day on)
learns what the smooth hourly curve leaves, such as a step at a market open, and is used only
as far as it stands ``fine_gate`` standard errors out of its own noise.

Keeping it clean: windows are learnt ``scan - 1`` windows late, and not at all when they are
part of an alert episode (including the windows just before it opened), so a spike never
leaks into its own baseline. Two kinds of episode are the key's normal and are learnt: one
that opens within 15 minutes of the time an episode opened the day before or the week before
(a daily or weekly pattern), and any episode of a key that opened more than
``max_opens_per_day`` in the last day (a quantised or blippy series). Without this they would
alert for ever. Empty windows of a count key are missing data, not learnt, while their run is
less likely than ``outage_p`` under the key's law (a busy key whose feed is down), for at most
``outage_max`` windows; learnt, they would re-anchor the level to nothing and the key would
alert when the feed came back. Learnt values are Huber-clipped at ``clip`` sd. A level shift
is accepted as the new normal when an episode lasts ``adapt_after`` windows, or (once the
profile is learnt) when the mean score of the last ``adapt_after`` learnt windows is beyond
+-``shift_level`` (a shift too small to alert; counts only): the level is re-anchored to
those windows. A run of ``run_windows`` learnt windows well below the expected value (on
average) is the level catching up with a drop, not noise: it does not teach a continuous series its noise
scale or tail weight; once mature, ``drop_windows`` of them (by their median) re-anchor its level.
While a continuous series is younger than ``young_days``, its alert episodes are learnt (clipped):
a young profile's misfit, such as the first day's rising afternoon, is not a spike.

The noise
    counts: negative binomial with variance ``dispersion x expected``, where the dispersion
            is a + b x expected, a regression of the squared residuals after the baseline
            (clipped at 4 sd, divided by the expected value) on the expected value, never below
            1 (Poisson): constant for keys whose variance is a multiple of the mean, growing for
            gamma-Poisson keys whose busy hours are burstier; its moments are EWMAs with a
            memory of about a day (``dispersion_alpha``), so it holds still;
    others: Student t around the expected value; its scale is the robust sd of the residuals
            (an EWMA of clipped absolute residuals, converted to MAD x 1.4826), and its degrees
            of freedom follow the observed rate of residuals beyond 4 robust sd (starting from a
            prior of 10 degrees of freedom worth 500 windows), so heavy-tailed series get heavy
            tails instead of false alerts, while Gaussian ones soon get Gaussian tails.
A burst of noise widens both: a fast EWMA of the squared one-window scores inflates the
variance while it is above 1. So does youth: the variance is taken ``1 + cold_start / n`` times
wider while the baseline has learnt from only n windows, and a continuous series scores 0
until it has learnt two residuals, then with at most n - 1 degrees of freedom (its scale rests
on n residuals).

The score
    Per window, the mid-p upper tail probability of the observation under that law, as a
    normal z. The score is the largest z of the sums of the last 1, 2, ... ``scan`` windows
    (counts: the exact tail of the summed counts; others: the sum of the windows' z over
    sqrt(k)), so a surge spread over a few windows accumulates evidence. The last window on
    its own counts at ``lone_weight`` (0.8) of its z: most false alerts are one window that
    the next does not confirm, and a real surge's next window confirms it (the best test of
    a spike, ``flows.detector_bound``, spends its false alarms the same way). It is a z value
    on every series, so one threshold means about the same false-alarm rate everywhere. An
    episode opens when the score reaches ``open_level`` and closes when it falls below
    ``close_level`` (hysteresis).

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

STATE_VERSION = 2
MAX_SCORE = 38.0  # -ndtri of the smallest double
SEVERITIES = ((9.0, "critical"), (6.0, "high"), (0.0, "medium"))
SEVERITY_RANK = {"medium": 1, "high": 2, "critical": 3}
MAD_SD = 1.4826  # MAD x this = sd for Gaussian noise
HOURS_PER_WEEK = 168
FINE_SLOTS = 288  # the fine time-of-day correction: one slot per 5 minutes of the day


@dataclass(frozen=True)
class DetectorConfig:
    window: timedelta = timedelta(minutes=5)
    open_level: float = 3.65  # an episode opens at this score (z; chosen on the dev seeds)
    close_level: float = 2.0  # and closes below this one (hysteresis)
    scan: int = 3  # the score looks at the sums of the last 1..scan windows
    lone_weight: float = 0.8  # a window's own z counts at this weight; sums of 2..scan windows
    # count in full, so a lone outlier needs open_level / 0.8 to open and a surge that the next
    # window confirms opens at open_level (stop 23: the best test's rejection region)
    level_alpha: float = 0.005  # counts: level EWMA weight per window (memory ~ 1/alpha windows)
    level_alpha_additive: float = 0.02  # others: the level also follows trends
    daily_alpha: float = 0.03  # hour-of-day slot decay per unit of weight (~12 a day)
    weekly_alpha: float = 0.002  # day-of-week slot decay (~288 windows a week)
    hourly_alpha: float = 0.05  # hour-of-week slot decay (~12 windows a week)
    daily_prior: float = 4.0  # pseudo-observations at "no effect" in every slot: counts: items
    weekly_prior: float = 24.0  # (so a sparse key learns from items, not from empty windows);
    hourly_prior: float = 6.0  # others: windows
    hourly_prior_additive: float = 1.0  # others: hour-of-week offsets vs daily + weekly
    slot_items: float = 200.0  # counts: a sparse key's slots decay slower, to remember this
    # many expected items (up to 10x their window memory)
    scale_alpha: float = 0.01  # others: noise scale EWMA weight
    dispersion_alpha: float = 0.003  # counts: dispersion EWMA weight (memory about a day; at
    # 0.01 the dispersion swung with its own noise, and its low swings opened false alerts)
    profile_level_alpha: float = 0.01  # others: the seasonal offsets are learnt against a
    # slower copy of the level (this EWMA of it), so the fast level does not take in part of
    # every hour's misfit before the hour's offset can (stop 21: gauss recall +0.02 to +0.03
    # at fewer false alerts on two sets of dev seeds)
    burst_alpha: float = 0.15  # the fast variance inflation's EWMA weight
    burst_margin: float = 0.0  # ... which inflates only by what exceeds 1 + this (its noise)
    cold_start: float = 12.0  # the variance is x (1 + this / windows learnt): a young baseline
    tail_alpha: float = 0.00025  # the tail-weight EWMA (continuous series; ~2 weeks)
    tail_prior: float = 500.0  # windows of prior belief in mildly heavy tails ...
    tail_prior_df: float = 10.0  # ... a t with this many degrees of freedom
    clip: float = 3.0  # Huber clip of learnt values, in sd
    min_history: int = 12  # windows before a series may alert (one hour at 5 minutes)
    adapt_after: int = 24  # episode windows after which it is a level shift
    shift_level: float = 1.0  # mean score of the last adapt_after windows that is a level shift
    run_windows: int = 3  # others: a run of this many learnt windows whose mean one-window z
    run_level: float = 2.0  # ... is below -this is the level catching up with a drop, not noise:
    # it teaches neither the noise scale nor the tail weight (0 windows: no such runs)
    drop_windows: int = 24  # others, once mature: the last this many learnt windows with a
    drop_level: float = 3.0  # median one-window z below -this are a drop: the level is
    # re-anchored to them (0 windows: never; upward shifts alert and re-anchor after
    # adapt_after windows; 12 windows at -2 re-anchored on a daily step down)
    young_days: float = 2.0  # an episode opening before the baseline has learnt this many days
    # of windows is learnt: a young profile's misfit is not kept out of the profile for weeks
    mature: int = 576  # windows learnt before a drift counts as a level shift (two days at
    # 5 minutes; before that the profile is still being learnt)
    min_rate: float = 0.05  # floor of the expected count, so empty keys are not alarmed by 1 item
    max_opens_per_day: int = 12  # a key opening more episodes than this in a day is not having
    # that many spikes: its alerting windows are its normal and are learnt (no self-sealing)
    recur_within: float = 900.0  # seconds: an episode opening this close to the time of one
    # recur_days before is a daily or weekly pattern, learnt as well (0: never)
    recur_days: tuple[int, ...] = (1, 7)  # ... a day before, a week before
    outage_p: float = 1e-7  # counts: a run of empty windows this improbable is missing data
    # (0: never)
    outage_max: int = 288  # ... (not learnt) for at most this many windows; then the key is quiet
    share_alpha: float = 0.02  # the share detector's EWMA weight
    fine_alpha: float = 0.1  # fine time-of-day slots: EWMA weight per window seen (~10 days)
    fine_prior: float = 0.5  # ... pseudo-observations at "no effect" (counts: items)
    fine_gate: float = 3.0  # ... used only by what exceeds this many standard errors


def severity_for(score: float) -> str:
    return next(name for floor, name in SEVERITIES if score >= floor)


def count_upper(mean: float, dispersion: float, z: float) -> float:
    """About the count whose upper tail is that of ``z`` sd (Cornish-Fisher, with the negative
    binomial's skew (2 d - 1) / sqrt(d m)), so clips stay fair to skewed, sparse counts."""
    sd = math.sqrt(dispersion * mean)
    skew = (2 * dispersion - 1) / sd if sd > 0 else 0.0
    return mean + sd * (z + (z * z - 1) * skew / 6)


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


# -- Student t tails: degrees of freedom from the rate of residuals beyond 4 robust sd -----------

_NU = np.array([2.0, 2.5, 3, 3.5, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100, 300, 1e4])
_Q75 = special.stdtrit(_NU, 0.75)  # MAD of a standard t
TAIL_AT = 4.0  # the tail weight is the rate of residuals beyond this many robust sd
_BEYOND = 2 * special.stdtr(_NU, -TAIL_AT * MAD_SD * _Q75)  # P(|T| > TAIL_AT robust sd)


def _clipped_abs_mean(nu: float) -> float:
    """E[min(|T|, 4 robust sd)] / robust sd for a t with ``nu`` degrees of freedom."""
    sd = MAD_SD * float(special.stdtrit(nu, 0.75))
    x = np.linspace(0.0, 4 * sd, 4001)
    pdf = np.exp(
        special.gammaln((nu + 1) / 2)
        - special.gammaln(nu / 2)
        - 0.5 * math.log(nu * math.pi)
        - (nu + 1) / 2 * np.log1p(x**2 / nu)
    )
    inside = 2 * float(np.sum((x[1:] * pdf[1:] + x[:-1] * pdf[:-1]) / 2 * np.diff(x)))
    return (inside + 4 * sd * 2 * float(special.stdtr(nu, -4 * sd))) / sd


_ABS_MEAN = np.array([_clipped_abs_mean(nu) for nu in _NU])
GAUSS_BEYOND = float(_BEYOND[-1])


def tail_rate(nu: float) -> float:
    """P(|T| > TAIL_AT robust sd) for a t with ``nu`` degrees of freedom."""
    return float(np.exp(np.interp(math.log(nu), np.log(_NU), np.log(_BEYOND))))


def tail_nu(beyond: float) -> float:
    """Degrees of freedom of the t whose P(|T| > TAIL_AT robust sd) is ``beyond``."""
    rate = math.log(max(beyond, 1e-12))
    return float(np.exp(np.interp(rate, np.log(_BEYOND[::-1]), np.log(_NU[::-1]))))


def _abs_mean(nu: float) -> float:
    return float(np.interp(nu, _NU, _ABS_MEAN))


def _q75(nu: float) -> float:
    return float(np.interp(nu, _NU, _Q75))


# -- seasonal slots ----------------------------------------------------------------------------
# A slot is a pair [a, b]. Counts: a and b are exponentially weighted sums of the (clipped)
# counts seen and of what the other factors expected; the slot's factor is (a + k) / (b + k).
# Others: a is the slot's offset and b its weight (windows seen).


def _ratio(slot: list[float], prior: float) -> float:
    return (slot[0] + prior) / (slot[1] + prior)


def _learn_ratio(
    slot: list[float], weight: float, seen: float, expected: float, alpha: float, items: float
):
    """Decay the slot by ``alpha`` per unit of weight, or slower for a sparse key, so that it
    remembers about ``items`` expected items (but at least a tenth of the decay)."""
    decay = min(alpha, max(alpha / 10, expected / items)) if items > 0 else alpha
    keep = 1.0 - min(1.0, decay * weight)
    slot[0] = keep * slot[0] + weight * seen
    slot[1] = keep * slot[1] + weight * expected


def _offset(slot: list[float], prior: float, neutral: float) -> float:
    return (slot[1] * slot[0] + prior * neutral) / (slot[1] + prior)


def _learn_offset(slot: list[float], target: float, alpha: float, start: float = 1.0) -> None:
    """A running mean at first (with ``start`` pseudo-windows at the slot's value), then an
    EWMA."""
    slot[1] += 1.0
    slot[0] += max(alpha, 1.0 / (slot[1] + start)) * (target - slot[0])


def _learn_offsets(pair: tuple[tuple[list[float], float], ...], target: float, alpha: float):
    """Fit two interpolated offset slots (weights 1-f and f) to ``target`` by a normalised
    least-mean-squares step: a running mean at first, then an EWMA. Unlike moving each slot
    towards the target, this fits the interpolated curve, so peaks are not flattened. A slot
    never seen starts at the target."""
    for slot, weight in pair:
        if slot[1] <= 0 and weight > 0:
            slot[0] = target
    error = target - sum(slot[0] * weight for slot, weight in pair)
    norm = sum(weight * weight for _, weight in pair)
    for slot, weight in pair:
        if weight > 0:
            slot[1] += weight
            slot[0] += max(alpha, 1.0 / (slot[1] + 1.0)) * weight * error / norm


def _slots(t: float) -> tuple[int, float, int, int]:
    """(hour of day of the slot centre just before ``t``, fraction of the way to the next slot
    centre, day of week of ``t`` with Monday = 0, hour of week of that slot centre)."""
    position = t / 3600 - 0.5  # hours since the first slot centre
    hours = math.floor(position)
    weekday = (math.floor(t / 86400) + 3) % 7  # 1970-01-01 was a Thursday
    week_hour = ((hours // 24 + 3) % 7) * 24 + hours % 24
    return hours % 24, position - hours, weekday, week_hour


def _fine_slot(t: float) -> int:
    return math.floor(t / 300.0) % FINE_SLOTS


def _gate(estimate: float, se: float, k: float) -> float:
    """Positive-part James-Stein: the share of ``estimate`` to use, 0 within k standard errors
    of nothing, near 1 far beyond."""
    if estimate == 0.0:
        return 0.0
    return max(0.0, 1.0 - (k * se / estimate) ** 2)


def _read_slots(slots: list) -> list[list[float]]:
    return [[float(a), float(b)] for a, b in slots]


def _epoch(t: datetime | pd.Timestamp | float) -> float:
    return float(t) if isinstance(t, int | float) else pd.Timestamp(t).timestamp()


def _slot_list(n: int) -> list[list[float]]:
    return [[0.0, 0.0] for _ in range(n)]


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
    window_z: float = 0.0  # the window's own z, unweighted (``score`` weighs a lone one down)

    @property
    def severity(self) -> str:
        """Graded on the stronger of the score and the window's own z: ``lone_weight`` decides
        whether a lone window opens, not how extreme an open one is."""
        return severity_for(max(self.score, self.window_z))


@dataclass
class SeriesDetector:
    """A seasonal robust baseline and scan score for one series; ``state()`` / ``from_state``
    round-trip it through JSON."""

    config: DetectorConfig = field(default_factory=DetectorConfig)
    counts: bool = True  # integer, non-negative so far; switches off for good otherwise
    n: int = 0  # windows seen
    learnt: int = 0  # windows learnt from
    level: float = 0.0
    profile_level: float = 0.0  # others: what the seasonal offsets are learnt against
    level_sums: list[float] = field(default_factory=lambda: [0.0, 0.0])  # counts: seen, expected
    daily: list[list[float]] = field(default_factory=lambda: _slot_list(24))
    weekly: list[list[float]] = field(default_factory=lambda: _slot_list(7))
    hourly: list[list[float]] = field(default_factory=lambda: _slot_list(HOURS_PER_WEEK))
    # what the smooth profiles leave at each 5 minutes of the day (a step at 9:30, say)
    fine: list[list[float]] = field(default_factory=lambda: _slot_list(FINE_SLOTS))
    # counts: EWMAs of mu, mu^2, rho and rho x mu (rho = clipped squared residual / mu)
    moments: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    scale: float = 0.0  # others: EWMA of clipped absolute residuals
    beyond: float = 0.0  # others: EWMA of residuals beyond TAIL_AT robust sd (tail weight)
    burst: float = 1.0  # EWMA of squared one-window scores (variance inflation)
    episode: int = 0  # windows in the current alert episode (0: none open)
    episode_values: list[float] = field(default_factory=list)  # its deseasonalised values
    # the last scan - 1 windows, newest last: [t, value, expected, z, raw z, learnable, young]
    pending: list[list] = field(default_factory=list)
    # the last adapt_after learnt windows: [deseasonalised, z, z without inflation]
    recent: list[list[float]] = field(default_factory=list)
    last_t: float | None = None  # epoch seconds of the last window
    opens: list[float] = field(default_factory=list)  # when episodes opened (the last week)
    zero_run: int = 0  # counts: empty windows in a row up to now ...
    zero_logp: float = 0.0  # ... and the log of their joint probability
    learn_episode: bool = False  # the open episode is the key's normal: learn its windows
    young_episode: bool = False  # ... or the baseline was young when it opened: learn them clipped

    # -- the model ----------------------------------------------------------------------
    def _season(self, t: float) -> tuple[float, float, float, float]:
        """(daily, weekly, hourly, seasonal) at ``t``: the seasonal factor (counts: the product)
        or offset (others: the hour-of-week offset shrunk towards daily + weekly)."""
        c = self.config
        hour, f, weekday, week_hour = _slots(t)
        nxt, wnxt = (hour + 1) % 24, (week_hour + 1) % HOURS_PER_WEEK
        if self.counts:
            d = (1 - f) * _ratio(self.daily[hour], c.daily_prior) + f * _ratio(
                self.daily[nxt], c.daily_prior
            )
            w = _ratio(self.weekly[weekday], c.weekly_prior)
            h = (1 - f) * _ratio(self.hourly[week_hour], c.hourly_prior) + f * _ratio(
                self.hourly[wnxt], c.hourly_prior
            )
            return d, w, h, d * w * h
        d = (1 - f) * _offset(self.daily[hour], c.daily_prior, 0.0) + f * _offset(
            self.daily[nxt], c.daily_prior, 0.0
        )
        w = _offset(self.weekly[weekday], c.weekly_prior, 0.0)
        # Each slot is shrunk on its own, then interpolated: a slot not seen yet is d + w, not
        # an offset of 0, which pulled the first pass through an hour of the week towards the
        # level (7 sd on one evaluation key, whose next slot an episode then kept out).
        prior = c.hourly_prior_additive
        a = _offset(self.hourly[week_hour], prior, d + w)
        b = _offset(self.hourly[wnxt], prior, d + w)
        h = (1 - f) * a + f * b
        return d, w, h, h

    def _fine(self, t: float) -> float:
        """The fine time-of-day correction at ``t`` (counts: a factor; others: an offset).

        It is what the hourly profiles leave at this 5 minutes of the day, and it is used only
        as far as it stands out of its own noise (a positive-part James-Stein shrinkage by
        ``fine_gate`` standard errors), so a step the interpolated hourly curve cannot follow
        (a market open, a shift change) is learnt in days while noise is not learnt at all."""
        c = self.config
        a, b = self.fine[_fine_slot(t)]
        if self.counts:
            if b <= 0:
                return 1.0
            log_ratio = math.log((a + c.fine_prior) / (b + c.fine_prior))
            se = math.sqrt(self.dispersion / (b + c.fine_prior))
            return math.exp(log_ratio * _gate(log_ratio, se, c.fine_gate))
        if b <= 0:
            return 0.0
        n = min(b, (2.0 - c.fine_alpha) / c.fine_alpha)  # an EWMA's worth of windows
        shrunk = a * n / (n + c.fine_prior)
        se = self.robust_sd() / math.sqrt(n + c.fine_prior)
        return shrunk * _gate(shrunk, se, c.fine_gate)

    def _seasonal(self, t: float) -> float:
        """The whole seasonal factor (counts) or offset, the fine correction included."""
        return self._combine(self._season(t)[3], self._fine(t))

    def _combine(self, smooth: float, fine: float) -> float:
        return smooth * fine if self.counts else smooth + fine

    def expected_at(self, t: datetime | pd.Timestamp | float) -> float:
        seasonal = self._seasonal(_epoch(t))
        if self.counts:
            return max(self.config.min_rate, self.level * seasonal)
        return self.level + seasonal

    def dispersion_at(self, expected: float) -> float:
        """Variance / mean of a count expected to be ``expected``, at least 1 (Poisson)."""
        s1, s2, sy, sxy = self.moments
        if self.learnt < 2 or s1 <= 0:
            return 1.0
        var = s2 - s1 * s1
        slope = max(0.0, (sxy - s1 * sy) / var) if var > 1e-3 * s1 * s1 else 0.0
        # Below the mean expectation the pooled dispersion holds: a sparse hour is not assumed
        # to be tamer than the average one (its tails matter most and it has the least data).
        return max(1.0, sy + slope * max(0.0, expected - s1))

    @property
    def dispersion(self) -> float:
        """The dispersion at the mean expected value."""
        return self.dispersion_at(self.moments[0])

    @property
    def tail_df(self) -> float:
        """The degrees of freedom of the t law of the residuals (continuous series)."""
        c = self.config
        weight = min(self.learnt, 1.0 / c.tail_alpha)
        prior = tail_rate(c.tail_prior_df)
        rate = (weight * self.beyond + c.tail_prior * prior) / (weight + c.tail_prior)
        return tail_nu(rate)

    def robust_sd(self) -> float:
        """Continuous series: the robust sd (MAD x 1.4826) of the residuals."""
        floor = 1e-9 + 1e-6 * abs(self.level)
        return max(floor, self.scale / _abs_mean(self.tail_df))

    def _inflation(self) -> float:
        """How much wider than the noise law the variance is taken: during a burst of noise
        (the fast EWMA of squared scores above 1), and while the baseline is young."""
        c = self.config
        burst = max(1.0, self.burst - c.burst_margin)
        return burst * (1.0 + c.cold_start / (self.learnt + 1.0))

    def _sd(self, expected: float) -> float:
        inflate = self._inflation()
        if self.counts:
            return math.sqrt(self.dispersion_at(expected) * inflate * expected)
        return self.robust_sd() * math.sqrt(inflate)

    def _window_z(self, value: float, expected: float, inflate: float) -> float:
        if self.counts:
            dispersion = self.dispersion_at(expected) * inflate
            return z_from_tail(count_tail(value, expected, dispersion))
        if self.learnt < 2:  # no residual spread learnt yet: no evidence either way
            return 0.0
        # While the scale rests on few residuals its predictive law has heavier tails.
        nu = min(self.tail_df, self.learnt - 1.0)
        tau = self.robust_sd() * math.sqrt(inflate) / (MAD_SD * _q75(nu))  # the t's scale
        return z_from_tail(float(special.stdtr(nu, -(value - expected) / tau)))

    def _scan(self, value: float, expected: float, z: float) -> float:
        """The largest z of the sums of the last 1..scan windows (this one included), the window
        on its own weighted by ``lone_weight``."""
        earlier = reversed(self.pending)
        if not self.counts:
            return z_scan(z, (entry[3] for entry in earlier), self.config.lone_weight)
        best, total, mean = self.config.lone_weight * z, value, expected
        inflate = self._inflation()
        variance = self.dispersion_at(expected) * expected
        for _, v, e, *_ in earlier:
            total, mean = total + v, mean + e
            variance += self.dispersion_at(e) * e
            best = max(best, z_from_tail(count_tail(total, mean, variance / mean * inflate)))
        return best

    # -- one window ----------------------------------------------------------------------
    def update(self, t: datetime | pd.Timestamp | float, value: float) -> Score:
        """Score the window at ``t`` holding ``value``, then learn from the window that is
        ``scan - 1`` windows old."""
        c = self.config
        t = _epoch(t)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"value must be a finite number, got {value!r}")
        if self.counts and (value < 0 or value != round(value)):
            self._become_continuous()
        if self.n == 0:
            self.level = self.profile_level = value
            self.level_sums = [value, 1.0]
        expected = self.expected_at(t)
        sd = self._sd(expected)
        z = self._window_z(value, expected, self._inflation())
        raw = self._window_z(value, expected, 1.0) if self.burst > 1.0 else z
        score = self._scan(value, expected, z)
        ready = self.n >= c.min_history
        was_open = self.episode > 0
        alerting = score >= c.close_level if was_open else ready and score >= c.open_level
        opened = alerting and not was_open
        closed = was_open and not alerting
        self.episode = self.episode + 1 if alerting else 0
        if opened:
            normal = self._record_opening(t)
            self.young_episode = not normal and self._young()
            self.learn_episode = normal or self.young_episode
            for entry in self.pending:  # the windows that led up to it are part of the spike
                entry[5] = entry[5] and self.learn_episode
                entry[6] = entry[6] or self.young_episode
        outage = self._outage(value, expected)
        earlier = min(self.zero_run - 1, len(self.pending))  # this run's windows still pending
        if outage and earlier > 0:  # they are missing data as well
            for entry in self.pending[-earlier:]:
                entry[5] = False
        learnable = (self.learn_episode or not alerting) and not outage
        young = alerting and self.young_episode  # learnt only because the baseline is young
        self.pending.append([t, value, expected, z, raw, learnable, young])
        if alerting:
            seasonal = self._seasonal(t)
            self.episode_values = [*self.episode_values, self._deseasonalise(value, seasonal)]
        else:
            self.episode_values = []
        if self.episode > c.adapt_after:  # a level shift: accept the new normal
            self._reanchor(self.episode_values)
            alerting, closed = False, True
        if len(self.pending) >= c.scan:
            self._learn(*self.pending.pop(0))
        self.last_t = t
        self.n += 1
        return Score(value, expected, sd, score, alerting, opened, closed, ready, z)

    def _outage(self, value: float, expected: float) -> bool:
        """Counts: is this empty window part of a feed outage? A run of empty windows that a
        key's own law makes less likely than ``outage_p`` (a busy key gone silent for a while)
        is missing data. Learnt, it would re-anchor the level to nothing, and the key would
        alert when the feed came back. After ``outage_max`` windows the key is taken to have
        gone quiet, and its empty windows are learnt again."""
        if not self.counts or value != 0 or self.config.outage_p <= 0:
            self.zero_run, self.zero_logp = 0, 0.0
            return False
        dispersion = self.dispersion_at(expected)
        if dispersion > 1.01:  # negative binomial: P(0) = d ** (-mu / (d - 1))
            log_p0 = -expected * math.log(dispersion) / (dispersion - 1.0)
        else:
            log_p0 = -expected
        self.zero_run += 1
        self.zero_logp += log_p0
        return self.zero_logp < math.log(self.config.outage_p) and (
            self.zero_run <= self.config.outage_max
        )

    def _record_opening(self, t: float) -> bool:
        """Record an episode opening at ``t``, and say whether it is what this key normally does
        (its windows are then learnt). Alerting windows are kept out of the baseline, or a spike
        would leak into its own baseline; but a key that opened an episode at this time of day
        yesterday, or at this time of the week a week ago (within ``recur_within``), has a daily
        or weekly pattern, and one that opens more than ``max_opens_per_day`` a day has blips as
        its normal. Their windows are learnt, or the key would alert on them forever (its
        baseline and noise scale would never see them): an hour of the week that alerted once
        is kept out of the hour-of-week profile, so it alerts again a week later."""
        c = self.config
        day, within = 86400.0, c.recur_within
        lags = [k * day for k in c.recur_days] or [day]
        recurrent = within > 0 and any(
            abs(t - o - lag) <= within for o in self.opens for lag in lags
        )
        kept = 4 * c.max_opens_per_day * max((1, *c.recur_days))
        self.opens = [o for o in self.opens if o > t - max(lags) - within][-kept:]
        self.opens.append(t)
        return recurrent or sum(o > t - day for o in self.opens) > c.max_opens_per_day

    def _deseasonalise(self, value: float, seasonal: float) -> float:
        """``value`` without ``seasonal``, the whole seasonal factor or offset of its window."""
        return value / max(seasonal, 1e-3) if self.counts else value - seasonal

    def _reanchor(self, values: list[float]) -> None:
        """Accept a level shift: the level becomes that of ``values`` (deseasonalised), and the
        windows scored against the old level are forgotten."""
        if values:
            self.level = float(np.mean(values) if self.counts else np.median(values))
            self.profile_level = self.level
            self.level_sums = [self.level * self.level_sums[1], self.level_sums[1]]
        self.episode = 0
        self.episode_values = []
        self.recent = []
        self.pending = []

    def _learn(
        self,
        t: float,
        value: float,
        expected: float,
        z: float,
        raw: float,
        learnable: bool,
        young: bool = False,
    ) -> None:
        """Learn a window that is ``scan - 1`` windows old, if ``learnable``; ``young``: it
        alerted and is learnt only because the baseline is young, so it is clipped everywhere."""
        c = self.config
        if not learnable:
            return
        self.learnt += 1
        warm = 1.0 / (self.learnt + 1)
        self.burst += c.burst_alpha * (min(raw * raw, 25.0) - self.burst)
        d, w, h, seasonal = self._season(t)  # the smooth profiles learn without the fine part
        fine, fine_slot = self._fine(t), self.fine[_fine_slot(t)]
        deseasonalised = self._deseasonalise(value, self._combine(seasonal, fine))
        self.recent = [*self.recent, [deseasonalised, z, raw]][-c.adapt_after :]
        shifted = self._shifted()
        if shifted:
            self._reanchor(shifted)
            return
        hour, f, weekday, week_hour = _slots(t)
        daily = ((self.daily[hour], 1 - f), (self.daily[(hour + 1) % 24], f))
        hourly = ((self.hourly[week_hour], 1 - f), (self.hourly[(week_hour + 1) % 168], f))
        first_day = self.learnt * c.window.total_seconds() < 86400
        a_scale = max(c.dispersion_alpha if self.counts else c.scale_alpha, warm)
        a_level = max(c.level_alpha if self.counts else c.level_alpha_additive, warm)
        if self.counts:
            mu = max(expected, c.min_rate)
            dispersion = self.dispersion_at(mu)
            residual = min(value, count_upper(mu, dispersion, 4.0)) - expected
            rho = residual * residual / mu
            for i, target in enumerate((mu, mu * mu, rho, rho * mu)):
                self.moments[i] += a_scale * (target - self.moments[i])
            sd = math.sqrt(dispersion * mu)
            low = max(0.0, expected - c.clip * sd)
            x = min(max(value, low), count_upper(mu, dispersion, c.clip))
            level = max(self.level, c.min_rate)
            if not first_day:  # against smooth profiles that mean something; not clipped
                # above (what is learnt at all did not alert, or recurs daily)
                _learn_ratio(fine_slot, 1.0, max(value, low), level * seasonal, c.fine_alpha, 0.0)
            x /= fine
            sums = self.level_sums
            sums[0] += a_level * (x - sums[0])
            sums[1] += a_level * (seasonal - sums[1])
            self.level = sums[0] / sums[1] if sums[1] > 0 else x
            for slot, weight in daily:
                _learn_ratio(slot, weight, x, level * w * h, c.daily_alpha, c.slot_items)
            if not first_day:  # a day of the week is only special against a daily profile
                _learn_ratio(
                    self.weekly[weekday], 1.0, x, level * d * h, c.weekly_alpha, c.slot_items
                )
                for slot, weight in hourly:
                    _learn_ratio(slot, weight, x, level * d * w, c.hourly_alpha, c.slot_items)
        else:
            sd = self.robust_sd() if self.learnt > 2 else abs(value - expected) + 1e-9
            residual = abs(value - expected)
            if not self._in_run_below():
                self.scale += a_scale * (min(residual, 4 * sd) - self.scale)
                beyond = float(residual > TAIL_AT * sd)
                self.beyond += max(c.tail_alpha, warm) * (beyond - self.beyond)
            low = expected - c.clip * sd
            x = min(max(value, low), expected + c.clip * sd)
            if not first_day:  # not clipped above, unless a young alert (see _young)
                target = (x if young else max(value, low)) - self.level - seasonal
                _learn_offset(fine_slot, target, c.fine_alpha, start=0.0)
            x -= fine
            self.level += a_level * (x - seasonal - self.level)
            a_profile = max(c.profile_level_alpha, warm)
            self.profile_level += a_profile * (self.level - self.profile_level)
            base = self.profile_level
            _learn_offsets(daily, x - base - w, c.daily_alpha)
            _learn_offsets(hourly, x - base, c.hourly_alpha)  # needs no daily profile
            if not first_day:
                _learn_offset(self.weekly[weekday], x - base - d, c.weekly_alpha)

    def _in_run_below(self) -> bool:
        """Are the last ``run_windows`` learnt windows well below the expected value (their
        mean one-window z, without inflation, under -``run_level``)? Such a run is the level
        catching up with a drop, not noise. A continuous key has no alert episode to re-anchor
        on when it drops (alerts are upward), so the fast level follows over a few hours, and
        learnt as noise those windows doubled the noise scale for a day and gave the key the
        tails of a t with 7 degrees of freedom for weeks after a drop of 8 sd. Runs above the
        expected value mostly alert and are not learnt anyway; the rest (the edges of a daily
        step) are left to widen the noise, which keeps a market-open step from alerting."""
        k = self.config.run_windows
        if k <= 0 or len(self.recent) < k:
            return False
        return sum(entry[2] for entry in self.recent[-k:]) / k < -self.config.run_level

    def _young(self) -> bool:
        """Continuous: has the baseline learnt fewer than ``young_days`` days of windows? Until
        then an alert episode is learnt. On the first day of a key with a steep daily curve the
        rising afternoon alerted, lasted ``adapt_after`` windows and re-anchored the level at the
        peak; the hour-of-week offsets learnt against that level were wrong by up to 13 sd, so
        the same hours alerted a week later, and again, since alerting windows are not learnt.
        Their values are clipped at ``clip`` sd (the fine time-of-day part, which otherwise
        learns unclipped values, included), so a spike in these days leaks into the level and
        the profiles by that much at most. Counts learn only the level and the daily
        profile on their first day, so they keep their episodes out (a spike would teach a new
        hour-of-week slot its own size)."""
        c = self.config
        return not self.counts and self.learnt * c.window.total_seconds() < c.young_days * 86400

    def _shifted(self) -> list[float]:
        """Once mature, the deseasonalised values of the last learnt windows if they are a level
        shift that no episode re-anchored (else []): counts, the last ``adapt_after`` when their
        mean score is beyond +-``shift_level`` (a shift too small to alert); continuous, the
        last ``drop_windows`` when their median one-window z, without inflation, is under
        -``drop_level`` (a drop: alerts are upward). The level alone would take a day to follow a
        drop (its learnt values are clipped at ``clip`` sd, so after a drop of 8 sd the expected
        value was still 1.6 sd too high 9 hours later, and spikes went unseen). The median, not
        the mean: most of the windows re-anchored on are then past the drop."""
        c = self.config
        k = c.adapt_after if self.counts else c.drop_windows
        if k <= 0 or len(self.recent) < k or self.learnt <= c.mature:
            return []
        last = self.recent[-k:]
        if self.counts:
            shifted = abs(float(np.mean([entry[1] for entry in last]))) > c.shift_level
        else:
            z = sorted(entry[2] for entry in last)
            shifted = (z[(k - 1) // 2] + z[k // 2]) / 2 < -c.drop_level
        return [entry[0] for entry in last] if shifted else []

    def _become_continuous(self) -> None:
        """A non-count value arrived: keep the level, restart the seasonal profile as offsets."""
        if self.n:
            self.scale = 0.7979 * math.sqrt(self.dispersion * max(self.level, self.config.min_rate))
        self.counts = False
        self.profile_level = self.level
        self.daily, self.weekly = _slot_list(24), _slot_list(7)
        self.hourly, self.fine = _slot_list(HOURS_PER_WEEK), _slot_list(FINE_SLOTS)
        self.pending = [[*e[:5], False, False] for e in self.pending]
        self.recent, self.episode_values = [], []

    # -- persistence ---------------------------------------------------------------------
    _FLOATS = ("level", "scale", "beyond", "burst")
    _SLOTS = ("daily", "weekly", "hourly")

    def state(self) -> dict:
        """A JSON-safe dict of everything the detector has learnt (not its config)."""
        return {
            "version": STATE_VERSION,
            "type": "series",
            "counts": self.counts,
            "n": self.n,
            "learnt": self.learnt,
            **{name: getattr(self, name) for name in self._FLOATS},
            "profile_level": self.profile_level,
            "level_sums": self.level_sums,
            **{name: getattr(self, name) for name in self._SLOTS},
            "fine": self.fine,
            "moments": self.moments,
            "episode": self.episode,
            "episode_values": self.episode_values,
            "pending": self.pending,
            "recent": self.recent,
            "last_t": self.last_t,
            "opens": self.opens,
            "learn_episode": self.learn_episode,
            "young_episode": self.young_episode,
            "zero_run": self.zero_run,
            "zero_logp": self.zero_logp,
        }

    @classmethod
    def from_state(cls, state: dict | None, config: DetectorConfig) -> SeriesDetector:
        if not state:
            return cls(config=config)
        if state.get("type") != "series" or state.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"unknown detector state version {state.get('version')!r}")
        if state["version"] == 1:
            state = _series_state_from_v1(state)
        return cls(
            config=config,
            counts=bool(state["counts"]),
            n=int(state["n"]),
            learnt=int(state["learnt"]),
            **{name: float(state[name]) for name in cls._FLOATS},
            profile_level=float(state.get("profile_level", state["level"])),  # new in stop 21
            level_sums=[float(v) for v in state["level_sums"]],
            **{name: _read_slots(state[name]) for name in cls._SLOTS},
            fine=_read_slots(state.get("fine") or _slot_list(FINE_SLOTS)),  # new in this release
            moments=[float(v) for v in state["moments"]],
            episode=int(state["episode"]),
            episode_values=[float(v) for v in state["episode_values"]],
            pending=[
                [*(float(x) for x in entry[:5]), bool(entry[5]), len(entry) > 6 and bool(entry[6])]
                for entry in state["pending"]  # before stop 17 an entry had no young flag
            ],
            recent=[  # before stop 15 an entry had no z without inflation: its z stands in
                [float(entry[0]), float(entry[1]), float(entry[-1])] for entry in state["recent"]
            ],
            last_t=state.get("last_t"),
            opens=[float(o) for o in state.get("opens", [])],
            learn_episode=bool(state.get("learn_episode", False)),
            young_episode=bool(state.get("young_episode", False)),
            zero_run=int(state.get("zero_run", 0)),
            zero_logp=float(state.get("zero_logp", 0.0)),
        )


def _series_state_from_v1(old: dict) -> dict:
    """Carry a version-1 state over to version 2. Version 1 kept shrunk running means per
    hour of day and hour of week (multiplicative for counts, offsets otherwise) and a mean
    absolute residual. The level and both profiles carry over (for counts each slot becomes
    a ratio worth as many items as it had observations), the hour-of-week profile also gives
    the days of the week, the scale becomes the dispersion (counts) or the robust scale, and
    the tail weight starts from its prior."""
    counts = bool(old["counts"])
    n = int(old["n"])
    level = float(old["level"])
    dispersion = max(1.0, (float(old["scale"]) / 0.7979) ** 2) if n > 1 else 1.0

    def slot(value: float, weight: float) -> list[float]:
        if counts:  # a factor worth `weight` items at the level
            items = weight * max(level, 1e-3)
            return [value * items, items]
        return [value, weight]

    neutral = 1.0 if counts else 0.0
    daily = [slot(v, w) for v, w in zip(old["daily"], old["daily_n"], strict=True)]
    weekly, hourly = [], []
    for day in range(7):
        values = old["weekly"][day * 24 : (day + 1) * 24]
        weights = old["weekly_n"][day * 24 : (day + 1) * 24]
        total = sum(weights)
        mean = sum(v * w for v, w in zip(values, weights, strict=True)) / total if total else 0.0
        mean = mean if total else neutral
        weekly.append(slot(mean, total))
        for hour, (value, weight) in enumerate(zip(values, weights, strict=True)):
            if counts:  # on top of daily x weekly now: the day's share of it comes out
                hourly.append(slot(value / mean if mean > 0 else 1.0, weight))
            else:  # the whole seasonal offset now: daily + hour of week
                hourly.append([old["daily"][hour] + value, weight])
    previous, last_t = old.get("previous"), old.get("last_t")
    pending = []
    if previous is not None and last_t is not None:
        pending = [[float(last_t), float(previous[0]), float(previous[1]), 0.0, 0.0, False, False]]
    return {
        "counts": counts,
        "n": n,
        "learnt": n,
        "level": level,
        "level_sums": [level, 1.0],
        "scale": 0.0 if counts else float(old["scale"]),
        "beyond": GAUSS_BEYOND,
        "burst": 1.0,
        "daily": daily,
        "weekly": weekly,
        "hourly": hourly,
        "moments": [level, level * level, dispersion, dispersion * level] if counts else [0.0] * 4,
        "episode": int(old["episode"]),
        "episode_values": [],
        "pending": pending,
        "recent": [],
        "last_t": last_t,
    }


def z_scan(z: float, earlier: Iterable[float], lone_weight: float) -> float:
    """The scan over window z values: the largest of ``lone_weight`` x ``z`` and the sums of
    ``z`` with the ``earlier`` windows' z (newest first) over sqrt(windows)."""
    best, z_sum = lone_weight * z, z
    for k, zp in enumerate(earlier, start=2):
        z_sum += zp
        best = max(best, z_sum / math.sqrt(k))
    return best


@dataclass
class ShareDetector:
    """A robust EWMA of a share k/n (e.g. the negative share of a topic), scored with binomial
    tails widened by the observed over-dispersion. The score is the scan of the count keys over
    the window z values: the largest sum of the last 1..scan scored windows' z over sqrt(k),
    the window on its own weighted by ``lone_weight``."""

    config: DetectorConfig = field(default_factory=DetectorConfig)
    min_total: int = 10  # windows with fewer items are neither scored nor learnt from
    n: int = 0
    share: float = 0.0
    scale: float = 0.0  # mean |Pearson residual|
    episode: int = 0
    last_t: float | None = None
    recent: list[float] = field(default_factory=list)  # the z of the last scan - 1 scored windows

    @property
    def dispersion(self) -> float:
        return max(1.0, (self.scale / 0.7979) ** 2) if self.n > 5 else 1.0

    def update(self, t: datetime | pd.Timestamp | float, part: int, total: int) -> Score:
        c = self.config
        t = _epoch(t)
        self.last_t = t
        if total < self.min_total:
            self.recent = []  # the scan sums adjacent scored windows only
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
        z = z_from_tail(tail) / math.sqrt(self.dispersion)
        score = z_scan(z, reversed(self.recent), c.lone_weight)
        self.recent = [*self.recent, z][-(c.scan - 1) :] if c.scan > 1 else []
        ready = self.n >= c.min_history
        was_open = self.episode > 0
        alerting = score >= c.close_level if was_open else ready and score >= c.open_level
        opened, closed = alerting and not was_open, was_open and not alerting
        self.episode = self.episode + 1 if alerting else 0
        if self.episode > c.adapt_after:
            self.share, self.episode = part / total, 0
            alerting, closed = False, True
        elif not alerting:
            a = max(c.share_alpha, 1.0 / (self.n + 1))
            residual = (part - expected) / math.sqrt(total * p * (1 - p))
            self.scale += a * (min(abs(residual), 2 * c.clip) - self.scale)
            clipped = min(max(part, expected - c.clip * sd), expected + c.clip * sd)
            self.share += a * (clipped / total - self.share)
        self.n += 1
        return Score(float(part), expected, sd, score, alerting, opened, closed, ready, z)

    def state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "type": "share",
            "n": self.n,
            "share": self.share,
            "scale": self.scale,
            "episode": self.episode,
            "last_t": self.last_t,
            "recent": self.recent,
        }

    @classmethod
    def from_state(cls, state: dict | None, config: DetectorConfig) -> ShareDetector:
        if not state:
            return cls(config=config)
        if state.get("type") != "share" or state.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"unknown detector state version {state.get('version')!r}")
        return cls(  # version 1 and 2 share states hold the same fields (recent since stop 23)
            config=config,
            n=int(state["n"]),
            share=float(state["share"]),
            scale=float(state["scale"]),
            episode=int(state["episode"]),
            last_t=state.get("last_t"),
            recent=[float(z) for z in state.get("recent", [])],
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


# A value cell that says "no observation" (compared after strip and lower-casing).
MISSING_VALUES = frozenset({"", "nan", "na", "n/a", "null", "none"})


def read_series_csv(path) -> pd.DataFrame:
    """Read and validate a ``timestamp,value`` CSV; rows keep their order.

    An empty value (or NaN, NA, N/A, null, None) is a missing observation: NaN in `value`.
    Anything else that is not a finite number is an error.
    """
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
    text = frame["value"].str.strip()
    missing = text.str.lower().isin(MISSING_VALUES)
    values = pd.to_numeric(text.where(~missing), errors="coerce")  # (n,) NaN where missing
    bad = ~missing & (values.isna() | ~np.isfinite(values.fillna(0)))
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
    """``yuqing detect``: write timestamp,value,anomaly_score,alert for every input row.

    A row with a missing value is written with an empty score and alert 0; the detector skips
    it, so the next observed row is scored as after a gap in the series.
    """
    series = read_series_csv(input_path)
    config = config or DetectorConfig(window=infer_window(series["time"]))
    observed = series["value"].notna().to_numpy()  # (n,)
    scores = score_series(series["time"][observed], series["value"][observed], config)
    anomaly_score = np.full(len(series), np.nan)
    alert = np.zeros(len(series), dtype=np.int64)
    anomaly_score[observed] = scores["anomaly_score"].round(4)
    alert[observed] = scores["alert"]
    out = pd.DataFrame(
        {
            "timestamp": series["timestamp"],
            "value": series["value"],
            "anomaly_score": anomaly_score,
            "alert": alert,
        }
    )
    try:
        out.to_csv(output_path, index=False)
    except OSError as e:
        raise SeriesFileError(f"cannot write {output_path}: {e.strerror or e}") from e
    return out
