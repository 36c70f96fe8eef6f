"""A question's full history for `GET /v1/questions/{id}/trace`: the stored record, every event
(each attempt, LLM error, park, score and decision, with timestamps) and the topic each step
put the question on, grouped by attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from qaloop.bus.base import Topics
from qaloop.core.model import Event, EventKind, QuestionRecord

_DECISION_TOPIC = {"validate": "validated", "regenerate": "questions", "give_up": "dead_letter"}


def topic_after(event: Event, topics: Topics) -> str | None:
    """The topic a step published the question to (None: it stayed inside the stage)."""
    name: str | None
    match event.kind:
        case EventKind.ACCEPTED | EventKind.RESUMED | EventKind.RESET:
            name = "questions"
        case EventKind.GENERATED:
            name = "generated"
        case EventKind.PARKED:
            name = "delayed"
        case EventKind.SCORED:
            name = _DECISION_TOPIC.get(event.decision or "")
        case EventKind.GAVE_UP:
            name = "dead_letter"
        case _:
            name = None  # an LLM error retried in the worker's own task
    return None if name is None else str(getattr(topics, name))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def build_trace(record: QuestionRecord, events: Sequence[Event], topics: Topics) -> dict[str, Any]:
    ordered = sorted(events, key=lambda e: e.seq)
    start = record.first_seen
    steps: list[dict[str, Any]] = []
    for event in ordered:
        step = event.to_dict()
        step["time"] = _iso(event.at)
        step["t_offset_s"] = round(event.at - start, 6)
        topic = topic_after(event, topics)
        if topic is not None:
            step["topic"] = topic
        steps.append(step)
    attempts: dict[int, dict[str, Any]] = {}
    for event in ordered:
        a = attempts.setdefault(
            event.attempt,
            {
                "attempt": event.attempt,
                "started_at": event.at,
                "llm_calls": 0,
                "errors": [],
                "answer": None,
                "score": None,
                "decision": None,
            },
        )
        a["ended_at"] = event.at
        if event.kind is EventKind.GENERATED:
            a["llm_calls"] += 1
            a["answer"] = event.answer
            a["llm_latency_ms"] = event.latency_ms
        elif event.kind is EventKind.LLM_ERROR:
            a["llm_calls"] += 1
            a["errors"].append(
                {
                    "error_class": None if event.error_class is None else event.error_class.value,
                    "detail": event.detail,
                    "at": event.at,
                }
            )
        elif event.kind is EventKind.SCORED:
            a["score"] = event.score
            a["decision"] = event.decision
        elif event.kind is EventKind.PARKED:
            a.setdefault("parked_s", 0.0)
            a["parked_s"] += event.wait_s or 0.0
    body = record.to_public()
    body["trace_id"] = record.trace_id
    body["updated_at"] = record.updated_at
    body["topics"] = list(dict.fromkeys(s["topic"] for s in steps if "topic" in s))
    body["by_attempt"] = [attempts[k] for k in sorted(attempts)]
    body["events"] = steps
    return body
