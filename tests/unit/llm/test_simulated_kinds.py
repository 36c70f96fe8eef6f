"""The simulated LLM's answer kinds, its configured feedback effect, and its judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from qaloop.llm.base import GenerationRequest
from qaloop.llm.simulated import KINDS, SimulatedConfig, SimulatedProvider
from qaloop.quality import llm_judge
from qaloop.quality.verdict import GateInput

REF = "The stock market crashed in 1929 and it was a disaster for many families."


def _kinds(sim: SimulatedProvider, feedback: str | None, n: int = 3000) -> Counter[str]:
    return Counter(sim.kind(f"q{i}", 2, feedback) for i in range(n))


def test_every_kind_appears_and_answers_are_repeatable() -> None:
    sim = SimulatedProvider()
    seen = _kinds(sim, None)
    assert set(seen) == set(KINDS)
    a = sim.answer("q1", "Why did the market crash?", REF, 1, None)
    assert a == SimulatedProvider().answer("q1", "Why did the market crash?", REF, 1, None)


def test_kinds_look_like_what_they_say() -> None:
    sim = SimulatedProvider(SimulatedConfig(kinds={"echo": 1.0}))
    assert sim.answer("q", "Why is it so?", REF, 1, None)[1].startswith("Why is it so?")
    sim = SimulatedProvider(SimulatedConfig(kinds={"wrong": 1.0}))
    wrong = sim.answer("q", "When?", REF, 1, None)[1]
    assert "1936" in wrong and "1929" not in wrong and " not " in wrong
    sim = SimulatedProvider(SimulatedConfig(kinds={"off_topic": 1.0}))
    assert "1929" not in sim.answer("q", "When?", REF, 1, None)[1]


def test_feedback_effect_is_the_configured_input() -> None:
    sim = SimulatedProvider(SimulatedConfig(feedback_effect=0.6, hard_rate=0.0))
    plain = _kinds(sim, None)
    told = _kinds(sim, "off_topic")
    bad_plain = 3000 - plain["good"]
    bad_told = 3000 - told["good"]
    assert bad_told < bad_plain * 0.6  # 1 - effect = 0.4 of the odds, renormalised
    none = SimulatedProvider(SimulatedConfig(feedback_effect=0.0, hard_rate=0.0))
    assert abs((3000 - _kinds(none, "echo")["good"]) - (3000 - _kinds(none, None)["good"])) < 150


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SimulatedConfig(kinds={"great": 1.0})
    with pytest.raises(ValueError):
        SimulatedConfig(feedback_effect=1.5)


async def test_the_simulated_judge_grades_its_own_answers_by_kind() -> None:
    sim = SimulatedProvider()
    verdicts: Counter[tuple[str, str]] = Counter()
    for i in range(300):
        qid = f"q{i}"
        kind, text = sim.answer(qid, "Why did the market crash?", REF, 1, None)
        item = GateInput("Why did the market crash?", text, REF)
        request = GenerationRequest(
            qid,
            item.question,
            1,
            1,
            llm_judge.build_prompt(item),
            reference_answer=REF,
            purpose="judge",
            answer=text,
        )
        reply = (await sim.generate(request)).text
        v = llm_judge.parse_verdict(reply, item)
        verdicts[(kind, v.outcome.value)] += 1
        assert json.loads(reply)["verdict"] in ("pass", "fail")
    assert all(outcome == ("pass" if kind == "good" else "fail") for kind, outcome in verdicts)
    assert sim.judge_calls == 300


async def test_the_simulated_judge_grades_foreign_answers_by_overlap() -> None:
    sim = SimulatedProvider()
    for answer, expected in ((REF, "pass"), ("Bananas are yellow.", "fail")):
        request = GenerationRequest(
            "x", "When?", 1, 1, "p", reference_answer=REF, purpose="judge", answer=answer
        )
        assert json.loads((await sim.generate(request)).text)["verdict"] == expected


def _draws(order: list[int]) -> dict[int, tuple[str, str]]:
    sim = SimulatedProvider()
    return {
        i: sim.answer(f"q{i}", "Why did the market crash?", REF, 1 + i % 3, None) for i in order
    }


def test_answers_are_a_pure_function_of_their_arguments_whatever_the_call_order() -> None:
    forward = _draws(list(range(200)))
    assert forward == _draws(list(reversed(range(200))))
    assert len({text for _, text in forward.values()}) > 20  # not one fixed answer


async def test_errors_are_drawn_per_call_and_repeat_per_call() -> None:
    config = SimulatedConfig(overload_rate=0.5)

    async def failed(sim: SimulatedProvider, try_no: int) -> list[bool]:
        out = []
        for i in range(200):
            request = GenerationRequest(f"q{i}", "Why?", 1, try_no, "Why?", reference_answer=REF)
            try:
                await sim.generate(request)
                out.append(False)
            except Exception:
                out.append(True)
        return out

    first = await failed(SimulatedProvider(config), 1)
    assert first == await failed(SimulatedProvider(config), 1)
    assert 60 < sum(first) < 140  # about half, at the configured rate
    assert first != await failed(SimulatedProvider(config), 2)  # a retry draws again


async def test_no_error_rates_skip_the_roll_without_changing_any_answer() -> None:
    """With every error rate 0 the error roll is not drawn at all; the answers are those of
    rates too small to ever fire (where it is drawn): no other draw depended on it."""
    tiny = SimulatedConfig(overload_rate=1e-300, quota_rate=1e-300, permanent_rate=1e-300)

    async def texts(sim: SimulatedProvider) -> list[str]:
        found = []
        for i in range(300):
            for try_no in (1, 2):
                request = GenerationRequest(
                    f"q{i}", f"Why {i}?", 1 + i % 3, try_no, "Why?", reference_answer=REF
                )
                found.append((await sim.generate(request)).text)
        return found

    assert await texts(SimulatedProvider()) == await texts(SimulatedProvider(tiny))


def test_draws_do_not_depend_on_the_process_hash_seed() -> None:
    """The seeds come from a stable hash, not Python's salted hash(): two interpreters with
    different PYTHONHASHSEED give the same answers (runs and the README's demo repeat)."""
    code = (
        "from qaloop.llm.simulated import SimulatedProvider as S; s = S(); "
        "print([s.answer(f'q{i}', 'Why did it crash?', 'It crashed in 1929. Banks failed.', 1,"
        " None) for i in range(30)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
