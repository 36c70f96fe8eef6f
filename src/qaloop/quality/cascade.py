"""The cascade: the cheap gate decides the clear cases; UNSURE verdicts (the calibrated uncertain
band, and every answer to a question without a reference) go to a second opinion, the LLM judge.

Pure: the second opinion is any object with an async `judge_many` (qaloop.llm.judge.LLMJudge
calls the provider layer); this module imports no LLM library.

`ScorerGate` is a real, simple `Gate` over any scorer of qaloop.quality: PASS at or above the
threshold, FAIL below it (LOW_SCORE), UNSURE inside an optional band around the threshold, and
UNSURE / NO_REFERENCE when there is nothing to compare with. The default gate of
qaloop.quality.gate drops in through the same `Gate` protocol.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qaloop.core.routing import FREE, JudgeCost
from qaloop.quality import llm_judge
from qaloop.quality.base import Scorer, score_details
from qaloop.quality.verdict import Gate, GateInput, Outcome, Reason, Verdict

PRECHECK = "precheck"  # judged_by of the cascade's own pre-checks


@dataclass(frozen=True, slots=True)
class JudgeItem:
    """One answer to judge, with what the provider layer needs to account for the call."""

    input: GateInput
    question_id: str = ""
    attempt: int = 1
    calls_so_far: int = 0  # the question's LLM calls so far (the per-question budget)
    feedback: str | None = None  # the reason the attempt's prompt carried (simulated judge)
    caller: str | None = None  # the API key's name: the judge's calls count to its budget too


@dataclass(frozen=True, slots=True)
class Judged:
    verdict: Verdict
    cost: JudgeCost = field(default_factory=JudgeCost)
    cross_language: bool = False  # what the cheap scorer noticed (docs/quality.md)


class SecondOpinion(Protocol):
    name: str

    async def judge_many(self, items: Sequence[JudgeItem]) -> list[Judged]: ...

    async def aclose(self) -> None: ...


def _has_reference(item: GateInput) -> bool:
    return item.reference is not None and bool(item.reference.strip())


class ScorerGate:
    """A scorer and a threshold as a Gate (the placeholder until qaloop.quality.gate)."""

    def __init__(self, scorer: Scorer, threshold: float, unsure_band: float = 0.0) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if unsure_band < 0:
            raise ValueError(f"unsure_band must be >= 0, got {unsure_band}")
        self.scorer = scorer
        self.name = scorer.name
        self.threshold = threshold
        self.unsure_band = unsure_band
        self.cross_language: list[bool] = []  # per item of the last batch

    def judge_batch(self, items: Sequence[GateInput]) -> list[Verdict]:
        indexed = [(i, it) for i, it in enumerate(items) if _has_reference(it)]
        verdicts: list[Verdict] = [
            Verdict(None, Outcome.UNSURE, Reason.NO_REFERENCE, "no reference answer", self.name)
        ] * len(items)
        self.cross_language = [False] * len(items)
        details = (
            score_details(self.scorer, [(it.answer, it.reference or "") for _, it in indexed])
            if indexed
            else []
        )
        low, high = self.threshold - self.unsure_band, self.threshold + self.unsure_band
        for (i, _), detail in zip(indexed, details, strict=True):
            s = detail.score
            self.cross_language[i] = detail.cross_language
            if self.unsure_band > 0 and low <= s < high:
                note = f"score {s:.3f} near the threshold"
                verdicts[i] = Verdict(s, Outcome.UNSURE, Reason.UNCERTAIN, note, self.name)
            elif s >= self.threshold:
                verdicts[i] = Verdict(s, Outcome.PASS, Reason.OK, "", self.name)
            else:
                note = f"score {s:.3f} < {self.threshold}"
                verdicts[i] = Verdict(s, Outcome.FAIL, Reason.LOW_SCORE, note, self.name)
        return verdicts


class Cascade:
    """cheap gate -> (UNSURE only) second opinion. With no cheap gate, every answer goes to the
    second opinion (scorer `llm_judge`); with no second opinion, UNSURE stays UNSURE, which the
    routing never validates."""

    def __init__(self, gate: Gate | None, second: SecondOpinion | None) -> None:
        if gate is None and second is None:
            raise ValueError("a cascade needs a gate, a second opinion, or both")
        self.gate = gate
        self.second = second
        self.name = "+".join(x.name for x in (gate, second) if x is not None)
        self.stats: Counter[str] = Counter()  # answers, to_second, second_calls, second_tokens

    def first(self, items: Sequence[JudgeItem]) -> tuple[list[Judged], list[int]]:
        """The cheap gate's verdicts (synchronous) and the indexes that need the second
        opinion. The Flink map calls this alone for the clear cases."""
        self.stats["answers"] += len(items)
        if not items:
            return [], []
        # Empty, binary, enormous and injected answers fail here whatever the gate: nothing
        # after this sees them (an answer that copies the reference and adds "output PASS"
        # would pass a similarity score).
        pre = [llm_judge.precheck(it.input, PRECHECK) for it in items]
        todo = [i for i, v in enumerate(pre) if v is None]
        self.stats["prechecked"] += len(items) - len(todo)
        cross = [False] * len(items)
        gated: list[Verdict]
        if self.gate is None:
            gated = [Verdict(None, Outcome.UNSURE, Reason.UNCERTAIN, "", "") for _ in todo]
        elif todo:
            gated = self.gate.judge_batch([items[i].input for i in todo])
            flags = getattr(self.gate, "cross_language", None) or [False] * len(todo)
            for i, flag in zip(todo, flags, strict=True):
                cross[i] = flag
        else:
            gated = []
        by_index = dict(zip(todo, gated, strict=True))
        cheap = [v if v is not None else by_index[i] for i, v in enumerate(pre)]
        results = [Judged(v, FREE, c) for v, c in zip(cheap, cross, strict=True)]
        unsure = [i for i, v in enumerate(cheap) if v.outcome is Outcome.UNSURE]
        if self.second is None:
            return results, []
        return results, unsure

    async def second_pass(
        self, items: Sequence[JudgeItem], results: list[Judged], unsure: Sequence[int]
    ) -> list[Judged]:
        if not unsure or self.second is None:
            return results
        self.stats["to_second"] += len(unsure)
        self.stats["no_reference"] += sum(1 for i in unsure if not _has_reference(items[i].input))
        second = await self.second.judge_many([items[i] for i in unsure])
        out = list(results)
        for i, judged in zip(unsure, second, strict=True):
            self.stats["second_calls"] += judged.cost.calls
            self.stats["second_tokens"] += judged.cost.tokens
            self.stats[f"second_{judged.verdict.outcome.value}"] += 1
            out[i] = Judged(judged.verdict, judged.cost, results[i].cross_language)
        return out

    async def judge_many(self, items: Sequence[JudgeItem]) -> list[Judged]:
        results, unsure = self.first(items)
        return await self.second_pass(items, results, unsure)

    async def aclose(self) -> None:
        if self.second is not None:
            await self.second.aclose()
