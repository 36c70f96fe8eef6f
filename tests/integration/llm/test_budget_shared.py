"""Two PROCESSES share one spend budget through PostgreSQL (qaloop.llm.budget_pg): together
they stop at the limit, overshooting by at most one call each (a check and its charge are
two steps). The control run, each process with its own in-process ledger, spends the limit
once per process. And an unreachable database fails closed.

Needs PostgreSQL: QALOOP_PG_DSN (CI sets it; locally `eval "$(scripts/infra env)"`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from qaloop.llm.base import ServerError
from qaloop.llm.budget import period_bounds
from qaloop.llm.budget_pg import PostgresLedger

pytestmark = pytest.mark.integration

PG_DSN = os.environ.get("QALOOP_PG_DSN", "")
LIMIT, CALL_USD, TRIES = 1.0, 0.0625, 30  # binary fractions: sums are exact

SPENDER = textwrap.dedent(
    f"""
    import asyncio, json, sys, time
    from qaloop.llm.budget import Budget, BudgetConfig, LocalLedger
    from qaloop.llm.budget_pg import PostgresLedger

    backend, dsn, caller, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    async def main() -> None:
        ledger = PostgresLedger(dsn) if backend == "postgres" else LocalLedger()
        budget = Budget(BudgetConfig(per_key_usd={LIMIT!r}), ledger)
        await budget.check(caller)  # connect before the start line
        time.sleep(max(0.0, start_at - time.time()))
        spent = stops = 0
        for _ in range({TRIES}):
            if await budget.check(caller) is not None:
                stops += 1
                continue
            await budget.charge(caller, {CALL_USD!r})
            spent += 1
        await budget.aclose()
        print(json.dumps({{"spent": spent, "stops": stops}}))

    asyncio.run(main())
    """
)


def _two_spenders(backend: str, caller: str) -> list[dict[str, int]]:
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SPENDER, backend, PG_DSN, caller, str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out))
    return results


@pytest.fixture
def caller() -> str:
    if not PG_DSN:
        pytest.skip("QALOOP_PG_DSN is not set (run scripts/infra up)")
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    ledger = PostgresLedger(PG_DSN)
    asyncio.run(ledger.reset([f"key:{name}"]))
    asyncio.run(ledger.aclose())


def test_two_processes_stop_together_at_the_shared_limit(caller: str) -> None:
    results = _two_spenders("postgres", caller)
    spent = sum(r["spent"] for r in results) * CALL_USD
    assert LIMIT <= spent <= LIMIT + 2 * CALL_USD + 1e-9
    assert all(r["stops"] > 0 for r in results)

    async def stored() -> dict[str, float]:
        ledger = PostgresLedger(PG_DSN)
        try:
            start, _ = period_bounds("day", time.time())
            return await ledger.spent([f"key:{caller}"], start)
        finally:
            await ledger.aclose()

    assert asyncio.run(stored())[f"key:{caller}"] == pytest.approx(spent)


def test_control_per_process_ledgers_spend_the_limit_twice(caller: str) -> None:
    results = _two_spenders("local", caller)
    assert sum(r["spent"] for r in results) * CALL_USD == pytest.approx(2 * LIMIT)


async def test_unreachable_database_fails_closed() -> None:
    ledger = PostgresLedger("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(ServerError, match="spend ledger unavailable"):
        await ledger.spent(["global"], 0.0)
    await ledger.aclose()


async def test_the_llm_judge_stops_at_a_budget_the_worker_spent_in_the_shared_ledger() -> None:
    """The judge process builds its own Budget from the same settings (wiring.judge_gate): over
    the PostgreSQL ledger it sees what a worker charged, and at the limit makes no call."""
    if not PG_DSN:
        pytest.skip('needs QALOOP_PG_DSN (eval "$(scripts/infra env)")')
    from qaloop.llm.budget import budget_from_settings
    from qaloop.llm.judge import LLMJudge
    from qaloop.quality.cascade import JudgeItem
    from qaloop.quality.verdict import GateInput, Reason
    from qaloop.settings import Settings
    from qaloop.wiring import judge_gate

    caller = f"judge-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        scorer="llm_judge", budget_key_usd=LIMIT, budget_backend="postgres", budget_dsn=PG_DSN
    )
    worker_budget = budget_from_settings(settings)  # another process's, in real life
    assert worker_budget is not None
    stage, _ = judge_gate(settings)
    judge = stage.second
    assert isinstance(judge, LLMJudge) and judge.budget is not None
    item = JudgeItem(
        GateInput("Why is the sky blue?", "Sunlight scatters off air, blue light the most.", None),
        question_id="q",
        caller=caller,
    )
    try:
        [before] = await judge.judge_many([item])  # under the limit: graded and charged
        assert before.verdict.reason is not Reason.JUDGE_ERROR and before.cost.usage is not None
        await worker_budget.charge(caller, LIMIT)  # the worker spends the rest
        [after] = await judge.judge_many([item])
        assert after.verdict.reason is Reason.JUDGE_ERROR and not after.verdict.passed
        assert after.verdict.detail.startswith("budget:") and after.cost.calls == 0
        start, _ = period_bounds("day", time.time())
        spent = await worker_budget.ledger.spent([f"key:{caller}"], start)
        assert spent[f"key:{caller}"] == pytest.approx(LIMIT + before.cost.usage.cost_usd)
    finally:
        ledger = worker_budget.ledger
        assert isinstance(ledger, PostgresLedger)
        await ledger.reset([f"key:{caller}"])
        await worker_budget.aclose()
        await stage.aclose()
