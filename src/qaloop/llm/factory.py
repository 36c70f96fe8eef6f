"""Build the configured provider from Settings (the only place that knows every provider)."""

from __future__ import annotations

from qaloop.llm.base import Provider
from qaloop.llm.simulated import SimulatedConfig, SimulatedProvider
from qaloop.settings import Settings


def simulated_config(settings: Settings) -> SimulatedConfig:
    return SimulatedConfig(
        seed=settings.sim_seed,
        latency_median_ms=settings.sim_latency_ms,
        overload_rate=settings.sim_overload_rate,
        quota_rate=settings.sim_quota_rate,
        quota_retry_after_s=settings.sim_quota_retry_after_s,
        permanent_rate=settings.sim_permanent_rate,
    )


def make_provider(settings: Settings) -> Provider:
    if settings.llm == "simulated":
        return SimulatedProvider(simulated_config(settings))
    raise ValueError(f"LLM provider {settings.llm!r} is not available in this build")
