"""The domain model: a question's envelope, its states and the events of its history.

Everything here is plain data with no I/O. The same envelope travels through every topic,
in-process or on Kafka; each stage adds to it and never removes from it, so the record that
reaches storage carries the question's whole history (attempts, errors, scores, waits).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import msgspec.structs

LANES = ("interactive", "batch")  # a question's priority (docs/spend.md: the batch lane)
SCHEMA_VERSION = 2
# Versions this code decodes. 1 lacks `feedback` and `arm` (they default to None): messages and
# stored envelopes written before feedback-aware regeneration still decode, and re-encode as 2.
READABLE_SCHEMA_VERSIONS = (1, 2)


class QuestionState(enum.StrEnum):
    """Where a question is. Final states are `validated` and `failed`."""

    QUEUED = "queued"  # accepted, waiting in the pending-questions topic (or parked)
    GENERATING = "generating"  # an LLM worker holds it
    SCORING = "scoring"  # an answer waits in the generated topic for the judge
    VALIDATED = "validated"  # final: an answer passed the quality gate
    FAILED = "failed"  # final: gave up (low score after the last attempt, or an LLM error)

    @property
    def is_final(self) -> bool:
        return self in (QuestionState.VALIDATED, QuestionState.FAILED)

    @property
    def rank(self) -> int:
        """Order of progress inside one attempt; a replayed older state never overwrites."""
        return _STATE_RANK[self]


_STATE_RANK = {
    QuestionState.QUEUED: 1,
    QuestionState.GENERATING: 2,
    QuestionState.SCORING: 3,
    QuestionState.VALIDATED: 9,
    QuestionState.FAILED: 9,
}


def progress_key(state: QuestionState, attempt: int) -> int:
    """A number that only grows along a question's life: storage keeps the highest seen."""
    if state.is_final:
        return 1_000_000
    return attempt * 10 + state.rank


class ErrorClass(enum.StrEnum):
    """Every failure is classified before anything acts on it (see qaloop.core.retry)."""

    OVERLOAD = "overload"  # 503 / model overloaded: short in-process retries with backoff
    SERVER = "server"  # 500 / 504 / timeouts: retried like overload
    QUOTA_MINUTE = "quota_minute"  # 429 per-minute: park until Retry-After
    QUOTA_DAY = "quota_day"  # 429 per-day or zero quota: park until reset, don't spin
    PERMANENT = "permanent"  # 400-class, safety block, unknown question: dead letter at once
    BUDGET = "budget"  # the question's retry budget (tries or time) is spent
    SPEND = "spend"  # a spend budget is reached (docs/spend.md): park until the period ends


class EventKind(enum.StrEnum):
    ACCEPTED = "accepted"
    GENERATED = "generated"  # an LLM call returned an answer
    LLM_ERROR = "llm_error"  # an LLM call failed (classified)
    PARKED = "parked"  # delayed retry: waits until due_at
    RESUMED = "resumed"  # a parked question is due again
    SCORED = "scored"  # the judge scored an answer and decided
    GAVE_UP = "gave_up"
    RESET = "reset"  # a failed question asked again (a new run: attempt 1, new trace id)
    BATCHED = "batched"  # handed to a provider batch job (the batch lane)


class _Data(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The envelope's parts are msgspec Structs: the codec decodes and encodes them in C
    (qaloop.core.codec), several times faster than dataclasses through dicts. Immutable, and
    never in a reference cycle, hence untracked by the garbage collector (gc=False). Encoding
    leaves out fields that have their default value: smaller messages, and every reader fills
    them in again (the codec before the Structs too: it read a missing field as its default)."""


class Usage(_Data, frozen=True):
    """What one LLM call consumed and cost (qaloop.llm.pricing computes it).

    `purpose` keys the accounting: "generate" (the worker's answers) or "judge" (an LLM judge
    through the same provider layer). `estimated` is true when the provider reported no usage
    and the tokens were estimated from the text: such a call is never counted as free."""

    purpose: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    estimated: bool = False
    lane: str = "interactive"  # or "batch" (provider batch APIs, half price)
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "provider": self.provider,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "estimated": self.estimated,
            "lane": self.lane,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            str(data["purpose"]),
            str(data["provider"]),
            str(data["model"]),
            int(data["input_tokens"]),
            int(data["output_tokens"]),
            int(data.get("cached_tokens", 0)),
            bool(data.get("estimated", False)),
            str(data.get("lane", "interactive")),
            float(data.get("cost_usd", 0.0)),
        )


class Event(_Data, frozen=True):
    """One line of a question's history. (attempt, seq) is unique per question."""

    seq: int
    kind: EventKind
    attempt: int
    at: float  # epoch seconds
    answer: str | None = None
    score: float | None = None
    latency_ms: float | None = None
    error_class: ErrorClass | None = None
    detail: str | None = None
    decision: str | None = None
    wait_s: float | None = None
    usage: Usage | None = None  # an LLM call's tokens and cost (generated events, judge calls)

    def to_dict(self) -> dict[str, Any]:
        # Written out (not dataclasses.asdict): this runs for every event of every message.
        data: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind.value,
            "attempt": self.attempt,
            "at": self.at,
        }
        for key in _OPTIONAL_EVENT_FIELDS:
            value = getattr(self, key)
            if value is not None:
                data[key] = value.value if key == "error_class" else value
        if self.usage is not None:
            data["usage"] = self.usage.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        get = data.get
        ec = get("error_class")
        score, latency_ms, wait_s = get("score"), get("latency_ms"), get("wait_s")
        usage = get("usage")
        return cls(
            int(data["seq"]),
            _EVENT_KINDS[data["kind"]],
            int(data["attempt"]),
            float(data["at"]),
            get("answer"),
            None if score is None else float(score),
            None if latency_ms is None else float(latency_ms),
            None if ec is None else _ERROR_CLASSES[ec],
            get("detail"),
            get("decision"),
            None if wait_s is None else float(wait_s),
            None if usage is None else Usage.from_dict(usage),
        )


