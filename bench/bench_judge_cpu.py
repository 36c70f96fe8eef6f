"""The plain judge's CPU per answer (issue 13, point 4): `Judge.handle_batch` in-process, on
the answers the throughput benchmark's judge sees, timed with the process's CPU clock; side by
side with another build of qaloop (e.g. main, exported with `git archive`).

    git archive main | tar -x -C /tmp/judgecpu-base
    PYTHONPATH=src .venv/bin/python bench/bench_judge_cpu.py --base /tmp/judgecpu-base/src

Inputs, recorded once by this build and replayed to every measured build:
- `sample` (default): the questions of bench/bench_distributed.py (the shipped sample, tagged
  per question), answered by the zero-latency simulated LLM through the real worker, judged,
  and their regenerations answered again: every attempt the judge receives, in order.
- `recorded`: the 6,329 recorded LLM answers of ../shared/data (or $QALOOP_SHARED_DATA) as
  first attempts, against their question and human reference.

The judge is built by qaloop.wiring from Settings(scorer=composite, threshold=0.14), as in the
throughput benchmark, with the stages' logging (qaloop.observability.logs.configure at
--log-level, INFO by default; the distributed benchmark runs WARNING) to /dev/null, and the
collector as --gc says; it takes batches of 256 (the judge's max batch). Each build is
measured `--repeats` times, alternating, each time in a fresh process (no cache survives
from a run); the best run counts. Every run also records a digest of its outputs (topic, key,
reason header, state, attempt, score, last event): builds whose digests differ did not decide
identically. Writes bench/results/judge_cpu.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from benchkit import run_build

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
CLOCK = 1_800_000_000.0  # a fixed clock: the outputs of two builds are comparable byte for byte


def settings() -> Any:
    from qaloop.settings import Settings

    return Settings(scorer="composite", threshold=0.14, log_level="INFO", sim_latency_ms=0.0)


# ------------------------------------------------------------------------- inputs


def shared_answers() -> Path | None:
    base = Path(os.environ.get("QALOOP_SHARED_DATA", ROOT.parent / "shared" / "data"))
    path = base / "llm_answers.jsonl"
    return path if path.is_file() else None


def _first_attempt(question: str, reference: str | None) -> Any:
    from qaloop.core.ids import question_id
    from qaloop.core.model import Envelope, EventKind

    return Envelope(
        question_id=question_id(question),
        question=question,
        reference_answer=reference,
        trace_id=hashlib.blake2b(question.encode(), digest_size=16).hexdigest(),
        first_seen=CLOCK,
    ).with_event(EventKind.ACCEPTED, CLOCK)


async def record_sample(n: int) -> list[bytes]:
    """Every answer the judge gets for n questions: attempt 1, then each regeneration."""
    from qaloop.bus.memory import MemoryBus
    from qaloop.core import codec
    from qaloop.dataset import load_sample
    from qaloop.llm.factory import make_provider
    from qaloop.observability.metrics import Metrics
    from qaloop.services.judge import Judge
    from qaloop.wiring import Wiring, judge_gate

    s = settings()
    wiring = Wiring(s, shared_bus=False, clock=lambda: CLOCK)
    metrics = Metrics()
    worker = wiring.worker(MemoryBus(wiring.topics), make_provider(s), metrics).worker
    stage, gate = judge_gate(s)
    judge = Judge(stage, gate, wiring.topics, clock=lambda: CLOCK, metrics=metrics)
    sample = load_sample()
    pending = [
        _first_attempt(
            f"{sample[i % len(sample)].question} [judge-cpu {i}]",
            sample[i % len(sample)].reference_answer,
        )
        for i in range(n)
    ]
    recorded: list[bytes] = []
    while pending:
        generated = []
        for env in pending:
            for out in await worker.handle(env):
                if out.topic == wiring.topics.generated:
                    generated.append(out.value)
        recorded.extend(generated)
        pending = []
        for start in range(0, len(generated), BATCH):
            for out in await judge.handle_batch(_messages(generated[start : start + BATCH])):
                if out.topic == wiring.topics.questions:
                    pending.append(codec.decode(out.value))
    await judge.aclose()
    return recorded


def record_recorded(limit: int) -> list[bytes]:
    from qaloop.core import codec
    from qaloop.core.model import EventKind, QuestionState

    path = shared_answers()
    if path is None:
        raise SystemExit("bench_judge_cpu: ../shared/data/llm_answers.jsonl not found")
    out = []
    with path.open("rb") as fh:
        for k, line in enumerate(fh):
            if k >= limit:
                break
            row = orjson.loads(line)
            env = _first_attempt(f"{row['question']} [judge-cpu {k}]", row["original_answer"])
            answer = row["llm_answer"]
            env = env.with_event(EventKind.GENERATED, CLOCK, answer=answer).evolve(
                state=QuestionState.SCORING, answer=answer, llm_calls=1
            )
            out.append(codec.encode(env))
    return out


def _messages(values: list[bytes]) -> list[Any]:
    from qaloop.bus.base import Message

    return [Message("qaloop.generated", 0, i, None, v, {}) for i, v in enumerate(values)]


# ------------------------------------------------------------------------- measure


def apply_gc(mode: str) -> None:
    """The collector settings of the measured process. `service`: the measured build's own
    start-up step (qaloop.distributed.supervision.freeze_startup_heap, what every service
    process runs); `freeze`: gc.collect() + gc.freeze() only; `tuned`: freeze, then
    gc.set_threshold(50_000, 20, 10); `none`: the interpreter's defaults."""
    import gc

    if mode == "service":
        from qaloop.distributed.supervision import freeze_startup_heap

        freeze_startup_heap()
    elif mode in ("freeze", "tuned"):
        gc.collect()
        gc.freeze()
        if mode == "tuned":
            gc.set_threshold(50_000, 20, 10)


