"""The gate's decision code stays pure: no Kafka, database, HTTP or LLM library (nor qaloop's
adapters) is imported by routing, the cascade or the LLM judge's prompt/parsing half."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("confluent_kafka", "psycopg", "httpx", "google", "sqlite3", "qaloop.llm", "qaloop.bus")


@pytest.mark.parametrize(
    "module", ["qaloop.core.routing", "qaloop.quality.cascade", "qaloop.quality.llm_judge"]
)
def test_module_imports_no_adapter(module: str) -> None:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"{module} pulls in {bad}"
