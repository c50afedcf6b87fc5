"""The labelled evaluation set and its scoring (flows/detector_eval.py), and the re-implemented
baselines (flows/detector_baselines.py). Fast: small series, no whole-set runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flows import detector_baselines as baselines
from flows.detector_eval import (
    PER_DAY,
    PER_WEEK,
    LabelledSeries,
    Spike,
    continuous_series,
    copy_of,
    count_series,
    episodes,
    evaluate,
    recall_by_evidence,
    recall_by_week,
    recall_of_events,
    robust_unit,
    spike_evidence,
    spike_shape,
    summarise,
)
from flows.stories import story_ids


def test_spikes_rise_linearly_and_decay_by_their_half_life():
    shape = spike_shape(4.0, rise=3, half_life=2.0)
    np.testing.assert_allclose(shape[:3], [4 / 3, 8 / 3, 4.0])
    np.testing.assert_allclose(shape[3:5], [4 * 0.5**0.5, 4 * 0.5])
    assert shape[-1] >= 0.5 > 4 * 0.5 ** (len(shape) - 2 + 1 / 2)  # stops under half an sd
    assert spike_shape(8.0, rise=1, half_life=1.0)[0] == 8.0


def test_robust_unit_is_the_mad_of_the_residual_noise_at_that_level():
    rng = np.random.default_rng(0)
    expected = np.r_[np.full(2000, 10.0), np.full(2000, 100.0)]
    noise = rng.normal(0, 1, 4000) * np.sqrt(expected)  # sd 3.16, then 10
    clean = expected + noise
    assert robust_unit(clean, expected, 10) == pytest.approx(np.sqrt(10), rel=0.06)
    assert robust_unit(clean, expected, 3000) == pytest.approx(10, rel=0.06)
    # the seasonal swing is not noise: a series that only moves with its mean has no spread
    assert robust_unit(expected, expected, 10) == pytest.approx(np.sqrt(10))  # the fallback


def test_count_spikes_have_their_size_in_robust_sd_at_the_peak():
    series = count_series(np.random.default_rng(3), weeks=1, base=10.0, name="c")
    assert len(series.spikes) == 3
    for s in series.spikes:
        peak = s.excess[s.rise - 1]
        assert peak == math.ceil(s.size_sd * s.unit_sd - 1e-9)
        assert s.unit_sd == pytest.approx(np.sqrt(series.noise_sd[s.onset] ** 2), rel=0.5)
    spikes = np.zeros(len(series.values))
    for s in series.spikes:
        spikes[s.onset : s.end] += s.excess
    assert (series.values - spikes >= 0).all()


def test_continuous_noise_has_a_robust_sd_of_one():
    for heavy in (False, True):
        series = continuous_series(np.random.default_rng(4), weeks=2, heavy=heavy, name="x")
        units = [s.unit_sd for s in series.spikes]
        assert np.median(units) == pytest.approx(1.0, abs=0.06)
        assert series.law == ("t5" if heavy else "gauss")


def test_copies_and_retweets_count_as_one_story():
    rng = np.random.default_rng(5)
    text = "Oil major cuts its dividend as crude slides below $60 https://t.co/abcdEFG"
    copies = [copy_of(text, rng) for _ in range(40)]
    assert len(set(copies)) > 20  # the copies differ as texts ...
    assert len(set(story_ids([text, *copies]))) == 1  # ... and are one story


def labelled(n: int, spikes: list[Spike], shifts=()) -> LabelledSeries:
    return LabelledSeries(
        "x", "gauss", np.zeros(n), np.zeros(n), np.ones(n), spikes, list(shifts), [], law="gauss"
    )


def test_episodes_merge_short_gaps():
    alert = np.zeros(30, dtype=bool)
    alert[[3, 4, 6, 10, 20, 21]] = True
    assert episodes(alert) == [(3, 7), (10, 11), (20, 22)]
    assert episodes(alert, gap=3) == [(3, 11), (20, 22)]


def test_a_spike_is_found_within_two_windows_and_other_episodes_are_false():
    spikes = [Spike(100, 4.0, 1, 1.0, 1.0, np.ones(4)), Spike(300, 5.0, 3, 2.0, 1.0, np.ones(6))]
    alert = np.zeros(2016, dtype=bool)
    alert[102:104] = True  # the first spike, two windows late: found, delay 2
    alert[303:305] = True  # the second spike, three windows late: missed, but not false
    alert[500:502] = True  # false
    alert[1000] = True  # just after a level shift: neither
    result = evaluate(labelled(2016, spikes, shifts=[990]), alert)
    assert [delay for _, _, delay, _ in result.found] == [2, None]
    assert (result.true_episodes, result.false_episodes) == (2, 1)
    row = summarise([result]).set_index("family").loc["gauss"]
    assert (row["recall"], row["recall_d1"], row["false_per_key_week"]) == (0.5, 0.0, 1.0)


def test_spike_evidence_is_how_rare_the_peak_is_as_noise():
    """On Gaussian noise it is the height in sd; the same "robust sd" height is a much weaker
    event on a sparse count (skewed) or on Student-t noise (heavy tails)."""
    n = 400

    def one(law: str, mu: float, sd: float, excess: list[float]) -> float:
        spike = Spike(100, 4.0, 1, 1.0, 1.0, np.asarray(excess, dtype=float))
        expected = np.full(n, mu)
        series = LabelledSeries("s", "x", expected, expected, np.full(n, sd), [spike], [], [])
        series.law = law
        return spike_evidence(series, spike)

    assert one("gauss", 100.0, 2.0, [8.0, 4.0, 2.0, 1.0]) == pytest.approx(4.0)
    assert one("gauss", 100.0, 1.0, [2.0, 5.0, 1.0]) == pytest.approx(5.0)  # the largest of 3
    assert one("gauss", 100.0, 1.0, [1.0, 1.0, 1.0, 9.0]) == pytest.approx(1.0)  # too late
    # 2 stories at 0.3 expected: "4 robust sd" on the MAD yardstick (0.44), a 2-sd event
    sparse = one("poisson", 0.3, math.sqrt(0.3), [1.7])
    assert 2.0 < sparse < 2.6
    heavy = one("t5", 0.0, math.sqrt(5 / 3) / (0.7267 * 1.4826), [4.0])  # 4 MAD-based sd of t5
    assert 2.5 < heavy < 2.8
    dense = one("nb", 40.0, math.sqrt(40.0), [4 * math.sqrt(40.0)])
    assert 3.3 < dense < 4.0  # the count's skew: a little weaker than 4 sd


def test_recall_by_evidence_bins_the_spikes_by_that_rarity():
    spikes = [Spike(100 + 200 * k, 4.0, 1, 1.0, 1.0, np.asarray([h, 0.5])) for k, h in
              enumerate([2.0, 3.5, 4.5, 7.0])]  # fmt: skip
    alert = np.zeros(2016, dtype=bool)
    alert[[500, 700]] = True  # the 4.5- and 7-sd spikes
    result = evaluate(labelled(2016, spikes), alert)
    assert result.evidence == pytest.approx([2.0, 3.5, 4.5, 7.0])
    table = recall_by_evidence([result]).set_index("peak_as_noise_sd")
    assert table.loc["< 3", "recall"] == 0.0 and table.loc[">= 6", "recall"] == 1.0
    assert table["spikes"].sum() == 4
    assert recall_of_events([result]) == 1.0 and recall_of_events([result], 3.0) == 2 / 3


def test_recall_by_week_splits_the_spikes_by_the_week_of_their_onset():
    onsets = [100, 600, PER_WEEK + 100, PER_WEEK + 600, 2 * PER_WEEK + 100]
    spikes = [Spike(o, 4.0, 1, 1.0, 1.0, np.asarray([6.0, 0.5])) for o in onsets]
    alert = np.zeros(3 * PER_WEEK, dtype=bool)
    alert[[100, PER_WEEK + 100, PER_WEEK + 601]] = True  # 1 of 2 in week 1, 2 of 2 in week 2
    result = evaluate(labelled(3 * PER_WEEK, spikes), alert)
    assert result.onsets == onsets
    table = recall_by_week([result]).set_index("family")
    assert list(table.index) == ["gauss", "all"]
    assert table.loc["all", "week 1"] == 0.5 and table.loc["all", "week 2"] == 1.0
    assert table.loc["all", "week 3"] == 0.0
    assert table.loc["all", "after week 1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "score",
    [
        baselines.rolling_z_score,
        baselines.skyline_score,
        baselines.seasonal_esd_score,
        baselines.oracle_score,
    ],
)
def test_baselines_use_only_earlier_windows(score):
    series = count_series(np.random.default_rng(6), weeks=1, base=10.0, name="c")
    cut = 4 * PER_DAY
    first = score(series)
    changed = LabelledSeries(**{**series.__dict__, "values": series.values.copy()})
    changed.values[cut:] = 500.0  # a huge surge from here on
    second = score(changed)
    np.testing.assert_allclose(first[:cut], second[:cut])
    assert second[cut] > first[cut] and np.isfinite(second).all()


def test_baselines_fire_on_a_big_spike():
    rng = np.random.default_rng(7)
    n = 3 * PER_DAY
    expected = np.full(n, 50.0)
    values = expected + rng.normal(0, 1, n)
    values[2 * PER_DAY + 10 : 2 * PER_DAY + 13] += 20.0
    series = LabelledSeries("g", "gauss", values, expected, np.ones(n), [], [], [], law="gauss")
    at = 2 * PER_DAY + 12
    assert baselines.rolling_z_score(series)[at] > 3
    assert baselines.skyline_score(series)[at] >= 5 / 7
    assert baselines.oracle_score(series)[at] > 10
    assert baselines.seasonal_esd_score(series)[at] > 1
    assert isinstance(pd.Series(baselines.skyline_score(series)).max(), float)


def test_decomposition_swaps_in_the_truth_and_nothing_else():
    from flows import detector_decompose as dec
    from flows.detector import DetectorConfig, score_series

    series = count_series(np.random.default_rng(5), weeks=2, base=10.0, name="c")
    config = DetectorConfig()
    truth = dec.score(series, config, ("true", "true", "none"))
    floor = np.maximum(config.min_rate, series.expected)
    np.testing.assert_allclose(truth["expected"].to_numpy(), floor)
    as_is = dec.score(series, config, dec.VARIANTS[0])
    plain = score_series(series.times, series.values, config)
    np.testing.assert_allclose(as_is["expected"].to_numpy(), plain["expected"].to_numpy())
    assert (as_is["alert"].to_numpy() == plain["alert"].to_numpy()).all()
    assert not np.allclose(as_is["expected"].to_numpy(), floor)


def test_decomposition_cli(capsys):
    from flows import detector_decompose as dec

    assert dec.main(["--family", "sparse", "--seeds", "1", "--weeks", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(dec.VARIANTS)
    assert "baseline error after week 1" in out
    for bad in (["--seeds", "0"], ["--weeks", "1"], ["--family", "gauss"]):
        with pytest.raises(SystemExit) as exit_info:
            dec.main(bad)
        assert exit_info.value.code == 2


def test_eval_cli_scores_config_overrides_on_dev_only(capsys):
    from flows import detector_eval

    argv = ["--weeks", "1", "--dev-seeds", "1", "--test-seeds", "0", "--only", "yuqing"]
    argv += ["--no-texts"]
    detector_eval.main([*argv, "--overrides", '{"burst_alpha": 0.05}'])
    out = capsys.readouterr().out
    assert 'yuqing {"burst_alpha": 0.05}, threshold' in out
    comparison = out.split("#### comparison")[1]
    rows = [line for line in comparison.splitlines() if line.startswith("| yuqing")]
    assert {row.split(" | ")[0] for row in rows} == {"| yuqing", '| yuqing {"burst_alpha": 0.05}'}
    assert all(" | dev | " in row for row in rows)  # no test seeds were scored
    for bad in (
        ["--overrides", '{"no_such_field": 1}'],
        ["--overrides", "[1]"],
        ["--overrides", "{"],
        ["--dev-seeds", "0"],
        ["--test-seeds", "0", "--plot", "x.png"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            detector_eval.main(bad)
        assert exit_info.value.code == 2
