"""What every chaos scenario shares: the environment, running ``yuqing``, producing, auditing.

Nothing is mocked: a real tansu broker, real ``yuqing run`` processes (or the flow in-process
under Prefect), real DuckDB files, a real tiny transformer and a real HTTP webhook.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    """A scenario's figures and the guarantees it checked."""

    scenario: str
    figures: dict[str, object] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, guarantee: str) -> None:
        if not ok:
            self.failures.append(guarantee)

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self) -> str:
        width = max(len(k) for k in [*self.figures, "result"])
        lines = [f"== {self.scenario} =="]
        lines += [f"  {k:<{width}}  {v}" for k, v in self.figures.items()]
        lines.append(f"  {'result':<{width}}  {'PASS' if self.passed else 'FAIL'}")
        lines += [f"  failed: {f}" for f in self.failures]
        return "\n".join(lines)


@dataclass
class ChaosEnv:
    """Where scenarios run: one broker, one model, one Prefect API, a scratch folder."""

    bootstrap: str
    model_dir: Path
    workdir: Path
    prefect_api_url: str | None = None
    broker: object | None = None  # infra.broker.EmbeddedBroker, for pause()/resume()
    in_process: bool = False  # runs nobody kills go through monitor() here (faster, for CI)

    def run_flow(self, run_env: dict[str, str]) -> tuple[dict | None, str]:
        """One run that nobody interrupts: (summary, '') or (None, its one-line error)."""
        if self.in_process:
            from flows.monitor import monitor

            with environment(run_env):
                try:
                    return monitor(), ""
                except Exception as e:  # noqa: BLE001 - reported as the run's error
                    return None, " ".join(str(e).split())
        done = self.yuqing("run", "--json", env=run_env, timeout=1800)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return None, lines[-1] if lines else f"exit {done.returncode}"
        return json.loads(done.stdout.strip().splitlines()[-1]), ""

    def yuqing_env(self, *, topic: str, db: Path, **settings: object) -> dict[str, str]:
        """Environment variables for a ``yuqing`` process (or an in-process flow)."""
        env = {
            "YUQING_KAFKA_BOOTSTRAP": self.bootstrap,
            "YUQING_TOPIC": topic,
            "YUQING_DB": str(db),
            "YUQING_MODEL": str(self.model_dir),
            "YUQING_ALERT_URLS": "",
            "YUQING_KAFKA_TIMEOUT_S": "10",
            "YUQING_DEVICE": "cpu",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
        }
        if self.prefect_api_url:
            env["PREFECT_API_URL"] = self.prefect_api_url
        env |= {f"YUQING_{k.upper()}": str(v) for k, v in settings.items()}
        return env

    def popen(self, *args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
        """Start ``yuqing ARGS`` as its own process (stdout and stderr piped, as text)."""
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args],
            cwd=self.workdir,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )

    def yuqing(self, *args: str, env: dict[str, str], timeout: float = 300, **kwargs):
        """Run ``yuqing ARGS`` to the end; returns the CompletedProcess."""
        return subprocess.run(
            [sys.executable, "-m", "flows.cli", *args],
            cwd=self.workdir,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block (an in-process flow reads its settings there)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def client_options(bootstrap: str) -> dict:
    from flows.config import Settings

    return Settings(kafka_bootstrap=bootstrap).kafka_client_options()


def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    partitions: int = 3,
) -> int:
    """Send (key, value) pairs and wait for every acknowledgement; returns how many."""
    from kafka import KafkaProducer

    from flows.kafka_io import ensure_topic, produce

    options = client_options(bootstrap)
    ensure_topic(client_options=options, topic=topic, partitions=partitions)
    producer = KafkaProducer(
        **options, acks="all", linger_ms=20, retries=5, max_request_size=16 * 1024 * 1024
    )
    try:
        return produce(
            producer,
            topic=topic,
            messages=((key, value, None) for key, value in messages),
            chunk=2000,
        )
    finally:
        producer.close()


def news_value(message_id: str, text: str, **extra: object) -> tuple[bytes, bytes]:
    """A contract-valid message keyed by its id (so copies of an id share a partition)."""
    return message_id.encode(), json.dumps({"id": message_id, "text": text, **extra}).encode()


class LineWatcher:
    """Reads a process's stderr in a thread, keeps it, and signals when a line matches."""

    def __init__(self, process: subprocess.Popen, needle: str) -> None:
        self.lines: list[str] = []
        self.seen = threading.Event()
        self._needle = needle
        self._thread = threading.Thread(target=self._pump, args=(process,), daemon=True)
        self._thread.start()

    def _pump(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            self.lines.append(line)
            if self._needle in line:
                self.seen.set()

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines)


def wait_for_lock_release(process: subprocess.Popen, timeout: float = 60) -> int:
    """Wait for ``process`` to end; returns its exit code (negative: killed by that signal)."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class Audit:
    """How each id the harness sent ended up in the database."""

    scored: Counter
    dead_ids: Counter
    dead_raws: Counter
    news_count: int
    dead_count: int
    offsets_total: int

    def lost(self, ids: Iterable[str], dead_raws: Iterable[bytes] = ()) -> int:
        missing = sum(1 for i in ids if self.scored[i] + self.dead_ids[i] == 0)
        return missing + sum(1 for r in dead_raws if self.dead_raws[r] == 0)

    def duplicated(self) -> int:
        """Ids stored more than once across news and dead letters, plus repeated dead letters."""
        ids = self.scored + self.dead_ids
        return sum(n - 1 for n in ids.values() if n > 1) + sum(
            n - 1 for n in self.dead_raws.values() if n > 1
        )


def audit(db: Path, *, consumer: str = "yuqing") -> Audit:
    """Count, per id, its rows in scored_news and dead_letters (read-only, on the main file)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        scored = Counter(i for (i,) in con.execute("SELECT id FROM scored_news").fetchall())
        raws = [bytes(r) for (r,) in con.execute("SELECT raw FROM dead_letters").fetchall()]
        (offsets_total,) = con.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = ?",
            [consumer],
        ).fetchone()
    finally:
        con.close()
    dead_ids = Counter()
    for raw in raws:
        try:
            message_id = json.loads(raw).get("id")
        except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(message_id, str) and message_id.strip():
            dead_ids[message_id] += 1
    return Audit(
        scored=scored,
        dead_ids=dead_ids,
        dead_raws=Counter(raws),
        news_count=sum(scored.values()),
        dead_count=len(raws),
        offsets_total=int(offsets_total),
    )


def tiny_model(root: Path) -> Path:
    """Build (once) the tiny trained model the tests use; returns its directory."""
    from nlp.testing import make_tiny_base
    from nlp.train import TrainConfig, train
    from tests.conftest import synthetic_labeled

    out = root / "model"
    if (out / "yuqing_model.json").exists():
        return out
    base = make_tiny_base(root / "base")
    sentiment, topic = synthetic_labeled()
    train(
        sentiment=sentiment,
        topic=topic,
        out_dir=out,
        config=TrainConfig(base=base, quick=True, quick_steps=150),
    )
    return out


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"
