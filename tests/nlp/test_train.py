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


def test_layer_wise_lr_decay_groups(tiny_base):
    from nlp.model import DualHeadClassifier
    from nlp.train import _parameter_groups

    model = DualHeadClassifier.from_base(tiny_base, sentiment_labels=["a", "b"], topic_labels=["x"])
    config = TrainConfig(base=tiny_base, lr=1e-3, layer_decay=0.5)
    groups = _parameter_groups(model, config)
    n_layers = model.encoder.config.num_hidden_layers  # 2
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.heads["sentiment"].weight)] == pytest.approx(1e-3)
    layer0 = model.encoder.encoder.layer[0].attention.self.query.weight
    assert lr_of[id(layer0)] == pytest.approx(1e-3 * 0.5**n_layers)
    embeddings = model.encoder.embeddings.word_embeddings.weight
    assert lr_of[id(embeddings)] == pytest.approx(1e-3 * 0.5 ** (n_layers + 1))
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(model.heads["topic"].bias)] == 0.0 and decay_of[id(layer0)] > 0
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters())


def test_class_weights_and_symmetric_kl():
    import torch

    from nlp.train import _class_weights, _symmetric_kl

    targets = torch.tensor([0] * 90 + [1] * 10)
    weights = _class_weights(targets, n_classes=3, power=0.5)
    assert weights[1] / weights[0] == pytest.approx(3.0)  # sqrt(90 / 10)
    assert weights[targets].mean() == pytest.approx(1.0)
    assert torch.equal(_class_weights(targets, n_classes=2, power=0.0), torch.ones(2))
    logits = torch.randn(4, 3)
    assert _symmetric_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert _symmetric_kl(logits, -logits).item() > 0.1


def test_full_mode_with_every_recipe_option(tmp_path, tiny_base, small_frames):
    frames = {task: frame.iloc[:120] for task, frame in small_frames.items()}
    config = TrainConfig(
        base=tiny_base, epochs=1, batch_size=16, lr=1e-3, layer_decay=0.8, label_smoothing=0.1,
        rdrop_alpha=1.0, class_weight_power=0.5, sentiment_weight=2.0, split_seed=5, seed=7,
    )  # fmt: skip
    report = train(**frames, out_dir=tmp_path / "recipe", config=config)
    assert report["config"]["rdrop_alpha"] == 1.0
    dev = np.load(tmp_path / "recipe" / "dev_predictions.npz")
    assert dev["sentiment_logits"].shape[0] == dev["sentiment_target"].shape[0] > 0


def test_split_seed_keeps_the_dev_set_across_training_seeds(tmp_path, tiny_base, small_frames):
    frames = {task: frame.iloc[:100] for task, frame in small_frames.items()}
    targets = []
    for seed in (1, 2):
        config = TrainConfig(base=tiny_base, quick=True, quick_steps=5, seed=seed, split_seed=3)
        train(**frames, out_dir=tmp_path / f"s{seed}", config=config)
        targets.append(np.load(tmp_path / f"s{seed}" / "dev_predictions.npz")["topic_target"])
    np.testing.assert_array_equal(targets[0], targets[1])


def test_training_leaves_plots_and_a_model_card(tmp_path, tiny_base, small_frames):
    import json

    from nlp.report import confusion_matrix

    frames = {task: frame.iloc[:120] for task, frame in small_frames.items()}
    config = TrainConfig(base=tiny_base, epochs=2, batch_size=16, lr=1e-3, rdrop_alpha=0.0)
    out = tmp_path / "card"
    report = train(**frames, out_dir=out, config=config)
    for name in ("confusion_sentiment.png", "confusion_topic.png", "learning_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    card = (out / "MODEL_CARD.md").read_text()
    assert report["model_version"] in card and "## Intended use" in card and "## Limits" in card
    assert f"{report['dev']['sentiment']['accuracy']:.4f}" in card
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"sentiment_loss", "topic_loss", "sentiment_dev_macro_f1"} <= history[0].keys()
    matrix = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_quick_training_curves_are_per_step(quick_run):
    model_dir, report = quick_run
    assert report["history"][0]["step"] == 1 and "topic_loss" in report["history"][-1]
    assert (model_dir / "learning_curves.png").is_file() and (model_dir / "MODEL_CARD.md").is_file()


def _tiny_frames(small_frames, n=150):
    return {task: frame.iloc[:n] for task, frame in small_frames.items()}


