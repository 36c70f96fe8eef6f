"""The live dashboard in a real headless Chromium: `qaloop serve` runs a workload with injected
LLM errors, the browser loads /dashboard, and the numbers it renders are the server's. A
screenshot is kept as a test artifact (test-artifacts/dashboard.png).

Needs Debian's `chromium` package (`make test` installs it when absent); skipped otherwise.
"""

from __future__ import annotations

import html
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qaloop.dataset import load_sample
from tests.e2e.distributed_stack import free_port
from tests.e2e.embedded_server import serve

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (apt-get install -y chromium; `make test` does it)")


def _browser(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="qaloop-chromium-") as profile:
        return subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )


def _text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match is not None, f"#{element_id} not in the page"
    return html.unescape(match.group(1)).strip()


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%").strip())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    gateway = serve(
        tmp_path / "dash.db",
        QALOOP_LOG_LEVEL="WARNING",
        QALOOP_SIM_LATENCY_MS="20",
        QALOOP_SIM_OVERLOAD_RATE="0.15",
        QALOOP_SIM_QUOTA_RATE="0.1",
        QALOOP_SIM_QUOTA_RETRY_AFTER_S="0.3",
        QALOOP_BACKOFF_BASE_S="0.01",
        QALOOP_OVERLOAD_TRIES="2",
        QALOOP_MAX_PARKS="8",
    )
    yield gateway.url
    gateway.stop(timeout_s=20)


