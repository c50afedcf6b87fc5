"""The share-shift evaluation set (flows/share_eval.py): the negative share jumps while the
volume stays flat. Small series only; the whole set is `python -m flows.share_eval`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flows.detector_eval import PER_WEEK, SeriesResult, Spike, evaluate, run_candidate, summarise
from flows.share_eval import (
    MIN_TOTAL,
    ShareSeries,
    main,
    oracle_share_score,
    recall_scorable,
    share_candidates,
    share_series,
)


def test_share_shifts_keep_the_volume_and_have_their_size_at_the_peak():
    key = share_series(np.random.default_rng(7), weeks=1, base=60.0, name="s")
    values, total = key.values, key.total
    assert len(total) == PER_WEEK and (values <= total).all() and (values >= 0).all()
    assert len(key.spikes) == 3 and key.family == "share-60"
    in_spike = np.zeros(len(total), dtype=bool)
    for s in key.spikes:
        in_spike[s.onset : s.end] = True
        peak = s.rise - 1
        clean = values[s.onset + peak] - s.excess[peak]
        if values[s.onset + peak] < total[s.onset + peak]:  # not capped by the total
            assert s.excess[peak] == math.ceil(s.size_sd * s.unit_sd - 1e-9)
        else:
            assert s.excess[peak] == total[s.onset + peak] - clean
        # one robust sd of a negative count at this volume: about sqrt(n p (1 - p))
        assert s.unit_sd == pytest.approx(key.noise_sd[s.onset], rel=0.5)
    # away from the shifts the negative count follows the true share
    observed = values[~in_spike].sum() / total[~in_spike].sum()
    true = (key.share * total)[~in_spike].sum() / total[~in_spike].sum()
    assert observed == pytest.approx(true, rel=0.03)


def _flat_key(values, total, share=0.2, spikes=()) -> ShareSeries:
    n, total = len(values), np.asarray(total)
    return ShareSeries(
        "flat", "share-60", np.asarray(values, float), total * share,
        np.sqrt(total * share * (1 - share)), list(spikes), [], [],
        total=total, share=np.full(n, share), rho=np.zeros(n),
    )  # fmt: skip


def test_the_oracle_share_scan_is_calm_on_noise_and_high_on_a_shift():
    rng = np.random.default_rng(1)
    total = np.full(4000, 60)
    values = rng.binomial(total, 0.2)
    calm = oracle_share_score(_flat_key(values, total))
    assert np.mean(calm >= 3.65) < 0.003  # a one-sided 3.65-z scan of 3 on pure noise
    values[3000] += 25  # 8 sd of a binomial(60, 0.2)
    assert oracle_share_score(_flat_key(values, total))[3000] > 5  # exact tails: 5.9
    total[3000] = MIN_TOTAL - 1  # windows the detector does not score, the oracle does not either
    assert oracle_share_score(_flat_key(np.minimum(values, total), total))[3000] == 0.0


def test_yuqing_finds_the_large_shifts_of_a_busy_key_within_its_budget():
    key = share_series(np.random.default_rng(11), weeks=2, base=200.0, name="busy")
    yuqing = next(c for c in share_candidates() if c.name == "yuqing share")
    (result,) = run_candidate(yuqing, [key], 3.65, {})
    large = [d for size, _, d, _ in result.found if size >= 6]
    assert large and all(d is not None and d <= 2 for d in large)
    assert result.false_episodes <= 2  # the budget: one a week


def test_recall_scorable_leaves_out_shifts_in_windows_that_are_not_scored():
    total = np.full(600, 60)
    total[400:410] = MIN_TOTAL - 1  # a quiet stretch: the share is not scored there
    spikes = [
        Spike(100, 6.0, 1, 1.0, 3.1, np.array([19.0])),
        Spike(403, 6.0, 1, 1.0, 3.1, np.array([19.0])),
    ]
    key = _flat_key(np.full(600, 12), total, spikes=spikes)
    assert key.scorable(100) and not key.scorable(403) and key.scorable(408)
    alert = np.zeros(600, dtype=bool)
    alert[101] = True
    table = recall_scorable([key], [evaluate(key, alert)]).set_index("size_sd")
    assert table.loc["all", "scorable_shifts"] == 1 and table.loc["all", "recall"] == 1.0


def test_summarise_keeps_the_count_families_first_and_others_in_order_of_appearance():
    results = [
        SeriesResult("a", fam, 1.0, [(4.0, 1, 0, 1.0)], 1, 0)
        for fam in ("share-200", "gauss", "share-20", "counts")
    ]
    assert summarise(results)["family"].tolist() == [
        "counts", "gauss", "share-200", "share-20", "all",
    ]  # fmt: skip


def test_the_share_evaluation_runs_end_to_end_and_rejects_an_empty_set(capsys):
    main(["--weeks", "1", "--dev-seeds", "1", "--test-seeds", "0"])
    out = capsys.readouterr().out
    assert "#### yuqing share, threshold" in out and "#### oracle share scan" in out
    assert "| share-20 | 1 | 3 |" in out and "scorable_shifts" in out and "#### comparison" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["--weeks", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--weeks must be at least 1")
