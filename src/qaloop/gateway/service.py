"""Question intake, independent of HTTP: cache -> storage -> accept and enqueue.

- Known (validated) questions are served from the cache, else from storage (then cached).
- A question already in flight joins it (coalescing): one LLM pipeline run, many askers. The
  storage insert is the arbiter (unique question id), so this holds across gateway processes.
- A new question is written to storage *before* it is published and before the 202: an
  accepted question is never lost, whatever crashes next. The durable copy is that commit, or
  on a replicated Kafka (min.insync.replicas >= 2) the acked publish, and then the commit does
  not wait for the disk (Settings.accept_durability, docs/distributed.md).
- Hit counts are summed in memory and flushed in batches, off the hot path.
- Admission (qaloop.gateway.admission) is asked only for a question that would be new: known
  answers and joins are served whatever the backlog, budget or quota.
- A failed question is asked again only when the request says so (`retry_failed`) or an admin
  resets it: storage replaces the row by a new run (Repository.reset_failed). A failure is
  served from the cache for at most `failed_recheck_s`, so a reset made through another
  gateway process shows here too.
- The reference answer is the one stored with the question: set by the request that created
  it (or by an admin reset) and never changed by a later ask, so every asker is judged
  against the same reference. A request whose reference differs is told so
  (`"reference_ignored": true`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qaloop.bus.base import Bus, Topics
from qaloop.core.cache import Cache
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope, EventKind, QuestionRecord, QuestionState
from qaloop.core.paraphrase import ParaphraseIndex
from qaloop.core.wire import out
from qaloop.gateway.admission import Admission, Ask
from qaloop.observability.logs import log_event
from qaloop.observability.metrics import Metrics
from qaloop.storage.base import Repository, Resettable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A final outcome: it never changes, so it can be cached without invalidation."""

    answer: str | None
    score: float | None
    failed: bool = False
    error: str | None = None
    reference: str | None = None  # the stored reference (the one this answer was judged on)
    at: float = 0.0  # monotonic time it was cached (a failure is re-read after a while)


class StatusBoard:
    """In-process view of what storage can't know yet (a worker holds the question)."""

    def __init__(self) -> None:
        self.generating: dict[str, int] = {}  # question id -> attempt

    def started(self, envelope: Envelope) -> None:
        self.generating[envelope.question_id] = envelope.attempt

    def finished(self, question_id: str) -> None:
        self.generating.pop(question_id, None)


