"""Helpers for tests across the project: a tiny random-init encoder that trains in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from nlp.model import DEFAULT_BASE, resolve_base


def make_tiny_base(path: str | os.PathLike) -> str:
    """Save a 2-layer, 32-wide random BERT with the MiniLM tokenizer into `path`; returns the path.

    Pass it as `TrainConfig(base=...)`: the weights are meaningless, shapes and code paths real.
    """
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(DEFAULT_BASE))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = BertModel(config)
    encoder.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
