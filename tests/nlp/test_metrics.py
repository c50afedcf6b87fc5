import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from nlp.metrics import (
    classification_metrics,
    classification_report_text,
    expected_calibration_error,
    fit_temperature,
)

LABELS = ["bear", "bull", "flat", "rare"]


def _random_case(seed: int, n: int = 500):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(LABELS)), size=n)  # (N, C)
    y_true = [LABELS[i] for i in rng.integers(0, len(LABELS), size=n)]
    return y_true, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn(seed):
    y_true, probs = _random_case(seed)
    y_pred = [LABELS[i] for i in probs.argmax(axis=1)]
    metrics = classification_metrics(y_true, probs, LABELS)
    assert metrics["n"] == len(y_true)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=LABELS, zero_division=0
    )
    for i, label in enumerate(LABELS):
        row = metrics["per_class"][label]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]


def test_macro_f1_skips_labels_absent_from_truth_and_predictions():
    y_true, probs = _random_case(3)
    probs[:, 3] = 0.0  # "rare" is never predicted ...
    keep = [i for i, label in enumerate(y_true) if label != "rare"]  # ... and never true
    y_true, probs = [y_true[i] for i in keep], probs[keep]
    y_pred = [LABELS[i] for i in probs.argmax(axis=1)]
    metrics = classification_metrics(y_true, probs, LABELS)
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["per_class"]["rare"]["support"] == 0


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.35, 0.65]])
    y_true = ["a", "b", "b", "b"]
    # bin (13/15, 14/15]: 2 rows, accuracy 0.5, confidence 0.9 -> 2/4 * 0.4 = 0.2
    # bin (10/15, 11/15]: 1 row, accuracy 1, confidence 0.7 -> 1/4 * 0.3 = 0.075
    # bin (9/15, 10/15]: 1 row, accuracy 1, confidence 0.65 -> 1/4 * 0.35 = 0.0875
    metrics = classification_metrics(y_true, probs, ["a", "b"])
    assert metrics["ece"] == pytest.approx(0.3625)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(["a"], np.ones((1, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"labels not known to the model: \['zzz'\]"):
        classification_metrics(["zzz"], np.ones((1, 2)) / 2, ["a", "b"])


def test_report_text_lists_labels_and_averages():
    y_true, probs = _random_case(4)
    text = classification_report_text(classification_metrics(y_true, probs, LABELS))
    for word in [*LABELS, "precision", "accuracy", "macro avg", "weighted avg", "ECE"]:
        assert word in text


def _synthetic_logits(temperature: float, *, n: int = 20000, n_classes: int = 5, seed: int = 0):
    """Logits `temperature` times sharper than the distribution the labels were drawn from."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(scale=2.0, size=(n, n_classes))  # (N, C)
    true_probs = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    y = (rng.random(n)[:, None] > true_probs.cumsum(axis=1)).sum(axis=1)  # (N,) sampled ids
    return true_logits * temperature, y


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_value(temperature):
    logits, y = _synthetic_logits(temperature)
    assert fit_temperature(logits, y) == pytest.approx(temperature, rel=0.05)


def test_fit_temperature_accepts_torch_and_empty():
    logits, y = _synthetic_logits(2.0, n=5000)
    assert fit_temperature(torch.tensor(logits, dtype=torch.float32), y) == pytest.approx(
        2.0, rel=0.1
    )
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
