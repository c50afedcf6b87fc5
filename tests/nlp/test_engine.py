"""The inference engine against the plain fp32 reference, its tokenizer, streaming and the
multi-process split."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nlp.engine import Engine, EngineConfig
from nlp.inference import Classifier
from nlp.model import DEFAULT_BASE, TASKS, DualHeadClassifier, resolve_base
from nlp.tokenize_worker import Encoder

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

ODD_TEXTS = [
    "",
    "   ",
    "Oil falls 3% as OPEC+ cuts; $XOM -2.1% https://t.co/AbC123",
    "Café crème prices rise — 5% in Zürich",
    "央行 降息 25 基点",
    "RTL: \u05d4\u05d1\u05e0\u05e7 \u05d4\u05e4\u05e1\u05d9\u05d3 with emoji 📉📉",
    "tab\tand\nnewline\r\nand\x0bvertical\x0cform\x1cfile\x1fsep",
    "null\x00byte and \x7fdel",
    "zero\u200bwidth\ufeffbom and non\xa0breaking",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &#36;AAPL",
    "supercalifragilisticexpialidocious" * 10,
    "word " * 300,
]


# Pieces on which Python's and BERT's ideas of whitespace, case, controls and entities differ.
TRICKY_PIECES = [
    "a", "B", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", "\u2029",
    "\xa0", "\u3000", "\u200b", "\x00", "\x01", "\x7f", "&amp;", "&#32;", "&nbsp;", "&#10;", "é",
    "ß", "Σ", "央", "📉", "\u05d4", "e\u0301", "\ufeff", "http://t.co/x", "HTTPS://X.co", "www.x.com",
    "WwW.y", "$AAPL", ",", ".", "[CLS]", "[MASK]", "word" * 30,
]  # fmt: skip


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _fuzz_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(TRICKY_PIECES) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def _corpus_texts(n: int) -> list[str]:
    if SHARED.is_dir():
        frames = [pd.read_csv(SHARED / t / "train.csv")["text"] for t in ("sentiment", "topic")]
        return pd.concat(frames).sample(n, random_state=0).tolist()
    return [f"Shares of company {i} rise after earnings beat https://t.co/x{i}" for i in range(n)]


@pytest.mark.parametrize("normalization", ["none", "finance"])
def test_word_cache_gives_exactly_the_rust_tokenizers_ids(normalization):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base(DEFAULT_BASE))
    kwargs = dict(
        tokenizer_json=tokenizer.backend_tokenizer.to_str(), max_length=128,
        normalization=normalization, prefix=[tokenizer.cls_token_id], suffix=[tokenizer.sep_token_id],
    )  # fmt: skip
    cached, plain = Encoder(**kwargs), Encoder(**kwargs, word_cache=False)
    assert cached.word_cache and not plain.word_cache
    texts = _corpus_texts(3000) + ODD_TEXTS + _fuzz_texts(2000)
    for _ in range(2):  # cold and warm cache
        flat, lengths = cached.encode(texts)
        flat_ref, lengths_ref = plain.encode(texts)
        np.testing.assert_array_equal(lengths, lengths_ref)
        np.testing.assert_array_equal(flat, flat_ref)
    assert len(cached.cache) > 1000
    # and both equal the transformers tokenizer with truncation at the window
    from nlp.text import prepare_texts

    expected = tokenizer(prepare_texts(texts, normalization), truncation=True, max_length=128)
    assert lengths.tolist() == [len(ids) for ids in expected["input_ids"]]


def test_fast_link_pass_replaces_exactly_what_the_link_pattern_does():
    from nlp.text import URL_PATTERN
    from nlp.tokenize_worker import _replace_links

    rng = random.Random(1)
    pieces = ["http", "https", "://", "HTTP", "Https", "httpſ", "www.", "WWW.", "wWw.", "ftp://",
              "x", ".", "/", " ", "\n", "\t", "é"]  # fmt: skip
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    for text in texts + ["\n\x00\n".join(texts[:500])]:
        assert _replace_links(text) == URL_PATTERN.sub("http", text), repr(text)


def test_engine_matches_the_fp32_reference(headline_model_dir):
    texts = _corpus_texts(400) + ODD_TEXTS + ["profits plunge " * 2000]  # a 4,000-word text
    reference = Classifier.load(headline_model_dir, device="cpu").predict(texts)
    engine = Engine.load(headline_model_dir, device="cpu", config=EngineConfig(chunk_size=128))
    got = engine.predict(texts)
    assert len(got) == len(texts)
    for task in TASKS:
        ref_probs, probs = getattr(reference, f"{task}_probs"), getattr(got, f"{task}_probs")
        assert np.mean(ref_probs.argmax(1) == probs.argmax(1)) >= 0.995
        assert np.abs(ref_probs - probs).max() <= 0.01
        np.testing.assert_array_equal(getattr(reference, task), getattr(got, task))
        np.testing.assert_allclose(getattr(got, f"{task}_score"), probs.max(1))


def test_mixed_precision_keeps_layernorm_and_the_residual_stream_in_fp32(headline_model_dir):
    import torch

    texts = _corpus_texts(300) + ODD_TEXTS
    reference = Engine.load(headline_model_dir, device="cpu").predict(texts)  # auto: fp32 on CPU
    engine = Engine.load(headline_model_dir, device="cpu", config=EngineConfig(precision="fp16"))
    norms = [m for m in engine.encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    linears = [m for m in engine.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert linears and all(m.weight.dtype == torch.float16 for m in linears)
    assert all(p.dtype == torch.float32 for p in engine.model.encoder.parameters())  # a copy
    streams = []  # the dtype of what each LayerNorm hands on: the residual stream
    for norm in norms:
        norm.register_forward_hook(lambda module, args, out: streams.append(out.dtype))
    got = engine.predict(texts)
    assert streams and set(streams) == {torch.float32}
    for task in TASKS:
        ref_probs, probs = getattr(reference, f"{task}_probs"), getattr(got, f"{task}_probs")
        assert probs.dtype == np.float32 and not np.array_equal(ref_probs, probs)  # really fp16
        assert np.mean(ref_probs.argmax(1) == probs.argmax(1)) >= 0.995
        assert np.abs(ref_probs - probs).max() <= 0.01
    with pytest.raises(ValueError, match="precision must be"):
        Engine.load(headline_model_dir, device="cpu", config=EngineConfig(precision="fp8"))


def test_cuda_graphs_are_refused_off_cuda_and_off_by_default_there(headline_model_dir):
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device, not cpu"):
        Engine.load(headline_model_dir, device="cpu", config=EngineConfig(cuda_graphs=True))
    engine = Engine.load(headline_model_dir, device="cpu")
    assert engine.cuda_graphs is None
    assert (engine.config.cuda_graphs, engine.config.chunk_size) == (False, 8192)


@pytest.mark.skipif(not _cuda(), reason="no CUDA device")
def test_cuda_defaults_graphs_and_long_chunks(headline_model_dir):
    engine = Engine.load(headline_model_dir, device="cuda")
    assert (engine.config.cuda_graphs, engine.config.chunk_size) == (True, 16384)
    assert engine.cuda_graphs == {"captured": 0, "eager": False}
    compiled = Engine.load(headline_model_dir, device="cuda", config=EngineConfig(compile=True))
    assert compiled.config.cuda_graphs is False and compiled.cuda_graphs is None
    with pytest.raises(ValueError, match="choose one of compile and cuda_graphs"):
        Engine.load(
            headline_model_dir, device="cuda", config=EngineConfig(compile=True, cuda_graphs=True)
        )


@pytest.mark.skipif(not _cuda(), reason="no CUDA device")
def test_cuda_graphs_give_the_eager_results(headline_model_dir):
    """Graph replays (rows padded to 256) score exactly what the eager engine scores, also when
    one shape is replayed for batches of different sizes."""
    texts = _corpus_texts(3000) + ODD_TEXTS
    eager = Engine.load(
        headline_model_dir, device="cuda", config=EngineConfig(chunk_size=700, cuda_graphs=False)
    )
    assert eager.cuda_graphs is None
    graphed = Engine.load(
        headline_model_dir, device="cuda", config=EngineConfig(chunk_size=700, cuda_graphs=True)
    )
    want = eager.predict(texts)
    for _ in range(2):  # capture, then replay
        got = graphed.predict(texts)
        for task in TASKS:
            np.testing.assert_allclose(
                getattr(got, f"{task}_probs"), getattr(want, f"{task}_probs"), atol=1e-3
            )
    assert graphed.cuda_graphs["captured"] > 0 and not graphed.cuda_graphs["eager"]


def test_worker_processes_give_the_same_results(headline_model_dir):
    texts = _corpus_texts(300) + ODD_TEXTS
    config = EngineConfig(chunk_size=100, tokenizer_workers=2)
    with Engine.load(headline_model_dir, device="cpu", config=config) as engine:
        pooled = engine.predict(texts)
    # the same chunks, so the same batches: only where the tokenizing runs differs
    threaded = Engine.load(headline_model_dir, device="cpu", config=EngineConfig(chunk_size=100))
    threaded = threaded.predict(texts)
    for task in TASKS:
        np.testing.assert_allclose(
            getattr(pooled, f"{task}_probs"), getattr(threaded, f"{task}_probs"), atol=1e-6
        )


def test_stream_reads_the_input_lazily_and_keeps_order(headline_model_dir):
    pulled = 0

    def endless():
        nonlocal pulled
        for i in range(10**9):
            pulled += 1
            yield f"shares of company {i} plunge" if i % 2 else f"profits soar at firm {i}"

    engine = Engine.load(headline_model_dir, device="cpu", config=EngineConfig(chunk_size=50))
    results = engine.stream(endless())
    starts = [next(results).start for _ in range(4)]
    results.close()
    assert starts == [0, 50, 100, 150]
    # bounded: the 4 yielded, 1 on the device, `prefetch` queued, 2 in the producer's hands
    assert pulled <= 50 * (4 + 1 + engine.config.prefetch + 2)


def test_chunks_double_from_the_first_up_to_chunk_size(headline_model_dir):
    texts = [f"shares of company {i} plunge" for i in range(300)]
    model = DualHeadClassifier.load(headline_model_dir)
    for grow, want in ((True, [0, 10, 30, 70, 150, 230]), (False, [0, 10, 90, 170, 250])):
        config = EngineConfig(first_chunk=10, chunk_size=80, grow=grow)
        parts = list(Engine(model, device="cpu", config=config).stream(texts))
        assert [part.start for part in parts] == want
        assert sum(len(part) for part in parts) == len(texts)


def test_empty_input(headline_model_dir):
    got = Engine.load(headline_model_dir, device="cpu").predict([])
    assert len(got) == 0 and got.topic_probs.shape[0] == 0


@pytest.mark.slow
def test_two_processes_split_and_gather_in_input_order(tmp_path, headline_model_dir):
    texts = [
        f"shares of company {i} plunge" if i % 3 else f"profits soar at firm {i}"
        for i in range(301)
    ]
    (tmp_path / "texts.txt").write_text("\n".join(texts), encoding="utf-8")
    # accelerate's own launcher runs one process on CPU; for GPUs it hands over to torchrun,
    # which is what runs here, so PartialState sees a real 2-process (gloo) group.
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--standalone", "-m", "nlp.distributed", "--model", str(headline_model_dir),
        "--input", str(tmp_path / "texts.txt"), "--output", str(tmp_path / "out.npz"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert int(out["processes"]) == 2
    single = Engine.load(headline_model_dir, device="cpu").predict(texts)
    for task in TASKS:
        np.testing.assert_array_equal(out[task], single.__getattribute__(task).astype(str))
        np.testing.assert_allclose(
            out[f"{task}_probs"], getattr(single, f"{task}_probs"), atol=1e-5
        )


def test_bench_compares_precisions_against_fp32(tmp_path, headline_model_dir):
    import json

    from nlp import bench

    out, data = tmp_path / "bench.json", tmp_path / "texts.csv"
    pd.DataFrame({"text": _corpus_texts(300)}).to_csv(data, index=False)
    argv = [
        "--device", "cpu", "--model", str(headline_model_dir), "--data", str(data),
        "--n", "200", "--check-n", "100",
        "--skip", "ceiling,pipeline64,pipeline1", "--compare-precision", "fp16-pure,fp16",
        "--output", str(out),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["precision"] == "fp32"  # auto on CPU
    assert [row["docs"] for row in result["rows"]] == [200, 600]  # first pass, 3 passes
    assert result["fp32_check"]["topic"]["max_prob_diff"] < 1e-5
    assert set(result["precision_checks"]) == {"fp16-pure", "fp16"}
    for check in result["precision_checks"].values():
        assert check["docs_per_s"] > 0
        assert 0 < check["topic"]["max_prob_diff"] <= 0.01
    with pytest.raises(SystemExit):
        bench.main([*argv[:-4], "--compare-precision", "fp8", "--output", str(out)])


def test_bench_configs_reports_each_config(tmp_path, headline_model_dir, capsys):
    from nlp import bench_configs

    data = tmp_path / "texts.csv"
    pd.DataFrame({"text": _corpus_texts(300)}).to_csv(data, index=False)
    argv = [
        "--device",
        "cpu",
        "--model",
        str(headline_model_dir),
        "--data",
        str(data),
        "--n",
        "150",
    ]
    configs = ["--config", 'small={"chunk_size": 40}', "--config", 'graphs={"cuda_graphs": true}']
    assert bench_configs.main([*argv, *configs, "--config", "default={}"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| small", "| default"]  # no graphs on CPU
    for row in rows[1:]:
        steady, side, ceiling, share = (
            float(c.strip(" |").replace(",", "")) for c in row.split(" | ")[2:6]
        )
        assert min(steady, side, ceiling) > 0 and share == pytest.approx(steady / ceiling, abs=2e-3)
    for bad in ('x={"chunk": 1}', "x", "x=[1]", "x={"):
        with pytest.raises(SystemExit) as exit_info:
            bench_configs.main([*argv, "--config", bad])
        assert exit_info.value.code == 2
