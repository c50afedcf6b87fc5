"""The monitoring flow: read new messages, classify, store, detect spikes, notify.

One run reads the topic from the offsets stored in DuckDB up to the end offsets it sees when
it starts. Each batch's results, dead letters and next offsets are committed in one DuckDB
transaction, so a crash anywhere loses nothing and scores nothing twice. Retries sit on the
I/O edges (Kafka, DuckDB, notifications); classification is deterministic and has none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run, task_run

from flows.alerting import detect_alerts
from flows.config import Settings, parse_duration
from flows.faults import fault_point
from flows.kafka_io import RawRecord, TopicReader
from flows.messages import BadMessage, parse_message
from flows.notify import Notifier
from flows.stories import StoryIndex
from nlp.manifest import read_model_config
from storage import alerts as alert_store
from storage.db import connect
from storage.queries import sentiment_mix
from storage.registry import register_model
from storage.replica import publish_replica
from storage.writer import StoreResult, known_ids, load_offsets, record_run, store_batch

if TYPE_CHECKING:
    from nlp.engine import Engine

SUMMARY_ARTIFACT_KEY = "yuqing-run-summary"
MIX_ARTIFACT_KEY = "yuqing-sentiment-mix"
COUNTS_ARTIFACT_KEY = "yuqing-run-counts"
ALERTS_ARTIFACT_KEY = "yuqing-alerts-raised"
ALERT_ARTIFACT_FIELDS = ("severity", "kind", "topic", "ticker", "window_start", "window_end",
                         "observed", "expected", "score", "alert_id")  # fmt: skip


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    db: str
    model_version: str | None = None
    status: str = "running"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    messages_read: int = 0
    scored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    alerts_raised: int = 0
    alerts_notified: int = 0
    alerts_pending: int = 0
    error: str | None = None
    sentiment_mix: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParsedBatch:
    fresh: pd.DataFrame  # messages to classify: contract fields + Kafka coordinates
    dead: pd.DataFrame  # topic, partition, offset, raw, error
    duplicates: int  # valid messages whose id is already stored or earlier in the batch


FRESH_COLUMNS = [
    "id",
    "text",
    "published_at",
    "title",
    "source",
    "url",
    "lang",
    "tickers",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
]
SCORE_COLUMNS = ["sentiment", "sentiment_score", "topic", "topic_score", "model_version"]


def classification_input(frame: pd.DataFrame) -> list[str]:
    """The text the model reads: the title, when there is one, then the body."""
    return [
        text
        if not isinstance(title, str) or not title or text.startswith(title)
        else f"{title}\n{text}"
        for title, text in zip(frame["title"], frame["text"], strict=True)
    ]


def parse_records(records: list[RawRecord], *, topic: str, max_text_chars: int, con) -> ParsedBatch:
    """Validate raw records; drop ids already stored or repeated in the batch (first wins)."""
    valid, dead = [], []
    for record in records:
        try:
            message = parse_message(
                record.value, kafka_timestamp_ms=record.timestamp_ms, max_text_chars=max_text_chars
            )
        except BadMessage as e:
            dead.append((topic, record.partition, record.offset, record.value, str(e)))
            continue
        row = asdict(message)
        row.update(kafka_topic=topic, kafka_partition=record.partition, kafka_offset=record.offset)
        valid.append(row)
    frame = pd.DataFrame(valid, columns=FRESH_COLUMNS)
    stored = known_ids(con, frame["id"].unique().tolist())
    fresh = frame[~frame["id"].isin(stored)].drop_duplicates("id", keep="first")
    if not fresh.empty:
        fresh = fresh.assign(published_at=pd.to_datetime(fresh["published_at"], utc=True))
    return ParsedBatch(
        fresh=fresh.reset_index(drop=True),
        dead=pd.DataFrame(dead, columns=["topic", "partition", "offset", "raw", "error"]),
        duplicates=len(frame) - len(fresh),
    )


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def open_reader(settings: Settings, stored_offsets: dict[int, int]) -> TopicReader:
    """Connect to Kafka and position every partition at its stored offset."""
    reader = TopicReader(
        client_options=settings.kafka_client_options(),
        topic=settings.topic,
        stored_offsets=stored_offsets,
        timeout_s=settings.kafka_timeout_s,
        connect_attempts=settings.kafka_connect_attempts,
    )
    _logger().info(
        "reading %r: %d messages to read across %d partitions",
        settings.topic,
        reader.lag,
        len(reader.partitions),
    )
    return reader


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def read_batch(reader: TopicReader, max_records: int) -> list[RawRecord]:
    """Read the next batch of raw records (a retry re-reads from the last good position)."""
    if task_run.run_count > 1:
        reader.rewind()
    return reader.read_batch(max_records)


class RunModel:
    """The run's classifier: its manifest read at once, its weights loaded on first use.

    A wrong ``YUQING_MODEL`` still fails the run at the start (the manifest is checked there),
    but torch, transformers and the weights are loaded only when a batch has fresh messages to
    score or an alert needs explaining, so a run with nothing new pays for neither.
    """

    def __init__(self, settings: Settings) -> None:
        self.manifest = read_model_config(settings.model)
        self.model_version: str = self.manifest["model_version"]
        self._settings = settings
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        """The inference engine, loaded now if this is its first use."""
        if self._engine is None:
            from nlp.engine import Engine, EngineConfig

            started = time.perf_counter()
            self._engine = Engine.load(
                self._settings.model,
                device=self._settings.device,
                # in-process tokenizing: a run's batches are too small for worker processes
                config=EngineConfig(
                    batch_size=self._settings.inference_batch_size, tokenizer_workers=0
                ),
            )
            _logger().info(
                "model %s loaded in %.1fs", self.model_version, time.perf_counter() - started
            )
        return self._engine

    @property
    def model(self):
        """The underlying DualHeadClassifier (the alert explanations read it)."""
        return self.engine().model


@task(cache_policy=NO_CACHE)
def classify(classifier: RunModel, fresh: pd.DataFrame) -> pd.DataFrame:
    """Score sentiment and topic for every fresh message in one pass of the model."""
    if fresh.empty:
        return fresh.assign(**{column: None for column in SCORE_COLUMNS})
    predictions = classifier.engine().predict(classification_input(fresh))
    scored = fresh.copy()
    scored["sentiment"] = predictions.sentiment
    scored["sentiment_score"] = predictions.sentiment_score.astype("float64")
    scored["topic"] = predictions.topic
    scored["topic_score"] = predictions.topic_score.astype("float64")
    scored["model_version"] = classifier.model_version
    return scored


@task(retries=2, retry_delay_seconds=[1, 3], cache_policy=NO_CACHE)
def store(
    con,
    scored: pd.DataFrame,
    dead: pd.DataFrame,
    settings: Settings,
    next_offsets: dict[int, int],
    run_id: str,
) -> StoreResult:
    """Commit results, dead letters and next offsets in one transaction."""
    return store_batch(
        con,
        scored=scored,
        dead_letters=dead,
        consumer=settings.consumer_name,
        topic=settings.topic,
        next_offsets=next_offsets,
        run_id=run_id,
        before_commit=lambda: fault_point("commit"),
    )


def load_story_index(con, settings: Settings) -> StoryIndex:
    """The stories of the last ``alerts.story_lookback``, so new copies join them."""
    index = StoryIndex()
    for text, story_id in alert_store.recent_stories(
        con, lookback=parse_duration(settings.alerts.story_lookback)
    ):
        index.add(text, story_id)
    return index


def with_story_ids(scored: pd.DataFrame, stories: StoryIndex) -> pd.DataFrame:
    """Give every message the id of the story it tells (flows/stories.py)."""
    if scored.empty:
        return scored.assign(story_id=pd.Series(dtype="string"))
    return scored.assign(story_id=[stories.assign(t) for t in classification_input(scored)])


@task(cache_policy=NO_CACHE)
def detect(
    con, settings: Settings, run_id: str, classifier: RunModel | None = None
) -> pd.DataFrame:
    """Advance every key's detector over the new closed windows; raise explained alerts."""
    result = detect_alerts(con, settings=settings, run_id=run_id, classifier=classifier)
    log = _logger()
    log.info(
        "detector: %d keys, %d key-windows, %d alert(s) raised, %d resolved, held back: %s",
        result.keys,
        result.windows,
        len(result.raised),
        len(result.resolved),
        dict(result.suppressed) or "none",
    )
    raised = result.raised
    if raised.empty:
        return raised
    raised = raised.sort_values(["window_start", "topic"], ignore_index=True)
    for alert in raised.itertuples():
        log.warning(
            "ALERT %s: %s %s in %s at %s (%d vs %.1f expected)%s",
            alert.severity,
            alert.sentiment,
            "share jump" if alert.kind == "share" else "surge",
            alert.ticker if isinstance(alert.ticker, str) else alert.topic,
            alert.window_start,
            alert.observed,
            alert.expected,
            "" if alert.notify else " [recorded, not notified]",
        )
    _emit_events(raised)
    return raised


