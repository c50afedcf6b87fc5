"""A model directory's manifest (``yuqing_model.json``), read without torch.

The manifest is what makes a folder a model directory: labels, temperatures, base, max length
and the ``model_version``. Reading it is cheap, so a caller can check a model directory and
learn its version before (or instead of) loading the weights with ``nlp.model``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MODEL_CONFIG_FILE = "yuqing_model.json"
FORMAT_VERSION = 1

_REQUIRED_FIELDS = (
    "model_version",
    "base",
    "max_length",
    "sentiment_labels",
    "topic_labels",
    "temperatures",
)


class ModelError(ValueError):
    """A model directory that cannot be loaded or written, with a one-line reason."""


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MODEL_CONFIG_FILE).is_file()


def read_model_config(model_dir: str | os.PathLike) -> dict:
    """yuqing_model.json of a model directory, checked; ModelError if this is not a model dir."""
    model_dir = Path(model_dir)
    if not is_model_dir(model_dir):
        raise ModelError(f"{model_dir} is not a yuqing model directory (no {MODEL_CONFIG_FILE})")
    try:
        config = json.loads((model_dir / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_dir / MODEL_CONFIG_FILE} is unreadable: {e}") from e
    missing = [field for field in _REQUIRED_FIELDS if field not in config]
    if missing:
        raise ModelError(f"{model_dir / MODEL_CONFIG_FILE} lacks {missing}")
    if config.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ModelError(
            f"{model_dir} has model format {config['format_version']}; this code reads up to "
            f"{FORMAT_VERSION}: upgrade yuqing"
        )
    return config
