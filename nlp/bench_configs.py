"""Engine settings side by side: steady-state documents/s per config, alternated in one process.

    python -m nlp.bench_configs [--device cuda|cpu] [--n N] [--config NAME=JSON ...]

Each config is an `EngineConfig` override (JSON object). Every config gets a new engine on the
same model and texts, and the table reports, per config:

- steady: three passes of `Engine.predict` over the texts, after one first pass;
- device side: the engine's launch/finish loop alone on chunks tokenized beforehand (at most
  65,536 texts), i.e. the engine without its tokenizer;
- ceiling: the scoring step alone on one pre-tokenized batch (as in `nlp.bench`), measured
  with that engine, so each row carries its own yardstick.

List a config twice to see the run-to-run spread. The default list is the stop-13 sweep of
docs/benchmarks.md. The model is the default base with untrained heads unless `--model` is
given; throughput does not depend on the heads' weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import torch

from nlp.bench import DEFAULT_DATA, ceiling_fn, load_texts
from nlp.engine import Engine, EngineConfig
from nlp.model import DEFAULT_BASE, DualHeadClassifier

DEFAULT_CONFIGS = (
    ("default", {}),
    ("eager c8192", {"cuda_graphs": False, "chunk_size": 8192}),
    ("eager", {"cuda_graphs": False}),
    ("graphs c8192", {"chunk_size": 8192}),
    ("graphs c32768", {"chunk_size": 32768}),
    ("default", {}),
    ("eager c8192", {"cuda_graphs": False, "chunk_size": 8192}),
)
DEVICE_SIDE_TEXTS = 65536


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def device_side_rate(engine: Engine, texts: list[str]) -> float:
    """Documents/s of the engine's launch/finish loop on chunks tokenized beforehand."""
    size = engine.config.chunk_size
    chunks = [engine._collect(s, texts[s : s + size], None) for s in range(0, len(texts), size)]

    def run() -> None:
        flight = None
        for item in chunks:
            queued = engine._launch(item)
            if flight is not None:
                engine._finish(flight)
            flight = queued
        engine._finish(flight)

    run()  # warm-up: graph capture, kernels
    return len(texts) / min(_timed(run, engine.device) for _ in range(2))


def parse_config(text: str) -> tuple[str, dict]:
    name, sep, body = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected NAME=JSON, got {text!r}")
    overrides = json.loads(body)
    if not isinstance(overrides, dict):
        raise ValueError(f"{name}: the JSON must be an object, got {body!r}")
    EngineConfig(**overrides)  # unknown fields fail here, before any model loads
    return name, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nlp.bench_configs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument(
        "--n", type=int, default=None, help="texts (default 200000 on CUDA, 4000 on CPU)"
    )
    parser.add_argument("--model", default=None, help="a trained yuqing model dir")
    parser.add_argument("--data", nargs="*", default=list(DEFAULT_DATA))
    parser.add_argument("--config", action="append", default=None, metavar="NAME=JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        configs = [parse_config(c) for c in args.config] if args.config else list(DEFAULT_CONFIGS)
    except (ValueError, TypeError) as e:
        parser.error(f"--config: {e}")
    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is visible")
    device = torch.device(device_name)
    if device.type != "cuda":  # graphs exist only on CUDA
        configs = [(name, cfg) for name, cfg in configs if not cfg.get("cuda_graphs")]
    n = args.n or (200000 if device.type == "cuda" else 4000)
    try:
        texts = load_texts(args.data, n, args.seed)
    except (OSError, KeyError, ValueError) as e:
        parser.error(f"cannot read the texts: {e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.model:
        model = DualHeadClassifier.load(args.model, device=device)
    else:
        torch.manual_seed(args.seed)
        model = DualHeadClassifier.from_base(
            DEFAULT_BASE,
            sentiment_labels=["negative", "neutral", "positive"],
            topic_labels=[f"topic-{i:02d}" for i in range(20)],
        ).to(device).eval()  # fmt: skip
    ceiling_batch = 1024 if device.type == "cuda" else 64
    lines = [
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} | "
        f"{n} texts",
        "",
        "| config | overrides | steady docs/s | device side docs/s | ceiling docs/s | share |",
        "|---|---|---|---|---|---|",
    ]
    for name, overrides in configs:
        with Engine(model, device=device, config=EngineConfig(**overrides)) as engine:
            ceiling = ceiling_fn(engine, ceiling_batch, 48, 100)
            ceiling()
            ceiling_rate = ceiling_batch * 100 / _timed(ceiling, device)
            engine.predict(texts)  # first pass: word cache, graphs, tokenizer processes
            steady = 3 * n / _timed(lambda e=engine: [e.predict(texts) for _ in range(3)], device)
            side = device_side_rate(engine, texts[:DEVICE_SIDE_TEXTS])
        row = (
            f"| {name} | `{json.dumps(overrides)}` | {steady:,.0f} | {side:,.0f} | "
            f"{ceiling_rate:,.0f} | {steady / ceiling_rate:.3f} |"
        )
        logging.getLogger(__name__).info("%s", row)
        lines.append(row)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
