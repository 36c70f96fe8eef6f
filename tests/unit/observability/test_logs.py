"""One structured log line per state change of a question, each carrying question_id and
trace_id as fields; the JSON formatter writes those fields as keys."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from qaloop.core.model import Envelope
from qaloop.dataset import load_sample
from qaloop.observability.logs import JsonFormatter, log_event
from qaloop.pipeline import EmbeddedPipeline
from tests.unit.observability.conftest import error_settings

STATE_EVENTS = {"accepted", "generating", "generated", "validated", "regenerated", "stored"}
ERROR_EVENTS = {"llm_error", "parked", "resumed", "gave_up"}


async def test_every_state_change_is_one_line_with_question_and_trace_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="qaloop")
    pipeline = EmbeddedPipeline(error_settings(tmp_path))
    await pipeline.start()
    try:
        for qa in load_sample(limit=150):
            await pipeline.service.ask(qa.question, qa.reference_answer)
        assert await pipeline.drain(60)
    finally:
        await pipeline.stop()

    lines = [r for r in caplog.records if hasattr(r, "event")]
    seen = {r.event for r in lines}  # type: ignore[attr-defined]
    assert seen >= STATE_EVENTS | ERROR_EVENTS, seen
    traces = {e.question_id: e.trace_id for e in pipeline.repo.unfinished()}
    for r in lines:
        qid, trace = r.question_id, r.trace_id  # type: ignore[attr-defined]
        assert len(qid) == 32 and len(trace) == 32
        assert qid in r.getMessage()  # the text names the question too
        assert traces.get(qid, trace) == trace
        assert isinstance(r.attempt, int)  # type: ignore[attr-defined]

    # One question's life, in order, from its lines alone.
    by_question: dict[str, list[str]] = {}
    for r in lines:
        by_question.setdefault(r.question_id, []).append(r.event)  # type: ignore[attr-defined]
    assert len(by_question) == 150
    for events in by_question.values():
        assert events[0] == "accepted"
        assert events.count("accepted") == 1
        assert "stored" in events
    plain = [
        [e for e in events if e != "stored"]
        for events in by_question.values()
        if set(events) == {"accepted", "generating", "generated", "validated", "stored"}
    ]
    assert plain, "some question validated on its first try"
    assert all(life == ["accepted", "generating", "generated", "validated"] for life in plain)
    parked = [events for events in by_question.values() if "parked" in events]
    assert parked
    i = parked[0].index("parked")
    assert parked[0][i - 1] == "llm_error" and "resumed" in parked[0][i:]

    # The decision lines carry the verdict (its reason, who judged, the score if any); the
    # error lines their class.
    for r in lines:
        if r.event in ("validated", "regenerated"):  # type: ignore[attr-defined]
            assert r.reason and r.judged_by  # type: ignore[attr-defined]
            assert r.score is None or 0.0 <= r.score <= 1.0  # type: ignore[attr-defined]
        if r.event == "validated":  # type: ignore[attr-defined]
            assert r.score is not None  # type: ignore[attr-defined]
        if r.event in ("llm_error", "parked"):  # type: ignore[attr-defined]
            assert r.error_class  # type: ignore[attr-defined]


def test_json_formatter_writes_the_extra_fields() -> None:
    logger = logging.getLogger("qaloop.test.json")
    envelope = Envelope("a" * 32, "q?", None, "b" * 32, 1.0, attempt=2)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        log_event(logger, "parked", envelope, "until %.1f", 5.0, error_class="quota_minute")
    finally:
        logger.removeHandler(handler)
    body = orjson.loads(JsonFormatter().format(records[0]))
    assert body["msg"] == f"question {'a' * 32}: parked until 5.0"
    assert body["question_id"] == "a" * 32
    assert body["trace_id"] == "b" * 32
    assert body["attempt"] == 2
    assert body["event"] == "parked"
    assert body["error_class"] == "quota_minute"
    assert body["level"] == "DEBUG" and body["logger"] == "qaloop.test.json"


def test_nothing_is_built_when_the_level_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="qaloop")
    envelope = Envelope("a" * 32, "q?", None, "b" * 32, 1.0)
    log_event(logging.getLogger("qaloop.test.off"), "generated", envelope)
    assert not caplog.records


async def test_info_writes_at_most_one_line_per_question(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default level: a question's outcome only (the issue measured ~7 lines each)."""
    caplog.set_level(logging.INFO, logger="qaloop")
    pipeline = EmbeddedPipeline(error_settings(tmp_path, sim_permanent_rate=0.0))
    await pipeline.start()
    try:
        for qa in load_sample(limit=100):
            await pipeline.service.ask(qa.question, qa.reference_answer)
        assert await pipeline.drain(60)
    finally:
        await pipeline.stop()
    per_question: dict[str, int] = {}
    for r in caplog.records:
        if r.levelno == logging.INFO and hasattr(r, "question_id"):
            per_question[r.question_id] = per_question.get(r.question_id, 0) + 1  # type: ignore[attr-defined]
    assert len(per_question) == 100  # every question's outcome is there
    assert max(per_question.values()) == 1
    info_lines = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(info_lines) <= 110, [r.getMessage() for r in info_lines[:20]]
