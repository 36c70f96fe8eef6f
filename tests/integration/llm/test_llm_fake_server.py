"""Real providers (google-genai SDK, httpx OpenAI-compatible) against a local fake server that
speaks both protocols. Each injected failure must end, through the real Worker handler, on the
right topic with the right error class; no question is lost; and the server's per-window
request counts never exceed the client's configured rate limit.

No external server is needed (the fake listens on 127.0.0.1), so these run everywhere."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from qaloop.bus.base import OutMessage, Topics
from qaloop.core import codec
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope, ErrorClass
from qaloop.core.retry import RetryPolicy
from qaloop.llm.base import Provider
from qaloop.llm.openai_compat import OpenAICompatProvider
from qaloop.llm.protection import CircuitBreaker, Limit, LocalRateLimiter, ProtectedProvider
from qaloop.services.worker import Worker, WorkerConfig
from tests.fakes.llm_server import FakeConfig, FakeLLMServer

pytest.importorskip("google.genai", reason="the gemini extra is not installed")

from qaloop.llm.gemini import GeminiProvider

TOPICS = Topics()
KEY = "test-key-d41d8cd98f00"
POLICY = RetryPolicy(
    overload_tries=2,
    backoff_base_s=0.01,
    backoff_cap_s=0.05,
    quota_default_delay_s=30.0,
    quota_day_delay_s=3600.0,
    max_parks=3,
)

# directive -> (topic, error class of the outcome)
CASES: dict[str, tuple[str, ErrorClass | None]] = {
    "": (TOPICS.generated, None),
    "429m": (TOPICS.delayed, ErrorClass.QUOTA_MINUTE),
    "429": (TOPICS.delayed, ErrorClass.QUOTA_MINUTE),
    "429day": (TOPICS.delayed, ErrorClass.QUOTA_DAY),
    "429zero": (TOPICS.delayed, ErrorClass.QUOTA_DAY),
    "503": (TOPICS.delayed, ErrorClass.OVERLOAD),
    "503*1": (TOPICS.generated, None),  # one 503, then the in-process retry succeeds
    "500": (TOPICS.delayed, ErrorClass.SERVER),
    "504": (TOPICS.delayed, ErrorClass.SERVER),
    "timeout": (TOPICS.delayed, ErrorClass.SERVER),
    "malformed": (TOPICS.delayed, ErrorClass.SERVER),
    "400": (TOPICS.dead_letter, ErrorClass.PERMANENT),
    "403": (TOPICS.dead_letter, ErrorClass.PERMANENT),
    "404": (TOPICS.dead_letter, ErrorClass.PERMANENT),
    "safety": (TOPICS.dead_letter, ErrorClass.PERMANENT),
    "blocked": (TOPICS.dead_letter, ErrorClass.PERMANENT),
    "empty": (TOPICS.dead_letter, ErrorClass.PERMANENT),
    "badshape": (TOPICS.dead_letter, ErrorClass.PERMANENT),
}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(FakeConfig(hang_s=5.0, api_key=KEY, retry_delay_s=2)) as fake:
        yield fake


def _provider(kind: str, base_url: str, timeout_s: float = 1.0) -> Provider:
    if kind == "gemini":
        return GeminiProvider(KEY, base_url=base_url, timeout_s=timeout_s)
    return OpenAICompatProvider(
        base_url=f"{base_url}/v1", api_key=KEY, timeout_s=timeout_s, model="fake-model"
    )


def _envelope(question: str) -> Envelope:
    return Envelope(question_id(question), question, "a reference answer", "trace", time.time())


def _only(outputs: list[OutMessage]) -> tuple[str, Envelope]:
    assert len(outputs) == 1
    return outputs[0].topic, codec.decode(outputs[0].value)


@pytest.mark.parametrize("kind", ["gemini", "openai"])
async def test_every_failure_ends_on_the_right_topic(kind: str, server: FakeLLMServer) -> None:
    provider = ProtectedProvider(_provider(kind, server.base_url), timeout_s=2.0)
    worker = Worker(provider, TOPICS, WorkerConfig(request_timeout_s=10), POLICY)
    try:
        for directive, (topic, error_class) in CASES.items():
            question = f"Why is the sky blue? {f'[[fake:{directive}]]' if directive else ''}"
            got_topic, env = _only(await worker.handle(_envelope(question)))
            assert (got_topic, env.error_class) == (topic, error_class), directive
            if topic == TOPICS.generated:
                assert env.answer and "Why is the sky blue?" in env.answer
                assert env.history[-1].detail and "tokens in=" in env.history[-1].detail
            if directive == "429m":  # the server's retry delay (RetryInfo / Retry-After)
                assert env.due_at is not None
                assert env.due_at - env.history[-1].at == pytest.approx(2.0, abs=0.01)
            if directive == "429":  # no delay sent: the policy's default
                assert env.due_at is not None
                assert env.due_at - env.history[-1].at == pytest.approx(30.0, abs=0.01)
            if topic == TOPICS.dead_letter:
                assert env.error_detail and "permanent" in env.error_detail
    finally:
        await provider.aclose()
    assert server.stats.keys_seen == {KEY}


@pytest.mark.parametrize("kind", ["gemini", "openai"])
async def test_no_question_is_lost(kind: str, server: FakeLLMServer) -> None:
    """Transient faults (first call fails, the retry works) on many questions at once:
    re-feeding what is parked, every question ends generated or dead-lettered, once.
    (No breaker here: with many failures at once it would open and, by design, spend parks;
    the breaker has its own tests.)"""
    provider = ProtectedProvider(_provider(kind, server.base_url, timeout_s=1.0))
    policy = RetryPolicy(overload_tries=2, backoff_base_s=0.01, backoff_cap_s=0.05, max_parks=5)
    worker = Worker(provider, TOPICS, WorkerConfig(request_timeout_s=10), policy)
    transient = ["429m*1", "429*1", "503*3", "500*3", "timeout*1", "malformed*3", "429day*1"]
    permanent = ["400", "safety", "blocked"]
    questions = []
    for i in range(60):
        directive = (transient + permanent + [""])[i % 11]
        tag = f"[[fake:{directive}]]" if directive else ""
        questions.append(f"Question number {i}? {tag}")
    pending = [_envelope(q) for q in questions]
    final: dict[str, str] = {}
    rounds = 0
    try:
        while pending and rounds < 6:
            rounds += 1
            outputs = await asyncio.gather(*(worker.handle(e) for e in pending))
            pending = []
            for out in outputs:
                topic, env = _only(out)
                if topic == TOPICS.delayed:
                    pending.append(env.evolve(due_at=None))  # the retrier's job, done now
                else:
                    assert env.question_id not in final, "a question finished twice"
                    final[env.question_id] = topic
    finally:
        await provider.aclose()
    assert not pending
    assert len(final) == len(questions)
    by_topic = Counter(final.values())
    expected_dead = sum(1 for q in questions if any(f"[[fake:{p}]]" in q for p in permanent))
    assert by_topic[TOPICS.dead_letter] == expected_dead
    assert by_topic[TOPICS.generated] == len(questions) - expected_dead


async def test_rate_limit_holds_in_every_window(server: FakeLLMServer) -> None:
    """40 questions at once against a server that allows 20 requests per 2 s window: the
    client's limiter keeps every window at or under 20, so the server never 429s."""
    server.config.limit, server.config.window_s = 20, 2.0
    # 5 % headroom (1 % in production): the fake server shares this process and timestamps
    # requests when it gets round to them, which on a loaded CI machine can bunch them up
    limiter = LocalRateLimiter([Limit.make("rpm", 20, 2.0, headroom=0.05)])
    provider = ProtectedProvider(
        _provider("openai", server.base_url, timeout_s=5), limiter=limiter, max_queue_wait_s=30
    )
    worker = Worker(provider, TOPICS, WorkerConfig(request_timeout_s=60), POLICY)
    try:
        outputs = await asyncio.gather(
            *(worker.handle(_envelope(f"Rate limited question {i}?")) for i in range(40))
        )
    finally:
        await provider.aclose()
    topics = Counter(_only(o)[0] for o in outputs)
    assert topics == {TOPICS.generated: 40}, (topics, server.stats.to_dict(2.0))
    assert server.stats.client_429s == 0
    assert len(server.stats.arrivals) == 40
    assert server.stats.max_in_window(2.0) <= 20


