"""The feedback loop's controlled gain on the simulated LLM, for a few configured effects.

    PYTHONPATH=src .venv/bin/python bench/bench_feedback.py --questions 2000

Runs the embedded pipeline (cascade: composite 0.14, band 0.03, LLM judge = the simulated one)
over `--questions` unique questions per effect, half of them in the control arm, and prints
P(validated at n+1 | rejected at n) per arm with Wilson 95 % intervals, the base rate, the
cost per validated answer and the LLM judge's share. The simulated gain is an INPUT
(`sim_feedback_effect`): this checks that the measurement recovers it (effect 0 -> no gain
within the intervals), it says nothing about real LLMs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from qaloop.dataset import load_sample
from qaloop.pipeline import EmbeddedPipeline
from qaloop.report.feedback import feedback_gain
from qaloop.settings import Settings


async def run(effect: float, n: int, no_ref_share: float, out: Path) -> dict[str, object]:
    settings = Settings(
        db=f"sqlite:///{out / f'feedback-{effect}.db'}",
        feedback_control_share=0.5,
        sim_feedback_effect=effect,
    )
    pipeline = EmbeddedPipeline(settings)
    await pipeline.start()
    sample = load_sample()
    started = time.perf_counter()
    every = round(1 / no_ref_share) if no_ref_share > 0 else 0
    for i in range(n):
        qa = sample[i % len(sample)]
        reference = None if every and i % every == 0 else qa.reference_answer
        await pipeline.service.ask(f"{qa.question} [{i}]", reference)
    assert await pipeline.drain(600)
    wall = time.perf_counter() - started
    await pipeline.stop()
    g = feedback_gain(pipeline.repo.export_questions(), pipeline.repo.export_events())
    pipeline.repo.close()
    arms = {
        arm: {"n": r.n, "validated": r.successes, "p": r.p, "ci": r.ci} for arm, r in g.arms.items()
    }
    calls, tokens = g.cost_all.per_validated()
    return {
        "effect": effect,
        "questions": n,
        "wall_s": round(wall, 1),
        "base": {"n": g.base.n, "p": g.base.p, "ci": g.base.ci},
        "arms": arms,
        "gain_pp": g.gain_pp(),
        "calls_per_validated": calls,
        "tokens_per_validated": tokens,
        "llm_judge_share": g.by_judge.get("llm_judge", 0) / g.judged if g.judged else None,
        "llm_judge_calls": g.llm_calls,
        "llm_judge_tokens": g.llm_tokens,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=2000)
    p.add_argument("--no-ref-share", type=float, default=0.25)
    p.add_argument("--effects", default="0,0.5")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for effect in (float(x) for x in a.effects.split(",")):
            result = asyncio.run(run(effect, a.questions, a.no_ref_share, Path(tmp)))
            print(json.dumps(result))


if __name__ == "__main__":
    main()
