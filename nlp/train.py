"""Multi-task training of the dual-head classifier on sentiment and topic data.

One story, in order: accelerator -> data (stratified dev splits, tokens) -> model -> fit ->
calibrate -> dev metrics -> save. Two ways to fit, same model class and same saved format:

- quick: the encoder stays frozen; pooled vectors are computed once and only the two heads are
  trained (minutes on a laptop CPU);
- full: the whole encoder is fine-tuned with AdamW and linear warmup/decay, batches of the two tasks
  interleaved, early stopping on the dev macro-F1 averaged over tasks.

Each batch holds one task's rows and contributes loss only to that task's head.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from nlp.dapt import POSTFIX_EVERY
from nlp.data import DataError, frame_sha256, stratified_split
from nlp.metrics import classification_metrics, classification_report_text, fit_temperature
from nlp.model import DEFAULT_BASE, TASKS, DualHeadClassifier, pad_token_ids
from nlp.report import write_training_report

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    base: str = DEFAULT_BASE  # hub id or local folder of the encoder to start from
    quick: bool = False  # frozen encoder, heads only
    epochs: int = 6  # full mode: passes over both training sets
    batch_size: int = 32  # full mode: rows per (single-task) batch
    lr: float = 1e-4  # full mode: peak AdamW learning rate
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # full mode: share of steps with linear warmup
    patience: int = 3  # full mode: epochs without dev improvement before stopping
    max_length: int = 128  # tokens per text, longer texts are truncated
    dropout: float = 0.1
    dev_fraction: float = 0.1
    seed: int = 13  # training randomness (init, shuffling, dropout)
    split_seed: int = (
        13  # the dev split; kept apart from `seed` so seed ensembles share one dev set
    )
    layer_decay: float = (
        0.85  # full mode: lr of layer l is lr * layer_decay ** (depth from the top)
    )
    label_smoothing: float = 0.0
    rdrop_alpha: float = 1.0  # full mode: weight of the symmetric KL between two dropout passes
    class_weight_power: float = 0.5  # loss weight per class (n_max / n_class) ** power; 0 = none
    sentiment_weight: float = 2.0  # full mode: loss weight of each task
    topic_weight: float = 1.0
    quick_max_rows: int | None = 4000  # quick mode: cap on training rows per task (None: all)
    quick_steps: int = 400  # quick mode: full-batch AdamW steps on the heads
    quick_lr: float = 1e-2
    embed_batch_size: int = 64  # texts per batch when computing pooled vectors
    normalization: str = "finance"  # text clean-up recorded in the model (nlp.text.prepare_texts)
    dapt_epochs: int = 0  # full mode: masked-LM epochs on the training texts before fine-tuning
    dapt_lr: float = 5e-5
    teachers: tuple[str, ...] = ()  # model dirs whose averaged probabilities are distilled
    distill_alpha: float = 1.0  # weight of KL(teacher || student); teacher-only rows get only it
    transfer: bool = True  # with teachers: each task also learns from the other task's texts
    checkpoint_dir: str | None = None  # full mode: per-epoch state; default OUT_DIR.checkpoints
    resume: bool = False  # continue from the checkpoint (and a finished DAPT) if there is one

    def __post_init__(self):
        for name in ("epochs", "batch_size", "quick_steps", "embed_batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"TrainConfig.dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.dapt_epochs < 0:
            raise ValueError(f"TrainConfig.dapt_epochs must be >= 0, got {self.dapt_epochs}")
        self.teachers = tuple(str(t) for t in self.teachers)


def train(
    *,
    sentiment: pd.DataFrame,
    topic: pd.DataFrame,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    unlabeled: list[str] | None = None,
) -> dict:
    """Train on `text,label` frames, calibrate, evaluate on dev, save to out_dir; a report dict.

    `unlabeled` texts (optional) join the training texts for domain-adaptive pretraining.
    """
    started = time.perf_counter()
    timings = {}
    accelerator = Accelerator(
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
        # A batch feeds one head (and never the encoder's pooler): DDP must allow idle parameters.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        dataloader_config=DataLoaderConfiguration(non_blocking=True),  # with pinned batches
    )
    set_seed(config.seed)
    logger.info("training (%s mode) on %s", "quick" if config.quick else "full", accelerator.device)

    # data: stratified dev split per task, quick mode caps the training rows
    frames = {"sentiment": sentiment, "topic": topic}
    splits = {}
    for task, frame in frames.items():
        missing = [column for column in ("text", "label") if column not in frame.columns]
        if missing:
            raise DataError(f"{task} data lacks column(s) {missing}; found {list(frame.columns)}")
        if frame.empty:
            raise DataError(f"no {task} rows to train on")
        train_rows, dev_rows = stratified_split(
            frame, dev_fraction=config.dev_fraction, seed=config.split_seed
        )
        if config.quick and config.quick_max_rows and len(train_rows) > config.quick_max_rows:
            train_rows = _stratified_sample(train_rows, n=config.quick_max_rows, seed=config.seed)
        splits[task] = {"train": train_rows, "dev": dev_rows}

    checkpoints = Path(config.checkpoint_dir or f"{Path(out_dir)}.checkpoints")
    encoder_source, extra_metadata = config.base, {}
    if config.dapt_epochs and not config.quick:
        dapt_started = time.perf_counter()
        encoder_source, extra_metadata["dapt"] = _domain_adapt(
            [*splits["sentiment"]["train"]["text"], *splits["topic"]["train"]["text"]]
            + list(unlabeled or []),
            config=config,
            folder=checkpoints / "dapt",
            accelerator=accelerator,
        )
        timings["dapt_s"] = time.perf_counter() - dapt_started
    model = DualHeadClassifier.from_base(
        encoder_source,
        sentiment_labels=sorted(frames["sentiment"]["label"].unique()),
        topic_labels=sorted(frames["topic"]["label"].unique()),
        max_length=config.max_length,
        dropout=config.dropout,
        normalization=config.normalization,
    )
    model.base = config.base  # the named base; the adapted folder is a training intermediate
    token_ids, targets = {}, {}
    for task in TASKS:
        label_index = {label: i for i, label in enumerate(model.labels(task))}
        token_ids[task], targets[task] = {}, {}
        for part, rows in splits[task].items():
            token_ids[task][part] = model.tokenize(rows["text"])
            targets[task][part] = torch.tensor(rows["label"].map(label_index).to_numpy())  # (N,)
    soft = None
    if config.teachers and not config.quick:
        teacher_started = time.perf_counter()
        soft = _teacher_targets(model, splits=splits, token_ids=token_ids, targets=targets,
                                config=config, device=accelerator.device)  # fmt: skip
        extra_metadata["distilled_from"] = list(config.teachers)
        timings["teachers_s"] = time.perf_counter() - teacher_started
    timings["prepare_s"] = time.perf_counter() - started

    # fit
    fit_started = time.perf_counter()
    if config.quick:
        model.to(accelerator.device)
        pooled = {
            task: {
                part: model.embed(
                    ids, batch_size=config.embed_batch_size, progress=f"embed {task} {part}"
                )
                for part, ids in token_ids[task].items()
            }
            for task in TASKS
        }
        timings["embed_s"] = time.perf_counter() - fit_started
        history = _fit_heads(
            model, pooled=pooled, targets=targets, config=config, device=accelerator.device
        )
        dev_pooled = {task: pooled[task]["dev"] for task in TASKS}
    else:
        model, dev_pooled, history = _fine_tune(
            model,
            token_ids=token_ids,
            targets=targets,
            soft=soft,
            config=config,
            accelerator=accelerator,
            checkpoints=checkpoints,
        )
    timings["fit_s"] = time.perf_counter() - fit_started

    # calibrate one temperature per head on dev, then dev metrics with calibrated probabilities
    model.eval()
    dev_metrics, reports, dev_logits = {}, [], {}
    with torch.inference_mode():
        for task in TASKS:
            logits = model.classify(dev_pooled[task].to(accelerator.device))[task].float().cpu()
            dev_logits[task] = logits.numpy()  # (N_dev, C), before temperature
            model.set_temperature(task, fit_temperature(logits, targets[task]["dev"].numpy()))
            probs = model.probabilities({task: logits})[task].numpy()  # (N_dev, C)
            dev_metrics[task] = classification_metrics(
                splits[task]["dev"]["label"].tolist(), probs, model.labels(task)
            )
            reports.append(f"== {task} (dev) ==\n{classification_report_text(dev_metrics[task])}")
            logger.info(
                "dev %s: accuracy %.4f, macro-F1 %.4f, ECE %.4f, temperature %.3f",
                task,
                dev_metrics[task]["accuracy"],
                dev_metrics[task]["macro_f1"],
                dev_metrics[task]["ece"],
                model.temperature(task),
            )

    # save on the main process only
    provenance = {
        "quick": config.quick,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_sha256": {task: frame_sha256(frame) for task, frame in frames.items()},
        "n_rows": {
            task: {"total": len(frames[task]), **{p: len(r) for p, r in splits[task].items()}}
            for task in TASKS
        },
        "dev": dev_metrics,
        "config": dataclasses.asdict(config),
        **extra_metadata,
    }
    timings["total_s"] = time.perf_counter() - started
    report = {
        "model_dir": str(out_dir),
        "model_version": model.current_version(),
        "base": config.base,
        "temperatures": {task: model.temperature(task) for task in TASKS},
        **provenance,
        "timings": timings,
        "history": history,
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save(
            out_dir,
            metadata=provenance,
            extra_files={
                "metrics.json": json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                "report.txt": "\n".join(reports),
            },
        )
        # Dev logits and labels, for ensembles and later analysis of this run.
        np.savez_compressed(
            Path(out_dir) / "dev_predictions.npz",
            **{f"{task}_logits": dev_logits[task] for task in TASKS},
            **{f"{task}_target": targets[task]["dev"].numpy() for task in TASKS},
        )
        write_training_report(
            out_dir,
            report=report,
            history=history,
            dev={
                task: (
                    targets[task]["dev"].numpy(),
                    dev_logits[task].argmax(axis=1),
                    model.labels(task),
                )
                for task in TASKS
            },
        )
        if not config.checkpoint_dir:  # our own scratch folder: the model dir now holds the result
            shutil.rmtree(checkpoints, ignore_errors=True)
    accelerator.wait_for_everyone()
    logger.info("trained %s in %.1fs", report["model_version"], timings["total_s"])
    return report


def _domain_adapt(
    texts: list[str], *, config: TrainConfig, folder: Path, accelerator: Accelerator
) -> tuple[str, dict]:
    """Masked-LM pretraining of the base on the training texts; the adapted folder and a record."""
    from nlp.dapt import DONE_MARKER, adapt, is_adapted

    if config.resume and is_adapted(folder):
        logger.info("resuming: reusing the domain-adapted encoder in %s", folder)
    else:
        adapt(
            texts,
            base=config.base,
            out_dir=folder,
            epochs=config.dapt_epochs,
            lr=config.dapt_lr,
            max_length=config.max_length,
            normalization=config.normalization,
            seed=config.seed,
            accelerator=accelerator,
        )
    record = json.loads((folder / DONE_MARKER).read_text())
    return str(folder), {k: record[k] for k in ("texts", "epochs", "lr", "history")}


def _teacher_targets(
    model: DualHeadClassifier,
    *,
    splits: dict,
    token_ids: dict,
    targets: dict,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Average calibrated teacher probabilities for every training row of each task.

    With `transfer`, each task's training rows are extended (in place, in `token_ids` and
    `targets`) with the other task's training texts, labeled -1: they learn from the teachers
    alone. Dev rows are never used. Returns {task: (N_train, C)} aligned with the extended rows.
    """
    from nlp.inference import Classifier

    own = {task: list(splits[task]["train"]["text"]) for task in TASKS}
    texts = {
        task: own[task] + ([t for other in TASKS if other != task for t in own[other]]
                           if config.transfer else [])
        for task in TASKS
    }  # fmt: skip
    sums = {task: None for task in TASKS}
    for teacher_dir in config.teachers:
        teacher = Classifier.load(teacher_dir, device=str(device))
        for task in TASKS:
            if teacher.model.labels(task) != model.labels(task):
                raise DataError(
                    f"teacher {teacher_dir} has {task} labels {teacher.model.labels(task)}, "
                    f"the student {model.labels(task)}"
                )
            probs = torch.from_numpy(
                getattr(teacher.predict(texts[task], batch_size=256), f"{task}_probs")
            )  # (N, C)
            sums[task] = probs if sums[task] is None else sums[task] + probs
        del teacher
    for task in TASKS:
        extra = texts[task][len(own[task]) :]
        if extra:
            token_ids[task]["train"] = token_ids[task]["train"] + model.tokenize(extra)
            targets[task]["train"] = torch.cat(
                [targets[task]["train"], torch.full((len(extra),), -1, dtype=torch.long)]
            )
        logger.info(
            "distilling %s from %d teacher(s): %d labeled + %d teacher-only rows",
            task, len(config.teachers), len(own[task]), len(extra),
        )  # fmt: skip
    return {task: (sums[task] / len(config.teachers)).float() for task in TASKS}


