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


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """A real tansu broker that clients reach only through TLS (tests/tls.py)."""
    from types import SimpleNamespace

    from infra.broker import EmbeddedBroker, free_port
    from tests.tls import TLSTerminator, make_pki

    pki = make_pki(tmp_path_factory.mktemp("pki"))
    port = free_port()
    with (
        TLSTerminator(
            upstream=("127.0.0.1", port), certfile=pki.server_cert, keyfile=pki.server_key
        ) as terminator,
        EmbeddedBroker(port=port, advertised_port=terminator.port),
    ):
        yield SimpleNamespace(
            bootstrap=f"127.0.0.1:{terminator.port}", pki=pki, terminator=terminator
        )


def tls_env(tls_broker, *, cafile: Path, topic: str, db: Path, model: Path) -> dict:
    from prefect.settings import PREFECT_API_URL

    return {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "YUQING_KAFKA_BOOTSTRAP": tls_broker.bootstrap,
        "YUQING_KAFKA_SECURITY_PROTOCOL": "SSL",
        "YUQING_KAFKA_SSL_CAFILE": str(cafile),
        "YUQING_TOPIC": topic,
        "YUQING_DB": str(db),
        "YUQING_MODEL": str(model),
        "YUQING_ALERT_URLS": "",
        "YUQING_DEVICE": "cpu",
    }


def test_yuqing_replays_and_runs_through_a_real_tls_listener(
    tls_broker, tiny_model_dir, prefect_harness, topic_name, tmp_path
):
    """Admin client, producer and consumer all speak TLS and verify the broker's certificate."""
    import json

    stream = tmp_path / "stream.jsonl"
    stream.write_text(
        "".join(
            json.dumps({"id": f"tls-{i}", "text": f"oil plunges item{i}"}) + "\n" for i in range(30)
        )
    )
    db = tmp_path / "yuqing.duckdb"
    env = tls_env(
        tls_broker, cafile=tls_broker.pki.ca, topic=topic_name, db=db, model=tiny_model_dir
    )
    before = tls_broker.terminator.handshakes
    replayed = yuqing("replay", str(stream), env=env)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    done = yuqing("run", "--json", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["messages_read"], summary["scored"]) == (30, 30)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM news").fetchone()[0] == 30
    con.close()
    assert tls_broker.terminator.handshakes - before >= 2  # every connection was TLS
    assert not tls_broker.terminator.refused


def test_a_broker_certificate_the_ca_does_not_vouch_for_fails_in_one_clear_line(
    tls_broker, tiny_model_dir, prefect_harness, topic_name, tmp_path
):
    db = tmp_path / "yuqing.duckdb"
    env = tls_env(
        tls_broker, cafile=tls_broker.pki.other_ca, topic=topic_name, db=db, model=tiny_model_dir
    ) | {"YUQING_KAFKA_TIMEOUT_S": "1", "YUQING_KAFKA_CONNECT_ATTEMPTS": "1"}
    refused_before = len(tls_broker.terminator.refused)
    done = yuqing("run", env=env)
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("yuqing run: run failed: cannot reach Kafka"), line
    assert "CERTIFICATE_VERIFY_FAILED" in line and "YUQING_KAFKA_SSL_CAFILE" in line, line
    assert "Traceback" not in done.stderr
    # The client refused the server (the terminator saw the alert), and nothing was stored.
    assert any("unknown ca" in r for r in tls_broker.terminator.refused[refused_before:])
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM news").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM consumer_offsets").fetchone()[0] == 0
    con.close()


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
    # The SASL handshake really went to the broker, which offers no mechanism; one clear line.
    (line,) = [x for x in failing.stderr.splitlines() if x.startswith("yuqing run:")]
    assert line.startswith("yuqing run: run failed:") and "UnsupportedSaslMechanism" in line, line

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
