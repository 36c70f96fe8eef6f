"""The shared broker for the Kafka adapter's own tests (skips without it or the kafka extra)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("QALOOP_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.skip('QALOOP_KAFKA_BOOTSTRAP is not set: run `eval "$(scripts/infra env)"`')
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    return bootstrap
