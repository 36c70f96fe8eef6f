"""The gateway's observability routes: `/metrics` (Prometheus), `/v1/questions/{id}/trace`,
the live dashboard (`/dashboard`, its data at `/v1/dashboard-data`, its static files).

The page is plain HTML + JS with uPlot (MIT, vendored in gateway/static: no build step, no
network at run time); it polls `/v1/dashboard-data` every 2 s.

`/metrics` and `/v1/dashboard-data` are built at most once per `metrics_cache_s` (1 s) and the
bytes reused:
8 clients polling them in a loop pushed a normal POST's p50 from 8 ms to ~400 ms, because each
poll rebuilt the exposition (~20 KB of text) on the event loop. The data is sampled once a
second anyway; Prometheus scrapes every 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from qaloop.gateway.service import QuestionService
from qaloop.observability.dashboard import DashboardSampler
from qaloop.observability.metrics import CONTENT_TYPE_LATEST
from qaloop.observability.trace import build_trace

_ID = re.compile(r"[0-9a-f]{32}")  # with fullmatch: `$` accepts a trailing newline

STATIC_FILES = {
    "dashboard.js": "application/javascript; charset=utf-8",
    "uPlot.iife.min.js": "application/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

MEMO_S = 1.0


class _Memo:
    """The last bytes built, reused for `ttl_s`; concurrent requests share one build."""

    def __init__(self, build: Callable[[], Awaitable[bytes]], ttl_s: float = MEMO_S) -> None:
        self.build = build
        self.ttl_s = ttl_s
        self._value = b""
        self._at = -1e18
        self._lock = asyncio.Lock()

    async def get(self) -> bytes:
        if time.monotonic() - self._at < self.ttl_s:
            return self._value
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._value = await self.build()
                self._at = time.monotonic()
        return self._value


def _static(name: str) -> bytes:
    return resources.files("qaloop.gateway").joinpath("static", name).read_bytes()


def install(
    app: FastAPI,
    service: QuestionService,
    sampler: DashboardSampler,
    error: Callable[[int, str, str], Response],
    json_response: Callable[[int, Any], Response],
    cache_s: float = MEMO_S,
    metrics_port: int = 0,
) -> None:
    metrics = service.metrics
    page = _static("dashboard.html")
    files = {name: (_static(name), kind) for name, kind in STATIC_FILES.items()}

    async def build_exposition() -> bytes:
        return metrics.exposition()

    async def build_data() -> bytes:
        return bytes(json_response(200, await sampler.data()).body)

    exposition, data = _Memo(build_exposition, cache_s), _Memo(build_data, cache_s)

    @app.get("/metrics", include_in_schema=False)
    async def get_metrics() -> Response:
        if metrics_port:  # QALOOP_GATEWAY_METRICS_PORT: not on the API port
            return error(
                404,
                "not_found",
                f"metrics are served on port {metrics_port} (QALOOP_GATEWAY_METRICS_PORT)",
            )
        return Response(await exposition.get(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/questions/{question_id}/trace")
    async def get_trace(question_id: str) -> Response:
        """The question's full history: every attempt, error, score and topic, with times."""
        if not _ID.fullmatch(question_id):
            return error(404, "not_found", f"no question with id {question_id!r}")
        repo = service.repo
        record = await asyncio.to_thread(repo.get, question_id)
        if record is None:
            return error(404, "not_found", f"no question with id {question_id!r}")
        events = await asyncio.to_thread(repo.events, question_id)
        return json_response(200, build_trace(record, events, service.topics))

    @app.get("/v1/dashboard-data")
    async def get_dashboard_data() -> Response:
        return Response(await data.get(), media_type="application/json")

    @app.get("/dashboard", include_in_schema=False)
    async def get_dashboard() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/dashboard/static/{name}", include_in_schema=False)
    async def get_static(name: str, request: Request) -> Response:
        found = files.get(name)
        if found is None:
            return error(404, "not_found", f"no static file {name!r}")
        body, kind = found
        return Response(body, media_type=kind, headers={"Cache-Control": "max-age=3600"})


def with_sampler(
    sampler: DashboardSampler,
    inner: Lifespan | None,
    metrics_port: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None,
) -> Lifespan:
    """The app's lifespan plus the dashboard's one-second sampling task (and the metrics
    port's server, when the metrics are not on the API port)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Inside the app's own lifespan: sampling starts after the pipeline and stops before it.
        async with inner(app) if inner is not None else contextlib.nullcontext():
            stop = asyncio.Event()
            task = asyncio.create_task(sampler.run(stop), name="dashboard-sampler")
            port = None if metrics_port is None else asyncio.create_task(metrics_port(stop))
            try:
                yield
            finally:
                stop.set()
                await task
                if port is not None:
                    await port

    return lifespan
