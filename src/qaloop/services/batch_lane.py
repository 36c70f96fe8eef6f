"""The batch lane: questions that may wait (priority "batch") are collected into provider batch
jobs (qaloop.llm.batch: OpenAI Batch API, Gemini Batch Mode; half price), submitted, polled by
a background task that never blocks the worker, and their answers fed into the generated
topic like any answer (priced at batch prices, lane "batch").

    worker.handle(batch question) -> lane.take(env):
        pending  -> publish a safety copy on the delayed topic (due after the job's deadline),
                    return nothing else; the question waits for the next job
    run(): every tick
        submit   when `max_size` are pending or the oldest has waited `max_wait_s`
        poll     each job every `poll_every_s`
        results  Generation -> generated topic; an item error -> routed by its class like an
                 interactive call (permanent -> dead letter; anything else -> back to the
                 interactive lane with its reason); a failed job, or an item an expired job
                 never ran -> back to the interactive lane with the reason

The safety copy makes a batched question durable: if this process dies with the job in
flight, the retrier brings the copy back at the deadline and the worker answers it
interactively (`take` sees a copy of a job it doesn't know). A copy whose answer already came
is dropped. (After a restart that memory is gone: such a question may be answered once more,
an extra call but no duplicate row, since storage keeps the first final state.)

With a journal (`journal_path`, QALOOP_BATCH_JOURNAL) a restart doesn't wait for the copies:
the lane writes its submitted jobs (job id and their questions' envelopes) to a JSON file,
replaced atomically after every submit and every finished job, and on start polls those jobs
again, so their answers arrive as soon as the provider has them. One file per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from qaloop.bus.base import OutMessage, Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, ErrorClass, EventKind, QuestionState, Usage
from qaloop.core.wire import out
from qaloop.llm.accounting import BATCH, GENERATE, Meter
from qaloop.llm.base import Generation, GenerationRequest, LLMError, PermanentError
from qaloop.llm.batch import BatchClient, BatchExpired, BatchItem, BatchState
from qaloop.llm.budget import Budget
from qaloop.llm.escalation import Escalation
from qaloop.observability.logs import log_event

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[OutMessage]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BatchLaneConfig:
    max_size: int = 100  # questions per job
    max_wait_s: float = 60.0  # the oldest pending question waits at most this before a submit
    poll_every_s: float = 30.0
    deadline_s: float = 25 * 3600.0  # safety copy due: the 24 h window + an hour
    tick_s: float = 0.5
    journal_path: str | None = None  # submitted jobs, re-polled after a restart


@dataclass
class _Job:
    id: str
    envelopes: dict[str, Envelope]
    submitted_at: float
    next_poll: float


@dataclass
class BatchLaneStats:
    submitted_jobs: int = 0
    submitted_questions: int = 0
    answered: int = 0
    item_errors: int = 0
    put_back: dict[str, int] = field(default_factory=dict)  # reason -> questions
    poll_errors: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "submitted_jobs": self.submitted_jobs,
            "submitted_questions": self.submitted_questions,
            "answered": self.answered,
            "item_errors": self.item_errors,
            "put_back": dict(self.put_back),
            "poll_errors": self.poll_errors,
        }


class BatchLane:
    def __init__(
        self,
        client: BatchClient,
        topics: Topics,
        publish: Publish,
        *,
        # the worker's request for this attempt (qaloop.services.worker.attempt_request):
        # the feedback prompt and the attempt's temperature; the argument is its model
        request: Callable[[Envelope, str | None], GenerationRequest],
        escalation: Escalation | None = None,
        meter: Meter | None = None,
        budget: Budget | None = None,
        config: BatchLaneConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.topics = topics
        self.publish = publish
        self.request = request
        self.escalation = escalation or Escalation()
        self.meter = meter
        self.budget = budget  # batch answers are charged to the spend budget too
        self.config = config or BatchLaneConfig()
        self.clock = clock
        self.pending: list[Envelope] = []
        self.jobs: dict[str, _Job] = {}
        self._done: set[str] = set()  # question ids answered through a job (safety copies)
        self._waiting: set[str] = set()  # pending or in a job
        self.stats = BatchLaneStats()

    # ------------------------------------------------------------------ the worker's side

    def take(self, env: Envelope) -> list[OutMessage] | None:
        """Queue a batch-lane question; None: answer it interactively now (a safety copy of
        a job this process doesn't know, i.e. the job was lost)."""
        qid = env.question_id
        step = self.escalation.step(env.attempt)
        if step.provider is not None and step.provider != self.client.name:
            log_event(
                log, "batch_skipped", env, "attempt %d runs on %s", env.attempt, step.deployment
            )
            return None  # the escalation moves this attempt to another provider: no job here
        if any(e.kind is EventKind.BATCHED for e in env.history[-2:]):
            if qid in self._done or qid in self._waiting:
                return []  # the answer came (or is coming) through the job
            log_event(log, "batch_lost", env, "no job holds it: answering interactively")
            return None
        now = self.clock()
        batched = env.with_event(EventKind.BATCHED, now, detail="waiting for a batch job")
        self.pending.append(batched)
        self._waiting.add(qid)
        copy = batched.evolve(state=QuestionState.QUEUED, due_at=now + self.config.deadline_s)
        log_event(log, "batched", env, "pending (%d in the next job)", len(self.pending))
        return [out(self.topics.delayed, copy)]

    # ------------------------------------------------------------------ the background loop

    async def run(self, stop: asyncio.Event) -> None:
        self.reattach()
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # one bad step must not end the lane
                log.exception("batch lane step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.tick_s)

    async def step(self) -> None:
        now = self.clock()
        if self.pending and (
            len(self.pending) >= self.config.max_size
            or now - self.pending[0].history[-1].at >= self.config.max_wait_s
        ):
            await self._submit()
        for job in list(self.jobs.values()):
            if job.next_poll <= self.clock():
                await self._poll(job)

    # ------------------------------------------------------------------ the journal

    def reattach(self) -> int:
        """Load the journal's jobs (a previous process's) to poll them again; how many.
        An unreadable journal is logged and left for a person: its questions still come
        back through their safety copies."""
        path = self.config.journal_path
        if not path or not os.path.exists(path):
            return 0
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            jobs = {
                str(job_id): [codec.decode(raw) for raw in job["envelopes"]]
                for job_id, job in data["jobs"].items()
            }
            submitted = {
                str(job_id): float(job["submitted_at"]) for job_id, job in data["jobs"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("batch lane: cannot read the journal %s (%s); not reattaching", path, exc)
            return 0
        now = self.clock()
        for job_id, envelopes in jobs.items():
            if job_id in self.jobs:
                continue
            self.jobs[job_id] = _Job(
                job_id, {e.question_id: e for e in envelopes}, submitted[job_id], now
            )
            self._waiting.update(e.question_id for e in envelopes)
        if jobs:
            log.info("batch lane: reattached %d job(s) from %s", len(jobs), path)
        return len(jobs)

    def _journal(self) -> None:
        """Write the jobs in flight (tmp file + rename: a crash leaves the old or the new)."""
        path = self.config.journal_path
        if not path:
            return
        data = {
            "jobs": {
                job.id: {
                    "submitted_at": job.submitted_at,
                    "envelopes": [codec.encode(e).decode() for e in job.envelopes.values()],
                }
                for job in self.jobs.values()
            }
        }
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # the safety copies still cover the jobs
            log.error("batch lane: cannot write the journal %s: %s", path, exc)

    def model_for(self, env: Envelope) -> str:
        """The model this attempt's job runs on: the escalation's, else the lane's."""
        return self.escalation.step(env.attempt).model or self.client.model

    async def _submit(self) -> None:
        """One job per model (a provider batch runs one model): the oldest pending question's
        model goes first, up to `max_size` of its questions; the rest wait for the next tick."""
        model = self.model_for(self.pending[0])
        chunk = [e for e in self.pending if self.model_for(e) == model][: self.config.max_size]
        taken = {e.question_id for e in chunk}
        self.pending = [e for e in self.pending if e.question_id not in taken]
        items = [BatchItem(e.question_id, self.request(e, model)) for e in chunk]
        try:
            job_id = await self.client.submit(items)
        except LLMError as exc:
            await self._put_back(chunk, f"batch submit failed: {exc.detail[:200]}", exc)
            return
        now = self.clock()
        self.jobs[job_id] = _Job(
            job_id, {e.question_id: e for e in chunk}, now, now + self.config.poll_every_s
        )
        self.stats.submitted_jobs += 1
        self.stats.submitted_questions += len(chunk)
        self._journal()
        log.info("batch lane: submitted job %s with %d questions (%s)", job_id, len(chunk), model)

    async def _poll(self, job: _Job) -> None:
        job.next_poll = self.clock() + self.config.poll_every_s
        try:
            result = await self.client.poll(job.id)
        except LLMError as exc:
            self.stats.poll_errors += 1
            log.warning("batch lane: polling job %s failed (%s); next poll later", job.id, exc)
            return
        if result.state is BatchState.RUNNING:
            return
        del self.jobs[job.id]
        log.info("batch lane: job %s %s (%s)", job.id, result.state.value, result.detail)
        if result.state is BatchState.FAILED:
            await self._put_back(list(job.envelopes.values()), result.detail or "batch failed")
            self._journal()  # after the publish: a crash before it polls the job again
            return
        messages: list[OutMessage] = []
        back: list[tuple[Envelope, str, LLMError | None]] = []
        for qid, env in job.envelopes.items():
            item = result.results.get(qid)
            if isinstance(item, Generation):
                message, usage = self._generated(env, item)
                messages.append(message)
                if self.budget is not None and usage is not None:
                    await self.budget.charge(env.caller, usage.cost_usd)
                self._finish(qid)
            elif item is None or isinstance(item, BatchExpired):
                back.append((env, f"batch {result.state.value}: this request did not run", item))
            elif isinstance(item, PermanentError) and item.status is None:
                back.append((env, f"batch answer unusable: {item.detail[:200]}", item))
            else:
                self.stats.item_errors += 1
                messages.append(self._item_error(env, item))
                self._finish(qid)
        if messages:
            await self.publish(messages)
        for env, reason, error in back:
            await self._put_back([env], reason, error)
        self._journal()

    def _finish(self, qid: str) -> None:
        self._waiting.discard(qid)
        self._done.add(qid)
        if len(self._done) > 100_000:  # bounded memory: forget the oldest half
            self._done = set(list(self._done)[50_000:])

    def _generated(self, env: Envelope, generation: Generation) -> tuple[OutMessage, Usage | None]:
        now = self.clock()
        usage: Usage | None = None
        if self.meter is not None:
            model = self.model_for(env)
            usage = self.meter.usage(
                generation,
                self.request(env, model).prompt,
                self.client.name,
                purpose=GENERATE,
                lane=BATCH,
                configured_model=model,
            )
        self.stats.answered += 1
        generated = env.with_event(
            EventKind.GENERATED,
            now,
            answer=generation.text,
            latency_ms=(now - env.history[-1].at) * 1000,  # the wait for the job
            detail="batch lane",
            usage=usage,
        ).evolve(
            state=QuestionState.SCORING,
            answer=generation.text,
            llm_calls=env.llm_calls + 1,
            error_class=None,
            error_detail=None,
            due_at=None,
        )
        log_event(log, "generated", generated, "by batch job", state="scoring")
        return out(self.topics.generated, generated), usage

    def _item_error(self, env: Envelope, error: LLMError) -> OutMessage:
        """A request the job ran and the provider refused: permanent -> dead letter with the
        reason; anything else goes back to the interactive lane (its own retry strategy)."""
        now = self.clock()
        cls = error.error_class
        env = env.with_event(
            EventKind.LLM_ERROR, now, error_class=cls, detail=f"batch: {error.detail[:280]}"
        ).evolve(llm_calls=env.llm_calls + 1)
        if cls is ErrorClass.PERMANENT:
            reason = "permanent error"
            failed = env.with_event(EventKind.GAVE_UP, now, error_class=cls, detail=reason).evolve(
                state=QuestionState.FAILED,
                error_class=cls,
                error_detail=f"{reason}: batch: {error.detail[:200]}",
                answer=env.best_answer,
                score=env.best_score,
            )
            return out(self.topics.dead_letter, failed, **{"qaloop-reason": reason})
        self._count_back(f"batch item {cls.value}")
        return out(self.topics.questions, self._interactive(env, f"batch: {error.detail[:200]}"))

    def _interactive(self, env: Envelope, reason: str) -> Envelope:
        return env.evolve(
            state=QuestionState.QUEUED,
            lane="interactive",
            error_detail=reason,
            due_at=None,
            tries_in_attempt=0,
        )

    def _count_back(self, reason: str) -> None:
        key = reason.split(":")[0]
        self.stats.put_back[key] = self.stats.put_back.get(key, 0) + 1

    async def _put_back(
        self, envelopes: Sequence[Envelope], reason: str, error: LLMError | None = None
    ) -> None:
        """Back to the questions topic, in the interactive lane, with the reason."""
        now = self.clock()
        messages = []
        for env in envelopes:
            self._finish(env.question_id)
            self._count_back(reason)
            env = env.with_event(
                EventKind.LLM_ERROR,
                now,
                error_class=(error.error_class if error else ErrorClass.SERVER),
                detail=reason[:300],
            )
            log_event(log, "batch_put_back", env, "%s", reason, level=logging.WARNING)
            messages.append(out(self.topics.questions, self._interactive(env, reason)))
        if messages:
            await self.publish(messages)

    async def aclose(self) -> None:
        await self.client.aclose()
