"""Fixtures: a tiny random-init encoder, slices of the shared data, one quick-trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from nlp.data import load_labeled
from nlp.inference import Classifier
from nlp.testing import make_tiny_base
from nlp.train import TrainConfig, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ../shared/data seen from the project root (never copied into the repo)
SHARED_DATA = Path(
    os.environ.get("YUQING_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)


def _slice(task: str, n: int, seed: int = 0) -> pd.DataFrame:
    if not (SHARED_DATA / task / "train.csv").is_file():
        pytest.skip(
            f"shared data not found at {SHARED_DATA / task / 'train.csv'} (set YUQING_SHARED_DATA)"
        )
    frame = load_labeled(SHARED_DATA / task)
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="session")
def shared_slice():
    """`shared_slice(task, n)`: n random rows of the shared train data (skips if absent)."""
    return _slice


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    return make_tiny_base(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="session")
def small_frames() -> dict[str, pd.DataFrame]:
    return {"sentiment": _slice("sentiment", 300), "topic": _slice("topic", 300)}


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, tiny_base, small_frames) -> tuple[Path, dict]:
    """(model_dir, report) of a quick train on 300 rows per task with the tiny base."""
    model_dir = tmp_path_factory.mktemp("models") / "quick"
    report = train(
        **small_frames, out_dir=model_dir, config=TrainConfig(base=tiny_base, quick=True)
    )
    return model_dir, report


@pytest.fixture(scope="session")
def classifier(quick_run) -> Classifier:
    return Classifier.load(quick_run[0], device="cpu")


# Headlines where only the sentiment word tells the sentiment and only the topic word the topic;
# the filler words are shared by every class.
HEADLINE_FILLER = ["as", "after", "shares", "traders", "market", "week", "shuts", "says", "today"]


def headlines(n: int = 300, seed: int = 0) -> dict[str, pd.DataFrame]:
    import random

    from tests.conftest import SENTIMENT_WORDS, TOPIC_WORDS

    rng = random.Random(seed)
    rows = {"sentiment": [], "topic": []}
    for i in range(n):
        sentiment, topic = list(SENTIMENT_WORDS)[i % 3], rng.choice(list(TOPIC_WORDS))
        words = [
            rng.choice(SENTIMENT_WORDS[sentiment]),
            rng.choice(TOPIC_WORDS[topic]),
            *rng.sample(HEADLINE_FILLER, 2),
        ]
        rng.shuffle(words)
        rows["sentiment"].append((" ".join(words), sentiment))
        rows["topic"].append((" ".join(words), topic))
    return {task: pd.DataFrame(pairs, columns=["text", "label"]) for task, pairs in rows.items()}


@pytest.fixture(scope="session")
def headline_model_dir(tmp_path_factory, tiny_base) -> Path:
    """The tiny base fine-tuned (full mode, seconds) on `headlines()`: it gets them all right."""
    model_dir = tmp_path_factory.mktemp("models") / "headlines"
    train(
        **headlines(),
        out_dir=model_dir,
        config=TrainConfig(
            base=tiny_base,
            epochs=6,
            lr=2e-3,
            batch_size=16,
            # the plain recipe: these words are easy, and R-Drop would double the time
            layer_decay=1.0,
            rdrop_alpha=0.0,
            class_weight_power=0.0,
            sentiment_weight=1.0,
        ),
    )
    return model_dir
