"""The storage consumer: projects every topic into the repository, a batch per transaction.

It owns the validated topic (dead-letters what it can't read there) and the dead-letter topic
(records every dead letter with its reason); the other topics it only mirrors so that a
question's state is visible while it moves. Writes are idempotent (see storage.base), and
offsets are committed after the transaction: a replay re-applies the same rows harmlessly.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from qaloop.bus.base import Message, OutMessage, Topics
from qaloop.core import codec, wire
from qaloop.core.model import Envelope, QuestionState, progress_key
from qaloop.core.wire import poison
from qaloop.observability.logs import log_event
from qaloop.observability.metrics import LabelCache, Metrics
from qaloop.storage.base import DeadLetter, Repository

log = logging.getLogger(__name__)

FINAL_PROGRESS = progress_key(QuestionState.VALIDATED, 1)  # every final ranks the same
_PROGRESS_PAIRS = 1024


def dead_letter_key(*parts: object) -> str:
    raw = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _raw(message: Message) -> bytes | None:
    value = message.value
    return value if isinstance(value, bytes) else None


class Store:
    def __init__(
        self,
        repo: Repository,
        topics: Topics,
        *,
        on_final: Callable[[Envelope], None] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.repo = repo
        self.topics = topics
        self.on_final = on_final
        self.clock = clock
        self.written = 0
        self.dead_letters = 0
        self.metrics = metrics if metrics is not None else Metrics()
        self._stored = LabelCache(self.metrics.stored)
        self._time_to_answer = LabelCache(self.metrics.time_to_answer)
        # wire.header_progress by (state, attempt) header: a handful of pairs, every message
        self._progress: dict[tuple[str | None, str | None], int | None] = {}

    async def handle_batch(self, messages: Sequence[Message]) -> list[OutMessage]:
        envelopes: list[Envelope] = []
        encoded: list[bytes | None] = []  # as received: stored without encoding them again
        letters: list[DeadLetter] = []
        outputs: list[OutMessage] = []
        now = self.clock()
        superseded = self._superseded(messages)
        for index, message in enumerate(messages):
            if index in superseded:
                continue
            if message.topic == self.topics.dead_letter:
                letter, envelope = self._dead_letter(message, now)
                letters.append(letter)
                if envelope is not None:
                    envelopes.append(envelope)
                    encoded.append(_raw(message))
                continue
            try:
                envelopes.append(codec.decode(message.value))
                encoded.append(_raw(message))
            except codec.InvalidMessage as exc:
                if message.topic == self.topics.validated:  # ours to dead-letter
                    self.metrics.poison.labels("store").inc()
                    outputs.append(poison(self.topics.dead_letter, message, str(exc)))
        if envelopes or letters:
            started = time.perf_counter()
            await asyncio.to_thread(self._write, envelopes, encoded, letters)
            self.metrics.store_write_seconds.observe(time.perf_counter() - started)
        self.written += len(envelopes)
        self.dead_letters += len(letters)
        self._observe(envelopes, letters, self.clock())
        if self.on_final is not None:
            for envelope in envelopes:
                if envelope.state.is_final:
                    self.on_final(envelope)
        return outputs

    def _observe(self, envelopes: list[Envelope], letters: list[DeadLetter], now: float) -> None:
        m = self.metrics
        if letters:
            m.dead_letters.inc(len(letters))
        stored: dict[str, int] = {}
        for envelope in envelopes:
            state = envelope.state.value
            stored[state] = stored.get(state, 0) + 1
            if envelope.state.is_final:
                self._time_to_answer(state).observe(max(0.0, now - envelope.first_seen))
            log_event(log, "stored", envelope, "(state %s)", state, state=state)
        for state, n in stored.items():  # one increment per state and batch, not per message
            self._stored(state).inc(n)

    def _superseded(self, messages: Sequence[Message]) -> set[int]:
        """Mirrored-topic messages that a more advanced message of the same question in this
        batch makes redundant: its envelope carries their history too, and storage keeps only
        the most advanced state anyway. Decided from the key and the state and attempt
        headers (the same progress key storage ranks by), without decoding — when a backlog
        drains, most of a batch is such messages. Records on the topics the store owns
        (validated, dead letters) are never skipped."""
        owned = (self.topics.validated, self.topics.dead_letter)
        best: dict[str, tuple[int, int]] = {}  # question id -> (progress, index)
        mirrored: list[tuple[str, int]] = []
        known = self._progress
        for index, message in enumerate(messages):
            key = message.key
            headers = message.headers
            pair = (headers.get(wire.STATE), headers.get(wire.ATTEMPT))
            if pair in known:
                progress = known[pair]
            else:
                progress = wire.header_progress(headers)
                if len(known) < _PROGRESS_PAIRS:  # headers are input: bounded
                    known[pair] = progress
            if not key or progress is None or headers.get(wire.POISON) == "1":
                continue  # no usable metadata (or no envelope to apply): decode it as usual
            if message.topic in owned:
                progress = FINAL_PROGRESS
            else:
                mirrored.append((key, index))
            seen = best.get(key)
            if seen is None or progress > seen[0]:
                best[key] = (progress, index)
        return {index for key, index in mirrored if best[key][1] != index}

    def _write(
        self, envelopes: list[Envelope], encoded: list[bytes | None], letters: list[DeadLetter]
    ) -> None:
        self.repo.apply(envelopes, encoded)
        if letters:
            self.repo.record_dead_letters(letters)

    def _dead_letter(self, message: Message, now: float) -> tuple[DeadLetter, Envelope | None]:
        headers = message.headers
        reason = headers.get(wire.REASON, "unknown")
        if headers.get(wire.POISON) == "1":
            source = headers.get(wire.SOURCE_TOPIC, message.topic)
            key = dead_letter_key(
                source,
                headers.get(wire.SOURCE_PARTITION),
                headers.get(wire.SOURCE_OFFSET),
                message.value,
            )
            return DeadLetter(key, reason, source, now, message.key, message.value), None
        try:
            envelope = codec.decode(message.value)
        except codec.InvalidMessage as exc:
            key = dead_letter_key(message.topic, message.partition, message.offset, message.value)
            return DeadLetter(
                key,
                f"undecodable dead letter: {exc}",
                message.topic,
                now,
                message.key,
                message.value,
            ), None
        key = dead_letter_key(envelope.question_id, envelope.attempt, len(envelope.history), reason)
        letter = DeadLetter(key, reason, message.topic, now, envelope.question_id, message.value)
        return letter, envelope
