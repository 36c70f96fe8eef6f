"""Token-level evidence for the gate's relevance score: encode every gate-benchmark case once,
then fit and band feature variants in seconds (docs/quality.md, "What was tried").

    .venv/bin/python bench/gate_token_experiment.py encode   # 3 min idle: the ONNX runs
    .venv/bin/python bench/gate_token_experiment.py fit      # seconds per variant
    .venv/bin/python bench/gate_token_experiment.py encode-layers    # token vectors of layers 1-5
    .venv/bin/python bench/gate_token_experiment.py encode-newlines  # literal "\\n" as a newline

`fit` reads the last layer's token vectors unless QALOOP_TOKEN_LAYER=<1-5>; other switches:
QALOOP_TOKEN_NEWLINES=1, QALOOP_TOKEN_CENTER=1 (centred token vectors), QALOOP_ABTT=<D>
(all-but-the-top on the sentence vectors), QALOOP_FIT_FAMILIES=a,b (the fit's negatives);
extra arguments pick variants by name. The rows of docs/quality.md's session-5 table are its
output (about 2 GB of cache in all).

`encode` builds the benchmark exactly as `qaloop gate-bench` does (seed 0, the same
most-similar-question function), runs the gate's checks, and for every case the score decides
saves the sentence and token vectors of its answer (without its copy of the question), question
and reference to $QALOOP_TOKEN_CACHE (default /tmp/qaloop-gate-tokens). `fit` computes the
candidate features from that cache, fits each variant on the calibration half
(gate_bench.fit_relevance), bands it by the same rule (gate_bench.choose_band, <= 5 % on the
calibration half) and prints both halves. The research-only data is read from ../shared/data
(or $QALOOP_SHARED_DATA) and never written into the repository.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qaloop.quality import gate_bench as gb
from qaloop.quality.calibration import load_pairs
from qaloop.quality.gate import GateSpec, build_gate, without_question

CACHE = Path(os.environ.get("QALOOP_TOKEN_CACHE", "/tmp/qaloop-gate-tokens"))
DATA = Path(
    os.environ.get("QALOOP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _answers_file() -> Path:
    path = DATA / "llm_answers.jsonl"
    if not path.is_file():
        sys.exit(f"skipped: {path} not found (set QALOOP_SHARED_DATA)")
    return path


def encode() -> None:
    from qaloop.cli.gate_bench import embedding_most_similar
    from qaloop.quality.embedding import EmbeddingScorer, shared_model

    started = time.perf_counter()
    pairs, _ = load_pairs(_answers_file())
    model = shared_model()
    scorer = EmbeddingScorer(model)
    bench = gb.build_benchmark(pairs, seed=0, most_similar=embedding_most_similar(scorer))
    gate = build_gate(GateSpec(), scorer)
    cases = bench.cases
    reached = [gate.precheck(c.item) is None for c in cases]
    print(f"{len(cases)} cases, {sum(reached)} reach the score", file=sys.stderr)
    idx = [i for i, ok in enumerate(reached) if ok]
    texts: dict[str, int] = {}
    rows: list[tuple[int, int, int]] = []
    for i in idx:
        item = cases[i].item
        a = without_question(item.question, item.answer)
        keys = [texts.setdefault(t, len(texts)) for t in (a, item.question, item.reference or "")]
        rows.append((keys[0], keys[1], keys[2]))
    unique = list(texts)
    print(f"{len(unique)} distinct texts to encode", file=sys.stderr)
    sentences = np.zeros((len(unique), model.dim), dtype=np.float32)
    token_chunks: list[Any] = []
    offsets = [0]
    words: list[list[str]] = []
    step = 256
    for start in range(0, len(unique), step):
        batch = unique[start : start + step]
        sv, tv = model.encode_with_tokens(batch)
        sentences[start : start + len(batch)] = sv
        for t in tv:
            token_chunks.append(t.vectors.astype(np.float16))
            offsets.append(offsets[-1] + len(t.vectors))
            words.append(list(t.words))
        print(
            f"  {start + len(batch)} / {len(unique)}  {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(CACHE / "sentences.npy", sentences)
    np.save(CACHE / "tokens.npy", np.concatenate(token_chunks))
    np.save(CACHE / "offsets.npy", np.array(offsets, dtype=np.int64))
    meta = {
        "texts": unique,
        "words": words,
        "rows": rows,
        "cases": [
            {
                "family": c.family,
                "split": c.split,
                "reached": ok,
                "q": c.item.question,
                "a": c.item.answer,
            }
            for c, ok in zip(cases, reached, strict=True)
        ],
        "seconds": time.perf_counter() - started,
    }
    (CACHE / "meta.json").write_text(json.dumps(meta))
    print(f"cached in {CACHE} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


def encode_layers() -> None:
    """The cached texts again, with every layer's hidden state as a graph output (one run):
    tokens_L<n>.npy for n = 1..5 (layer 6 is tokens.npy), to pick the layer (BERTScore takes
    a middle layer, not the last)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from qaloop.quality.embedding import (
        _token_vectors,
        build_bert_onnx,
        read_safetensors,
        shared_model,
    )

    started = time.perf_counter()
    meta = json.loads((CACHE / "meta.json").read_text())
    texts: list[str] = meta["texts"]
    model = shared_model()
    config = json.loads((model.model_dir / "config.json").read_text())
    graph = build_bert_onnx(read_safetensors(model.model_dir / "model.safetensors"), config)
    norms = [n.output[0] for n in graph.graph.node if n.op_type == "LayerNormalization"]
    wanted = {n: norms[2 * n] for n in range(1, 6)}  # after the embeddings' LN, two per layer
    for name in wanted.values():
        graph.graph.output.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", model.dim])
        )
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    encodings = model.tokenizer.encode_batch([t[:20_000] for t in texts])
    per_layer: dict[int, list[Any]] = {n: [None] * len(texts) for n in wanted}
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    for start in range(0, len(order), 32):
        chunk = order[start : start + 32]
        width = max(len(encodings[i].ids) for i in chunk)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for row, i in enumerate(chunk):
            ids[row, : len(encodings[i].ids)] = encodings[i].ids
            mask[row, : len(encodings[i].ids)] = 1
        outs = session.run(list(wanted.values()), {"input_ids": ids, "attention_mask": mask})
        for n, hidden in zip(wanted, outs, strict=True):
            for row, i in enumerate(chunk):
                tv = _token_vectors(hidden[row], encodings[i], texts[i][:20_000])
                per_layer[n][i] = tv.vectors.astype(np.float16)
        if start % 1024 == 0:
            print(
                f"  {start} / {len(texts)}  {time.perf_counter() - started:.0f} s", file=sys.stderr
            )
    for n, chunks in per_layer.items():
        np.save(CACHE / f"tokens_L{n}.npy", np.concatenate(chunks))
    print(f"layers cached ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


def encode_newlines() -> None:
    """The cached texts with the recordings' literal "\\n" turned into a newline first (the
    tokenizer reads "\\nchristmas" as "\\", "nchristmas"): sentences_nl.npy, tokens_nl.npy."""
    from qaloop.quality.embedding import shared_model

    started = time.perf_counter()
    meta = json.loads((CACHE / "meta.json").read_text())
    model = shared_model()
    texts = [t.replace("\\n", "\n") for t in meta["texts"]]
    sentences, tv = model.encode_with_tokens(texts)
    np.save(CACHE / "sentences_nl.npy", sentences)
    np.save(CACHE / "tokens_nl.npy", np.concatenate([t.vectors.astype(np.float16) for t in tv]))
    np.save(CACHE / "offsets_nl.npy", np.cumsum([0] + [len(t.vectors) for t in tv]))
    (CACHE / "words_nl.json").write_text(json.dumps([list(t.words) for t in tv]))
    print(f"newline variant cached ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


# ----------------------------------------------------------------------------- fit


def _content(words: Sequence[str]) -> np.ndarray:
    from qaloop.quality.scorers import STOPWORDS

    mask = np.array(
        [any(ch.isalnum() for ch in w) and w not in STOPWORDS for w in words], dtype=bool
    )
    return mask if mask.any() else np.ones(len(words), dtype=bool)


def fit() -> None:
    from qaloop.quality.gate import question_coverage

    meta = json.loads((CACHE / "meta.json").read_text())
    sentences = np.load(CACHE / "sentences.npy")
    layer = os.environ.get("QALOOP_TOKEN_LAYER", "")
    tokens = np.load(CACHE / (f"tokens_L{layer}.npy" if layer else "tokens.npy")).astype(np.float32)
    offsets = np.load(CACHE / "offsets.npy")
    texts, words = meta["texts"], meta["words"]
    if os.environ.get("QALOOP_TOKEN_NEWLINES"):
        sentences = np.load(CACHE / "sentences_nl.npy")
        tokens = np.load(CACHE / "tokens_nl.npy").astype(np.float32)
        offsets = np.load(CACHE / "offsets_nl.npy")
        words = json.loads((CACHE / "words_nl.json").read_text())
    if os.environ.get("QALOOP_ABTT"):
        # All-but-the-top (Mu & Viswanath 2018) on the sentence vectors: take out the mean of
        # the calibration questions and their top D principal directions, renormalise.
        d = int(os.environ["QALOOP_ABTT"])
        reached_meta = [m for m in meta["cases"] if m["reached"]]
        qk = sorted(
            {
                r[1]
                for r, c in zip(meta["rows"], reached_meta, strict=True)
                if c["split"] == gb.CALIBRATION
            }
        )
        qs = sentences[qk].astype(np.float64)
        mu = qs.mean(axis=0)
        _, _, vt = np.linalg.svd(qs - mu, full_matrices=False)
        top = vt[:d]
        x = sentences.astype(np.float64) - mu
        x -= (x @ top.T) @ top
        sentences = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(
            np.float32
        )
    if os.environ.get("QALOOP_TOKEN_CENTER"):
        # Token vectors are anisotropic (any two tokens ~0.5 apart): take out the mean token
        # of the calibration questions, then renormalise (BERTScore's baseline, Mu 2018).
        qk = sorted(
            {
                r[1]
                for r, c in zip(
                    meta["rows"], [m for m in meta["cases"] if m["reached"]], strict=True
                )
                if c["split"] == gb.CALIBRATION
            }
        )
        centre = np.concatenate([tokens[offsets[k] : offsets[k + 1]] for k in qk]).mean(axis=0)
        tokens -= centre
        tokens /= np.maximum(np.linalg.norm(tokens, axis=1, keepdims=True), 1e-12)
    cases = [gb.Case(c["family"], c["split"], gb.GateInput("", "", None)) for c in meta["cases"]]
    reached = [c["reached"] for c in meta["cases"]]
    idx = [i for i, ok in enumerate(reached) if ok]

    def tok(k: int) -> np.ndarray:
        return tokens[offsets[k] : offsets[k + 1]]

    # IDF of words over the calibration questions (document frequency per question).
    cal_q = {meta["rows"][n][1] for n, i in enumerate(idx) if cases[i].split == gb.CALIBRATION}
    df: dict[str, int] = {}
    for k in cal_q:
        for w in set(words[k]):
            df[w] = df.get(w, 0) + 1
    n_docs = len(cal_q)

    def idf(w: str) -> float:
        return float(np.log((n_docs + 1) / (df.get(w, 0) + 1)))

    cols: dict[str, list[float]] = {}

    def put(name: str, value: float) -> None:
        cols.setdefault(name, []).append(value)

    for n in range(len(idx)):
        ka, kq, kr = meta["rows"][n]
        a, q, r = sentences[ka], sentences[kq], sentences[kr]
        ar, aq, rq = float(a @ r), float(a @ q), float(r @ q)
        put("ar", ar)
        put("aq", aq)
        put("rq", rq)
        put("cov", question_coverage(texts[kq], texts[ka]))
        put("ar*aq", ar * aq)
        put("ar*rq", ar * rq)
        ta, tq, tr = tok(ka), tok(kq), tok(kr)
        mq, mr = _content(words[kq]), _content(words[kr])
        if len(ta) and len(tq):
            best = (tq @ ta.T).max(axis=1)
            cq = best[mq]
            w = np.array([idf(x) for x, m in zip(words[kq], mq, strict=True) if m])
            per_word: dict[str, list[float]] = {}
            for x, m, b in zip(words[kq], mq, best, strict=True):
                if m:
                    per_word.setdefault(x, []).append(float(b))
            wmeans = [float(np.mean(v)) for v in per_word.values()]
            put("qrec_mean", float(cq.mean()))
            put("qrec_min", float(cq.min()))
            put("qrec_p25", float(np.quantile(cq, 0.25)))
            put("qrec_wmin", min(wmeans))
            put("qrec_idf", float((cq * w).sum() / max(w.sum(), 1e-9)))
            put("qrec_idfmin", float(cq[np.argmax(w)]))  # the rarest question word's recall
        else:
            for name in (
                "qrec_mean",
                "qrec_min",
                "qrec_p25",
                "qrec_wmin",
                "qrec_idf",
                "qrec_idfmin",
            ):
                put(name, 0.0)
        if len(ta) and len(tr):
            best = (tr @ ta.T).max(axis=1)[mr]
            put("rrec_mean", float(best.mean()))
            put("rrec_p25", float(np.quantile(best, 0.25)))
        else:
            put("rrec_mean", 0.0)
            put("rrec_p25", 0.0)
    base = ["ar", "aq", "rq", "cov", "ar*aq", "ar*rq"]
    variants: dict[str, list[str]] = {
        "6 features (control: the shipped gate)": base,
        "+ qrec_mean": [*base, "qrec_mean"],
        "+ qrec_min": [*base, "qrec_min"],
        "+ qrec_mean, qrec_min": [*base, "qrec_mean", "qrec_min"],
        "+ qrec_mean, qrec_p25": [*base, "qrec_mean", "qrec_p25"],
        "+ qrec_mean, qrec_wmin": [*base, "qrec_mean", "qrec_wmin"],
        "+ qrec_idf, qrec_min": [*base, "qrec_idf", "qrec_min"],
        "+ qrec_idf, qrec_idfmin": [*base, "qrec_idf", "qrec_idfmin"],
        "+ qrec_mean, qrec_min, rrec_mean": [*base, "qrec_mean", "qrec_min", "rrec_mean"],
        "+ qrec_idf, qrec_min, rrec_mean": [*base, "qrec_idf", "qrec_min", "rrec_mean"],
        "+ qrec_mean, qrec_min, rrec_mean, rrec_p25": [
            *base,
            "qrec_mean",
            "qrec_min",
            "rrec_mean",
            "rrec_p25",
        ],
        "+ every token feature": [*base, *(c for c in cols if c not in base)],
    }
    only = sys.argv[2:] or list(variants)
    print(
        "| variant | pass >= | unsure >= | real cal | real held out | similar cal | "
        "similar held out | similar UNSURE held out | worst other family held out | "
        "similar at 91 % real, both halves |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in only:
        run_variant(name, variants[name], cols, cases, reached, idx)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def run_variant(
    name: str,
    names: list[str],
    cols: dict[str, list[float]],
    cases: list[gb.Case],
    reached: list[bool],
    idx: list[int],
) -> None:
    x = np.array([cols[c] for c in names]).T
    full: list[list[float]] = [[] for _ in cases]
    for n, i in enumerate(idx):
        full[i] = list(x[n])
    if os.environ.get("QALOOP_FIT_FAMILIES"):
        gb.FIT_FAMILIES = tuple(os.environ["QALOOP_FIT_FAMILIES"].split(","))  # type: ignore[misc]
    w = fit_weights(full, cases, reached)
    z = w[0] + x @ np.array(w[1:])
    scores: list[float | None] = [None] * len(cases)
    for n, i in enumerate(idx):
        scores[i] = float(_sigmoid(z[n]))
    pass_t, unsure_t = gb.choose_band(scores, cases, reached, max_false_accept=0.05)

    def share(family: str, split: str, lo: float, hi: float = 2.0) -> tuple[float, int]:
        group = [i for i, c in enumerate(cases) if c.family == family and c.split == split]
        hit = sum(1 for i in group if scores[i] is not None and lo <= scores[i] < hi)  # type: ignore[operator]
        return hit / max(1, len(group)), hit

    def pct(v: tuple[float, int]) -> str:
        return f"{100 * v[0]:.1f} % ({v[1]})"

    # Separation at a matched operating point (less noisy than the banded rate): the similar
    # family's rate, both halves pooled, at the threshold passing 91 % of all real answers.
    real_s = sorted(
        scores[i] for i, c in enumerate(cases) if c.family == gb.REAL and scores[i] is not None
    )  # type: ignore[type-var]
    n_real = sum(1 for c in cases if c.family == gb.REAL)
    t91 = real_s[len(real_s) - int(0.91 * n_real)]
    sim = [i for i, c in enumerate(cases) if c.family == "off_topic_similar"]
    matched = sum(1 for i in sim if scores[i] is not None and scores[i] >= t91) / len(sim)  # type: ignore[operator]
    worst = max(
        ((share(f, gb.HELD_OUT, pass_t)[0], f) for f in gb.FAMILIES if f != "off_topic_similar"),
    )
    print(
        f"| {name} | {pass_t:.2f} | {unsure_t:.2f} | "
        f"{pct(share(gb.REAL, gb.CALIBRATION, pass_t))} | "
        f"{pct(share(gb.REAL, gb.HELD_OUT, pass_t))} | "
        f"{pct(share('off_topic_similar', gb.CALIBRATION, pass_t))} | "
        f"{pct(share('off_topic_similar', gb.HELD_OUT, pass_t))} | "
        f"{pct(share('off_topic_similar', gb.HELD_OUT, unsure_t, pass_t))} | "
        f"{100 * worst[0]:.1f} % ({worst[1]}) | {100 * matched:.1f} % |",
        flush=True,
    )
    print(f"    weights {w}", file=sys.stderr)


fit_weights: Callable[..., tuple[float, ...]] = gb.fit_relevance


if __name__ == "__main__":
    {
        "encode": encode,
        "encode-layers": encode_layers,
        "encode-newlines": encode_newlines,
        "fit": fit,
    }[sys.argv[1] if len(sys.argv) > 1 else "fit"]()