async def test_without_a_limiter_the_server_429s_and_questions_park(
    server: FakeLLMServer,
) -> None:
    """The control: same load, no client limit -> the fake's quota trips, and the worker parks
    those questions with the server's retry delay instead of losing them."""
    server.config.limit, server.config.window_s = 10, 60.0
    provider = ProtectedProvider(_provider("gemini", server.base_url, timeout_s=5))
    worker = Worker(provider, TOPICS, WorkerConfig(request_timeout_s=60), POLICY)
    try:
        outputs = await asyncio.gather(
            *(worker.handle(_envelope(f"Unlimited question {i}?")) for i in range(20))
        )
    finally:
        await provider.aclose()
    topics = Counter(_only(o)[0] for o in outputs)
    assert topics == {TOPICS.generated: 10, TOPICS.delayed: 10}
    assert server.stats.client_429s == 10


async def test_breaker_cools_the_provider_down(server: FakeLLMServer) -> None:
    """Three 503s in a row open the circuit: the next questions park at once without reaching
    the server; after the cooldown one probe goes through, succeeds and closes it."""
    breaker = CircuitBreaker(3, cooldown_s=0.5)
    provider = ProtectedProvider(_provider("gemini", server.base_url), breaker=breaker)
    policy = RetryPolicy(overload_tries=1, backoff_base_s=0.01, backoff_cap_s=5.0)
    worker = Worker(provider, TOPICS, WorkerConfig(request_timeout_s=10), policy)
    try:
        for i in range(3):
            topic, env = _only(await worker.handle(_envelope(f"Down {i}? [[fake:503]]")))
            assert (topic, env.error_class) == (TOPICS.delayed, ErrorClass.OVERLOAD)
        assert len(server.stats.arrivals) == 3
        for i in range(5):
            topic, env = _only(await worker.handle(_envelope(f"Healthy {i}?")))
            assert (topic, env.error_class) == (TOPICS.delayed, ErrorClass.OVERLOAD)
            assert env.error_detail and "circuit open" in env.error_detail
        assert len(server.stats.arrivals) == 3  # nothing reached the provider while open
        await asyncio.sleep(0.55)
        topic, env = _only(await worker.handle(_envelope("Healthy probe?")))
        assert topic == TOPICS.generated
        assert breaker.state.value == "closed" and len(server.stats.arrivals) == 4
    finally:
        await provider.aclose()
