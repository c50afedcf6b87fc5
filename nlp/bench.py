"""Throughput benchmark: the transformers pipeline, the engine and the model-only ceiling.

    python -m nlp.bench [--device cuda|cpu] [--n N] [--model DIR | --base ID_OR_PATH]

All paths score the same texts in one process, one after the other, and the table reports
documents per second, the ratio to the batch-64 pipeline, and peak host and device memory:

- pipeline, batch 1 (on a subset): `transformers.pipeline("text-classification")`, fp32, one
  head (the encoder with a sequence-classification head), as a user would first write it;
- pipeline, batch 64: the same with `batch_size=64`;
- engine: `nlp.engine.Engine`, raw strings in, both heads' labels and calibrated probabilities
  out (an fp16 weight copy on CUDA, fp32 on CPU; `--precision`), once as a new engine's first
  pass (empty word cache) and then as the same engine again (the steady state of a
  long-running monitor);
- ceiling: the model alone (encoder + pooling + both heads) on pre-tokenized, pre-padded batches
  already on the device (1024 x 48 on CUDA, 64 x 48 on CPU): what the device can do at best.

It also checks the engine against a plain fp32 reference (`nlp.inference.Classifier` with
`fp32=True`: no autocast, no TF32) on a subset: label agreement, the largest probability
difference and the share of items with the same label and every probability within 0.01.
Texts come from CSV/Parquet files with a `text` column (default: the shared finance data),
sampled with a fixed seed.
The figures are printed as one markdown table and written as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nlp.engine import PRECISIONS, Engine, EngineConfig
from nlp.inference import Classifier
from nlp.model import DEFAULT_BASE, TASKS, DualHeadClassifier, resolve_base

logger = logging.getLogger(__name__)

DEFAULT_DATA = ("../shared/data/sentiment/train.csv", "../shared/data/topic/train.csv")


def load_texts(paths: list[str], n: int, seed: int) -> list[str]:
    frames = []
    for path in paths:
        suffix = Path(path).suffix.lower()
        frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, dtype=str)
        frames.append(frame["text"].dropna().astype(str))
    pool = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(seed)
    return pool.iloc[rng.choice(len(pool), size=n, replace=n > len(pool))].tolist()


def pick_device(parser: argparse.ArgumentParser, name: str | None) -> torch.device:
    """`--device`, or CUDA when one is visible; a usage error if CUDA is asked for but absent."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is visible")
    return torch.device(name)


def bench_model(
    model_dir: str | None, base: str, device: torch.device, seed: int
) -> DualHeadClassifier:
    """A trained yuqing model, or `base` with untrained heads (3 sentiments, 20 topics):
    throughput does not depend on the heads' weights."""
    if model_dir:
        return DualHeadClassifier.load(model_dir, device=device)
    torch.manual_seed(seed)
    return DualHeadClassifier.from_base(
        base,
        sentiment_labels=["negative", "neutral", "positive"],
        topic_labels=[f"topic-{i:02d}" for i in range(20)],
    ).to(device).eval()  # fmt: skip


def _reset_host_peak() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _host_peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, fn, n_docs: int, device: torch.device, **extra) -> dict:
    """Run fn() once, timing it; peak host RSS and device memory during it."""
    _reset_host_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    seconds = time.perf_counter() - started
    row = {
        "path": name,
        "docs": n_docs,
        "seconds": round(seconds, 3),
        "docs_per_s": round(n_docs / seconds, 1),
        "host_peak_mb": _host_peak_mb(),
        "device_peak_mb": (
            round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if device.type == "cuda"
            else None
        ),
        **extra,
    }
    logger.info("%s: %.0f docs/s", name, row["docs_per_s"])
    return row


