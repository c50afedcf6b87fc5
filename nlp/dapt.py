"""Domain-adaptive pretraining: continue the encoder's masked-LM training on in-domain texts.

The encoder saw general web text; finance wires have their own vocabulary (cashtags, tickers,
"beats estimates", "guidance cut"). A few epochs of masked-LM on the texts we will classify,
labeled or not, move the encoder towards them before fine-tuning (Gururangan et al., 2020,
"Don't Stop Pretraining"). The result is a plain Hugging Face folder that `--base` accepts.

Sentence-transformer checkpoints such as all-MiniLM-L6-v2 ship no MLM head; transformers
initialises it (decoder tied to the word embeddings), and it learns within the first epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    get_linear_schedule_with_warmup,
)

from nlp.model import ModelError, prepare_texts, resolve_base

logger = logging.getLogger(__name__)

POSTFIX_EVERY = 50  # steps between progress-bar loss readings (each one waits for the device)

DONE_MARKER = "dapt.json"


def adapt(
    texts: list[str],
    *,
    base: str,
    out_dir: str | os.PathLike,
    epochs: int = 3,
    lr: float = 5e-5,
    batch_size: int = 64,
    mlm_probability: float = 0.15,
    max_length: int = 128,
    normalization: str = "finance",
    seed: int = 13,
    accelerator: Accelerator | None = None,
) -> Path:
    """Masked-LM training of `base` on `texts`; writes the encoder and tokenizer to `out_dir`.

    Returns `out_dir`. Texts are cleaned with the same normalization the classifier will use.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    texts = [t for t in prepare_texts(texts, normalization) if t.strip()]
    if len(texts) < batch_size:
        raise ModelError(f"domain adaptation needs at least {batch_size} texts, got {len(texts)}")
    accelerator = accelerator or Accelerator(
        mixed_precision="bf16" if torch.cuda.is_available() else "no"
    )
    source = resolve_base(base)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.mask_token is None:
        raise ModelError(f"{base} has no [MASK] token, so it cannot be trained as a masked LM")
    model = AutoModelForMaskedLM.from_pretrained(source, dtype=torch.float32)

    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        [{"input_ids": ids} for ids in encoded],
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=generator,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * total), total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    model.train()
    progress = tqdm(
        total=total, desc="domain-adaptive MLM", unit="batch",
        disable=not accelerator.is_local_main_process,
    )  # fmt: skip
    history = []
    for epoch in range(epochs):
        losses = []
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())  # read once per epoch: a read waits for the device
            progress.update()
            if progress.n % POSTFIX_EVERY == 0:
                progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
        mean = torch.stack(losses).mean().item()
        history.append(
            {"epoch": epoch + 1, "mlm_loss": mean, "perplexity": math.exp(min(mean, 50))}
        )
        logger.info("DAPT epoch %d: MLM loss %.3f", epoch + 1, mean)
    progress.close()

    out_dir = Path(out_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = out_dir.parent / f".{out_dir.name}.saving-{uuid.uuid4().hex[:8]}"
        try:
            accelerator.unwrap_model(model).save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / DONE_MARKER).write_text(
                json.dumps(
                    {
                        "base": base,
                        "texts": len(texts),
                        "epochs": epochs,
                        "lr": lr,
                        "mlm_probability": mlm_probability,
                        "normalization": normalization,
                        "history": history,
                    },
                    indent=2,
                )
            )
            if out_dir.exists():
                shutil.rmtree(out_dir)
            staging.rename(out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out_dir


def is_adapted(path: str | os.PathLike) -> bool:
    """True when `path` holds a finished adaptation (the marker is written last)."""
    return (Path(path) / DONE_MARKER).is_file()
