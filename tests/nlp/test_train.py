import json

import numpy as np
import pytest

from nlp.inference import Classifier
from nlp.model import MODEL_CONFIG_FILE
from nlp.train import TrainConfig, train

METRIC_KEYS = {"n", "accuracy", "macro_f1", "ece", "per_class"}


def test_quick_train_writes_a_complete_model_dir(quick_run, small_frames):
    model_dir, report = quick_run
    assert {p.name for p in model_dir.iterdir()} >= {
        "encoder",
        "heads.safetensors",
        MODEL_CONFIG_FILE,
        "metrics.json",
        "report.txt",
    }
    for task in ("sentiment", "topic"):
        assert set(report["dev"][task]) >= METRIC_KEYS
        rows = report["n_rows"][task]
        assert rows["total"] == len(small_frames[task]) == rows["train"] + rows["dev"]
        assert report["temperatures"][task] > 0
    assert report["quick"] is True and report["timings"]["total_s"] > 0

    config = json.loads((model_dir / MODEL_CONFIG_FILE).read_text())
    for key in (
        "base",
        "data_sha256",
        "n_rows",
        "dev",
        "created_at",
        "code_version",
        "quick",
        "model_version",
        "temperatures",
        "max_length",
        "pooling",
    ):
        assert key in config, key
    assert config["model_version"] == report["model_version"]
    assert config["temperatures"] == pytest.approx(report["temperatures"])
    assert json.loads((model_dir / "metrics.json").read_text())["dev"] == report["dev"]
    assert "macro avg" in (model_dir / "report.txt").read_text()


def test_quick_train_caps_training_rows_not_dev_rows(tmp_path, tiny_base, small_frames, quick_run):
    report = train(
        **small_frames,
        out_dir=tmp_path / "capped",
        config=TrainConfig(base=tiny_base, quick=True, quick_max_rows=100, quick_steps=20),
    )
    for task in ("sentiment", "topic"):
        # stratified rounding keeps >= 1 row per label, so the cap is approximate
        assert 90 <= report["n_rows"][task]["train"] <= 120
        assert report["n_rows"][task]["dev"] == quick_run[1]["n_rows"][task]["dev"]


def test_quick_train_is_deterministic(tmp_path, tiny_base, small_frames, quick_run):
    report = train(
        **small_frames, out_dir=tmp_path / "again", config=TrainConfig(base=tiny_base, quick=True)
    )
    assert report["model_version"] == quick_run[1]["model_version"]


def test_full_mode_one_epoch(tmp_path, tiny_base, small_frames):
    frames = {task: frame.iloc[:150] for task, frame in small_frames.items()}
    report = train(
        **frames,
        out_dir=tmp_path / "full",
        config=TrainConfig(base=tiny_base, quick=False, epochs=1, batch_size=16, lr=1e-3),
    )
    assert report["quick"] is False
    for task in ("sentiment", "topic"):
        assert set(report["dev"][task]) >= METRIC_KEYS
    classifier = Classifier.load(tmp_path / "full", device="cpu")
    assert classifier.model_version == report["model_version"]
    predictions = classifier.predict(frames["topic"]["text"].tolist()[:20])
    assert len(predictions) == 20
    np.testing.assert_allclose(predictions.topic_probs.sum(axis=1), 1.0, rtol=1e-5)


def test_bad_config_and_data_fail_early(tmp_path, tiny_base, small_frames):
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]"):
        train(
            sentiment=small_frames["sentiment"].drop(columns="label"),
            topic=small_frames["topic"],
            out_dir=tmp_path / "never",
            config=TrainConfig(base=tiny_base, quick=True),
        )
    assert not (tmp_path / "never").exists()
