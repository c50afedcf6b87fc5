"""Reading and writing the news topic with kafka-python.

The reader never joins a consumer group and never commits to Kafka: it ``assign()``s every
partition and seeks to the offsets yuqing stored in DuckDB together with the results they
produced. That is what makes a run exactly-once end to end, and it also skips the ~20 s group
join. A run reads up to the end offsets it saw when it started, then stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

logger = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached, or stopped answering; the message is one line."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    partition: int
    offset: int
    timestamp_ms: int | None
    value: bytes | None


def _describe(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# kafka-python retries a failing bootstrap until its timeout and then raises only "Unable to
# bootstrap"; why each connection failed (refused, a certificate the CA does not vouch for, a
# SASL mechanism the broker does not offer) it only logs, on this logger, in this form.
_BOOTSTRAP_LOGGER = "kafka.net.manager"
_BOOTSTRAP_FAILED = re.compile(
    r"^Bootstrap (?:connection|attempt) to \S+ failed: (?P<reason>.*?)(?: \(backoff [\d.]+ secs\))?$"
)
_capture_lock = threading.Lock()
_captures = 0  # captures in progress (threads may connect at the same time)
_saved_level = logging.NOTSET  # the logger's own level before the first capture
_configured_level = logging.WARNING  # its effective level then: what it logs, as configured


class _BootstrapReason(logging.Filter):
    """Remembers the last bootstrap failure kafka-python logs; lets through only what the
    logger's configured level would have let through anyway."""

    def __init__(self, passes_at: int) -> None:
        super().__init__()
        self.passes_at = passes_at
        self.reason: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        match = _BOOTSTRAP_FAILED.match(record.getMessage())
        if match:
            self.reason = " ".join(match["reason"].split())
        return record.levelno >= self.passes_at


@contextlib.contextmanager
def _bootstrap_reasons() -> Iterator[_BootstrapReason]:
    """Capture why kafka-python's bootstrap connections fail, without changing what is logged."""
    global _captures, _saved_level, _configured_level
    log = logging.getLogger(_BOOTSTRAP_LOGGER)
    with _capture_lock:
        if _captures == 0:
            _saved_level, _configured_level = log.level, log.getEffectiveLevel()
        _captures += 1
        capture = _BootstrapReason(_configured_level)
        log.addFilter(capture)
        log.setLevel(min(_configured_level, logging.WARNING))
    try:
        yield capture
    finally:
        with _capture_lock:
            log.removeFilter(capture)
            _captures -= 1
            if _captures == 0:
                log.setLevel(_saved_level)


def _hint(reason: str) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return "; check YUQING_KAFKA_SSL_CAFILE"
    if "SaslMechanism" in reason or "SaslAuthentication" in reason:
        return "; check YUQING_KAFKA_SASL_MECHANISM and the credentials"
    return ""


def connect_with_retries(
    factory, *, what: str, bootstrap: str, attempts: int, delay_s: float = 2.0
):
    """Call ``factory()`` up to ``attempts`` times while the broker is unreachable."""
    for attempt in range(1, attempts + 1):
        with _bootstrap_reasons() as seen:
            try:
                return factory()
            except (KafkaError, OSError) as e:
                error = e
        reason = _describe(error)
        if seen.reason and seen.reason not in reason:
            reason = f"{reason} (last connection error: {seen.reason}{_hint(seen.reason)})"
        if attempt == attempts:
            raise KafkaUnavailable(
                f"cannot reach Kafka at {bootstrap} for {what} after {attempts} attempts: {reason}"
            ) from error
        logger.warning("Kafka at %s unreachable (%s); retrying", bootstrap, reason)
        time.sleep(delay_s * attempt)


