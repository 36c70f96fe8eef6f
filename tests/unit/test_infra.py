"""scripts/infra's command line without starting anything (a private, empty state dir), and
the replication settings on their way to the Kafka bus."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qaloop.bus.base import Topics
from qaloop.settings import Settings

INFRA = Path(__file__).resolve().parents[2] / "scripts" / "infra"


def infra(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INFRA), *args],
        env={**os.environ, "QALOOP_STATE": str(tmp_path / "state"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_unknown_service_is_refused_with_the_list(tmp_path: Path) -> None:
    done = infra(tmp_path, "up", "zookeeper")
    assert done.returncode == 2
    assert "unknown service 'zookeeper' (kafka, postgres, kafka-cluster, flink)" in done.stderr


def test_env_follows_the_configured_ports(tmp_path: Path) -> None:
    flink = infra(tmp_path, "env", "flink", QALOOP_FLINK_REST_PORT="28081").stdout
    assert "export QALOOP_FLINK_REST=http://127.0.0.1:28081" in flink
    assert f"export FLINK_CONF_DIR={tmp_path}/state/flink/home/conf" in flink
    cluster = infra(tmp_path, "env", "kafka-cluster", QALOOP_KAFKA_CLUSTER_PORT="30000").stdout
    assert cluster.strip() == (
        "export QALOOP_KAFKA_CLUSTER_BOOTSTRAP=127.0.0.1:30000,127.0.0.1:30001,127.0.0.1:30002"
    )
    default = infra(tmp_path, "env").stdout.splitlines()
    assert [line.split("=")[0] for line in default] == [
        "export QALOOP_KAFKA_BOOTSTRAP",
        "export QALOOP_PG_DSN",
    ]


def test_status_of_a_service_that_never_ran(tmp_path: Path) -> None:
    for service in ("flink", "kafka-cluster"):
        done = infra(
            tmp_path,
            "status",
            service,
            QALOOP_FLINK_REST_PORT="1",  # nothing answers there
            QALOOP_KAFKA_CLUSTER_PORT="2",
        )
        assert done.returncode == 1, done.stdout
        assert done.stdout.split()[:2] == [service, "down"]


def test_down_with_nothing_started_stops_nothing(tmp_path: Path) -> None:
    done = infra(tmp_path, "down", "--purge")
    assert done.returncode == 0
    assert "nothing to stop" in done.stderr


def test_replication_settings_reach_the_bus_and_the_topics() -> None:
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    from qaloop import wiring
    from qaloop.bus.kafka.admin import new_topic, topic_specs

    kafka = wiring.kafka_settings(
        Settings(bus="kafka", kafka_replication_factor=3, kafka_min_insync_replicas=2)
    )
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)
    specs = topic_specs(kafka, Topics.with_prefix("unit"))
    assert {(s.replication_factor, s.min_insync_replicas) for s in specs.values()} == {(3, 2)}
    topic = new_topic("unit.questions", specs["unit.questions"])
    assert topic.replication_factor == 3
    assert topic.config == {"min.insync.replicas": "2"}
    assert Settings().kafka_replication_factor == Settings().kafka_min_insync_replicas == 1


def test_more_insync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(ValueError, match=r"kafka_min_insync_replicas \(2\) is above"):
        Settings(kafka_replication_factor=1, kafka_min_insync_replicas=2)
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    from qaloop.bus.kafka import KafkaSettings

    with pytest.raises(ValueError, match=r"min\.insync\.replicas 2 > replication factor 1"):
        KafkaSettings("127.0.0.1:9", replication_factor=1, min_insync_replicas=2)
