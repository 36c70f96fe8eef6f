"""Docs that can be checked are checked: the configuration reference matches Settings, and the
README starts with the two set-up commands."""

from __future__ import annotations

from pathlib import Path

from qaloop.config_docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == render(), (
        "docs/configuration.md is stale: python -m qaloop.config_docs > docs/configuration.md"
    )


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```")[1]
    commands = [line for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
