"""Tokenization for the inference engine: in-process, or in worker processes.

One `Encoder` turns texts into token ids (normalized as the model was trained, special tokens
added, truncated to the encoder's window) as two flat numpy arrays, so no padded Python lists
are ever built.

For BERT-style WordPiece tokenizers (BertNormalizer + BertPreTokenizer + WordPiece) it keeps a
word cache and does no Python work per text or per word. Those tokenizers split on whitespace
first and never merge across it, and their normalization works per character, so the ids of a
text are exactly the concatenation of the ids of its whitespace-separated words. A chunk of
texts is therefore joined into one string, link-normalized by one regex pass, split into words
by `str.split`, and the words are looked up in a dict (`map` over C functions). New words
are encoded by the Rust tokenizer once and stored in one flat piece array. Everything after the
lookup (concatenating the pieces, truncation, the special tokens) is numpy on whole arrays.

Python's `str.split` and BERT agree on what whitespace is except for a few characters (vertical
tab, form feed, the C0 separators, U+0085, U+2028 and U+2029, which Python splits on and BERT
deletes or keeps); the `finance` normalization turns them into spaces anyway, and without it a
text holding one goes to the Rust tokenizer whole, as does every text when the tokenizer is not
BERT-style. `tests/nlp/test_engine.py` checks that both paths give identical ids.

This module imports neither torch nor transformers, so worker processes start fast.
"""

from __future__ import annotations

import itertools
import json
import os
import re

import numpy as np
from tokenizers import Tokenizer

from nlp.text import URL_PATTERN, prepare_texts

# Characters on which Python's str.split and BERT's pre-tokenizer disagree (see the docstring).
_SPLIT_MISMATCH = re.compile("[\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")
_SEPARATOR = "\n\x00\n"  # between texts of a chunk: whitespace, so no link swallows it
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
        prepare_texts([], normalization)  # an unknown normalization fails here, not mid-stream
        self.prefix = np.asarray(prefix, dtype=np.int32)
        self.suffix = np.asarray(suffix, dtype=np.int32)
        self.budget = max_length - len(prefix) - len(suffix)  # content tokens per text
        self.word_cache = word_cache and _is_bert_wordpiece(json.loads(tokenizer_json))
        self._reset_cache()

    @property
    def cache(self) -> dict[str, int]:
        """Cached words and their row in the piece table."""
        return self._index

    def encode(self, texts: list, *, prepared: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(flat ids int32, lengths int32) of `texts`, special tokens included, truncated.

        `prepared`: the texts already went through `prepare_texts` with this normalization."""
        n = len(texts)
        if not n:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        if not self.word_cache:
            return self._encode_rust(
                texts if prepared else prepare_texts(texts, self.normalization)
            )
        if not prepared:  # HTML entities first: they may stand for spaces or non-ASCII letters
            texts = [t if type(t) is str and "&" not in t else _as_text(t) for t in texts]
        joined = _SEPARATOR.join(texts)
        slow = self._slow_rows(texts, joined)
        if len(slow) == n:
            return self._encode_rust(self._prepared(texts, prepared))
        if len(slow):
            fast_rows = np.setdiff1d(np.arange(n), slow)
            fast_texts = [texts[i] for i in fast_rows]
            joined = _SEPARATOR.join(fast_texts)
        if self.normalization == "finance" and not prepared:
            joined = _replace_links(joined)
        fast = self._encode_words(joined.split(), n - len(slow))
        if not len(slow):
            return fast
        rust = self._encode_rust(self._prepared([texts[i] for i in slow], prepared))
        return _interleave(n, (fast_rows, *fast), (slow, *rust))

    def _prepared(self, texts: list[str], prepared: bool) -> list[str]:
        # entities are already decoded, and decoding is not idempotent ("&amp;amp;")
        return texts if prepared else prepare_texts(texts, self.normalization, unescape=False)

    # -- the word-cache path -------------------------------------------------------------------

    def _slow_rows(self, texts: list[str], joined: str) -> np.ndarray:
        """Rows the word path cannot take: holding the separator's NUL, or (without the finance
        normalization, which turns them into spaces) a character Python and BERT split apart."""
        nul = joined.count("\x00") != len(texts) - 1
        mismatch = self.normalization != "finance" and _SPLIT_MISMATCH.search(joined) is not None
        if not (nul or mismatch):
            return np.zeros(0, np.int64)
        return np.array(
            [
                i
                for i, text in enumerate(texts)
                if "\x00" in text
                or (self.normalization != "finance" and _SPLIT_MISMATCH.search(text))
            ],
            dtype=np.int64,
        )

    def _encode_words(self, words: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids of n texts whose words, texts separated by the separator's NUL word, are `words`."""
        index = self._index
        try:
            rows = np.fromiter(map(index.__getitem__, words), np.int64, len(words))  # (W,)
        except KeyError:
            self._add_words(words)
            rows = np.fromiter(map(index.__getitem__, words), np.int64, len(words))
        # each NUL word (row 0, no pieces) ends a text: the word ends of the n texts
        text_word_end = np.append(np.flatnonzero(rows == 0), len(rows))  # (n,)
        assert len(text_word_end) == n, "a text holds the separator"
        piece_len = self._piece_len[rows]  # (W,)
        word_end = np.cumsum(piece_len)  # (W,) end of each word's pieces in the text stream
        word_start = word_end - piece_len
        n_tokens = int(word_end[-1]) if len(words) else 0
        # content ids of every text, back to back: each word's pieces copied from the table
        source = np.repeat(self._piece_start[rows] - word_start, piece_len) + np.arange(n_tokens)
        content_ids = self._pieces[source]  # (T,)
        # per text: content tokens, truncated to the budget, between the special tokens
        ends = np.concatenate(([0], word_end))[text_word_end]  # (n,) token end of each text
        content = np.diff(np.concatenate(([0], ends)))  # (n,)
        kept = np.minimum(content, self.budget)
        p, s = len(self.prefix), len(self.suffix)
        lengths = (kept + p + s).astype(np.int32)  # (n,)
        out_start = np.cumsum(lengths) - lengths  # (n,)
        flat = np.empty(int(lengths.sum()), np.int32)
        if p:
            flat[(out_start[:, None] + np.arange(p)).ravel()] = np.tile(self.prefix, len(lengths))
        if s:
            tail = out_start + p + kept
            flat[(tail[:, None] + np.arange(s)).ravel()] = np.tile(self.suffix, len(lengths))
        text_of_token = np.repeat(np.arange(len(lengths)), content)  # (T,)
        position = np.arange(n_tokens) - np.repeat(ends - content, content)  # (T,) within its text
        keep = position < self.budget
        flat[(out_start + p)[text_of_token[keep]] + position[keep]] = content_ids[keep]
        return flat, lengths

    def _add_words(self, words: list[str]) -> None:
        missing = list(set(words).difference(self._index))
        if not missing:
            return
        if len(self._index) + len(missing) > MAX_CACHED_WORDS:
            self._reset_cache()
            missing = list(set(words).difference(self._index))
        encoded = [e.ids for e in self._encode_batch(missing, add_special_tokens=False)]
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        pieces = np.fromiter(itertools.chain.from_iterable(encoded), np.int32, int(lengths.sum()))
        first = len(self._index)
        self._index.update(zip(missing, range(first, first + len(missing)), strict=True))
        self._piece_start = np.concatenate(
            [self._piece_start, len(self._pieces) + np.cumsum(lengths) - lengths]
        )
        self._piece_len = np.concatenate([self._piece_len, lengths])
        self._pieces = np.concatenate([self._pieces, pieces])

    def _reset_cache(self) -> None:
        self._index: dict[str, int] = {"\x00": 0}  # the separator: a word of no pieces
        self._piece_start = np.zeros(1, np.int64)
        self._piece_len = np.zeros(1, np.int64)
        self._pieces = np.zeros(0, np.int32)

    # -- the Rust path -------------------------------------------------------------------------

    def _encode_rust(self, prepared: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = [e.ids for e in self._encode_batch(prepared, add_special_tokens=True)]
        lengths = np.fromiter(map(len, ids), np.int32, len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lengths.sum()))
        return flat, lengths


