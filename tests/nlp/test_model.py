import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import nlp.model
from nlp.model import (
    DEFAULT_BASE,
    MODEL_CONFIG_FILE,
    DualHeadClassifier,
    ModelError,
    is_model_dir,
    pad_token_ids,
    prepare_texts,
    resolve_base,
)

SENTIMENT = ["negative", "neutral", "positive"]
TOPIC = ["Energy | Oil", "Fed | Central Banks", "Macro"]


def test_resolve_base():
    packaged = Path(resolve_base(DEFAULT_BASE))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (packaged / name).is_file()
    assert resolve_base("all-MiniLM-L6-v2") == str(packaged)
    assert resolve_base("someone/other-model") == "someone/other-model"


def test_prepare_texts_decodes_html_entities():
    assert prepare_texts(["S&amp;P 500 &gt; 5000", None, float("nan"), pd.NA, 42]) == [
        "S&P 500 > 5000",
        "",
        "",
        "",
        "42",
    ]


def test_pad_token_ids_pads_to_multiple_of_8():
    input_ids, attention_mask = pad_token_ids(
        [[101, 7, 102], [101] + [5] * 9 + [102]], pad_token_id=0
    )
    assert input_ids.shape == attention_mask.shape == (2, 16)
    assert attention_mask.sum(dim=1).tolist() == [3, 11]
    assert input_ids[0, :3].tolist() == [101, 7, 102] and input_ids[0, 3:].eq(0).all()


@pytest.fixture
def tiny_model(tiny_base) -> DualHeadClassifier:
    torch.manual_seed(0)
    model = DualHeadClassifier.from_base(tiny_base, sentiment_labels=SENTIMENT, topic_labels=TOPIC)
    model.set_temperature("sentiment", 1.5)
    model.set_temperature("topic", 0.7)
    return model.eval()


def test_forward_gives_both_heads(tiny_model):
    input_ids, attention_mask = pad_token_ids(
        tiny_model.tokenize(["Oil jumps", "Fed hikes"]), pad_token_id=0
    )
    logits = tiny_model(input_ids, attention_mask)
    assert logits["sentiment"].shape == (2, 3) and logits["topic"].shape == (2, 3)


def test_embed_precision_switch(tiny_model):
    """bf16=False is full fp32 (no autocast, TF32 off during the forward, restored after), the
    default off CUDA; bf16=True runs under bf16 autocast on any device."""
    token_ids = tiny_model.tokenize(["Oil jumps as OPEC cuts", "Fed hikes", "Bank shares slide"])
    seen = []
    hook = tiny_model.encoder.register_forward_hook(
        lambda *_: seen.append(
            (torch.is_autocast_enabled("cpu"), torch.backends.cuda.matmul.allow_tf32)
        )
    )
    matmul = torch.backends.cuda.matmul
    saved, matmul.allow_tf32 = matmul.allow_tf32, True
    try:
        default = tiny_model.embed(token_ids)
        exact = tiny_model.embed(token_ids, bf16=False)
        low = tiny_model.embed(token_ids, bf16=True)
        assert matmul.allow_tf32 is True  # the caller's setting, restored
    finally:
        matmul.allow_tf32 = saved
        hook.remove()  # the fixture's model is shared with later tests
    assert seen == [(False, False), (False, False), (True, True)]
    assert torch.equal(default, exact) and default.dtype == low.dtype == torch.float32
    assert 0 < (low - exact).abs().max() < 0.1  # bf16 moves the vectors, a little


def test_save_load_round_trip(tiny_model, tmp_path):
    model_dir = tmp_path / "model"
    version = tiny_model.save(model_dir, metadata={"quick": True}, extra_files={"note.txt": "hi"})
    assert version.startswith("bert-") and len(version) == len("bert-") + 10
    config = json.loads((model_dir / MODEL_CONFIG_FILE).read_text())
    assert config["model_version"] == version and config["quick"] is True
    assert config["sentiment_labels"] == SENTIMENT and config["topic_labels"] == TOPIC
    assert config["temperatures"] == {"sentiment": 1.5, "topic": pytest.approx(0.7)}
    assert config["pooling"] == "mean" and config["max_length"] == 128
    assert (model_dir / "encoder" / "config.json").is_file()
    assert (model_dir / "encoder" / "tokenizer.json").is_file()
    assert (model_dir / "heads.safetensors").is_file() and (
        model_dir / "note.txt"
    ).read_text() == "hi"

    loaded = DualHeadClassifier.load(model_dir)
    assert loaded.model_version == version == loaded.current_version()
    assert loaded.labels("topic") == TOPIC and loaded.temperature("topic") == pytest.approx(0.7)
    ids = tiny_model.tokenize(["Oil jumps 5% &amp; more", "Fed"])
    torch.testing.assert_close(loaded.embed(ids), tiny_model.embed(ids))
    input_ids, attention_mask = pad_token_ids(ids, pad_token_id=0)
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded(input_ids, attention_mask), tiny_model(input_ids, attention_mask)
        )


def test_load_rejects_non_model_dirs(tmp_path):
    with pytest.raises(ModelError, match="not a yuqing model directory"):
        DualHeadClassifier.load(tmp_path)
    (tmp_path / MODEL_CONFIG_FILE).write_text('{"base": "x"}')
    with pytest.raises(ModelError, match="lacks"):
        DualHeadClassifier.load(tmp_path)


def test_save_refuses_to_overwrite_other_folders(tiny_model, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="refusing to overwrite"):
        tiny_model.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_crash_mid_save_leaves_no_valid_looking_dir(tiny_model, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    first_version = tiny_model.save(model_dir)
    with torch.no_grad():
        tiny_model.heads["topic"].bias.add_(1.0)  # a different model to save over the first

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nlp.model, "save_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_model.save(model_dir)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_model.save(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging leftovers
    assert DualHeadClassifier.load(model_dir).model_version == first_version  # old model intact

    monkeypatch.undo()
    second_version = tiny_model.save(model_dir)  # overwriting a model dir is allowed
    assert second_version != first_version and is_model_dir(model_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
