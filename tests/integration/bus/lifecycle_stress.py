"""Stress the Kafka adapter's client lifecycle in its own process, where a crash inside
librdkafka (SIGSEGV) ends the process instead of the test run: closes racing polls, commits,
pause/resume and publishes, calls after close, and closed clients collected by the cyclic GC
on other threads. `python -m tests.integration.bus.lifecycle_stress BOOTSTRAP ROUNDS` prints
`ok <rounds>` and exits 0 when every round held.

The patterns are the usual causes of crashes with confluent-kafka (one client used by two
threads at once, close while another thread polls, calls after close, a client destroyed by
a finaliser); the adapter must make each of them harmless."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import random
import sys
import threading
import uuid

from qaloop.bus.base import OutMessage, Topics
from qaloop.bus.kafka import KafkaBus, KafkaSettings


async def one_round(bootstrap: str, rng: random.Random) -> None:
    topics = Topics.with_prefix(f"stress{uuid.uuid4().hex[:10]}")
    bus = KafkaBus(KafkaSettings(bootstrap, partitions=3, session_timeout_ms=6000), topics)
    await bus.start()
    try:
        out = [OutMessage(topics.questions, f"k{i}", b"x" * 64, {}) for i in range(300)]
        await bus.publish_many(out)
        consumers = [bus.consumer(f"{topics.questions}.g", [topics.questions]) for _ in range(2)]
        stop = asyncio.Event()

        async def churn(c: object) -> None:
            from qaloop.bus.kafka import KafkaConsumer

            assert isinstance(c, KafkaConsumer)
            while not stop.is_set():
                got = await c.poll(100, rng.choice([0.0, 0.01, 0.2]))
                if got:
                    await c.commit(got[: rng.randrange(len(got) + 1)])
                if rng.random() < 0.2:
                    (c.pause if rng.random() < 0.5 else c.resume)()

        tasks = [asyncio.create_task(churn(c)) for c in consumers]
        # a publish in flight while the consumers churn and close
        publishing = asyncio.create_task(bus.publish_many(out[:50]))
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        # close while a poll (with its callbacks) may be running on the consumer's thread; a
        # closed consumer's poll returns at once, so the churners stop first
        stop.set()
        for c in consumers:
            await c.close()
        await asyncio.gather(*tasks)
        await publishing
        for c in consumers:  # every call after close is a no-op, never a call on a freed handle
            assert await c.poll(10, 0.01) == []
            await c.commit([])
            c.pause()
            c.resume()
            await c.close()
        del tasks, consumers, c
    finally:
        await bus.close()
    # the clients are now garbage (the consumers are in reference cycles through their
    # callbacks): collect them on another thread, as the cyclic GC may do at any time
    collector = threading.Thread(target=gc.collect)
    collector.start()
    collector.join()


class _Complaints(logging.Handler):
    """What the adapter logged at WARNING or above: a call that reached a closed handle (the
    binding answers RuntimeError('Consumer closed') when it notices; librdkafka itself would
    crash on a handle freed under it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


async def main(bootstrap: str, rounds: int) -> None:
    complaints = _Complaints()
    logging.getLogger("qaloop.bus.kafka").addHandler(complaints)
    rng = random.Random(13)
    for _ in range(rounds):
        await one_round(bootstrap, rng)
    if complaints.records:
        raise SystemExit(f"the adapter complained: {complaints.records[:3]}")


if __name__ == "__main__":
    faulthandler.enable(all_threads=True)
    bootstrap, rounds = sys.argv[1], int(sys.argv[2])
    asyncio.run(main(bootstrap, rounds))
    print(f"ok {rounds}")
