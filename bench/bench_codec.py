"""The envelope codec's CPU per message (issue 13, point 4): `codec.encode` and `codec.decode`
on real pipeline messages, timed with the process's CPU clock; side by side with another build
of qaloop (e.g. main, exported with `git archive`).

    git archive main | tar -x -C /tmp/codec-base
    PYTHONPATH=src .venv/bin/python bench/bench_codec.py --base /tmp/codec-base/src

Inputs, recorded once by this build and replayed to every measured build: the questions of
bench/bench_distributed.py (the shipped sample, tagged per question), answered by the
zero-latency simulated LLM through the real worker and judged by the throughput benchmark's
judge (composite, threshold 0.14), regenerations answered again: every record the worker and
the judge write, in order. Kinds measured apart:
- `attempt1`: the worker's answers of attempt 1 (what the judge decodes most),
- `attempt3`: the worker's answers of attempt 3 (two rejected attempts in their history),
- `final`: the judge's validated and failed records (what the store decodes),
- `all`: every record, as many of each kind as the pipeline writes.

Each build, in a fresh process, first decodes the recorded bytes (untimed) into its own
envelopes, then times `encode` of each envelope and `decode` of the bytes it wrote itself, as
the stages do; `--rounds` rounds over all messages, the best round counts. Each build is run
`--repeats` times, alternating; the best run counts. Every run records a digest of what it
decoded (Envelope.to_dict() of each, which both builds write the same): builds whose digests
differ did not decode the same envelopes. Writes bench/results/codec.json.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchkit import run_build  # noqa: E402

CLOCK = 1_800_000_000.0  # a fixed clock: every run sees the same envelopes
BATCH = 256
KINDS = ("attempt1", "attempt3", "final", "all")


async def record(n: int) -> dict[str, list[bytes]]:
    """Every record the worker and the judge write for n questions, by kind."""
    from bench_judge_cpu import _first_attempt, _messages, settings

    from qaloop.bus.memory import MemoryBus
    from qaloop.core import codec
    from qaloop.dataset import load_sample
    from qaloop.llm.factory import make_provider
    from qaloop.observability.metrics import Metrics
    from qaloop.services.judge import Judge
    from qaloop.wiring import Wiring, judge_gate

    s = settings()
    wiring = Wiring(s, shared_bus=False, clock=lambda: CLOCK)
    topics = wiring.topics
    metrics = Metrics()
    worker = wiring.worker(MemoryBus(topics), make_provider(s), metrics).worker
    stage, gate = judge_gate(s)
    judge = Judge(stage, gate, topics, clock=lambda: CLOCK, metrics=metrics)
    sample = load_sample()
    pending = [
        _first_attempt(
            f"{sample[i % len(sample)].question} [codec {i}]",
            sample[i % len(sample)].reference_answer,
        )
        for i in range(n)
    ]
    kinds: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
    while pending:
        generated = []
        for env in pending:
            for out in await worker.handle(env):
                kinds["all"].append(out.value)
                if out.topic == topics.generated:
                    generated.append(out.value)
                    attempt = codec.decode(out.value).attempt
                    if attempt in (1, 3):
                        kinds[f"attempt{attempt}"].append(out.value)
        pending = []
        for start in range(0, len(generated), BATCH):
            for out in await judge.handle_batch(_messages(generated[start : start + BATCH])):
                kinds["all"].append(out.value)
                if out.topic == topics.questions:
                    pending.append(codec.decode(out.value))
                elif codec.decode(out.value).state.is_final:
                    kinds["final"].append(out.value)
    await judge.aclose()
    return kinds


def measure(path: Path, rounds: int) -> dict[str, Any]:
    """One build, in this process: encode and decode of each kind's messages."""
    from qaloop.core import codec

    recorded: dict[str, list[str]] = orjson.loads(path.read_bytes())
    result: dict[str, Any] = {}
    for kind, texts in recorded.items():
        envelopes = [codec.decode(t.encode()) for t in texts]
        digest = hashlib.blake2b(digest_size=16)
        for env in envelopes:
            digest.update(orjson.dumps(env.to_dict()))
        written = [codec.encode(env) for env in envelopes]
        assert [codec.decode(raw) for raw in written] == envelopes, "round trip"
        encode_s = decode_s = float("inf")
        for _ in range(rounds):
            c0 = time.process_time()
            for env in envelopes:
                codec.encode(env)
            c1 = time.process_time()
            for raw in written:
                codec.decode(raw)
            c2 = time.process_time()
            encode_s, decode_s = min(encode_s, c1 - c0), min(decode_s, c2 - c1)
        n = max(1, len(envelopes))
        result[kind] = {
            "messages": len(envelopes),
            "bytes_per_message": sum(map(len, written)) / n,
            "encode_us": 1e6 * encode_s / n,
            "decode_us": 1e6 * decode_s / n,
            "total_us": 1e6 * (encode_s + decode_s) / n,
            "digest": digest.hexdigest(),
        }
    import qaloop

    result["qaloop"] = str(Path(qaloop.__file__).parents[1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=2_000, help="sample questions")
    parser.add_argument("--base", type=Path, help="src/ of the build to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "codec.json")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(orjson.dumps(measure(args.measure, args.rounds)).decode())
        return
    import qaloop

    this = Path(qaloop.__file__).parents[1]
    load_start = list(os.getloadavg())
    kinds = asyncio.run(record(args.questions))
    builds = {"this": this} | ({"base": args.base.resolve()} if args.base else {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "records.json"
        inputs.write_bytes(orjson.dumps({k: [v.decode() for v in vs] for k, vs in kinds.items()}))
        for k in range(args.repeats):
            order = list(builds.items()) if k % 2 == 0 else list(builds.items())[::-1]
            for name, src in order:
                result = run_build(
                    src, [__file__, "--measure", str(inputs), "--rounds", str(args.rounds)]
                )
                runs[name].append(result)
                line = ", ".join(
                    f"{kind} {result[kind]['encode_us']:.1f}+{result[kind]['decode_us']:.1f} us"
                    for kind in KINDS
                )
                print(
                    f"{name:5s} run {k + 1}: encode+decode {line} (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    best: dict[str, dict[str, dict[str, float]]] = {}
    for name, rs in runs.items():
        best[name] = {
            kind: {
                key: min(r[kind][key] for r in rs)
                for key in ("encode_us", "decode_us", "total_us", "bytes_per_message")
            }
            | {"messages": rs[0][kind]["messages"]}
            for kind in KINDS
        }
    digests = {kind: {r[kind]["digest"] for rs in runs.values() for r in rs} for kind in KINDS}
    summary: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "questions": args.questions,
        "best": best,
        "identical_envelopes": all(len(d) == 1 for d in digests.values()),
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
        summary["speedup"] = {
            kind: best["base"][kind]["total_us"] / best["this"][kind]["total_us"] for kind in KINDS
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    for kind in KINDS:
        cells = "; ".join(
            f"{name} {b[kind]['encode_us']:.1f} + {b[kind]['decode_us']:.1f} = "
            f"{b[kind]['total_us']:.1f} us, {b[kind]['bytes_per_message']:.0f} B"
            for name, b in best.items()
        )
        ratio = f" ({summary['speedup'][kind]:.2f}x)" if "speedup" in summary else ""
        print(f"{kind:8s} ({best['this'][kind]['messages']} messages): {cells}{ratio}")
    print(f"identical envelopes: {summary['identical_envelopes']}")


if __name__ == "__main__":
    main()
