"""Cached-token counts from both providers' usage metadata; a count that isn't one is treated
as absent (then the cost is estimated), never as zero."""

from __future__ import annotations

from types import SimpleNamespace

from qaloop.llm.gemini import generation_from_response
from qaloop.llm.openai_compat import generation_from_completion


def _choice() -> list[dict[str, object]]:
    return [{"message": {"content": "Hi."}, "finish_reason": "stop"}]


def test_openai_cached_tokens() -> None:
    body = {
        "choices": _choice(),
        "usage": {
            "prompt_tokens": 2000,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 1920},
        },
    }
    gen = generation_from_completion(body, "gpt-4o-mini", 1.0)
    assert (gen.input_tokens, gen.output_tokens, gen.cached_tokens) == (2000, 3, 1920)


def test_openai_junk_usage_is_absent_not_zero() -> None:
    body = {"choices": _choice(), "usage": {"prompt_tokens": "9", "completion_tokens": -1}}
    gen = generation_from_completion(body, "m", 1.0)
    assert gen.input_tokens is None and gen.output_tokens is None and gen.cached_tokens is None
    gen = generation_from_completion({"choices": _choice()}, "m", 1.0)
    assert gen.input_tokens is None


def test_gemini_cached_content_tokens() -> None:
    candidate = SimpleNamespace(
        content=SimpleNamespace(parts=[SimpleNamespace(text="Because.", thought=False)]),
        finish_reason=SimpleNamespace(value="STOP"),
    )
    usage = SimpleNamespace(
        prompt_token_count=5000,
        candidates_token_count=10,
        thoughts_token_count=None,
        cached_content_token_count=4096,
    )
    response = SimpleNamespace(
        prompt_feedback=None, candidates=[candidate], usage_metadata=usage, model_version=None
    )
    gen = generation_from_response(response, "gemini-2.5-flash", 1.0)
    assert (gen.input_tokens, gen.output_tokens, gen.cached_tokens) == (5000, 10, 4096)