def pipeline_fn(base_source: str, device: torch.device, batch_size: int, texts: list[str]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(
        base_source, num_labels=3, dtype=torch.float32
    )
    classifier = pipeline(
        "text-classification",
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(base_source),
        device=device,
    )

    def run():
        return classifier(texts, batch_size=batch_size, truncation=True, max_length=128)

    return run


def ceiling_fn(engine: Engine, batch: int, width: int, reps: int):
    """The engine's scoring step alone (encoder, pooling, both heads, softmax) on one batch of
    pre-tokenized ids already on the device, `reps` times: no tokenizing, padding or copying."""
    generator = torch.Generator().manual_seed(0)
    vocab = engine.model.encoder.config.vocab_size
    input_ids = torch.randint(1000, vocab, (batch, width), generator=generator).to(engine.device)
    lengths = torch.full((batch,), width, device=engine.device)

    @torch.inference_mode()
    def run():
        for _ in range(reps):
            engine._score(input_ids, lengths)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlp.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument(
        "--n", type=int, default=None, help="texts (default 200000 on CUDA, 4000 on CPU)"
    )
    parser.add_argument("--batch1-n", type=int, default=None, help="texts for pipeline batch 1")
    parser.add_argument("--model", default=None, help="a trained yuqing model dir")
    parser.add_argument("--base", default=DEFAULT_BASE, help="encoder when no --model is given")
    parser.add_argument("--data", nargs="*", default=list(DEFAULT_DATA))
    parser.add_argument("--check-n", type=int, default=2000, help="texts for the fp32 check")
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine")
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one CUDA graph per batch shape (default: on CUDA unless --compile)",
    )
    parser.add_argument("--tokenizer-workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="texts per chunk (default 16384 on CUDA, else 8192)",
    )
    parser.add_argument("--no-word-cache", action="store_true")
    parser.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto")
    parser.add_argument(
        "--compare-precision",
        type=lambda text: [p for p in text.split(",") if p],
        default=[],
        help=f"comma-separated other precisions ({', '.join(PRECISIONS)}) to check against "
        "fp32 and time (one warm pass each) beside the engine's",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="JSON file (default bench-DEVICE.json)")
    parser.add_argument("--skip", default="", help="comma-separated paths to skip")
    args = parser.parse_args(argv)
    unknown = [p for p in args.compare_precision if p not in PRECISIONS]
    if unknown:
        parser.error(f"--compare-precision: unknown {unknown}; known: {list(PRECISIONS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    device = pick_device(parser, args.device)
    if args.cuda_graphs and (device.type != "cuda" or args.compile):
        parser.error("--cuda-graphs needs --device cuda and no --compile")
    # On CUDA a backlog-sized default: 20,000 texts last the engine 0.15 s, so starting the
    # pipeline (first chunk tokenized before the device has work) weighs on the figure.
    n = args.n or (200000 if device.type == "cuda" else 4000)
    batch1_n = args.batch1_n or (1000 if device.type == "cuda" else 200)
    try:
        texts = load_texts(args.data, n, args.seed)
    except (OSError, KeyError, ValueError) as e:
        parser.error(f"cannot read the texts: {e}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    model = bench_model(args.model, args.base, device, args.seed)
    base_source = str(Path(args.model) / "encoder") if args.model else resolve_base(args.base)
    n_params = sum(p.numel() for p in model.parameters())
    token_lengths = np.array([len(ids) for ids in model.tokenize(texts[:5000])])
    engine = Engine(
        model,
        device=device,
        config=EngineConfig(
            compile=args.compile,
            cuda_graphs=args.cuda_graphs,
            tokenizer_workers=args.tokenizer_workers,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            word_cache=not args.no_word_cache,
            precision=args.precision,
        ),
    )

    rows = []
    ceiling_batch = 1024 if device.type == "cuda" else 64
    reps = max(1, min(200, (n // ceiling_batch) or 1))
    if "ceiling" not in skip:
        ceiling_fn(engine, ceiling_batch, 48, 3)()  # warm-up
        rows.append(
            measure(
                f"ceiling: model alone, pre-tokenized {ceiling_batch}x48",
                ceiling_fn(engine, ceiling_batch, 48, reps),
                ceiling_batch * reps,
                device,
            )
        )
    if "engine" not in skip:
        # a new engine's first pass: its word cache starts empty and CUDA kernels load
        rows.append(
            measure(
                "engine, first pass of a new engine (cold word cache)",
                lambda: engine.predict(texts),
                n,
                device,
            )
        )
        passes = 3  # the same engine again, three times in a row: the steady state

        def steady():
            for _ in range(passes):
                engine.predict(texts)

        rows.append(
            measure(
                f"engine (both heads, raw strings in), {passes} passes",
                steady,
                n * passes,
                device,
            )
        )
    if "pipeline64" not in skip:
        run = pipeline_fn(base_source, device, 64, texts)
        run_warm = pipeline_fn(base_source, device, 64, texts[:128])
        run_warm()
        rows.append(measure("transformers pipeline, fp32, batch 64", run, n, device))
        del run, run_warm
    if "pipeline1" not in skip:
        subset = texts[:batch1_n]
        run = pipeline_fn(base_source, device, 1, subset)
        rows.append(measure("transformers pipeline, fp32, batch 1", run, len(subset), device))

    check, precision_checks = {}, {}
    if "check" not in skip:
        subset = texts[: args.check_n]
        fp32 = Classifier(model=model, device=device, fp32=True)  # no autocast, no TF32
        ref = fp32.predict(subset, batch_size=64)
        check = fp32_check(ref, engine.predict(subset))
        for precision in args.compare_precision:
            other = Engine(
                model, device=device, config=dataclasses.replace(engine.config, precision=precision)
            )
            other.predict(texts[:4096])  # warm-up: word cache, kernels
            row = measure(
                f"engine at {precision}, 1 pass", partial(other.predict, texts), n, device
            )
            precision_checks[precision] = {
                "docs_per_s": row["docs_per_s"],
                **fp32_check(ref, other.predict(subset)),
            }
            other.close()

    base64 = next((r for r in rows if r["path"].endswith("batch 64")), None)
    ceiling = next((r for r in rows if r["path"].startswith("ceiling")), None)
    for row in rows:
        if base64:
            row["x_pipeline64"] = round(row["docs_per_s"] / base64["docs_per_s"], 2)
        if ceiling:
            row["share_of_ceiling"] = round(row["docs_per_s"] / ceiling["docs_per_s"], 3)
    result = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": args.model or args.base,
        "parameters": n_params,
        "texts": n,
        "mean_tokens": round(float(token_lengths.mean()), 1),
        "engine_config": {**vars(engine.config), "tokenizer_workers": engine._workers},
        "cuda_graphs": engine.cuda_graphs,
        "host_cpus": os.cpu_count(),
        "rows": rows,
        "fp32_check": check,
        "precision": engine.precision,
        "precision_checks": precision_checks,
        "command": "python -m nlp.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    output = Path(args.output or f"bench-{device.type}.json")
    output.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(render(result) + "\n")
    sys.stdout.write(f"JSON written to {output}\n")
    return 0


def fp32_check(ref, got) -> dict:
    """Per head: label agreement with the fp32 reference, the largest probability difference,
    and the share of items with the same label and every probability within 0.01."""
    check = {}
    for task in TASKS:
        a, b = getattr(ref, f"{task}_probs"), getattr(got, f"{task}_probs")
        diff = np.abs(a - b).max(axis=1)  # (N,) largest difference per item
        same = a.argmax(1) == b.argmax(1)
        check[task] = {
            "agreement": float(np.mean(same)),
            "max_prob_diff": float(diff.max()),
            "share_within_0.01": float(np.mean(same & (diff <= 0.01))),
        }
    return check


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def render(result: dict) -> str:
    lines = [
        f"device: {result['device']} | torch {result['torch']} | {result['texts']} texts, "
        f"mean {result['mean_tokens']} tokens | model {result['model']} "
        f"({result['parameters'] / 1e6:.1f}M parameters)",
        "",
        "| path | docs | docs/s | x pipeline b64 | share of ceiling | host peak MB | device peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['path']} | {row['docs']} | {row['docs_per_s']:,.0f} | "
            f"{row.get('x_pipeline64', '')} | {row.get('share_of_ceiling', '')} | "
            f"{_mb(row['host_peak_mb'])} | {_mb(row['device_peak_mb'])} |"
        )
    checks = {result.get("precision", "engine"): result["fp32_check"]}
    checks.update(result.get("precision_checks", {}))
    if any(checks.values()):
        lines += [
            "",
            "| precision | docs/s (1 warm pass) | head | agreement with fp32 | largest difference "
            "| same label, all within 0.01 |",
            "|---|---|---|---|---|---|",
        ]
    for precision, check in checks.items():
        speed = check.get("docs_per_s")
        for task in TASKS:
            if task in check:
                c = check[task]
                lines.append(
                    f"| {precision} | {'' if speed is None else f'{speed:,.0f}'} | {task} | "
                    f"{c['agreement']:.4f} | {c['max_prob_diff']:.4f} | "
                    f"{c.get('share_within_0.01', float('nan')):.4f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    sys.exit(main())
