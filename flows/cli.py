"""The ``yuqing`` command line.

Every command has ``--help``. Errors a user can fix (a bad argument, an unreachable broker, a
missing model) end the command with one line on stderr and a non-zero exit code, never a
traceback. Set ``YUQING_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "flows,storage,nlp,infra")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402

try:  # typer >= 0.16 vendors click
    from typer._click.exceptions import ClickException  # noqa: E402
except ImportError:  # pragma: no cover
    from click import ClickException  # noqa: E402

app = typer.Typer(
    name="yuqing",
    help="yuqing (舆情): financial opinion monitor. Kafka → classifier → DuckDB → spike alerts.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
logger = logging.getLogger("flows.cli")


from flows.cli_alerts import AlertsError, alerts_app, detect_command  # noqa: E402
from flows.cli_analyst import (  # noqa: E402
    AnalystError,
    ResultFormat,
    dashboard,
    export,
    sql_error_message,
    write_result,
)

app.add_typer(alerts_app, name="alerts")
app.command("detect")(detect_command)


class UserError(Exception):
    """A failure to report as one line."""


def _out(text: str = "") -> None:
    typer.echo(text)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "apprise"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    # kafka-python logs every refused connection at ERROR; yuqing reports the outcome itself.
    logging.getLogger("kafka").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    # Prefect's background senders (loggers named after their classes) note at exit that they
    # are still draining ("Still processing items: 1 items remaining..."): after a run that
    # failed fast, that line came after yuqing's one-line error. Their real errors still show.
    for worker in ("EventsWorker", "APILogWorker"):
        logging.getLogger(worker).setLevel(logging.DEBUG if verbose else logging.ERROR)


def _settings(**overrides):
    from pydantic import ValidationError

    from flows.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise UserError(f"invalid setting {where}: {first['msg']}") from e


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="A yuqing.toml to read.")] = None,
) -> None:
    """yuqing (舆情): financial opinion monitor."""
    if config is not None:
        if not config.is_file():
            raise UserError(f"no such config file: {config}")
        os.environ["YUQING_CONFIG"] = str(config)
    _setup_logging(verbose)


def _print_summary(summary: dict) -> None:
    _out(
        f"run {summary['status']}: read {summary['messages_read']}, scored {summary['scored']}, "
        f"duplicates {summary['duplicates']}, dead-lettered {summary['dead_lettered']}, "
        f"alerts raised {summary['alerts_raised']}, notified {summary['alerts_notified']}, "
        f"pending {summary['alerts_pending']}"
    )


def _print_mix(rows: list[dict]) -> None:
    if not rows:
        return
    import pandas as pd

    _out("\nSentiment per topic:")
    _out(pd.DataFrame(rows).to_string(index=False))


def _print_alerts(alerts: list[dict]) -> None:
    _out(f"\nAlerts raised: {len(alerts)}")
    for a in alerts:
        _out(
            f"  [{a['severity']}] {a['topic']}: {a['observed']} negative items in "
            f"{a['window_start']:%Y-%m-%d %H:%M}–{a['window_end']:%H:%M} UTC "
            f"(expected {a['expected']:.1f}, score {a['score']:.1f})"
        )


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the model, stream and database go.")] = Path(
        ".demo"
    ),
    data: Annotated[
        Path | None,
        typer.Option(
            help="Folder with sentiment/train.csv and topic/train.csv; default: Hugging Face ids."
        ),
    ] = None,
) -> None:
    """Run everything on embedded defaults: broker, quick model, replayed stream, one flow run."""
    from flows.demo import run_demo

    print_demo(run_demo(workdir=workdir, data_dir=data))


def print_demo(result: dict) -> None:
    """What ``yuqing demo`` prints: the run, its alerts and the notifications they sent."""
    summary = result["summary"]
    _out("\n=== yuqing demo ===")
    _out(f"DuckDB file:  {result['db']}")
    _out(f"Model:        {result['model']} ({'trained now' if result['trained'] else 'reused'})")
    _out(
        f"Replayed:     {result['replayed']} messages (stream: {Path(result['workdir']) / 'stream.jsonl'})"
    )
    _print_summary(summary)
    _print_mix(summary["sentiment_mix"])
    _print_alerts(summary["alerts"])
    _out(
        f"\nNotifications received by the local webhook: {len(result['notifications'])} "
        f"(saved in {result['notifications_file']})"
    )
    for n in result["notifications"][:5]:
        _out(f"  {n['payload'].get('title', n['payload'])}")
    first = next(
        (n["payload"] for n in result["notifications"] if "headlines" in n["payload"]), None
    )
    if first is not None:
        drivers = first.get("sentiment_drivers") or {}
        _out("  its explanation (webhook JSON, schema " + str(first.get("schema")) + "):")
        _out(
            f"    observed {first['observed']} vs expected {first['expected']}, score {first['score']}"
        )
        for h in first["headlines"][:3]:
            _out(f"    headline: {h.get('headline')}")
        if drivers.get("tokens"):
            words = ", ".join(f"{t['word']} ({t['attribution']:+.2f})" for t in drivers["tokens"])
            _out(f"    words behind the top headline's {drivers.get('label')}: {words}")
    _out(
        f"\nE-mails received by the local SMTP server: {len(result['emails'])} "
        f"(saved in {result['mail_folder']})"
    )
    if result["emails"]:
        message = result["emails"][0]
        _out(f"  {message['file']}: {message['subject']} ({' + '.join(message['parts'])})")
        for line in message["text"].strip().splitlines():
            _out(f"  | {line}")
    executable = Path(sys.argv[0]).resolve()
    command = str(executable) if executable.name == "yuqing" else "yuqing"
    _out(
        f"\nQuery it:  {command} sql --db {result['db']} "
        '"SELECT topic, sentiment, count(*) AS n FROM scored_news GROUP BY ALL ORDER BY n DESC"'
    )


@app.command()
def run(
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """One monitoring run: read up to the current end of the topic, score, store, alert."""
    _settings()  # fail fast, in one line, on a bad setting
    from flows.monitor import monitor

    _console_without_known_tracebacks()
    try:
        summary = monitor()
    except Exception as e:
        raise UserError(f"run failed: {' '.join(str(e).split()) or type(e).__name__}") from e
    if as_json:
        _out(json.dumps(summary, default=str))
    else:
        _print_summary(summary)
        _print_alerts(summary["alerts"])


@app.command()
def serve(
    every: Annotated[str, typer.Option(help="Interval between runs, e.g. 30s, 5m, 1h.")] = "5m",
    name: Annotated[str, typer.Option(help="Deployment name in Prefect.")] = "yuqing-monitor",
) -> None:
    """Serve the monitoring flow on a schedule through Prefect (needs a Prefect API or starts one)."""
    from flows.config import parse_duration

    try:
        interval: timedelta = parse_duration(every)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--every") from None
    _settings()
    from flows.monitor import monitor

    monitor.serve(name=name, interval=interval)


@app.command()
def train(
    sentiment_data: Annotated[
        str, typer.Option(help="CSV/Parquet (text,label) or a Hugging Face dataset id.")
    ],
    topic_data: Annotated[
        str, typer.Option(help="CSV/Parquet (text,label) or a Hugging Face dataset id.")
    ],
    out: Annotated[Path, typer.Option(help="Model directory to write.")],
    quick: Annotated[
        bool, typer.Option(help="Frozen encoder, heads only: minutes on a CPU.")
    ] = False,
    base: Annotated[
        str | None, typer.Option(help="Encoder: a Hugging Face id or a local path.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    dapt_epochs: Annotated[
        int | None,
        typer.Option(min=0, help="Masked-LM epochs on the texts before fine-tuning (0: none)."),
    ] = None,
    unlabeled: Annotated[
        str | None,
        typer.Option(
            help="Extra unlabeled texts (CSV/Parquet with a text column) for the MLM step."
        ),
    ] = None,
    teacher: Annotated[
        list[Path] | None,
        typer.Option(help="A trained model dir to distill from; repeat for an ensemble."),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Per-epoch checkpoints (default: OUT.checkpoints).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its checkpoint.")
    ] = False,
) -> None:
    """Train the two-headed classifier (sentiment and topic) and save it with its label maps."""
    from nlp.data import load_labeled, load_texts
    from nlp.train import TrainConfig
    from nlp.train import train as train_model

    for folder in teacher or []:
        if not (folder / "yuqing_model.json").is_file():
            raise UserError(f"--teacher {folder}: not a yuqing model directory")
    overrides = {
        k: v
        for k, v in {
            "base": base,
            "epochs": epochs,
            "seed": seed,
            "dapt_epochs": dapt_epochs,
            "teachers": tuple(str(t) for t in teacher or ()) or None,
            "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
        }.items()
        if v is not None
    }
    config = TrainConfig(quick=quick, resume=resume, **overrides)
    report = train_model(
        sentiment=load_labeled(sentiment_data),
        topic=load_labeled(topic_data),
        out_dir=out,
        config=config,
        unlabeled=load_texts(unlabeled) if unlabeled else None,
    )
    _out(f"model saved to {out}")
    for task_name in ("sentiment", "topic"):
        metrics = report.get("dev", {}).get(task_name) or report.get(task_name, {})
        if metrics:
            _out(
                f"{task_name}: dev accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
                f"ECE {metrics['ece']:.3f}"
            )


class Task(StrEnum):
    sentiment = "sentiment"
    topic = "topic"


@app.command("eval")
def evaluate(
    model: Annotated[Path, typer.Option(help="Model directory.")],
    task: Annotated[Task, typer.Option(help="Which head to evaluate.")],
    data: Annotated[
        str, typer.Option(help="CSV/Parquet (text,label) or a Hugging Face dataset id.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate one head on labelled data: accuracy, macro-F1, calibration error, per class."""
    from nlp.data import load_labeled
    from nlp.inference import Classifier
    from nlp.inference import evaluate as evaluate_model
    from nlp.metrics import classification_report_text

    metrics = evaluate_model(Classifier.load(model), load_labeled(data), task=task.value)
    if as_json:
        _out(json.dumps(metrics))
    else:
        _out(
            f"{task.value}: n={metrics['n']} accuracy={metrics['accuracy']:.4f} "
            f"macro_f1={metrics['macro_f1']:.4f} ece={metrics['ece']:.4f}"
        )
        _out(classification_report_text(metrics))


