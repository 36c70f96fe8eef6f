"""Escalation by attempt: the one place that decides the model and the temperature of attempt
n, for the interactive worker and the batch lane alike (docs/spend.md).

    QALOOP_LLM_ESCALATION="gemini/gemini-2.5-flash-lite,gemini/gemini-2.5-flash"
        the deployment (provider/model) attempt 1, 2, ... starts at; the last one repeats.
        Each is the primary, a fallback, or another model of the primary's provider.
    QALOOP_ATTEMPT_TEMPERATURES="[0.2, 0.7, 1.0]"
        the sampling temperature of attempt 1, 2, ...; the last one repeats.
    QALOOP_LAST_ATTEMPT_MODEL="gemini-2.5-flash"
        an alias: the primary up to the last attempt, then <QALOOP_LLM>/<that model>, i.e.
        QALOOP_LLM_ESCALATION="<primary>,...,<primary>,<llm>/<model>" (max_attempts entries).
        Setting it together with QALOOP_LLM_ESCALATION is a start-up error.

Pure: no settings object, no I/O (the settings validator and the factory call it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from qaloop.llm.deployments import DeploymentError, default_model, parse_keys, parse_one

T = TypeVar("T")


class EscalationError(DeploymentError):
    """Escalation settings that contradict each other."""


@dataclass(frozen=True, slots=True)
class Step:
    """What attempt n runs with: the deployment it starts at ("provider/model"; None: the
    primary, falling back along the chain as usual) and its temperature (None: the
    provider's default)."""

    deployment: str | None = None
    temperature: float | None = None

    @property
    def provider(self) -> str | None:
        return None if self.deployment is None else self.deployment.partition("/")[0]

    @property
    def model(self) -> str | None:
        return None if self.deployment is None else self.deployment.partition("/")[2]


@dataclass(frozen=True, slots=True)
class Escalation:
    deployments: tuple[str, ...] = ()  # attempt 1, 2, ...; the last repeats
    temperatures: tuple[float, ...] = ()

    def step(self, attempt: int) -> Step:
        return Step(_nth(self.deployments, attempt), _nth(self.temperatures, attempt))


def _nth(values: tuple[T, ...], attempt: int) -> T | None:
    if not values:
        return None
    return values[min(max(attempt, 1), len(values)) - 1]


def deployments(
    *,
    llm: str,
    primary_model: str,
    escalation: str,
    last_attempt_model: str | None,
    max_attempts: int,
) -> tuple[str, ...]:
    """The escalation list from the settings: QALOOP_LLM_ESCALATION, or the alias
    QALOOP_LAST_ATTEMPT_MODEL spelled out; both set -> EscalationError."""
    listed = parse_keys(escalation)
    last = (last_attempt_model or "").strip()
    if listed and last:
        raise EscalationError(
            "QALOOP_LAST_ATTEMPT_MODEL and QALOOP_LLM_ESCALATION are both set: use one. "
            f"LAST_ATTEMPT_MODEL={last} means QALOOP_LLM_ESCALATION="
            + ",".join(_alias(llm, primary_model, last, max_attempts))
        )
    if listed:
        return tuple(listed)
    if last:
        return _alias(llm, primary_model, last, max_attempts)
    return ()


def _alias(llm: str, primary_model: str, last: str, max_attempts: int) -> tuple[str, ...]:
    final = parse_one(last if "/" in last else f"{llm}/{last}").key
    return (*[f"{llm}/{primary_model}"] * (max(1, max_attempts) - 1), final)


def parse_temperatures(values: list[float] | tuple[float, ...]) -> tuple[float, ...]:
    for t in values:
        if not 0.0 <= t <= 2.0:
            raise EscalationError(f"attempt temperatures must be in [0, 2], got {t}")
    return tuple(values)


def escalation_from_settings(settings: Any) -> Escalation:
    """The one Escalation of these settings (qaloop.settings.Settings)."""
    return Escalation(
        deployments(
            llm=settings.llm,
            primary_model=settings.llm_model or default_model(settings.llm),
            escalation=settings.llm_escalation,
            last_attempt_model=settings.last_attempt_model,
            max_attempts=settings.max_attempts,
        ),
        parse_temperatures(settings.attempt_temperatures),
    )
