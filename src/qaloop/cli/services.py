"""`qaloop gateway|worker|judge|store|retrier`: one service of the distributed mode per process
(see qaloop.distributed and docs/distributed.md)."""

from __future__ import annotations

import cProfile
import os
from collections.abc import Callable
from typing import Any

import click

from qaloop.cli.common import build_settings, setup_logging
from qaloop.cli.errors import check_storage

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

COMMON: list[Decorator] = [
    click.option("--bus", default=None, help="Message bus: kafka [QALOOP_BUS]"),
    click.option("--db", default=None, help="Storage URL: postgresql://... [QALOOP_DB]"),
    click.option("--kafka-bootstrap", default=None, help="Kafka bootstrap servers"),
    click.option("--topic-prefix", default=None, help="Prefix of topics and consumer groups"),
    click.option("--log-level", default=None, help="Logging level [QALOOP_LOG_LEVEL, INFO]"),
    click.option(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus port of a worker/judge/store/retrier [QALOOP_METRICS_PORT, 0 = none]",
    ),
]

OPTIONS: dict[str, list[Decorator]] = {
    "gateway": [
        click.option("--host", default=None, help="Bind address [QALOOP_HOST, 127.0.0.1]"),
        click.option("--port", type=int, default=None, help="Port [QALOOP_PORT, 8000]"),
        click.option("--cache-policy", default=None, help="lru|lfu|fifo"),
        click.option("--cache-size", type=int, default=None, help="Cache entries"),
    ],
    "worker": [
        click.option("--llm", default=None, help="LLM provider [QALOOP_LLM, simulated]"),
        click.option("--llm-concurrency", type=int, default=None, help="LLM calls in flight"),
    ],
    "judge": [
        click.option("--scorer", default=None, help="Scorer name"),
        click.option("--threshold", type=float, default=None, help="Validation threshold"),
        click.option("--max-attempts", type=int, default=None, help="Generation attempts"),
    ],
    "store": [],
    "retrier": [
        click.option(
            "--stale-after-s",
            type=float,
            default=None,
            help="Re-publish questions queued this long with no progress",
        ),
    ],
}

HELP = {
    "gateway": "Run the HTTP gateway over Kafka and the shared database.",
    "worker": "Run an LLM worker (consumer group <prefix>.worker).",
    "judge": "Run the quality judge (consumer group <prefix>.judge).",
    "store": "Run the storage consumer (consumer group <prefix>.store).",
    "retrier": "Run the delayed-retry service and the stale-question sweep.",
}


def _make(service: str) -> click.Command:
    def run(**flags: Any) -> None:
        if flags.get("bus") is None:
            flags["bus"] = "kafka"  # a service process is the distributed mode
        settings = build_settings(**flags)
        check_storage(settings.db)
        setup_logging(settings.log_level, settings.log_json)
        from qaloop.distributed import run_stage_process

        profile_dir = os.environ.get("QALOOP_PROFILE_DIR")  # cProfile the process (bench)
        profiler = cProfile.Profile() if profile_dir else None
        if profiler is not None:
            profiler.enable()
        try:
            run_stage_process(service, settings)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            if profiler is not None and profile_dir:
                profiler.disable()
                profiler.dump_stats(os.path.join(profile_dir, f"{service}-{os.getpid()}.prof"))

    run.__doc__ = HELP[service]
    command: Callable[..., Any] = run
    for option in reversed(COMMON + OPTIONS[service]):
        command = option(command)
    return click.command(service, help=HELP[service])(command)


commands = [_make(name) for name in ("gateway", "worker", "judge", "store", "retrier")]