def _fit_heads(
    model: DualHeadClassifier,
    *,
    pooled: dict,
    targets: dict,
    config: TrainConfig,
    device: torch.device,
) -> list[dict]:
    """Quick mode: full-batch AdamW on the two heads over frozen pooled vectors.

    The encoder is frozen, so every process fits the same heads on the same vectors; no sync needed.
    """
    model.requires_grad_(False)
    model.heads.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        model.heads.parameters(), lr=config.quick_lr, weight_decay=config.weight_decay
    )
    features = {task: pooled[task]["train"].to(device) for task in TASKS}  # {task: (N, H)}
    labels = {task: targets[task]["train"].to(device) for task in TASKS}  # {task: (N,)}
    model.train()
    progress = tqdm(range(config.quick_steps), desc="fit heads", unit="step")
    history, every = [], max(1, config.quick_steps // 50)
    for step in progress:
        # each task's rows feed only their own head
        losses = {
            task: F.cross_entropy(model.classify(features[task])[task], labels[task])
            for task in TASKS
        }
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.set_postfix(
            {task: f"{value.item():.3f}" for task, value in losses.items()}, refresh=False
        )
        if step % every == 0 or step == config.quick_steps - 1:
            history.append({"step": step + 1, **{f"{t}_loss": v.item() for t, v in losses.items()}})
    model.requires_grad_(True)
    return history


def _fine_tune(
    model: DualHeadClassifier,
    *,
    token_ids: dict,
    targets: dict,
    soft: dict[str, torch.Tensor] | None,
    config: TrainConfig,
    accelerator: Accelerator,
    checkpoints: Path,
) -> tuple[DualHeadClassifier, dict[str, torch.Tensor], list[dict]]:
    """Full mode: fine-tune on interleaved single-task batches; best model and its dev vectors.

    After every epoch the accelerate state (weights, optimizer, scheduler, RNGs) and the
    early-stopping bookkeeping go to `checkpoints`; with `config.resume` training continues
    from the last finished epoch there.
    """
    model_labels = {task: model.labels(task) for task in TASKS}

    def rows(task: str) -> list[tuple]:
        labels = targets[task]["train"].tolist()
        if soft is None:
            return list(zip(token_ids[task]["train"], labels, strict=True))
        return list(zip(token_ids[task]["train"], labels, soft[task], strict=True))

    loaders = {
        task: DataLoader(
            rows(task),
            batch_size=config.batch_size,
            shuffle=True,
            collate_fn=partial(_collate, pad_token_id=model.tokenizer.pad_token_id),
            pin_memory=accelerator.device.type == "cuda",  # copied without a stream sync
        )
        for task in TASKS
    }
    optimizer = torch.optim.AdamW(_parameter_groups(model, config), lr=config.lr)
    total_steps = config.epochs * sum(len(loader) for loader in loaders.values())
    scheduler = get_linear_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(config.warmup_fraction * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, scheduler, *prepared = accelerator.prepare(
        model, optimizer, scheduler, *loaders.values()
    )
    loaders = dict(zip(loaders, prepared, strict=True))
    class_weights = {
        task: _class_weights(
            targets[task]["train"][targets[task]["train"] >= 0],
            n_classes=len(model_labels[task]),
            power=config.class_weight_power,
        ).to(accelerator.device)
        for task in TASKS
    }
    task_weights = {"sentiment": config.sentiment_weight, "topic": config.topic_weight}

    def task_loss(
        logits: torch.Tensor, labels: torch.Tensor, task: str, teacher: torch.Tensor | None
    ) -> torch.Tensor:
        """Weighted CE on labeled rows (label -1: none), plus KL to the teachers when given."""
        logits = logits.float()  # (B, C)
        # cross_entropy's weighted mean, written out so that a batch without labeled rows
        # gives 0 without asking the device (`(labels >= 0).any()` would stall the host)
        per_row = F.cross_entropy(
            logits,
            labels,
            weight=class_weights[task],
            label_smoothing=config.label_smoothing,
            ignore_index=-1,
            reduction="none",
        )  # (B,), 0 where unlabeled
        row_weight = class_weights[task][labels.clamp(min=0)] * (labels >= 0)  # (B,)
        loss = per_row.sum() / row_weight.sum().clamp_min(1e-12)
        if teacher is not None:
            log_student = F.log_softmax(logits, dim=-1)
            loss = loss + config.distill_alpha * F.kl_div(
                log_student, teacher.float().clamp_min(1e-8).log(), log_target=True,
                reduction="batchmean",
            )  # fmt: skip
        return task_weights[task] * loss

    best_score, best_state, best_dev_pooled, epochs_without_gain = -1.0, None, None, 0
    history, first_epoch = [], 0
    state_file, best_file = checkpoints / "trainer_state.json", checkpoints / "best.safetensors"
    if config.resume and state_file.is_file():
        state = json.loads(state_file.read_text())
        accelerator.load_state(str(checkpoints / "last"))
        first_epoch, history = state["epoch"], state["history"]
        best_score, epochs_without_gain = state["best_score"], state["epochs_without_gain"]
        best_state = load_file(best_file)
        logger.info("resuming after epoch %d (best mean macro-F1 %.4f)", first_epoch, best_score)
        if epochs_without_gain >= config.patience:
            first_epoch = config.epochs  # it had already stopped early
    for epoch in range(first_epoch, config.epochs):
        # the same seeded task order on every process, so all of them step through matching batches
        schedule = [task for task in TASKS for _ in range(len(loaders[task]))]
        random.Random(config.seed + epoch).shuffle(schedule)
        batches = {task: iter(loader) for task, loader in loaders.items()}
        epoch_losses = {task: [] for task in TASKS}
        model.train()
        progress = tqdm(
            schedule,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not accelerator.is_local_main_process,
        )
        for step, task in enumerate(progress):
            input_ids, attention_mask, labels, teacher = next(batches[task])
            logits = model(input_ids=input_ids, attention_mask=attention_mask)[task]  # (B, C)
            loss = task_loss(logits, labels, task, teacher)
            if config.rdrop_alpha > 0:  # R-Drop: a second dropout pass must agree with the first
                again = model(input_ids=input_ids, attention_mask=attention_mask)[task]  # (B, C)
                loss = (loss + task_loss(again, labels, task, teacher)) / 2
                loss = loss + config.rdrop_alpha * _symmetric_kl(logits, again)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # losses stay on the device: reading one waits for the whole step to finish, so
            # the host could not queue the next step while the device works on this one
            epoch_losses[task].append(loss.detach())
            if step % POSTFIX_EVERY == 0:  # (an iterated tqdm's n lags between refreshes)
                progress.set_postfix(task=task[:4], loss=f"{loss.item():.3f}", refresh=False)

        unwrapped = accelerator.unwrap_model(model)
        dev_pooled = {
            task: unwrapped.embed(token_ids[task]["dev"], batch_size=config.embed_batch_size)
            for task in TASKS
        }
        scores = {
            task: _macro_f1(unwrapped, dev_pooled[task], targets[task]["dev"], task=task)
            for task in TASKS
        }
        score = float(np.mean(list(scores.values())))
        logger.info("epoch %d: dev macro-F1 %s, mean %.4f", epoch + 1, scores, score)
        history.append(
            {
                "epoch": epoch + 1,
                **{f"{t}_loss": torch.stack(v).mean().item() for t, v in epoch_losses.items() if v},
                **{f"{t}_dev_macro_f1": f1 for t, f1 in scores.items()},
            }
        )
        improved = score > best_score
        if improved:
            best_score, best_dev_pooled, epochs_without_gain = score, dev_pooled, 0
            best_state = {
                k: v.detach().cpu().clone().contiguous() for k, v in unwrapped.state_dict().items()
            }
        else:
            epochs_without_gain += 1
        _save_checkpoint(
            accelerator,
            checkpoints,
            best_state=best_state if improved else None,
            state={
                "epoch": epoch + 1,
                "history": history,
                "best_score": best_score,
                "epochs_without_gain": epochs_without_gain,
            },
        )
        if epochs_without_gain >= config.patience:
            logger.info(
                "early stop after epoch %d (best mean macro-F1 %.4f)", epoch + 1, best_score
            )
            break

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state)
    if best_dev_pooled is None:  # resumed after the last epoch: recompute the dev vectors
        best_dev_pooled = {
            task: unwrapped.embed(token_ids[task]["dev"], batch_size=config.embed_batch_size)
            for task in TASKS
        }
    return unwrapped, best_dev_pooled, history


def _save_checkpoint(
    accelerator: Accelerator, folder: Path, *, best_state: dict | None, state: dict
) -> None:
    """Per-epoch checkpoint: accelerate state in `last/`, best weights, bookkeeping written last."""
    accelerator.save_state(str(folder / "last"))
    if accelerator.is_main_process:
        if best_state is not None:
            save_file(best_state, folder / ".best.tmp")
            os.replace(folder / ".best.tmp", folder / "best.safetensors")
        (folder / ".trainer_state.tmp").write_text(json.dumps(state))
        os.replace(folder / ".trainer_state.tmp", folder / "trainer_state.json")
    accelerator.wait_for_everyone()


def _parameter_groups(model: DualHeadClassifier, config: TrainConfig) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; layer-wise lr decay from the top.

    Depth 0 is the embeddings, depth l the l-th transformer layer, and the heads sit on top
    (depth L + 1) with the full learning rate; layer l gets lr * layer_decay ** (L + 1 - l).
    """
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    n_layers = model.encoder.config.num_hidden_layers
    groups: dict[tuple[int, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth = n_layers + 1
        if ".embeddings." in f".{name}":
            depth = 0
        elif match := re.search(r"\.layers?\.(\d+)\.", name):
            depth = int(match.group(1)) + 1
        groups.setdefault((depth, name.endswith(no_decay)), []).append(parameter)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if exempt else config.weight_decay,
            "lr": config.lr * config.layer_decay ** (n_layers + 1 - depth),
        }
        for (depth, exempt), params in sorted(groups.items())
    ]


def _class_weights(target_ids: torch.Tensor, *, n_classes: int, power: float) -> torch.Tensor:
    """(n_max / n_class) ** power per class, normalised to mean 1 over the training rows."""
    counts = torch.bincount(target_ids, minlength=n_classes).float().clamp(min=1.0)  # (C,)
    weights = (counts.max() / counts) ** power  # (C,)
    return weights / (weights[target_ids].mean())


def _symmetric_kl(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(KL(p||q) + KL(q||p)) / 2 between the softmaxes of two logit tensors (B, C)."""
    p, q = F.log_softmax(first.float(), dim=-1), F.log_softmax(second.float(), dim=-1)
    kl_pq = F.kl_div(q, p, log_target=True, reduction="batchmean")
    kl_qp = F.kl_div(p, q, log_target=True, reduction="batchmean")
    return (kl_pq + kl_qp) / 2


def _macro_f1(
    model: DualHeadClassifier, pooled: torch.Tensor, target_ids: torch.Tensor, *, task: str
) -> float:
    """Dev macro-F1 of one head from pooled vectors (N, H) and true label ids (N,)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model.eval().classify(pooled.to(device))[task].float().cpu()  # (N, C)
    labels = model.labels(task)
    y_true = [labels[i] for i in target_ids.tolist()]
    return classification_metrics(y_true, logits.numpy(), labels)["macro_f1"]


def _collate(
    rows: list[tuple], *, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(ids, label) or (ids, label, teacher probs) rows -> padded ids, mask, labels, teacher."""
    columns = list(zip(*rows, strict=True))
    input_ids, attention_mask = pad_token_ids(columns[0], pad_token_id=pad_token_id)  # (B, T)
    teacher = torch.stack(columns[2]) if len(columns) > 2 else None  # (B, C)
    return input_ids, attention_mask, torch.tensor(columns[1]), teacher  # labels (B,)


def _stratified_sample(frame: pd.DataFrame, *, n: int, seed: int) -> pd.DataFrame:
    """n rows keeping label proportions (every label keeps at least one row)."""
    fraction = n / len(frame)
    picked = [
        group.sample(n=max(1, round(len(group) * fraction)), random_state=seed)
        for _, group in frame.groupby("label", sort=True)
    ]
    return pd.concat(picked).sort_index().reset_index(drop=True)


def code_version() -> str:
    """`git describe` of the checkout this code runs from, else the installed package version."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return described.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"yuqing {version('yuqing')}"
    except PackageNotFoundError:
        return "unknown"
