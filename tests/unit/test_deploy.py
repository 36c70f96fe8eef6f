"""deploy/: the compose file is valid and consistent with the code, without a Docker engine.

- The compose file validates against the Compose Specification JSON schema (the copy vendored
  in the check-jsonschema package, a dev dependency: no network).
- `docker compose config` also runs when the compose plugin is installed (skipped otherwise;
  it needs no engine).
- Every qaloop service's command parses with the real `qaloop` CLI (command and flags exist).
- depends_on conditions point at services that have healthchecks, no secret is written in the
  file, and every required variable is in .env.example.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from qaloop.cli import main as qaloop_cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
QALOOP_SERVICES = ("gateway", "worker", "judge", "store", "retrier")
REQUIRED_VAR = re.compile(r"\$\{(\w+):\?")
ANY_VAR = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def _validate(data: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema())
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(data)
    ]


def _env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def test_compose_file_matches_the_compose_spec_schema() -> None:
    assert _validate(_compose()) == []


def test_the_schema_check_rejects_a_broken_file() -> None:
    broken = _compose()
    broken["services"]["worker"]["depends_on"] = {"kafka": {"condition": "whenever"}}
    broken["services"]["store"]["restart_policy"] = "always"
    errors = _validate(broken)
    assert any("whenever" in e for e in errors), errors
    assert any("restart_policy" in e for e in errors), errors


def _compose_command() -> list[str] | None:
    """`docker compose` if the plugin is installed, else the binary deploy/check-compose caches."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    cache = Path(os.environ.get("QALOOP_CACHE", Path.home() / ".cache" / "qaloop"))
    version = os.environ.get("QALOOP_COMPOSE_VERSION", "2.40.3")
    cached = cache / f"compose-{version}" / "docker-compose"
    return [str(cached)] if os.access(cached, os.X_OK) else None


def test_docker_compose_config() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no Docker Compose here (the docker CLI has no compose plugin): run "
            "deploy/check-compose once to fetch it; the schema test covers the file meanwhile"
        )
    env_file = str(DEPLOY / ".env.example")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", env_file, "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    services = resolved["services"]
    assert set(QALOOP_SERVICES) <= set(services)
    # interpolation and the YAML merge keys resolved as intended
    worker = services["worker"]
    assert worker["environment"]["QALOOP_BUS"] == "kafka"
    assert worker["environment"]["PGPASSWORD"] == "change-me"
    assert worker["environment"]["QALOOP_LLM_API_KEY_FILE"] == "/run/secrets/llm_api_key"
    assert resolved["secrets"]["llm_api_key"]["file"].endswith("deploy/secrets/no-key")
    # without the password, compose refuses to start
    missing = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", os.devnull, "config", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"},
    )  # fmt: skip
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr


@pytest.mark.parametrize("service", QALOOP_SERVICES)
def test_every_qaloop_service_command_exists_in_the_cli(service: str) -> None:
    spec = _compose()["services"][service]
    command = spec["command"]
    assert isinstance(command, list), "use the list form: no shell in between"
    assert command[0] == service
    assert command[command.index("--bus") + 1] == "kafka"
    assert command[command.index("--db") + 1].startswith("postgresql://")
    assert ":" not in command[command.index("--db") + 1].split("//", 1)[1].split("@")[0], (
        "no password in the DSN on the command line (PGPASSWORD carries it)"
    )
    cli_command = qaloop_cli.commands.get(service)
    assert cli_command is not None, f"`qaloop {service}` is not a CLI command"
    # parse (not run) the arguments with the real command: unknown flags raise UsageError
    try:
        cli_command.make_context(service, list(command[1:]), resilient_parsing=False)
    except click.UsageError as exc:  # pragma: no cover - the failure message
        pytest.fail(f"`qaloop {' '.join(command)}`: {exc}")
    assert spec["image"] == _compose()["services"]["gateway"]["image"], "one image for all"


def test_images_and_build_recipes_are_pinned() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"] == "apache/kafka:4.4.0"
    assert services["postgres"]["image"].startswith("postgres:")
    for spec in services.values():  # KRaft: no ZooKeeper service, no ZooKeeper setting
        assert "zookeeper" not in str(spec.get("image", "")).lower()
        assert not any("ZOOKEEPER" in key for key in spec.get("environment") or {})
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    app = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim" in app
    assert "qaloop[kafka,postgres]" in app
    flink = (DEPLOY / "flink.Dockerfile").read_text(encoding="utf-8")
    assert "FROM flink:2.2.1-scala_2.12-java17" in flink
    assert "apache-flink==${PYFLINK_VERSION}" in flink and "PYFLINK_VERSION=2.2.1" in flink
    assert "org.apache.flink:flink-sql-connector-kafka:${KAFKA_CONNECTOR_VERSION}" in flink
    assert "KAFKA_CONNECTOR_VERSION=5.0.0-2.2" in flink
    assert "/opt/flink/lib" in flink
    for name in ("jobmanager", "taskmanager"):
        assert services[name]["image"] == services["jobmanager"]["image"]
        assert services[name]["command"] == name


def test_depends_on_conditions_have_healthchecks() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        for dep, condition in (spec.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s healthcheck"
    for name in QALOOP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"


def test_no_secrets_in_the_compose_file() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        env = spec.get("environment") or {}
        for key, value in env.items():
            if any(word in key.upper() for word in ("PASSWORD", "SECRET", "TOKEN", "API_KEY")):
                text = str(value)
                assert text.startswith("${") or text.startswith("/run/secrets/"), (
                    f"{name}.{key} must come from the environment or a secret file"
                )
    assert "llm_api_key" in services["worker"]["secrets"]
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and "secrets/*" in ignored
    placeholder = DEPLOY / "secrets" / "no-key"
    assert placeholder.exists() and placeholder.stat().st_size == 0


def test_env_example_defines_every_required_variable() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    required = set(REQUIRED_VAR.findall(text))
    assert "POSTGRES_PASSWORD" in required
    example = _env_example()
    assert required <= set(example), f"missing in .env.example: {required - set(example)}"
    # and nothing in .env.example is unknown to the compose file
    used = set(ANY_VAR.findall(text))
    unknown = set(example) - used
    assert unknown == set(), f".env.example sets variables the compose file never reads: {unknown}"


def test_the_default_llm_needs_no_key() -> None:
    env = _compose()["x-qaloop"]["environment"]
    assert env["QALOOP_LLM"] == "${QALOOP_LLM:-simulated}"
    secret = _compose()["secrets"]["llm_api_key"]["file"]
    assert secret == "${QALOOP_LLM_API_KEY_PATH:-./secrets/no-key}"
