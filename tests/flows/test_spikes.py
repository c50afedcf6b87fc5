import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from flows.spikes import SpikeRule, detect_spikes, poisson_log10_tail, severity_for

RULE = SpikeRule(
    window=timedelta(minutes=5), baseline=timedelta(hours=6), min_count=5, threshold=6.0
)
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def series(topic: str, counts: list[int]) -> pd.DataFrame:
    rows = [(topic, T0 + i * RULE.window, c) for i, c in enumerate(counts) if c]
    return pd.DataFrame(rows, columns=["topic", "window_start", "negative"])


def candidate(topic: str, index: int) -> pd.DataFrame:
    return pd.DataFrame({"topic": [topic], "window_start": [T0 + index * RULE.window]})


@pytest.mark.parametrize(
    ("observed", "expected"), [(1, 0.5), (5, 0.5), (10, 2.0), (3, 5.0), (40, 20.0)]
)
def test_poisson_tail_matches_the_direct_sum(observed, expected):
    direct = 1 - sum(math.exp(-expected) * expected**k / math.factorial(k) for k in range(observed))
    assert poisson_log10_tail(observed, expected) == pytest.approx(math.log10(direct), rel=1e-6)


def test_poisson_tail_stays_finite_for_huge_spikes():
    assert -poisson_log10_tail(5000, 10.0) > 1000


def test_surge_over_a_quiet_baseline_alerts():
    counts = [0, 1, 0, 0, 1, 0] * 12 + [12]
    alerts = detect_spikes(series("Energy", counts), candidates=candidate("Energy", 72), rule=RULE)
    assert len(alerts) == 1
    alert = alerts.iloc[0]
    assert alert.observed == 12 and alert.expected == pytest.approx(0.5)  # floor rate
    assert alert.window_end - alert.window_start == RULE.window
    assert alert.score >= RULE.threshold and alert.severity in {"medium", "high", "critical"}


def test_a_busy_topic_does_not_alert_on_its_normal_level():
    counts = [10, 12, 9, 11, 13, 10] * 12 + [14]
    assert detect_spikes(
        series("Macro", counts), candidates=candidate("Macro", 72), rule=RULE
    ).empty


def test_min_count_holds_back_tiny_windows():
    counts = [0] * 72 + [4]
    assert detect_spikes(series("IPO", counts), candidates=candidate("IPO", 72), rule=RULE).empty


def test_a_past_spike_does_not_mask_the_next_one():
    counts = [1] * 40 + [30] + [1] * 31 + [12]
    alerts = detect_spikes(series("Fed", counts), candidates=candidate("Fed", 72), rule=RULE)
    assert len(alerts) == 1 and alerts.iloc[0].expected == pytest.approx(1.0)


def test_only_earlier_windows_form_the_baseline():
    # A later spike must not raise the expectation of an earlier window.
    counts = [0] * 72 + [12] + [40] * 5
    alerts = detect_spikes(series("Gold", counts), candidates=candidate("Gold", 72), rule=RULE)
    assert alerts.iloc[0].expected == pytest.approx(RULE.floor_rate)


def test_no_candidates_gives_an_empty_frame_with_columns():
    frame = detect_spikes(
        series("X", [1]), candidates=pd.DataFrame(columns=["topic", "window_start"]), rule=RULE
    )
    assert frame.empty and "severity" in frame.columns


def test_severity_grades():
    assert [severity_for(s) for s in (6.5, 10, 20)] == ["medium", "high", "critical"]
