"""LLM providers behind one interface, and the error tree they map failures into."""

from qaloop.llm.base import (
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    PermanentError,
    Provider,
    QuotaDayError,
    QuotaMinuteError,
    ServerError,
)

__all__ = [
    "Generation",
    "GenerationRequest",
    "LLMError",
    "OverloadError",
    "PermanentError",
    "Provider",
    "QuotaDayError",
    "QuotaMinuteError",
    "ServerError",
]
