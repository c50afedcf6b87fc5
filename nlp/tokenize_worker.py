"""Tokenization for the inference engine: in-process, or in worker processes.

One `Encoder` turns prepared texts into token ids (special tokens added, truncated to the
encoder's window) as two flat numpy arrays, so no padded Python lists are ever built.

For BERT-style WordPiece tokenizers (BertNormalizer + BertPreTokenizer + WordPiece) it keeps a
word cache: those tokenizers split on whitespace first and never merge across it, and their
normalization works per character, so the ids of a text are exactly the concatenation of the
ids of its whitespace-separated words. Repeated words (most of a finance feed) then cost one
dict lookup instead of normalizing and WordPiece-splitting again. Only plain ASCII texts
without control characters take this path, because Python's and the tokenizer's notions of
whitespace and control characters differ outside it; every other text goes to the Rust
tokenizer. `tests/nlp/test_engine.py` checks both paths give identical ids.

This module imports neither torch nor transformers, so worker processes start fast.
"""

from __future__ import annotations

import itertools
import json
import os
import re

import numpy as np
from tokenizers import Tokenizer

from nlp.text import prepare_texts

_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_CACHED_WORDS = 2_000_000


class Encoder:
    def __init__(
        self,
        tokenizer_json: str,
        *,
        max_length: int,
        normalization: str,
        prefix: list[int],
        suffix: list[int],
        word_cache: bool = True,
    ):
        self.backend = Tokenizer.from_str(tokenizer_json)
        self.backend.no_padding()
        self.backend.enable_truncation(max_length=max_length)
        self._encode_batch = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        self.max_length = max_length
        self.normalization = normalization
        self.prefix, self.suffix = list(prefix), list(suffix)
        self.budget = max_length - len(prefix) - len(suffix)  # content tokens per text
        spec = json.loads(tokenizer_json)
        self.word_cache = word_cache and _is_bert_wordpiece(spec)
        self.cache: dict[str, list[int]] = {}

    def encode(self, texts: list, *, prepared: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(flat ids int32, lengths int32) of `texts`, special tokens included, truncated."""
        texts = texts if prepared else prepare_texts(texts, self.normalization)
        ids: list[list[int] | None] = [None] * len(texts)
        if self.word_cache:
            self._encode_cached(texts, ids)
        rest = [i for i, row in enumerate(ids) if row is None]
        if rest:
            encodings = self._encode_batch([texts[i] for i in rest], add_special_tokens=True)
            for i, encoding in zip(rest, encodings, strict=True):
                ids[i] = encoding.ids
        lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
        flat = np.fromiter(
            itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())
        )
        return flat, lengths

    def _encode_cached(self, texts: list[str], ids: list) -> None:
        words = [
            text.split() if text.isascii() and not _UNSAFE.search(text) else None for text in texts
        ]
        cache = self.cache
        missing = {word for row in words if row for word in row if word not in cache}
        if missing:
            if len(cache) + len(missing) > MAX_CACHED_WORDS:
                cache.clear()
            missing = list(missing)
            encoded = self._encode_batch(missing, add_special_tokens=False)
            for word, encoding in zip(missing, encoded, strict=True):
                cache[word] = encoding.ids
        get, chain, budget = cache.__getitem__, itertools.chain.from_iterable, self.budget
        prefix, suffix = self.prefix, self.suffix
        for i, row in enumerate(words):
            if row is None:
                continue
            content = list(chain(map(get, row)))
            if len(content) > budget:
                del content[budget:]
            ids[i] = prefix + content + suffix


def _is_bert_wordpiece(spec: dict) -> bool:
    normalizer, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    return (
        normalizer.get("type") == "BertNormalizer"
        and pre.get("type") == "BertPreTokenizer"
        and (spec.get("model") or {}).get("type") == "WordPiece"
        and not spec.get("added_tokens_in_text")  # reserved; never set by tokenizers today
    )


# -- worker processes ---------------------------------------------------------------------------

_WORKER: Encoder | None = None


def init_worker(kwargs: dict) -> None:
    """Process-pool initializer: one Encoder per worker; the Rust tokenizer single-threaded,
    since the pool already uses the cores."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER
    _WORKER = Encoder(**kwargs)


def encode_in_worker(texts: list) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER is not None, "init_worker did not run"
    return _WORKER.encode(texts)
