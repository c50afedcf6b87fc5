import numpy as np
import pytest

import nlp.inference
from nlp.inference import Classifier, Predictions, UnknownLabelError, evaluate


@pytest.fixture(scope="module")
def texts(small_frames) -> list[str]:
    # mixed lengths, an HTML entity and an empty text
    return small_frames["topic"]["text"].tolist()[:40] + ["", "S&amp;P 500 hits a record"]


def test_predict_shapes_labels_and_probabilities(classifier, texts):
    predictions = classifier.predict(texts)
    assert isinstance(predictions, Predictions) and len(predictions) == len(texts)
    assert predictions.sentiment_probs.shape == (len(texts), len(classifier.sentiment_labels))
    assert predictions.topic_probs.shape == (len(texts), len(classifier.topic_labels))
    for task in ("sentiment", "topic"):
        probs = getattr(predictions, f"{task}_probs")
        score = getattr(predictions, f"{task}_score")
        assert probs.dtype == np.float32 and score.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(score, probs.max(axis=1))
        assert set(getattr(predictions, task)) <= set(getattr(classifier, f"{task}_labels"))
    frame = predictions.to_frame()
    assert list(frame.columns) == ["sentiment", "sentiment_score", "topic", "topic_score"]
    assert len(frame) == len(texts)


def test_classifier_attributes(classifier, quick_run):
    assert classifier.model_version == quick_run[1]["model_version"]
    assert classifier.sentiment_labels == ["negative", "neutral", "positive"]
    assert str(classifier.device) == "cpu"


def test_order_is_preserved(classifier, texts):
    forward = classifier.predict(texts)
    backward = classifier.predict(texts[::-1])
    np.testing.assert_allclose(backward.topic_probs[::-1], forward.topic_probs, atol=1e-5)
    one_by_one = np.concatenate([classifier.predict([text]).sentiment_probs for text in texts[:10]])
    np.testing.assert_allclose(one_by_one, forward.sentiment_probs[:10], atol=1e-5)


def test_dynamic_padding_does_not_change_results(classifier, texts, monkeypatch):
    reference = classifier.predict(texts, batch_size=32)
    # the random model still gives text-dependent outputs, so equal results are not trivial
    assert reference.topic_probs.std(axis=0).max() > 1e-4

    single = classifier.predict(texts, batch_size=1)  # no padding at all
    sorted_texts = sorted(texts, key=len)
    by_length = classifier.predict(sorted_texts, batch_size=32)
    remap = [sorted_texts.index(text) for text in texts]
    monkeypatch.setattr(nlp.inference, "CHUNK_SIZE", 9)  # many streaming chunks
    chunked = classifier.predict(iter(texts), batch_size=4)  # any iterable, not just lists
    for task in ("sentiment", "topic"):
        expected = getattr(reference, f"{task}_probs")
        np.testing.assert_allclose(getattr(single, f"{task}_probs"), expected, atol=1e-5)
        np.testing.assert_allclose(getattr(by_length, f"{task}_probs")[remap], expected, atol=1e-5)
        np.testing.assert_allclose(getattr(chunked, f"{task}_probs"), expected, atol=1e-5)


def test_empty_input(classifier):
    predictions = classifier.predict([])
    assert len(predictions) == 0
    assert predictions.topic_probs.shape == (0, len(classifier.topic_labels))
    assert predictions.to_frame().empty


def test_evaluate(classifier, small_frames):
    for task in ("sentiment", "topic"):
        frame = small_frames[task].iloc[:80]
        metrics = evaluate(classifier, frame, task=task)
        assert metrics["task"] == task and metrics["n"] == 80
        for key in ("accuracy", "macro_f1", "ece"):
            assert 0.0 <= metrics[key] <= 1.0


def test_evaluate_rejects_unknown_labels(classifier, small_frames):
    frame = small_frames["sentiment"].iloc[:5].copy()
    frame.loc[0, "label"] = "foo"
    with pytest.raises(
        UnknownLabelError, match=r"labels not known to the model: \['foo'\]; model knows: \["
    ):
        evaluate(classifier, frame, task="sentiment")
    with pytest.raises(ValueError, match="task must be one of"):
        evaluate(classifier, frame, task="emotion")


def test_load_rejects_non_model_dir(tmp_path):
    with pytest.raises(ValueError, match="not a yuqing model directory"):
        Classifier.load(tmp_path)