def _emit_events(raised: pd.DataFrame) -> None:
    """Emit each alert as a Prefect event, so Automations can route it."""
    from prefect.events import emit_event

    from flows.notify import alert_payload

    for alert in raised.to_dict("records"):
        payload = alert_payload(alert)
        emit_event(
            event=f"yuqing.alert.{alert['severity']}",
            resource={
                "prefect.resource.id": f"yuqing.alert.{alert['alert_id']}",
                "prefect.resource.name": payload["title"],
                "yuqing.topic": str(alert["topic"]),
                "yuqing.kind": str(alert["kind"]),
            },
            payload=payload,
        )


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def notify(con, settings: Settings) -> tuple[int, int]:
    """Deliver pending alerts; raise (and so retry) while any delivery fails."""
    pending = alert_store.pending_alerts(con)
    if pending.empty:
        return 0, 0
    notifier = Notifier(
        settings.alert_url_list(),
        channels=[(c.url.get_secret_value(), c.min_severity) for c in settings.alerts.channels],
    )
    if not notifier.configured:
        _logger().warning("%d alert(s) pending: no YUQING_ALERT_URLS configured", len(pending))
        return 0, len(pending)
    outcome = notifier.deliver(pending.to_dict("records"), digest_min=settings.alerts.digest_min)
    for alert_id, ok in outcome.items():
        alert_store.record_delivery(
            con,
            alert_id=alert_id,
            delivered=ok,
            error=None if ok else "notification not delivered",
        )
    delivered = sum(outcome.values())
    failed = len(pending) - delivered
    if failed:
        raise RuntimeError(f"{failed} of {len(pending)} alert(s) not delivered; they stay pending")
    return delivered, 0


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-style markdown table of a small frame."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def publish_summary(summary: RunSummary) -> None:
    """Publish the run summary as Prefect artifacts under stable keys."""
    mix = pd.DataFrame(summary.sentiment_mix)
    lines = [
        f"# yuqing run {summary.status}",
        "",
        "| messages read | scored | duplicates | dead-lettered | alerts raised | notified | pending |",
        "|---|---|---|---|---|---|---|",
        f"| {summary.messages_read} | {summary.scored} | {summary.duplicates} | {summary.dead_lettered} "
        f"| {summary.alerts_raised} | {summary.alerts_notified} | {summary.alerts_pending} |",
        "",
        f"Model `{summary.model_version}`, database `{summary.db}`.",
    ]
    if summary.error:
        lines += ["", f"**Error:** {summary.error}"]
    if summary.alerts:
        lines += ["", "## Alerts raised", ""]
        lines += [
            f"- **{a['severity']}** {a['topic']} {a['window_start']:%Y-%m-%d %H:%M} UTC: "
            f"{a['observed']} negative vs {a['expected']:.1f} expected"
            for a in summary.alerts
        ]
    if not mix.empty:
        lines += ["", "## Sentiment per topic (this run)", "", markdown_table(mix)]
    create_markdown_artifact(
        markdown="\n".join(lines), key=SUMMARY_ARTIFACT_KEY, description="yuqing run summary"
    )
    if not mix.empty:
        create_table_artifact(
            table=mix.to_dict("records"), key=MIX_ARTIFACT_KEY, description="sentiment per topic"
        )
    counts = ("status", "messages_read", "scored", "duplicates", "dead_lettered", "alerts_raised",
              "alerts_notified", "alerts_pending", "model_version")  # fmt: skip
    create_table_artifact(
        table=[{k: getattr(summary, k) for k in counts}],
        key=COUNTS_ARTIFACT_KEY,
        description="yuqing run counts",
    )
    create_table_artifact(
        table=[
            {
                k: str(a[k]) if k.startswith("window") else a[k]
                for k in ALERT_ARTIFACT_FIELDS
                if k in a
            }
            for a in summary.alerts
        ],
        key=ALERTS_ARTIFACT_KEY,
        description="alerts raised by this run",
    )


