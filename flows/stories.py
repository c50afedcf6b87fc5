"""Unique stories: copies of one story from many outlets, or retweets, share one ``story_id``.

Two steps, cheapest first:

1. Normalised-text hashing. The text is HTML-unescaped and lower-cased (so ``$aapl`` and
   ``$AAPL`` agree), retweet prefixes (``RT @user:``), URLs and t.co links, @mentions, trailing
   outlet credits ("- Reuters", "via @WSJ"), punctuation and extra whitespace are removed. Texts
   that normalise to the same string are the same story. This catches the bulk of wire copies
   and retweets, which differ only by link, case or prefix, and it is exact and free.
2. MinHash over word 2-shingles with LSH banding (64 hashes = 16 bands x 4 rows), so texts
   reworded slightly (an added word, "5%" vs "5 pct", a different outlet credit) whose
   estimated Jaccard similarity is at least ``threshold`` (0.7) join the earlier story.
   MinHash is used instead of SimHash because Jaccard over shingles is the right measure for
   short headlines that share most of their words, LSH gives candidates in O(1) per text, and
   its error is easy to reason about (each band collides with probability J^4). Texts shorter
   than four words only use step 1: for them one changed word is a different headline.

A story's id is the normalised hash of its first text, so the ids are stable across runs and
independent of arrival order within a batch after the first copy. This module is pure.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Sequence

import numpy as np

_RT = re.compile(r"^\s*(?:rt\s+)?@\w+\s*:\s*|^\s*rt\s+", re.I)
_URL = re.compile(r"https?://\S+|www\.\S+|\bt\.co/\S+", re.I)
_MENTION = re.compile(r"(?<![\w$])@\w+")
_CREDIT = re.compile(
    r"\s*(?:[-|–—]\s*|\bvia\s+@?|\()(?:reuters|bloomberg|cnbc|wsj|ft|ap|afp|marketwatch|yahoo finance|barron'?s)\)?\s*$",
    re.I,
)
_PUNCT = re.compile(r"[^\w$%\s]+")
_SPACE = re.compile(r"\s+")
_PERCENT = re.compile(r"\s*\b(?:pct|percent)\b")

NUM_HASHES = 64
BANDS = 16
ROWS = NUM_HASHES // BANDS
_MERSENNE = np.uint64((1 << 61) - 1)
_rng = np.random.default_rng(20240601)
_A = _rng.integers(1, (1 << 61) - 1, size=NUM_HASHES, dtype=np.uint64)
_B = _rng.integers(0, (1 << 61) - 1, size=NUM_HASHES, dtype=np.uint64)


def normalize(text: str) -> str:
    """The text reduced to what makes it a story (see the module docstring)."""
    text = html.unescape(str(text)).lower()
    text = _URL.sub(" ", text)
    previous = None
    while previous != text:  # "RT @a: RT @b: ..."
        previous, text = text, _RT.sub("", text)
    text = _CREDIT.sub("", text.strip())
    text = _MENTION.sub(" ", text)
    text = _PERCENT.sub("%", text)
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def text_key(normalized: str) -> str:
    return hashlib.sha1(normalized.encode()).hexdigest()[:16]


def _shingles(normalized: str) -> list[str]:
    words = [w for w in normalized.split() if not w.startswith("$")]  # cashtag lists move about
    return [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def minhash(normalized: str) -> np.ndarray | None:
    """A 64-value MinHash signature of the word 2-shingles, or None for texts under 4 words."""
    shingles = _shingles(normalized)
    if len(shingles) < 3:
        return None
    hashes = (
        np.array(
            [
                int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
                for s in shingles
            ],
            dtype=np.uint64,
        )
        & _MERSENNE
    )  # (S,)
    with np.errstate(over="ignore"):
        permuted = (hashes[:, None] * _A[None, :] + _B[None, :]) % _MERSENNE  # (S, H)
    return permuted.min(axis=0)  # (H,)


class StoryIndex:
    """Remembers the stories seen so far and assigns each new text its story id."""

    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold
        self._by_text: dict[str, str] = {}
        self._signatures: dict[str, np.ndarray] = {}
        self._bands: list[dict[bytes, list[str]]] = [{} for _ in range(BANDS)]

    def __len__(self) -> int:
        return len(self._signatures) + len(self._by_text)

    def add(self, text: str, story_id: str) -> None:
        """Register a stored text under its (already assigned) story id."""
        normalized = normalize(text)
        self._by_text.setdefault(text_key(normalized), story_id)
        signature = minhash(normalized)
        if signature is not None and story_id not in self._signatures:
            self._index(story_id, signature)

    def _index(self, story_id: str, signature: np.ndarray) -> None:
        self._signatures[story_id] = signature
        for band, table in enumerate(self._bands):
            table.setdefault(signature[band * ROWS : (band + 1) * ROWS].tobytes(), []).append(
                story_id
            )

    def assign(self, text: str) -> str:
        """The story id of ``text``: an earlier story's, or a new one (then remembered)."""
        normalized = normalize(text)
        key = text_key(normalized)
        if key in self._by_text:
            return self._by_text[key]
        signature = minhash(normalized)
        story_id = key
        if signature is not None:
            match = self._best_match(signature)
            if match is not None:
                story_id = match
            else:
                self._index(story_id, signature)
        self._by_text[key] = story_id
        return story_id

    def _best_match(self, signature: np.ndarray) -> str | None:
        candidates: set[str] = set()
        for band, table in enumerate(self._bands):
            candidates.update(table.get(signature[band * ROWS : (band + 1) * ROWS].tobytes(), ()))
        best, best_similarity = None, self.threshold
        for candidate in sorted(candidates):
            similarity = float(np.mean(self._signatures[candidate] == signature))
            if similarity >= best_similarity:
                best, best_similarity = candidate, similarity
        return best


def story_ids(texts: Sequence[str], known: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Story ids for ``texts`` in order, given earlier (text, story_id) pairs."""
    index = StoryIndex()
    for text, story_id in known:
        index.add(text, story_id)
    return [index.assign(t) for t in texts]
