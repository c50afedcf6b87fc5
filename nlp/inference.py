"""Batch inference with a saved dual-head model: texts -> calibrated sentiment and topic.

Texts are processed in streaming groups (at most CHUNK_SIZE texts and about CHUNK_CHARS
characters, so memory stays bounded for any input). A text longer than the encoder's window is
split into overlapping windows (`TextWindows`); every window is scored like a short text and the
document's logits are the mean of its windows' logits, each window weighted by the share of the
document's tokens it adds (tokens it does not share with the window before it). The stored
temperature is then applied as for short texts, so scores stay calibrated probabilities. Inside a
group, windows are sorted by token length and padded per batch (to a multiple of 8), so the windows
of one huge document go through the normal batches; results keep input order.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState

from nlp.data import DataError
from nlp.metrics import classification_metrics
from nlp.model import TASKS, DualHeadClassifier, prepare_texts

logger = logging.getLogger(__name__)

CHUNK_SIZE = 4096  # texts tokenized and scored together; bounds memory for huge inputs
CHUNK_CHARS = 1_000_000  # about this many characters per group: bounds memory for long texts
DEFAULT_MAX_CHUNKS = 64  # windows per document: about the first 6k tokens with a 128-token window
DEFAULT_OVERLAP = 0.25  # share of a window repeated from the window before it

# Cutting a text's characters before tokenizing keeps a 1M-word document cheap. A cut can only
# change the tokens of the one word it splits (tokenizers split text into words first, and a
# WordPiece word has at most max_input_chars_per_word = 100 pieces), so the tokens before the cut
# are exact as long as this many tokens follow the cap.
_CUT_MARGIN_TOKENS = 128
_CHARS_PER_TOKEN = 8  # first guess of how many characters cover the cap; raised when too few


@dataclass
class Windows:
    """Encoder-sized windows over a group of documents, in document order."""

    token_ids: list[list[int]]  # per window, special tokens included
    doc: np.ndarray  # (W,) int64: the window's document, an index into the group
    weight: np.ndarray  # (W,) float32: share of its document's tokens first seen in this window
    n_docs: int

    def __len__(self) -> int:
        return len(self.token_ids)


class TextWindows:
    """Splits texts into overlapping windows that fit the encoder (`max_length` tokens each).

    A window holds `size = max_length - special tokens` content tokens plus the tokenizer's special
    tokens (CLS/SEP); consecutive windows start `step` tokens apart (`overlap` of a window is
    shared), and the last window is aligned to the end of the text, so every window is full. A text
    that fits is one window with exactly the ids the tokenizer gives it. Only the first
    `max_tokens = size + (max_chunks - 1) * step` content tokens of a text are read.
    """

    def __init__(
        self,
        tokenizer,
        *,
        max_length: int,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        overlap: float = DEFAULT_OVERLAP,
    ):
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_chunks = max_chunks
        self.prefix, self.suffix = special_tokens_around(tokenizer)
        self.size = max_length - len(self.prefix) - len(self.suffix)
        if self.size < 1:
            raise ValueError(f"max_length {max_length} leaves no room beside the special tokens")
        self.step = max(1, self.size - round(self.size * overlap))
        self.max_tokens = self.size + (max_chunks - 1) * self.step
        self.char_limit = (self.max_tokens + _CUT_MARGIN_TOKENS) * _CHARS_PER_TOKEN

    def bounds(self, n_tokens: int) -> list[tuple[int, int]]:
        """(start, end) of each window over `n_tokens` content tokens (at most max_tokens)."""
        n_tokens = min(n_tokens, self.max_tokens)
        if n_tokens <= self.size:
            return [(0, n_tokens)]
        n_windows = 1 + -(-(n_tokens - self.size) // self.step)
        starts = [min(i * self.step, n_tokens - self.size) for i in range(n_windows)]
        return [(start, start + self.size) for start in starts]

    def wrap(self, content_ids: Sequence[int]) -> list[int]:
        """One window's model input: the special tokens around its content tokens."""
        return [*self.prefix, *content_ids, *self.suffix]

    def encode_content(self, text: str, **tokenizer_kwargs):
        """Tokenizer output for one prepared text without special tokens, covering at least the
        first max_tokens tokens (the text's characters are cut only where that is safe)."""
        limit = self.char_limit
        while True:
            cut = text[:limit]
            encoded = self.tokenizer(
                cut, add_special_tokens=False, verbose=False, **tokenizer_kwargs
            )
            if len(cut) == len(text) or len(encoded["input_ids"]) >= (
                self.max_tokens + _CUT_MARGIN_TOKENS
            ):
                return encoded
            limit *= 4

    def split(self, texts: Sequence[str]) -> Windows:
        """Windows of prepared texts (see `nlp.model.prepare_texts`); one per short text."""
        n_docs = len(texts)
        if n_docs == 0:
            return Windows([], np.zeros(0, np.int64), np.zeros(0, np.float32), 0)
        # One batched call of the fast tokenizer, special tokens included, nothing truncated.
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n_docs)
        cut_rows = np.flatnonzero(lengths > self.char_limit)
        cut_texts = list(texts)
        for row in cut_rows:
            cut_texts[row] = texts[row][: self.char_limit]
        token_ids = self.tokenizer(cut_texts, verbose=False)["input_ids"]
        n_specials = len(self.prefix) + len(self.suffix)
        for row in cut_rows:  # rare: the cut left too few tokens, so tokenize more of the text
            if len(token_ids[row]) - n_specials < self.max_tokens + _CUT_MARGIN_TOKENS:
                token_ids[row] = self.wrap(self.encode_content(texts[row])["input_ids"])
        n_tokens = np.fromiter(map(len, token_ids), dtype=np.int64, count=n_docs)
        long_rows = np.flatnonzero(n_tokens > self.max_length)
        if not len(long_rows):  # the common case: every text is one window, as it was tokenized
            return Windows(
                token_ids, np.arange(n_docs, dtype=np.int64), np.ones(n_docs, np.float32), n_docs
            )

        windows, docs, weights = [], [], []
        long_set = set(long_rows.tolist())
        for row, ids in enumerate(token_ids):
            if row not in long_set:
                windows.append(ids)
                docs.append(row)
                weights.append(1.0)
                continue
            content = ids[len(self.prefix) : len(ids) - len(self.suffix)][: self.max_tokens]
            previous_end = 0
            for start, end in self.bounds(len(content)):
                windows.append(self.wrap(content[start:end]))
                docs.append(row)
                weights.append((end - previous_end) / len(content))  # tokens new in this window
                previous_end = end
        capped = int((n_tokens[long_rows] - n_specials > self.max_tokens).sum())
        logger.debug(
            "%d of %d texts split into %d windows (%d cut at %d tokens)",
            len(long_rows),
            n_docs,
            len(windows) - n_docs + len(long_rows),
            capped,
            self.max_tokens,
        )
        return Windows(windows, np.asarray(docs, np.int64), np.asarray(weights, np.float32), n_docs)


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text's tokens (e.g. [CLS], [SEP])."""
    with_specials = tokenizer("a")["input_ids"]
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_specials) - len(content) + 1):
        if with_specials[start : start + len(content)] == content:
            return with_specials[:start], with_specials[start + len(content) :]
    raise ValueError("cannot tell where the tokenizer puts its special tokens")


