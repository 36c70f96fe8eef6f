"""`qaloop experiment sync-vs-async`: one workload, two architectures, the simulated LLM.

- sync (before the migration): a fixed pool of server workers; each request holds a worker
  while it looks the question up and, on a miss, calls the LLM inline once. A failed call is an
  error for that request (no retry), and every request waits for a free worker -- hits too.
- async (qaloop's EmbeddedPipeline, in-process): the gateway answers hits at once and queues
  misses; LLM workers call the provider concurrently, retry 503s with backoff, park 429s, and
  the judge sends low-scored answers back. A queued request's time to an answer is measured
  until its question is final (validated or failed).

Time is scaled: the provider's latency (a lognormal of median `latency_median_s`), the arrival
times and every retry delay are multiplied by `time_factor`, and measured durations are divided
by it, so results are reported in "model seconds" (what a user would see at full latency) while
the run takes seconds. Fixed per-request overheads (SQLite, the event loop) are inflated by
1 / time_factor, so the async path's numbers are slightly pessimistic.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from qaloop.core.ids import question_id
from qaloop.llm.base import DEFAULT_PROMPT_TEMPLATE, GenerationRequest, LLMError, render_prompt
from qaloop.llm.simulated import SimulatedConfig, SimulatedProvider
from qaloop.quality import get_scorer
from qaloop.report.tables import Cell, Table, mean, percentile
from qaloop.traffic_model import arrivals, popularity

# fmt: off
_VOCAB = (
    "water", "light", "energy", "plant", "river", "engine", "city", "music", "garden", "market",
    "paper", "window", "coffee", "forest", "bridge", "signal", "number", "memory", "planet",
    "doctor", "school", "voice", "island", "camera", "winter", "silver", "orange", "rocket",
    "pencil", "cotton", "harbor", "museum", "ticket", "desert", "violin", "castle", "lemon",
)
# fmt: on


@dataclass(frozen=True, slots=True)
class SyncAsyncConfig:
    n_requests: int = 300
    n_questions: int = 2000  # distinct questions; Zipf popularity makes some repeat
    rate: float = 8.0  # requests per model second (Poisson); `run` sweeps `rates`
    rates: tuple[float, ...] = (2.0, 16.0)  # light load (sync keeps up), heavy (it cannot)
    s: float = 1.1
    time_factor: float = 0.05  # wall seconds per model second
    latency_median_s: float = 1.5
    latency_sigma: float = 0.5
    overload_rate: float = 0.08  # 503 per call
    quota_rate: float = 0.04  # 429 per call
    quota_retry_after_s: float = 10.0
    permanent_rate: float = 0.0
    sync_workers: int = 4
    async_concurrency: int = 16
    scorer: str = "jaccard"
    threshold: float = 0.5
    max_attempts: int = 3
    seed: int = 7
    timeout_s: float = 600.0  # model seconds a request may wait for its answer


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    reference: str


@dataclass(slots=True)
class PathResult:
    name: str
    requests: int = 0
    hits: int = 0
    hit_latency_s: list[float] = field(default_factory=list)  # model seconds
    miss_latency_s: list[float] = field(default_factory=list)
    failed_requests: int = 0  # requests left without an answer (LLM error, timeout)
    answered: int = 0  # distinct questions with an answer
    validated: int = 0  # ... whose answer scored >= threshold
    lost_questions: int = 0  # distinct questions never answered because of LLM errors
    llm_calls: int = 0
    llm_errors: int = 0
    makespan_s: float = 0.0  # model seconds, first arrival to last answer
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        """Requests answered per model second."""
        done = self.requests - self.failed_requests
        return done / self.makespan_s if self.makespan_s else 0.0


def workload(cfg: SyncAsyncConfig) -> tuple[list[Question], list[tuple[float, int]]]:
    """Synthetic questions with reference answers, and (arrival model s, question index)."""
    rng = random.Random(cfg.seed)
    questions = [
        Question(
            f"Question {i}: how do {rng.choice(_VOCAB)} and {rng.choice(_VOCAB)} relate?",
            " ".join(rng.choice(_VOCAB) for _ in range(rng.randint(12, 40))),
        )
        for i in range(cfg.n_questions)
    ]
    gaps = arrivals("poisson", cfg.rate, cfg.seed)
    pick = popularity("zipf", cfg.n_questions, cfg.seed, cfg.s)
    t = 0.0
    reqs = []
    for _ in range(cfg.n_requests):
        t += next(gaps)
        reqs.append((t, pick()))
    return questions, reqs


def provider_config(cfg: SyncAsyncConfig) -> SimulatedConfig:
    return SimulatedConfig(
        seed=cfg.seed,
        latency_median_ms=cfg.latency_median_s * 1000 * cfg.time_factor,
        latency_sigma=cfg.latency_sigma,
        overload_rate=cfg.overload_rate,
        quota_rate=cfg.quota_rate,
        quota_retry_after_s=cfg.quota_retry_after_s * cfg.time_factor,
        permanent_rate=cfg.permanent_rate,
    )


async def _replay(
    reqs: list[tuple[float, int]],
    factor: float,
    handle: Callable[[float, int], Coroutine[Any, Any, None]],
) -> tuple[float, list[asyncio.Task[None]]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[None]] = []
    for t_model, qi in reqs:
        delay = start + t_model * factor - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(handle(loop.time(), qi)))
    return start, tasks


async def run_sync(
    cfg: SyncAsyncConfig, on_request: Callable[[], None] | None = None
) -> PathResult:
    questions, reqs = workload(cfg)
    provider = SimulatedProvider(provider_config(cfg))
    scorer = get_scorer(cfg.scorer)
    res = PathResult(f"sync @{cfg.rate:g}/s")
    loop = asyncio.get_running_loop()
    workers = asyncio.Semaphore(cfg.sync_workers)
    stored: dict[int, float] = {}  # question index -> score of the stored answer
    calls: Counter[int] = Counter()
    ends: list[float] = []

    async def handle(arrived: float, qi: int) -> None:
        async with workers:
            q = questions[qi]
            if qi in stored:
                res.hits += 1
                res.hit_latency_s.append((loop.time() - arrived) / cfg.time_factor)
            else:
                calls[qi] += 1
                request = GenerationRequest(
                    question_id(q.text),
                    q.text,
                    1,
                    calls[qi],
                    render_prompt(DEFAULT_PROMPT_TEMPLATE, q.text),
                    q.reference,
                )
                try:
                    generation = await provider.generate(request)
                except LLMError:
                    res.llm_errors += 1
                    res.failed_requests += 1
                else:
                    stored[qi] = scorer.score(generation.text, q.reference)
                res.miss_latency_s.append((loop.time() - arrived) / cfg.time_factor)
            ends.append(loop.time())
        if on_request is not None:
            on_request()

    wall = time.perf_counter()
    start, tasks = await _replay(reqs, cfg.time_factor, handle)
    await asyncio.gather(*tasks)
    res.wall_s = time.perf_counter() - wall
    res.requests = len(reqs)
    res.llm_calls = provider.calls
    res.answered = len(stored)
    res.validated = sum(score >= cfg.threshold for score in stored.values())
    res.lost_questions = len({qi for _, qi in reqs} - set(stored))
    res.makespan_s = (max(ends) - start) / cfg.time_factor if ends else 0.0
    return res


async def run_async(
    cfg: SyncAsyncConfig, on_request: Callable[[], None] | None = None
) -> PathResult:
    from qaloop.pipeline import EmbeddedPipeline
    from qaloop.settings import Settings
    from qaloop.storage.factory import open_repository

    questions, reqs = workload(cfg)
    f = cfg.time_factor
    overrides: dict[str, Any] = {
        "db": "sqlite://:memory:",
        "llm_concurrency": cfg.async_concurrency,
        "scorer": cfg.scorer,
        "threshold": cfg.threshold,
        "max_attempts": cfg.max_attempts,
        "sim_seed": cfg.seed,
        "backoff_base_s": 0.25 * f,
        "backoff_cap_s": 8.0 * f,
        "quota_default_delay_s": 30.0 * f,
        "quota_day_delay_s": 3600.0 * f,
        "llm_timeout_s": 60.0,
    }
    settings = Settings(**overrides)  # a dict: pydantic-settings fills the rest from defaults
    repo = open_repository("sqlite://:memory:")
    provider = SimulatedProvider(provider_config(cfg))
    pipeline = EmbeddedPipeline(settings, provider=provider, repo=repo)
    res = PathResult(f"async @{cfg.rate:g}/s")
    loop = asyncio.get_running_loop()
    ends: list[float] = []

    async def handle(arrived: float, qi: int) -> None:
        q = questions[qi]
        status, body = await pipeline.service.ask(q.text, q.reference)
        if status == 200:
            res.hits += 1
            res.hit_latency_s.append((loop.time() - arrived) / f)
            res.failed_requests += body.get("answer") is None
        else:
            final = await pipeline.service.wait(body["id"], cfg.timeout_s * f)
            res.miss_latency_s.append((loop.time() - arrived) / f)
            # an LLM error or a timeout; a question the gate gave up on (every answer rejected
            # by a check, so none kept) is a quality outcome, not a request the path lost
            res.failed_requests += final is None or (
                final.get("answer") is None and final.get("error_class") is not None
            )
        ends.append(loop.time())
        if on_request is not None:
            on_request()

    await pipeline.start()
    wall = time.perf_counter()
    try:
        start, tasks = await _replay(reqs, f, handle)
        await asyncio.gather(*tasks)
        await pipeline.drain(cfg.timeout_s * f)
        res.wall_s = time.perf_counter() - wall
    finally:
        stats = pipeline.stats()["pipeline"]
        await pipeline.stop()
    rows = repo.export_questions()
    repo.close()
    res.requests = len(reqs)
    res.llm_calls = int(stats["llm_calls"])
    res.llm_errors = sum(int(n) for n in stats["llm_errors"].values())
    res.answered = sum(r["answer"] is not None for r in rows)
    res.validated = sum(r["state"] == "validated" for r in rows)
    res.lost_questions = sum(
        r["state"] == "failed" and r["answer"] is None and r["error_class"] is not None
        for r in rows
    )
    res.makespan_s = (max(ends) - start) / f if ends else 0.0
    return res


def run(cfg: SyncAsyncConfig, on_request: Callable[[], None] | None = None) -> list[PathResult]:
    """Both paths at every rate in `cfg.rates` (sync then async, one after the other)."""

    async def all_runs() -> list[PathResult]:
        out = []
        for rate in cfg.rates:
            at = replace(cfg, rate=rate)
            out += [await run_sync(at, on_request), await run_async(at, on_request)]
        return out

    return asyncio.run(all_runs())


def table(results: list[PathResult], cfg: SyncAsyncConfig) -> Table:
    def row(label: str, get: Callable[[PathResult], Cell]) -> list[Cell]:
        return [label, *[get(r) for r in results]]

    rows = [
        row("requests", lambda r: r.requests),
        row("answered at once (hits)", lambda r: r.hits),
        row("hit latency p50 (s)", lambda r: percentile(r.hit_latency_s, 50)),
        row("hit latency p95 (s)", lambda r: percentile(r.hit_latency_s, 95)),
        row("waited for the LLM (misses)", lambda r: len(r.miss_latency_s)),
        row("miss latency mean (s)", lambda r: mean(r.miss_latency_s)),
        row("miss latency p50 (s)", lambda r: percentile(r.miss_latency_s, 50)),
        row("miss latency p95 (s)", lambda r: percentile(r.miss_latency_s, 95)),
        row("miss latency max (s)", lambda r: max(r.miss_latency_s, default=None)),
        row("makespan: first request to last answer (s)", lambda r: r.makespan_s),
        row("throughput (answered requests / s)", lambda r: r.throughput),
        row("LLM calls", lambda r: r.llm_calls),
        row("LLM errors", lambda r: r.llm_errors),
        row("requests left without an answer", lambda r: r.failed_requests),
        row("questions answered", lambda r: r.answered),
        row(f"questions with a score >= {cfg.threshold:g}", lambda r: r.validated),
        row("questions lost to LLM errors", lambda r: r.lost_questions),
        row("wall time of the run (s)", lambda r: r.wall_s),
    ]
    return Table(
        "Synchronous vs asynchronous on the same workload (times in model seconds)",
        ["metric", *[r.name for r in results]],
        rows,
        f"{cfg.n_requests} requests per run (Poisson at "
        f"{' and '.join(f'{r:g}' for r in cfg.rates)} requests/s, Zipf s={cfg.s:g} over "
        f"{cfg.n_questions} questions); simulated LLM: lognormal latency median "
        f"{cfg.latency_median_s:g} s (sigma {cfg.latency_sigma:g}), {100 * cfg.overload_rate:g} % "
        f"503, {100 * cfg.quota_rate:g} % 429 (Retry-After {cfg.quota_retry_after_s:g} s), "
        f"{100 * cfg.permanent_rate:g} % 400; sync: {cfg.sync_workers} workers; async: "
        f"{cfg.async_concurrency} LLM calls in flight, scorer {cfg.scorer}, threshold "
        f"{cfg.threshold:g}, max {cfg.max_attempts} attempts. Time scaled by {cfg.time_factor:g} "
        "(wall = model x factor).",
    )
