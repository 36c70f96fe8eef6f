"""Helpers shared by the HTTP providers: retry-delay parsing, per-day reset time, and the
classification of transport failures (timeouts, refused connections)."""

from __future__ import annotations

import email.utils
import re
import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from qaloop.llm.base import LLMError, ServerError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*s\s*$")
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _transport_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [httpx.TransportError, TimeoutError, ConnectionError]
    try:  # google-genai 3.x sends its requests with httpx2, a fork of httpx
        import httpx2

        types.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(types)


TRANSPORT_ERRORS = _transport_error_types()


def transport_error(exc: BaseException, provider: str) -> LLMError:
    """A request that never got an HTTP answer: timed out, refused, reset. Transient."""
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return ServerError(f"{provider}: request timed out ({name})")
    return ServerError(f"{provider}: connection failed ({name})")


def parse_duration_s(value: Any) -> float | None:
    """A google.protobuf.Duration as JSON ("17s", "0.5s") or as {"seconds", "nanos"}."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict):
        try:
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """An HTTP Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_go_duration_s(value: str | None) -> float | None:
    """OpenAI's x-ratelimit-reset-requests style: "1s", "6m0s", "20ms", "1h2m3.5s"."""
    if not value:
        return None
    parts = _GO_DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def seconds_until_pacific_midnight(now: float | None = None) -> float | None:
    """Gemini's per-day quotas reset at midnight Pacific time."""
    try:
        from zoneinfo import ZoneInfo

        tz = ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database on this machine: let the retry policy decide
        return None
    current = datetime.fromtimestamp(time.time() if now is None else now, tz)
    midnight = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (midnight - current).total_seconds())
