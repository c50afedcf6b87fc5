"""Which words drove a prediction: integrated gradients over the encoder's input embeddings.

For the class a head predicts, integrated gradients (Sundararajan et al., 2017) move the word
embeddings of the text in a straight line from a baseline to their real values, and credit each
token with (input - baseline) * (gradient averaged along the line), summed over the hidden
dimension. The baseline is the PAD token's embedding at every content position, with the special
tokens (CLS/SEP) kept, so it reads as "the same frame with no words in it". The target is the
predicted class's logit before temperature scaling. Attributions add up to
logit(input) - logit(baseline) (completeness); `convergence_delta` is how far the midpoint
Riemann sum over `steps` points misses that, and shrinks as `steps` grows.

A text longer than the encoder's window is read as the same overlapping windows `Classifier.predict`
uses, and its logit is the same weighted mean of window logits, so a token's attribution is the
weighted sum of its attributions in the windows that contain it and completeness still holds.
WordPiece pieces (`##`) of one word are summed into that word.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from nlp.inference import DEFAULT_MAX_CHUNKS, DEFAULT_OVERLAP, TextWindows
from nlp.model import TASKS, DualHeadClassifier, mean_pool, prepare_texts

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 32
DEFAULT_BATCH_SIZE = 16  # interpolation points per forward/backward pass


class ExplainError(ValueError):
    """A text or setting that cannot be explained, with a one-line reason."""


@dataclass(frozen=True)
class Explanation:
    """Word attributions for one head's predicted label on one text."""

    text: str  # the text as the model read it (HTML entities decoded)
    task: str
    label: str  # the predicted label
    score: float  # its calibrated probability
    tokens: list[tuple[str, float]]  # (word, attribution) in text order
    spans: list[tuple[int, int]]  # (start, end) character offsets of each word in `text`
    logit: float  # the predicted label's logit for the text, before temperature
    baseline_logit: float  # the same logit for the baseline (no words)
    convergence_delta: float  # sum of attributions - (logit - baseline_logit)
    steps: int
    windows: int  # encoder windows the text was read as
    truncated: bool  # the text is longer than the windows cover; the rest was not read

    def top(self, n: int, *, against: bool = False) -> list[tuple[str, float]]:
        """The n words pushing most toward the label (or against it, with `against`)."""
        return [self.tokens[i] for i in self.top_indices(n, against=against)]

    def top_indices(self, n: int, *, against: bool = False) -> list[int]:
        """Positions in `tokens` of the n words pushing most toward (or against) the label."""
        sign = -1.0 if against else 1.0
        ranked = sorted(
            (i for i, (_, value) in enumerate(self.tokens) if sign * value > 0),
            key=lambda i: -sign * self.tokens[i][1],
        )
        return ranked[:n]

    def to_dict(self) -> dict:
        record = asdict(self)
        record["tokens"] = [
            {"word": word, "attribution": value, "start": start, "end": end}
            for (word, value), (start, end) in zip(self.tokens, self.spans, strict=True)
        ]
        del record["spans"], record["text"]
        return record


