"""The batch lane: a batch question waits (with a safety copy on the delayed topic), jobs are
submitted by size or age, polled, and every outcome routed: answers to the generated topic at
batch prices, a refused item to the dead letters, a failed job or an item an expired job never
ran back to the interactive lane with its reason. And priority slots: interactive first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from qaloop.bus.base import OutMessage, Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, ErrorClass, EventKind, QuestionState
from qaloop.core.retry import RetryPolicy
from qaloop.llm.accounting import Meter
from qaloop.llm.base import (
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    PermanentError,
)
from qaloop.llm.batch import BatchExpired, BatchItem, BatchPoll, BatchState
from qaloop.llm.escalation import Escalation
from qaloop.llm.pricing import PriceTable
from qaloop.services.batch_lane import BatchLane, BatchLaneConfig
from qaloop.services.priority import PrioritySlots
from qaloop.services.worker import Worker, WorkerConfig, attempt_request

TOPICS = Topics()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class ScriptedBatch:
    name = "openai"
    model = "gpt-4o-mini"

    def __init__(self, outcome: BatchState = BatchState.DONE, polls: int = 1) -> None:
        self.outcome = outcome
        self.polls = polls
        self.jobs: dict[str, list[BatchItem]] = {}
        self.reads = 0
        self.submit_error: LLMError | None = None
        self.item_results: dict[str, Generation | LLMError] = {}

    async def submit(self, items: Sequence[BatchItem]) -> str:
        if self.submit_error is not None:
            raise self.submit_error
        job = f"job{len(self.jobs)}"
        self.jobs[job] = list(items)
        return job

    async def poll(self, job_id: str) -> BatchPoll:
        self.reads += 1
        if self.reads <= self.polls:
            return BatchPoll(BatchState.RUNNING)
        if self.outcome is BatchState.FAILED:
            return BatchPoll(BatchState.FAILED, detail="openai batch failed: quota")
        results: dict[str, Generation | LLMError] = {}
        for item in self.jobs[job_id]:
            results[item.key] = self.item_results.get(
                item.key,
                Generation(f"answer to {item.key}", 0.0, model="gpt-4o-mini",
                           input_tokens=1000, output_tokens=1000),
            )  # fmt: skip
        return BatchPoll(self.outcome, results)

    async def aclose(self) -> None:
        return None


class Recording:
    name = "openai"
    model = "gpt-4o-mini"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        return Generation("an answer", 1.0, input_tokens=5, output_tokens=5)

    async def aclose(self) -> None:
        return None


def _env(qid: str) -> Envelope:
    env = Envelope(qid, f"Question {qid}?", None, "t", 1000.0, lane="batch")
    return env.with_event(EventKind.ACCEPTED, 1000.0)


def _lane(
    client: ScriptedBatch, clock: Clock, sink: list[OutMessage], **cfg: float | str
) -> BatchLane:
    async def publish(messages: Sequence[OutMessage]) -> None:
        sink.extend(messages)

    config = BatchLaneConfig(**{"max_size": 3, "max_wait_s": 10.0, "poll_every_s": 5.0, **cfg})  # type: ignore[arg-type]
    return BatchLane(client, TOPICS, publish, request=_request,
                     meter=Meter(PriceTable.load()), config=config, clock=clock)  # fmt: skip


def _request(env: Envelope, model: str | None) -> GenerationRequest:
    return attempt_request(WorkerConfig(prompt_template="Question: {question}"), env, model=model)


async def _one_job(lane: BatchLane, clock: Clock, qids: str, wait_s: float = 10.0) -> None:
    """Queue these questions, let the wait pass (submit), then one poll later (the job ends:
    `ScriptedBatch(polls=0)`)."""
    for q in qids:
        lane.take(_env(q))
    clock.t += wait_s
    await lane.step()
    clock.t += 5
    await lane.step()


def _decoded(messages: Sequence[OutMessage], topic: str) -> list[Envelope]:
    return [codec.decode(m.value) for m in messages if m.topic == topic]


async def test_batch_questions_wait_then_come_back_as_answers_at_batch_prices() -> None:
    clock, sink = Clock(), []
    client = ScriptedBatch()
    lane = _lane(client, clock, sink)
    copies = lane.take(_env("a"))
    assert copies is not None and [m.topic for m in copies] == [TOPICS.delayed]
    copy = codec.decode(copies[0].value)
    assert copy.due_at == pytest.approx(1000.0 + 25 * 3600) and copy.history[-1].kind == "batched"
    await lane.step()
    assert not client.jobs  # one question, younger than max_wait: no job yet
    clock.t += 10
    await lane.step()
    assert len(client.jobs) == 1
    await lane.step()  # not time to poll yet
    clock.t += 5
    await lane.step()  # running
    clock.t += 5
    await lane.step()  # done
    [gen] = _decoded(sink, TOPICS.generated)
    assert gen.state is QuestionState.SCORING and gen.answer == "answer to a"
    usage = gen.history[-1].usage
    assert usage is not None and usage.lane == "batch"
    assert usage.cost_usd == pytest.approx((1000 * 0.075 + 1000 * 0.30) / 1e6)  # half price
    assert lane.take(copy) == []  # the safety copy, due later, is dropped


async def test_a_full_batch_is_submitted_at_once() -> None:
    clock, sink = Clock(), []
    client = ScriptedBatch()
    lane = _lane(client, clock, sink)
    for q in "abcd":
        lane.take(_env(q))
    await lane.step()
    assert [len(v) for v in client.jobs.values()] == [3] and len(lane.pending) == 1


async def test_item_errors_are_routed_by_class() -> None:
    clock, sink = Clock(), []
    client = ScriptedBatch(polls=0)
    client.item_results = {
        "a": PermanentError("openai-compatible 400: bad", status=400),
        "b": OverloadError("503", status=503),
        "c": PermanentError("openai-compatible: empty answer"),  # no status: about the reply
    }
    lane = _lane(client, clock, sink)
    await _one_job(lane, clock, "abc", wait_s=0.0)
    [dead] = _decoded(sink, TOPICS.dead_letter)
    assert dead.question_id == "a" and dead.state is QuestionState.FAILED
    back = {e.question_id: e for e in _decoded(sink, TOPICS.questions)}
    assert set(back) == {"b", "c"}
    assert all(e.lane == "interactive" and e.state is QuestionState.QUEUED for e in back.values())
    assert back["b"].history[-1].error_class is ErrorClass.OVERLOAD


async def test_failed_job_puts_every_question_back_with_the_reason() -> None:
    clock, sink = Clock(), []
    lane = _lane(ScriptedBatch(BatchState.FAILED, polls=0), clock, sink)
    await _one_job(lane, clock, "ab")
    back = _decoded(sink, TOPICS.questions)
    assert [e.question_id for e in back] == ["a", "b"]
    assert all(e.lane == "interactive" for e in back)
    assert back[0].error_detail == "openai batch failed: quota"
    assert lane.stats.put_back == {"openai batch failed": 2}


async def test_expired_job_answers_what_ran_and_puts_back_the_rest() -> None:
    clock, sink = Clock(), []
    client = ScriptedBatch(BatchState.EXPIRED, polls=0)
    client.item_results = {"b": BatchExpired("openai batch: expired")}
    lane = _lane(client, clock, sink)
    await _one_job(lane, clock, "ab")
    assert [e.question_id for e in _decoded(sink, TOPICS.generated)] == ["a"]
    [back] = _decoded(sink, TOPICS.questions)
    assert back.question_id == "b" and back.error_detail is not None
    assert "expired" in back.error_detail


async def test_submit_error_puts_the_questions_back() -> None:
    clock, sink = Clock(), []
    client = ScriptedBatch()
    client.submit_error = PermanentError("openai-compatible 403: batch not allowed", status=403)
    lane = _lane(client, clock, sink)
    lane.take(_env("a"))
    clock.t += 10
    await lane.step()
    [back] = _decoded(sink, TOPICS.questions)
    assert back.error_detail is not None and "batch submit failed" in back.error_detail


async def test_a_lost_job_is_answered_interactively_by_the_worker() -> None:
    class Answer:
        name = "openai"
        model = "gpt-4o-mini"

        async def generate(self, request: GenerationRequest) -> Generation:
            return Generation("now", 1.0, input_tokens=1, output_tokens=1)

        async def aclose(self) -> None:
            return None

    clock, sink = Clock(), []
    lane = _lane(ScriptedBatch(), clock, sink)
    worker = Worker(Answer(), TOPICS, WorkerConfig(), RetryPolicy(), batch_lane=lane)
    [copy_msg] = await worker.handle(_env("a"))
    assert copy_msg.topic == TOPICS.delayed
    restarted = _lane(ScriptedBatch(), clock, sink)  # a new process: the job is unknown
    worker = Worker(Answer(), TOPICS, WorkerConfig(), RetryPolicy(), batch_lane=restarted)
    resumed = codec.decode(copy_msg.value).with_event(EventKind.RESUMED, clock.t)
    [out] = await worker.handle(resumed)
    assert out.topic == TOPICS.generated


async def test_interactive_calls_get_slots_first() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def call(lane: str, name: str, hold: bool = False) -> None:
        async with slots.slot(lane):
            order.append(name)
            if hold:
                await release.wait()

    first = asyncio.create_task(call("batch", "b0", hold=True))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(call("batch", "b1")), asyncio.create_task(call("batch", "b2"))]
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(call("interactive", "i1")))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["b0", "i1", "b1", "b2"]
    assert slots.free == 1 and slots.waited == {"interactive": 1, "batch": 2}


async def test_batch_spend_is_budgeted() -> None:
    from qaloop.llm.budget import Budget, BudgetConfig, LocalLedger

    clock, sink = Clock(), []
    budget = Budget(BudgetConfig(limit_usd=0.0005), LocalLedger(), clock=clock)
    client = ScriptedBatch(polls=0)

    async def publish(messages: Sequence[OutMessage]) -> None:
        sink.extend(messages)

    lane = BatchLane(
        client,
        TOPICS,
        publish,
        request=_request,
        meter=Meter(PriceTable.load()),
        budget=budget,
        config=BatchLaneConfig(max_wait_s=0.0, poll_every_s=0.0),
        clock=clock,
    )
    worker = Worker(
        Counting(), TOPICS, WorkerConfig(), RetryPolicy(), clock=clock, budget=budget,
        batch_lane=lane,
    )  # fmt: skip
    assert [m.topic for m in await worker.handle(_env("a"))] == [TOPICS.delayed]  # the copy
    await lane.step()  # submit
    await lane.step()  # done: 0.000375 USD charged
    assert len(_decoded(sink, TOPICS.generated)) == 1
    await budget.charge(None, 0.0002)  # someone else's call crosses the limit
    [parked] = await worker.handle(_env("b"))
    env = codec.decode(parked.value)
    assert env.error_class is ErrorClass.SPEND and "b" not in {
        i.key for items in client.jobs.values() for i in items
    }


class Counting:
    name = "openai"
    model = "gpt-4o-mini"

    async def generate(self, request: GenerationRequest) -> Generation:
        raise AssertionError("a batch question must not be called interactively here")

    async def aclose(self) -> None:
        return None


async def test_a_job_in_flight_is_reattached_after_a_restart(tmp_path: Path) -> None:
    journal = str(tmp_path / "batch.json")
    clock, sink = Clock(), []
    provider = ScriptedBatch(polls=0)  # the provider keeps the job across our restart
    first = _lane(provider, clock, sink, journal_path=journal)
    copies = [m for qid in ("a", "b") for m in first.take(_env(qid)) or []]
    clock.t += 10
    await first.step()
    assert len(provider.jobs) == 1 and not _decoded(sink, TOPICS.generated)
    saved = json.loads(Path(journal).read_text(encoding="utf-8"))
    assert list(saved["jobs"]) == ["job0"] and len(saved["jobs"]["job0"]["envelopes"]) == 2

    restarted = _lane(provider, clock, sink, journal_path=journal)  # `first` died here
    assert restarted.reattach() == 1
    await restarted.step()  # polled at once, not after the 25 h safety copies
    assert sorted(e.answer or "" for e in _decoded(sink, TOPICS.generated)) == [
        "answer to a",
        "answer to b",
    ]
    assert json.loads(Path(journal).read_text(encoding="utf-8")) == {"jobs": {}}
    for copy in copies:  # their safety copies, due later, are dropped
        assert restarted.take(codec.decode(copy.value)) == []
    assert restarted.reattach() == 0


async def test_an_unreadable_journal_is_logged_and_not_reattached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "batch.json"
    journal.write_text('{"jobs": {"job0": {"envelopes": ["not an envelope"]}}}', encoding="utf-8")
    lane = _lane(ScriptedBatch(), Clock(), [], journal_path=str(journal))
    assert lane.reattach() == 0 and not lane.jobs
    assert "cannot read the journal" in caplog.text


async def test_a_batch_regeneration_gets_the_interactive_prompt_temperature_and_model() -> None:
    """The batch lane's request for attempt n is the interactive lane's: the feedback prompt,
    the escalation's temperature, and its model (one job per model)."""
    from qaloop.bus.memory import MemoryBus
    from qaloop.core.routing import CONTROL, FEEDBACK
    from qaloop.settings import Settings
    from qaloop.wiring import batch_lane_for, worker_config

    settings = Settings(
        llm="openai",
        llm_base_url="http://127.0.0.1:9/v1",
        batch_lane=True,
        attempt_temperatures=[0.2, 0.6, 1.0],
        last_attempt_model="gpt-4o",
    )
    lane = batch_lane_for(settings, TOPICS, MemoryBus(), meter=None)
    assert lane is not None
    first = _env("a")
    for env, model, temperature, rejected in [
        (first, "gpt-4o-mini", 0.2, False),
        (first.evolve(attempt=2, feedback="echo", arm=FEEDBACK), "gpt-4o-mini", 0.6, True),
        (first.evolve(attempt=2, feedback="echo", arm=CONTROL), "gpt-4o-mini", 0.6, False),
        (first.evolve(attempt=3, feedback="echo", arm=FEEDBACK), "gpt-4o", 1.0, True),
    ]:
        batch = lane.request(env, lane.model_for(env))
        assert (batch.model, batch.temperature) == (model, temperature)
        assert ("An earlier answer to this question was rejected" in batch.prompt) is rejected
        # what the interactive worker sends for the same attempt
        provider = Recording()
        interactive = Worker(provider, TOPICS, worker_config(settings), RetryPolicy())
        await interactive.handle(env.evolve(lane="interactive"))
        [sent] = provider.requests
        assert (sent.prompt, sent.temperature) == (batch.prompt, batch.temperature)
        assert sent.deployment == f"openai/{model}"
    await lane.aclose()


