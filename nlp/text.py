"""Text preparation shared by training and inference; no torch, so worker processes load fast."""

from __future__ import annotations

import html
import math
import re
import sys
from collections.abc import Iterable

NORMALIZATIONS = ("none", "finance")
URL_PATTERN = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)  # a link never holds a space
_SPACE = re.compile(r"\s+")


class NormalizationError(ValueError):
    """An unknown normalization name."""


def prepare_texts(
    texts: Iterable, normalization: str = "none", *, unescape: bool = True
) -> list[str]:
    """The one text clean-up shared by training and inference.

    Always: str() and HTML entities decoded. ``"finance"`` also replaces every link with the
    single word ``http`` and collapses whitespace: wire posts end in shortened links whose
    random characters otherwise cost 10-20 word pieces each and carry no signal. Cashtags stay.
    A model records its normalization, so inference always repeats what training did.
    `unescape=False` skips the entity decoding, for texts whose entities are already decoded.
    """
    as_text = _as_text if unescape else str
    if normalization == "none":
        return [as_text(text) for text in texts]
    if normalization == "finance":
        return [_SPACE.sub(" ", URL_PATTERN.sub("http", as_text(text))).strip() for text in texts]
    raise NormalizationError(
        f"unknown text normalization {normalization!r}; known: {NORMALIZATIONS}"
    )


def _as_text(value) -> str:
    if isinstance(value, str):
        return html.unescape(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    pandas = sys.modules.get("pandas")  # pd.NA only exists if pandas is loaded (workers: not)
    if pandas is not None and value is pandas.NA:
        return ""
    return html.unescape(str(value))
