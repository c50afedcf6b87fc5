"""Scoring across several processes (one per GPU) with accelerate, results in input order.

    accelerate launch --num_processes N -m nlp.distributed --model DIR --input texts.txt \\
        --output predictions.npz

Each process takes one contiguous slice of the input (`split_between_processes`), scores it
with its own `Engine` on its own device, and the slices are gathered back in process order
(`gather_object`), so the output keeps the input order. With N GPUs throughput scales close to
N times, since the processes share nothing but the input file. The same code runs on CPU
(`torchrun --nproc_per_node 2 -m nlp.distributed ...`: accelerate hands GPU launches to torchrun,
but runs one process on CPU), which is how the tests check the split and gather.
For an unbounded stream, give each process every N-th chunk instead of a slice; see
docs/benchmarks.md ("Several GPUs").
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from nlp.engine import Engine
from nlp.inference import Predictions
from nlp.model import TASKS

logger = logging.getLogger(__name__)


def predict_distributed(engine: Engine, texts: Sequence[str]) -> Predictions:
    """Every process scores its slice; every process gets all predictions in input order."""
    state = PartialState()
    with state.split_between_processes(list(texts)) as part:
        local = engine.predict(part)
    fields = {task: getattr(local, f"{task}_probs") for task in TASKS}
    gathered = gather_object([(state.process_index, fields)])  # one entry per process
    gathered.sort(key=lambda item: item[0])
    probs = {task: np.concatenate([item[1][task] for item in gathered]) for task in TASKS}
    result = {}
    for task in TASKS:
        chosen = probs[task].argmax(axis=1)
        result[task] = engine.labels[task][chosen]
        result[f"{task}_score"] = probs[task][np.arange(len(chosen)), chosen]
        result[f"{task}_probs"] = probs[task]
    return Predictions(**result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nlp.distributed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, help="a trained yuqing model dir")
    parser.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
    parser.add_argument("--output", required=True, help=".npz with labels and probabilities")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # On a machine without GPUs, processes started by torchrun form a gloo (CPU) group.
    state = PartialState(cpu=not torch.cuda.is_available())
    texts = Path(args.input).read_text(encoding="utf-8").splitlines()
    with Engine.load(args.model, device=str(state.device)) as engine:
        predictions = predict_distributed(engine, texts)
    if state.is_main_process:
        np.savez(
            args.output,
            processes=state.num_processes,
            **{task: getattr(predictions, task).astype(str) for task in TASKS},
            **{f"{task}_probs": getattr(predictions, f"{task}_probs") for task in TASKS},
        )
        logger.info("%d texts scored by %d processes", len(texts), state.num_processes)
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
