"""The concurrent runner publishes the outputs of one event-loop iteration together and commits
them after they are published; a failed publish leaves the whole batch uncommitted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from qaloop.bus.base import OutMessage, Topics
from qaloop.bus.memory import MemoryBus
from qaloop.core.model import Envelope, QuestionState
from qaloop.core.wire import out
from qaloop.services.runner import ConcurrentRunner

TOPICS = Topics()


class CountingBus(MemoryBus):
    def __init__(self, fail: bool = False) -> None:
        super().__init__(TOPICS)
        self.calls: list[int] = []
        self.fail = fail

    async def publish_many(self, messages: Sequence[OutMessage]) -> None:
        if messages and messages[0].topic == TOPICS.generated:
            self.calls.append(len(messages))
            if self.fail:
                raise RuntimeError("broker gone")
        await super().publish_many(messages)


async def _answer(env: Envelope) -> list[OutMessage]:
    return [out(TOPICS.generated, env.evolve(state=QuestionState.SCORING, answer="A."))]


async def _run(bus: CountingBus, n: int) -> None:
    await bus.publish_many(
        [out(TOPICS.questions, Envelope(f"{i:032x}", "Why?", None, "t", 1.0)) for i in range(n)]
    )
    consumer = bus.consumer("worker", [TOPICS.questions])
    runner = ConcurrentRunner(
        "worker", bus, consumer, _answer, concurrency=64, dead_letter_topic=TOPICS.dead_letter
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if sum(bus.calls) >= n and (bus.fail or bus.lag("worker", TOPICS.questions) == 0):
            break
    stop.set()
    await task


async def test_outputs_of_one_iteration_go_out_in_one_publish_then_are_committed() -> None:
    bus = CountingBus()
    await _run(bus, 50)
    assert sum(bus.calls) == 50 and bus.end_offsets(TOPICS.generated) == 50
    assert len(bus.calls) < 10  # batched, not one publish per message
    assert bus.lag("worker", TOPICS.questions) == 0


async def test_a_failed_publish_commits_nothing_of_its_batch() -> None:
    bus = CountingBus(fail=True)
    await _run(bus, 20)
    assert sum(bus.calls) >= 20
    assert bus.committed("worker", TOPICS.questions) == 0  # every one comes back


class HeldBus(CountingBus):
    """Publishes of the answers wait for `release`: their messages keep their slots."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(fail)
        self.release = asyncio.Event()

    async def publish_many(self, messages: Sequence[OutMessage]) -> None:
        if messages and messages[0].topic == TOPICS.generated:
            await self.release.wait()
        await super().publish_many(messages)


async def _held_run(bus: HeldBus, n: int, concurrency: int) -> tuple[list[int], ConcurrentRunner]:
    await bus.publish_many(
        [out(TOPICS.questions, Envelope(f"{i:032x}", "Why?", None, "t", 1.0)) for i in range(n)]
    )
    handled: list[int] = []

    async def answer(env: Envelope) -> list[OutMessage]:
        handled.append(1)
        return await _answer(env)

    runner = ConcurrentRunner(
        "worker",
        bus,
        bus.consumer("worker", [TOPICS.questions]),
        answer,
        concurrency=concurrency,
        dead_letter_topic=TOPICS.dead_letter,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert len(handled) == concurrency  # every slot waits for its batch's publish
    in_flight = runner.metrics.registry.get_sample_value(
        "qaloop_stage_in_flight", {"stage": "worker"}
    )
    assert in_flight == concurrency
    bus.release.set()
    for _ in range(200):
        await asyncio.sleep(0.005)
        if len(handled) == n and sum(bus.calls) >= n:
            break
    stop.set()
    await task
    return handled, runner


async def test_a_message_holds_its_slot_until_its_batch_is_published() -> None:
    bus = HeldBus()
    handled, runner = await _held_run(bus, 20, concurrency=4)
    assert len(handled) == 20 and bus.lag("worker", TOPICS.questions) == 0
    assert runner._slots._value == 4  # every slot given back


async def test_a_failed_publish_gives_the_slots_back() -> None:
    bus = HeldBus(fail=True)
    handled, runner = await _held_run(bus, 12, concurrency=4)
    assert len(handled) == 12  # the loop went on after the failed publishes
    assert bus.committed("worker", TOPICS.questions) == 0
    assert runner._slots._value == 4