def aggregate_logits(logits: torch.Tensor, windows: Windows) -> torch.Tensor:
    """Document logits (D, C): the weighted mean of each document's window logits (W, C)."""
    if len(windows) == windows.n_docs:  # one window per document, weights are 1
        return logits
    doc = torch.from_numpy(windows.doc).to(logits.device)  # (W,)
    weight = torch.from_numpy(windows.weight).to(logits.device, logits.dtype)  # (W,)
    summed = torch.zeros(
        (windows.n_docs, logits.shape[1]), dtype=logits.dtype, device=logits.device
    )
    return summed.index_add_(0, doc, logits * weight[:, None])  # (D, C)


def _text_groups(texts: Sequence[str], *, char_limit: int) -> list[slice]:
    """Consecutive slices of about CHUNK_CHARS characters that will be read (at least one text
    each); a text counts with at most `char_limit` characters, as it is cut before tokenizing."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    lengths = np.minimum(lengths, char_limit)  # (N,)
    if lengths.sum() <= CHUNK_CHARS:
        return [slice(0, len(texts))]
    group = (np.cumsum(lengths) - lengths) // CHUNK_CHARS  # (N,) group of each text by its start
    cuts = [0, *(np.flatnonzero(np.diff(group)) + 1).tolist(), len(texts)]
    return [slice(start, end) for start, end in itertools.pairwise(cuts)]


@dataclass
class Predictions:
    sentiment: np.ndarray  # (N,) object: label names
    sentiment_score: np.ndarray  # (N,) float32: calibrated probability of the chosen label
    sentiment_probs: np.ndarray  # (N, n_sentiment) float32
    topic: np.ndarray  # (N,) object
    topic_score: np.ndarray  # (N,) float32
    topic_probs: np.ndarray  # (N, n_topic) float32

    def __len__(self) -> int:
        return len(self.sentiment)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "sentiment": self.sentiment,
                "sentiment_score": self.sentiment_score,
                "topic": self.topic,
                "topic_score": self.topic_score,
            }
        )


class Classifier:
    """A loaded model ready to score texts."""

    def __init__(
        self,
        *,
        model: DualHeadClassifier,
        device: torch.device,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        overlap: float = DEFAULT_OVERLAP,
        fp32: bool = False,
    ):
        """`fp32`: the encoder in full fp32 on every device (a reference); otherwise it runs under
        bf16 autocast on CUDA devices that support it."""
        self.model = model.to(device).eval()
        self.device = device
        self._bf16 = False if fp32 else None
        self.sentiment_labels = model.sentiment_labels
        self.topic_labels = model.topic_labels
        self.model_version = model.model_version
        self.windows = TextWindows(
            model.tokenizer, max_length=model.max_length, max_chunks=max_chunks, overlap=overlap
        )

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        *,
        device: str | None = None,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        overlap: float = DEFAULT_OVERLAP,
    ) -> Classifier:
        """Load a model directory onto `device`, or where accelerate places this process."""
        device = torch.device(device) if device is not None else PartialState().device
        model = DualHeadClassifier.load(model_dir, device=device)
        logger.info("loaded model %s from %s on %s", model.model_version, model_dir, device)
        return cls(model=model, device=device, max_chunks=max_chunks, overlap=overlap)

    def predict(self, texts: Iterable[str], *, batch_size: int = 64) -> Predictions:
        """Calibrated predictions for every text, in input order; empty input gives empty arrays.

        A text longer than the encoder's window is scored as overlapping windows (see
        `TextWindows`) whose logits are averaged, weighted by the tokens each window adds.
        """
        probs = {task: [] for task in TASKS}
        texts = iter(texts)
        while chunk := list(itertools.islice(texts, CHUNK_SIZE)):
            chunk = prepare_texts(chunk, self.model.normalization)
            for group in _text_groups(chunk, char_limit=self.windows.char_limit):
                windows = self.windows.split(chunk[group])
                pooled = self.model.embed(windows.token_ids, batch_size=batch_size, bf16=self._bf16)
                with torch.inference_mode():
                    logits = self.model.classify(pooled.to(self.device))  # {task: (W, C)}
                    logits = {task: aggregate_logits(x, windows) for task, x in logits.items()}
                    for task, task_probs in self.model.probabilities(logits).items():
                        probs[task].append(task_probs.cpu().numpy())  # (n, C)
        return self._predictions(probs)

    def _predictions(self, probs: dict[str, list[np.ndarray]]) -> Predictions:
        fields = {}
        for task in TASKS:
            labels = np.array(self.model.labels(task), dtype=object)
            task_probs = (
                np.concatenate(probs[task]).astype(np.float32)
                if probs[task]
                else np.zeros((0, len(labels)), dtype=np.float32)
            )  # (N, C)
            chosen = task_probs.argmax(axis=1)  # (N,)
            fields[task] = labels[chosen]
            fields[f"{task}_score"] = task_probs[np.arange(len(chosen)), chosen]
            fields[f"{task}_probs"] = task_probs
        return Predictions(**fields)


class UnknownLabelError(DataError):
    """Evaluation data holds labels that the model was not trained on."""


def evaluate(classifier: Classifier, frame: pd.DataFrame, *, task: str) -> dict:
    """Metrics of one head on a labeled `text,label` frame (calibrated probabilities)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    missing = [column for column in ("text", "label") if column not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(frame.columns)}")
    if frame.empty:
        raise DataError("no rows to evaluate")
    known = classifier.model.labels(task)
    unknown = sorted(set(frame["label"].astype(str)) - set(known))
    if unknown:
        raise UnknownLabelError(f"labels not known to the model: {unknown}; model knows: {known}")
    predictions = classifier.predict(frame["text"].tolist())
    metrics = classification_metrics(
        frame["label"].astype(str).tolist(), getattr(predictions, f"{task}_probs"), known
    )
    return {**metrics, "task": task, "model_version": classifier.model_version}