def test_domain_adaptation_then_fine_tune(tmp_path, tiny_base, small_frames):
    from nlp.dapt import is_adapted

    config = TrainConfig(
        base=tiny_base, epochs=1, batch_size=16, lr=1e-3, dapt_epochs=2, dapt_lr=1e-3,
        checkpoint_dir=str(tmp_path / "ckpt"),
    )  # fmt: skip
    report = train(
        **_tiny_frames(small_frames),
        out_dir=tmp_path / "adapted",
        config=config,
        unlabeled=["Oil slumps as OPEC+ output rises"] * 40,
    )
    history = report["dapt"]["history"]
    assert len(history) == 2 and history[1]["mlm_loss"] < history[0]["mlm_loss"]
    # the training texts of both tasks (not dev) plus the unlabeled ones
    assert report["dapt"]["texts"] == (
        report["n_rows"]["sentiment"]["train"] + report["n_rows"]["topic"]["train"] + 40
    )
    assert report["timings"]["dapt_s"] > 0
    assert is_adapted(tmp_path / "ckpt" / "dapt")
    config_file = json.loads((tmp_path / "adapted" / MODEL_CONFIG_FILE).read_text())
    assert config_file["base"] == tiny_base and "dapt" in config_file
    # the fine-tuned encoder differs from the base it started from
    from transformers import AutoModel

    before = AutoModel.from_pretrained(tiny_base).embeddings.word_embeddings.weight
    after = Classifier.load(tmp_path / "adapted", device="cpu").model.encoder
    assert not np.allclose(
        before.detach().numpy(), after.embeddings.word_embeddings.weight.detach().numpy()
    )


def test_distillation_follows_the_teacher_on_texts_it_has_no_labels_for(
    tmp_path, tiny_base, small_frames, quick_run
):
    teacher_dir, _ = quick_run
    frames = _tiny_frames(small_frames, 120)
    common = dict(base=tiny_base, epochs=3, batch_size=16, lr=2e-3, rdrop_alpha=0.0, patience=3)
    report = train(
        **frames,
        out_dir=tmp_path / "student",
        config=TrainConfig(teachers=(str(teacher_dir),), distill_alpha=5.0, **common),
    )
    assert report["distilled_from"] == [str(teacher_dir)]
    assert report["timings"]["teachers_s"] > 0
    control = train(**frames, out_dir=tmp_path / "control", config=TrainConfig(**common))
    assert "distilled_from" not in control

    # the topic texts carry no sentiment labels: the student learned them from the teacher
    texts = list(frames["topic"]["text"])
    teacher = Classifier.load(teacher_dir, device="cpu").predict(texts).sentiment_probs

    def kl_from_teacher(model_dir):
        student = Classifier.load(model_dir, device="cpu").predict(texts).sentiment_probs
        return float(np.mean(np.sum(teacher * np.log(teacher / student), axis=1)))

    assert kl_from_teacher(tmp_path / "student") < 0.8 * kl_from_teacher(tmp_path / "control")


def test_distillation_rejects_a_teacher_with_other_labels(
    tmp_path, tiny_base, small_frames, quick_run
):
    from nlp.data import DataError

    frames = _tiny_frames(small_frames, 60)
    frames["sentiment"] = frames["sentiment"].assign(
        label=frames["sentiment"]["label"].replace({"neutral": "mixed"})
    )
    with pytest.raises(DataError, match="teacher"):
        train(
            **frames,
            out_dir=tmp_path / "bad",
            config=TrainConfig(base=tiny_base, epochs=1, teachers=(str(quick_run[0]),)),
        )


def test_resume_continues_after_the_last_finished_epoch(tmp_path, tiny_base, small_frames):
    frames = _tiny_frames(small_frames)
    common = dict(base=tiny_base, batch_size=16, lr=1e-3, patience=5, rdrop_alpha=0.0,
                  checkpoint_dir=str(tmp_path / "ckpt"))  # fmt: skip
    first = train(**frames, out_dir=tmp_path / "one", config=TrainConfig(epochs=1, **common))
    assert json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())["epoch"] == 1
    resumed = train(
        **frames, out_dir=tmp_path / "two", config=TrainConfig(epochs=3, resume=True, **common)
    )
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][0] == first["history"][0]  # epoch 1 was not trained again
    assert json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())["epoch"] == 3


def test_finance_normalization_replaces_links_and_is_recorded(tmp_path, quick_run):
    from nlp.model import prepare_texts

    assert prepare_texts(["$TSLA  falls https://t.co/AbC123 &amp; more"], "finance") == [
        "$TSLA falls http & more"
    ]
    assert prepare_texts(["see www.example.com/x"], "none") == ["see www.example.com/x"]
    config = json.loads((quick_run[0] / MODEL_CONFIG_FILE).read_text())
    assert config["normalization"] == TrainConfig().normalization
    model = Classifier.load(quick_run[0], device="cpu").model
    model.normalization = "none"
    assert model.tokenize(["up https://t.co/zzz"]) != model.tokenize(["up http"])
    model.normalization = "finance"
    assert model.tokenize(["up https://t.co/zzz"]) == model.tokenize(["up http"])
