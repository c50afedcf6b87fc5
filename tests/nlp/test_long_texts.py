"""Texts longer than the encoder's window: overlapping windows, weighted logit mean, the cap."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import nlp.inference
from nlp.inference import Classifier, TextWindows
from nlp.model import pad_token_ids
from tests.conftest import SENTIMENT_WORDS, TOPIC_WORDS
from tests.nlp.conftest import HEADLINE_FILLER

SENTENCE = "oil plunges as refinery shuts"


@pytest.fixture(scope="module")
def classifier(headline_model_dir) -> Classifier:
    return Classifier.load(headline_model_dir, device="cpu")


def article(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocabulary = [
        *HEADLINE_FILLER,
        *(w for ws in SENTIMENT_WORDS.values() for w in ws),
        *(w for ws in TOPIC_WORDS.values() for w in ws),
    ]
    return " ".join(rng.choice(vocabulary) for _ in range(n_words))


def n_windows(classifier: Classifier, text: str) -> int:
    return len(classifier.windows.split([text]))


def test_window_bounds_cover_the_text_with_overlap(classifier):
    windows = classifier.windows
    assert (windows.size, windows.step) == (126, 94)  # 128 - CLS - SEP, 25% overlap
    assert windows.bounds(0) == [(0, 0)] and windows.bounds(126) == [(0, 126)]
    for n_tokens in (127, 220, 221, 1000, windows.max_tokens):
        bounds = windows.bounds(n_tokens)
        assert bounds[0][0] == 0 and bounds[-1][1] == n_tokens  # the whole text, in order
        assert all(end - start == windows.size for start, end in bounds)  # every window full
        for (start, end), (next_start, _) in zip(bounds, bounds[1:], strict=False):
            assert start < next_start <= end - (windows.size - windows.step)  # overlap >= 32
    assert len(windows.bounds(10**6)) == 64 and windows.bounds(10**6)[-1][1] == windows.max_tokens


def test_window_token_ids_and_weights(classifier):
    tokenizer = classifier.model.tokenizer
    text = article(600)
    windows = classifier.windows.split(["fed soars", text, "", text[:200]])
    full = tokenizer(text)["input_ids"]
    long_rows = np.flatnonzero(windows.doc == 1)
    assert len(long_rows) > 1 and set(windows.doc.tolist()) == {0, 1, 2, 3}
    assert np.all(np.diff(windows.doc) >= 0)  # documents in order
    for row in long_rows:
        ids = windows.token_ids[row]
        assert (
            len(ids) == 128
            and ids[0] == tokenizer.cls_token_id
            and ids[-1] == tokenizer.sep_token_id
        )
    # windows stitched together without their overlap give back the whole text
    content = [windows.token_ids[row][1:-1] for row in long_rows]
    bounds = classifier.windows.bounds(len(full) - 2)
    stitched = list(content[0])
    for (_, previous_end), (start, _), ids in zip(bounds, bounds[1:], content[1:], strict=False):
        stitched += ids[previous_end - start :]
    assert stitched == full[1:-1]
    np.testing.assert_allclose(np.bincount(windows.doc, weights=windows.weight), 1.0, rtol=1e-6)
    assert windows.token_ids[0] == tokenizer("fed soars")["input_ids"]


def test_a_5000_word_article_gets_one_calibrated_prediction(classifier):
    text = article(5000)
    assert 20 < n_windows(classifier, text) <= 64
    predictions = classifier.predict([text])
    assert len(predictions) == 1
    for task in ("sentiment", "topic"):
        np.testing.assert_allclose(getattr(predictions, f"{task}_probs").sum(axis=1), 1.0, 1e-5)


def test_short_texts_score_as_the_plain_forward_pass(classifier):
    model = classifier.model
    texts = [SENTENCE, "fed soars rally", "S&amp;P earnings", "", " ".join(["crude"] * 126)]
    assert [n_windows(classifier, text) for text in texts] == [1] * len(texts)
    assert n_windows(classifier, " ".join(["crude"] * 127)) == 2  # one token over the window
    input_ids, attention_mask = pad_token_ids(
        model.tokenize(texts), pad_token_id=model.tokenizer.pad_token_id
    )
    with torch.inference_mode():
        expected = model.probabilities(model(input_ids, attention_mask))
    predictions = classifier.predict(texts)
    for task in ("sentiment", "topic"):
        np.testing.assert_allclose(
            getattr(predictions, f"{task}_probs"), expected[task].numpy(), atol=1e-6
        )


def test_a_repeated_sentence_reads_like_the_sentence(classifier):
    one_window = " ".join([SENTENCE] * 18)  # 126 tokens
    long = " ".join([SENTENCE] * 400)  # about 2,800 tokens
    assert n_windows(classifier, one_window) == 1 and n_windows(classifier, long) > 20
    predictions = classifier.predict([SENTENCE, one_window, long])
    assert list(predictions.sentiment) == ["negative"] * 3
    assert list(predictions.topic) == ["Energy | Oil"] * 3
    for task in ("sentiment", "topic"):
        probs = getattr(predictions, f"{task}_probs")
        np.testing.assert_allclose(probs[2], probs[0], atol=0.02)
        np.testing.assert_allclose(probs[2], probs[1], atol=0.02)


def test_order_is_kept_when_long_and_short_texts_mix(classifier, monkeypatch):
    texts = [
        SENTENCE,
        article(900, seed=1),
        "fed soars rally",
        "",
        article(400, seed=2),
        "earnings beats",
        article(2000, seed=3),
    ]
    one_by_one = [classifier.predict([text]) for text in texts]
    monkeypatch.setattr(nlp.inference, "CHUNK_SIZE", 3)  # several streaming groups ...
    monkeypatch.setattr(nlp.inference, "CHUNK_CHARS", 3000)  # ... split again by characters
    together = classifier.predict(iter(texts), batch_size=4)
    for task in ("sentiment", "topic"):
        expected = np.concatenate([getattr(p, f"{task}_probs") for p in one_by_one])
        np.testing.assert_allclose(getattr(together, f"{task}_probs"), expected, atol=1e-5)
        assert list(getattr(together, task)) == [getattr(p, task)[0] for p in one_by_one]


def test_the_chunk_cap_holds(headline_model_dir):
    capped = Classifier.load(headline_model_dir, device="cpu", max_chunks=3)
    assert capped.windows.max_tokens == 126 + 2 * 94
    text = article(3000)
    assert n_windows(capped, text) == 3
    # what lies beyond the first max_tokens tokens is not read
    head = capped.model.tokenizer.decode(
        capped.model.tokenizer(text, add_special_tokens=False)["input_ids"][
            : capped.windows.max_tokens
        ]
    )
    tails = [head, head + " fed soars rally " * 500, head + " " + article(3000, seed=9)]
    predictions = capped.predict(tails)
    for task in ("sentiment", "topic"):
        probs = getattr(predictions, f"{task}_probs")
        np.testing.assert_allclose(probs[1:], probs[[0, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="max_chunks"):
        Classifier.load(headline_model_dir, device="cpu", max_chunks=0)


def test_cutting_characters_never_changes_the_windows(headline_model_dir):
    capped = Classifier.load(headline_model_dir, device="cpu", max_chunks=3)
    tokenizer = capped.model.tokenizer
    # words over 100 characters are one [UNK] each: far more characters per token than guessed
    long_words = " ".join(["oil", "x" * 150, "plunges"] * 400)
    normal = article(3000)
    assert len(long_words) > capped.windows.char_limit < len(normal)
    windows = capped.windows.split([long_words, normal, "fed soars"])
    for row, text in enumerate([long_words, normal]):
        content = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected = [
            capped.windows.wrap(content[start:end])
            for start, end in capped.windows.bounds(len(content))
        ]
        assert [windows.token_ids[i] for i in np.flatnonzero(windows.doc == row)] == expected


def test_a_million_word_document_goes_through_normal_batches(classifier):
    text = "crude " * 1_000_000
    windows = classifier.windows.split([text])
    assert len(windows) == 64  # the default cap
    rows = []
    hook = classifier.model.encoder.register_forward_hook(
        lambda module, args, kwargs, output: rows.append(kwargs["input_ids"].shape[0]),
        with_kwargs=True,
    )
    try:
        predictions = classifier.predict(["fed soars", text], batch_size=8)
    finally:
        hook.remove()
    assert len(predictions) == 2
    assert max(rows) <= 8 and sum(rows) == 65


def test_text_windows_checks_its_settings(classifier):
    tokenizer = classifier.model.tokenizer
    with pytest.raises(ValueError, match="overlap"):
        TextWindows(tokenizer, max_length=128, overlap=1.0)
    with pytest.raises(ValueError, match="no room"):
        TextWindows(tokenizer, max_length=2)
    assert TextWindows(tokenizer, max_length=128, overlap=0.0).step == 126
