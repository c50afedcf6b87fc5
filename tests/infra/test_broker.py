"""The embedded broker, and the `yuqing broker` / `yuqing serve` commands as long-running processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from flows.config import Settings
from flows.kafka_io import TopicReader, ensure_topic
from tests.conftest import encode, news, produce_values


def test_embedded_broker_round_trip_and_pause(broker, topic_name):
    produce_values(broker.bootstrap, topic_name, [encode(news(f"b{i}", "t")) for i in range(25)])
    options = Settings(kafka_bootstrap=broker.bootstrap).kafka_client_options()
    reader = TopicReader(client_options=options, topic=topic_name, stored_offsets={}, timeout_s=5)
    try:
        assert reader.lag == 25
        records = []
        while not reader.done:
            records += reader.read_batch(10)
        assert len(records) == 25 and sum(reader.positions.values()) == 25
    finally:
        reader.close()
    # A frozen broker is "unreachable" for clients but keeps its data.
    broker.pause()
    try:
        from flows.kafka_io import KafkaUnavailable

        with pytest.raises(KafkaUnavailable):
            TopicReader(
                client_options={
                    **options,
                    "request_timeout_ms": 1000,
                    "bootstrap_timeout_ms": 1000,
                },
                topic=topic_name,
                stored_offsets={},
                timeout_s=1,
                connect_attempts=1,
            )
    finally:
        broker.resume()
    reader = TopicReader(
        client_options=options, topic=topic_name, stored_offsets={0: 0}, timeout_s=5
    )
    assert reader.lag == 25
    reader.close()


def test_missing_topic_is_a_clear_error(broker):
    from flows.kafka_io import KafkaUnavailable

    options = Settings(kafka_bootstrap=broker.bootstrap).kafka_client_options()
    with pytest.raises(KafkaUnavailable, match="does not exist"):
        TopicReader(
            client_options=options, topic="no-such-topic-here", stored_offsets={}, timeout_s=3
        )


def _default_sigint() -> None:
    """In the child: Ctrl-C interrupts, even when the tests run from a shell's background job
    (which starts them with SIGINT ignored, and Python keeps an ignored SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_yuqing_broker_command_serves_until_interrupted():
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "broker", "--port", "0", "--topic", "cli-news"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        bootstrap = process.stdout.readline().strip()
        host, port = bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        produce_values(bootstrap, "cli-news", [encode(news("x", "y"))])
        options = Settings(kafka_bootstrap=bootstrap).kafka_client_options()
        assert ensure_topic(client_options=options, topic="cli-news") is False  # it made the topic
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            process.kill()  # never leave a broker behind
            process.wait()
    assert process.returncode == 0


def test_yuqing_serve_registers_a_scheduled_deployment(prefect_harness, yuqing_env):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    name = f"serve-test-{time.time_ns()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--every", "90s", "--name", name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        deployment = None
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and deployment is None:
                try:
                    deployment = client.read_deployment_by_name(f"yuqing-monitor/{name}")
                except Exception:  # noqa: BLE001 - not registered yet
                    time.sleep(1)
        assert deployment is not None, "serve did not register its deployment"
        intervals = [s.schedule.interval.total_seconds() for s in deployment.schedules]
        assert intervals == [90.0]
    finally:
        process.terminate()
        process.wait(timeout=30)
