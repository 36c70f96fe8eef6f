"""The price table: what one token costs, per provider and model (USD per million tokens).

The shipped table is `qaloop/llm/prices.toml`; `price_table` (QALOOP_PRICE_TABLE) names a
user's copy. A table is checked when it is loaded (every price a number >= 0, no duplicate
rows) and against the models qaloop is configured to call (`require`): a bad or incomplete
table is a PriceTableError at start, never a call silently counted as free.

Cost of a call, from the provider's usage metadata:

    (input - cached) * input + cached * cached_input + output * output     (interactive)
    input * batch_input + output * batch_output                            (batch lane)

Both APIs count cached tokens inside the input count (Gemini `cachedContentTokenCount` within
`promptTokenCount`, OpenAI `prompt_tokens_details.cached_tokens` within `prompt_tokens`).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

PER_TOKENS = 1_000_000
PRICE_FIELDS = ("input", "output", "cached_input", "batch_input", "batch_output")


class PriceTableError(ValueError):
    """The price table can't be read, has a bad price, or lacks a model qaloop will call."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    provider: str
    model: str
    input: float  # USD per million input tokens
    output: float
    cached_input: float
    batch_input: float
    batch_output: float
    source: str = ""
    read_on: str = ""

    def cost(
        self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, *, batch: bool = False
    ) -> float:
        """USD for one call's tokens."""
        if batch:
            total = input_tokens * self.batch_input + output_tokens * self.batch_output
        else:
            cached = min(max(cached_tokens, 0), input_tokens)
            total = (
                (input_tokens - cached) * self.input
                + cached * self.cached_input
                + output_tokens * self.output
            )
        return total / PER_TOKENS


def _price(row: Mapping[str, Any], where: str, name: str) -> float:
    if name not in row:
        raise PriceTableError(f"{where}: missing price {name!r}")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceTableError(f"{where}: price {name!r} is not a number: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise PriceTableError(f"{where}: price {name!r} must be a finite number >= 0, got {value}")
    return float(value)


class PriceTable:
    def __init__(self, prices: Iterable[ModelPrice], source: str = "") -> None:
        self.source = source
        self._by_key: dict[tuple[str, str], ModelPrice] = {}
        for price in prices:
            key = (price.provider, price.model)
            if key in self._by_key:
                raise PriceTableError(f"{source}: {price.provider}/{price.model} listed twice")
            self._by_key[key] = price

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Any:
        return iter(self._by_key.values())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "") -> PriceTable:
        rows = data.get("price")
        if not isinstance(rows, list) or not rows:
            raise PriceTableError(f"{source}: no [[price]] rows")
        prices: list[ModelPrice] = []
        for i, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise PriceTableError(f"{source}: price row {i} is not a table")
            provider, model = row.get("provider"), row.get("model")
            where = f"{source}: price row {i}"
            if not isinstance(provider, str) or not provider.strip():
                raise PriceTableError(f"{where}: missing provider")
            if not isinstance(model, str) or not model.strip():
                raise PriceTableError(f"{where}: missing model")
            where = f"{source}: {provider}/{model}"
            p = {f: _price(row, where, f) for f in PRICE_FIELDS}
            prices.append(
                ModelPrice(
                    provider.strip(),
                    model.strip(),
                    input=p["input"],
                    output=p["output"],
                    cached_input=p["cached_input"],
                    batch_input=p["batch_input"],
                    batch_output=p["batch_output"],
                    source=str(row.get("source", "")),
                    read_on=str(row.get("read_on", "")),
                )
            )
        return cls(prices, source)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The table at `path`, or the one shipped in the package."""
        if path is None:
            text = resources.files("qaloop.llm").joinpath("prices.toml").read_text("utf-8")
            source = "qaloop/llm/prices.toml"
        else:
            source = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise PriceTableError(f"price table {source}: {exc.strerror or exc}") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PriceTableError(f"price table {source}: not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source)

    def find(self, provider: str, model: str) -> ModelPrice | None:
        """Exact row, else the longest listed model that prefixes `model` (a dated or
        suffixed version the provider reports, "models/..." stripped)."""
        model = model.strip().removeprefix("models/")
        exact = self._by_key.get((provider, model))
        if exact is not None:
            return exact
        best: ModelPrice | None = None
        for (p, m), price in self._by_key.items():
            if p == provider and model.startswith(m) and (best is None or len(m) > len(best.model)):
                best = price
        return best

    def require(self, deployments: Iterable[tuple[str, str]]) -> None:
        """Raise PriceTableError naming every configured provider/model without a price."""
        missing = [f"{p}/{m}" for p, m in deployments if self.find(p, m) is None]
        if missing:
            known = ", ".join(f"{p.provider}/{p.model}" for p in self) or "none"
            raise PriceTableError(
                f"price table {self.source} has no price for {', '.join(missing)} "
                f"(it lists: {known}); add a [[price]] row or set QALOOP_PRICE_TABLE"
            )


def parse_deployment(text: str) -> tuple[str, str]:
    """ "provider/model" -> (provider, model); the model may itself contain slashes."""
    provider, sep, model = text.strip().partition("/")
    if not sep or not provider or not model:
        raise PriceTableError(f"expected provider/model, got {text!r}")
    return provider, model
