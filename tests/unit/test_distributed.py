"""Distributed-mode pieces that need no servers: the stale sweep (Recovery), dead-letter
replay plans, `qaloop up --scale` parsing, and the services refusing the in-process bus."""

from __future__ import annotations

import asyncio
import time

import click
import pytest

from qaloop.bus.base import Topics
from qaloop.bus.memory import MemoryBus
from qaloop.cli.up import parse_scale
from qaloop.core import codec
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.core.wire import out
from qaloop.distributed import make_bus
from qaloop.services.recovery import Recovery, plan_replay
from qaloop.settings import Settings
from qaloop.storage.base import DeadLetter
from qaloop.storage.sqlite import SQLiteRepository

TOPICS = Topics.with_prefix("unit")


def accepted(text: str, at: float) -> Envelope:
    return Envelope(
        question_id=question_id(text),
        question=text,
        reference_answer="ref",
        trace_id="t",
        first_seen=at,
    ).with_event(EventKind.ACCEPTED, at)


async def drain(bus: MemoryBus, topic: str) -> list[Envelope]:
    consumer = bus.consumer("probe", [topic])
    messages = await consumer.poll(1000, 0.05)
    await consumer.close()
    return [codec.decode(m.value) for m in messages]


async def test_sweep_republishes_only_questions_that_never_progressed() -> None:
    repo = SQLiteRepository(":memory:")
    bus = MemoryBus(TOPICS)
    await bus.start()
    stuck = accepted("stuck", time.time() - 100)
    moving = accepted("moving", time.time() - 100)
    repo.accept(stuck)
    repo.accept(moving)
    # `moving` was published and a worker parked it: an event after `accepted` exists.
    repo.apply([moving.with_event(EventKind.PARKED, time.time(), wait_s=5.0)])
    await asyncio.sleep(0.3)  # storage ages rows by the time they were written
    with_time = Recovery(repo, bus, TOPICS, older_than_s=0.2)
    assert await with_time.sweep_once() == 1
    assert [e.question_id for e in await drain(bus, TOPICS.questions)] == [stuck.question_id]
    assert await with_time.sweep_once() == 0  # not again within older_than_s
    assert with_time.republished == 1


async def test_sweep_waits_for_fresh_questions_and_for_the_backlog() -> None:
    repo = SQLiteRepository(":memory:")
    bus = MemoryBus(TOPICS)
    await bus.start()
    repo.accept(accepted("fresh", time.time()))
    assert await Recovery(repo, bus, TOPICS, older_than_s=30).sweep_once() == 0
    repo.accept(accepted("old", time.time() - 100))
    await asyncio.sleep(0.3)

    async def busy() -> int:
        return 5000

    skipping = Recovery(repo, bus, TOPICS, older_than_s=0.2, backlog=busy)
    assert await skipping.sweep_once() == 0
    assert skipping.skipped == 1


def letter(raw: bytes | None, source: str, qid: str | None = None) -> DeadLetter:
    return DeadLetter("key1", "reason", source, time.time(), qid, raw)


def test_replay_plans() -> None:
    repo = SQLiteRepository(":memory:")
    # poison: original bytes back to the topic they came from
    message, why = plan_replay(letter(b"\xff", TOPICS.generated, "k"), TOPICS, repo, force=False)
    assert message is not None and message.topic == TOPICS.generated and message.value == b"\xff"
    assert message.headers["qaloop-replayed-from"] == "key1"
    # nothing recorded
    assert plan_replay(letter(None, TOPICS.questions), TOPICS, repo, force=False)[0] is None
    # an unfinished question: where its state says
    env = accepted("q", time.time()).evolve(state=QuestionState.SCORING, answer="a")
    repo.accept(accepted("q", time.time()))
    raw = codec.encode(env)
    message, why = plan_replay(letter(raw, TOPICS.dead_letter), TOPICS, repo, force=False)
    assert message is not None and message.topic == TOPICS.generated, why
    # final in storage: skipped unless forced (then re-queued as a new run)
    failed = env.evolve(state=QuestionState.FAILED)
    repo.apply([failed.with_event(EventKind.GAVE_UP, time.time())])
    message, why = plan_replay(letter(raw, TOPICS.dead_letter), TOPICS, repo, force=False)
    assert message is None and "failed" in why
    forced, _ = plan_replay(
        letter(codec.encode(failed), TOPICS.dead_letter), TOPICS, repo, force=True
    )
    assert forced is not None and forced.topic == TOPICS.questions
    assert codec.decode(forced.value).state is QuestionState.QUEUED
    # garbage recorded from the dead-letter topic itself: nowhere to send it
    assert plan_replay(letter(b"nope", TOPICS.dead_letter), TOPICS, repo, force=True)[0] is None


def test_parse_scale() -> None:
    assert parse_scale(("worker=3",))["worker"] == 3
    assert parse_scale(())["judge"] == 1
    for bad in (("worker",), ("nobody=2",), ("worker=x",), ("gateway=2",)):
        with pytest.raises(click.BadParameter):
            parse_scale(bad)


def test_services_need_a_shared_bus() -> None:
    with pytest.raises(ValueError, match="--bus kafka"):
        make_bus(Settings(bus="memory"))


def test_out_keeps_the_key() -> None:  # every topic is keyed by question id
    env = accepted("k", time.time())
    assert out(TOPICS.questions, env).key == env.question_id
