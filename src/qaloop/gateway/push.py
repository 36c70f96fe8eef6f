"""Completion push on the gateway, instead of polling:

- `GET /v1/questions/{id}/events`: Server-Sent Events. One `state` event with the question's
  public body now, then one each time its status changes, until it is final (then the stream
  ends) or `QALOOP_SSE_MAX_S` passes (a last `timeout` event). A comment line every 15 s keeps
  proxies from closing an idle stream. Embedded, a final state is pushed the moment the store
  writes it (the same in-process notification as `?wait=`); distributed, the gateway re-reads
  storage with a backoff of 50 ms doubling to 0.5 s (it does not see the store's finals).
- `callback_url` in `POST /v1/questions`: the subscription is recorded (in the storage
  database, qaloop.services.webhooks) before the question is accepted, so it is never lost;
  the dispatcher next to the store delivers it once the question is final — at once when it
  already is (a cache hit gets its answer in the response and a webhook too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.responses import Response, StreamingResponse

from qaloop.core.ids import question_id
from qaloop.gateway.service import QuestionService
from qaloop.services.webhooks import CallbackRefused, WebhookOutbox, check_callback_url
from qaloop.settings import Settings

FINAL = ("validated", "failed")
KEEPALIVE_S = 15.0
POLL_S = 0.5


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


async def state_stream(
    service: QuestionService,
    qid: str,
    first: dict[str, Any],
    max_s: float,
    *,
    poll_s: float = POLL_S,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """`state` events until final. Between reads of the status it waits for this process's
    store to signal the final state (embedded: at once), at most 50 ms doubling to `poll_s`
    (reset by a change): about two reads a second per idle stream."""
    started = time.monotonic()
    n = 1
    last = first["status"]
    quiet_since = started
    delay = 0.05
    yield sse("state", first, n)
    while last not in FINAL:
        remaining = max_s - (time.monotonic() - started)
        if remaining <= 0:
            yield sse("timeout", {"id": qid, "status": last, "after_s": max_s})
            return
        await service.final_signal(qid, min(delay, remaining))
        body = await service.status(qid)
        if body is None:  # cannot happen (questions are never deleted); end cleanly
            return
        if body["status"] != last:
            n += 1
            last = body["status"]
            quiet_since = time.monotonic()
            delay = 0.05
            yield sse("state", body, n)
        else:
            delay = min(delay * 2, poll_s)
            if time.monotonic() - quiet_since >= keepalive_s:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"


class Callbacks:
    """Records callback_url subscriptions (the outbox opens on first use)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._outbox: WebhookOutbox | None = None
        self._lock = asyncio.Lock()

    def check(self, data: dict[str, Any]) -> str | None:
        """The callback URL of a request body (or None); CallbackRefused when refused."""
        value = data.get("callback_url")
        if value is None:
            return None
        return check_callback_url(value, self.settings)

    async def subscribe(self, question: str, url: str) -> None:
        async with self._lock:
            if self._outbox is None:
                self._outbox = await asyncio.to_thread(WebhookOutbox, self.settings.db)
        await asyncio.to_thread(self._outbox.subscribe, question_id(question), url, self.clock())

    def close(self) -> None:
        if self._outbox is not None:
            self._outbox.close()


def install(
    app: FastAPI,
    service: QuestionService,
    settings: Settings,
    not_found: Callable[[str], Response],
) -> Callbacks:
    """Add the events route; return the callback recorder the ask handler uses."""

    @app.get("/v1/questions/{question_id}/events")
    async def events(question_id: str) -> Response:
        first = await service.status(question_id) if len(question_id) == 32 else None
        if first is None:
            return not_found(question_id)
        return StreamingResponse(
            state_stream(service, question_id, first, settings.sse_max_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return Callbacks(settings)


__all__ = ["CallbackRefused", "Callbacks", "install", "sse", "state_stream"]
