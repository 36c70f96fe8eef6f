"""The gateway's observability routes: `/metrics` (Prometheus), `/v1/questions/{id}/trace`,
the live dashboard (`/dashboard`, its data at `/v1/dashboard-data`, its static files).

The page is plain HTML + JS with uPlot (MIT, vendored in gateway/static: no build step, no
network at run time); it polls `/v1/dashboard-data` every 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
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


def _static(name: str) -> bytes:
    return resources.files("qaloop.gateway").joinpath("static", name).read_bytes()


def install(
    app: FastAPI,
    service: QuestionService,
    sampler: DashboardSampler,
    error: Callable[[int, str, str], Response],
    json_response: Callable[[int, Any], Response],
) -> None:
    metrics = service.metrics
    page = _static("dashboard.html")
    files = {name: (_static(name), kind) for name, kind in STATIC_FILES.items()}

    @app.get("/metrics", include_in_schema=False)
    async def get_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

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
        return json_response(200, await sampler.data())

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


def with_sampler(sampler: DashboardSampler, inner: Lifespan | None) -> Lifespan:
    """The app's lifespan plus the dashboard's one-second sampling task."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Inside the app's own lifespan: sampling starts after the pipeline and stops before it.
        async with inner(app) if inner is not None else contextlib.nullcontext():
            stop = asyncio.Event()
            task = asyncio.create_task(sampler.run(stop), name="dashboard-sampler")
            try:
                yield
            finally:
                stop.set()
                await task

    return lifespan
