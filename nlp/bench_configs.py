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

import torch

from nlp.bench import DEFAULT_DATA, bench_model, ceiling_fn, load_texts, measure, pick_device
from nlp.engine import Engine, EngineConfig
from nlp.model import DEFAULT_BASE

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


def device_side_rate(engine: Engine, texts: list[str]) -> float:
    """Documents/s of the engine's launch/finish loop on chunks tokenized beforehand (the
    best of two passes, after a warm-up pass: graph capture, kernels)."""
    size = engine.config.chunk_size
    chunks = [engine._collect(s, texts[s : s + size], None) for s in range(0, len(texts), size)]

    def run() -> None:
        for _ in engine._score_chunks(chunks):
            pass

    run()
    return max(
        measure("device side", run, len(texts), engine.device)["docs_per_s"] for _ in range(2)
    )


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
    device = pick_device(parser, args.device)
    if device.type != "cuda":  # graphs exist only on CUDA
        configs = [(name, cfg) for name, cfg in configs if not cfg.get("cuda_graphs")]
    n = args.n or (200000 if device.type == "cuda" else 4000)
    try:
        texts = load_texts(args.data, n, args.seed)
    except (OSError, KeyError, ValueError) as e:
        parser.error(f"cannot read the texts: {e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    model = bench_model(args.model, DEFAULT_BASE, device, args.seed)
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
            ceiling_rate = measure("ceiling", ceiling, ceiling_batch * 100, device)["docs_per_s"]
            engine.predict(texts)  # first pass: word cache, graphs, tokenizer processes

            def steady_passes(e: Engine = engine) -> None:
                for _ in range(3):
                    e.predict(texts)

            steady = measure("steady", steady_passes, 3 * n, device)["docs_per_s"]
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