class TopicReader:
    """Reads one topic, every partition, from stored offsets up to the end offsets at open."""

    def __init__(
        self,
        *,
        client_options: Mapping,
        topic: str,
        stored_offsets: Mapping[int, int],
        timeout_s: float = 30.0,
        connect_attempts: int = 3,
    ) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        bootstrap = ",".join(client_options["bootstrap_servers"])
        self._consumer = connect_with_retries(
            lambda: KafkaConsumer(
                **client_options,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=8 * 1024 * 1024,
                fetch_max_bytes=64 * 1024 * 1024,
            ),
            what="reading",
            bootstrap=bootstrap,
            attempts=connect_attempts,
        )
        try:
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                raise KafkaUnavailable(f"topic {topic!r} does not exist on {bootstrap}")
            self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
            self._consumer.assign(self.partitions)
            beginning = self._consumer.beginning_offsets(self.partitions)
            self.end_offsets = self._snapshot_end_offsets(beginning)
            self.start_offsets = {}
            for tp in self.partitions:
                first, end = beginning[tp], self.end_offsets[tp.partition]
                start = stored_offsets.get(tp.partition, first)
                if start < first:
                    logger.warning(
                        "partition %d: stored offset %d is before the log start %d "
                        "(retention removed messages yuqing never read); starting at %d",
                        tp.partition,
                        start,
                        first,
                        first,
                    )
                    start = first
                elif start > end:
                    logger.warning(
                        "partition %d: stored offset %d is past the log end %d (topic recreated?); "
                        "re-reading from %d, stored ids are not scored twice",
                        tp.partition,
                        start,
                        end,
                        first,
                    )
                    start = first
                self.start_offsets[tp.partition] = start
                self._consumer.seek(tp, start)
        except KafkaError as e:
            self.close()
            raise KafkaUnavailable(f"cannot read topic {topic!r} metadata: {_describe(e)}") from e
        except BaseException:
            self.close()
            raise
        self.positions = dict(self.start_offsets)
        self._paused: set[int] = set()
        for tp in self.partitions:
            self._pause_if_done(tp)

    def _snapshot_end_offsets(self, beginning: Mapping[TopicPartition, int]) -> dict[int, int]:
        """End offsets now: the larger of ListOffsets(latest) and a fetch's high watermark.

        They agree on Apache Kafka. Some Kafka-compatible brokers (tansu 0.6, used by the demo
        and the tests) answer ListOffsets with the base offset of the last record batch plus
        one, so a fetch from there supplies the true high watermark.
        """
        listed = self._consumer.end_offsets(self.partitions)
        ends = {tp.partition: listed[tp] for tp in self.partitions}
        pending = [tp for tp in self.partitions if listed[tp] > beginning[tp]]
        for tp in pending:
            self._consumer.seek(tp, listed[tp] - 1)
        deadline = time.monotonic() + self.timeout_s
        while pending and time.monotonic() < deadline:
            self._consumer.poll(timeout_ms=100, max_records=1)
            for tp in list(pending):
                highwater = self._consumer.highwater(tp)
                if highwater is not None:
                    ends[tp.partition] = max(ends[tp.partition], highwater)
                    pending.remove(tp)
        if pending:
            raise KafkaUnavailable(
                f"no fetch answer from Kafka within {self.timeout_s:.0f}s on {self.topic!r}"
            )
        return ends

    @property
    def lag(self) -> int:
        """Messages left before the end offsets seen at open."""
        return sum(max(0, self.end_offsets[p] - pos) for p, pos in self.positions.items())

    @property
    def done(self) -> bool:
        return self.lag == 0

    def _pause_if_done(self, tp: TopicPartition) -> None:
        if (
            self.positions[tp.partition] >= self.end_offsets[tp.partition]
            and tp.partition not in self._paused
        ):
            self._consumer.pause(tp)
            self._paused.add(tp.partition)

    def rewind(self) -> None:
        """Seek back to the last positions handed out (used before a retried read)."""
        for tp in self.partitions:
            if tp.partition not in self._paused:
                self._consumer.seek(tp, self.positions[tp.partition])

    def read_batch(self, max_records: int) -> list[RawRecord]:
        """Up to ``max_records`` records, in offset order per partition; [] when done."""
        records: list[RawRecord] = []
        deadline = time.monotonic() + self.timeout_s
        while not self.done and len(records) < max_records:
            polled = self._consumer.poll(timeout_ms=200, max_records=max_records - len(records))
            if not polled:
                if records:
                    break
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"no data from Kafka for {self.timeout_s:.0f}s with {self.lag} messages "
                        f"still to read on {self.topic!r}"
                    )
                continue
            for tp, batch in polled.items():
                end = self.end_offsets[tp.partition]
                records.extend(
                    RawRecord(tp.partition, r.offset, r.timestamp, r.value)
                    for r in batch
                    if r.offset < end
                )
                # The consumer's position also steps over gaps (transaction markers); records
                # past the end seen at open are left for the next run.
                self.positions[tp.partition] = min(end, self._consumer.position(tp))
                self._pause_if_done(tp)
        return records

    def close(self) -> None:
        consumer, self._consumer = getattr(self, "_consumer", None), None
        if consumer is not None:
            consumer.close()


def ensure_topic(*, client_options: Mapping, topic: str, partitions: int = 3) -> bool:
    """Create ``topic`` if it does not exist; True when it was created."""
    bootstrap = ",".join(client_options["bootstrap_servers"])
    admin = connect_with_retries(
        lambda: KafkaAdminClient(**client_options), what="admin", bootstrap=bootstrap, attempts=3
    )
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        logger.info("created topic %r with %d partitions", topic, partitions)
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


def open_producer(*, client_options: Mapping, attempts: int = 3) -> KafkaProducer:
    bootstrap = ",".join(client_options["bootstrap_servers"])
    return connect_with_retries(
        lambda: KafkaProducer(**client_options, acks="all", linger_ms=20, retries=5),
        what="producing",
        bootstrap=bootstrap,
        attempts=attempts,
    )


def produce(
    producer: KafkaProducer,
    *,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes, int | None]],
    progress=None,
    chunk: int = 10_000,
) -> int:
    """Send (key, value, timestamp_ms) triples, waiting for acknowledgements every ``chunk``."""
    sent, futures = 0, []

    def settle() -> None:
        producer.flush()
        for future in futures:
            try:
                future.get(timeout=30)
            except KafkaError as e:
                raise KafkaUnavailable(
                    f"Kafka did not acknowledge a message: {_describe(e)}"
                ) from e
        futures.clear()

    for key, value, timestamp_ms in messages:
        futures.append(producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms))
        sent += 1
        if progress is not None:
            progress.update(1)
        if len(futures) >= chunk:
            settle()
    settle()
    return sent


def message_key_value(message: Mapping) -> tuple[bytes | None, bytes]:
    """Encode a message dict as (key = id, value = UTF-8 JSON)."""
    key = message.get("id")
    value = json.dumps(message, ensure_ascii=False).encode("utf-8")
    return (key.encode("utf-8") if isinstance(key, str) else None), value
