"""The traffic generator: replays questions at a chosen arrival process and key popularity
against a gateway (over HTTP, or in-process) and records every request to CSV.

Open loop: requests start at their scheduled times whatever the server does (a closed loop
would slow down with the server and hide its latency), bounded by `max_in_flight` so a dead
server can't make the generator itself run out of memory. Each row: scheduled and actual send
time, question id, HTTP status, outcome (cache, storage, queued, joined, failed, error), the
response latency and, with `wait_s`, the time until the final answer of a queued question.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import orjson

from qaloop.dataset import QA
from qaloop.traffic_model import arrivals, popularity, schedule

AskFn = Callable[[str, str | None], Awaitable[tuple[int, dict[str, Any]]]]
WaitFn = Callable[[str, float], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    arrival: str = "poisson"
    rate: float = 20.0
    popularity: str = "zipf"
    zipf_s: float = 1.1
    count: int | None = 200
    duration_s: float | None = None
    seed: int = 42
    max_in_flight: int = 256
    wait_s: float = 0.0  # >0: long-poll queued questions for their final answer

    def n_requests(self) -> int:
        if self.count is not None:
            return self.count
        if self.duration_s is not None:
            return max(1, int(self.rate * self.duration_s * 4) + 100)  # cut by time below
        raise ValueError("give a request count or a duration")


@dataclass(slots=True)
class RequestRecord:
    seq: int
    scheduled_s: float
    sent_s: float
    question_id: str
    status: int
    outcome: str
    latency_ms: float
    answer_ms: float | None = None
    final_status: str | None = None
    error: str | None = None


def outcome_of(status: int, body: dict[str, Any]) -> str:
    if status == 200:
        return str(body.get("source", "storage")) if body.get("status") == "answered" else "failed"
    if status == 202:
        return "joined" if body.get("joined") else "queued"
    return "error"


async def run_traffic(
    plan: TrafficPlan,
    dataset: Sequence[QA],
    ask: AskFn,
    wait: WaitFn | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[RequestRecord]:
    if not dataset:
        raise ValueError("the dataset is empty")
    pick = popularity(plan.popularity, len(dataset), plan.seed, plan.zipf_s)
    plan_items = list(
        schedule(arrivals(plan.arrival, plan.rate, plan.seed), pick, plan.n_requests())
    )
    slots = asyncio.Semaphore(plan.max_in_flight)
    records: list[RequestRecord] = []
    start = time.perf_counter()

    async def one(seq: int, at: float, key: int) -> None:
        qa = dataset[key]
        sent = time.perf_counter() - start
        t0 = time.perf_counter()
        try:
            status, body = await ask(qa.question, qa.reference_answer)
            record = RequestRecord(
                seq,
                at,
                sent,
                str(body.get("id", "")),
                status,
                outcome_of(status, body),
                (time.perf_counter() - t0) * 1000,
            )
            if status == 400 or status >= 422:
                record.error = str(body.get("error", {}).get("message", ""))[:200]
        except Exception as exc:  # a network failure is data here, not a crash
            record = RequestRecord(
                seq,
                at,
                sent,
                "",
                0,
                "error",
                (time.perf_counter() - t0) * 1000,
                error=repr(exc)[:200],
            )
        if wait is not None and plan.wait_s > 0 and record.outcome in ("queued", "joined"):
            final = await wait(record.question_id, plan.wait_s)
            record.answer_ms = (time.perf_counter() - t0) * 1000
            record.final_status = None if final is None else str(final.get("status"))
        records.append(record)
        slots.release()
        if progress is not None:
            progress(1)

    tasks = []
    for seq, (at, key) in enumerate(plan_items):
        if plan.duration_s is not None and at > plan.duration_s:
            break
        delay = at - (time.perf_counter() - start)
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(one(seq, at, key)))
    await asyncio.gather(*tasks)
    records.sort(key=lambda r: r.seq)
    return records


def http_client_fns(client: httpx.AsyncClient, priority: str | None = None) -> tuple[AskFn, WaitFn]:
    extra = {"priority": priority} if priority else {}

    async def ask(question: str, reference: str | None) -> tuple[int, dict[str, Any]]:
        r = await client.post(
            "/v1/questions", json={"question": question, "reference_answer": reference, **extra}
        )
        return r.status_code, r.json()

    async def wait(qid: str, seconds: float) -> dict[str, Any] | None:
        r = await client.get(f"/v1/questions/{qid}", params={"wait": seconds}, timeout=seconds + 10)
        return r.json() if r.status_code == 200 else None

    return ask, wait


def sse_wait_fn(client: httpx.AsyncClient) -> WaitFn:
    """`wait` over GET /v1/questions/{id}/events: the final state is pushed the moment the
    gateway sees it, with no cap (a ?wait= long-poll is capped at QALOOP_MAX_WAIT_S)."""

    async def wait(qid: str, seconds: float) -> dict[str, Any] | None:
        last: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(seconds):
                async with client.stream(
                    "GET", f"/v1/questions/{qid}/events", timeout=seconds + 10
                ) as r:
                    if r.status_code != 200:
                        return None
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            last = orjson.loads(line[6:])
                            if last is not None and last.get("status") in ("validated", "failed"):
                                return last
        except TimeoutError:
            pass
        return last

    return wait


def write_csv(records: Sequence[RequestRecord], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(RequestRecord)])
        writer.writeheader()
        for record in records:
            writer.writerow(asdict(record))


def summarise(records: Sequence[RequestRecord]) -> dict[str, Any]:
    by_outcome: dict[str, int] = {}
    for r in records:
        by_outcome[r.outcome] = by_outcome.get(r.outcome, 0) + 1
    latencies = sorted(r.latency_ms for r in records)
    span = max((r.sent_s for r in records), default=0.0)

    def pct(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None

    answers = sorted(r.answer_ms for r in records if r.answer_ms is not None)
    return {
        "requests": len(records),
        "outcomes": by_outcome,
        "offered_rate_per_s": round(len(records) / span, 2) if span else None,
        "response_p50_ms": pct(latencies, 0.5),
        "response_p99_ms": pct(latencies, 0.99),
        "answer_p50_ms": pct(answers, 0.5),
        "answer_p95_ms": pct(answers, 0.95),
    }