# Plain dict look-ups: calling an Enum class to convert a value is several times slower.
_EVENT_KINDS = {k.value: k for k in EventKind}
_ERROR_CLASSES = {c.value: c for c in ErrorClass}

_OPTIONAL_EVENT_FIELDS = (
    "answer",
    "score",
    "latency_ms",
    "error_class",
    "detail",
    "decision",
    "wait_s",
)


class Envelope(_Data, frozen=True, tag_field="schema_version", tag=SCHEMA_VERSION):
    """The message every topic carries. Immutable: stages return an updated copy.

    The schema version is the Struct's tag, not a field: msgspec writes it first whatever the
    defaults left out (`{"schema_version":2,...`, the prefix of the codec's fast path) and
    refuses another value when it decodes. Every decoded envelope is of SCHEMA_VERSION."""

    schema_version: ClassVar[int] = SCHEMA_VERSION

    question_id: str
    question: str
    reference_answer: str | None
    trace_id: str
    first_seen: float
    attempt: int = 1
    state: QuestionState = QuestionState.QUEUED
    answer: str | None = None
    score: float | None = None
    best_answer: str | None = None
    best_score: float | None = None
    best_attempt: int | None = None
    error_class: ErrorClass | None = None
    error_detail: str | None = None
    due_at: float | None = None  # for parked (delayed) messages
    llm_calls: int = 0
    tries_in_attempt: int = 0  # LLM calls spent on the current attempt (retries included)
    history: tuple[Event, ...] = ()
    caller: str | None = None  # the API key's name that asked (per-key spend budgets)
    lane: str = "interactive"  # or "batch": may wait for a provider batch job (docs/spend.md)
    # Set when the judge sends the question back: why the last attempt was rejected (a
    # quality.verdict.Reason value; never the reference text), and which arm of the feedback
    # experiment the regeneration is in ("feedback": the prompt says what was wrong;
    # "control": the plain prompt). See core.routing and docs/quality.md.
    feedback: str | None = None
    arm: str | None = None

    def with_event(
        self, kind: EventKind, at: float, changes: dict[str, Any] | None = None, **fields: Any
    ) -> Envelope:
        """A copy with one more event (of `fields`) and, in the same copy, `changes` to the
        envelope's own fields: one copy where `with_event(...).evolve(...)` made two."""
        event = Event(seq=len(self.history), kind=kind, attempt=self.attempt, at=at, **fields)
        return self.evolve(**(changes or {}), history=(*self.history, event))

    def evolve(self, **changes: Any) -> Envelope:
        """A copy with some fields changed; an unknown field is a TypeError ("has no field")."""
        return msgspec.structs.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, None included: the JSON the codec wrote before it encoded the Struct
        itself (qaloop.core.codec). For tests and tools; decode reads both."""
        return {
            "schema_version": self.schema_version,
            "question_id": self.question_id,
            "question": self.question,
            "reference_answer": self.reference_answer,
            "trace_id": self.trace_id,
            "first_seen": self.first_seen,
            "attempt": self.attempt,
            "state": self.state.value,
            "answer": self.answer,
            "score": self.score,
            "best_answer": self.best_answer,
            "best_score": self.best_score,
            "best_attempt": self.best_attempt,
            "error_class": None if self.error_class is None else self.error_class.value,
            "error_detail": self.error_detail,
            "due_at": self.due_at,
            "llm_calls": self.llm_calls,
            "tries_in_attempt": self.tries_in_attempt,
            "history": [e.to_dict() for e in self.history],
            **({"caller": self.caller} if self.caller is not None else {}),
            **({"lane": self.lane} if self.lane != "interactive" else {}),
            "feedback": self.feedback,
            "arm": self.arm,
        }


@dataclass(frozen=True, slots=True)
class QuestionRecord:
    """What storage knows about one question (the projection of its envelopes)."""

    question_id: str
    question: str
    reference_answer: str | None
    state: QuestionState
    attempt: int
    first_seen: float
    updated_at: float
    answer: str | None = None
    score: float | None = None
    llm_calls: int = 0
    hit_count: int = 0
    finished_at: float | None = None
    error_class: ErrorClass | None = None
    error_detail: str | None = None
    trace_id: str = ""

    def to_public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.question_id,
            "status": self.state.value,
            "question": self.question,
            "attempts": self.attempt,
            "hit_count": self.hit_count,
            "first_seen": self.first_seen,
        }
        if self.answer is not None:
            body["answer"] = self.answer
        if self.score is not None:
            body["score"] = self.score
        if self.finished_at is not None:
            body["finished_at"] = self.finished_at
            body["time_to_answer_s"] = round(self.finished_at - self.first_seen, 6)
        if self.error_class is not None:
            body["error_class"] = self.error_class.value
        if self.error_detail is not None:
            body["error_detail"] = self.error_detail
        return body
