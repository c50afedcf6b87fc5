"""Ablation runs of the training recipe, with one table of dev metrics at the end.

    python -m nlp.ablation --sentiment-data S.csv --topic-data T.csv --out runs/ \\
        --runs baseline,llrd,rdrop --seeds 13,14 --parallel 4

Each (run, seed) trains a model with `nlp.train.train` in its own process (several share one
GPU: MiniLM leaves most of an H100 idle), into `OUT/RUN-sSEED`. All runs use the same dev split
(`split_seed`), so their dev metrics compare directly, and runs with several seeds also get an
"ensemble" row: the average of the seed models' calibrated probabilities. The table is printed
as markdown and written to `OUT/ablation.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nlp.metrics import classification_metrics, fit_temperature
from nlp.model import TASKS

logger = logging.getLogger(__name__)

# Each run is a set of TrainConfig overrides on top of the full-mode defaults.
# Each run overrides TrainConfig fields. "baseline" is the plain recipe (the reference fine-tune);
# the default TrainConfig is the "combo" recipe, chosen from these runs (docs/model.md).
PLAIN = {
    "lr": 5e-5, "epochs": 3, "patience": 2, "layer_decay": 1.0, "rdrop_alpha": 0.0,
    "class_weight_power": 0.0, "sentiment_weight": 1.0,
}  # fmt: skip
LONG = {**PLAIN, "lr": 1e-4, "epochs": 6, "patience": 3}
RUNS: dict[str, dict] = {
    "baseline": PLAIN,
    "long": LONG,
    "llrd": {**LONG, "layer_decay": 0.85},
    "smooth": {**LONG, "label_smoothing": 0.1},
    "rdrop": {**LONG, "rdrop_alpha": 1.0},
    "classw": {**LONG, "class_weight_power": 0.5},
    "sent2": {**LONG, "sentiment_weight": 2.0},
    "bs16": {**LONG, "lr": 5e-5, "batch_size": 16},
    "lr2e-4": {**LONG, "lr": 2e-4, "layer_decay": 0.85},
    "combo": {},  # the defaults: LONG + layer_decay 0.85, R-Drop 1.0, class weights 0.5, sentiment x2
    "combo-ls": {"label_smoothing": 0.1},
    "norm-finance": {"normalization": "finance"},  # links replaced by "http" (now the default)
    "norm-none": {"normalization": "none"},  # combo without the link clean-up
    "dapt3": {"dapt_epochs": 3},  # combo after 3 epochs of masked-LM on the training texts
    "dapt10": {"dapt_epochs": 10},
    # students: pass the teacher dirs with --overrides '{"teachers": [...]}'
    "kd": {"rdrop_alpha": 0.0, "batch_size": 64, "epochs": 5},
    "kd-rdrop": {"batch_size": 64, "epochs": 5},
    "kd-dapt3": {"rdrop_alpha": 0.0, "batch_size": 64, "epochs": 5, "dapt_epochs": 3},
}


def train_one(args: argparse.Namespace) -> None:
    """Child process: one (run, seed)."""
    from nlp.data import load_labeled
    from nlp.train import TrainConfig, train

    overrides = {**RUNS[args.one], **json.loads(args.overrides or "{}")}
    config = TrainConfig(base=args.base, seed=args.seed, **overrides)
    train(
        sentiment=load_labeled(args.sentiment_data),
        topic=load_labeled(args.topic_data),
        out_dir=Path(args.out) / f"{args.one}-s{args.seed}",
        config=config,
    )


def launch(args: argparse.Namespace, runs: list[str], seeds: list[int]) -> None:
    """Run every (run, seed) in child processes, at most `--parallel` at a time."""
    queue = [(run, seed) for run in runs for seed in seeds]
    active: list[tuple[str, subprocess.Popen, float]] = []
    Path(args.out).mkdir(parents=True, exist_ok=True)
    while queue or active:
        while queue and len(active) < args.parallel:
            run, seed = queue.pop(0)
            log = open(Path(args.out) / f"{run}-s{seed}.log", "w")  # noqa: SIM115
            command = [
                sys.executable, "-m", "nlp.ablation", "--one", run, "--seed", str(seed),
                "--sentiment-data", args.sentiment_data, "--topic-data", args.topic_data,
                "--base", args.base, "--out", args.out, "--overrides", args.overrides or "{}",
            ]  # fmt: skip
            env = {**os.environ, "TQDM_DISABLE": "1"}
            active.append(
                (
                    f"{run}-s{seed}",
                    subprocess.Popen(command, stdout=log, stderr=log, env=env),
                    time.time(),
                )
            )
        time.sleep(2)
        for item in list(active):
            name, process, started = item
            if process.poll() is not None:
                active.remove(item)
                logger.info(
                    "%s finished (exit %d) in %.0fs",
                    name,
                    process.returncode,
                    time.time() - started,
                )


def summarize(out: Path, runs: list[str], seeds: list[int]) -> list[dict]:
    """One row per (run, seed) and per multi-seed ensemble: dev metrics of both tasks."""
    rows = []
    for run in runs:
        seed_logits = {task: [] for task in TASKS}
        targets = {}
        for seed in seeds:
            folder = out / f"{run}-s{seed}"
            if not (folder / "dev_predictions.npz").is_file():
                rows.append({"run": run, "seed": seed, "error": "no result (see the log)"})
                continue
            metrics = json.loads((folder / "metrics.json").read_text())
            data = np.load(folder / "dev_predictions.npz")
            row = {"run": run, "seed": seed, "fit_s": round(metrics["timings"]["fit_s"], 1)}
            for task in TASKS:
                dev = metrics["dev"][task]
                row |= {f"{task}_{k}": round(dev[k], 4) for k in ("accuracy", "macro_f1", "ece")}
                seed_logits[task].append(data[f"{task}_logits"])
                targets[task] = data[f"{task}_target"]
            rows.append(row)
        if len(seed_logits["sentiment"]) > 1:
            row = {"run": run, "seed": "ensemble"}
            for task in TASKS:
                mean_logits = np.mean(seed_logits[task], axis=0)  # (N, C)
                temperature = fit_temperature(mean_logits, targets[task])
                probs = _softmax(mean_logits / temperature)
                labels = [str(i) for i in range(probs.shape[1])]
                metrics = classification_metrics([labels[i] for i in targets[task]], probs, labels)
                row |= {
                    f"{task}_{k}": round(metrics[k], 4) for k in ("accuracy", "macro_f1", "ece")
                }
            rows.append(row)
    return rows


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def markdown(rows: list[dict]) -> str:
    columns = (
        ["run", "seed"]
        + [f"{t}_{k}" for t in TASKS for k in ("accuracy", "macro_f1", "ece")]
        + ["fit_s"]
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(
                str(row.get(c, row.get("error", "")) if c != "run" else row["run"]) for c in columns
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nlp.ablation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sentiment-data", required=True)
    parser.add_argument("--topic-data", required=True)
    parser.add_argument("--base", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--runs", default="baseline", help=f"comma-separated, of: {', '.join(RUNS)}"
    )
    parser.add_argument("--seeds", default="13")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument(
        "--overrides", default=None, help="JSON of TrainConfig fields for every run"
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=13, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.one:
        train_one(args)
        return
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; known: {list(RUNS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    launch(args, runs, seeds)
    rows = summarize(Path(args.out), runs, seeds)
    (Path(args.out) / "ablation.json").write_text(
        json.dumps(
            {"rows": rows, "runs": {r: RUNS[r] for r in runs}, "wall_s": time.time() - started},
            indent=2,
        )
    )
    sys.stdout.write(markdown(rows) + "\n")
    sys.stdout.write(f"wall time {time.time() - started:.0f}s\n")


if __name__ == "__main__":
    main()
