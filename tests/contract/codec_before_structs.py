"""The envelope codec as main wrote it before the Structs (commit 9d4fdc9: dataclasses,
`orjson.dumps(to_dict())`), frozen here: what a stage not yet upgraded reads and writes during a
rolling upgrade (tests/contract/test_codec_compat.py). Its qaloop.core.model and
qaloop.core.codec, verbatim, in one module (minus QuestionRecord, which is not on the wire).
Never change it: it stands for messages and stored envelopes already written."""

# ruff: noqa
from __future__ import annotations

import msgspec
import orjson

import enum
from dataclasses import dataclass, field, fields
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Usage:
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


@dataclass(frozen=True, slots=True)
class Event:
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


@dataclass(frozen=True, slots=True)
class Envelope:
    """The message every topic carries. Immutable: stages return an updated copy."""

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
    history: tuple[Event, ...] = field(default_factory=tuple)
    schema_version: int = SCHEMA_VERSION
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
        """A copy with some fields changed (dataclasses.replace, minus its generic overhead:
        this runs several times per message)."""
        unknown = changes.keys() - _ENVELOPE_FIELDS
        if unknown:
            raise TypeError(f"Envelope has no field(s) {sorted(unknown)}")
        new = object.__new__(Envelope)
        for name in _ENVELOPE_FIELDS:
            object.__setattr__(new, name, changes[name] if name in changes else getattr(self, name))
        return new

    def to_dict(self) -> dict[str, Any]:
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


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))


# ---- qaloop.core.codec


class InvalidMessage(ValueError):
    """The bytes are not a valid envelope of a schema version we understand."""


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.to_dict())


# What encode() always starts with. Such bytes take the fast path: msgspec checks every field's
# type in C while building the Envelope (2-3x faster than orjson plus the checks below). Anything
# else -- and anything msgspec refuses -- takes the strict path, whose errors say what's wrong.
_CANONICAL_PREFIX = b'{"schema_version":%d,' % SCHEMA_VERSION
_FAST = msgspec.json.Decoder(Envelope)
_ARMS = (None, "feedback", "control")


def decode(raw: bytes | str | None) -> Envelope:
    if raw is None:
        raise InvalidMessage("empty message (no value)")
    if isinstance(raw, bytes) and raw.startswith(_CANONICAL_PREFIX):
        try:
            envelope = _FAST.decode(raw)
        except msgspec.MsgspecError:
            pass  # the strict path says why (or accepts what it is lenient about)
        else:
            if (
                envelope.schema_version == SCHEMA_VERSION
                and envelope.question_id
                and envelope.question.strip()
                and envelope.attempt >= 1
                and envelope.arm in _ARMS
                and envelope.lane in LANES
            ):
                return envelope
    return _decode_strict(raw)


def _decode_strict(raw: bytes | str) -> Envelope:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        raise InvalidMessage(
            f"unsupported schema_version {version!r} (expected one of "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))})"
        )
    try:
        return _from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage(f"schema violation: {type(exc).__name__}: {exc}") from exc


def _str(data: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _num(data: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"field {key!r} must be a number, got {type(value).__name__}")
    return float(value)


def _from_dict(data: dict[str, Any]) -> Envelope:
    question_id = _str(data, "question_id")
    question = _str(data, "question")
    assert question_id is not None and question is not None
    if not question_id or not question.strip():
        raise ValueError("question_id and question must be non-empty")
    attempt = data.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an integer >= 1, got {attempt!r}")
    history_raw = data.get("history", [])
    if not isinstance(history_raw, list):
        raise TypeError("field 'history' must be a list")
    ec = data.get("error_class")
    best_attempt = data.get("best_attempt")
    return Envelope(
        question_id=question_id,
        question=question,
        reference_answer=_str(data, "reference_answer", optional=True),
        trace_id=_str(data, "trace_id") or "",
        first_seen=_num(data, "first_seen") or 0.0,
        attempt=attempt,
        state=QuestionState(data.get("state", "queued")),
        answer=_str(data, "answer", optional=True),
        score=_num(data, "score", optional=True),
        best_answer=_str(data, "best_answer", optional=True),
        best_score=_num(data, "best_score", optional=True),
        best_attempt=None if best_attempt is None else int(best_attempt),
        error_class=None if ec is None else ErrorClass(ec),
        error_detail=_str(data, "error_detail", optional=True),
        due_at=_num(data, "due_at", optional=True),
        llm_calls=int(data.get("llm_calls", 0)),
        tries_in_attempt=int(data.get("tries_in_attempt", 0)),
        history=tuple(Event.from_dict(e) for e in history_raw),
        schema_version=SCHEMA_VERSION,
        caller=_str(data, "caller", optional=True),
        lane=_lane(data.get("lane", "interactive")),
        feedback=_str(data, "feedback", optional=True),
        arm=_arm(data.get("arm")),
    )


def _lane(value: Any) -> str:
    if value not in LANES:
        raise ValueError(f"lane must be one of {LANES}, got {value!r}")
    return str(value)


def _arm(value: Any) -> str | None:
    if value in _ARMS:
        return value  # type: ignore[no-any-return]
    raise ValueError(f"arm must be 'feedback', 'control' or null, got {value!r}")
