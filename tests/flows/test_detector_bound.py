"""The Neyman-Pearson bound on what any detector can find (flows/detector_bound.py)."""

import numpy as np
import pytest
from scipy import special, stats

from flows import detector_bound as bound


def test_likelihood_ratio_power_randomises_at_the_boundary():
    p0 = np.array([0.9, 0.1])  # outcome 1 is 8x likelier under the spike
    p1 = np.array([0.2, 0.8])
    assert bound.lr_power(p0, p1, 0.1) == pytest.approx(0.8)
    assert bound.lr_power(p0, p1, 0.05) == pytest.approx(0.4)  # half the time on outcome 1
    assert bound.lr_power(p0, p1, 1.0) == pytest.approx(1.0)


def test_one_window_bounds_match_their_closed_forms():
    alpha = 1 / 2016
    # Gaussian: the test is x > z(1 - alpha), passed by a 4-sd spike with this probability
    expected = special.ndtr(4.0 - special.ndtri(1 - alpha))
    assert bound.gaussian_bound(np.array([4.0]), alpha) == pytest.approx(expected)
    assert 0.7 < expected < 0.8  # one window of 4 sd is not found 9 times in 10
    # Poisson(0.5) with 3 extra expected: x >= 5 always, x = 4 with the rest of the size
    tail5, at4 = stats.poisson.sf(4, 0.5), stats.poisson.pmf(4, 0.5)
    assert tail5 < alpha < tail5 + at4
    power = stats.poisson.sf(4, 3.5) + (alpha - tail5) / at4 * stats.poisson.pmf(4, 3.5)
    assert bound.poisson_bound(0.5, np.array([3.0]), alpha) == pytest.approx(power)


def test_robust_sd_of_a_poisson_is_the_sets_mad_yardstick():
    assert bound.poisson_robust_sd(0.3) == pytest.approx(1.4826 * 0.3)
    assert bound.poisson_robust_sd(1.0) == pytest.approx(1.4826)


def test_t_bound_is_the_size_without_a_spike_and_near_one_with_a_big_one():
    rng = np.random.default_rng(1)
    alpha = 3 / 2016
    assert bound.t_bound(np.zeros(3), alpha, rng, 200_000) < 4 * alpha
    assert bound.t_bound(np.array([12.0, 6.0, 3.0]), alpha, rng, 200_000) > 0.99


def test_cli_prints_a_row_per_law_and_bounds_grow_with_size(capsys):
    bound.main(["--samples", "20000"])
    four = capsys.readouterr().out
    bound.main(["--size", "6", "--samples", "20000"])
    six = capsys.readouterr().out

    def column(out: str) -> list[float]:
        rows = [r for r in out.splitlines() if r.startswith("| ") and "---" not in r][1:]
        return [float(r.split("|")[3]) for r in rows]

    assert len(column(four)) == 7  # five Poisson means, Gaussian, t(5)
    assert all(a <= b for a, b in zip(column(four), column(six), strict=True))
    assert min(column(four)) < 0.9 < max(column(four))
    for bad in (["--size", "0"], ["--alarms-per-week", "-1"], ["--samples", "10"]):
        with pytest.raises(SystemExit) as exit_info:
            bound.main(bad)
        assert exit_info.value.code == 2
