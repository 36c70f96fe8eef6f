"""One worker process for the multi-process rate-limit test and the LLM benchmark: runs the
real Worker handler over N questions at once against a (fake) provider URL, behind the shared
protection, and prints a JSON summary of where each question ended.

    python tests/fakes/worker_proc.py --base-url URL --provider openai --n 20 \
        --limit 20 --window-s 2 --backend postgres --dsn postgresql://... --key test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

from qaloop.bus.base import Topics
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope
from qaloop.core.retry import RetryPolicy
from qaloop.llm.base import Provider
from qaloop.llm.openai_compat import OpenAICompatProvider
from qaloop.llm.protection import (
    Limit,
    LocalRateLimiter,
    ProtectedProvider,
    RateLimiter,
)


async def run(args: argparse.Namespace) -> dict[str, object]:
    from qaloop.services.worker import Worker, WorkerConfig

    limits = [Limit.make("rpm", args.limit, args.window_s, headroom=args.headroom)]
    limiter: RateLimiter
    if args.backend == "postgres":
        from qaloop.llm.ratelimit_pg import PostgresRateLimiter

        limiter = PostgresRateLimiter(args.dsn, args.key, limits)
    else:
        limiter = LocalRateLimiter(limits)
    inner: Provider
    if args.provider == "gemini":
        from qaloop.llm.gemini import GeminiProvider

        inner = GeminiProvider("fake-key", base_url=args.base_url, timeout_s=30)
    else:
        inner = OpenAICompatProvider(
            base_url=f"{args.base_url}/v1", api_key="fake-key", timeout_s=30, model="fake"
        )
    provider = ProtectedProvider(inner, limiter=limiter, max_queue_wait_s=args.max_wait_s)
    topics = Topics()
    worker = Worker(provider, topics, WorkerConfig(request_timeout_s=600), RetryPolicy())
    sem = asyncio.Semaphore(args.concurrency)
    done: list[float] = []

    async def one(i: int) -> str:
        question = f"{args.tag} question {i}?"
        env = Envelope(question_id(question), question, None, "t", time.time())
        async with sem:
            outputs = await worker.handle(env)
        done.append(time.monotonic())
        return outputs[0].topic.rsplit(".", 1)[-1]

    if args.start_at:  # line both processes up on the same start time
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
    started = time.monotonic()
    topics_out = await asyncio.gather(*(one(i) for i in range(args.n)))
    elapsed = time.monotonic() - started
    await provider.aclose()
    return {
        "n": args.n,
        "topics": dict(Counter(topics_out)),
        "elapsed_s": elapsed,
        "first_done_s": min(done) - started if done else None,
        "last_done_s": max(done) - started if done else None,
        "rate_waits": provider.stats.rate_waits,
        "rate_refused": provider.stats.rate_refused,
        "calls": provider.stats.calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--provider", choices=["openai", "gemini"], default="openai")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--backend", choices=["local", "postgres"], default="local")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--key", default="test")
    parser.add_argument("--tag", default="p")
    parser.add_argument("--max-wait-s", type=float, default=600.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--headroom", type=float, default=0.01)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
