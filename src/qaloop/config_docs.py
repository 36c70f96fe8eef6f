"""Render the configuration reference (docs/configuration.md) from the Settings model, so the
documentation can't drift from the code (tests/unit/test_docs.py checks it is current).

Regenerate:  python -m qaloop.config_docs > docs/configuration.md
"""

from __future__ import annotations

from pydantic import SecretStr

from qaloop.settings import Settings

HEADER = """# Configuration reference

Every setting is an environment variable `QALOOP_<NAME>` (or a line in a `.env` file in the
working directory); command-line flags, where a command has them, override it. One `Settings`
object is built in each entry point and passed down; nothing else reads the environment.
Secrets (`QALOOP_LLM_API_KEY`) are never logged; prefer `QALOOP_LLM_API_KEY_FILE`.

Generated from `src/qaloop/settings.py` by `python -m qaloop.config_docs`.

| variable | default | meaning |
|---|---|---|
"""


def _default(value: object) -> str:
    if isinstance(value, SecretStr):
        return "(secret)"
    text = repr(value) if isinstance(value, str) else str(value)
    return text.replace("\n", "\\n").replace("|", "\\|")


def render() -> str:
    rows = [
        f"| `QALOOP_{name.upper()}` | `{_default(field.default)}` | {field.description or ''} |"
        for name, field in Settings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
