from __future__ import annotations

import asyncio
import logging

import pytest

from qaloop.bus.base import Message, Topics
from qaloop.bus.memory import MemoryBus
from qaloop.core import codec
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.core.routing import GateConfig
from qaloop.quality import get_scorer
from qaloop.services.judge import Judge
from qaloop.services.retrier import Retrier
from qaloop.services.store import Store
from qaloop.storage.sqlite import SQLiteRepository
from tests.cases.routing_cases import ROUTING_CASES, fixed_stage

TOPICS = Topics()


def _msg(topic: str, value: bytes | None, offset: int = 0, **headers: str) -> Message:
    return Message(topic, 0, offset, "k", value, dict(headers))


class FixedScorer:
    name = "fixed"

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, answer: str, reference: str) -> float:
        return self.value

    def score_batch(self, pairs: list[tuple[str, str]]) -> list[float]:  # type: ignore[override]
        return [self.value for _ in pairs]


@pytest.mark.parametrize(
    ("outcome", "reason", "score", "attempt", "max_attempts", "expected", "nxt"), ROUTING_CASES
)
async def test_judge_follows_the_case_table(
    outcome: str,
    reason: str,
    score: float | None,
    attempt: int,
    max_attempts: int,
    expected: str,
    nxt: int,
) -> None:
    judge = Judge(
        fixed_stage(outcome, reason, score),
        GateConfig(0.5, max_attempts),
        TOPICS,
        clock=lambda: 1.0,
    )
    env = Envelope(
        "d" * 32,
        "q",
        "ref",
        "t",
        0.0,
        attempt=attempt,
        answer="a",
        state=QuestionState.SCORING,
    )
    [out] = await judge.handle_batch([_msg(TOPICS.generated, codec.encode(env))])
    expected_topic = {
        "validate": TOPICS.validated,
        "regenerate": TOPICS.questions,
        "give_up": TOPICS.dead_letter,
        "judge_error": TOPICS.dead_letter,
    }[expected]
    assert out.topic == expected_topic
    assert codec.decode(out.value).attempt == nxt
    if expected == "judge_error":
        assert out.headers["qaloop-reason"].startswith("judge_error: ")


async def test_judge_dead_letters_poison_and_keeps_going() -> None:
    judge = Judge(get_scorer("jaccard"), GateConfig(0.5, 3), TOPICS)
    good = Envelope(
        "e" * 32, "q", "the answer", "t", 0.0, answer="the answer", state=QuestionState.SCORING
    )
    outs = await judge.handle_batch(
        [_msg(TOPICS.generated, b"{nope", 0), _msg(TOPICS.generated, codec.encode(good), 1)]
    )
    assert [o.topic for o in outs] == [TOPICS.dead_letter, TOPICS.validated]
    assert "not JSON" in outs[0].headers["qaloop-reason"]
    assert outs[0].value == b"{nope"


async def test_store_is_idempotent_and_keeps_newest_state() -> None:
    repo = SQLiteRepository()
    store = Store(repo, TOPICS)
    env = Envelope("f" * 32, "q", "r", "t", 0.0).with_event(EventKind.ACCEPTED, 0.0)
    scoring = env.evolve(state=QuestionState.SCORING, answer="a").with_event(
        EventKind.GENERATED, 1.0, answer="a"
    )
    final = scoring.evolve(state=QuestionState.VALIDATED, score=0.9).with_event(
        EventKind.SCORED, 2.0, score=0.9
    )
    batch = [
        _msg(TOPICS.questions, codec.encode(env), 0),
        _msg(TOPICS.validated, codec.encode(final), 0),
        _msg(TOPICS.generated, codec.encode(scoring), 0),  # arrives late: must not win
    ]
    await store.handle_batch(batch)
    await store.handle_batch(batch)  # a replay
    record = repo.get("f" * 32)
    assert record is not None and record.state is QuestionState.VALIDATED
    assert record.finished_at == 2.0
    assert [e.kind for e in repo.events("f" * 32)] == ["accepted", "generated", "scored"]


async def test_store_records_dead_letters_once() -> None:
    repo = SQLiteRepository()
    store = Store(repo, TOPICS)
    poison = _msg(
        TOPICS.dead_letter,
        b"garbage",
        3,
        **{
            "qaloop-poison": "1",
            "qaloop-reason": "not JSON",
            "qaloop-source-topic": TOPICS.questions,
            "qaloop-source-partition": "0",
            "qaloop-source-offset": "12",
        },
    )
    failed = Envelope(
        "a1" * 16, "q", "r", "t", 0.0, state=QuestionState.FAILED, error_detail="gave up"
    ).with_event(EventKind.GAVE_UP, 5.0)
    dl = _msg(TOPICS.dead_letter, codec.encode(failed), 4, **{"qaloop-reason": "gave_up"})
    await store.handle_batch([poison, dl])
    await store.handle_batch([poison, dl])
    letters = repo.dead_letters()
    assert sorted(d.reason for d in letters) == ["gave_up", "not JSON"]
    assert repo.get("a1" * 16) is not None
    assert repo.state_counts() == {"failed": 1}