def test_dashboard_renders_real_numbers_in_chromium(server: str) -> None:
    chromium = _chromium()
    base = server
    qas = load_sample(limit=120)
    with httpx.Client(base_url=base, timeout=30) as client:
        ids = []
        for qa in qas:
            body = {"question": qa.question, "reference_answer": qa.reference_answer}
            ids.append(client.post("/v1/questions", json=body).json()["id"])
        for qid in ids:
            final = client.get(f"/v1/questions/{qid}", params={"wait": 20}).json()
            assert final["status"] in ("validated", "failed")
        for qa in qas[:60]:  # repeats: storage, then the cache
            client.post("/v1/questions", json={"question": qa.question})
            client.post("/v1/questions", json={"question": qa.question})
        time.sleep(2.5)  # a few one-second samples after the last request
        data = client.get("/v1/dashboard-data").json()
    assert data["totals"]["asked"] == 240

    dom = _browser(chromium, "--virtual-time-budget=8000", "--dump-dom", f"{base}/dashboard")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert 'data-loaded="1"' in page, "the page never rendered its data"
    assert _number(_text(page, "kpi-asked")) == 240
    assert _number(_text(page, "kpi-accepted")) == 120
    validated = _number(_text(page, "kpi-validated"))
    failed = _number(_text(page, "kpi-failed"))
    assert validated + failed == 120 and validated == data["totals"]["validated"]
    assert _number(_text(page, "kpi-llm")) == data["totals"]["llm_calls"] >= 120
    assert _number(_text(page, "kpi-hit-rate")) == pytest.approx(
        100 * data["cache"]["hit_rate"], abs=0.06
    )
    assert _number(_text(page, "flow-validated")) == validated
    assert _number(_text(page, "flow-waiting-worker")) == 0
    # the per-attempt table and the errors table have real rows; three uPlot charts drew
    attempts = re.search(r'<table id="attempts">.*?</table>', page, re.S)
    assert attempts is not None and "<td>1</td>" in attempts.group(0)
    assert "%" in attempts.group(0)
    errors = re.search(r'<table id="errors">.*?</table>', page, re.S)
    assert errors is not None and "overload" in errors.group(0)
    assert page.count("<canvas") >= 3

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    taken = _browser(
        chromium, "--virtual-time-budget=8000", f"--screenshot={shot}", f"{base}/dashboard"
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one


@pytest.mark.integration
@pytest.mark.slow
def test_distributed_metrics_ports_and_the_gateways_view(tmp_path: Path) -> None:
    """Every consumer process serves its metrics on --metrics-port; the gateway's /metrics and
    dashboard see every group's Kafka lag, per partition, and the dashboard adds the services'
    counters (QALOOP_METRICS_TARGETS)."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.e2e.distributed_stack import Stack, pg_schema, require_servers, wait_final

    bootstrap, pg = require_servers()
    with pg_schema(pg) as (_, db):
        stack = Stack.create(tmp_path, bootstrap, db, sim_latency_ms=5, sim_overload_rate=0.1)
        ports = {}
        try:
            for service in ("store", "judge", "retrier", "worker"):
                ports[service] = free_port()
                stack.env["QALOOP_METRICS_PORT"] = str(ports[service])
                stack.start(service)
            del stack.env["QALOOP_METRICS_PORT"]
            targets = ",".join(f"127.0.0.1:{port}" for port in ports.values())
            stack.env["QALOOP_METRICS_TARGETS"] = targets  # the dashboard reads them
            stack.start("gateway")
            stack.wait_http()
            with httpx.Client(base_url=stack.url, timeout=30) as client:
                for qa in load_sample(limit=60):
                    body = {"question": qa.question, "reference_answer": qa.reference_answer}
                    assert client.post("/v1/questions", json=body).status_code == 202
                wait_final(db, 60, 120, stack)

                def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
                    found: dict[str, list[tuple[dict[str, str], float]]] = {}
                    text = httpx.get(url, timeout=10).text
                    for family in text_string_to_metric_families(text):
                        for s in family.samples:
                            found.setdefault(s.name, []).append((s.labels, s.value))
                    return found

                def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
                    return sum(v for _, v in found.get(name, ()))

                deadline = time.monotonic() + 30  # lag is probed every 5 s
                while True:
                    gateway = scrape(f"{stack.url}/metrics")
                    groups = {labels["group"] for labels, _ in gateway["qaloop_consumer_lag"]}
                    if len(groups) == 4 and total(gateway, "qaloop_consumer_lag") == 0:
                        break
                    assert time.monotonic() < deadline, gateway.get("qaloop_consumer_lag")
                    time.sleep(1)
                prefix = stack.prefix
                assert groups == {f"{prefix}.{s}" for s in ("worker", "judge", "store", "retrier")}
                partitions = {
                    labels["partition"]
                    for labels, _ in gateway["qaloop_consumer_lag"]
                    if labels["topic"] == f"{prefix}.questions"
                }
                assert len(partitions) > 1  # per partition, not per topic
                assert total(gateway, "qaloop_gateway_questions_total") == 60
                time.sleep(1.1)  # a fresh sample, with the services' counters
                data = client.get("/v1/dashboard-data").json()
                assert data["mode"] == "distributed"
                assert data["metrics_sources"] == 5
                assert set(data["lag"]) == groups
                assert sum(data["storage"].values()) == 60
                assert data["totals"]["llm_calls"] >= 60
                assert data["totals"]["validated"] + data["totals"]["gave_up"] == 60
                assert data["per_attempt"][0]["attempt"] == 1
                assert data["per_attempt"][0]["mean_score"] > 0

            worker = scrape(f"http://127.0.0.1:{ports['worker']}/metrics")
            assert total(worker, "qaloop_llm_calls_total") >= 60
            assert total(worker, "qaloop_queue_wait_seconds_count") >= 60
            judge = scrape(f"http://127.0.0.1:{ports['judge']}/metrics")
            assert total(judge, "qaloop_judge_decisions_total") >= 60
            store = scrape(f"http://127.0.0.1:{ports['store']}/metrics")
            assert total(store, "qaloop_time_to_answer_seconds_count") == 60
            assert total(store, "qaloop_store_write_seconds_count") > 0
            retrier = scrape(f"http://127.0.0.1:{ports['retrier']}/metrics")
            assert "qaloop_parked_questions" in retrier
            for found in (worker, judge, store, retrier):
                own = {labels["group"] for labels, _ in found["qaloop_consumer_lag"]}
                assert len(own) == 1  # each stage reports its own group
        finally:
            codes = stack.stop_all()
        # uvicorn re-raises the SIGTERM it handled once the app has shut down: -15 is clean.
        assert codes.pop("gateway") in (0, -signal.SIGTERM)
        assert all(code == 0 for code in codes.values()), (codes, stack.tails())