@app.command()
def classify(
    model: Annotated[Path, typer.Option(help="Model directory.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Lines scored together.")] = 256,
) -> None:
    """Score text lines from stdin; write one JSON object per line to stdout."""
    from nlp.inference import Classifier

    classifier = Classifier.load(model)

    def flush(lines: list[str]) -> None:
        predictions = classifier.predict(lines).to_frame()
        for text, row in zip(lines, predictions.to_dict("records"), strict=True):
            sys.stdout.write(json.dumps({"text": text, **row}, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    pending: list[str] = []
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        pending.append(line)
        if len(pending) >= batch_size:
            flush(pending)
            pending = []
    if pending:
        flush(pending)


class ExplainTask(StrEnum):
    sentiment = "sentiment"
    topic = "topic"
    both = "both"


@app.command()
def explain(
    text: Annotated[str, typer.Argument(help="The text to explain.")],
    model: Annotated[Path, typer.Option(help="Model directory.")],
    task: Annotated[ExplainTask, typer.Option(help="Which head to explain.")] = ExplainTask.both,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML heat map here.")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Integrated-gradients steps.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show which words drove each prediction (integrated gradients over the word embeddings)."""
    if not text.strip():  # fail before the slow imports and the model load
        raise UserError("nothing to explain: the text is empty")
    from nlp.explain import explain as explain_text
    from nlp.explain import format_text, render_html, to_json
    from nlp.inference import Classifier

    tasks = ["sentiment", "topic"] if task is ExplainTask.both else [task.value]
    classifier = Classifier.load(model)
    explanations = [explain_text(classifier.model, text, task=name, steps=steps) for name in tasks]
    if html_file is not None:
        try:
            html_file.write_text(
                render_html(explanations, model_version=classifier.model_version), encoding="utf-8"
            )
        except OSError as e:
            raise UserError(f"cannot write {html_file}: {e.strerror or e}") from e
    if as_json:
        _out(to_json(explanations, model_version=classifier.model_version))
    else:
        _out(format_text(explanations))
        if html_file is not None:
            _out(f"\nheat map written to {html_file}")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL statement, read-only.")],
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default: YUQING_DB).")] = None,
    output_format: Annotated[
        ResultFormat, typer.Option("--format", help="Output format (parquet needs --output).")
    ] = ResultFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the result to this file.")
    ] = None,
) -> None:
    """Run a read-only SQL query against the yuqing database (its analysts' replica)."""
    from storage.db import StorageError
    from storage.queries import read_only_query

    path = db or _settings().db
    try:
        frame = read_only_query(path, query)
    except StorageError as e:
        raise UserError(sql_error_message(e)) from e
    write_result(frame, output_format, output)


