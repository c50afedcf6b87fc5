"""High-throughput inference: raw strings in, both heads' labels and calibrated scores out.

The model is not the bottleneck of a naive loop; tokenization, padding, host-to-device copies
and Python work per item are. The engine removes each of them:

1. The input is streamed in chunks (`chunk_size` texts), so memory stays bounded for any backlog.
2. Chunks are tokenized ahead of the device (`prefetch` chunks): on CUDA by a pool of worker
   processes (no GIL contention with the thread that drives the GPU), on CPU by one thread.
   `nlp.tokenize_worker.Encoder` returns flat id arrays, never padded Python lists, and for
   BERT-style WordPiece tokenizers it serves repeated words from an exact word cache.
3. Token ids come back as one padded array per chunk. Rows are sorted by length (numpy, no
   Python per item) and cut into batches of similar length, each padded only to its own longest
   row, rounded up to a multiple of 8 (tensor-core friendly shapes, few distinct shapes).
4. Each chunk's ids go to the device in one pinned, non-blocking copy; batches are slices of it,
   gathered on the device. The attention mask is built on the device from the lengths.
5. One forward serves both heads: encoder (SDPA attention) -> mean pooling -> two linear heads ->
   temperature -> softmax. Results are scattered back to input order on the device and copied
   to the host once per chunk.
6. On CUDA each batch shape's forward is captured once as a CUDA graph and replayed, so a batch
   costs one launch instead of a few hundred from Python.

Texts longer than the encoder's window (rare in news feeds) take the windowed path of
`nlp.inference.Classifier` with the same model, so a long article is still read in full.
On CUDA the encoder runs on an fp16 copy of the weights by default; mixed precision (LayerNorm
and the residual stream in fp32) is there too, 1.16x slower on the H200 (see `PRECISIONS`).
On CPU it runs in fp32.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import itertools
import logging
import multiprocessing
import os
import queue
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nlp.inference import Classifier, Predictions, TextWindows, special_tokens_around
from nlp.model import TASKS, DualHeadClassifier, prepare_texts
from nlp.tokenize_worker import Encoder, encode_in_worker, init_worker

logger = logging.getLogger(__name__)

_WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


# name -> (dtype of the weight copy, mixed). Mixed: matmuls and attention in the low precision
# under autocast, LayerNorm and therefore the residual stream in fp32. On the H200 mixed fp16
# agreed with the check no better than the all-fp16 encoder and ran 1.16x slower, so "auto" on
# CUDA is "fp16-pure" (docs/benchmarks.md).
PRECISIONS: dict[str, tuple[torch.dtype, bool]] = {
    "fp16": (torch.float16, True),
    "bf16": (torch.bfloat16, True),
    "fp16-pure": (torch.float16, False),
    "bf16-pure": (torch.bfloat16, False),
    "fp32": (torch.float32, False),
}


@dataclass(frozen=True)
class EngineConfig:
    # texts tokenized (ahead) and scored together; None: 16384 on CUDA, 8192 elsewhere. Longer
    # chunks sort more texts by length, so batches carry less padding (docs/benchmarks.md)
    chunk_size: int | None = None
    first_chunk: int = 1024  # the first chunk is smaller, so the device starts sooner
    # chunks double from `first_chunk` up to `chunk_size`, so the tokenizer keeps ahead of the
    # device from the start; False: `first_chunk`, then `chunk_size` at once
    grow: bool = True
    batch_size: int | None = None  # rows per forward at most; None: 2048 on CUDA, 64 on CPU
    max_batch_tokens: int | None = None  # rows x padded length at most; None: batch_size x 64
    pad_multiple: int = 8
    prefetch: int = 2  # chunks tokenized ahead of the device
    # tokenizer processes; 0: one thread in-process; None: 2 on CUDA with >= 8 cores, else 0
    tokenizer_workers: int | None = None
    word_cache: bool = True  # exact word cache for WordPiece tokenizers (tokenize_worker)
    # one of PRECISIONS; "auto": "fp16-pure" on CUDA, "fp32" elsewhere (any value on any device)
    precision: str = "auto"
    compile: bool = False  # torch.compile the scoring function (pays off for long backlogs)
    # CUDA only: replay one captured CUDA graph per batch shape instead of launching the forward's
    # kernels from Python one by one (rows padded up to a multiple of `graph_rows`); None: on CUDA
    # unless `compile`, off elsewhere
    cuda_graphs: bool | None = None
    graph_rows: int = 256


@dataclass
class ChunkResult:
    """Predictions for one chunk of the input, in input order (indices into the labels)."""

    start: int  # position of the chunk's first text in the whole input
    sentiment_id: np.ndarray  # (n,) int64
    sentiment_probs: np.ndarray  # (n, n_sentiment) float32
    topic_id: np.ndarray  # (n,) int64
    topic_probs: np.ndarray  # (n, n_topic) float32

    def __len__(self) -> int:
        return len(self.sentiment_id)


@dataclass
class _Tokenized:
    start: int
    texts: list  # the chunk as given
    ids: np.ndarray  # (m, L_max) int32: the rows in `order`, right-padded
    lengths: np.ndarray  # (m,) int64: their lengths, ascending
    order: np.ndarray  # (m,) the chunk rows in length order (long texts left out)
    long_rows: np.ndarray  # rows whose text exceeds the window: scored by the windowed path


@dataclass
class _InFlight:
    start: int
    probs: dict[str, np.ndarray]  # per task (n, classes); filled once `done` has fired
    done: torch.cuda.Event | None  # None: already complete (CPU)


class Engine:
    """Scores texts with a `DualHeadClassifier` at device speed; see the module docstring."""

    def __init__(
        self,
        model: DualHeadClassifier,
        *,
        device: str | torch.device | None = None,
        config: EngineConfig | None = None,
    ):
        config = config or EngineConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        cuda = self.device.type == "cuda"
        batch_size = config.batch_size or (2048 if cuda else 64)
        graphs = config.cuda_graphs
        if graphs and not cuda:
            raise ValueError(f"cuda_graphs needs a CUDA device, not {self.device}")
        if graphs and config.compile:
            raise ValueError("choose one of compile and cuda_graphs")
        self.config = dataclasses.replace(
            config,
            chunk_size=config.chunk_size or (16384 if cuda else 8192),
            batch_size=batch_size,
            max_batch_tokens=config.max_batch_tokens or batch_size * 64,
            cuda_graphs=(cuda and not config.compile) if graphs is None else graphs,
        )
        self.model = model.to(self.device).eval()
        self.labels = {task: np.array(model.labels(task), dtype=object) for task in TASKS}
        self.model_version = model.model_version
        self.tokenizer = model.tokenizer
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.windows = TextWindows(self.tokenizer, max_length=model.max_length)
        prefix, suffix = special_tokens_around(self.tokenizer)
        self._encoder_kwargs = {
            "tokenizer_json": self.tokenizer.backend_tokenizer.to_str(),
            "max_length": model.max_length,
            "normalization": model.normalization,
            "prefix": prefix,
            "suffix": suffix,
            "word_cache": self.config.word_cache,
        }
        self._encoder = Encoder(**self._encoder_kwargs)
        workers = self.config.tokenizer_workers
        if workers is None:  # see docs/benchmarks.md
            workers = 2 if cuda and (os.cpu_count() or 1) >= 8 else 0
        self._workers, self._pool = workers, None
        # The weights are cast once (autocast alone would re-cast every weight on every forward);
        # the model itself keeps fp32 for training-style uses such as integrated gradients.
        precision = self.config.precision
        if precision == "auto":
            precision = "fp16-pure" if cuda else "fp32"
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision must be 'auto' or one of {list(PRECISIONS)}, got {precision!r}"
            )
        self.precision = precision
        # texts longer than the window: the windowed classifier (bf16 on CUDA unless precision fp32)
        self._windowed = Classifier(model=model, device=self.device, fp32=precision == "fp32")
        self.encoder, self._autocast_dtype = reduced_precision(model.encoder, precision)
        temperatures = [model.temperature(task) for task in TASKS]
        self._inverse_t = torch.tensor(temperatures, device=self.device).reciprocal()
        self._score = self._score_batch
        if self.config.cuda_graphs:
            rows = min(self.config.graph_rows, batch_size)  # small batches: no padding beyond them
            self._score = _GraphedScore(self._score_batch, row_multiple=rows)
        elif self.config.compile:
            self._score = torch.compile(self._score_batch, dynamic=False)

    @classmethod
    def load(
        cls, model_dir, *, device: str | None = None, config: EngineConfig | None = None
    ) -> Engine:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(DualHeadClassifier.load(model_dir, device=device), device=device, config=config)

    # -- public API ----------------------------------------------------------------------------

    @property
    def cuda_graphs(self) -> dict | None:
        """With `cuda_graphs`: the graphs captured so far and whether capture failed (the engine
        then scores eagerly); None otherwise."""
        if not isinstance(self._score, _GraphedScore):
            return None
        return {"captured": len(self._score._graphs), "eager": self._score.eager}

    def predict(self, texts: Iterable[str]) -> Predictions:
        """All predictions in input order (holds the results, not the texts, in memory)."""
        parts = list(self.stream(texts))
        probs = {
            task: np.concatenate([getattr(p, f"{task}_probs") for p in parts])
            if parts
            else np.zeros((0, len(self.labels[task])), dtype=np.float32)
            for task in TASKS
        }
        fields = {}
        for task in TASKS:
            chosen = probs[task].argmax(axis=1)  # (N,)
            fields[task] = self.labels[task][chosen]
            fields[f"{task}_score"] = probs[task][np.arange(len(chosen)), chosen]
            fields[f"{task}_probs"] = probs[task]
        return Predictions(**fields)

    def stream(self, texts: Iterable[str]) -> Iterator[ChunkResult]:
        """Chunk results in input order; tokenization of later chunks overlaps device work."""
        chunks: queue.Queue = queue.Queue(maxsize=max(1, self.config.prefetch))
        done = object()
        stop = threading.Event()
        pool = self._tokenizer_pool()

        def produce() -> None:
            try:
                iterator, start = iter(texts), 0
                limit = self.config.chunk_size
                size = min(self.config.first_chunk, limit)
                pending: collections.deque = collections.deque()
                while not stop.is_set():
                    chunk = list(itertools.islice(iterator, size))
                    size = min(size * 2, limit) if self.config.grow else limit
                    if chunk:
                        pending.append((start, chunk, self._submit(pool, chunk)))
                        start += len(chunk)
                    if pending and (not chunk or len(pending) > 1):
                        chunks.put(self._collect(*pending.popleft()))
                    if not chunk and not pending:
                        break
                chunks.put(done)
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                chunks.put(error)

        def tokenized() -> Iterator[_Tokenized]:
            while (item := chunks.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item

        worker = threading.Thread(target=produce, name="yuqing-tokenize", daemon=True)
        worker.start()
        try:
            yield from self._score_chunks(tokenized())
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    chunks.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)

    def close(self) -> None:
        """Stop the tokenizer worker processes (they also stop when the process exits)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- steps ---------------------------------------------------------------------------------

    def _tokenizer_pool(self) -> ProcessPoolExecutor | None:
        if self._workers and self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(self._encoder_kwargs,),
            )
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
            # Start every worker now, each with a single-threaded Rust tokenizer: the pool is
            # the parallelism, and N workers x all-core thread pools would oversubscribe the CPU.
            saved = {key: os.environ.get(key) for key in _WORKER_ENV}
            os.environ.update(_WORKER_ENV)
            try:
                with _main_module_hidden():  # processes start on submit
                    futures = [self._pool.submit(os.getpid) for _ in range(self._workers)]
                for future in futures:
                    future.result()
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        return self._pool

    def _submit(self, pool: ProcessPoolExecutor | None, chunk: list) -> list | None:
        if pool is None:
            return None
        size = -(-len(chunk) // self._workers)
        return [
            pool.submit(encode_in_worker, chunk[i : i + size]) for i in range(0, len(chunk), size)
        ]

    def _collect(self, start: int, chunk: list, futures: list | None) -> _Tokenized:
        if futures is None:
            flat, lengths = self._encoder.encode(chunk)
        else:
            parts = [future.result() for future in futures]
            flat = np.concatenate([part[0] for part in parts])
            lengths = np.concatenate([part[1] for part in parts])
        return self._layout(start, chunk, flat, lengths)

    def _layout(self, start: int, chunk: list, flat: np.ndarray, lengths: np.ndarray) -> _Tokenized:
        """Rows in length order, right-padded to the longest: batch b is rows [begin, end)."""
        long_rows = self._long_rows(chunk, lengths)
        order = np.argsort(lengths, kind="stable")  # (n,) shortest first
        if len(long_rows):
            order = order[~np.isin(order, long_rows)]
        sorted_lengths = lengths[order].astype(np.int64)  # (m,)
        width = int(sorted_lengths[-1]) if len(order) else 1
        ids = np.full((len(order), width), self.pad_id, dtype=np.int32)  # (m, L_max)
        starts = np.cumsum(lengths, dtype=np.int64) - lengths  # (n,) where each text's ids begin
        row = np.repeat(np.arange(len(order)), sorted_lengths)
        column = np.arange(len(row)) - np.repeat(
            np.cumsum(sorted_lengths) - sorted_lengths, sorted_lengths
        )
        ids[row, column] = flat[np.repeat(starts[order], sorted_lengths) + column]
        return _Tokenized(start, chunk, ids, sorted_lengths, order, long_rows)

    def _long_rows(self, chunk: list, lengths: np.ndarray) -> np.ndarray:
        """Rows whose text needs more than one window (their ids were truncated)."""
        full = np.flatnonzero(lengths >= self.model.max_length)
        if not len(full):
            return full
        texts = prepare_texts([chunk[i] for i in full], self.model.normalization)
        windows = self.windows.split(texts)
        return full[np.bincount(windows.doc, minlength=len(full)) > 1]

    def _score_chunks(self, items: Iterable[_Tokenized]) -> Iterator[ChunkResult]:
        """Results of tokenized chunks in order; each chunk is queued on the device before the
        previous one's results are waited for, so the device never waits for the host."""
        flight = None  # the chunk on the device while the next one is queued
        for item in items:
            queued = self._launch(item)
            if flight is not None:
                yield self._finish(flight)
            flight = queued
        if flight is not None:
            yield self._finish(flight)

    def _batches(self, lengths_sorted: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(begin, end, padded_length) over rows sorted by length."""
        cfg, n, begin = self.config, len(lengths_sorted), 0
        while begin < n:
            end = min(begin + cfg.batch_size, n)
            width = _round_up(int(lengths_sorted[end - 1]), cfg.pad_multiple)
            end = min(end, begin + max(1, cfg.max_batch_tokens // width))
            width = _round_up(int(lengths_sorted[end - 1]), cfg.pad_multiple)
            yield begin, end, width
            begin = end

    @torch.inference_mode()
    def _launch(self, item: _Tokenized) -> _InFlight:
        """Queue one chunk's copies and forwards on the device; returns before they finish."""
        n = len(item.texts)
        device, cuda = self.device, self.device.type == "cuda"
        ids_host = torch.from_numpy(item.ids)
        order_host = torch.from_numpy(item.order)
        lengths_host = torch.from_numpy(item.lengths)
        if cuda:
            ids_host, order_host, lengths_host = (
                t.pin_memory() for t in (ids_host, order_host, lengths_host)
            )
        ids = ids_host.to(device, non_blocking=cuda).long()  # (m, L_max), length order
        order = order_host.to(device, non_blocking=cuda)  # (m,)
        lengths = lengths_host.to(device, non_blocking=cuda)  # (m,)
        out = {
            task: torch.empty((n, len(self.labels[task])), dtype=torch.float32, device=device)
            for task in TASKS
        }
        for begin, end, width in self._batches(item.lengths):
            rows = order[begin:end]  # (B,) chunk rows of this batch
            probs = self._score(ids[begin:end, :width].contiguous(), lengths[begin:end])
            for task, task_probs in zip(TASKS, probs, strict=True):
                out[task][rows] = task_probs
        if len(item.long_rows):
            windowed = self._windowed.predict([item.texts[i] for i in item.long_rows])  # prepares
            rows = torch.from_numpy(item.long_rows).to(device)
            for task in TASKS:
                out[task][rows] = torch.from_numpy(getattr(windowed, f"{task}_probs")).to(device)
        if not cuda:
            return _InFlight(item.start, {task: out[task].numpy() for task in TASKS}, None)
        # results come back through pinned buffers; the caller waits on the event only after it
        # has queued the next chunk, so the device never waits for the host between chunks
        host = {task: torch.empty(out[task].shape, pin_memory=True) for task in TASKS}
        for task in TASKS:
            host[task].copy_(out[task], non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return _InFlight(item.start, {task: host[task].numpy() for task in TASKS}, done)

    @staticmethod
    def _finish(flight: _InFlight) -> ChunkResult:
        if flight.done is not None:
            flight.done.synchronize()
        probs = flight.probs
        return ChunkResult(
            start=flight.start,
            sentiment_id=probs["sentiment"].argmax(axis=1),
            sentiment_probs=probs["sentiment"],
            topic_id=probs["topic"].argmax(axis=1),
            topic_probs=probs["topic"],
        )

    def _score_batch(
        self, input_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated probabilities of both heads for one padded batch (B, L)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        keep = positions[None, :] < lengths[:, None]  # (B, L)
        # A ready 4-D additive mask: given a 2-D one, transformers asks the device whether any
        # token is padding (to skip the mask), and that answer stalls the host on every batch.
        dtype = self.encoder.dtype  # that of the attention scores
        mask = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
        mask = mask.masked_fill_(~keep, torch.finfo(dtype).min)[:, None, None, :]  # (B, 1, 1, L)
        with _mixed_precision(input_ids.device.type, self._autocast_dtype):
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = keep.unsqueeze(-1).to(torch.float32)  # (B, L, 1)
        pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, H)
        heads = self.model.heads
        return tuple(
            F.softmax(heads[task](pooled) * self._inverse_t[i], dim=-1)
            for i, task in enumerate(TASKS)
        )


def reduced_precision(encoder: torch.nn.Module, precision: str):
    """The encoder to run at `precision` (a name in PRECISIONS) and the autocast dtype it needs
    (None: run it as it is). fp32 returns the encoder itself; the others return a copy."""
    dtype, mixed = PRECISIONS[precision]
    if dtype == torch.float32:
        return encoder, None
    half = copy.deepcopy(encoder).to(dtype).eval()
    if not mixed:
        return half, None
    for module in half.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.float()
            module.__class__ = _Fp32LayerNorm
    return half, dtype


@contextlib.contextmanager
def _mixed_precision(device_type: str, dtype: torch.dtype | None):
    """Autocast to `dtype` (None: nothing), and on CUDA fp16 GEMMs that reduce in fp32 only
    (cuBLAS may otherwise reduce split-K partial sums in fp16); the flag is restored after."""
    if dtype is None:
        yield
        return
    matmul = torch.backends.cuda.matmul
    reduced = matmul.allow_fp16_reduced_precision_reduction
    if device_type == "cuda" and dtype == torch.float16:
        matmul.allow_fp16_reduced_precision_reduction = False
    try:
        with torch.autocast(device_type, dtype=dtype):
            yield
    finally:
        matmul.allow_fp16_reduced_precision_reduction = reduced


class _Fp32LayerNorm(torch.nn.LayerNorm):
    """LayerNorm on an fp32 input, returning fp32: autocast keeps LayerNorm in fp32 on CUDA
    but not on CPU, and its output is the residual stream of the next sublayer."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(hidden.float(), self.normalized_shape, self.weight, self.bias, self.eps)


@contextlib.contextmanager
def _main_module_hidden():
    """Spawned processes import the parent's __main__ before anything else, so a worker started
    from `python -m nlp.bench` or a notebook would import torch, transformers and the caller's
    code (seconds each, and all workers at once). The workers need only
    `nlp.tokenize_worker`: while they start, __main__ shows multiprocessing nothing to import."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    spec, file = getattr(main, "__spec__", None), main.__dict__.get("__file__")
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


class _GraphedScore:
    """The scoring step as one CUDA graph per (rows, width) batch shape.

    Eager mode launches a few hundred kernels per batch from Python, and on a fast GPU that host
    work is as long as the GPU's (docs/benchmarks.md). A replay launches them all at once. Rows
    are padded up to a multiple of `row_multiple` (padding rows have length 1 and are dropped),
    so a chunk's few distinct shapes are captured once each and then replayed.

    The graphs share one memory pool. That is safe because replays run one after another on the
    engine's stream and the caller consumes a replay's outputs (they are views of the graph's
    static outputs) with work queued before the next replay. If capture fails (an operation that
    waits for the device inside the forward), the engine logs it once and stays eager.
    """

    def __init__(self, score, *, row_multiple: int):
        self._score, self.row_multiple = score, row_multiple
        self._graphs: dict[tuple[int, int], tuple] = {}
        self._pool = None
        self.eager = False  # set when capture failed

    def __call__(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.eager:
            return self._score(input_ids, lengths)
        rows, width = input_ids.shape
        key = (_round_up(rows, self.row_multiple), width)
        entry = self._graphs.get(key) or self._capture(key, input_ids, lengths)
        if entry is None:
            return self._score(input_ids, lengths)
        graph, static_ids, static_lengths, outputs = entry
        static_ids[:rows].copy_(input_ids)
        static_lengths[:rows].copy_(lengths)
        static_lengths[rows:].fill_(1)
        graph.replay()
        return tuple(output[:rows] for output in outputs)

    def _capture(self, key: tuple[int, int], input_ids: torch.Tensor, lengths: torch.Tensor):
        rows, width = key
        device = input_ids.device
        static_ids = torch.zeros((rows, width), dtype=input_ids.dtype, device=device)
        static_lengths = torch.ones((rows,), dtype=lengths.dtype, device=device)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS handles, kernel choice
                for _ in range(2):
                    self._score(static_ids, static_lengths)
            torch.cuda.current_stream(device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                outputs = self._score(static_ids, static_lengths)
        except RuntimeError as error:
            logger.warning("CUDA graph capture failed, scoring eagerly: %s", error)
            self.eager = True
            with contextlib.suppress(RuntimeError):  # a broken capture may leave its error behind
                torch.cuda.synchronize(device)
            return None
        self._graphs[key] = (graph, static_ids, static_lengths, outputs)
        logger.debug("captured a CUDA graph for batches of %d x %d", rows, width)
        return self._graphs[key]


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)
