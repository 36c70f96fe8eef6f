"""Every provider failure maps to one error class (the table in docs/llm.md)."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from qaloop.core.model import ErrorClass
from qaloop.llm.base import PermanentError
from qaloop.llm.errors_http import (
    parse_duration_s,
    parse_go_duration_s,
    parse_retry_after,
    seconds_until_pacific_midnight,
)
from qaloop.llm.gemini import classify_gemini_error, generation_from_response
from qaloop.llm.openai_compat import classify_openai_error, generation_from_completion

RETRY_17 = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}


def _quota(quota_id: str, value: str = "15") -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/"
                "generate_content_free_tier_requests",
                "quotaId": quota_id,
                "quotaValue": value,
            }
        ],
    }


def _google(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


@pytest.mark.parametrize(
    ("code", "status", "message", "details", "expected", "retry"),
    [
        (
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded, limit: 15",
            [_quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"), RETRY_17],
            ErrorClass.QUOTA_MINUTE,
            17.0,
        ),
        (
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted",
            [],
            ErrorClass.QUOTA_MINUTE,
            None,
        ),
        (
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded, limit: 1000",
            [_quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "1000"), RETRY_17],
            ErrorClass.QUOTA_DAY,
            "midnight",
        ),
        (
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for metric: x, limit: 0, model: m",
            [RETRY_17],
            ErrorClass.QUOTA_DAY,
            None,
        ),
        (
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded",
            [_quota("GenerateContentInputTokensPerModelPerMinute", "0")],
            ErrorClass.QUOTA_DAY,
            None,
        ),
        (
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
            [],
            ErrorClass.OVERLOAD,
            None,
        ),
        (500, "INTERNAL", "An internal error has occurred.", [], ErrorClass.SERVER, None),
        (504, "DEADLINE_EXCEEDED", "Deadline expired", [], ErrorClass.SERVER, None),
        (502, None, "Bad Gateway", [], ErrorClass.SERVER, None),
        (499, "CANCELLED", "cancelled", [], ErrorClass.SERVER, None),
        (
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
            [],
            ErrorClass.PERMANENT,
            None,
        ),
        (
            400,
            "FAILED_PRECONDITION",
            "User location is not supported",
            [],
            ErrorClass.PERMANENT,
            None,
        ),
        (403, "PERMISSION_DENIED", "Permission denied", [], ErrorClass.PERMANENT, None),
        (404, "NOT_FOUND", "models/x is not found", [], ErrorClass.PERMANENT, None),
    ],
)
def test_gemini_error_classes(
    code: int,
    status: str | None,
    message: str,
    details: list[Any],
    expected: ErrorClass,
    retry: float | str | None,
) -> None:
    now = datetime(2026, 11, 26, 20, 0, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp()
    error = classify_gemini_error(
        code, status, message, _google(code, status or "", message, *details), now=now
    )
    assert error.error_class is expected
    assert error.status == code
    if retry == "midnight":
        assert error.retry_after_s == pytest.approx(4 * 3600)
    else:
        assert error.retry_after_s == retry
    assert str(code) in error.detail


def test_gemini_error_read_from_the_body_alone() -> None:
    body = _google(429, "RESOURCE_EXHAUSTED", "x", RETRY_17)
    error = classify_gemini_error(None, None, None, [body])
    assert error.error_class is ErrorClass.QUOTA_MINUTE and error.retry_after_s == 17


def _response(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "prompt_feedback": None,
        "candidates": None,
        "usage_metadata": None,
        "model_version": None,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def _candidate(text: str | None, finish: str = "STOP", thought: bool = False) -> SimpleNamespace:
    parts = [] if text is None else [SimpleNamespace(text=text, thought=thought)]
    return SimpleNamespace(
        content=SimpleNamespace(parts=parts), finish_reason=SimpleNamespace(value=finish)
    )


def test_gemini_response_text_and_usage() -> None:
    usage = SimpleNamespace(
        prompt_token_count=12, candidates_token_count=30, thoughts_token_count=8
    )
    gen = generation_from_response(
        _response(
            candidates=[_candidate("Because.")],
            usage_metadata=usage,
            model_version="gemini-2.5-flash-lite-001",
        ),
        "m",
        5.0,
    )
    assert gen.text == "Because." and gen.input_tokens == 12 and gen.output_tokens == 38
    assert gen.model == "gemini-2.5-flash-lite-001"
    gen = generation_from_response(_response(candidates=[_candidate("ok")]), "m", 1.0)
    assert gen.input_tokens is None and gen.output_tokens is None and gen.model == "m"


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (
            _response(
                prompt_feedback=SimpleNamespace(block_reason=SimpleNamespace(value="SAFETY"))
            ),
            "blockReason=SAFETY",
        ),
        (_response(candidates=[_candidate(None, "SAFETY")]), "finishReason=SAFETY"),
        (_response(candidates=[_candidate("partial", "RECITATION")]), "RECITATION"),
        (_response(candidates=[_candidate(None, "MAX_TOKENS")]), "no text"),
        (_response(candidates=[_candidate("thinking only", thought=True)]), "no text"),
        (_response(candidates=[]), "no candidates"),
    ],
)
def test_gemini_blocked_or_empty_is_permanent(response: SimpleNamespace, match: str) -> None:
    with pytest.raises(PermanentError, match=match):
        generation_from_response(response, "m", 1.0)


def _openai(message: str, type_: str = "requests", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code}}


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry"),
    [
        (429, {"retry-after": "7"}, _openai("Rate limit reached"), ErrorClass.QUOTA_MINUTE, 7.0),
        (
            429,
            {"x-ratelimit-reset-requests": "1m30s"},
            _openai("Rate limit"),
            ErrorClass.QUOTA_MINUTE,
            90.0,
        ),
        (429, {}, _openai("Rate limit"), ErrorClass.QUOTA_MINUTE, None),
        (
            429,
            {"retry-after": "20"},
            _openai("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
            ErrorClass.QUOTA_DAY,
            None,
        ),
        (503, {}, _openai("overloaded", "server_error"), ErrorClass.OVERLOAD, None),
        (529, {}, "overloaded", ErrorClass.OVERLOAD, None),
        (500, {}, _openai("boom", "server_error"), ErrorClass.SERVER, None),
        (502, {}, "<html>bad gateway</html>", ErrorClass.SERVER, None),
        (504, {}, None, ErrorClass.SERVER, None),
        (408, {}, None, ErrorClass.SERVER, None),
        (400, {}, _openai("bad", "invalid_request_error"), ErrorClass.PERMANENT, None),
        (401, {}, _openai("Incorrect API key provided"), ErrorClass.PERMANENT, None),
        (404, {}, _openai("model not found"), ErrorClass.PERMANENT, None),
        (422, {}, {"detail": "unprocessable"}, ErrorClass.PERMANENT, None),
    ],
)
def test_openai_error_classes(
    status: int, headers: dict[str, str], body: Any, expected: ErrorClass, retry: float | None
) -> None:
    error = classify_openai_error(status, headers, body)
    assert error.error_class is expected and error.status == status
    assert error.retry_after_s == retry


def test_openai_completion_parsing() -> None:
    body = {
        "model": "llama3.2",
        "choices": [{"message": {"content": " Hi. "}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2},
    }
    gen = generation_from_completion(body, "m", 3.0)
    assert (gen.text, gen.model, gen.input_tokens, gen.output_tokens) == ("Hi.", "llama3.2", 9, 2)
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "a"}]}}]}
    assert generation_from_completion(parts, "m", 1.0).text == "a"
    for bad, match in [
        ({"choices": []}, "unexpected shape"),
        (
            {"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]},
            "content filter",
        ),
        ({"choices": [{"message": {"content": None}, "finish_reason": "length"}]}, "empty"),
    ]:
        with pytest.raises(PermanentError, match=match):
            generation_from_completion(bad, "m", 1.0)


def test_duration_parsers() -> None:
    assert parse_duration_s("17s") == 17 and parse_duration_s("0.5s") == 0.5
    assert parse_duration_s({"seconds": 3, "nanos": 500_000_000}) == 3.5
    assert parse_duration_s("soon") is None and parse_duration_s(None) is None
    assert parse_retry_after("12") == 12 and parse_retry_after("") is None
    when = datetime(2026, 1, 1, 0, 0, 30, tzinfo=ZoneInfo("UTC"))
    assert parse_retry_after(format_datetime(when), now=when.timestamp() - 30) == 30
    assert parse_retry_after("garbage") is None
    assert parse_go_duration_s("6m0s") == 360 and parse_go_duration_s("20ms") == 0.02
    assert parse_go_duration_s("1h2m3.5s") == 3723.5 and parse_go_duration_s("x1s") is None
    la = ZoneInfo("America/Los_Angeles")
    assert (
        seconds_until_pacific_midnight(datetime(2026, 7, 1, 23, 59, 0, tzinfo=la).timestamp()) == 60
    )
