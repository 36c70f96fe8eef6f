from __future__ import annotations

import itertools

import pytest

from qaloop.report import sync_async as S

# Fast: 1.5 s model latency -> 15 ms wall; 40 requests at 10/s -> 40 ms of arrivals.
CFG = S.SyncAsyncConfig(
    n_requests=40,
    n_questions=200,
    rates=(10.0,),
    rate=10.0,
    time_factor=0.01,
    overload_rate=0.25,
    quota_rate=0.05,
    quota_retry_after_s=5.0,
    sync_workers=2,
    async_concurrency=8,
    seed=11,
)


@pytest.fixture(scope="module")
def results() -> list[S.PathResult]:
    return S.run(CFG)


def test_workload_is_seeded_and_shared() -> None:
    assert S.workload(CFG) == S.workload(CFG)
    questions, reqs = S.workload(CFG)
    assert len(questions) == 200 and len(reqs) == 40
    assert all(a < b for (a, _), (b, _) in itertools.pairwise(reqs))


def test_both_paths_see_every_request(results: list[S.PathResult]) -> None:
    sync, asyn = results
    assert (sync.name, asyn.name) == ("sync @10/s", "async @10/s")
    for r in results:
        assert r.requests == 40
        assert r.hits + len(r.miss_latency_s) == 40
        assert len(r.hit_latency_s) == r.hits


def test_sync_makes_one_call_per_miss_and_loses_failed_ones(results: list[S.PathResult]) -> None:
    sync = results[0]
    assert sync.llm_calls == len(sync.miss_latency_s)
    assert sync.failed_requests == sync.llm_errors > 0
    assert sync.lost_questions > 0


def test_async_retries_instead_of_losing_questions(results: list[S.PathResult]) -> None:
    sync, asyn = results
    assert asyn.llm_errors > 0
    assert asyn.lost_questions == 0
    assert asyn.failed_requests == 0
    assert asyn.answered >= sync.answered
    assert asyn.llm_calls > asyn.answered  # retries and regenerations cost calls


def test_table_has_a_column_per_path(results: list[S.PathResult]) -> None:
    table = S.table(results, CFG)
    assert table.columns == ["metric", "sync @10/s", "async @10/s"]
    lost = next(r for r in table.rows if r[0] == "questions lost to LLM errors")
    assert lost[2] == 0
    assert "Time scaled by 0.01" in table.note