def test_an_attempt_escalated_to_another_provider_is_answered_interactively() -> None:
    client = ScriptedBatch()  # openai
    sink: list[OutMessage] = []
    lane = _lane(client, Clock(), sink)
    lane.escalation = Escalation(("openai/gpt-4o-mini", "gemini/gemini-2.5-flash"))
    assert lane.take(_env("a")) is not None  # attempt 1: openai, batched
    assert lane.take(_env("b").evolve(attempt=2)) is None  # attempt 2: gemini's, not this job's
    assert [e.question_id for e in lane.pending] == ["a"]


async def test_one_job_per_model() -> None:
    client = ScriptedBatch(polls=0)
    sink: list[OutMessage] = []
    clock = Clock()
    lane = _lane(client, clock, sink, max_wait_s=0.0)
    lane.escalation = Escalation(("openai/gpt-4o-mini", "openai/gpt-4o"))
    for env in (_env("a"), _env("b").evolve(attempt=2), _env("c")):
        lane.take(env)
    await lane.step()  # the oldest's model first: a and c
    await lane.step()
    models = [{i.request.model for i in items} for items in client.jobs.values()]
    assert models == [{"gpt-4o-mini"}, {"gpt-4o"}]
    assert [[i.key for i in items] for items in client.jobs.values()] == [["a", "c"], ["b"]]
