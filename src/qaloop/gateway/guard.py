"""What guards a gateway, built from Settings in one place for both modes: API keys (when
auth is on) and the admission checks (backlog, LLM budget, per-key quota)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

from qaloop.gateway.admission import Admission, BacklogLimit, DailyCallBudget, Rejection
from qaloop.gateway.auth import (
    AuthConfig,
    Authenticator,
    DbKeys,
    FileKeys,
    KeySource,
    QuotaCheck,
    QuotaCounter,
)
from qaloop.gateway.http import Readiness, storage_ready
from qaloop.gateway.service import QuestionService
from qaloop.settings import Settings
from qaloop.storage.base import Repository

if TYPE_CHECKING:
    from qaloop.bus.base import Topics
    from qaloop.bus.kafka import KafkaBus
    from qaloop.llm.budget import Budget


class AuthSetupError(ValueError):
    """Auth is on but there is nothing to check keys against (a one-line CLI error)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_enabled(settings: Settings) -> bool:
    if settings.auth == "auto":
        return not is_loopback(settings.host)
    return settings.auth == "on"


def build_auth(settings: Settings, service: QuestionService) -> Authenticator | None:
    if not auth_enabled(settings):
        return None
    sources: list[KeySource] = []
    if settings.api_keys_file:
        sources.append(FileKeys(settings.api_keys_file))
    if settings.api_keys_db:
        sources.append(DbKeys(settings.db))
    if not sources:
        why = "QALOOP_AUTH=on" if settings.auth == "on" else f"host {settings.host} is not loopback"
        raise AuthSetupError(
            f"API keys are required ({why}) but none are configured: set QALOOP_API_KEYS_FILE "
            "or QALOOP_API_KEYS_DB=true (docs/security.md), or QALOOP_AUTH=off"
        )
    try:
        auth = Authenticator(
            sources,
            AuthConfig(
                rate_per_s=settings.key_rate_per_s,
                burst=settings.key_burst,
                quota_per_day=settings.key_quota_per_day,
                metrics_need_admin=settings.metrics_auth,
            ),
            registry=service.metrics.registry,
            quota=shared_quota(settings),
        )
    except (OSError, ValueError) as exc:
        raise AuthSetupError(f"cannot load API keys: {exc}") from None
    return auth


def shared_quota(settings: Settings) -> QuotaCounter | None:
    """The per-key quota is counted where storage is: PostgreSQL is shared by every gateway
    on it (one count for all); SQLite has one gateway (its lock), so the process counts."""
    if settings.db.startswith(("postgresql://", "postgres://")):
        from qaloop.gateway.quota_pg import PostgresQuota

        return PostgresQuota(settings.db)
    return None


def guard_gateway(
    service: QuestionService,
    settings: Settings,
    *,
    backlog: Callable[[], int],
    backlog_is_slow: bool,
    llm_calls: Callable[[], int] | None = None,
    budget: Budget | None = None,
) -> Authenticator | None:
    """Add the admission checks to `service` and return the authenticator (None: auth off).
    `budget`: the spend budget (qaloop.llm.budget) whose hard limit refuses new questions."""
    if service.admission is None:
        service.admission = Admission(registry=service.metrics.registry)
    admission = service.admission
    if settings.max_backlog:
        admission.add(BacklogLimit(settings.max_backlog, backlog, slow=backlog_is_slow))
    if settings.llm_rpd and llm_calls is not None:
        admission.add(DailyCallBudget(settings.llm_rpd, llm_calls))
    if budget is not None:
        from qaloop.llm.budget import BudgetAdmission, LocalLedger

        # A shared ledger is a database read: reuse a caller's answer for a second.
        refresh_s = 0.0 if isinstance(budget.ledger, LocalLedger) else 1.0
        admission.add(BudgetAdmission(budget, Rejection, refresh_s=refresh_s))
    auth = build_auth(settings, service)
    if auth is not None:
        admission.add(QuotaCheck(auth))
    return auth


def unfinished_count(repo: Repository) -> int:
    """Questions accepted and not final (the distributed gateway's backlog)."""
    return sum(n for state, n in repo.state_counts().items() if state not in FINAL_STATES)


FINAL_STATES = ("validated", "failed")


def kafka_ready(
    service: QuestionService, bus: KafkaBus, topics: Topics, timeout_s: float = 2.0
) -> Readiness:
    """Readiness of a distributed gateway: storage answers and the broker gives offsets."""
    storage = storage_ready(service, timeout_s)

    async def check() -> dict[str, str]:
        parts = await storage()
        try:
            await asyncio.wait_for(
                asyncio.to_thread(bus.end_offsets, [topics.questions]), timeout_s
            )
            parts["bus"] = "ok"
        except Exception as exc:  # any failure means "not ready", with its reason
            parts["bus"] = f"unavailable: {type(exc).__name__}: {exc}"[:200]
        return parts

    return check
