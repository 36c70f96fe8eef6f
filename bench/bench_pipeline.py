"""Embedded pipeline throughput, two ways (both in one run):

1. CPU-bound: a zero-latency simulated LLM and the lexical scorer; questions/s from accepted to
   validated (or failed) for N new questions. Aim: >= 1,000 questions/s.
2. LLM-bound: every call takes exactly 1 s and 200 calls are in flight; questions/s against
   the ideal concurrency / latency = 200/s (the original worker did one call at a time: 1/s).

    .venv/bin/python bench/bench_pipeline.py [--questions 20000] [--llm-questions 2000]

Writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from qaloop.llm.simulated import SimulatedConfig, SimulatedProvider
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


async def run(n: int, latency_ms: float, concurrency: int, db: str) -> dict[str, float]:
    settings = Settings(db=db, llm_concurrency=concurrency, log_level="WARNING")
    # sigma 0: every call takes exactly latency_ms, so the ideal rate is exact.
    provider = SimulatedProvider(
        SimulatedConfig(seed=1, latency_median_ms=latency_ms, latency_sigma=0.0)
    )
    pipeline = EmbeddedPipeline(settings, provider=provider)
    await pipeline.start()
    reference = "the answer depends on several factors, mainly practice and patience over time"
    started = time.perf_counter()
    # Requests arrive concurrently, as from many HTTP clients: chunks of 500 in flight.
    for begin in range(0, n, 500):
        await asyncio.gather(
            *(
                pipeline.service.ask(f"benchmark question number {i}?", reference)
                for i in range(begin, min(n, begin + 500))
            )
        )
    accepted_s = time.perf_counter() - started
    drained = await pipeline.drain(timeout_s=600)
    elapsed = time.perf_counter() - started
    stats = pipeline.stats()
    await pipeline.stop()
    counts = pipeline.repo.state_counts()
    calls = sorted(
        e["at"] for e in pipeline.repo.export_events() if e["kind"] in ("generated", "llm_error")
    )
    pipeline.repo.close()
    # Steady state, away from the ramp-up and the tail of late regenerations: calls completed
    # in a whole number of seconds between the 10th and 80th percentile of completions. With a
    # fixed latency the calls complete in waves one latency apart, so the window starts
    # half-way between two waves and spans whole waves: no wave is counted twice or cut.
    lo, hi = calls[len(calls) // 10], calls[len(calls) * 8 // 10]
    seconds = int(hi - lo)
    steady = 0.0
    if seconds >= 1:
        start = calls[0] + round(lo - calls[0]) + 0.5
        steady = sum(1 for t in calls if start <= t < start + seconds) / seconds
    finished = counts.get("validated", 0) + counts.get("failed", 0)
    return {
        "questions": n,
        "drained": float(drained),
        "finished": finished,
        "validated": counts.get("validated", 0),
        "llm_calls": stats["pipeline"]["llm_calls"],
        "accept_s": round(accepted_s, 3),
        "elapsed_s": round(elapsed, 3),
        "questions_per_s": round(finished / elapsed, 1),
        "llm_calls_per_s": round(stats["pipeline"]["llm_calls"] / elapsed, 1),
        "steady_llm_calls_per_s": round(steady, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=20000)
    parser.add_argument("--llm-questions", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qaloop-bench-"))
    cpu = asyncio.run(run(args.questions, 0.0, 64, f"sqlite:///{tmp / 'cpu.db'}"))
    llm = asyncio.run(
        run(args.llm_questions, 1000.0, args.concurrency, f"sqlite:///{tmp / 'llm.db'}")
    )
    ideal = args.concurrency / 1.0
    summary = {
        "command": f"python bench/bench_pipeline.py --questions {args.questions} "
        f"--llm-questions {args.llm_questions} --concurrency {args.concurrency}",
        "cpu_bound": cpu,
        "llm_bound": {
            **llm,
            "ideal_llm_calls_per_s": ideal,
            "fraction_of_ideal": round(llm["steady_llm_calls_per_s"] / ideal, 3),
        },
    }
    (ROOT / "bench" / "results" / "pipeline.json").write_text(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode()
    )
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
