"""The distributed mode: each stage in its own process over Kafka and a shared repository.

- qaloop.wiring builds the stages (the same as the embedded pipeline's);
- qaloop.distributed.services runs one of them per process (`qaloop worker`, `qaloop judge`,
  `qaloop store`, `qaloop retrier`, `qaloop gateway`) over the Kafka bus;
- qaloop.distributed.supervision is each process's lifecycle: signals, watchdogs, a clean
  stop, and exit 75 for a restart when the stage can't make progress any more.

The gateway stores a new question before it publishes it. If it dies between the two, the
question sits in `queued` with no progress: the retrier process re-publishes such questions
(qaloop.services.recovery) once the worker group has no large backlog left.
"""

from qaloop.distributed.services import (
    SERVICES,
    STAGES,
    build_gateway_app,
    make_bus,
    run_gateway,
    run_judge,
    run_retrier,
    run_stage_process,
    run_store,
    run_worker,
)
from qaloop.distributed.supervision import RestartRequired

__all__ = [
    "SERVICES",
    "STAGES",
    "RestartRequired",
    "build_gateway_app",
    "make_bus",
    "run_gateway",
    "run_judge",
    "run_retrier",
    "run_stage_process",
    "run_store",
    "run_worker",
]
