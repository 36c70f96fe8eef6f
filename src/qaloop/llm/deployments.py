"""Deployments: the provider/model pairs a fallback chain may call, parsed from one setting.

    QALOOP_LLM_FALLBACKS="gemini/gemini-2.5-flash,openai/gpt-4o-mini@http://127.0.0.1:11434/v1"

or, for per-deployment keys and limits, a JSON list:

    QALOOP_LLM_FALLBACKS='[{"provider": "openai", "model": "gpt-4o-mini",
        "base_url": "https://api.openai.com/v1", "api_key_file": "/run/secrets/openai",
        "rpm": 500, "tpm": 200000, "rpd": 10000}]'

Pure (no settings, no I/O): the settings validator and the factory both call `parse`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROVIDERS = ("simulated", "replay", "gemini", "openai")
_INT_FIELDS = ("rpm", "tpm", "rpd")


class DeploymentError(ValueError):
    """A fallback or escalation entry that can't be used."""


@dataclass(frozen=True, slots=True)
class Deployment:
    provider: str
    model: str
    base_url: str | None = None
    api_key_file: str | None = None
    rpm: int | None = None  # None: the primary's limit (counted in this deployment's buckets)
    tpm: int | None = None
    rpd: int | None = None

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


def default_model(provider: str) -> str:
    """The model a provider calls when `llm_model` is unset (simulated/replay: their name)."""
    if provider == "gemini":
        return "gemini-2.5-flash-lite"
    if provider == "openai":
        return "gpt-4o-mini"
    return provider


def _check_provider(provider: str, where: str) -> str:
    if provider not in PROVIDERS:
        raise DeploymentError(f"{where}: unknown provider {provider!r} (one of {PROVIDERS})")
    return provider


def parse_one(text: str) -> Deployment:
    """ "provider/model" or "provider/model@base_url"."""
    spec, _, base_url = text.strip().partition("@")
    provider, sep, model = spec.partition("/")
    if not sep or not provider.strip() or not model.strip():
        raise DeploymentError(f"deployment {text!r}: expected provider/model[@base_url]")
    return Deployment(
        _check_provider(provider.strip(), f"deployment {text!r}"),
        model.strip(),
        base_url.strip() or None,
    )


def _from_object(obj: Any, i: int) -> Deployment:
    where = f"deployment {i}"
    if not isinstance(obj, dict):
        raise DeploymentError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = set(obj) - {"provider", "model", "base_url", "api_key_file", *_INT_FIELDS}
    if unknown:
        raise DeploymentError(f"{where}: unknown field(s) {sorted(unknown)}")
    provider, model = obj.get("provider"), obj.get("model")
    if not isinstance(provider, str) or not isinstance(model, str) or not model.strip():
        raise DeploymentError(f"{where}: needs a provider and a model")
    limits: dict[str, int | None] = {}
    for name in _INT_FIELDS:
        value = obj.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise DeploymentError(f"{where}: {name} must be an integer >= 0, got {value!r}")
        limits[name] = value
    for name in ("base_url", "api_key_file"):
        if obj.get(name) is not None and not isinstance(obj.get(name), str):
            raise DeploymentError(f"{where}: {name} must be a string")
    return Deployment(
        _check_provider(provider, where),
        model.strip(),
        obj.get("base_url"),
        obj.get("api_key_file"),
        limits["rpm"],
        limits["tpm"],
        limits["rpd"],
    )


def parse(text: str) -> list[Deployment]:
    """The comma list or the JSON list; empty -> no fallbacks."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DeploymentError(f"fallbacks: not valid JSON: {exc}") from exc
        if not isinstance(data, list):
            raise DeploymentError("fallbacks: expected a JSON list")
        found = [_from_object(obj, i) for i, obj in enumerate(data, 1)]
    else:
        found = [parse_one(part) for part in text.split(",") if part.strip()]
    keys = [d.key for d in found]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise DeploymentError(f"fallbacks: {', '.join(dupes)} listed twice")
    return found


def parse_keys(text: str) -> list[str]:
    """An escalation list: "provider/model,provider/model" (attempt 1, 2, ...)."""
    return [parse_one(part).key for part in text.split(",") if part.strip()]
