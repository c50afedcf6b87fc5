"""Classification metrics, calibration error and temperature scaling, in numpy only."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # metrics stay numpy-only at run time
    import torch

logger = logging.getLogger(__name__)

ECE_BINS = 15
# Temperature search interval; a fitted value at either end means the logits are degenerate.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def classification_metrics(y_true: Sequence[str], probs: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, top-label ECE, per-class P/R/F1 of argmax(probs); column i is labels[i].

    Macro averages run over the labels that occur in y_true or in the predictions (as scikit-learn
    does without `labels=`), so a label absent from a small evaluation set does not count as F1 = 0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(labels)
    n_classes = len(labels)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(f"probs must have shape (N, {n_classes}), got {probs.shape}")
    if len(y_true) != len(probs):
        raise ValueError(f"{len(y_true)} true labels but {len(probs)} rows of probabilities")
    if len(probs) == 0:
        raise ValueError("no examples to score")
    label_index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(label) for label in y_true} - set(label_index))
    if unknown:
        raise ValueError(f"labels not known to the model: {unknown}; model knows: {labels}")

    true_ids = np.array([label_index[label] for label in y_true])  # (N,)
    pred_ids = probs.argmax(axis=1)  # (N,)
    confidence = probs.max(axis=1)  # (N,)
    confusion = np.bincount(
        true_ids * n_classes + pred_ids, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)  # (C true, C predicted)
    true_positive = np.diag(confusion).astype(np.float64)  # (C,)
    support = confusion.sum(axis=1)  # (C,)
    predicted = confusion.sum(axis=0)  # (C,)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)

    return {
        "n": len(true_ids),
        "accuracy": float((pred_ids == true_ids).mean()),
        "macro_f1": float(f1[present].mean()),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "ece": expected_calibration_error(confidence, pred_ids == true_ids),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = ECE_BINS
) -> float:
    """Top-label ECE: sum over equal-width bins (lo, hi] of bin share * |accuracy - confidence|."""
    confidence = np.asarray(confidence, dtype=np.float64)  # (N,)
    correct = np.asarray(correct, dtype=np.float64)  # (N,)
    bin_ids = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)  # (N,)
    confidence_sum = np.bincount(bin_ids, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bin_ids, weights=correct, minlength=n_bins)
    return float(np.abs(correct_sum - confidence_sum).sum() / max(len(confidence), 1))


def classification_report_text(metrics: dict) -> str:
    """A plain-text table in the layout of scikit-learn's classification_report, plus ECE."""
    per_class = metrics["per_class"]
    name_width = max([len(name) for name in per_class] + [len("weighted avg")])
    header = f"{'':>{name_width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"
    lines = [header, ""]
    for name, row in per_class.items():
        lines.append(_report_row(name, row, name_width=name_width))
    total = metrics["n"]
    weights = np.array([row["support"] for row in per_class.values()], dtype=np.float64) / total
    weighted = {
        key: float(sum(w * row[key] for w, row in zip(weights, per_class.values(), strict=True)))
        for key in ("precision", "recall", "f1")
    }
    macro = {
        "precision": metrics.get("macro_precision", float("nan")),
        "recall": metrics.get("macro_recall", float("nan")),
        "f1": metrics["macro_f1"],
    }
    lines += [
        "",
        f"{'accuracy':>{name_width}}  {'':>9}  {'':>9}  {metrics['accuracy']:>9.4f}  {total:>9}",
        _report_row("macro avg", {**macro, "support": total}, name_width=name_width),
        _report_row("weighted avg", {**weighted, "support": total}, name_width=name_width),
        "",
        f"{'ECE':>{name_width}}  {'':>9}  {'':>9}  {metrics['ece']:>9.4f}  {total:>9}",
    ]
    return "\n".join(lines) + "\n"


def fit_temperature(logits: np.ndarray | torch.Tensor, y: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on y (dev set).

    The NLL is convex in 1/T, hence unimodal in log T, so a golden-section search on log T over
    [MIN_TEMPERATURE, MAX_TEMPERATURE] finds the optimum deterministically without gradients.
    Accepts a numpy array or a torch tensor of shape (N, C) and integer class ids y of shape (N,).
    """
    if hasattr(logits, "detach"):  # a torch tensor; converted without importing torch here
        logits = logits.detach().float().cpu().numpy()
    logits = np.asarray(logits, dtype=np.float64)  # (N, C)
    y = np.asarray(y, dtype=np.int64)  # (N,)
    if len(y) == 0:
        return 1.0
    true_logit = logits[np.arange(len(y)), y]  # (N,)

    def nll(log_temperature: float) -> float:
        scaled = logits / math.exp(log_temperature)  # (N, C)
        peak = scaled.max(axis=1)  # (N,)
        log_normalizer = peak + np.log(np.exp(scaled - peak[:, None]).sum(axis=1))  # (N,)
        return float((log_normalizer - true_logit / math.exp(log_temperature)).mean())

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    nll_left, nll_right = nll(left), nll(right)
    while high - low > 1e-6:
        if nll_left < nll_right:
            high, right, nll_right = right, left, nll_left
            left = high - ratio * (high - low)
            nll_left = nll(left)
        else:
            low, left, nll_left = left, right, nll_right
            right = low + ratio * (high - low)
            nll_right = nll(right)
    temperature = math.exp((low + high) / 2)
    if not MIN_TEMPERATURE * 1.01 < temperature < MAX_TEMPERATURE / 1.01:
        logger.warning("fitted temperature %.3g sits at the edge of the search range", temperature)
    return temperature


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _report_row(name: str, row: dict, *, name_width: int) -> str:
    return (
        f"{name:>{name_width}}  {row['precision']:>9.4f}  {row['recall']:>9.4f}  "
        f"{row['f1']:>9.4f}  {row['support']:>9}"
    )