class QuestionService:
    def __init__(
        self,
        repo: Repository,
        bus: Bus,
        topics: Topics,
        cache: Cache[str, CachedAnswer],
        *,
        board: StatusBoard | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        admission: Admission | None = None,
        failed_recheck_s: float = 10.0,
        accept_waits_for_disk: bool = True,
    ) -> None:
        self.repo = repo
        # False only when the publish is the durable copy (Settings.accept_waits_for_disk)
        self.accept_waits_for_disk = accept_waits_for_disk
        self.failed_recheck_s = failed_recheck_s
        self.closing = asyncio.Event()  # set when a graceful stop begins: long-polls return
        self.bus = bus
        self.topics = topics
        self.cache = cache
        self.board = board
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._pending_hits: Counter[str] = Counter()
        self._waiters: dict[str, list[asyncio.Event]] = {}
        self.in_flight: set[str] = set()  # accepted here and not yet final (embedded drain)
        self._accept_queue: list[tuple[Envelope, asyncio.Future[tuple[bool, QuestionRecord]]]] = []
        self._accepting = False
        # Read at scrape time: the hot path only bumps its plain counters.
        self.metrics = metrics if metrics is not None else Metrics()
        # In flight is known where finals are seen: the embedded pipeline (it has the board).
        in_flight = (lambda: len(self.in_flight)) if board is not None else None
        self.metrics.watch_gateway(self.counters, cache, in_flight)
        self.paraphrases: ParaphraseIndex | None = None  # off by default (docs/spend.md)
        # Checks are added by the entry point (qaloop.gateway.guard); none: all admitted.
        self.admission = (
            admission if admission is not None else Admission(registry=self.metrics.registry)
        )

    async def ask(
        self,
        question: str,
        reference: str | None,
        *,
        lane: str = "interactive",
        paraphrase: bool = True,
        caller: str | None = None,
        retry_failed: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        qid = question_id(question)
        self.counters["asked"] += 1
        cached = self.cache.get(qid)
        if cached is not None and not (
            cached.failed and (retry_failed or time.monotonic() - cached.at > self.failed_recheck_s)
        ):
            self.counters["answered_failed" if cached.failed else "answered_cache"] += 1
            self._pending_hits[qid] += 1
            return 200, _answered(qid, cached, "cache", reference)
        if self.paraphrases is not None and paraphrase:
            served = await self._paraphrased(qid, question)
            if served is not None:
                return served
        ask = Ask(qid, question, reference, caller)
        if self.admission.checks:
            rejection = await self.admission.check(ask)
            if rejection is not None:
                # Only a new question is refused: what storage knows is still served.
                record = await asyncio.to_thread(self.repo.get, qid)
                if record is None or (retry_failed and record.state is QuestionState.FAILED):
                    self.counters["refused"] += 1
                    raise self.admission.refused(rejection)
                return self._known(record, reference)
        now = self.clock()
        envelope = Envelope(
            question_id=qid,
            question=question,
            reference_answer=reference,
            trace_id=uuid.uuid4().hex,
            first_seen=now,
            caller=caller,
            lane=lane,
        ).with_event(EventKind.ACCEPTED, now)
        admitted = False
        try:
            inserted, record = await self._accept(envelope)
            if inserted:
                self.counters["accepted"] += 1
                self.admission.admitted(ask)
                admitted = True
                return 202, {"id": qid, "status": "queued"}
            if retry_failed and record.state is QuestionState.FAILED:
                reset = await self.reset(
                    qid, by=caller or "a request (retry_failed)", caller=caller
                )
                if reset is not None:
                    self.admission.admitted(ask)
                    admitted = True
                    body: dict[str, Any] = {"id": qid, "status": "queued", "retried": True}
                    if reference is not None and reference != record.reference_answer:
                        body["reference_ignored"] = True
                    return 202, body
                record = await asyncio.to_thread(self.repo.get, qid) or record
        finally:
            if not admitted and self.admission.checks:
                # Known, joined or an error: what the checks took (a quota slot) goes back.
                await self.admission.released(ask)
        return self._known(record, reference)

    async def reset(
        self,
        qid: str,
        *,
        by: str,
        reference: str | None = None,
        replace_reference: bool = False,
        caller: str | None = None,
    ) -> Envelope | None:
        """Ask a failed question again (a new run). None if it is not failed (or unknown).
        Only an admin reset replaces the reference (`replace_reference`)."""
        if not isinstance(self.repo, Resettable):
            raise TypeError(f"{type(self.repo).__name__} cannot reset questions")
        repo = self.repo
        current = await asyncio.to_thread(repo.get, qid)
        if current is None or current.state is not QuestionState.FAILED:
            return None
        new = await asyncio.to_thread(
            lambda: repo.reset_failed(
                qid,
                at=self.clock(),
                trace_id=uuid.uuid4().hex,
                reference_answer=reference if replace_reference else current.reference_answer,
                by=by,
                caller=caller,
            )
        )
        if new is None:
            return None
        if qid in self.cache:  # the cache has no delete: a failure dated -inf is re-read
            self.cache.put(qid, CachedAnswer(None, None, True, at=float("-inf")))
        if self.board is not None:
            self.in_flight.add(qid)
        # Stored (as queued) before published: a crash here is resumed like any accept.
        await self.bus.publish_many([out(self.topics.questions, new)])
        self.counters["reset"] += 1
        log_event(log, "reset", new, "by %s (trace %s)", by, new.trace_id, state="queued")
        return new

    async def _accept(self, envelope: Envelope) -> tuple[bool, QuestionRecord]:
        """Insert-if-absent, then publish if inserted — grouped: while one batch is being
        written, newcomers queue up and go in the next transaction (group commit), so the cost
        of a commit is shared by every request that arrived meanwhile."""
        future: asyncio.Future[tuple[bool, QuestionRecord]] = (
            asyncio.get_running_loop().create_future()
        )
        self._accept_queue.append((envelope, future))
        if not self._accepting:
            self._accepting = True
            try:
                while self._accept_queue:
                    batch, self._accept_queue = self._accept_queue, []
                    await self._accept_batch(batch)
            finally:
                self._accepting = False
        return await future

    async def _accept_batch(
        self, batch: list[tuple[Envelope, asyncio.Future[tuple[bool, QuestionRecord]]]]
    ) -> None:
        try:
            results = await asyncio.to_thread(
                self.repo.accept_many,
                [e for e, _ in batch],
                wait_for_disk=self.accept_waits_for_disk,
            )
            new = [e for (e, _), (inserted, _) in zip(batch, results, strict=True) if inserted]
            if new:
                # Stored before published, published before the 202: never lost.
                if self.board is not None:
                    # Embedded only: there the store tells us when a question is final. A
                    # distributed gateway never hears it, so the set would only grow.
                    self.in_flight.update(e.question_id for e in new)
                await self.bus.publish_many([out(self.topics.questions, e) for e in new])
                for e in new:
                    log_event(log, "accepted", e, "(trace %s)", e.trace_id, state="queued")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _known(
        self, record: QuestionRecord, reference: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        qid = record.question_id
        self._pending_hits[qid] += 1
        if record.state is QuestionState.VALIDATED:
            answer = CachedAnswer(record.answer, record.score, reference=record.reference_answer)
            self.cache.put(qid, answer)
            if self.paraphrases is not None:
                self.paraphrases.add(qid, record.question)
            self.counters["answered_storage"] += 1
            return 200, _answered(qid, answer, "storage", reference)
        if record.state is QuestionState.FAILED:
            failed = CachedAnswer(
                record.answer,
                record.score,
                True,
                record.error_detail,
                record.reference_answer,
                time.monotonic(),
            )
            self.cache.put(qid, failed)
            self.counters["answered_failed"] += 1
            return 200, _answered(qid, failed, "storage", reference)
        self.counters["coalesced"] += 1
        body: dict[str, Any] = {"id": qid, "status": "queued", "joined": True}
        if reference is not None and reference != record.reference_answer:
            body["reference_ignored"] = True
        return 202, body

    async def status(self, qid: str) -> dict[str, Any] | None:
        record = await asyncio.to_thread(self.repo.get, qid)
        if record is None:
            return None
        body = record.to_public()
        if (
            self.board is not None
            and not record.state.is_final
            and self.board.generating.get(qid, 0) >= record.attempt
        ):
            body["status"] = QuestionState.GENERATING.value
        return body

    async def wait(self, qid: str, timeout_s: float) -> dict[str, Any] | None:
        """Long-poll: return as soon as the question is final, or after timeout_s."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            body = await self.status(qid)
            if body is None or body["status"] in ("validated", "failed"):
                return body
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closing.is_set():
                return body
            # Notified in-process by the store; otherwise re-read storage with backoff.
            if not await self.final_signal(qid, min(delay, remaining)):
                delay = min(delay * 2, 1.0)

    async def final_signal(self, qid: str, timeout_s: float) -> bool:
        """True as soon as this process's store finishes `qid` (embedded mode), False after
        timeout_s. Reads nothing: the caller re-reads storage (the SSE stream uses it too)."""
        event = asyncio.Event()
        self._waiters.setdefault(qid, []).append(event)
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(qid)
            if waiters is not None and event in waiters:
                waiters.remove(event)
                if not waiters:
                    del self._waiters[qid]

    async def _paraphrased(self, qid: str, question: str) -> tuple[int, dict[str, Any]] | None:
        """A validated answer to a question that means the same (the paraphrase cache), or
        None. Only for a question not answered itself: an exact answer always wins."""
        index = self.paraphrases
        if index is None or qid in index:
            return None
        found = index.lookup(question)
        if found is None:
            return None
        match, similarity = found
        cached = self.cache.get(match)
        if cached is None:
            record = await asyncio.to_thread(self.repo.get, match)
            if record is None or record.state is not QuestionState.VALIDATED:
                index.discard(match)
                return None
            cached = CachedAnswer(record.answer, record.score)
        if cached.failed:
            return None
        self.counters["answered_paraphrase"] += 1
        self._pending_hits[match] += 1
        body = _answered(match, cached, "paraphrase")
        body["asked_id"] = qid
        body["similarity"] = round(similarity, 3)
        return 200, body

    def notify_final(self, envelope: Envelope) -> None:
        qid = envelope.question_id
        if self.paraphrases is not None and envelope.state is QuestionState.VALIDATED:
            self.paraphrases.add(qid, envelope.question)
        self.in_flight.discard(qid)
        if self.board is not None:
            self.board.finished(qid)
        for event in self._waiters.get(qid, ()):
            event.set()

    async def flush_hits(self) -> None:
        if not self._pending_hits:
            return
        hits, self._pending_hits = self._pending_hits, Counter()
        await asyncio.to_thread(self.repo.add_hits, hits)

    async def run_hit_flusher(self, stop: asyncio.Event, every_s: float = 1.0) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            try:
                await self.flush_hits()
            except Exception:
                log.exception("could not flush hit counts (will retry)")

    def stats(self) -> dict[str, Any]:
        return {"gateway": dict(self.counters), "cache": self.cache.stats.as_dict()}


def _answered(
    qid: str, cached: CachedAnswer, source: str, reference: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": qid,
        "status": "failed" if cached.failed else "answered",
        "answer": cached.answer,
        "score": cached.score,
        "source": source,
    }
    if cached.failed:
        body["error"] = cached.error
    if reference is not None and reference != cached.reference:
        body["reference_ignored"] = True
    return body
