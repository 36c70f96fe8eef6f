"""Recovery of questions stored but never published (or whose messages are gone).

The gateway stores a question before it publishes it, so whatever crashes in between, storage
knows the question. One rule says where such a question goes back to (`resume_message`: the
topic its stored state names), and one class re-publishes them (`Recovery`), on two triggers:

- at start, every unfinished question (`republish_unfinished`): the embedded mode's in-process
  bus does not survive a restart, so every question in flight is put back;
- periodically, the questions stuck in `queued` with no progress for `older_than_s`
  (`run` / `sweep_once`): on a durable bus (Kafka) only the gap between the insert and the
  publish can lose a message. A question waiting behind a backlog looks the same from
  storage, so the sweep runs only while the worker group's backlog is small, and it
  re-publishes a question at most once per `older_than_s`.

A re-publish of a question that was in fact published only costs an LLM call: every write
downstream is idempotent.

Dead letters go back the same way (`plan_replay`, `replay_dead_letters`): one implementation
for `qaloop dlq replay` (Kafka) and the gateway's admin endpoint (either mode's bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qaloop.bus.base import Bus, OutMessage, Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, QuestionState
from qaloop.core.wire import out
from qaloop.storage.base import DeadLetter, Repository

log = logging.getLogger(__name__)


def resume_message(envelope: Envelope, topics: Topics) -> OutMessage:
    """Where an unfinished question goes back to: an answer waiting for the judge to the
    generated answers, a parked one to the delayed topic, anything else to the pending
    questions (queued again)."""
    if envelope.state is QuestionState.SCORING and envelope.answer is not None:
        return out(topics.generated, envelope)
    if envelope.due_at is not None:
        return out(topics.delayed, envelope)
    return out(topics.questions, envelope.evolve(state=QuestionState.QUEUED))


class Recovery:
    def __init__(
        self,
        repo: Repository,
        bus: Bus,
        topics: Topics,
        *,
        older_than_s: float,
        backlog: Callable[[], Awaitable[int]] | None = None,
        max_backlog: int = 1000,
        limit: int = 1000,
        every_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.bus = bus
        self.topics = topics
        self.older_than_s = older_than_s
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.limit = limit
        self.every_s = every_s if every_s is not None else min(30.0, max(1.0, older_than_s / 4))
        self.clock = clock
        self.republished = 0
        self.skipped = 0
        self._recent: dict[str, float] = {}

    async def republish(self, envelopes: Sequence[Envelope]) -> int:
        if envelopes:
            await self.bus.publish_many([resume_message(e, self.topics) for e in envelopes])
            self.republished += len(envelopes)
        return len(envelopes)

    async def republish_unfinished(self) -> list[Envelope]:
        """Every unfinished question back where its state says (at start)."""
        unfinished = await asyncio.to_thread(self.repo.unfinished)
        await self.republish(unfinished)
        if unfinished:
            log.info("resumed %d unfinished questions from storage", len(unfinished))
        return unfinished

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every_s)
            if stop.is_set():
                return
            try:
                await self.sweep_once()
            except Exception:
                log.exception("stale sweep failed (will retry)")

    async def sweep_once(self) -> int:
        """Re-publish the questions stuck in `queued` with no progress (see the module doc)."""
        if self.backlog is not None:
            pending = await self.backlog()
            if pending > self.max_backlog:
                self.skipped += 1
                log.info("stale sweep skipped: %d questions still pending", pending)
                return 0
        candidates = await asyncio.to_thread(self.repo.stale, self.older_than_s, self.limit)
        now = self.clock()
        self._recent = {q: t for q, t in self._recent.items() if t > now - self.older_than_s}
        fresh = [e for e in candidates if e.question_id not in self._recent]
        await self.republish(fresh)
        for e in fresh:
            self._recent[e.question_id] = now
            log.warning(
                "question %s: stuck in queued for %.0f s, re-published",
                e.question_id,
                now - e.first_seen,
            )
        return len(fresh)


# ---------------------------------------------------------------------- dead-letter replay

REPLAYED_FROM = "qaloop-replayed-from"  # header: the dead letter a replayed record came from


def letter_row(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as JSON (`qaloop dlq list --json`, GET /v1/admin/dead-letters)."""
    return {
        "key": letter.dedup_key,
        "at": dt.datetime.fromtimestamp(letter.at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_topic": letter.source_topic,
        "question_id": letter.question_id,
        "reason": letter.reason,
        "bytes": None if letter.raw is None else len(letter.raw),
        "replayed": letter.replayed,
    }


def plan_replay(
    letter: DeadLetter, topics: Topics, repo: Repository, *, force: bool
) -> tuple[OutMessage | None, str]:
    """The message that re-injects `letter` (or None) and a one-line explanation:
    - a poison message (bytes a stage could not read or handle): its original bytes, to the
      topic it came from; still bad, it is dead-lettered again (a new letter: a new offset);
    - an unfinished question's envelope: to the topic its state names (`resume_message`);
    - a question storage holds as final: skipped unless `force`, because storage keeps a
      question's first final state (a new run changes only its history)."""
    if letter.raw is None:
        return None, "no payload recorded"
    if letter.source_topic != topics.dead_letter:
        return (
            OutMessage(
                letter.source_topic,
                letter.question_id or "",
                letter.raw,
                {REPLAYED_FROM: letter.dedup_key},
            ),
            f"raw bytes -> {letter.source_topic}",
        )
    try:
        envelope = codec.decode(letter.raw)
    except codec.InvalidMessage as exc:
        return None, f"undecodable and without a source topic: {exc}"
    record = repo.get(envelope.question_id)
    final = record is not None and record.state.is_final
    if final and not force:
        assert record is not None
        return None, f"question is {record.state.value} in storage (use --force to re-run it)"
    if envelope.state.is_final or final:
        envelope = envelope.evolve(state=QuestionState.QUEUED, due_at=None)
    message = resume_message(envelope, topics)
    headers = {**message.headers, REPLAYED_FROM: letter.dedup_key}
    return OutMessage(message.topic, message.key, message.value, headers), f"-> {message.topic}"


@dataclass(frozen=True, slots=True)
class ReplayStep:
    key: str
    message: OutMessage | None  # None: skipped
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "action": "replay" if self.message else "skip", "detail": self.why}


def plan_replays(
    letters: Sequence[DeadLetter], topics: Topics, repo: Repository, *, force: bool
) -> list[ReplayStep]:
    steps = []
    for letter in letters:
        message, why = plan_replay(letter, topics, repo, force=force)
        steps.append(ReplayStep(letter.dedup_key, message, why))
    return steps


async def replay_dead_letters(
    repo: Repository,
    bus: Bus,
    topics: Topics,
    letters: Sequence[DeadLetter],
    *,
    force: bool = False,
    dry_run: bool = False,
) -> list[ReplayStep]:
    """Plan, publish, then mark replayed. Published before marked: a crash in between
    replays a letter twice at worst, which duplicates nothing (every write downstream is
    idempotent); marked before published could lose it."""
    steps = await asyncio.to_thread(plan_replays, letters, topics, repo, force=force)
    todo = [s for s in steps if s.message is not None]
    if dry_run or not todo:
        return steps
    await bus.publish_many([s.message for s in todo if s.message is not None])
    await asyncio.to_thread(repo.mark_replayed, [s.key for s in todo])
    log.info("replayed %d dead letters", len(todo))
    return steps
