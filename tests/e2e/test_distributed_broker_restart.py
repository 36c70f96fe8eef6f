"""The broker restarts mid-run: every accepted question still ends validated or failed, once.

The test starts its own broker with scripts/infra (a private state dir and ports), so the
restart never disturbs the shared broker other tests use; PostgreSQL is the shared one
(QALOOP_PG_DSN), in a private schema."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.distributed_stack import (
    Stack,
    Traffic,
    check_invariants,
    free_port,
    infra,
    pg_schema,
    questions,
    require_java,
    require_servers,
    wait_final,
)
from tests.e2e.test_distributed_pipeline import assert_graceful_stop

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@dataclass
class PrivateBroker:
    env: dict[str, str]
    bootstrap: str

    def infra(self, *args: str) -> None:
        infra(self.env, *args, timeout_s=180)

    def restart(self) -> None:
        self.infra("down", "kafka")
        self.infra("up", "kafka")


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    require_servers()
    require_java()
    state = tmp_path_factory.mktemp("kafka-state")
    port = free_port()
    env = {
        **os.environ,
        "QALOOP_STATE": str(state),
        "QALOOP_KAFKA_PORT": str(port),
        "QALOOP_KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    broker = PrivateBroker(env, f"127.0.0.1:{port}")
    broker.infra("up", "kafka")
    try:
        yield broker
    finally:
        broker.infra("down", "--purge", "kafka")


def test_broker_restart_mid_run(tmp_path: Path, private_broker: PrivateBroker) -> None:
    _, pg = require_servers()
    with pg_schema(pg) as (_, db):
        stack = Stack.create(
            tmp_path,
            private_broker.bootstrap,
            db,
            sim_latency_ms=5,
            sim_quota_rate=0.05,
            sim_quota_retry_after_s=0.3,
            sim_overload_rate=0.05,
            backoff_base_s=0.01,
            backoff_cap_s=0.1,
        )
        try:
            stack.start_all(workers=1)
            traffic = Traffic(stack.url)

            async def run() -> None:
                sending = asyncio.create_task(traffic.send(questions(300, "restart"), 40))
                while traffic.sent < 100:
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(private_broker.restart)
                await sending

            asyncio.run(run())
            assert len(traffic.accepted) == 300, traffic.other[:5]
            wait_final(db, 300, 150, stack)
            stack.assert_alive()
            counts = check_invariants(db, traffic.accepted)
            assert counts.get("validated", 0) + counts.get("failed", 0) == 300
            assert_graceful_stop(stack)
        finally:
            stack.stop_all()
