"""Provider batch APIs (half the interactive price, results within 24 h, often minutes):
the OpenAI Batch API over httpx and Gemini Batch Mode through google-genai, behind one small
interface the batch lane (qaloop.services.batch_lane) drives:

    submit(items) -> job id            one job for many questions
    poll(job id)  -> BatchPoll         RUNNING, or DONE / EXPIRED with per-item results
                                       (a Generation or an LLMError each), or FAILED

Per-item errors are mapped like interactive ones (the same classifiers), so a question whose
request failed inside a batch is routed by class as if it had been called alone. An item an
expired batch never ran comes back as `BatchExpired` (a ServerError: retried interactively).
Submit and poll errors are LLMErrors too (a poll error leaves the job to the next poll).
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from qaloop.llm.base import (
    Generation,
    GenerationRequest,
    LLMError,
    PermanentError,
    ServerError,
)
from qaloop.llm.errors_http import TRANSPORT_ERRORS, transport_error

log = logging.getLogger(__name__)


class BatchExpired(ServerError):
    """The batch's completion window ended before this request ran."""


class BatchState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    EXPIRED = "expired"  # partial results may be there
    FAILED = "failed"  # the whole job: no results


@dataclass(frozen=True, slots=True)
class BatchItem:
    key: str  # custom_id (OpenAI) / metadata key (Gemini): the question id
    request: GenerationRequest


@dataclass(slots=True)
class BatchPoll:
    state: BatchState
    results: dict[str, Generation | LLMError] = field(default_factory=dict)
    detail: str = ""


class BatchClient(Protocol):
    name: str  # provider
    model: str

    async def submit(self, items: Sequence[BatchItem]) -> str: ...

    async def poll(self, job_id: str) -> BatchPoll: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- OpenAI


class OpenAIBatchClient:
    """POST /files (JSONL, purpose=batch) -> POST /batches -> GET /batches/{id} -> GET
    /files/{output_file_id}/content and /files/{error_file_id}/content."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_output_tokens: int | None = 1024,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_output_tokens = max_output_tokens
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s))

    def __repr__(self) -> str:
        return f"OpenAIBatchClient(model={self.model!r}, base_url={self.base_url!r})"

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        from qaloop.llm.openai_compat import classify_openai_error

        try:
            response = await self._client.request(method, f"{self.base_url}{path}", **kwargs)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, "openai batch") from exc
        if not response.is_success:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text[:240]
            raise classify_openai_error(response.status_code, response.headers, body)
        return response

    def _line(self, item: BatchItem) -> str:
        body: dict[str, Any] = {
            "model": item.request.model or self.model,  # the attempt's (the escalation's)
            "messages": [{"role": "user", "content": item.request.prompt}],
        }
        if self.max_output_tokens is not None:
            body["max_tokens"] = self.max_output_tokens
        if item.request.temperature is not None:
            body["temperature"] = item.request.temperature
        return json.dumps(
            {"custom_id": item.key, "method": "POST", "url": "/v1/chat/completions", "body": body}
        )

    async def submit(self, items: Sequence[BatchItem]) -> str:
        jsonl = "".join(self._line(i) + "\n" for i in items).encode()
        upload = await self._call(
            "POST",
            "/files",
            data={"purpose": "batch"},
            files={"file": ("qaloop-batch.jsonl", jsonl, "application/jsonl")},
        )
        file_id = upload.json()["id"]
        created = await self._call(
            "POST",
            "/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        return str(created.json()["id"])

    async def poll(self, job_id: str) -> BatchPoll:
        batch = (await self._call("GET", f"/batches/{job_id}")).json()
        status = str(batch.get("status"))
        if status in ("validating", "in_progress", "finalizing", "cancelling"):
            return BatchPoll(BatchState.RUNNING)
        if status in ("failed", "cancelled"):
            errors = (batch.get("errors") or {}).get("data") or []
            detail = "; ".join(str(e.get("message", e)) for e in errors)[:300]
            return BatchPoll(BatchState.FAILED, detail=f"openai batch {status}: {detail}")
        results: dict[str, Generation | LLMError] = {}
        for file_key in ("output_file_id", "error_file_id"):
            file_id = batch.get(file_key)
            if file_id:
                content = await self._call("GET", f"/files/{file_id}/content")
                for line in content.text.splitlines():
                    if line.strip():
                        key, result = self._result(json.loads(line))
                        results[key] = result
        state = BatchState.EXPIRED if status == "expired" else BatchState.DONE
        return BatchPoll(state, results, detail=f"openai batch {status}")

    def _result(self, line: dict[str, Any]) -> tuple[str, Generation | LLMError]:
        from qaloop.llm.openai_compat import classify_openai_error, generation_from_completion

        key = str(line.get("custom_id"))
        error = line.get("error")
        if error:
            code = str(error.get("code") or "")
            message = str(error.get("message") or "")[:200]
            if code == "batch_expired":
                return key, BatchExpired(f"openai batch: {message or 'expired'}")
            return key, PermanentError(f"openai batch item {code}: {message}")
        response = line.get("response") or {}
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if status != 200:
            return key, classify_openai_error(status, {}, body)
        try:
            return key, generation_from_completion(body, self.model, 0.0)
        except LLMError as exc:
            return key, exc

    async def aclose(self) -> None:
        await self._client.aclose()


# --------------------------------------------------------------------------- Gemini


_GEMINI_RUNNING = {"JOB_STATE_PENDING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING"}


class GeminiBatchClient:
    """google-genai `client.aio.batches.create(model, src=[inlined requests])` and
    `.get(name)`; results are the job's inlined responses, keyed by request metadata."""

    name = "gemini"

    def __init__(
        self,
        api_key: str,
        *,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_output_tokens: int | None = 1024,
    ) -> None:
        if not api_key:
            raise ValueError("the gemini batch lane needs an API key (QALOOP_LLM_API_KEY_FILE)")
        from google import genai
        from google.genai import types

        self.model = model
        self.base_url = base_url
        self.max_output_tokens = max_output_tokens
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url,
                timeout=int(timeout_s * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    def __repr__(self) -> str:
        return f"GeminiBatchClient(model={self.model!r}, base_url={self.base_url!r})"

    async def _sdk(self, coro: Any) -> Any:
        from google.genai import errors

        from qaloop.llm.gemini import classify_gemini_error

        try:
            return await coro
        except errors.APIError as exc:
            raise classify_gemini_error(exc.code, exc.status, exc.message, exc.details) from exc
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, "gemini batch") from exc

    async def submit(self, items: Sequence[BatchItem]) -> str:
        src: list[Any] = [
            {
                "contents": [{"role": "user", "parts": [{"text": i.request.prompt}]}],
                "metadata": {"key": i.key},
                "config": _gemini_config(self.max_output_tokens, i.request.temperature),
            }
            for i in items
        ]
        # one model per job: the batch lane groups its questions by the attempt's model
        model = next((i.request.model for i in items if i.request.model), None) or self.model
        job = await self._sdk(
            self._client.aio.batches.create(model=model, src=src, config={"display_name": "qaloop"})
        )
        return str(job.name)

    async def poll(self, job_id: str) -> BatchPoll:
        from qaloop.llm.gemini import generation_from_response

        job = await self._sdk(self._client.aio.batches.get(name=job_id))
        state = getattr(job.state, "name", str(job.state))
        if state in _GEMINI_RUNNING:
            return BatchPoll(BatchState.RUNNING)
        if state == "JOB_STATE_EXPIRED":
            return BatchPoll(BatchState.EXPIRED, detail="gemini batch expired")
        if state != "JOB_STATE_SUCCEEDED":
            error = getattr(job, "error", None)
            return BatchPoll(BatchState.FAILED, detail=f"gemini batch {state}: {error or ''}")
        results: dict[str, Generation | LLMError] = {}
        responses = getattr(getattr(job, "dest", None), "inlined_responses", None) or []
        for i, inlined in enumerate(responses):
            key = str((inlined.metadata or {}).get("key", i))
            if inlined.error is not None:
                err = inlined.error
                code = getattr(err, "code", None) or (
                    err.get("code") if isinstance(err, dict) else None
                )
                message = getattr(err, "message", None) or (
                    err.get("message") if isinstance(err, dict) else str(err)
                )
                from qaloop.llm.gemini import classify_gemini_error

                results[key] = classify_gemini_error(code, None, message, None)
                continue
            try:
                results[key] = generation_from_response(inlined.response, self.model, 0.0)
            except LLMError as exc:
                results[key] = exc
        return BatchPoll(BatchState.DONE, results, detail="gemini batch succeeded")

    async def aclose(self) -> None:
        await self._client.aio.aclose()


