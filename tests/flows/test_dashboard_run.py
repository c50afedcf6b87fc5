"""A real monitoring run feeds the analysts' side: model registry, Prefect artifacts, dashboard.

tansu broker → Prefect flow (test harness) → tiny model → DuckDB → replica → dashboard file.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import encode, produce_values, surge_messages

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_run_registers_its_model_publishes_artifacts_and_feeds_the_dashboard(
    yuqing_env, broker, topic_name, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.dashboard import build_dashboard
    from flows.monitor import (
        ALERTS_ARTIFACT_KEY,
        COUNTS_ARTIFACT_KEY,
        MIX_ARTIFACT_KEY,
        SUMMARY_ARTIFACT_KEY,
        monitor,
    )
    from storage.queries import read_only_query

    produce_values(broker.bootstrap, topic_name, [encode(m) for m in surge_messages(prefix="an")])
    summary = monitor()
    db = yuqing_env["YUQING_DB"]

    versions = read_only_query(db, "SELECT * FROM model_versions")
    assert versions["model_version"].tolist() == [summary["model_version"]]
    assert versions["items_scored"].tolist() == [summary["scored"]]
    assert versions["base_model"].iloc[0] and versions["trained_at"].notna().all()
    assert 0 <= versions["sentiment_macro_f1"].iloc[0] <= 1

    keys = [SUMMARY_ARTIFACT_KEY, MIX_ARTIFACT_KEY, COUNTS_ARTIFACT_KEY, ALERTS_ARTIFACT_KEY]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    by_key = {a.key: a for a in artifacts if str(a.flow_run_id) == summary["run_id"]}
    assert set(by_key) == set(keys)
    data = {k: a.data if isinstance(a.data, str | None) else a.data for k, a in by_key.items()}
    counts = json.loads(data[COUNTS_ARTIFACT_KEY])
    assert counts[0]["scored"] == summary["scored"] and counts[0]["status"] == "completed"
    raised = json.loads(data[ALERTS_ARTIFACT_KEY])
    assert len(raised) == summary["alerts_raised"] >= 1
    assert raised[0]["topic"] == "Energy | Oil"
    mix = json.loads(data[MIX_ARTIFACT_KEY])
    assert sum(row["n"] for row in mix) == summary["scored"]

    out = tmp_path / "dashboard.html"
    info = build_dashboard(db, output=out, since=None, until=None)
    assert info["items"] == summary["scored"]
    assert info["alerts"] == summary["alerts_raised"]
    assert info["as_of"] is not None
