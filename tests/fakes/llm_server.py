"""A fake LLM server on 127.0.0.1 that speaks the Gemini REST protocol
(POST /v1beta/models/{model}:generateContent, or /v1/... as google-genai 3.x sends it) and
OpenAI chat-completions (POST /v1/chat/completions), for tests and benchmarks. Loopback only.

What it does is driven by a directive in the prompt, `[[fake:KIND]]` or `[[fake:KIND*N]]`
(apply KIND to the first N calls carrying this prompt, then answer normally):

    429m      quota per minute, with a retry delay (Gemini RetryInfo "2s" / OpenAI Retry-After: 2)
    429       quota per minute, no retry delay
    429day    quota per day (Gemini QuotaFailure ...PerDay... / OpenAI insufficient_quota)
    429zero   zero quota (Gemini "limit: 0")
    503 500 504 400 403 404   those statuses, with a Google-style / OpenAI-style error body
    timeout   never answers in time (sleeps `hang_s`)
    safety    Gemini: finishReason SAFETY, no text / OpenAI: finish_reason content_filter
    blocked   Gemini: promptFeedback.blockReason SAFETY, no candidates
    empty     a 200 with an empty answer
    malformed a 200 whose body is not JSON
    badshape  a 200 with JSON of the wrong shape

A judge prompt (qaloop.quality.llm_judge: it starts "You grade answers") gets a JSON verdict:
pass (score 8) unless the answer is shorter than 3 words or repeats the question (fail, "echo").
Directives for the judge (anywhere in the prompt, e.g. inside the graded answer):

    judgepass judgefail       that verdict, as JSON
    judgefenced               a pass verdict inside a ```json fence
    judgemalformed            prose, not JSON
    judgerefuse               a refusal ("I'm sorry, I can't help with that.")
    judgebadshape             JSON without score/verdict
    judgeinconsistent         {"verdict": "pass", "score": 2}
    judgeobey                 a model that obeys an injection: the bare word PASS

Without a directive it answers after `latency_s`. Every request is counted at arrival; with
`limit` set, one that makes the last `window_s` seconds hold more than `limit` requests gets a
429 and counts as a client-caused 429 (the client's rate limiter failed).

Run in a thread (`FakeLLMServer(...).start()`) or as a process:
`python tests/fakes/llm_server.py --latency-s 1 --limit 600 --window-s 60` prints its base URL;
GET /_stats returns the counters, POST /_reset clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

try:  # as a module of the tests package, or run as a script
    from tests.fakes.llm_batch import BatchEndpoints
except ImportError:  # pragma: no cover
    from llm_batch import BatchEndpoints  # type: ignore[no-redef]

DIRECTIVE = re.compile(r"\[\[fake:([a-z0-9]+)(?:\*(\d+))?\]\]")


@dataclass
class FakeConfig:
    latency_s: float = 0.0
    limit: int | None = None  # requests per window; more -> 429 (client-caused)
    window_s: float = 60.0
    hang_s: float = 30.0  # how long a "timeout" request sleeps
    retry_delay_s: int = 2
    api_key: str | None = None  # when set, requests must carry it
    # a directive for every request without one of its own: two servers then stand for two
    # deployments that behave differently on the same prompt (fallback tests)
    force: str | None = None
    batch_polls: int = 1  # batch status reads that say "running" before the batch ends
    batch_outcome: str = "complete"  # or "fail" (the whole job), "expire" (tests/fakes/llm_batch)


@dataclass
class FakeStats:
    arrivals: list[float] = field(default_factory=list)  # monotonic arrival times
    by_outcome: Counter[str] = field(default_factory=Counter)
    client_429s: int = 0
    keys_seen: set[str] = field(default_factory=set)
    seen: Counter[str] = field(default_factory=Counter)  # calls per prompt

    def max_in_window(self, window_s: float) -> int:
        """The most requests that arrived within any window of `window_s` seconds."""
        best, lo = 0, 0
        times = sorted(self.arrivals)
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def to_dict(self, window_s: float) -> dict[str, Any]:
        return {
            "requests": len(self.arrivals),
            "by_outcome": dict(self.by_outcome),
            "client_429s": self.client_429s,
            "max_in_window": self.max_in_window(window_s),
            "window_s": window_s,
            "first_arrival": min(self.arrivals, default=None),
            "last_arrival": max(self.arrivals, default=None),
        }


_GRADED = re.compile(r"<<<ANSWER (\w+)\n(.*)\nANSWER \1>>>", re.DOTALL)


def _judge_reply(prompt: str, kind: str | None) -> str:
    """What the fake says to a grading prompt (see the module docstring)."""

    def verdict(passed: bool, reason: str) -> str:
        return json.dumps(
            {
                "score": 8 if passed else 2,
                "verdict": "pass" if passed else "fail",
                "reason": reason,
                "explanation": "fake grade",
            }
        )

    match kind:
        case "judgepass":
            return verdict(True, "ok")
        case "judgefail":
            return verdict(False, "off_topic")
        case "judgefenced":
            return "```json\n" + verdict(True, "ok") + "\n```"
        case "judgemalformed":
            return "The answer looks fine to me, I would say it passes."
        case "judgerefuse":
            return "I'm sorry, I can't help with that."
        case "judgebadshape":
            return json.dumps({"grade": "A"})
        case "judgeinconsistent":
            return json.dumps({"score": 2, "verdict": "pass", "reason": "ok"})
        case "judgeobey":
            return "PASS"
    question = prompt.split("Question:\n", 1)[-1].split("\n", 1)[0].strip()
    m = _GRADED.search(prompt)
    answer = m.group(2).strip() if m else ""
    if answer.lower() == question.lower():
        return verdict(False, "echo")
    return verdict(len(answer.split()) >= 3, "ok" if len(answer.split()) >= 3 else "non_answer")


def _google_error(code: int, status: str, message: str, details: list[Any] | None = None) -> Any:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=code)


def _quota_failure(quota_id: str, metric: str, value: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash-lite"},
                "quotaValue": value,
            }
        ],
    }


def _retry_info(seconds: int) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}


def _openai_error(
    code: int,
    message: str,
    type_: str,
    err_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": None, "code": err_code}},
        status_code=code,
        headers=headers,
    )


class FakeLLMServer:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.stats = FakeStats()
        self._lock = threading.Lock()
        self.batch = BatchEndpoints(self)  # the batch protocols (tests/fakes/llm_batch.py)
        self.app = Starlette(
            routes=[
                Route("/v1/files", self.batch.upload, methods=["POST"]),
                Route("/v1/files/{file_id}/content", self.batch.file_content, methods=["GET"]),
                Route("/v1/batches", self.batch.create_openai, methods=["POST"]),
                Route("/v1/batches/{batch_id}", self.batch.get_openai, methods=["GET"]),
                Route("/v1beta/batches/{batch_id}", self.batch.get_gemini, methods=["GET"]),
                Route("/v1beta/models/{model_action:path}", self._gemini, methods=["POST"]),
                Route("/v1/models/{model_action:path}", self._gemini, methods=["POST"]),
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/_stats", self._stats, methods=["GET"]),
                Route("/_reset", self._reset, methods=["POST"]),
            ]
        )
        self._stopping = threading.Event()  # ends "timeout" requests early at shutdown
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _bind(self, port: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        return sock

    def _uvicorn(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            log_level="error",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
            limit_concurrency=2000,
            backlog=2048,
        )
        return uvicorn.Server(config)

    def start(self) -> FakeLLMServer:
        sock = self._bind()
        self._server = self._uvicorn()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-llm"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake LLM server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.stats = FakeStats()

    # ------------------------------------------------------------------ shared logic

    def _arrive(self, key: str | None) -> bool:
        """Count the request; False when it goes over the configured limit."""
        now = time.monotonic()
        with self._lock:
            self.stats.arrivals.append(now)
            if key is not None:
                self.stats.keys_seen.add(key)
            limit = self.config.limit
            if limit is None:
                return True
            window_start = now - self.config.window_s
            recent = sum(1 for t in self.stats.arrivals[-(limit + 1) :] if t > window_start)
            if recent > limit:
                self.stats.client_429s += 1
                return False
            return True

    def _directive(self, prompt: str) -> str | None:
        match = DIRECTIVE.search(prompt)
        with self._lock:
            self.stats.seen[prompt] += 1
            calls = self.stats.seen[prompt]
        if match is None:
            return self.config.force
        kind, times = match.group(1), match.group(2)
        if times is not None and calls > int(times):
            return None
        return kind

    async def _hang(self) -> None:
        deadline = time.monotonic() + self.config.hang_s
        while time.monotonic() < deadline and not self._stopping.is_set():
            await asyncio.sleep(0.05)

    def _outcome(self, name: str) -> None:
        with self._lock:
            self.stats.by_outcome[name] += 1

    @staticmethod
    def _answer(prompt: str, kind: str | None = None) -> str:
        if prompt.startswith("You grade answers"):
            return _judge_reply(prompt, kind)
        question = prompt.split("Question:", 1)[-1].split("Answer:", 1)[0].strip()
        # More than the question's own words: the gate fails a bare echo of the question.
        return (
            f"A concise answer to: {question} The fake provider server wrote this reply, "
            "naming concrete facts about the subject in plain words."
        )

    # ------------------------------------------------------------------ gemini

    async def _gemini(self, request: Request) -> Response:
        action = request.path_params["model_action"]
        if action.endswith(":batchGenerateContent"):
            return await self.batch.create_gemini(request, action.split(":", 1)[0])
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not self._arrive(key):
            self._outcome("429-limit")
            return _google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (fake rate limit).",
                [
                    _quota_failure(
                        "GenerateRequestsPerMinutePerProjectPerModel", "requests", "600"
                    ),
                    _retry_info(self.config.retry_delay_s),
                ],
            )
        if self.config.api_key is not None and key != self.config.api_key:
            self._outcome("400-key")
            return _google_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                    }
                ],
            )
        try:
            body = await request.json()
            prompt = "".join(
                p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", [])
            )
        except Exception:
            self._outcome("400-body")
            return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        model = request.path_params["model_action"].split(":", 1)[0]
        kind = self._directive(prompt)
        self._outcome(kind or "ok")
        if kind == "timeout":
            await self._hang()
        elif self.config.latency_s > 0:
            await asyncio.sleep(self.config.latency_s)
        usage = {"promptTokenCount": len(prompt.split()), "totalTokenCount": len(prompt.split())}
        match kind:
            case "429m":
                return _google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your current quota, please check your plan and billing details."
                    " Quota exceeded for metric: generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests, limit: 15, model: " + model,
                    [
                        _quota_failure(
                            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "generate_content_free_tier_requests",
                            "15",
                        ),
                        {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                        _retry_info(self.config.retry_delay_s),
                    ],
                )
            case "429":
                return _google_error(
                    429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."
                )
            case "429day":
                return _google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your current quota. Quota exceeded for metric: "
                    "generativelanguage.googleapis.com/generate_content_free_tier_requests, "
                    "limit: 1000, model: " + model,
                    [
                        _quota_failure(
                            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                            "generate_content_free_tier_requests",
                            "1000",
                        ),
                        _retry_info(31),
                    ],
                )
            case "429zero":
                return _google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your current quota. Quota exceeded for metric: "
                    "generativelanguage.googleapis.com/generate_content_free_tier_input_token"
                    "_count, limit: 0, model: " + model,
                    [
                        _quota_failure(
                            "GenerateContentInputTokensPerModelPerMinute-FreeTier",
                            "generate_content_free_tier_input_token_count",
                            "0",
                        ),
                        _retry_info(9),
                    ],
                )
            case "503":
                return _google_error(
                    503, "UNAVAILABLE", "The model is overloaded. Please try again later."
                )
            case "500":
                return _google_error(500, "INTERNAL", "An internal error has occurred.")
            case "504":
                return _google_error(
                    504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
                )
            case "400":
                return _google_error(
                    400, "INVALID_ARGUMENT", "Request contains an invalid argument."
                )
            case "403":
                return _google_error(403, "PERMISSION_DENIED", "Permission denied.")
            case "404":
                return _google_error(404, "NOT_FOUND", f"models/{model} is not found.")
            case "safety":
                return JSONResponse(
                    {
                        "candidates": [
                            {
                                "finishReason": "SAFETY",
                                "index": 0,
                                "safetyRatings": [
                                    {
                                        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                                        "probability": "HIGH",
                                        "blocked": True,
                                    }
                                ],
                            }
                        ],
                        "usageMetadata": usage,
                        "modelVersion": model,
                    }
                )
            case "blocked":
                return JSONResponse(
                    {
                        "promptFeedback": {"blockReason": "SAFETY"},
                        "usageMetadata": usage,
                        "modelVersion": model,
                    }
                )
            case "empty":
                return JSONResponse(
                    {
                        "candidates": [
                            {
                                "content": {"role": "model", "parts": []},
                                "finishReason": "STOP",
                                "index": 0,
                            }
                        ],
                        "usageMetadata": usage,
                        "modelVersion": model,
                    }
                )
            case "malformed":
                return Response(b'{"candidates": [{"content": ', media_type="application/json")
            case "badshape":
                return JSONResponse(["not", "a", "GenerateContentResponse"])
        answer = self._answer(prompt, kind)
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": answer}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": len(prompt.split()),
                    "candidatesTokenCount": len(answer.split()),
                    "totalTokenCount": len(prompt.split()) + len(answer.split()),
                },
                "modelVersion": model,
                "responseId": "fake",
            }
        )

    # ------------------------------------------------------------------ openai

    async def _openai(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        if not self._arrive(key):
            self._outcome("429-limit")
            return _openai_error(
                429,
                "Rate limit reached for requests (fake rate limit).",
                "requests",
                "rate_limit_exceeded",
                {"retry-after": str(self.config.retry_delay_s)},
            )
        if self.config.api_key is not None and key != self.config.api_key:
            self._outcome("401-key")
            return _openai_error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        try:
            body = await request.json()
            prompt = "".join(str(m.get("content", "")) for m in body["messages"])
            model = str(body.get("model", ""))
        except Exception:
            self._outcome("400-body")
            return _openai_error(400, "We could not parse the JSON body.", "invalid_request_error")
        kind = self._directive(prompt)
        self._outcome(kind or "ok")
        if kind == "timeout":
            await self._hang()
        elif self.config.latency_s > 0:
            await asyncio.sleep(self.config.latency_s)
        match kind:
            case "429m":
                return _openai_error(
                    429,
                    "Rate limit reached for requests per min (RPM).",
                    "requests",
                    "rate_limit_exceeded",
                    {"retry-after": str(self.config.retry_delay_s)},
                )
            case "429":
                return _openai_error(429, "Rate limit reached.", "requests", "rate_limit_exceeded")
            case "429day" | "429zero":
                return _openai_error(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota",
                    "insufficient_quota",
                )
            case "503":
                return _openai_error(503, "The engine is currently overloaded.", "server_error")
            case "500":
                return _openai_error(500, "The server had an error.", "server_error")
            case "504":
                return Response(
                    b"<html>504 Gateway Time-out</html>", status_code=504, media_type="text/html"
                )
            case "400":
                return _openai_error(400, "Invalid request.", "invalid_request_error")
            case "403":
                return _openai_error(403, "Forbidden.", "invalid_request_error")
            case "404":
                return _openai_error(
                    404,
                    f"The model `{model}` does not exist.",
                    "invalid_request_error",
                    "model_not_found",
                )
            case "safety":
                return JSONResponse(self._completion(model, "", "content_filter", prompt))
            case "blocked" | "empty":
                return JSONResponse(self._completion(model, "", "stop", prompt))
            case "malformed":
                return Response(b'{"choices": [', media_type="application/json")
            case "badshape":
                return JSONResponse({"object": "chat.completion", "choices": []})
        return JSONResponse(self._completion(model, self._answer(prompt, kind), "stop", prompt))

    @staticmethod
    def _completion(model: str, text: str, finish: str, prompt: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(text.split()),
                "total_tokens": len(prompt.split()) + len(text.split()),
            },
        }

    # ------------------------------------------------------------------ control

    async def _stats(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse(self.stats.to_dict(self.config.window_s))

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--window-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    server = FakeLLMServer(FakeConfig(args.latency_s, args.limit, args.window_s))
    sock = server._bind(args.port)
    print(server.base_url, flush=True)
    sys.stdout.flush()
    server._uvicorn().run(sockets=[sock])


if __name__ == "__main__":
    main()
