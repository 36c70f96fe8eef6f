"""An OpenAI-compatible chat-completions provider over plain httpx (Ollama, vLLM, llama.cpp
server, LM Studio, OpenRouter, OpenAI itself): POST {base_url}/chat/completions.

    HTTP / body                                     -> error
    429, error code/type "insufficient_quota"       -> QuotaDayError    (billing: won't clear soon)
    429 otherwise                                   -> QuotaMinuteError (Retry-After header, or
                                                       x-ratelimit-reset-requests, if sent)
    503, 529 (overloaded)                           -> OverloadError
    500, 502, 504, other 5xx, 408, timeouts,
        connection errors                           -> ServerError
    200 whose body is not JSON                      -> ServerError   (truncated / proxy page:
                                                       transient, and the budget bounds retries)
    200 JSON without choices[0].message.content     -> PermanentError (the server answered, in a
                                                       shape we can't use: retrying won't help)
    finish_reason "content_filter", empty answer    -> PermanentError
    other 4xx (400, 401, 403, 404, 422)             -> PermanentError
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

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
    parse_go_duration_s,
    parse_retry_after,
    transport_error,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def classify_openai_error(
    status: int, headers: httpx.Headers | dict[str, str], body: Any
) -> LLMError:
    """Map a non-2xx chat-completions reply to the pipeline's error class."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"message": body} if isinstance(body, str) else {}
    message = str(err.get("message") or "")[:240]
    code = str(err.get("code") or "")
    kind = str(err.get("type") or "")
    detail = f"openai-compatible {status}: {message}" if message else f"openai-compatible {status}"
    if status == 429:
        if code == "insufficient_quota" or kind == "insufficient_quota":
            return QuotaDayError(f"{detail} (insufficient_quota)", status=429)
        h = httpx.Headers(headers)
        retry_after = parse_retry_after(h.get("retry-after"))
        if retry_after is None:
            retry_after = parse_go_duration_s(h.get("x-ratelimit-reset-requests"))
        return QuotaMinuteError(detail, status=429, retry_after_s=retry_after)
    if status in (503, 529):
        return OverloadError(detail, status=status)
    if status >= 500 or status == 408:
        return ServerError(detail, status=status)
    return PermanentError(detail, status=status)


def generation_from_completion(body: Any, model: str, latency_ms: float) -> Generation:
    try:
        choice = body["choices"][0]
        message = choice["message"]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise PermanentError(
            "openai-compatible: the reply has no choices[0].message (unexpected shape)"
        ) from exc
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = (content or "").strip() if isinstance(content, str) else ""
    if finish == "content_filter":
        raise PermanentError("openai-compatible: answer withheld by the content filter")
    if not text:
        raise PermanentError(f"openai-compatible: empty answer (finish_reason={finish})")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Generation(
        text=text,
        latency_ms=latency_ms,
        model=str(body.get("model") or model),
        input_tokens=_int_or_none(usage.get("prompt_tokens")),
        output_tokens=_int_or_none(usage.get("completion_tokens")),
        cached_tokens=_int_or_none(cached),
    )


def _int_or_none(value: Any) -> int | None:
    """A token count, or None when absent or not a count (then the cost is estimated)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class OpenAICompatProvider:
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_output_tokens: int | None = 1024,
        temperature: float | None = None,
        max_connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(model={self.model!r}, base_url={self.base_url!r})"

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model or self.model,  # a per-attempt escalation may name one
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if self.max_output_tokens is not None:
            payload["max_tokens"] = self.max_output_tokens
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None:
            payload["temperature"] = temperature
        return payload

    async def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        try:
            response = await self._client.post(
                f"{self.base_url}/chat/completions", json=self._payload(request)
            )
            raw = await response.aread()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, "openai-compatible") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
            if response.is_success:
                raise ServerError(
                    f"openai-compatible {response.status_code}: unreadable response body"
                ) from None
        if not response.is_success:
            if body is None:
                body = raw[:240].decode("utf-8", "replace")
            error = classify_openai_error(response.status_code, response.headers, body)
            log.info(
                "question %s: openai-compatible %s -> %s",
                request.question_id,
                response.status_code,
                error.error_class.value,
            )
            raise error
        if not isinstance(body, dict):
            raise PermanentError("openai-compatible: the reply is not a JSON object")
        return generation_from_completion(body, request.model or self.model, latency_ms)

    async def aclose(self) -> None:
        await self._client.aclose()
