"""The Kafka adapter's client lifecycle under stress (closes racing polls, commits, pauses and
publishes; calls after close; closed clients collected on other threads), in a child process
so that a crash inside librdkafka fails this test instead of ending the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def test_closing_clients_while_they_are_in_use_never_crashes_or_reaches_a_closed_handle(
    kafka_bootstrap: str,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.bus.lifecycle_stress", kafka_bootstrap, "8"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # -11 is SIGSEGV; faulthandler has written every thread's stack to stderr
    assert done.returncode == 0, (done.returncode, done.stderr[-4000:])
    assert done.stdout.strip() == "ok 8"
