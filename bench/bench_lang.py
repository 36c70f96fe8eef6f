"""Language detectors on the recorded answers (issue 12, point 6): qaloop's own
(qaloop.quality.lang), py3langid and lingua-language-detector: accuracy and texts/s.

    .venv/bin/python bench/bench_lang.py [--limit 6329]

Truth, from PROVENANCE.md: the answers of the Spanish-prompted recording (NicolasMoreno98,
"Responde ... en español") are Spanish; every other answer, every question and every human
reference is English. That truth is approximate (a few recorded answers ignored the prompt),
so all detectors are scored against the same imperfect labels. Texts with fewer than 3 words
are left out. "und" (undetermined) counts as wrong in `accuracy` and is also reported apart;
`accuracy_decided` is the accuracy on the texts a detector did decide. Each detector reads the
first 5,000 characters (as the gate does). Writes bench/results/lang.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from qaloop.quality.lang import LANG_CHARS, clear_language_cache
from qaloop.quality.lang import detect_language as ours

ROOT = Path(__file__).resolve().parents[1]


def data_file() -> Path:
    base = Path(os.environ.get("QALOOP_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return base / "llm_answers.jsonl"


def labelled(limit: int) -> list[tuple[str, str, str]]:
    """(kind, text, truth) for answers, references and questions."""
    out: list[tuple[str, str, str]] = []
    with data_file().open("rb") as fh:
        for n, line in enumerate(fh):
            if n >= limit:
                break
            row = orjson.loads(line)
            spanish = str(row.get("source", "")).startswith("NicolasMoreno98")
            out.append(("answer", row["llm_answer"], "es" if spanish else "en"))
            out.append(("reference", row["original_answer"], "en"))
            out.append(("question", row["question"], "en"))
    return [(k, t.replace("\\n", " ")[:LANG_CHARS], y) for k, t, y in out if len(t.split()) >= 3]


def detectors() -> dict[str, Callable[[str], str]]:
    found: dict[str, Callable[[str], str]] = {}

    def qaloop_lang(text: str) -> str:
        return ours(text)

    found["qaloop.lang"] = qaloop_lang
    try:
        import py3langid

        identifier = py3langid.langid.LanguageIdentifier.from_pickled_model(
            py3langid.langid.MODEL_FILE, norm_probs=True
        )

        def langid(text: str) -> str:
            lang, prob = identifier.classify(text)
            return str(lang) if prob >= 0.5 else "und"

        found["py3langid"] = langid
    except ImportError:
        pass
    try:
        from lingua import LanguageDetectorBuilder

        lingua = (
            LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()
        )

        def lingua_all(text: str) -> str:
            lang = lingua.detect_language_of(text)
            return "und" if lang is None else str(lang.iso_code_639_1.name).lower()

        found["lingua (all 75 languages)"] = lingua_all
        lingua_low = LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode().build()

        def lingua_low_acc(text: str) -> str:
            lang = lingua_low.detect_language_of(text)
            return "und" if lang is None else str(lang.iso_code_639_1.name).lower()

        found["lingua (low-accuracy mode)"] = lingua_low_acc
    except ImportError:
        pass
    return found


def measure(detect: Callable[[str], str], items: list[tuple[str, str, str]]) -> dict[str, Any]:
    clear_language_cache()
    started = time.perf_counter()
    got = [detect(text) for _, text, _ in items]
    seconds = time.perf_counter() - started
    by_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({k for k, _, _ in items}):
        idx = [i for i, (k, _, _) in enumerate(items) if k == kind]
        right = sum(1 for i in idx if got[i] == items[i][2])
        und = sum(1 for i in idx if got[i] == "und")
        by_kind[kind] = {
            "n": len(idx),
            "accuracy": right / len(idx),
            "undetermined": und / len(idx),
            "accuracy_decided": right / max(1, len(idx) - und),
        }
    right = sum(1 for g, (_, _, y) in zip(got, items, strict=True) if g == y)
    und = got.count("und")
    return {
        "texts": len(items),
        "accuracy": right / len(items),
        "undetermined": und / len(items),
        "accuracy_decided": right / max(1, len(items) - und),
        "texts_per_s": len(items) / seconds,
        "seconds": seconds,
        "by_kind": by_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10_000, help="rows of the JSONL to read")
    args = parser.parse_args()
    if not data_file().is_file():
        raise SystemExit(f"no recorded answers at {data_file()} (set QALOOP_SHARED_DATA)")
    items = labelled(args.limit)
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    for name, detect in detectors().items():
        results[name] = r = measure(detect, items)
        kinds = ", ".join(
            f"{k} {100 * v['accuracy']:.1f} % (und {100 * v['undetermined']:.1f} %)"
            for k, v in r["by_kind"].items()
        )
        print(
            f"{name}: accuracy {100 * r['accuracy']:.1f} %, "
            f"decided {100 * r['accuracy_decided']:.1f} %, "
            f"und {100 * r['undetermined']:.1f} %, {r['texts_per_s']:.0f} texts/s; {kinds}"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lang.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