_HTTP = re.compile(r"https?://\S+")
_WWW = re.compile(r"www\.\S+")
_LINK_LEFT = re.compile(r"[wW][wW][wW]\.")


def _replace_links(text: str) -> str:
    """`URL_PATTERN.sub("http", text)`, five times faster on finance text: its case-insensitive
    pattern has no literal prefix for the regex engine to search for, so two case-sensitive
    passes take the common links and the full pattern runs only when a link may be left (an
    upper-case one, or another scheme's "://"). Each pass replaces a word's tail from a match
    on, and every case-sensitive match is also a match of the full pattern, so the result is
    the same (tested)."""
    text = _WWW.sub("http", _HTTP.sub("http", text))
    if "://" in text or _LINK_LEFT.search(text):
        text = URL_PATTERN.sub("http", text)
    return text


def _interleave(n: int, *parts: tuple[np.ndarray, np.ndarray, np.ndarray]):
    """Merge (rows, flat, lengths) parts that together cover rows 0..n-1 into one (flat, lengths)."""
    lengths = np.zeros(n, np.int32)
    for rows, _, part_lengths in parts:
        lengths[rows] = part_lengths
    out_start = np.cumsum(lengths) - lengths
    flat = np.empty(int(lengths.sum()), np.int32)
    for rows, part_flat, part_lengths in parts:
        part_start = np.cumsum(part_lengths) - part_lengths
        within = np.arange(len(part_flat)) - np.repeat(part_start, part_lengths)
        flat[np.repeat(out_start[rows], part_lengths) + within] = part_flat
    return flat, lengths


def _as_text(value) -> str:
    return prepare_texts([value], "none")[0]


def _is_bert_wordpiece(spec: dict) -> bool:
    normalizer, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    added = spec.get("added_tokens") or []
    return (
        normalizer.get("type") == "BertNormalizer"
        and pre.get("type") == "BertPreTokenizer"
        and (spec.get("model") or {}).get("type") == "WordPiece"
        # an added token that strips the whitespace beside it would join words
        and not any(token.get("lstrip") or token.get("rstrip") for token in added)
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
