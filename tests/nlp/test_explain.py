"""Integrated-gradients explanations on a tiny model that learned which words carry the answer."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch

from nlp.explain import ExplainError, Explanation, explain, format_text, render_html, to_json
from nlp.inference import Classifier
from nlp.model import DualHeadClassifier

HEADLINE = "Oil plunges as refinery shuts"


@pytest.fixture(scope="module")
def model(headline_model_dir) -> DualHeadClassifier:
    return DualHeadClassifier.load(headline_model_dir)


@pytest.fixture(scope="module")
def explained(model) -> dict[str, Explanation]:
    return {task: explain(model, HEADLINE, task=task, steps=64) for task in ("sentiment", "topic")}


def test_the_negative_word_drives_the_negative_prediction(explained):
    sentiment = explained["sentiment"]
    assert (sentiment.label, sentiment.task, sentiment.text) == ("negative", "sentiment", HEADLINE)
    assert [word for word, _ in sentiment.tokens] == ["Oil", "plunges", "as", "refinery", "shuts"]
    assert max(sentiment.tokens, key=lambda item: item[1])[0] == "plunges"
    assert sentiment.top(1) == [("plunges", max(value for _, value in sentiment.tokens))]
    assert explained["topic"].label == "Energy | Oil"
    assert explained["topic"].top(1)[0][0] in {"Oil", "refinery"}


def test_attributions_add_up_to_the_logit_difference(explained):
    for item in explained.values():
        difference = item.logit - item.baseline_logit
        assert abs(difference) > 0.1
        assert abs(item.convergence_delta) < 0.05 * abs(difference)
        total = sum(value for _, value in item.tokens)
        assert total - difference == pytest.approx(item.convergence_delta, abs=1e-5)


def test_label_and_score_match_predict(model, explained, headline_model_dir):
    predictions = Classifier.load(headline_model_dir, device="cpu").predict([HEADLINE])
    for task, item in explained.items():
        assert item.label == getattr(predictions, task)[0]
        assert item.score == pytest.approx(
            float(getattr(predictions, f"{task}_score")[0]), abs=1e-5
        )


def test_word_pieces_merge_into_words_with_their_offsets(model):
    text = "S&amp;P refinery's shutsdownxyz, crude crash"
    item = explain(model, text, task="sentiment", steps=4)
    assert item.text == "S&P refinery's shutsdownxyz, crude crash"  # entities decoded once
    words = [word for word, _ in item.tokens]
    assert words == ["S", "&", "P", "refinery", "'", "s", "shutsdownxyz", ",", "crude", "crash"]
    assert [item.text[start:end] for start, end in item.spans] == words
    assert not item.truncated and item.windows == 1


def test_a_long_text_is_explained_over_its_windows(model, headline_model_dir):
    text = " ".join(["fed soars as traders say rally"] * 40)  # 240 tokens
    item = explain(model, text, task="sentiment", steps=16)
    assert item.windows == 3 and not item.truncated  # windows start at tokens 0, 94, 114
    assert len(item.tokens) == 240  # every word once, though windows overlap
    assert abs(item.convergence_delta) < 0.05 * abs(item.logit - item.baseline_logit)
    prediction = Classifier.load(headline_model_dir, device="cpu").predict([text])
    assert item.label == prediction.sentiment[0] == "positive"
    capped = explain(model, text, task="sentiment", steps=2, max_chunks=2)
    assert capped.windows == 2 and capped.truncated and len(capped.tokens) < 240


def test_gradients_stay_local(model):
    model.train()
    with torch.inference_mode():
        item = explain(model, HEADLINE, task="sentiment", steps=4)
    assert model.training  # mode restored
    model.eval()
    assert item.label == "negative"
    assert all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(headline_model_dir, explained):
    on_gpu = explain(
        DualHeadClassifier.load(headline_model_dir, device="cuda"),
        HEADLINE,
        task="sentiment",
        steps=64,
    )
    assert on_gpu.label == explained["sentiment"].label
    for (word, value), (cpu_word, cpu_value) in zip(
        on_gpu.tokens, explained["sentiment"].tokens, strict=True
    ):
        assert word == cpu_word and value == pytest.approx(cpu_value, abs=1e-3)


@pytest.mark.parametrize("text", ["", "   \n", "\u200b"])
def test_nothing_to_explain(model, text):
    with pytest.raises(ExplainError, match="nothing to explain"):
        explain(model, text, task="sentiment")


def test_bad_arguments(model):
    with pytest.raises(ExplainError, match="task must be one of"):
        explain(model, HEADLINE, task="emotion")
    with pytest.raises(ExplainError, match="steps"):
        explain(model, HEADLINE, task="topic", steps=0)
    assert issubclass(ExplainError, ValueError)


def test_text_json_and_html_renderings(model, explained):
    items = list(explained.values())
    text = format_text(items)
    assert "sentiment: negative (score" in text and "toward negative:" in text
    assert (
        "[+plunges]"
        in text.splitlines()[
            [i for i, line in enumerate(text.splitlines()) if "marked:" in line][0]
        ]
    )

    record = json.loads(to_json(items, model_version="v1"))
    assert record["text"] == HEADLINE and record["model_version"] == "v1"
    assert set(record) == {"text", "model_version", "sentiment", "topic"}
    assert record["sentiment"]["tokens"][1] == {
        "word": "plunges",
        "attribution": pytest.approx(items[0].tokens[1][1]),
        "start": 4,
        "end": 11,
    }
    assert "convergence_delta" in record["sentiment"] and "label" in record["topic"]

    nasty = explain(model, '<script>alert("x")</script> oil & crash', task="sentiment", steps=2)
    page = render_html([nasty], model_version="<v1>")
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page and "&lt;v1&gt;" in page
    paragraph = re.search(r'<p class="text">(.*)</p>', page).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", paragraph)) == nasty.text  # escaped, complete
    assert paragraph.count('<span class="w"') == len(nasty.tokens)
    assert 'title="crash: +' in page and "rgba(220, 38, 38" in page
    assert "http" not in page and "<link" not in page and "src=" not in page  # self-contained
