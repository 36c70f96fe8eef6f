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


def default_model(provider: str) -> str:
    """The model a provider calls when `llm_model` is unset (simulated/replay: their name)."""
    if provider == "gemini":
        return "gemini-2.5-flash-lite"
    if provider == "openai":
        return "gpt-4o-mini"
    return provider


def configured_deployments(settings: Settings) -> list[tuple[str, str]]:
    """Every provider/model these settings may call, primary first (the price table must
    list each one)."""
    return [(settings.llm, settings.llm_model or default_model(settings.llm))]


def make_raw_provider(settings: Settings) -> Provider:
    """The provider alone, without the shared protection (tests, benchmarks)."""
    if settings.llm == "simulated":
        return SimulatedProvider(simulated_config(settings))
    if settings.llm == "replay":
        from qaloop.llm.replay import ReplayProvider

        if not settings.replay_file:
            raise ValueError("--llm replay needs a recorded answers file: set QALOOP_REPLAY_FILE")
        return ReplayProvider(settings.replay_file, latency_ms=settings.replay_latency_ms)
    if settings.llm == "gemini":
        try:
            from qaloop.llm.gemini import DEFAULT_MODEL, GeminiProvider
        except ImportError as exc:
            raise ValueError('--llm gemini needs the extra: pip install "qaloop[gemini]"') from exc
        return GeminiProvider(
            settings.api_key() or "",
            model=settings.llm_model or DEFAULT_MODEL,
            base_url=settings.llm_base_url,
            timeout_s=settings.llm_timeout_s,
            max_output_tokens=settings.llm_max_output_tokens,
        )
    if settings.llm == "openai":
        from qaloop.llm.openai_compat import DEFAULT_BASE_URL, OpenAICompatProvider
        from qaloop.llm.openai_compat import DEFAULT_MODEL as OPENAI_MODEL

        return OpenAICompatProvider(
            base_url=settings.llm_base_url or DEFAULT_BASE_URL,
            model=settings.llm_model or OPENAI_MODEL,
            api_key=settings.api_key(),
            timeout_s=settings.llm_timeout_s,
            max_output_tokens=settings.llm_max_output_tokens,
            max_connections=max(settings.llm_concurrency, settings.llm_max_in_flight),
        )
    raise ValueError(f"LLM provider {settings.llm!r} is not available in this build")


def make_provider(settings: Settings) -> Provider:
    """The configured provider behind the protection every provider shares
    (qaloop.llm.protection): budget, circuit breaker, concurrency bound, rate limit, timeout."""
    from qaloop.llm.protection import protect

    return protect(make_raw_provider(settings), settings)