app.command()(dashboard)
app.command()(export)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="A .jsonl, .csv or .parquet file of messages.")],
    topic: Annotated[str | None, typer.Option(help="Kafka topic (default: YUQING_TOPIC).")] = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions if the topic is created.")] = 3,
) -> None:
    """Send a file of news messages into Kafka (JSON lines byte for byte; CSV/Parquet rows as JSON)."""
    from flows.replay import replay_file

    settings = _settings()
    sent = replay_file(
        file, settings=settings, topic=topic or settings.topic, partitions=partitions
    )
    _out(f"replayed {sent} messages into {topic or settings.topic!r} at {settings.kafka_bootstrap}")


@app.command()
def broker(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1; 0 picks a free one.")
    ] = 9092,
    topic: Annotated[str, typer.Option(help="Topic to create once it is up.")] = "news",
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of that topic.")] = 3,
) -> None:
    """Start the embedded in-memory Kafka-compatible broker (tansu) and print its address."""
    import time

    from flows.config import Settings
    from flows.kafka_io import ensure_topic
    from infra.broker import EmbeddedBroker

    with EmbeddedBroker(port=port) as embedded:
        ensure_topic(
            client_options=Settings(kafka_bootstrap=embedded.bootstrap).kafka_client_options(),
            topic=topic,
            partitions=partitions,
        )
        _out(embedded.bootstrap)
        _out(
            f"# export YUQING_KAFKA_BOOTSTRAP={embedded.bootstrap}   (Ctrl-C stops the broker; data is in memory)"
        )
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


