"""What training leaves next to the weights for people: plots and a model card.

- `confusion_<task>.png`: the dev confusion matrix of each head, row-normalised, with counts;
- `learning_curves.png`: training loss and dev macro-F1 per epoch (full mode) or the heads'
  loss per step (quick mode);
- `MODEL_CARD.md`: data, metrics, intended use and limits, and the provenance to trace a result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nlp.metrics import classification_report_text


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts (C, C): rows are true labels, columns predictions."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    path: str | os.PathLike, matrix: np.ndarray, labels: Sequence[str], *, title: str
) -> None:
    plt = _pyplot()
    shares = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)  # (C, C) row-normalised
    size = max(4.0, 0.45 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(labels) <= 25:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    color = "white" if shares[i, j] > 0.6 else "black"
                    axes.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6, color=color
                    )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true label")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_learning_curves(
    path: str | os.PathLike, history: Sequence[Mapping], *, title: str
) -> None:
    plt = _pyplot()
    x_key = "epoch" if history and "epoch" in history[0] else "step"
    xs = [row[x_key] for row in history]
    has_f1 = any(key.endswith("_dev_macro_f1") for key in (history[0] if history else {}))
    n_panels = 2 if has_f1 else 1
    figure, axes = plt.subplots(1, n_panels, figsize=(5.5 * n_panels, 4), squeeze=False)
    loss_axes = axes[0][0]
    for task in ("sentiment", "topic"):
        if history and f"{task}_loss" in history[0]:
            loss_axes.plot(
                xs, [row[f"{task}_loss"] for row in history], marker="o", markersize=3, label=task
            )
    loss_axes.set_xlabel(x_key)
    loss_axes.set_ylabel("training loss")
    loss_axes.legend()
    loss_axes.set_title(title)
    if has_f1:
        f1_axes = axes[0][1]
        for task in ("sentiment", "topic"):
            f1_axes.plot(
                xs,
                [row[f"{task}_dev_macro_f1"] for row in history],
                marker="o",
                markersize=3,
                label=task,
            )
        f1_axes.set_xlabel(x_key)
        f1_axes.set_ylabel("dev macro-F1")
        f1_axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def model_card(report: Mapping) -> str:
    """MODEL_CARD.md text from the training report."""
    config = report.get("config", {})
    rows = report.get("n_rows", {})
    lines = [
        f"# Model card: {report['model_version']}",
        "",
        "## What it is",
        f"A two-headed text classifier for finance news: one encoder (`{report['base']}`) and two",
        "linear heads over mean-pooled token states. One forward pass gives a **sentiment**",
        "(negative / neutral / positive) and a **topic**. Scores are probabilities calibrated by a",
        "temperature per head fitted on the dev split ("
        + ", ".join(f"{task} {t:.3f}" for task, t in report["temperatures"].items())
        + ").",
        f"Trained in {'quick (frozen encoder, heads only)' if report.get('quick') else 'full fine-tuning'} mode.",
        "",
        "## Intended use",
        "Scoring short finance texts (headlines, wire stories, posts; longer texts are read as",
        "overlapping windows) inside yuqing, to count and alert on negative news per topic. It is a",
        "monitoring signal for people, not a trading signal and not a basis for decisions about",
        "individuals.",
        "",
        "## Data",
    ]
    for task in ("sentiment", "topic"):
        n = rows.get(task, {})
        digest = report.get("data_sha256", {}).get(task, "")
        lines.append(
            f"- {task}: {n.get('total', '?')} labelled rows (train {n.get('train', '?')}, "
            f"dev {n.get('dev', '?')}), sha256 `{digest[:16]}…`"
        )
    lines += [
        f"- dev split: {config.get('dev_fraction')} of each task, stratified, split seed {config.get('split_seed')}",
        "",
        "## Dev metrics (calibrated)",
        "",
        "| task | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|",
    ]
    for task, metrics in report.get("dev", {}).items():
        lines.append(
            f"| {task} | {metrics['accuracy']:.4f} | {metrics['macro_f1']:.4f} | {metrics['ece']:.4f} |"
        )
    for task, metrics in report.get("dev", {}).items():
        lines += [
            "",
            f"### {task} per class",
            "",
            "```",
            classification_report_text(metrics),
            "```",
        ]
    lines += [
        "",
        "## Limits",
        "- Trained on English finance tweets (Twitter Financial News); other languages, long-form",
        "  research and other domains are out of distribution and will score worse.",
        "- Sentiment is about the market tone of the text, not about a named company's fundamentals.",
        "- The dev split was also used for early stopping and temperature fitting, so dev metrics",
        "  are slightly optimistic; measure on your own held-out labels with `yuqing eval`.",
        "- Rare topics (a few dozen training rows, e.g. IPO) have the noisiest per-class scores.",
        "",
        "## Provenance",
        f"- model version `{report['model_version']}`, created {report.get('created_at')}",
        f"- code version `{report.get('code_version')}`",
        f"- training config: `{ {k: v for k, v in config.items() if k != 'base'} }`",
        "",
    ]
    return "\n".join(lines)


def write_training_report(
    out_dir: str | os.PathLike,
    *,
    report: Mapping,
    history: Sequence[Mapping],
    dev: Mapping[str, tuple],
) -> list[str]:
    """Write the plots and the model card into `out_dir`; returns the file names written.

    `dev` maps task -> (true label ids (N,), predicted label ids (N,), label names).
    """
    out = Path(out_dir)
    written = []
    for task, (y_true, y_pred, labels) in dev.items():
        name = f"confusion_{task}.png"
        plot_confusion(
            out / name, confusion_matrix(y_true, y_pred, len(labels)), labels, title=f"{task} (dev)"
        )
        written.append(name)
    if history:
        plot_learning_curves(out / "learning_curves.png", history, title=report["model_version"])
        written.append("learning_curves.png")
    (out / "MODEL_CARD.md").write_text(model_card(report), encoding="utf-8")
    written.append("MODEL_CARD.md")
    return written
