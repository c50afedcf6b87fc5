"""Labeled data for the two tasks: loading, stratified dev splits and content hashes.

Every loader returns the same shape: a DataFrame with exactly the columns `text,label`, both str,
where `label` is a label NAME (e.g. "negative", "Fed | Central Banks"), never an integer id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# Label names by integer id of the two known Hugging Face datasets (they carry no ClassLabel names).
# Sentiment: 0 Bearish, 1 Bullish, 2 Neutral (dataset card), renamed to the names used here.
KNOWN_HUB_LABEL_NAMES: dict[str, list[str]] = {
    "zeroshot/twitter-financial-news-sentiment": ["negative", "positive", "neutral"],
    "zeroshot/twitter-financial-news-topic": [
        "Analyst Update",
        "Fed | Central Banks",
        "Company | Product News",
        "Treasuries | Corporate Debt",
        "Dividend",
        "Earnings",
        "Energy | Oil",
        "Financials",
        "Currencies",
        "General News | Opinion",
        "Gold | Metals | Materials",
        "IPO",
        "Legal | Regulation",
        "M&A | Investments",
        "Macro",
        "Markets",
        "Politics",
        "Personnel Change",
        "Stock Commentary",
        "Stock Movement",
    ],
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".csv", ".parquet")


class DataError(ValueError):
    """Labeled data that cannot be used, with a one-line reason."""


def load_labeled(
    source: str | os.PathLike,
    *,
    split: str = "train",
    text_column: str = "text",
    label_column: str = "label",
) -> pd.DataFrame:
    """Labeled rows from a .csv/.parquet file, a folder with `{split}.csv|.parquet`, or a hub id."""
    path = Path(source)
    if path.is_dir():
        frame = _read_file(_split_file(path, split=split))
        origin = str(path)
    elif path.is_file():
        frame = _read_file(path)
        origin = str(path)
    elif _looks_like_hub_id(str(source)):
        frame = _read_hub(str(source), split=split, label_column=label_column)
        origin = f"{source} [{split}]"
    else:
        raise DataError(f"no such file or directory: {source}")
    return _normalize(frame, origin=origin, text_column=text_column, label_column=label_column)


def load_texts(source: str | os.PathLike, *, text_column: str = "text") -> list[str]:
    """Unlabeled texts from a .csv/.parquet file (its `text_column`), empty ones dropped."""
    path = Path(source)
    if not path.is_file():
        raise DataError(f"no such file: {source}")
    frame = _read_file(path)
    if text_column not in frame.columns:
        raise DataError(f"{path} has no {text_column!r} column; found {list(frame.columns)}")
    texts = frame[text_column].dropna().astype(str)
    return [text for text in texts if text.strip()]


def stratified_split(
    frame: pd.DataFrame, *, dev_fraction: float = 0.1, seed: int = 13
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, dev) split per label; a label with >= 2 rows gets >= 1 dev and >= 1 train row."""
    if not 0.0 < dev_fraction < 1.0:
        raise DataError(f"dev_fraction must be between 0 and 1, got {dev_fraction}")
    rng = np.random.default_rng(seed)
    labels = frame["label"].to_numpy()
    dev_positions = []
    for label in sorted(set(labels)):
        positions = np.flatnonzero(labels == label)  # (n_label,)
        if len(positions) < 2:
            continue  # a single row can only teach, so it stays in train
        n_dev = int(np.clip(round(len(positions) * dev_fraction), 1, len(positions) - 1))
        dev_positions.append(rng.permutation(positions)[:n_dev])
    is_dev = np.zeros(len(frame), dtype=bool)
    if dev_positions:
        is_dev[np.concatenate(dev_positions)] = True
    train = frame.iloc[np.flatnonzero(~is_dev)].reset_index(drop=True)
    dev = frame.iloc[np.flatnonzero(is_dev)].reset_index(drop=True)
    return train, dev


def frame_sha256(frame: pd.DataFrame) -> str:
    """Stable hash of the (text, label) rows in order, for recording what a model was trained on."""
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"], strict=True):
        digest.update(f"{text}\x1f{label}\x1e".encode())
    return digest.hexdigest()


def _looks_like_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(_FILE_SUFFIXES)


def _split_file(folder: Path, *, split: str) -> Path:
    for suffix in _FILE_SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder} holds neither {split}.csv nor {split}.parquet")


def _read_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    raise DataError(f"unsupported file type {path.suffix!r} for {path}; use .csv or .parquet")


def _read_hub(dataset_id: str, *, split: str, label_column: str) -> pd.DataFrame:
    """Load one split of a Hugging Face dataset, with integer labels turned into names."""
    try:
        import datasets  # optional: only users with Hub access need it
    except ImportError as e:
        raise DataError(
            f"{dataset_id!r} looks like a Hugging Face dataset id, which needs `datasets`: "
            "pip install 'yuqing[hub]'"
        ) from e
    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # the hub raises many kinds; all mean "could not load it"
        raise DataError(
            f"cannot load Hugging Face dataset {dataset_id!r} split {split!r}: {e}"
        ) from e
    frame = dataset.to_pandas()
    if label_column in frame.columns and pd.api.types.is_integer_dtype(frame[label_column]):
        names = getattr(dataset.features.get(label_column), "names", None)
        names = names or KNOWN_HUB_LABEL_NAMES.get(dataset_id)
        if names is None:
            raise DataError(
                f"{dataset_id!r} has integer labels and no label names; "
                "save it as CSV with label names instead"
            )
        frame[label_column] = _label_ids_to_names(
            frame[label_column], names=names, origin=dataset_id
        )
    return frame


def _label_ids_to_names(ids: pd.Series, *, names: list[str], origin: str) -> pd.Series:
    unknown = sorted(set(ids.dropna().astype(int)) - set(range(len(names))))
    if unknown:
        raise DataError(
            f"{origin}: label ids {unknown} have no name (known ids 0..{len(names) - 1})"
        )
    return ids.map(dict(enumerate(names)))


def _normalize(
    frame: pd.DataFrame, *, origin: str, text_column: str, label_column: str
) -> pd.DataFrame:
    missing = [column for column in (text_column, label_column) if column not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {missing}; found {list(frame.columns)}")
    frame = pd.DataFrame(
        {
            "text": frame[text_column].fillna("").astype(str),
            "label": frame[label_column].fillna("").astype(str).str.strip(),
        }
    )
    has_text = frame["text"].str.strip() != ""
    has_label = frame["label"] != ""
    if (~has_text).any() or (~has_label).any():
        logger.warning(
            "%s: dropped %d rows with empty text and %d with empty label",
            origin,
            int((~has_text).sum()),
            int((has_text & ~has_label).sum()),
        )
    frame = frame[has_text & has_label].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{origin}: no labeled rows with text")
    return frame