class _DropKnownTracebacks(logging.Filter):
    """Console only: expected failures print as their message; the Prefect API keeps it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], _known_errors()):
            record.exc_info, record.exc_text = None, None
        return True


def _console_without_known_tracebacks() -> None:
    from prefect.logging.configuration import setup_logging

    setup_logging()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropKnownTracebacks())


def _known_errors() -> tuple[type[BaseException], ...]:
    from flows.demo import DemoError
    from flows.kafka_io import KafkaUnavailable
    from flows.replay import ReplayError
    from infra.broker import BrokerError
    from nlp.data import DataError
    from nlp.manifest import ModelError
    from storage.db import StorageError

    errors = [UserError, AnalystError, AlertsError, DemoError, KafkaUnavailable, ReplayError,
              BrokerError, DataError, ModelError, StorageError]  # fmt: skip
    # nlp.explain imports torch: a failing `yuqing run` should not pay for that to print one
    # line, and an ExplainError can only have been raised once the module is loaded.
    explain = sys.modules.get("nlp.explain")
    if explain is not None:
        errors.append(explain.ExplainError)
    return tuple(errors)


def main() -> None:
    """Entry point: run the app, turning user-facing failures into one line on stderr."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    prefix = f"yuqing {command}".strip()
    try:
        code = app(standalone_mode=False, prog_name="yuqing")
    except typer.Abort:
        sys.stderr.write(f"{prefix}: aborted\n")
        raise SystemExit(130) from None
    except ClickException as e:
        sys.stderr.write(f"{prefix}: {e.format_message()} (see '{prefix} --help')\n")
        raise SystemExit(e.exit_code) from None
    except Exception as e:
        if os.environ.get("YUQING_DEBUG") or not isinstance(e, _known_errors()):
            raise
        sys.stderr.write(f"{prefix}: {' '.join(str(e).split())}\n")
        raise SystemExit(1) from None
    raise SystemExit(code or 0)


if __name__ == "__main__":
    main()
