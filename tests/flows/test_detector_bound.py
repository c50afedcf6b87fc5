"""The Neyman-Pearson bound on what any detector can find (flows/detector_bound.py)."""

import numpy as np
import pytest
from scipy import special, stats

from flows import detector_bound as bound
from flows.detector_eval import build_set


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


def _tables(out: str) -> list[list[list[str]]]:
    """The markdown tables of the CLI's output: rows of cells, header and rule dropped."""
    tables, rows = [], []
    for line in [*out.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            tables.append([r for r in rows[1:] if not r[0].startswith("---")])
            rows = []
    return tables


def test_cli_prints_a_row_per_law_and_bounds_grow_with_size(capsys):
    bound.main(["--samples", "20000"])
    four = _tables(capsys.readouterr().out)
    bound.main(["--size", "6", "--samples", "20000"])
    six = _tables(capsys.readouterr().out)

    def column(table, at: int) -> list[float]:
        return [float(r[at]) for r in table]

    told = column(four[0], 2)
    assert len(told) == 7  # five Poisson means, Gaussian, t(5)
    assert all(a <= b for a, b in zip(told, column(six[0], 2), strict=True))
    assert min(told) < 0.9 < max(told)
    # not told the size: over the mix of 4-8 sd, so above the 4-sd bound of the same law
    blind, scan = column(four[1], 1), column(four[1], 2)
    assert len(blind) == 7 and all(b >= t - 0.02 for b, t in zip(blind, told, strict=True))
    assert all(s <= b + 0.03 for s, b in zip(scan, blind, strict=True))  # no test beats it
    for bad in (
        ["--size", "0"],
        ["--alarms-per-week", "-1"],
        ["--samples", "10"],
        ["--on-set", "x"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            bound.main(bad)
        assert exit_info.value.code == 2


def test_the_blind_bound_lies_between_one_window_and_being_told_the_spike():
    alpha = 3 / 2016
    mean = 0.5
    unit = bound.poisson_robust_sd(mean)
    excess = [bound.count_excess(h, unit) for h in bound.spike_mixture()]
    told = np.mean([bound.poisson_bound(mean, e, alpha) for e in excess])
    blind = bound.blind_count_power(mean, mean, alpha, np.random.default_rng(0), 1000)
    # the best test of the first window alone, against the mixture
    top = 60
    p0 = stats.poisson.pmf(np.arange(top), mean)
    p1 = np.mean([stats.poisson.pmf(np.arange(top), mean + e[0]) for e in excess], axis=0)
    one_window = bound.lr_power(p0, p1, alpha)
    assert one_window < blind <= told + 1e-9
    assert told - blind < 0.1  # not knowing the shape costs little


def test_blind_count_bound_exact_and_monte_carlo_agree():
    alpha = 3 / 2016
    exact = bound.blind_count_power(1.0, 1.3, alpha, np.random.default_rng(0), 1000)
    sampled = bound.blind_count_power(
        1.0, 1.3, alpha, np.random.default_rng(0), 400_000, max_cells=0
    )
    assert sampled == pytest.approx(exact, abs=0.02)


def test_blind_gaussian_bound_beats_the_first_window_alone():
    alpha = 3 / 2016
    heights = np.array(bound.spike_mixture())
    one_window = np.mean(special.ndtr(heights[:, 0] - special.ndtri(1 - alpha)))
    blind = bound.blind_continuous_power("gauss", alpha, np.random.default_rng(0), 200_000)
    told = np.mean([bound.gaussian_bound(h, alpha) for h in heights])
    assert one_window + 0.05 < blind <= told + 0.01


def test_set_ceiling_averages_the_blind_bound_over_a_sets_spikes():
    series = build_set(weeks=1, seeds=[1000], with_texts=False)
    table = bound.set_ceiling(series, mc=20_000).set_index("family")
    assert list(table.index) == ["counts", "sparse", "gauss", "heavy", "all"]
    spikes = table["spikes"].drop("all")
    assert table.loc["all", "spikes"] == spikes.sum() == sum(len(s.spikes) for s in series)
    weighted = (table["best_recall"].drop("all") * spikes).sum() / spikes.sum()
    assert table.loc["all", "best_recall"] == pytest.approx(weighted)
    assert table.loc["sparse", "best_recall"] < table.loc["gauss", "best_recall"] <= 1.0
