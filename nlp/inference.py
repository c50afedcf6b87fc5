"""Batch inference with a saved dual-head model: texts -> calibrated sentiment and topic.

Texts are processed in streaming chunks (bounded memory for any input size); inside a chunk they
are sorted by token length and padded per batch (to a multiple of 8); results keep input order.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState

from nlp.data import DataError
from nlp.metrics import classification_metrics
from nlp.model import TASKS, DualHeadClassifier

logger = logging.getLogger(__name__)

CHUNK_SIZE = 4096  # texts tokenized and scored together; bounds memory for huge inputs


@dataclass
class Predictions:
    sentiment: np.ndarray  # (N,) object: label names
    sentiment_score: np.ndarray  # (N,) float32: calibrated probability of the chosen label
    sentiment_probs: np.ndarray  # (N, n_sentiment) float32
    topic: np.ndarray  # (N,) object
    topic_score: np.ndarray  # (N,) float32
    topic_probs: np.ndarray  # (N, n_topic) float32

    def __len__(self) -> int:
        return len(self.sentiment)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "sentiment": self.sentiment,
                "sentiment_score": self.sentiment_score,
                "topic": self.topic,
                "topic_score": self.topic_score,
            }
        )


class Classifier:
    """A loaded model ready to score texts."""

    def __init__(self, *, model: DualHeadClassifier, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.sentiment_labels = model.sentiment_labels
        self.topic_labels = model.topic_labels
        self.model_version = model.model_version

    @classmethod
    def load(cls, model_dir: str | os.PathLike, *, device: str | None = None) -> Classifier:
        """Load a model directory onto `device`, or where accelerate places this process."""
        device = torch.device(device) if device is not None else PartialState().device
        model = DualHeadClassifier.load(model_dir, device=device)
        logger.info("loaded model %s from %s on %s", model.model_version, model_dir, device)
        return cls(model=model, device=device)

    def predict(self, texts: Iterable[str], *, batch_size: int = 64) -> Predictions:
        """Calibrated predictions for every text, in input order; empty input gives empty arrays."""
        probs = {task: [] for task in TASKS}
        texts = iter(texts)
        while chunk := list(itertools.islice(texts, CHUNK_SIZE)):
            token_ids = self.model.tokenize(chunk)
            pooled = self.model.embed(token_ids, batch_size=batch_size)  # (n, H), input order
            with torch.inference_mode():
                logits = self.model.classify(pooled.to(self.device))
                for task, task_probs in self.model.probabilities(logits).items():
                    probs[task].append(task_probs.cpu().numpy())  # (n, C)
        return self._predictions(probs)

    def _predictions(self, probs: dict[str, list[np.ndarray]]) -> Predictions:
        fields = {}
        for task in TASKS:
            labels = np.array(self.model.labels(task), dtype=object)
            task_probs = (
                np.concatenate(probs[task]).astype(np.float32)
                if probs[task]
                else np.zeros((0, len(labels)), dtype=np.float32)
            )  # (N, C)
            chosen = task_probs.argmax(axis=1)  # (N,)
            fields[task] = labels[chosen]
            fields[f"{task}_score"] = task_probs[np.arange(len(chosen)), chosen]
            fields[f"{task}_probs"] = task_probs
        return Predictions(**fields)


class UnknownLabelError(DataError):
    """Evaluation data holds labels that the model was not trained on."""


def evaluate(classifier: Classifier, frame: pd.DataFrame, *, task: str) -> dict:
    """Metrics of one head on a labeled `text,label` frame (calibrated probabilities)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    missing = [column for column in ("text", "label") if column not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(frame.columns)}")
    if frame.empty:
        raise DataError("no rows to evaluate")
    known = classifier.model.labels(task)
    unknown = sorted(set(frame["label"].astype(str)) - set(known))
    if unknown:
        raise UnknownLabelError(f"labels not known to the model: {unknown}; model knows: {known}")
    predictions = classifier.predict(frame["text"].tolist())
    metrics = classification_metrics(
        frame["label"].astype(str).tolist(), getattr(predictions, f"{task}_probs"), known
    )
    return {**metrics, "task": task, "model_version": classifier.model_version}
