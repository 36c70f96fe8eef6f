"""Gemini through the google-genai SDK (optional extra `gemini`).

Every failure leaves this module as one of the pipeline's error classes (qaloop.llm.base):

    HTTP / status                                   -> error            -> worker does
    429 RESOURCE_EXHAUSTED, per-minute quota        -> QuotaMinuteError -> park RetryInfo delay
    429 ..., QuotaFailure quotaId/metric "PerDay"   -> QuotaDayError    -> park until 00:00 PT
    429 ..., zero quota ("limit: 0", quotaValue 0)  -> QuotaDayError    -> park quota_day_delay_s
    503 UNAVAILABLE ("model is overloaded")         -> OverloadError    -> backoff, then park
    500 INTERNAL, 504 DEADLINE_EXCEEDED, other 5xx,
        408, 499, timeouts, connection errors       -> ServerError      -> backoff, then park
    200 with a body that is not JSON                -> ServerError      -> (a truncated reply)
    400 INVALID_ARGUMENT, 401, 403, 404, other 4xx  -> PermanentError   -> dead letter
    prompt blocked (promptFeedback.blockReason),
        finishReason SAFETY/RECITATION/..., no text -> PermanentError   -> dead letter

The SDK's own retries are switched off (attempts=1): retrying is the worker's job, by class.
The API key comes from Settings (env or a key file) and is never logged: this object's repr
shows the model and base URL only, and error details are built from the server's message.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from qaloop.llm.base import (
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    PermanentError,
    QuotaDayError,
    QuotaMinuteError,
    ServerError,
)
from qaloop.llm.errors_http import (
    TRANSPORT_ERRORS,
    parse_duration_s,
    seconds_until_pacific_midnight,
    transport_error,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemini-2.5-flash-lite"
_ZERO_LIMIT = re.compile(r"\blimit:\s*0(?![\d.])")
_BLOCKING_FINISH = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "LANGUAGE",
}


def _error_body(body: Any) -> dict[str, Any]:
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        return {}
    inner = body.get("error")
    return inner if isinstance(inner, dict) else body


def classify_gemini_error(
    code: int | None,
    status: str | None,
    message: str | None,
    body: Any,
    *,
    now: float | None = None,
) -> LLMError:
    """Map a Google API error (code, status, message and the JSON body with its `details`)
    to the pipeline's error class. Pure: tests feed it bodies captured from the real API."""
    err = _error_body(body)
    status = status or err.get("status")
    message = message or err.get("message") or ""
    code = code or err.get("code")
    detail = f"gemini {code} {status or ''}: {str(message)[:240]}".replace("  ", " ")
    raw_details = err.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []

    if code == 429 or status == "RESOURCE_EXHAUSTED":
        retry_after: float | None = None
        per_day = zero = False
        for d in details:
            if not isinstance(d, dict):
                continue
            kind = str(d.get("@type", ""))
            if kind.endswith("google.rpc.RetryInfo"):
                retry_after = parse_duration_s(d.get("retryDelay"))
            elif kind.endswith("google.rpc.QuotaFailure"):
                for v in d.get("violations") or []:
                    if not isinstance(v, dict):
                        continue
                    names = f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}".lower()
                    if "perday" in names or "per_day" in names or "daily" in names:
                        per_day = True
                    if str(v.get("quotaValue", "")).strip() == "0":
                        zero = True
        if _ZERO_LIMIT.search(str(message)):
            zero = True
        if zero:
            return QuotaDayError(f"{detail} (zero quota)", status=429)
        if per_day:
            return QuotaDayError(
                f"{detail} (per-day quota)",
                status=429,
                retry_after_s=seconds_until_pacific_midnight(now),
            )
        return QuotaMinuteError(detail, status=429, retry_after_s=retry_after)
    if code == 503 or status == "UNAVAILABLE":
        return OverloadError(detail, status=code)
    if code is not None and (code >= 500 or code in (408, 499)):
        return ServerError(detail, status=code)
    if status in ("INTERNAL", "DEADLINE_EXCEEDED", "CANCELLED"):
        return ServerError(detail, status=code)
    return PermanentError(detail, status=code)


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", None) or getattr(value, "name", None) or value)


def generation_from_response(response: Any, model: str, latency_ms: float) -> Generation:
    """The answer text and token usage of a GenerateContentResponse, or PermanentError for a
    blocked or empty reply."""
    feedback = getattr(response, "prompt_feedback", None)
    block = _enum_name(getattr(feedback, "block_reason", None)) if feedback else None
    if block and block != "BLOCKED_REASON_UNSPECIFIED":
        raise PermanentError(f"gemini blocked the prompt: blockReason={block}")
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        raise PermanentError("gemini returned no candidates (no text)")
    candidate = candidates[0]
    finish = _enum_name(getattr(candidate, "finish_reason", None))
    content = getattr(candidate, "content", None)
    parts = getattr(content, "parts", None) or []
    text = "".join(
        p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False)
    ).strip()
    if finish in _BLOCKING_FINISH:
        raise PermanentError(f"gemini stopped the answer: finishReason={finish} (safety filter)")
    if not text:
        raise PermanentError(f"gemini returned no text (finishReason={finish})")
    usage = getattr(response, "usage_metadata", None)
    input_tokens = getattr(usage, "prompt_token_count", None) if usage else None
    out = getattr(usage, "candidates_token_count", None) if usage else None
    thoughts = getattr(usage, "thoughts_token_count", None) if usage else None
    output_tokens = None if out is None and thoughts is None else (out or 0) + (thoughts or 0)
    # promptTokenCount includes the cached part; cachedContentTokenCount is billed cheaper
    cached = getattr(usage, "cached_content_token_count", None) if usage else None
    return Generation(
        text=text,
        latency_ms=latency_ms,
        model=str(getattr(response, "model_version", None) or model),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached if isinstance(cached, int) else None,
    )


class GeminiProvider:
    name = "gemini"

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_output_tokens: int | None = 1024,
        temperature: float | None = None,
    ) -> None:
        if not api_key:
            raise ValueError(
                "the gemini provider needs an API key: set QALOOP_LLM_API_KEY or "
                "QALOOP_LLM_API_KEY_FILE"
            )
        from google import genai
        from google.genai import types

        self._types = types
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url,
                timeout=int(timeout_s * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )
        self._config = types.GenerateContentConfig(
            max_output_tokens=max_output_tokens, temperature=temperature
        )

    def __repr__(self) -> str:
        return f"GeminiProvider(model={self.model!r}, base_url={self.base_url!r})"

    async def generate(self, request: GenerationRequest) -> Generation:
        from google.genai import errors

        started = time.perf_counter()
        try:
            config = self._config
            if request.temperature is not None:  # a per-attempt escalation
                config = config.model_copy(update={"temperature": request.temperature})
            response = await self._client.aio.models.generate_content(
                model=request.model or self.model, contents=request.prompt, config=config
            )
        except errors.APIError as exc:
            error = classify_gemini_error(exc.code, exc.status, exc.message, exc.details)
            log.info(
                "question %s: gemini %s -> %s",
                request.question_id,
                exc.code,
                error.error_class.value,
            )
            raise error from exc
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, "gemini") from exc
        except ValueError as exc:  # a 200 whose body isn't JSON (JSONDecodeError)
            raise ServerError(f"gemini: unreadable response body ({type(exc).__name__})") from exc
        return generation_from_response(
            response, request.model or self.model, (time.perf_counter() - started) * 1000
        )

    async def aclose(self) -> None:
        await self._client.aio.aclose()
