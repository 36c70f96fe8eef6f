from __future__ import annotations

from pathlib import Path

from qaloop.dataset import load_sample
from qaloop.demo import run_demo
from qaloop.settings import Settings

TIMINGS = {"hit_p50_ms", "hit_p95_ms", "queued_p50_ms", "queued_p95_ms", "wall_s"}


async def _summary(tmp_path: Path, name: str) -> dict[str, object]:
    settings = Settings(
        db=f"sqlite:///{tmp_path / name}",
        sim_overload_rate=0.1,
        sim_quota_rate=0.1,
        sim_quota_retry_after_s=0.02,
        sim_latency_ms=2,
        backoff_base_s=0.001,
        backoff_cap_s=0.02,
    )
    result = await run_demo(settings, load_sample(), requests=250, unique=100, wave=40, seed=7)
    return {k: v for k, v in result.summary.items() if k not in TIMINGS}


async def test_demo_counts_are_repeatable_and_reconcile(tmp_path: Path) -> None:
    first = await _summary(tmp_path, "a.db")
    second = await _summary(tmp_path, "b.db")
    assert first == second
    s = first
    served = (
        s["answered_cache"],
        s["answered_storage"],
        s["queued_new"],
        s["joined_in_flight"],
        s["answered_failed"],
    )
    assert sum(served) == s["offered"] == 250  # type: ignore[call-overload]
    assert s["queued_new"] == s["unique_questions"]
    validated = sum(s["validated_by_attempt"].values())  # type: ignore[attr-defined]
    assert validated + s["gave_up_low_score"] + s["gave_up_errors"] == s["unique_questions"]
    assert s["errors"]["overload"]["recovered"] > 0  # type: ignore[index]
    assert s["errors"]["quota_minute"]["recovered"] > 0  # type: ignore[index]
