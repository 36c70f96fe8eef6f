"""Structured log lines for a question's state changes.

Every pipeline line about a question goes through `log_event`: the text names the question
and the event, and the record carries fields — `question_id`, `trace_id`, `attempt`,
`event` and whatever the stage adds (`error_class`, `score`, `decision`, `due_at`, ...). With
QALOOP_LOG_JSON=true, `JsonFormatter` writes those fields as JSON keys, so a log search for
one trace id returns the question's whole life across processes.

One line per state change: accepted, generating, generated, llm_error, parked, resumed,
validated / regenerated / gave_up (the judge's decision, with the score), stored. At INFO only
a question's outcome is written (validated or gave_up: one line per question, ~150 bytes); the
other state changes are DEBUG (QALOOP_LOG_LEVEL=DEBUG shows a question's whole life). A line a
stage logs at WARNING or above stays there.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from qaloop.core.model import Envelope

# The events written at INFO: a question's outcome (everything else is DEBUG).
OUTCOME_EVENTS = frozenset({"validated", "gave_up"})

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


def log_event(
    logger: logging.Logger,
    event: str,
    envelope: Envelope,
    detail: str = "",
    *args: object,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """`question <id>: <event>[ <detail % args>]`, with the question's fields attached."""
    if level == logging.INFO and event not in OUTCOME_EVENTS:
        level = logging.DEBUG
    if not logger.isEnabledFor(level):
        return
    extra = {
        "question_id": envelope.question_id,
        "trace_id": envelope.trace_id,
        "attempt": envelope.attempt,
        "event": event,
    }
    extra.update(fields)
    if detail:
        logger.log(
            level,
            "question %s: %s " + detail,
            envelope.question_id,
            event,
            *args,
            extra=extra,
        )
    else:
        logger.log(level, "question %s: %s", envelope.question_id, event, extra=extra)


def question_fields(envelope: Envelope, **fields: Any) -> dict[str, Any]:
    """`extra=` for a line about a question that isn't a state change (errors, warnings)."""
    return {
        "question_id": envelope.question_id,
        "trace_id": envelope.trace_id,
        "attempt": envelope.attempt,
        **fields,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in body:
                body[key] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def configure(level: str = "INFO", *, json_lines: bool = False, prefix: str = "") -> None:
    """The root logger of an entry point: one handler, on stderr. qaloop writes no log files
    (so it rotates none): redirect stderr, or let the supervisor (systemd, Docker) keep and
    rotate it. Third-party loggers that chat at INFO per request are held to WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"{prefix}%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    # No format of ours prints a line's caller, thread or process: finding the caller walked
    # the stack for every line, about half of what an outcome line cost the judge (~20 µs).
    logging._srcfile = None  # the logging module's own switch for this
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if root.level > logging.DEBUG:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


# One INFO line per HTTP request (httpx) or per access (uvicorn) would outnumber qaloop's own.
QUIET_LOGGERS = ("httpx", "httpcore", "uvicorn.access")