@flow(name="yuqing-monitor", log_prints=False)
def monitor() -> dict:
    """One monitoring run against the configured Kafka topic and DuckDB file."""
    settings = Settings()
    log = _logger()
    run_id = str(flow_run.id or f"local-{time.time_ns()}")
    summary = RunSummary(run_id=run_id, db=str(settings.db))
    con = connect(settings.db, lock_timeout_s=settings.db_lock_timeout_s)
    reader = None
    try:
        classifier = RunModel(settings)  # the weights load when a batch needs them
        summary.model_version = classifier.model_version
        register_model(
            con,
            model_version=classifier.model_version,
            base_model=classifier.manifest["base"],
            trained_at=classifier.manifest.get("created_at"),
            metrics=classifier.manifest.get("dev"),
        )
        stories = load_story_index(con, settings)
        stored = load_offsets(con, consumer=settings.consumer_name, topic=settings.topic)
        reader = open_reader(settings, stored)
        while not reader.done:
            fault_point("read")
            records = read_batch(reader, settings.read_batch_size)
            if not records:
                break
            parsed = parse_records(
                records, topic=settings.topic, max_text_chars=settings.max_text_chars, con=con
            )
            fault_point("inference")
            scored = classify(classifier, parsed.fresh)
            scored = with_story_ids(scored, stories)
            fault_point("insert")
            result = store(con, scored, parsed.dead, settings, dict(reader.positions), run_id)
            publish_analyst_replica(con, settings)
            summary.messages_read += len(records)
            summary.scored += result.inserted
            summary.duplicates += parsed.duplicates + result.duplicates
            summary.dead_lettered += result.dead_lettered
            log.info(
                "batch stored: %d read, %d scored, %d dead-lettered, %d to go",
                len(records),
                result.inserted,
                result.dead_lettered,
                reader.lag,
            )
        raised = detect(con, settings, run_id, classifier)
        summary.alerts_raised = len(raised)
        summary.alerts = raised.drop(
            columns=["headlines", "top_terms", "top_tickers", "explanation"], errors="ignore"
        ).to_dict("records")
        state = notify(con, settings, return_state=True)
        if state.is_completed():
            summary.alerts_notified, summary.alerts_pending = state.result()
        else:
            summary.alerts_pending = len(alert_store.pending_alerts(con))
            log.warning(
                "alert delivery failed; %d alert(s) stay pending for the next run",
                summary.alerts_pending,
            )
        summary.sentiment_mix = sentiment_mix(con, run_id=run_id).to_dict("records")
        summary.status = "completed"
    except BaseException as e:
        summary.status = "failed"
        summary.error = " ".join(str(e).split()) or type(e).__name__
        raise
    finally:
        if reader is not None:
            reader.close()
        summary.finished_at = datetime.now(UTC)
        _finish(con, summary, settings)
    publish_summary(summary)
    return summary.as_dict()


def publish_analyst_replica(con, settings: Settings) -> None:
    """Publish the committed state to the analysts' replica (storage/replica.py)."""
    fault_point("checkpoint")
    seconds = publish_replica(
        con, settings.db, settings.analyst_replica, before_replace=lambda: fault_point("replace")
    )
    _logger().debug("analyst replica published in %.3fs", seconds)


def _finish(con, summary: RunSummary, settings: Settings) -> None:
    """Record the run in ``runs``, publish the replica and close the database.

    Never masks the run's own error."""
    try:
        record_run(
            con,
            {
                k: v
                for k, v in summary.as_dict().items()
                if k not in ("db", "alerts_pending", "sentiment_mix", "alerts")
            },
        )
    except Exception as e:  # noqa: BLE001 - the run's own outcome matters more
        logging.getLogger(__name__).error("could not record the run: %s", e)
    try:
        publish_analyst_replica(con, settings)
    except Exception as e:  # noqa: BLE001 - the run's own outcome matters more
        logging.getLogger(__name__).error("could not publish the analyst replica: %s", e)
    finally:
        con.close()
