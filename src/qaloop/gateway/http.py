"""The HTTP adapter of the gateway (FastAPI). HTTP status codes live here and nowhere else.

Handlers read and validate the body themselves (orjson, explicit checks) instead of through a
pydantic model: the cache-hit path is the hot path, and every bad input must get a 4xx with a
message that names the problem — never a 500.

Limits (Settings): body <= max_body_bytes (413), question <= max_question_chars and reference
<= max_reference_chars (422), ?wait <= max_wait_s (422; documented in the OpenAPI schema);
request head size and read times are bounded in the HTTP protocol itself
(qaloop.gateway.server: 431, 408).

Around every route (GatewayApp): API keys when auth is on (qaloop.gateway.auth: 401/403/429),
and a count of every response by status (`qaloop_http_responses_total`), 5xx included.
Admission control answers 429 with Retry-After for new questions (qaloop.gateway.admission).
GET routes answer HEAD too; a wrong method gets 405 with `Allow`; no trailing-slash redirects
(they echoed the Host header); ids must be exactly 32 hex digits (no trailing newline).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client.core import CounterMetricFamily, Metric
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from qaloop.core.model import LANES
from qaloop.gateway import admin, dashboard, openapi, push
from qaloop.gateway.admission import Rejected
from qaloop.gateway.auth import Authenticator, Denied
from qaloop.gateway.bodies import BadRequest, error_response, json_response, read_json_body
from qaloop.gateway.dashboard import Lifespan
from qaloop.gateway.service import QuestionService
from qaloop.observability.dashboard import DashboardSampler
from qaloop.observability.remote import RemoteMetrics, parse_targets
from qaloop.observability.server import serve_metrics
from qaloop.settings import Settings

log = logging.getLogger(__name__)

_ID = re.compile(r"[0-9a-f]{32}")  # always with fullmatch: `$` would accept a trailing \n

Readiness = Callable[[], Awaitable[dict[str, str]]]


def valid_id(question_id: str) -> bool:
    return _ID.fullmatch(question_id) is not None


def has_visible_text(text: str) -> bool:
    """False for text made only of whitespace, control, format (zero-width) or unassigned
    characters: there is no question in it to send to the LLM."""
    if text.isprintable():  # the common case, in C: only ASCII space can be invisible
        return bool(text.strip())
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


QUESTION_BODY_SCHEMA = {
    "type": "object",
    "required": ["question"],
    "properties": {
        "question": {"type": "string", "minLength": 1},
        "reference_answer": {"type": ["string", "null"]},
        "callback_url": {
            "type": ["string", "null"],
            "description": "POSTed (HMAC-signed) once the question is final; loopback hosts "
            "only unless QALOOP_WEBHOOK_ALLOW_HOSTS lists the host",
        },
        # docs/spend.md: the batch lane, the paraphrase cache
        "priority": {"type": "string", "enum": ["interactive", "batch"]},
        "paraphrase": {"type": "boolean", "default": True},
        "retry_failed": {
            "type": "boolean",
            "default": False,
            "description": "ask a question that failed again (a new run; the stored "
            "reference is kept)",
        },
    },
}


def retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def parse_question(data: dict[str, Any], settings: Settings) -> tuple[str, str | None, bool]:
    if "question" not in data:
        raise BadRequest(422, "missing_field", "field 'question' is required")
    question = data["question"]
    if not isinstance(question, str):
        raise BadRequest(
            422,
            "invalid_field",
            f"field 'question' must be a string, got {type(question).__name__}",
        )
    if not has_visible_text(question):
        raise BadRequest(
            422,
            "invalid_field",
            "field 'question' must not be empty (whitespace, control and zero-width "
            "characters don't count)",
        )
    if len(question) > settings.max_question_chars:
        raise BadRequest(
            422,
            "question_too_long",
            f"field 'question' has {len(question)} characters; the limit is "
            f"{settings.max_question_chars}",
        )
    reference = data.get("reference_answer")
    if reference is not None:
        if not isinstance(reference, str):
            raise BadRequest(
                422,
                "invalid_field",
                "field 'reference_answer' must be a string or null, "
                f"got {type(reference).__name__}",
            )
        if len(reference) > settings.max_reference_chars:
            raise BadRequest(
                422,
                "reference_too_long",
                f"field 'reference_answer' has {len(reference)} characters; the limit is "
                f"{settings.max_reference_chars}",
            )
    retry = data.get("retry_failed", False)
    if not isinstance(retry, bool):
        raise BadRequest(
            422,
            "invalid_field",
            f"field 'retry_failed' must be true or false, got {type(retry).__name__}",
        )
    return question, reference, retry


def parse_priority(data: dict[str, Any]) -> str:
    """`"priority": "interactive"` (default) or `"batch"`: may wait for a batch job."""
    priority = data.get("priority", "interactive")
    if priority not in LANES:
        raise BadRequest(
            422, "invalid_field", f"field 'priority' must be one of {list(LANES)}, got {priority!r}"
        )
    return str(priority)


def parse_paraphrase(data: dict[str, Any]) -> bool:
    """`"paraphrase": false` opts out of the paraphrase cache for this request."""
    value = data.get("paraphrase", True)
    if not isinstance(value, bool):
        raise BadRequest(422, "invalid_field", "field 'paraphrase' must be true or false")
    return value


def parse_wait(raw: str | None, settings: Settings) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise BadRequest(
            422, "invalid_query", f"'wait' must be a number of seconds, got {raw!r}"
        ) from None
    if not 0 <= wait <= settings.max_wait_s or wait != wait:
        raise BadRequest(
            422,
            "invalid_query",
            f"'wait' must be between 0 and {settings.max_wait_s:g} seconds (QALOOP_MAX_WAIT_S); "
            "for longer, stream GET /v1/questions/{id}/events",
        )
    return wait


def bad_request_response(exc: BadRequest) -> Response:
    headers = {"Connection": "close"} if exc.status == 413 else None
    return error_response(exc.status, exc.code, exc.message, headers)


def rejected_response(exc: Rejected) -> Response:
    r = exc.rejection
    return error_response(429, r.reason, r.message, retry_after(r.retry_after_s))


def denied_response(denied: Denied) -> Response:
    headers = retry_after(denied.retry_after_s)
    if denied.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="qaloop"'
    return error_response(denied.status, denied.code, denied.message, headers)


class HttpStats:
    """Every response by status code, read at scrape time (`qaloop_http_responses_total`):
    a plain dict increment per request. 5xx from any route shows here."""

    def __init__(self) -> None:
        self.responses: Counter[int] = Counter()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "qaloop_http_responses", "HTTP responses by status code", labels=["status"]
        )
        for status, n in sorted(self.responses.items()):
            family.add_metric([str(status)], n)
        yield family


def unexpected_error_response() -> Response:
    """Not the client's fault: say so without leaking internals; the log has the trace.
    Call from inside the `except` block, so the trace is logged."""
    log.exception("unexpected error while serving a request")
    return error_response(503, "unavailable", "the service could not handle the request")


class GatewayApp(FastAPI):
    """FastAPI, plus a fast lane for the hot path: `POST /v1/questions` goes straight to its
    handler, past the middleware stack and router. Measured: FastAPI's stack (router,
    exit-stack middleware, telemetry check) cost more CPU per request than the whole cache
    hit. Errors are mapped exactly as the exception handlers map them for other routes.
    API keys are checked here, before either lane, and every response is counted."""

    hot_handler: Callable[[Request], Awaitable[Response]] | None = None
    auth: Authenticator | None = None
    http_stats: HttpStats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        responses = self.http_stats.responses
        if self.auth is not None:
            verdict = self.auth.check(scope["path"], scope["headers"])
            if isinstance(verdict, Denied):
                responses[verdict.status] += 1
                await denied_response(verdict)(scope, receive, send)
                return
            if verdict is not None:
                scope["qaloop.caller"] = verdict.name
        if (
            self.hot_handler is not None
            and scope["path"] == "/v1/questions"
            and scope["method"] == "POST"
        ):
            try:
                response = await self.hot_handler(Request(scope, receive))
            except BadRequest as exc:
                response = bad_request_response(exc)
            except Rejected as exc:
                response = rejected_response(exc)
            except ClientDisconnect:
                # The client left mid-body: nobody to answer, nothing wrong here.
                log.debug("client disconnected before sending its whole body")
                responses[499] += 1
                return
            except Exception:
                response = unexpected_error_response()
            responses[response.status_code] += 1
            await response(scope, receive, send)
            return
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                responses[message["status"]] += 1
            await send(message)

        try:
            await super().__call__(scope, receive, counting_send)
        except Exception:
            # Starlette re-raises after its 503 handler has answered (and logged) it.
            if not started:
                raise


def create_app(
    service: QuestionService,
    settings: Settings,
    stats: Callable[[], dict[str, Any]] | None = None,
    *,
    auth: Authenticator | None = None,
    ready: Readiness | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    targets = parse_targets(settings.metrics_targets)
    sampler = DashboardSampler(
        service.metrics,
        service.repo.state_counts,
        mode="embedded" if service.board is not None else "distributed",
        remote=RemoteMetrics(targets) if targets else None,
    )
    port = settings.gateway_metrics_port
    lifespan = dashboard.with_sampler(
        sampler,
        fastapi_kwargs.get("lifespan"),
        None
        if not port
        else functools.partial(serve_metrics, service.metrics, settings.host, port),
    )
    if auth is not None:
        lifespan = _closing(auth, lifespan)
    fastapi_kwargs["lifespan"] = lifespan
    app = GatewayApp(
        title="qaloop",
        version="0.1.0",
        docs_url=None,  # FastAPI's pages load from a CDN: see qaloop.gateway.openapi
        redoc_url=None,
        redirect_slashes=False,  # the redirect echoed the Host header
        **fastapi_kwargs,
    )
    app.auth = auth
    app.state.closing = service.closing  # set by qaloop.gateway.server when a stop begins
    app.http_stats = HttpStats()
    service.metrics.registry.register(app.http_stats)  # type: ignore[arg-type]

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> Response:
        return bad_request_response(exc)

    @app.exception_handler(Rejected)
    async def _rejected(_: Request, exc: Rejected) -> Response:
        return rejected_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # 405 carries `Allow` (set by the router): keep the exception's headers.
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(422, "invalid_request", str(exc.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        return unexpected_error_response()

    seconds, rejected = service.metrics.request_seconds, service.metrics.rejected
    # GET /v1/questions/{id}/events (SSE) and callback_url webhooks (qaloop.gateway.push)
    callbacks = push.install(
        app,
        service,
        settings,
        lambda qid: error_response(404, "not_found", f"no question with id {qid!r}"),
    )

    async def ask(request: Request) -> Response:
        started = time.perf_counter()
        try:
            try:
                data = await read_json_body(request, settings.max_body_bytes)
                question, reference, retry = parse_question(data, settings)
                lane = parse_priority(data)
                paraphrase = parse_paraphrase(data)
                callback = callbacks.check(data) if "callback_url" in data else None
            except push.CallbackRefused as exc:
                rejected.labels(exc.code).inc()
                raise BadRequest(422, exc.code, str(exc)) from None
            except BadRequest as exc:
                rejected.labels(exc.code).inc()
                raise
            if callback is not None:  # recorded before the question is accepted: never lost
                await callbacks.subscribe(question, callback)
            status, body = await service.ask(
                question,
                reference,
                lane=lane,
                paraphrase=paraphrase,
                caller=request.scope.get("qaloop.caller"),
                retry_failed=retry,
            )
            return json_response(status, body)
        finally:
            # Errors too: a slow 503 must show in the latency histogram.
            seconds.observe(time.perf_counter() - started)  # a plain bucket array: ~0.3 us

    app.hot_handler = ask
    # Also an ordinary route: other methods on the path get a 405 from the router.
    app.router.add_route("/v1/questions", ask, methods=["POST"])
    openapi.install(app, QUESTION_BODY_SCHEMA)

    @app.get(
        "/v1/questions/{question_id}",
        summary="A question's state and answer",
        description=f"`?wait=S` long-polls up to S seconds for a final state (validated or "
        f"failed); S is capped at QALOOP_MAX_WAIT_S ({settings.max_wait_s:g} s here): a longer "
        "wait is a 422. For no cap, stream GET /v1/questions/{id}/events.",
        openapi_extra={
            "parameters": [
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": settings.max_wait_s},
                    "description": f"seconds to wait for a final state, at most "
                    f"{settings.max_wait_s:g} (QALOOP_MAX_WAIT_S)",
                }
            ]
        },
    )
    async def get_question(request: Request, question_id: str) -> Response:
        if not valid_id(question_id):
            raise BadRequest(
                404, "not_found", f"no question with id {question_id!r} (ids are 32 hex digits)"
            )
        wait = parse_wait(request.query_params.get("wait"), settings)
        body = await (service.wait(question_id, wait) if wait > 0 else service.status(question_id))
        if body is None:
            raise BadRequest(404, "not_found", f"no question with id {question_id!r}")
        return json_response(200, body)

    # /v1/admin/...: reset a failed question, list and replay dead letters
    admin.install(
        app,
        service,
        error_response,
        json_response,
        valid_id=valid_id,
        max_body_bytes=settings.max_body_bytes,
    )

    @app.get("/v1/stats")
    async def get_stats() -> Response:
        return json_response(200, stats() if stats is not None else service.stats())

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response(200, {"status": "ok"})

    check_ready = ready or storage_ready(service)

    @app.get("/readyz")
    async def readyz() -> Response:
        parts = await check_ready()
        ok = all(v == "ok" for v in parts.values())
        return json_response(200 if ok else 503, {"status": "ok" if ok else "unavailable", **parts})

    # /metrics, /v1/questions/{id}/trace, /dashboard and its data (qaloop.gateway.dashboard)
    dashboard.install(
        app, service, sampler, error_response, json_response, settings.metrics_cache_s, port
    )

    # HEAD wherever GET is served (Starlette's own routes do this; FastAPI's don't).
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
            route.methods.add("HEAD")
    return app


def _closing(auth: Authenticator, inner: Lifespan) -> Lifespan:
    """The app's lifespan, then the authenticator's shared quota connection closed."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with inner(app):
                yield
        finally:
            await auth.aclose()

    return lifespan


def storage_ready(service: QuestionService, timeout_s: float = 2.0) -> Readiness:
    """Readiness of storage: an indexed read answers within `timeout_s`."""

    async def check() -> dict[str, str]:
        try:
            await asyncio.wait_for(asyncio.to_thread(service.repo.get, "0" * 32), timeout_s)
        except Exception as exc:  # any failure means "not ready", with its reason
            return {"storage": f"unavailable: {type(exc).__name__}: {exc}"[:200]}
        return {"storage": "ok"}

    return check