def _gemini_config(max_output_tokens: int | None, temperature: float | None) -> dict[str, Any]:
    config: dict[str, Any] = {"max_output_tokens": max_output_tokens}
    if temperature is not None:  # the attempt's (the escalation's)
        config["temperature"] = temperature
    return config


# --------------------------------------------------------------------------- simulated


class SimulatedBatchClient:
    """A batch job over any Provider (the simulated one in the demo and tests): the job ends
    after `polls` status reads, each request answered by `provider.generate`."""

    def __init__(self, provider: Any, *, model: str = "simulated", polls: int = 1) -> None:
        self.provider = provider
        self.name = str(getattr(provider, "name", "simulated"))
        self.model = model
        self.polls = polls
        self._jobs: dict[str, tuple[list[BatchItem], int]] = {}

    async def submit(self, items: Sequence[BatchItem]) -> str:
        job_id = f"sim-{len(self._jobs) + 1}"
        self._jobs[job_id] = (list(items), 0)
        return job_id

    async def poll(self, job_id: str) -> BatchPoll:
        items, reads = self._jobs[job_id]
        if reads < self.polls:
            self._jobs[job_id] = (items, reads + 1)
            return BatchPoll(BatchState.RUNNING)
        del self._jobs[job_id]
        results: dict[str, Generation | LLMError] = {}
        for item in items:
            try:
                results[item.key] = await self.provider.generate(item.request)
            except LLMError as exc:
                results[item.key] = exc
        return BatchPoll(BatchState.DONE, results, detail="simulated batch done")

    async def aclose(self) -> None:
        return None


def make_batch_client(settings: Any) -> BatchClient:
    """The batch client of the configured provider (settings: qaloop.settings.Settings)."""
    if settings.llm == "openai":
        from qaloop.llm.openai_compat import DEFAULT_BASE_URL, DEFAULT_MODEL

        return OpenAIBatchClient(
            base_url=settings.llm_base_url or DEFAULT_BASE_URL,
            model=settings.llm_model or DEFAULT_MODEL,
            api_key=settings.api_key(),
            timeout_s=settings.llm_timeout_s,
            max_output_tokens=settings.llm_max_output_tokens,
        )
    if settings.llm == "gemini":
        from qaloop.llm.gemini import DEFAULT_MODEL as GEMINI_MODEL

        return GeminiBatchClient(
            settings.api_key() or "",
            model=settings.llm_model or GEMINI_MODEL,
            base_url=settings.llm_base_url,
            timeout_s=settings.llm_timeout_s,
            max_output_tokens=settings.llm_max_output_tokens,
        )
    from qaloop.llm.factory import make_raw_provider

    return SimulatedBatchClient(make_raw_provider(settings), model=settings.llm)
