"""The evaluation set's two spike-size units (flows/detector_eval.py); fast, no detector runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flows.detector_eval import (
    MIN_TRAILING,
    PER_DAY,
    TRAILING,
    Spike,
    continuous_series,
    count_series,
    series_robust_sd,
    spike_mask,
)


def _mad_sd(values: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def test_series_robust_sd_uses_only_non_spike_points_of_the_trailing_week():
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 2.0, size=3 * TRAILING)
    onset = 2 * TRAILING + 100
    # A long earlier "spike" covering 40% of the trailing week, and the spike itself.
    spikes = [Spike(onset - 900, 800, 4.0), Spike(onset, 3, 4.0)]
    values[onset - 900 : onset - 100] = 1000.0
    values[onset : onset + 3] = 1000.0
    values[: onset - TRAILING] *= 10.0  # older than a week: must not count either
    got = series_robust_sd(values, spikes, onset)
    window = np.arange(onset - TRAILING, onset)
    clean = window[~spike_mask(len(values), spikes)[window]]
    assert got == pytest.approx(_mad_sd(values[clean]))
    assert got == pytest.approx(2.0, rel=0.1)
    # Reading the spike windows or the older data would give something else entirely.
    assert _mad_sd(values[onset - TRAILING : onset]) > 2 * got
    assert _mad_sd(values[:onset]) > 3 * got


def test_series_robust_sd_falls_back_to_the_whole_series_without_a_day_of_history():
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 1.0, size=4 * PER_DAY)
    values[PER_DAY:] *= 5.0
    spikes = [Spike(MIN_TRAILING - 10, 2, 4.0), Spike(2 * PER_DAY, 1, 4.0)]
    values[2 * PER_DAY] = 1e6
    clean = ~spike_mask(len(values), spikes)
    assert series_robust_sd(values, spikes, MIN_TRAILING - 10) == pytest.approx(
        _mad_sd(values[clean])
    )


def _series_sd_from(values: np.ndarray, spikes: list[Spike], onset: int) -> float:
    """An independent re-computation from a spike-free copy of the series."""
    clean = ~spike_mask(len(values), spikes)
    idx = np.arange(max(0, onset - TRAILING), onset)
    idx = idx[clean[idx]]
    return _mad_sd(values[idx]) if len(idx) >= MIN_TRAILING else _mad_sd(values[clean])


def test_continuous_spikes_are_injected_in_series_robust_sd():
    noise = continuous_series(np.random.default_rng(7), weeks=2, heavy=False, name="g")
    series = continuous_series(
        np.random.default_rng(7), weeks=2, heavy=False, name="g", unit="series"
    )
    # Same rng stream: same base series and spike layout, only the spike heights differ.
    assert [(s.onset, s.duration, s.size_sd) for s in noise.spikes] == [
        (s.onset, s.duration, s.size_sd) for s in series.spikes
    ]
    mask = spike_mask(len(series.values), series.spikes)
    np.testing.assert_array_equal(noise.values[~mask], series.values[~mask])
    base = noise.values.copy()
    for s in noise.spikes:
        assert s.unit_sd == 1.0
        base[s.onset : s.onset + s.duration] -= s.size_sd
    for s in series.spikes:
        unit = _series_sd_from(base, series.spikes, s.onset)
        assert s.unit_sd == pytest.approx(unit)
        assert unit > 1.5  # the seasonal swing is part of the series' sd
        excess = (
            series.values[s.onset : s.onset + s.duration] - base[s.onset : s.onset + s.duration]
        )
        np.testing.assert_allclose(excess, s.size_sd * unit)


def test_count_spikes_are_injected_in_series_robust_sd():
    noise = count_series(np.random.default_rng(3), weeks=2, base=10.0, name="c")
    series = count_series(np.random.default_rng(3), weeks=2, base=10.0, name="c", unit="series")
    mask = spike_mask(len(series.values), series.spikes)
    np.testing.assert_array_equal(noise.values[~mask], series.values[~mask])
    for a, b in zip(noise.spikes, series.spikes, strict=True):
        unit = _series_sd_from(series.values, series.spikes, b.onset)
        assert b.unit_sd == pytest.approx(unit)
        diff = (
            series.values[b.onset : b.onset + b.duration]
            - noise.values[a.onset : a.onset + a.duration]
        )
        np.testing.assert_array_equal(
            diff, math.ceil(b.size_sd * b.unit_sd) - math.ceil(a.size_sd * a.unit_sd)
        )


def test_unknown_unit_is_refused():
    with pytest.raises(ValueError):
        count_series(np.random.default_rng(0), weeks=1, base=3.0, name="c", unit="bogus")