async def measure(path: Path, log_level: str = "INFO", gc_mode: str = "none") -> dict[str, Any]:
    """One build, in this process: the judge over the recorded answers (CPU and digest)."""
    from qaloop.core import codec
    from qaloop.observability.logs import configure
    from qaloop.observability.metrics import Metrics
    from qaloop.services.judge import Judge
    from qaloop.wiring import Wiring, judge_gate

    # The stage's logging (INFO: one line per question's outcome), written to /dev/null.
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 - lives as long as we do
    try:
        configure(log_level)
    finally:
        sys.stderr = stderr
    values = path.read_bytes().split(b"\n")
    values = [v for v in values if v]
    batches = [_messages(values[i : i + BATCH]) for i in range(0, len(values), BATCH)]
    s = settings()
    wiring = Wiring(s, shared_bus=False, clock=lambda: CLOCK)
    stage, gate = judge_gate(s)
    judge = Judge(stage, gate, wiring.topics, clock=lambda: CLOCK, metrics=Metrics())
    apply_gc(gc_mode)  # after start-up, as the services do
    digest = hashlib.blake2b(digest_size=16)
    decisions: dict[str, int] = {}
    cpu = wall = 0.0
    for batch in batches:
        c0, w0 = time.process_time(), time.perf_counter()
        outputs = await judge.handle_batch(batch)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        for out in outputs:
            env = codec.decode(out.value)
            last = env.history[-1] if env.history else None
            row = (
                out.topic,
                out.key,
                out.headers.get("qaloop-reason"),
                env.state.value,
                env.attempt,
                env.score,
                env.feedback,
                None if last is None else (last.kind.value, last.score, last.detail),
            )
            digest.update(orjson.dumps(row))
            topic = out.topic.rsplit(".", 1)[-1]
            decisions[topic] = decisions.get(topic, 0) + 1
    await judge.aclose()
    import qaloop

    return {
        "qaloop": str(Path(qaloop.__file__).parents[1]),
        "answers": len(values),
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_ms_per_answer": 1000 * cpu / max(1, len(values)),
        "outputs": decisions,
        "digest": digest.hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("sample", "recorded"), default="sample")
    parser.add_argument("--questions", type=int, default=5_000, help="sample questions")
    parser.add_argument("--limit", type=int, default=6_329, help="recorded answers")
    parser.add_argument("--base", type=Path, help="src/ of the build to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judge_cpu.json")
    parser.add_argument(
        "--log-level", default="INFO", help="the stages' logging (the distributed bench: WARNING)"
    )
    parser.add_argument(
        "--gc",
        choices=("none", "service", "freeze", "tuned"),
        default="none",
        help="collector settings: none (defaults), service (the build's freeze_startup_heap), "
        "freeze (collect + freeze), tuned (freeze + set_threshold(50_000, 20, 10))",
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(orjson.dumps(asyncio.run(measure(args.measure, args.log_level, args.gc))).decode())
        return
    import qaloop

    this = Path(qaloop.__file__).parents[1]
    load_start = list(os.getloadavg())
    if args.source == "sample":
        values = asyncio.run(record_sample(args.questions))
    else:
        values = record_recorded(args.limit)
    builds = {"this": this} | ({"base": args.base.resolve()} if args.base else {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "generated.jsonl"
        inputs.write_bytes(b"\n".join(values) + b"\n")
        for k in range(args.repeats):
            order = list(builds.items()) if k % 2 == 0 else list(builds.items())[::-1]
            for name, src in order:
                argv = [__file__, "--measure", str(inputs), "--log-level", args.log_level]
                argv += ["--gc", args.gc]
                result = run_build(src, argv, keep_env=("QALOOP_SHARED_DATA",))
                runs[name].append(result)
                print(
                    f"{name:5s} run {k + 1}: {result['cpu_ms_per_answer']:.3f} ms CPU per answer "
                    f"({result['answers']} answers, digest {result['digest'][:12]}, "
                    f"load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    best = {name: min(r["cpu_ms_per_answer"] for r in rs) for name, rs in runs.items()}
    digests = {name: sorted({r["digest"] for r in rs}) for name, rs in runs.items()}
    summary: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "source": args.source,
        "log_level": args.log_level,
        "gc": args.gc,
        "answers": len(values),
        "questions": args.questions if args.source == "sample" else None,
        "best_cpu_ms_per_answer": best,
        "identical_outputs": len({d for ds in digests.values() for d in ds}) == 1,
        "runs": runs,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1_5_15_at_start": load_start,
            "loadavg_1_5_15_at_end": list(os.getloadavg()),
        },
    }
    if "base" in best:
        summary["speedup"] = best["base"] / best["this"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    line = ", ".join(f"{k} {v:.3f} ms" for k, v in best.items())
    print(f"best CPU per answer: {line}; identical outputs: {summary['identical_outputs']}")
    if "speedup" in summary:
        print(f"speed-up: {summary['speedup']:.2f}x")


if __name__ == "__main__":
    main()
