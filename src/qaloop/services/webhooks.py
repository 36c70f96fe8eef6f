"""Completion webhooks: `POST /v1/questions {..., "callback_url": URL}` gets one signed POST
to URL when the question is final (validated or failed) — at once if it already is.

Where the final state is observed: the store persists every outcome, in both modes, so the
dispatcher runs next to a store — as a task of the embedded pipeline, and inside each
`qaloop store` process of the distributed mode (the gateway there is another process and never
sees a final). The gateway only records the subscription, before it accepts the question.

Durable and never blocking (an outbox in the storage database):
- `webhooks` holds one row per (question id, URL): attempts, next try, last HTTP status or
  error, delivered or given up. The questions table says when the question is final, so a
  subscription made after the question finished, or a store restarted mid-retry, is still
  delivered by the next sweep.
- The dispatcher sweeps due rows (woken at once by the store when a question turns final,
  else every `sweep_s`), claims each row for `timeout_s` with a conditional UPDATE (several
  store processes never send the same attempt twice), and POSTs in its own tasks with a
  timeout: a slow or dead receiver costs the pipeline nothing.
- A failure (non-2xx, timeout, refused) is retried with full-jitter exponential backoff up to
  `webhook_tries` attempts, then marked failed. Delivery is at least once (a crash after the
  POST and before the UPDATE re-sends): receivers dedupe on X-Qaloop-Delivery.

Signature (Stripe-style): `X-Qaloop-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" with QALOOP_WEBHOOK_SECRET>`; `verify_signature` is the receiver's side.

Targets: loopback addresses only (127.0.0.0/8, ::1, localhost) unless the host is listed in
QALOOP_WEBHOOK_ALLOW_HOSTS ("*" allows any): a gateway must not become a way to make
requests into its own network on a client's behalf.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from qaloop.core.model import Envelope
from qaloop.settings import Settings
from qaloop.storage.base import Repository

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Qaloop-Signature"
DELIVERY_HEADER = "X-Qaloop-Delivery"
MAX_URL_CHARS = 2000

_DDL = """
CREATE TABLE IF NOT EXISTS webhooks (
    question_id   TEXT NOT NULL,
    url           TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       DOUBLE PRECISION NOT NULL DEFAULT 0,
    claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_status   INTEGER,
    last_error    TEXT,
    delivered_at  DOUBLE PRECISION,
    PRIMARY KEY (question_id, url)
)
"""


class CallbackRefused(ValueError):
    """A callback_url the gateway will not call (the HTTP adapter answers 422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_callback_url(value: object, settings: Settings) -> str:
    """The URL to call, or CallbackRefused saying why not."""
    if not isinstance(value, str) or not value:
        raise CallbackRefused(
            "invalid_field", "field 'callback_url' must be a non-empty string (an http(s) URL)"
        )
    if len(value) > MAX_URL_CHARS:
        raise CallbackRefused(
            "invalid_field", f"field 'callback_url' is longer than {MAX_URL_CHARS} characters"
        )
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackRefused(
            "invalid_field",
            f"field 'callback_url' must be an http:// or https:// URL, got {value!r}",
        )
    allowed = {h.strip().lower() for h in settings.webhook_allow_hosts.split(",") if h.strip()}
    if not (_loopback(host) or "*" in allowed or host in allowed):
        raise CallbackRefused(
            "callback_not_allowed",
            f"callback host {host!r} is not allowed: only loopback addresses unless the server "
            "lists the host in QALOOP_WEBHOOK_ALLOW_HOSTS",
        )
    if settings.webhook_secret is None:
        raise CallbackRefused(
            "callbacks_disabled",
            "this server signs callbacks with QALOOP_WEBHOOK_SECRET, which is not set: "
            "callbacks are off (poll GET /v1/questions/{id}?wait= or stream /events instead)",
        )
    return value


def sign(secret: str, body: bytes, at: int) -> str:
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def verify_signature(
    secret: str, body: bytes, header: str, *, now: float | None = None, tolerance_s: float = 300
) -> bool:
    """A receiver's check: the HMAC matches and the timestamp is recent (no replays)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        at = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, at), header)


@dataclass(frozen=True, slots=True)
class Delivery:
    question_id: str
    url: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: float | None


class WebhookOutbox:
    """The webhooks table, next to the questions table of the storage URL (SQLite or
    PostgreSQL). Each call is one short transaction; all are safe from several threads."""

    def __init__(self, url: str) -> None:
        self._pg = url.startswith(("postgresql://", "postgres://"))
        self._lock = threading.Lock()
        if self._pg:
            import psycopg  # optional dependency (the postgres extra)

            self._conn: Any = psycopg.connect(url, autocommit=True)
        else:
            path = url.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:"
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            if self._pg:  # concurrent CREATE ... IF NOT EXISTS can collide in PostgreSQL
                self._conn.execute("SELECT pg_advisory_lock(hashtext('qaloop.webhooks'))")
                try:
                    self._conn.execute(_DDL)
                finally:
                    self._conn.execute("SELECT pg_advisory_unlock(hashtext('qaloop.webhooks'))")
            else:
                self._conn.execute(_DDL)

    def _run(self, query: str, args: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._conn.execute(query.replace("?", "%s") if self._pg else query, args)

    def subscribe(self, question_id: str, url: str, now: float) -> None:
        self._run(
            "INSERT INTO webhooks (question_id, url, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (question_id, url) DO NOTHING",
            (question_id, url, now),
        )

    def claim_due(self, now: float, hold_s: float, limit: int = 64) -> list[tuple[str, str, int]]:
        """Pending rows of final questions, due and unclaimed; each claimed for hold_s."""
        rows = self._run(
            "SELECT w.question_id, w.url, w.attempts FROM webhooks w "
            "JOIN questions q ON q.question_id = w.question_id "
            "WHERE w.state = 'pending' AND q.state IN ('validated', 'failed') "
            "AND w.next_at <= ? AND w.claimed_until <= ? ORDER BY w.next_at LIMIT ?",
            (now, now, limit),
        ).fetchall()
        claimed = []
        for qid, url, attempts in rows:
            cursor = self._run(
                "UPDATE webhooks SET claimed_until = ? WHERE question_id = ? AND url = ? "
                "AND state = 'pending' AND claimed_until <= ? AND attempts = ?",
                (now + hold_s, qid, url, now, attempts),
            )
            if cursor.rowcount == 1:  # another store process may have taken it
                claimed.append((qid, url, int(attempts)))
        return claimed

    def record(
        self,
        question_id: str,
        url: str,
        *,
        now: float,
        ok: bool,
        status: int | None,
        error: str | None,
        next_at: float | None,
    ) -> None:
        """One attempt's outcome: delivered, retried at next_at, or (next_at None) failed."""
        state = "delivered" if ok else ("pending" if next_at is not None else "failed")
        self._run(
            "UPDATE webhooks SET state = ?, attempts = attempts + 1, next_at = ?, "
            "claimed_until = 0, last_status = ?, last_error = ?, delivered_at = ? "
            "WHERE question_id = ? AND url = ?",
            (
                state,
                next_at if next_at is not None else now,
                status,
                None if error is None else error[:300],
                now if ok else None,
                question_id,
                url,
            ),
        )

    def deliveries(self, question_id: str | None = None) -> list[Delivery]:
        query = (
            "SELECT question_id, url, state, attempts, last_status, last_error, delivered_at "
            "FROM webhooks"
        )
        args: tuple[Any, ...] = ()
        if question_id is not None:
            query += " WHERE question_id = ?"
            args = (question_id,)
        rows = self._run(query + " ORDER BY created_at", args).fetchall()
        return [Delivery(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class WebhookDispatcher:
    """Delivers due webhooks; `notify_final` (the store's on_final) wakes it at once."""

    def __init__(
        self,
        outbox: WebhookOutbox,
        repo: Repository,
        settings: Settings,
        *,
        sweep_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.repo = repo
        self.settings = settings
        self.sweep_s = sweep_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.delivered = 0
        self.failed_attempts = 0
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(16)

    def notify_final(self, envelope: Envelope) -> None:
        self._wake.set()

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))], at least 10 ms."""
        s = self.settings
        ceiling = min(s.webhook_backoff_cap_s, s.webhook_backoff_base_s * 2 ** (attempt - 1))
        return max(0.01, self.rng.uniform(0, ceiling))

    async def run(self, stop: asyncio.Event) -> None:
        import httpx

        stopped = asyncio.ensure_future(stop.wait())
        async with httpx.AsyncClient(timeout=self.settings.webhook_timeout_s) as client:
            while not stop.is_set():
                try:
                    await self.sweep_once(client)
                except Exception:  # a database hiccup must not end the loop
                    log.warning("webhook sweep failed (will retry)", exc_info=True)
                self._wake.clear()
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {stopped, woken}, timeout=self.sweep_s, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
            stopped.cancel()
            if self._inflight:
                await asyncio.wait(self._inflight, timeout=self.settings.webhook_timeout_s)

    async def sweep_once(self, client: Any) -> int:
        hold = self.settings.webhook_timeout_s + 5.0
        due = await asyncio.to_thread(self.outbox.claim_due, self.clock(), hold)
        for qid, url, attempts in due:
            task = asyncio.create_task(self._deliver(client, qid, url, attempts + 1))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(due)

    async def _deliver(self, client: Any, qid: str, url: str, attempt: int) -> None:
        async with self._limit:
            status: int | None = None
            error: str | None = None
            try:
                record = await asyncio.to_thread(self.repo.get, qid)
                if record is None:  # cannot happen: claimed rows join a final question
                    return
                body = orjson.dumps({"event": "question.final", **record.to_public()})
                secret = self.settings.webhook_secret
                assert secret is not None  # check_callback_url refuses callbacks without it
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(secret.get_secret_value(), body, int(self.clock())),
                    DELIVERY_HEADER: f"{qid}:{hashlib.sha256(url.encode()).hexdigest()[:12]}",
                    "User-Agent": "qaloop-webhook/1",
                }
                response = await client.post(url, content=body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except Exception as exc:  # refused, timed out, reset: all retried
                error = f"{type(exc).__name__}: {exc}"[:300]
            now = self.clock()
            ok = error is None
            retry = not ok and attempt < self.settings.webhook_tries
            next_at = now + self.backoff_s(attempt) if retry else None
            if ok:
                self.delivered += 1
                log.debug("question %s: webhook delivered to %s", qid, url)
            else:
                self.failed_attempts += 1
                log.warning(
                    "question %s: webhook to %s failed (attempt %d, %s)%s",
                    qid,
                    url,
                    attempt,
                    error,
                    "" if retry else "; giving up",
                )
            await asyncio.to_thread(
                self.outbox.record,
                qid,
                url,
                now=now,
                ok=ok,
                status=status,
                error=error,
                next_at=next_at,
            )
            if retry:
                asyncio.get_running_loop().call_later(max(0.0, next_at - now), self._wake.set)  # type: ignore[operator]


def chain(*callbacks: Callable[[Envelope], None] | None) -> Callable[[Envelope], None]:
    """One on_final from several (the gateway's waiters and the dispatcher)."""
    present = [c for c in callbacks if c is not None]

    def call(envelope: Envelope) -> None:
        for callback in present:
            callback(envelope)

    return call


def webhook_dispatcher(
    settings: Settings, repo: Repository, clock: Callable[[], float] = time.time
) -> WebhookDispatcher | None:
    """The dispatcher of a process that runs a store, or None when callbacks are off (no
    QALOOP_WEBHOOK_SECRET: the gateway refuses callback_url then, so nothing is queued)."""
    if settings.webhook_secret is None:
        return None
    return WebhookDispatcher(WebhookOutbox(settings.db), repo, settings, clock=clock)
