"""The `yuqing` command as users run it: real subprocesses, real broker, real DuckDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import encode, news

COMMANDS = [
    "demo",
    "run",
    "serve",
    "train",
    "eval",
    "classify",
    "explain",
    "sql",
    "replay",
    "broker",
]


def yuqing(*args: str, env: dict | None = None, stdin: str | None = None, timeout: float = 240):
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def prefect_api(prefect_harness) -> dict:
    """Let subprocesses use the harness's Prefect server instead of starting their own."""
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = yuqing(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and f"yuqing {command}" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--no-such-flag"], "No such option"),
        (["sql"], "Missing argument"),
        (["serve", "--every", "5 parsecs"], "not a duration"),
        (["eval", "--model", "m", "--task", "mood", "--data", "x.csv"], "Invalid value"),
        (["replay", "/no/such/file.jsonl"], "no such file"),
        (["sql", "SELECT 1", "--db", "/no/such.duckdb"], "no yuqing database"),
    ],
)
def test_bad_arguments_get_one_line_and_no_traceback(args, message):
    result = yuqing(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_is_one_line(tmp_path):
    result = yuqing("run", env={"YUQING_WINDOW": "soon"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "yuqing run: invalid setting window: Value error, not a duration: 'soon' (use e.g. 30s, 5m, 1h, 7d)"
    ]


def test_replay_run_then_sql_through_the_cli(yuqing_env, broker, topic_name, tmp_path, prefect_api):
    stream = tmp_path / "stream.jsonl"
    lines = [
        encode(news(f"cli-{i}", f"oil plunges item{i}", published_at=None)) for i in range(5)
    ] + [b"{broken"]
    stream.write_bytes(b"\n".join(lines) + b"\n")
    replayed = yuqing("replay", str(stream), "--topic", topic_name)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 6 messages" in replayed.stdout

    run = yuqing("run", "--json", env=prefect_api)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["messages_read"], summary["scored"], summary["dead_lettered"]) == (6, 5, 1)

    query = yuqing(
        "sql", "SELECT id, sentiment, topic FROM scored_news ORDER BY id", "--format", "json"
    )
    assert query.returncode == 0, query.stderr
    assert [row["id"] for row in json.loads(query.stdout)] == [f"cli-{i}" for i in range(5)]
    table = yuqing("sql", "SELECT count(*) AS n FROM dead_letters", "--format", "csv")
    assert table.stdout.split() == ["n", "1"]
    refused = yuqing("sql", "DELETE FROM news")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1


def test_run_against_a_dead_broker_exits_nonzero_with_the_reason(yuqing_env, prefect_api):
    from infra.broker import free_port

    env = {
        **prefect_api,
        "YUQING_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "YUQING_KAFKA_TIMEOUT_S": "1",
        "YUQING_KAFKA_CONNECT_ATTEMPTS": "1",
    }
    result = yuqing("run", env=env)
    assert result.returncode == 1
    assert "yuqing run: run failed: cannot reach Kafka" in result.stderr
    assert "Traceback" not in result.stderr


def test_classify_reads_stdin_and_writes_json_lines(tiny_model_dir):
    result = yuqing(
        "classify", "--model", str(tiny_model_dir), stdin="oil plunges crash\n\nfed soars rally\n"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["oil plunges crash", "fed soars rally"]
    assert all(
        r["sentiment"] in {"negative", "neutral", "positive"} and 0 < r["topic_score"] <= 1
        for r in rows
    )


def test_explain_prints_the_words_behind_each_prediction(tiny_model_dir):
    result = yuqing(
        "explain", "--model", str(tiny_model_dir), "oil plunges crash", "--task", "sentiment"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sentiment: ") and "convergence delta" in lines[0]
    assert any(line.startswith("  toward ") for line in lines)
    assert lines[-1].startswith("  marked: ") and "plunges" in lines[-1]
    assert not any(line.startswith("topic: ") for line in lines)


def test_explain_json_and_html(tiny_model_dir, tmp_path):
    page = tmp_path / "explain.html"
    text = "Oil plunges <b>crash</b> & item7"
    result = yuqing(
        "explain",
        "--model",
        str(tiny_model_dir),
        text,
        "--json",
        "--html",
        str(page),
        "--steps",
        "8",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert record["text"] == text and {"sentiment", "topic"} <= record.keys()
    for task in ("sentiment", "topic"):
        entry = record[task]
        assert {"label", "score", "tokens", "convergence_delta", "logit", "baseline_logit"} <= (
            entry.keys()
        )
        assert entry["steps"] == 8 and 0 < entry["score"] <= 1
        assert [t["word"] for t in entry["tokens"]][:2] == ["Oil", "plunges"]
    content = page.read_text(encoding="utf-8")
    assert content.startswith("<!DOCTYPE html>")
    assert ">plunges</span>" in content and ">item7</span>" in content
    assert "<b>" not in content and "&lt;" in content and "&amp;" in content


def test_explain_without_words_is_one_line(tiny_model_dir):
    empty = yuqing("explain", "--model", str(tiny_model_dir), " ")
    assert empty.returncode == 1 and empty.stdout == ""
    assert empty.stderr.splitlines() == ["yuqing explain: nothing to explain: the text is empty"]
    # a zero-width space is not blank, but has no tokens: found after the model is loaded
    invisible = yuqing("explain", "--model", str(tiny_model_dir), "\u200b")
    assert invisible.returncode == 1 and invisible.stdout == ""
    assert invisible.stderr.splitlines()[-1] == (
        "yuqing explain: nothing to explain: the text has no tokens"
    )
    assert "Traceback" not in invisible.stderr


def test_eval_json_reports_metrics(tiny_model_dir, tmp_path):
    from tests.conftest import synthetic_labeled

    sentiment, _ = synthetic_labeled(seed=3, n=60)
    data = tmp_path / "sentiment.csv"
    sentiment.to_csv(data, index=False)
    result = yuqing(
        "eval", "--model", str(tiny_model_dir), "--task", "sentiment", "--data", str(data), "--json"
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["task"] == "sentiment" and metrics["n"] == 60
    assert {"accuracy", "macro_f1", "ece", "per_class"} <= metrics.keys()
    assert metrics["accuracy"] > 0.5  # the synthetic words are easy; chance is 1/3
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nsome text,furious\n")
    unknown = yuqing(
        "eval", "--model", str(tiny_model_dir), "--task", "sentiment", "--data", str(bad)
    )
    assert (
        unknown.returncode == 1
        and "furious" in unknown.stderr
        and "Traceback" not in unknown.stderr
    )
