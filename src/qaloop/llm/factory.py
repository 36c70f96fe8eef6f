"""Build the configured provider from Settings (the only place that knows every provider)."""

from __future__ import annotations

from qaloop.llm.base import Provider
from qaloop.llm.deployments import Deployment, DeploymentError, default_model
from qaloop.llm.protection import (
    DAY_S,
    CircuitBreaker,
    Limit,
    LocalRateLimiter,
    ProtectedProvider,
    RateLimiter,
)
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
        kinds=dict(settings.sim_kinds),
        hard_rate=settings.sim_hard_rate,
        feedback_effect=settings.sim_feedback_effect,
        judge_error_rate=settings.sim_judge_error_rate,
    )


def configured_deployments(settings: Settings) -> list[tuple[str, str]]:
    """Every provider/model these settings may call, primary first, the LLM judge's last (the
    price table must list each one)."""
    from qaloop.llm.deployments import parse

    primary = (settings.llm, settings.llm_model or default_model(settings.llm))
    found = [primary, *((d.provider, d.model) for d in parse(settings.llm_fallbacks))]
    found += [(d.provider, d.model) for d in escalation_only(settings)]
    js = judge_settings(settings)
    judge = (js.llm, js.llm_model or default_model(js.llm))
    return found if judge in found else [*found, judge]


def deployment_settings(settings: Settings, deployment: Deployment) -> Settings:
    """The settings of one fallback deployment: the primary's, with its provider, model, URL,
    key and limits (its own buckets: the rate key is provider:model)."""
    update: dict[str, object] = {
        "llm": deployment.provider,
        "llm_model": deployment.model,
        "llm_base_url": deployment.base_url,
        "llm_rate_key": None,
    }
    if deployment.api_key_file is not None:
        update |= {"llm_api_key": None, "llm_api_key_file": deployment.api_key_file}
    elif deployment.provider != settings.llm:  # another provider's key would be wrong
        update |= {"llm_api_key": None, "llm_api_key_file": None}
    for name in ("rpm", "tpm", "rpd"):
        value = getattr(deployment, name)
        if value is not None:
            update[f"llm_{name}"] = value
    return settings.model_copy(update=update)


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
    (qaloop.llm.protection): budget, circuit breaker, concurrency bound, rate limit, timeout.
    Its rate limits leave the LLM judge its share (make_judge_provider). With fallbacks or an
    escalation (qaloop.llm.escalation), a chain of deployments, each with its own limits."""
    from qaloop.llm.deployments import parse
    from qaloop.llm.escalation import escalation_from_settings
    from qaloop.llm.fallback import FallbackProvider

    generation = _quota_share(settings, 1 - settings.judge_quota_share)
    primary = protect(make_raw_provider(settings), generation)
    fallbacks = parse(settings.llm_fallbacks)
    escalation = list(escalation_from_settings(settings).deployments)
    if not fallbacks and not escalation:
        return primary
    main = Deployment(settings.llm, settings.llm_model or default_model(settings.llm))
    chain: list[tuple[Deployment, Provider]] = [(main, primary)]
    for deployment in fallbacks:
        if deployment.key == main.key:
            raise DeploymentError(f"fallbacks: {main.key} is the primary model already")
        own = deployment_settings(settings, deployment)
        chain.append((deployment, protect(make_raw_provider(own), own)))
    only = escalation_only(settings)
    for deployment in only:
        own = deployment_settings(settings, deployment)
        chain.append((deployment, protect(make_raw_provider(own), own)))
    return FallbackProvider(
        chain,
        escalation=escalation,
        escalation_only=[d.key for d in only],
        quota_day_rest_s=settings.quota_day_delay_s,
    )


def escalation_only(settings: Settings) -> list[Deployment]:
    """Models of the primary's provider that only the escalation names (e.g. the alias
    QALOOP_LAST_ATTEMPT_MODEL): deployments of their own (limits, breaker, price), at the
    primary's URL and key. Another provider must be a fallback (FallbackProvider says so)."""
    from qaloop.llm.deployments import parse, parse_one
    from qaloop.llm.escalation import escalation_from_settings

    known = {f"{settings.llm}/{settings.llm_model or default_model(settings.llm)}"}
    known |= {d.key for d in parse(settings.llm_fallbacks)}
    found: list[Deployment] = []
    for key in dict.fromkeys(escalation_from_settings(settings).deployments):
        d = parse_one(key)
        if key not in known and d.provider == settings.llm:
            found.append(Deployment(d.provider, d.model, settings.llm_base_url))
            known.add(key)
    return found


