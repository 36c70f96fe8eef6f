"""The price table: the shipped one, cost arithmetic, look-up, and a clear error for every kind
of bad table (missing model, negative or non-numeric price, bad TOML, missing file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qaloop.llm.accounting import meter_from_settings
from qaloop.llm.factory import configured_deployments, default_model
from qaloop.llm.pricing import ModelPrice, PriceTable, PriceTableError, parse_deployment
from qaloop.settings import Settings

ROW = """
[[price]]
provider = "openai"
model = "m1"
input = 1.0
output = 4.0
cached_input = 0.5
batch_input = 0.5
batch_output = 2.0
"""


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_table_prices_every_model_the_docs_name() -> None:
    table = PriceTable.load()
    for provider, model in [
        ("gemini", "gemini-2.5-flash-lite"),
        ("gemini", "gemini-2.5-flash"),
        ("openai", "gpt-4o-mini"),
    ]:
        price = table.find(provider, model)
        assert price is not None and price.model == model
        assert price.read_on and price.source  # where and when each price was read
        assert price.output > price.input > 0
        # both providers' batch APIs are half the interactive price
        assert price.batch_input == pytest.approx(price.input / 2)
        assert price.batch_output == pytest.approx(price.output / 2)
        assert price.cached_input < price.input


def test_defaults_of_the_providers_are_in_the_shipped_table() -> None:
    table = PriceTable.load()
    for provider in ("gemini", "openai"):
        table.require(configured_deployments(Settings(llm=provider)))  # type: ignore[arg-type]
    assert default_model("openai") == "gpt-4o-mini"
    from qaloop.llm.openai_compat import DEFAULT_MODEL

    assert default_model("openai") == DEFAULT_MODEL


def test_cost_interactive_cached_and_batch() -> None:
    p = ModelPrice("x", "m", 1.0, 4.0, 0.25, 0.5, 2.0)
    assert p.cost(1_000_000, 0) == pytest.approx(1.0)
    assert p.cost(0, 1_000_000) == pytest.approx(4.0)
    # 400k of the 1M input tokens came from the cache: 600k at 1.0 + 400k at 0.25
    assert p.cost(1_000_000, 0, 400_000) == pytest.approx(0.6 + 0.1)
    assert p.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(2.5)
    assert p.cost(10, 0, cached_tokens=50) == pytest.approx(10 * 0.25 / 1e6)  # capped


def test_longest_prefix_wins_for_a_versioned_model() -> None:
    table = PriceTable.load()
    lite = table.find("gemini", "gemini-2.5-flash-lite-001")
    assert lite is not None and lite.model == "gemini-2.5-flash-lite"
    flash = table.find("gemini", "models/gemini-2.5-flash-preview-05-20")
    assert flash is not None and flash.model == "gemini-2.5-flash"
    assert table.find("gemini", "gemini-1.0-pro") is None
    assert table.find("openai", "gemini-2.5-flash") is None  # provider matters


def test_user_table_by_path(tmp_path: Path) -> None:
    table = PriceTable.load(_table(tmp_path, ROW))
    assert len(table) == 1
    assert table.find("openai", "m1") == ModelPrice("openai", "m1", 1.0, 4.0, 0.5, 0.5, 2.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ROW.replace("input = 1.0", "input = -1.0"), "'input' must be a finite number >= 0"),
        (ROW.replace("output = 4.0", 'output = "cheap"'), "'output' is not a number"),
        (ROW.replace("output = 4.0", "output = true"), "'output' is not a number"),
        (ROW.replace("output = 4.0", "output = nan"), "'output' must be a finite number"),
        (ROW.replace("batch_output = 2.0\n", ""), "missing price 'batch_output'"),
        (ROW.replace('model = "m1"\n', ""), "missing model"),
        (ROW.replace('provider = "openai"\n', ""), "missing provider"),
        (ROW + ROW, "openai/m1 listed twice"),
        ("[[price]\nprovider=", "not valid TOML"),
        ("# nothing\n", "no [[price]] rows"),
    ],
)
def test_bad_table_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PriceTableError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PriceTable.load(_table(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match=r"nope\.toml"):
        PriceTable.load(tmp_path / "nope.toml")


def test_a_configured_model_without_a_price_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(
        llm="openai", llm_model="gpt-9-huge", price_table=str(_table(tmp_path, ROW))
    )
    with pytest.raises(
        PriceTableError, match=r"no price for openai/gpt-9-huge .*it lists: openai/m1"
    ):
        meter_from_settings(settings)
    # the model it does list starts fine
    ok = Settings(llm="openai", llm_model="m1", price_table=str(_table(tmp_path, ROW)))
    assert meter_from_settings(ok).table.find("openai", "m1") is not None


def test_price_as_must_be_in_the_table(tmp_path: Path) -> None:
    settings = Settings(price_table=str(_table(tmp_path, ROW)))  # simulated, priced as gemini
    with pytest.raises(PriceTableError, match=r"gemini/gemini-2\.5-flash-lite"):
        meter_from_settings(settings)
    with pytest.raises(PriceTableError, match="expected provider/model"):
        meter_from_settings(Settings(price_as="gpt-4o-mini"))


def test_parse_deployment_keeps_slashes_in_the_model() -> None:
    assert parse_deployment("openai/x-ai/grok-4-fast") == ("openai", "x-ai/grok-4-fast")