async def test_store_dead_letters_poison_on_the_validated_topic_only() -> None:
    store = Store(SQLiteRepository(), TOPICS)
    outs = await store.handle_batch(
        [_msg(TOPICS.questions, b"x", 0), _msg(TOPICS.validated, b"y", 0)]
    )
    assert [o.headers["qaloop-source-topic"] for o in outs] == [TOPICS.validated]


async def test_retrier_releases_in_due_order_without_blocking() -> None:
    now = [100.0]
    bus = MemoryBus(TOPICS)
    await bus.start()
    retrier = Retrier(bus, bus.consumer("retrier", [TOPICS.delayed]), TOPICS, clock=lambda: now[0])
    late = Envelope("b1" * 16, "late", "r", "t", 0.0, due_at=160.0).with_event(
        EventKind.PARKED, 100.0
    )
    soon = Envelope("b2" * 16, "soon", "r", "t", 0.0, due_at=101.0).with_event(
        EventKind.PARKED, 100.0
    )
    from qaloop.core.wire import out

    await bus.publish_many([out(TOPICS.delayed, late), out(TOPICS.delayed, soon)])
    stop = asyncio.Event()
    task = asyncio.create_task(retrier.run(stop))
    consumer = bus.consumer("probe", [TOPICS.questions])
    await asyncio.sleep(0.05)
    assert await consumer.poll(10, 0.01) == []
    now[0] = 101.5  # the later-queued, earlier-due message is released first
    first = await consumer.poll(10, 1.0)
    assert [codec.decode(m.value).question for m in first] == ["soon"]
    resumed = codec.decode(first[0].value)
    assert resumed.history[-1].kind is EventKind.RESUMED and resumed.due_at is None
    assert resumed.history[-1].wait_s == pytest.approx(1.5)
    now[0] = 161.0
    second = await consumer.poll(10, 1.0)
    assert [codec.decode(m.value).question for m in second] == ["late"]
    stop.set()
    await task
    assert bus.lag("retrier", TOPICS.delayed) == 0


async def test_store_skips_mirrored_messages_a_later_one_supersedes() -> None:
    from qaloop.core.wire import out

    repo = SQLiteRepository()
    store = Store(repo, TOPICS)
    queued = Envelope("c1" * 16, "q", "r", "t", 0.0).with_event(EventKind.ACCEPTED, 0.0)
    scoring = queued.evolve(state=QuestionState.SCORING, answer="a").with_event(
        EventKind.GENERATED, 1.0, answer="a"
    )
    final = scoring.evolve(state=QuestionState.VALIDATED, score=0.9).with_event(
        EventKind.SCORED, 2.0, score=0.9
    )
    other = Envelope("c2" * 16, "q2", "r", "t", 0.0).with_event(EventKind.ACCEPTED, 0.0)
    outs = [
        out(TOPICS.questions, queued),
        out(TOPICS.generated, scoring),
        out(TOPICS.questions, other),
        out(TOPICS.validated, final),
    ]
    # a corrupt mirrored message of the first question is superseded: never even decoded
    headers = {"qaloop-attempt": "1", "qaloop-state": "scoring"}
    corrupt = Message(TOPICS.generated, 0, 9, "c1" * 16, b"{", headers)
    batch = [Message(o.topic, 0, i, o.key, o.value, o.headers) for i, o in enumerate(outs)]
    assert store._superseded([*batch, corrupt]) == {0, 1, 4}
    # without a state header (an older producer) the headers don't say: it is decoded
    bare = Message(TOPICS.generated, 0, 10, "c1" * 16, b"{", {"qaloop-attempt": "1"})
    assert store._superseded([*batch, bare]) == {0, 1}
    assert await store.handle_batch([*batch, corrupt]) == []
    record = repo.get("c1" * 16)
    assert record is not None and record.state is QuestionState.VALIDATED
    assert [e.kind for e in repo.events("c1" * 16)] == ["accepted", "generated", "scored"]
    assert repo.state_counts() == {"validated": 1, "queued": 1}


@pytest.mark.parametrize(("level", "lines"), [(logging.INFO, 1), (logging.WARNING, 0)])
async def test_judge_builds_its_per_answer_line_only_when_info_is_on(
    level: int, lines: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import qaloop.services.judge as judge_mod

    built: list[str] = []
    real = judge_mod.log_judged
    monkeypatch.setattr(
        judge_mod, "log_judged", lambda e, j, d, r: (built.append(d.value), real(e, j, d, r))
    )
    judge = Judge(get_scorer("jaccard"), GateConfig(0.5, 3), TOPICS)
    env = Envelope(
        "f" * 32, "q", "the answer", "t", 0.0, answer="the answer", state=QuestionState.SCORING
    )
    with caplog.at_level(level, logger=judge_mod.log.name):
        [out] = await judge.handle_batch([_msg(TOPICS.generated, codec.encode(env))])
    assert out.topic == TOPICS.validated
    assert built == ["validate"] * lines
    assert len([r for r in caplog.records if "validated" in r.getMessage()]) == lines