def judge_settings(settings: Settings) -> Settings:
    """The settings the LLM judge's provider is built from: its provider and model, its share
    of the quota, under a limiter key of its own."""
    llm = settings.llm if settings.judge_llm == "same" else settings.judge_llm
    if llm == "replay":  # recorded answers can't grade anything
        llm = "simulated"
    shared = _quota_share(settings, settings.judge_quota_share)
    base_key = settings.llm_rate_key or f"{llm}:{settings.judge_model or settings.llm_model or llm}"
    return shared.model_copy(
        update={
            "llm": llm,
            "llm_model": settings.judge_model or settings.llm_model,
            "llm_rate_key": f"{base_key}:judge",
            "llm_max_in_flight": settings.judge_concurrency,
            "llm_max_output_tokens": min(256, settings.llm_max_output_tokens),
        }
    )


def make_judge_provider(settings: Settings) -> Provider:
    js = judge_settings(settings)
    return protect(make_raw_provider(js), js)


def _quota_share(settings: Settings, share: float) -> Settings:
    """Settings whose client-side limits are `share` of the configured ones (0 stays 0)."""
    if not (settings.llm_rpm or settings.llm_tpm or settings.llm_rpd):
        return settings

    def part(limit: int) -> int:
        return max(1, int(limit * share)) if limit else 0

    return settings.model_copy(
        update={
            "llm_rpm": part(settings.llm_rpm),
            "llm_tpm": part(settings.llm_tpm),
            "llm_rpd": part(settings.llm_rpd),
        }
    )


# The protection's factories live here, not in qaloop.llm.protection: the PostgreSQL limiter
# builds on protection's buckets, so protection importing it back made a cycle.


def limits_from_settings(settings: Settings) -> list[Limit]:
    limits: list[Limit] = []
    if settings.llm_rpm:
        limits.append(Limit.make("rpm", settings.llm_rpm, 60.0, burst=settings.llm_rate_burst))
    if settings.llm_tpm:
        limits.append(Limit.make("tpm", settings.llm_tpm, 60.0))
    if settings.llm_rpd:
        limits.append(Limit.make("rpd", settings.llm_rpd, DAY_S, per_day=True))
    return limits


def make_limiter(settings: Settings, key: str) -> RateLimiter | None:
    limits = limits_from_settings(settings)
    if not limits:
        return None
    if settings.llm_rate_backend == "local":
        return LocalRateLimiter(limits)
    dsn = settings.llm_rate_dsn or (
        settings.db if settings.db.startswith(("postgresql://", "postgres://")) else None
    )
    if not dsn:
        raise ValueError(
            "llm_rate_backend=postgres needs QALOOP_LLM_RATE_DSN (or a postgresql:// QALOOP_DB)"
        )
    from qaloop.llm.ratelimit_pg import PostgresRateLimiter

    return PostgresRateLimiter(dsn, key, limits)


def protect(inner: Provider, settings: Settings) -> ProtectedProvider:
    """Wrap a provider with the protection configured in Settings."""
    model = str(getattr(inner, "model", None) or settings.llm_model or inner.name)
    key = settings.llm_rate_key or f"{inner.name}:{model}"
    failures = settings.llm_breaker_failures
    if failures is None:
        failures = 5 if inner.name in ("gemini", "openai") else 0
    return ProtectedProvider(
        inner,
        limiter=make_limiter(settings, key),
        breaker=CircuitBreaker(failures, settings.llm_breaker_cooldown_s) if failures else None,
        max_in_flight=settings.llm_max_in_flight or None,
        timeout_s=settings.llm_timeout_s,
        max_queue_wait_s=settings.llm_max_queue_wait_s,
        max_calls_per_question=settings.llm_max_calls or None,
        expected_output_tokens=min(256, settings.llm_max_output_tokens),
    )
