"""deploy/prometheus.yml and the Grafana dashboard agree with the compose file and with the
metrics the code exports; docs/observability.md names every metric."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from qaloop.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b(qaloop_[a-z_]+)\b")


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _exported() -> set[str]:
    """Every sample name a fully wired process can export."""
    metrics = Metrics()

    class Cache:
        capacity = 1
        stats = type("S", (), {"hits": 0, "misses": 0, "evictions": 0, "expirations": 0})()

        def __len__(self) -> int:
            return 0

    metrics.watch_gateway({}, Cache(), lambda: 0)
    metrics.watch_gauge("qaloop_parked_questions", "held", lambda: 0)
    metrics.watch_lag(type("L", (), {"lag_samples": lambda self: []})())
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    # labelled families have no samples until a label set is used
    text = metrics.exposition().decode()
    names.update(re.findall(r"^# TYPE (\S+)", text, re.M))
    for name in list(names):
        names.update(name + suffix for suffix in ("_bucket", "_sum", "_count", "_total"))
    return names


def test_prometheus_scrapes_every_qaloop_service() -> None:
    compose = _yaml(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    config = _yaml(DEPLOY / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway = jobs["qaloop-gateway"]["static_configs"][0]["targets"]
    command = services["gateway"]["command"]
    assert gateway == [f"gateway:{command[command.index('--port') + 1]}"]
    dns = jobs["qaloop-services"]["dns_sd_configs"][0]
    assert set(dns["names"]) == {"worker", "judge", "store", "retrier"} <= set(services)
    env = compose["x-qaloop"]["environment"]
    assert str(dns["port"]) == env["QALOOP_METRICS_PORT"]
    assert env["QALOOP_HOST"] == "0.0.0.0"  # reachable from the Prometheus container
    # the gateway's dashboard reads the same ports
    targets = services["gateway"]["environment"]["QALOOP_METRICS_TARGETS"].split(",")
    assert sorted(targets) == sorted(f"{name}:{dns['port']}" for name in dns["names"])
    mount = "./prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in services["prometheus"]["volumes"]


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "qaloop-dashboard.json").read_text())
    source = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = source["datasources"][0]["uid"]
    exported = _exported()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == uid, p["title"]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used - exported == set()
    # the dashboard covers the list
    for needed in (
        "qaloop_gateway_questions_total",
        "qaloop_cache_hits_total",
        "qaloop_cache_evictions_total",
        "qaloop_llm_calls_total",
        "qaloop_llm_retries_total",
        "qaloop_llm_recovered_total",
        "qaloop_parked_questions",
        "qaloop_judge_decisions_total",
        "qaloop_queue_wait_seconds_bucket",
        "qaloop_llm_call_seconds_bucket",
        "qaloop_judge_scoring_seconds_bucket",
        "qaloop_store_write_seconds_bucket",
        "qaloop_consumer_lag",
    ):
        assert needed in used, needed


def test_docs_name_every_metric() -> None:
    docs = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    text = Metrics().exposition().decode()
    families = set(re.findall(r"^# TYPE (\S+)", text, re.M)) | {
        "qaloop_gateway_questions_total",
        "qaloop_gateway_request_seconds",
        "qaloop_cache_hits_total",
        "qaloop_cache_misses_total",
        "qaloop_cache_evictions_total",
        "qaloop_cache_expirations_total",
        "qaloop_cache_entries",
        "qaloop_cache_capacity",
        "qaloop_questions_in_flight",
        "qaloop_parked_questions",
        "qaloop_consumer_lag",
    }
    missing = sorted(f for f in families if f"`{f}`" not in docs)
    assert missing == []