def explain(
    model: DualHeadClassifier,
    text: str,
    *,
    task: str,
    steps: int = DEFAULT_STEPS,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Explanation:
    """Integrated-gradients word attributions for `task`'s predicted label on `text`.

    Runs on the model's device and in its dtype, with gradients enabled locally (so it also works
    inside `torch.inference_mode`); the model is left in the train/eval mode it was in. Costs
    about 1.5 x steps forward passes per encoder window (a backward pass counts as two).
    """
    if task not in TASKS:
        raise ExplainError(f"task must be one of {list(TASKS)}, got {task!r}")
    if steps < 1 or batch_size < 1:
        raise ExplainError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    (text,) = prepare_texts([text], model.normalization)
    if not text.strip():
        raise ExplainError("nothing to explain: the text is empty")
    windows = TextWindows(
        model.tokenizer, max_length=model.max_length, max_chunks=max_chunks, overlap=overlap
    )
    encoded = windows.encode_content(text, return_offsets_mapping=True)
    n_tokens = min(len(encoded["input_ids"]), windows.max_tokens)
    if n_tokens == 0:
        raise ExplainError("nothing to explain: the text has no tokens")
    content_ids = encoded["input_ids"][:n_tokens]
    bounds = windows.bounds(n_tokens)
    weights = [(end - previous) / n_tokens for (_, previous), (_, end) in _pairs(bounds)]

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            target, doc_logits, baseline_logits, window_attributions = _integrated_gradients(
                model,
                windows,
                [content_ids[start:end] for start, end in bounds],
                weights=weights,
                task=task,
                steps=steps,
                batch_size=batch_size,
            )
    finally:
        model.train(was_training)

    token_attributions = torch.zeros(n_tokens, dtype=torch.float64)  # (n,)
    for (start, end), attributions in zip(bounds, window_attributions, strict=True):
        token_attributions[start:end] += attributions
    words, spans = _merge_words(
        text,
        word_ids=encoded.word_ids()[:n_tokens],
        offsets=encoded["offset_mapping"][:n_tokens],
        attributions=token_attributions.tolist(),
    )
    logger.debug("explained %s of a %d-token text in %d windows", task, n_tokens, len(bounds))
    probs = model.probabilities({task: doc_logits[None]})[task][0]  # (C,)
    logit, baseline_logit = float(doc_logits[target]), float(baseline_logits[target])
    return Explanation(
        text=text,
        task=task,
        label=model.labels(task)[target],
        score=float(probs[target]),
        tokens=words,
        spans=spans,
        logit=logit,
        baseline_logit=baseline_logit,
        convergence_delta=float(token_attributions.sum()) - (logit - baseline_logit),
        steps=steps,
        windows=len(bounds),
        truncated=len(encoded["input_ids"]) > n_tokens,
    )


def _pairs(bounds: Sequence[tuple[int, int]]):
    """(previous window, window) pairs; the first window's previous one ends at 0."""
    return zip([(0, 0), *bounds[:-1]], bounds, strict=True)


def _integrated_gradients(
    model: DualHeadClassifier,
    windows: TextWindows,
    contents: list[list[int]],
    *,
    weights: list[float],
    task: str,
    steps: int,
    batch_size: int,
) -> tuple[int, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(target class, document logits (C,), baseline logits (C,), for each window the
    attributions of its content tokens (n_w,)); `contents` are the windows' content token ids."""
    embeddings = model.encoder.get_input_embeddings()
    device = embeddings.weight.device
    pad_id = model.tokenizer.pad_token_id
    if pad_id is None:
        raise ExplainError("the tokenizer has no PAD token to use as the baseline")
    head = model.heads[task]
    offset = len(windows.prefix)

    def logits_of(inputs_embeds: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, C)
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=device)  # (B, T)
        hidden = model.encoder(inputs_embeds=inputs_embeds, attention_mask=mask).last_hidden_state
        return head(mean_pool(hidden, mask).to(head.weight.dtype)).float()  # (B, C)

    def embed(ids: list[int]) -> torch.Tensor:  # (T,) -> (T, H)
        return embeddings(torch.tensor(ids, dtype=torch.long, device=device)).detach()

    inputs = [embed(windows.wrap(ids)) for ids in contents]  # [(T, H)]
    baselines = [embed(windows.wrap([pad_id] * len(ids))) for ids in contents]  # [(T, H)]

    # The target is the class that the weighted mean of window logits picks, as in predict().
    weight = torch.tensor(weights, dtype=torch.float32, device=device)[:, None]  # (W, 1)
    with torch.no_grad():
        ends = torch.stack(
            [logits_of(torch.stack([b, x])) for x, b in zip(inputs, baselines, strict=True)]
        )  # (W, 2, C): baseline, input
    baseline_logits, doc_logits = (ends * weight[:, :, None]).sum(0)  # (C,), (C,)
    target = int(doc_logits.argmax())

    alphas = (torch.arange(steps, dtype=torch.float32, device=device) + 0.5) / steps  # midpoints
    attributions = []
    for x, b, w in zip(inputs, baselines, weights, strict=True):
        gradient_sum = torch.zeros(x.shape, dtype=torch.float32, device=device)  # (T, H)
        for start in range(0, steps, batch_size):
            alpha = alphas[start : start + batch_size, None, None].to(x.dtype)  # (k, 1, 1)
            path = (b + alpha * (x - b)).requires_grad_(True)  # (k, T, H)
            (gradient,) = torch.autograd.grad(logits_of(path)[:, target].sum(), path)
            gradient_sum += gradient.float().sum(0)
        per_token = ((x - b).float() * gradient_sum / steps).sum(-1)  # (T, H) -> (T,)
        attributions.append(per_token[offset : len(per_token) - len(windows.suffix)] * w)
    return (
        target,
        doc_logits.cpu(),
        baseline_logits.cpu(),
        [a.double().cpu() for a in attributions],
    )


def _merge_words(
    text: str,
    *,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    attributions: Sequence[float],
) -> tuple[list[tuple[str, float]], list[tuple[int, int]]]:
    """Sum the attributions of a word's pieces (`##`): (word, attribution) list and spans."""
    values, spans = [], []
    previous = None
    for word_id, (start, end), value in zip(word_ids, offsets, attributions, strict=True):
        if word_id is not None and word_id == previous:  # a `##` piece of the word before
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            values[-1] += value
        else:
            spans.append((start, end))
            values.append(value)
        previous = word_id
    words = [(text[start:end], value) for value, (start, end) in zip(values, spans, strict=True)]
    return words, spans


# -- rendering ---------------------------------------------------------------------------------

TOP_TOWARD = 10
TOP_AGAINST = 5


def format_text(explanations: Sequence[Explanation]) -> str:
    """Per head: label and score, the top words for and against it, the text with them marked."""
    blocks = []
    for item in explanations:
        toward, against = item.top(TOP_TOWARD), item.top(TOP_AGAINST, against=True)
        lines = [
            f"{item.task}: {item.label} (score {item.score:.3f}; logit {item.logit:+.3f}, "
            f"baseline {item.baseline_logit:+.3f}, convergence delta "
            f"{item.convergence_delta:+.4f} with {item.steps} steps)"
        ]
        lines.append(f"  toward {item.label}:")
        lines += [f"    {value:+.4f}  {word}" for word, value in toward] or ["    (none)"]
        lines.append(f"  against {item.label}:")
        lines += [f"    {value:+.4f}  {word}" for word, value in against] or ["    (none)"]
        marks = dict.fromkeys(item.top_indices(TOP_TOWARD), "+") | dict.fromkeys(
            item.top_indices(TOP_AGAINST, against=True), "-"
        )
        pieces, cursor = [], 0
        for i, (start, end) in enumerate(item.spans):
            pieces.append(item.text[cursor:start])
            mark = marks.get(i)
            pieces.append(f"[{mark}{item.text[start:end]}]" if mark else item.text[start:end])
            cursor = end
        note = " …(not read beyond here)" if item.truncated else item.text[cursor:]
        lines.append("  marked: " + " ".join(("".join(pieces) + note).split()))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def to_json(explanations: Sequence[Explanation], *, model_version: str | None = None) -> str:
    """One JSON object: the text, the model version and one entry per head under its task name."""
    record = {
        "text": explanations[0].text if explanations else "",
        "model_version": model_version,
        **{item.task: item.to_dict() for item in explanations},
    }
    return json.dumps(record, ensure_ascii=False)


def render_html(explanations: Sequence[Explanation], *, model_version: str | None = None) -> str:
    """A self-contained HTML page: per head, every word on a background coloured by attribution
    (red: toward the predicted label, blue: against it; stronger colour, larger share)."""
    sections = []
    for item in explanations:
        scale = max((abs(value) for _, value in item.tokens), default=0.0) or 1.0
        pieces, cursor = [], 0
        for (word, value), (start, end) in zip(item.tokens, item.spans, strict=True):
            pieces.append(html.escape(item.text[cursor:start]))
            alpha = min(1.0, abs(value) / scale) * 0.85
            colour = "220, 38, 38" if value > 0 else "37, 99, 235"
            pieces.append(
                f'<span class="w" style="background: rgba({colour}, {alpha:.3f})" '
                f'title="{html.escape(word)}: {value:+.4f}">{html.escape(word)}</span>'
            )
            cursor = end
        rest = item.text[cursor:]
        if item.truncated:
            tail = f'<span class="rest" title="not read">{html.escape(rest)}</span>'
        else:
            tail = html.escape(rest)
        sections.append(
            f"<section><h2>{html.escape(item.task)}: {html.escape(item.label)} "
            f"<small>score {item.score:.3f} · logit {item.logit:+.3f} · baseline "
            f"{item.baseline_logit:+.3f} · convergence delta {item.convergence_delta:+.4f} "
            f"({item.steps} steps)</small></h2>"
            f'<p class="text">{"".join(pieces)}{tail}</p></section>'
        )
    title = "yuqing explain" + (f" · {model_version}" if model_version else "")
    return _PAGE.format(title=html.escape(title), sections="\n".join(sections))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #111; }}
h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
small {{ color: #555; font-weight: normal; }}
.text {{ line-height: 2; white-space: pre-wrap; }}
.w {{ border-radius: 3px; padding: 0 1px; }}
.rest {{ color: #999; }}
.legend span {{ padding: 0 0.4rem; border-radius: 3px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="legend">Integrated gradients over the word embeddings.
<span style="background: rgba(220, 38, 38, 0.6)">red</span> pushes toward the predicted label,
<span style="background: rgba(37, 99, 235, 0.6)">blue</span> pushes against it; hover a word for its
attribution.</p>
{sections}
</body>
</html>
"""
