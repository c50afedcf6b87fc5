"""A labelled evaluation set for share shifts (the negative share of a topic jumping while its
volume stays flat), scored like the count set of flows/detector_eval.py.

    python -m flows.share_eval [--weeks 4] [--dev-seeds 6] [--test-seeds 10]

Per seed, one share key at each of SHARE_BASES items per window (5-minute windows, the count
set's seasonal volume profile: busy US hours, quiet nights and weekends, a trend). The true
negative share starts at 0.1-0.4, swings up to 15% over the day, drifts by up to 15% over the
series and moves by a factor of 0.7 or 1.4 once for good (a level shift). The negative count
is beta-binomial around it (over-dispersion 1.0-1.5 at the base volume) and two unlabelled
three-hour bursts quadruple the over-dispersion.

Shifts: three per key and week, of 4, 5, 6 or 8 robust sd at their peak with the count set's
shapes. The robust sd is that of the negative count around total x true share (as in the count
set), and a shift turns that many items of the window negative: the total does not change. An
item that is already negative cannot turn, so a shift is capped at the window's total.

yuqing's share detector scores only windows with at least ``ShareDetector.min_total`` items,
so the tables give recall over every shift and over the "scorable" ones: those with at least
that many items in one of the windows a detection may come in (the onset and the two after).
The oracle scores the same windows with the true share and over-dispersion (beta-binomial
mid-p tails) and the same scan of 1-3 windows; its threshold, like yuqing's, is the lowest at
which every family stays within BUDGET false alerts per key and week on the dev seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from flows.detector import DetectorConfig, ShareDetector
from flows.detector_baselines import _trailing_sums
from flows.detector_eval import (
    MAX_DELAY,
    PER_DAY,
    PER_WEEK,
    Candidate,
    LabelledSeries,
    SeriesResult,
    _grid,
    _inject,
    _layout,
    _profile,
    add_set_arguments,
    markdown,
    recall_by_size,
    robust_unit,
    run_candidate,
    seeds_from,
    summarise,
    tune,
)

SHARE_BASES = (20.0, 60.0, 200.0)  # items per window at the volume profile's mean
MIN_TOTAL = ShareDetector().min_total


@dataclass(kw_only=True)
class ShareSeries(LabelledSeries):
    """A share key, scored like any labelled series: ``values`` are the negative items per
    window (shifts included), ``expected`` is total x the true share; ``total`` is every item
    of the window."""

    total: np.ndarray
    share: np.ndarray  # the true negative share of every window
    rho: np.ndarray  # the beta-binomial intra-class correlation of every window

    def scorable(self, onset: int) -> bool:
        """Whether a window the detection may come in (onset and MAX_DELAY after) is scored."""
        return bool((self.total[onset : onset + MAX_DELAY + 1] >= MIN_TOTAL).any())


def _beta_binomial(rng: np.random.Generator, total, share, rho) -> np.ndarray:
    over = rho > 0
    q = np.array(share, dtype=float)
    spread = 1.0 / rho[over] - 1.0
    q[over] = rng.beta(share[over] * spread, (1 - share[over]) * spread)
    return rng.binomial(total, q)


def share_series(rng: np.random.Generator, *, weeks: int, base: float, name: str) -> ShareSeries:
    n = weeks * PER_WEEK
    volume = base * _profile(n, rng) * np.linspace(1.0, rng.uniform(0.8, 1.25), n)
    total = rng.poisson(volume)
    hours = np.arange(n) * 24.0 / PER_DAY
    swing = rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * (hours - rng.uniform(0, 24)) / 24)
    share = rng.uniform(0.1, 0.4) * (1 + swing) * np.linspace(1.0, rng.uniform(0.85, 1.15), n)
    shift, bursts, _, spikes = _layout(n, rng, weeks=weeks)
    share[shift:] *= rng.choice([0.7, 1.4])
    share = np.clip(share, 0.01, 0.9)
    rho = np.full(n, (rng.uniform(1.0, 1.5) - 1.0) / (base - 1.0))
    for b, e in bursts:
        rho[b:e] *= 4.0
    clean = _beta_binomial(rng, total, share, rho).astype(float)
    expected = total * share
    variance = expected * (1 - share) * (1 + np.maximum(total - 1, 0) * rho)
    for s in spikes:
        s.unit_sd = robust_unit(clean, expected, s.onset)
    values = np.minimum(_inject(clean, spikes, counts=True), total)  # the volume stays flat
    for s in spikes:  # what the cap at the total left of each shift
        s.excess = values[s.onset : s.end] - clean[s.onset : s.end]
    sd = np.sqrt(np.maximum(variance, 0.25))  # an empty window: half an item, not zero
    return ShareSeries(
        name, f"share-{base:g}", values, expected, sd, spikes, [shift], bursts,
        law="gauss",  # only spike_evidence reads it; no table here reports that
        total=total.astype(int), share=share, rho=rho,
    )  # fmt: skip


def build_share_set(*, weeks: int, seeds) -> list[ShareSeries]:
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed + 50_000)  # not the count set's draws
        out += [
            share_series(rng, weeks=weeks, base=b, name=f"share-{seed}-{b:g}") for b in SHARE_BASES
        ]
    return out


# -- the detectors -----------------------------------------------------------------------------


def yuqing_share_alerts(key: ShareSeries, open_level: float) -> np.ndarray:
    detector = ShareDetector(config=replace(DetectorConfig(), open_level=open_level))
    times, values, total = key.times, key.values, key.total
    return np.array(
        [
            detector.update(times[i], int(values[i]), int(total[i])).alerting
            for i in range(len(total))
        ]
    )


def oracle_share_score(key: ShareSeries) -> np.ndarray:
    """The scan of 1-3 scored windows' z, each z the mid-p upper tail of the negative count
    under the true beta-binomial (binomial where there is no over-dispersion)."""
    x, n = key.values.astype(int), key.total
    p, rho = key.share, key.rho
    scored = n >= MIN_TOTAL
    tail = np.ones(len(n))
    over = scored & (rho > 0)
    spread = 1.0 / np.where(over, rho, 1.0) - 1.0
    a, b = p * spread, (1 - p) * spread
    tail[over] = stats.betabinom.sf(
        x[over] - 1, n[over], a[over], b[over]
    ) - 0.5 * stats.betabinom.pmf(x[over], n[over], a[over], b[over])
    plain = scored & ~over
    tail[plain] = stats.binom.sf(x[plain] - 1, n[plain], p[plain]) - 0.5 * stats.binom.pmf(
        x[plain], n[plain], p[plain]
    )
    z = np.where(scored, -stats.norm.ppf(np.clip(tail, 1e-300, 1.0)), 0.0)
    scan = range(1, DetectorConfig().scan + 1)
    best = np.max([_trailing_sums(z, k) / math.sqrt(k) for k in scan], axis=0)
    return np.where(scored, best, 0.0)


def share_candidates() -> list[Candidate]:
    return [
        Candidate(
            "yuqing share", yuqing_share_alerts, _grid(3.2, 6.0, 0.05),
            DetectorConfig().open_level, score_once=False,
        ),
        Candidate("oracle share scan", lambda key, _: oracle_share_score(key), _grid(2.5, 6.0, 0.05)),
    ]  # fmt: skip


def recall_scorable(keys: list[ShareSeries], results: list[SeriesResult]) -> pd.DataFrame:
    """Recall by size over the shifts whose windows the share detector scores at all."""
    rows = [
        (spike.size_sd, delay is not None)
        for key, result in zip(keys, results, strict=True)
        for spike, (_, _, delay, _) in zip(key.spikes, result.found, strict=True)
        if key.scorable(spike.onset)
    ]
    frame = pd.DataFrame(rows, columns=["size_sd", "found"])
    table = frame.groupby("size_sd")["found"].agg(["size", "mean"]).reset_index()
    table.columns = ["size_sd", "scorable_shifts", "recall"]
    total = pd.DataFrame(
        [{"size_sd": "all", "scorable_shifts": len(frame), "recall": frame["found"].mean()}]
    )
    return pd.concat([table, total], ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_arguments(parser)
    args = parser.parse_args(argv)
    dev_seeds, test_seeds = seeds_from(parser, args)
    out = sys.stdout
    out.write(f"weeks={args.weeks} dev seeds={list(dev_seeds)} test seeds={list(test_seeds)}\n")
    splits = {"dev": build_share_set(weeks=args.weeks, seeds=dev_seeds)}
    if test_seeds:
        splits["test"] = build_share_set(weeks=args.weeks, seeds=test_seeds)
    comparison = []
    for candidate in share_candidates():
        cache: dict = {}
        tuned, _ = tune(candidate, splits["dev"], cache)
        settings = [(tuned, "tuned on dev")]
        if candidate.published is not None and not math.isclose(candidate.published, tuned):
            settings.append((candidate.published, "default"))
        for value, label in settings:
            for split, keys in splits.items():
                results = run_candidate(candidate, keys, value, cache)
                out.write(
                    f"\n#### {candidate.name}, threshold {value:.3g} ({label}), {split} seeds\n\n"
                )
                out.write(markdown(summarise(results)) + "\n\n")
                out.write(markdown(recall_by_size(results)) + "\n\n")
                out.write(markdown(recall_scorable(keys, results)) + "\n")
                summary = summarise(results).set_index("family")
                scorable = recall_scorable(keys, results).set_index("size_sd")
                comparison.append({
                    "detector": candidate.name, "threshold": f"{value:.3g} ({label})", "seeds": split,
                    "recall": summary.loc["all", "recall"],
                    "recall_scorable": scorable.loc["all", "recall"],
                    "recall_4sd_scorable": scorable.loc[4.0, "recall"],
                    "precision": summary.loc["all", "precision"],
                    "mean_delay": summary.loc["all", "mean_delay"],
                    "false_per_key_week": summary.loc["all", "false_per_key_week"],
                    "worst_family": summary.drop(index="all")["false_per_key_week"].max(),
                })  # fmt: skip
            out.flush()
    out.write("\n#### comparison\n\n" + markdown(pd.DataFrame(comparison)) + "\n")


if __name__ == "__main__":
    main()
