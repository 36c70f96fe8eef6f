"""The Flink job and the plain judge decide the same for the same environment: the job's
configuration is the process's Settings (QALOOP_* variables, then flags), and its gate is built
by the same function as the plain judge's (qaloop.wiring.judge_gate)."""

from __future__ import annotations

import pytest

from qaloop.bus.memory import MemoryBus
from qaloop.core import codec
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope, QuestionState
from qaloop.core.wire import Message, out
from qaloop.dataset import load_sample
from qaloop.flink.core import FlinkJobConfig, GateFunction, settings_from_args
from qaloop.observability.metrics import Metrics
from qaloop.settings import Settings
from qaloop.wiring import Wiring


def answered(n: int = 120) -> list[Message]:
    """Answers of every quality to sample questions: the reference itself, its first words,
    another question's reference, nothing useful; at attempts 1-3."""
    sample = load_sample(n)
    messages = []
    for i, qa in enumerate(sample):
        words = qa.reference_answer.split()
        answer = [
            qa.reference_answer,
            " ".join(words[: max(1, len(words) // 3)]),
            sample[(i + 7) % len(sample)].reference_answer,
            "I don't know.",
        ][i % 4]
        envelope = Envelope(
            question_id(qa.question),
            qa.question,
            qa.reference_answer,
            "trace",
            1.0,
            attempt=1 + i % 3,
            answer=answer,
            state=QuestionState.SCORING,
        )
        record = out("p.generated", envelope)
        messages.append(Message(record.topic, 0, i, record.key, record.value, record.headers))
    return messages


async def decisions_of_both(
    plain_settings: Settings, job_argv: list[str]
) -> tuple[list[Route], list[Route]]:
    messages = answered()
    plain = Wiring(plain_settings, shared_bus=True).judge(MemoryBus(), Metrics()).judge
    outputs = await plain.handle_batch(messages)
    plain_routes = [_route(o.topic, o.value) for o in outputs]
    job = GateFunction.from_settings(
        FlinkJobConfig(settings_from_args(job_argv, prog="t")).settings
    )
    flink_routes = []
    for message in messages:
        routed = job.process(message)
        flink_routes.append(_route(routed.topic, routed.value))
    return plain_routes, flink_routes


Route = tuple[str, QuestionState, int, float | None]


def _route(topic: str, value: bytes) -> Route:
    # The judge stamps its event with its clock: compare what it decided, not when.
    e = codec.decode(value)
    return topic, e.state, e.attempt, e.score


def assert_same(plain: list[Route], flink: list[Route]) -> None:
    """Same topics, states and attempts; scores equal to 1e-6. The plain judge embeds a batch
    (padded to its longest text) and the Flink map one record, and ONNX Runtime's sums differ in
    the last bits (~1e-8) between the two."""
    assert [r[:3] for r in plain] == [r[:3] for r in flink]
    for (*_, a), (*_, b) in zip(plain, flink, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a == pytest.approx(b, abs=1e-6)


def _states(routes: list[Route]) -> set[QuestionState]:
    return {state for _, state, _, _ in routes}


async def test_defaults_judge_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """No QALOOP_* variable at all: the job used to judge with jaccard at 0.5."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"QALOOP_{name.upper()}", raising=False)
    plain, flink = await decisions_of_both(Settings(), [])
    assert_same(plain, flink)
    assert {QuestionState.VALIDATED, QuestionState.QUEUED} <= _states(plain)  # both ways
    assert FlinkJobConfig(settings_from_args([], prog="t")).settings.scorer == "composite"


async def test_environment_and_flags_judge_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QALOOP_SCORER", "jaccard")
    monkeypatch.setenv("QALOOP_THRESHOLD", "0.3")
    monkeypatch.setenv("QALOOP_TOPIC_PREFIX", "p")
    # `qaloop judge --max-attempts 2` and `flink run -pym qaloop.flink.job --max-attempts 2`
    plain, flink = await decisions_of_both(Settings(max_attempts=2), ["--max-attempts", "2"])
    assert_same(plain, flink)
    assert QuestionState.FAILED in _states(plain)  # attempt 2 of 2 gives up
    other, _ = await decisions_of_both(Settings(), [])
    assert other != plain  # the settings do change the decisions


def test_bad_flags_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        settings_from_args(["--threshold", "2"], prog="t")
    with pytest.raises(Exception, match="unrecognized"):
        settings_from_args(["--jaccard", "0.5"], prog="t")
