"""Security: Kafka SSL/SASL plumbing, secrets never leak, `yuqing sql` is read-only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from flows.config import Settings
from tests.conftest import encode, produce_values, surge_messages

WEBHOOK_SECRET = "whk-Zq81xTOKEN"
QUERY_TOKEN = "qtk-77PassToken"
SMTP_SECRET = "smtp-Hunter2Secret"
SASL_SECRET = "sasl-Pa55wordSecret"
SECRETS = (WEBHOOK_SECRET, QUERY_TOKEN, SMTP_SECRET, SASL_SECRET)


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SSL", None),
    ],
)
def test_ssl_and_sasl_settings_reach_every_kafka_client(protocol, mechanism, tmp_path):
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    settings = Settings(
        kafka_bootstrap="kafka-1:9093,kafka-2:9093",
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="yuqing" if mechanism else None,
        kafka_sasl_password=SASL_SECRET if mechanism else None,
        kafka_ssl_cafile=files["ca"],
        kafka_ssl_certfile=files["cert"],
        kafka_ssl_keyfile=files["key"],
    )
    options = settings.kafka_client_options()
    assert options["security_protocol"] == protocol
    assert options["bootstrap_servers"] == ["kafka-1:9093", "kafka-2:9093"]
    if mechanism:
        assert options["sasl_mechanism"] == mechanism
        assert options["sasl_plain_username"] == "yuqing"
        assert options["sasl_plain_password"] == SASL_SECRET
    else:
        assert "sasl_mechanism" not in options
    if protocol.endswith("SSL"):
        assert options["ssl_cafile"] == str(files["ca"])
        assert options["ssl_certfile"] == str(files["cert"])
        assert options["ssl_keyfile"] == str(files["key"])
    # kafka-python rejects unknown options: every key must be one its clients take.
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        assert set(options) <= set(client.DEFAULT_CONFIG), client.__name__
    # The secret stays out of every printable form of the settings.
    for text in (repr(settings), str(settings), str(settings.public_dict())):
        assert SASL_SECRET not in text


def test_sasl_without_credentials_is_refused_with_a_clear_message():
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN")
    with pytest.raises(ValueError, match="SASL needs YUQING_KAFKA_SASL_MECHANISM"):
        settings.kafka_client_options()


def yuqing(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def prefect_records(flow_run_ids: list[str]) -> str:
    """Everything Prefect stored for the runs: logs, artifacts, parameters, states."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def collect() -> str:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
            )
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
            )
            artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter())
        assert logs, "the runs logged to the Prefect API"
        return "\n".join(
            [r.model_dump_json() for r in runs]
            + [log.model_dump_json() for log in logs]
            + [a.model_dump_json() for a in artifacts]
        )

    return asyncio.run(collect())


def database_text(path: Path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        dump = [str(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables]
    finally:
        con.close()
    return "\n".join(dump) + path.read_bytes().decode("latin-1")


def test_secrets_never_reach_output_logs_artifacts_or_tables(
    yuqing_env, broker, topic_name, webhook, prefect_harness, tmp_path
):
    from prefect.settings import PREFECT_API_URL

    produce_values(broker.bootstrap, topic_name, [encode(m) for m in surge_messages()])
    webhook.status = 500  # the failure paths are where URLs tend to leak
    env = {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "YUQING_ALERT_URLS": (
            f"json://alice:{WEBHOOK_SECRET}@127.0.0.1:{webhook.port}/hooks?token={QUERY_TOKEN},"
            f"mailtos://bob:{SMTP_SECRET}@127.0.0.1:9/?to=risk@example.com"
        ),
        "YUQING_KAFKA_SASL_PASSWORD": SASL_SECRET,
        "YUQING_KAFKA_SASL_USERNAME": "yuqing",
        "YUQING_KAFKA_SASL_MECHANISM": "PLAIN",
    }
    first = yuqing("--verbose", "run", "--json", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    # The same secrets on a connection that fails: SASL against a broker without it.
    failing = yuqing(
        "--verbose",
        "run",
        env={
            **env,
            "YUQING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "YUQING_KAFKA_TIMEOUT_S": "3",
            "YUQING_KAFKA_CONNECT_ATTEMPTS": "1",
        },
    )
    assert failing.returncode != 0

    import json

    run_id = json.loads(first.stdout.strip().splitlines()[-1])["run_id"]
    db = Path(yuqing_env["YUQING_DB"])
    everything = "\n".join(
        [
            first.stdout,
            first.stderr,
            failing.stdout,
            failing.stderr,
            prefect_records([run_id]),
            database_text(db),
            database_text(db.with_name(db.stem + ".analyst.duckdb")),
        ]
    )
    assert "alerts" in everything and "Energy" in everything  # we grep real output
    for secret in SECRETS:
        assert secret not in everything, f"secret {secret!r} leaked"


READ_ONLY_REFUSED = [
    "INSERT INTO runs (run_id) VALUES ('x')",
    "UPDATE runs SET status = 'x'",
    "DELETE FROM runs",
    "CREATE TABLE evil (x INT)",
    "DROP TABLE runs",
    "COPY runs TO '{out}'",
    "ATTACH '{out}' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SET enable_external_access = true",
]


@pytest.fixture(scope="module")
def populated_db(tmp_path_factory) -> Path:
    from storage.db import connect
    from storage.replica import publish_replica

    db = tmp_path_factory.mktemp("ro") / "yuqing.duckdb"
    con = connect(db)
    con.execute(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, updated_at) "
        "VALUES ('yuqing', 'news', 0, 42, now())"
    )
    publish_replica(con, db)
    con.close()
    return db


REFUSALS = ("read-only", "configuration has been locked", "disabled by configuration")


def assert_untouched(db: Path) -> None:
    for path in (db, db.with_name("yuqing.analyst.duckdb")):
        con = duckdb.connect(str(path), read_only=True)
        assert con.execute("SELECT next_offset FROM consumer_offsets").fetchall() == [(42,)]
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]
        con.close()


@pytest.mark.parametrize("statement", READ_ONLY_REFUSED)
def test_analyst_queries_refuse_every_kind_of_write(statement, populated_db, tmp_path):
    from storage.db import StorageError
    from storage.queries import read_only_query

    out = tmp_path / "out.file"
    with pytest.raises(StorageError) as refused:
        read_only_query(populated_db, statement.format(out=out))
    message = str(refused.value)
    assert "\n" not in message and any(r in message for r in REFUSALS), message
    assert not out.exists()
    assert_untouched(populated_db)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO runs (run_id) VALUES ('x')",
        "COPY runs TO '{out}'",
        "ATTACH '{out}' AS o",
        "LOAD httpfs",
    ],
)
def test_yuqing_sql_refuses_to_write_in_one_line(statement, populated_db, tmp_path):
    out = tmp_path / "out.file"
    done = yuqing("sql", "--db", str(populated_db), statement.format(out=out), env={})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("yuqing sql: "), done.stderr
    assert any(r in lines[0] for r in REFUSALS), lines[0]
    assert not out.exists()
    assert_untouched(populated_db)
