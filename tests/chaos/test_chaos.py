"""The CI subset of the chaos suite: the same scenario code as `python -m tests.chaos`, small."""

from __future__ import annotations

import pytest

from tests.chaos import scenarios
from tests.chaos.common import ChaosEnv


@pytest.fixture
def chaos_env(broker, tiny_model_dir, prefect_harness, tmp_path) -> ChaosEnv:
    from prefect.settings import PREFECT_API_URL

    return ChaosEnv(
        bootstrap=broker.bootstrap,
        model_dir=tiny_model_dir,
        workdir=tmp_path,
        prefect_api_url=PREFECT_API_URL.value(),
        broker=broker,
        in_process=True,  # only the runs a scenario kills, pauses or limits are processes
    )


def assert_passed(outcome) -> None:
    assert outcome.passed, outcome.table()


def test_crash_killed_inside_the_commit_loses_nothing(chaos_env):
    outcome = scenarios.crash(
        chaos_env, messages=1_000, kills=1, phases=("commit",), batch=200, seed=1
    )
    assert_passed(outcome)
    assert outcome.figures["kills"] == 1


def test_fuzzed_input_is_dead_lettered_and_good_input_unaffected(chaos_env):
    assert_passed(scenarios.bad_input(chaos_env, fuzzed=600, good=100, huge=1, seed=2))


def test_broker_paused_mid_read_fails_cleanly_and_the_next_run_catches_up(chaos_env):
    assert_passed(scenarios.broker_outage(chaos_env, messages=100, when=("mid-read",)))


def test_alerts_wait_for_the_notifier_and_are_delivered_once(chaos_env):
    assert_passed(scenarios.notifier_outage(chaos_env))


def test_analysts_query_the_replica_while_runs_write(chaos_env):
    assert_passed(
        scenarios.analysts(chaos_env, queries=400, cli_queries=20, per_second=40, spread_s=15)
    )


def test_a_full_disk_fails_the_run_cleanly_and_the_next_run_recovers(chaos_env):
    assert_passed(scenarios.disk_full(chaos_env, first=200, second=600))


def test_an_unwritable_or_locked_database_fails_cleanly_and_the_next_run_recovers(chaos_env):
    outcome = scenarios.db_unwritable(
        chaos_env,
        first=100,
        per_case=150,
        cases=("read-only file", "read-only folder", "held by another writer"),
    )
    assert_passed(outcome)
    skipped = [case for case, value in outcome.figures.items() if str(value).startswith("skipped")]
    if skipped:
        pytest.skip(f"file modes do not bind for this user: {', '.join(skipped)} not exercised")
