"""Admin routes (`/v1/admin/...`: an admin key when auth is on, qaloop.gateway.auth):

- `POST /v1/admin/questions/{id}/reset`: ask a failed question again (`qaloop reset`);
- `GET /v1/admin/dead-letters`: the dead letters storage holds, oldest first, with reasons;
- `POST /v1/admin/dead-letters/replay`: put them back (qaloop.services.recovery.plan_replay,
  the code `qaloop dlq replay` runs) on this gateway's bus: the in-process bus in embedded
  mode, where the pipeline's stages consume it, Kafka in distributed mode.

In both modes the store records every dead letter in storage (the dead-letter topic is one of
the topics it consumes), so both list and replay read the same table. A replayed poison
message that is still bad is dead-lettered again by the stage that reads it (a new letter,
with its reason); the old one stays, marked replayed. Replays within this process run one at
a time, so two admins clicking at once don't publish a letter twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from qaloop.gateway.bodies import BadRequest, read_json_body
from qaloop.gateway.service import QuestionService
from qaloop.services.recovery import letter_row, replay_dead_letters
from qaloop.storage.base import DeadLetter

MAX_LIST = 1000  # letters per GET
MAX_REPLAY = 10_000  # letters per `"all": true` replay (call again for more)
_REPLAY_FIELDS = {"keys", "all", "force", "dry_run"}

Error = Callable[[int, str, str], Response]
Json = Callable[[int, Any], Response]


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(422, "invalid_field", f"field {name!r} must be true or false")
    return value


def _query_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise BadRequest(422, "invalid_query", f"'limit' must be an integer from 1 to {MAX_LIST}")
    return int(raw)


def _query_bool(raw: str | None, name: str) -> bool:
    if raw is None or raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise BadRequest(422, "invalid_query", f"{name!r} must be true or false, got {raw!r}")


def install(
    app: FastAPI,
    service: QuestionService,
    error: Error,
    json_response: Json,
    *,
    valid_id: Callable[[str], bool],
    max_body_bytes: int,
) -> None:
    repo = service.repo
    replaying = asyncio.Lock()

    @app.post("/v1/admin/questions/{question_id}/reset")
    async def reset_question(request: Request, question_id: str) -> Response:
        """Ask a failed question again; `{"reference_answer": ...}` replaces its reference."""
        if not valid_id(question_id):
            return error(404, "not_found", f"no question with id {question_id!r}")
        try:
            data = await read_json_body(request, max_body_bytes, required=False)
        except BadRequest as exc:
            return error(exc.status, exc.code, exc.message)
        reference = data.get("reference_answer")
        if reference is not None and not isinstance(reference, str):
            return error(422, "invalid_field", "'reference_answer' must be a string or null")
        record = await asyncio.to_thread(repo.get, question_id)
        if record is None:
            return error(404, "not_found", f"no question with id {question_id!r}")
        caller = request.scope.get("qaloop.caller") or "admin (auth off)"
        new = await service.reset(
            question_id,
            by=f"admin {caller}",
            reference=reference,
            replace_reference="reference_answer" in data,
        )
        if new is None:
            return error(
                409, "not_failed", f"question {question_id} is {record.state.value}, not failed"
            )
        return json_response(202, {"id": question_id, "status": "queued", "retried": True})

    @app.get("/v1/admin/dead-letters")
    async def list_dead_letters(request: Request) -> Response:
        """Dead letters, oldest first, with the reason each was rejected; `?all=true` lists
        replayed ones too."""
        try:
            limit = _query_limit(request.query_params.get("limit"))
            include = _query_bool(request.query_params.get("all"), "all")
        except BadRequest as exc:
            return error(exc.status, exc.code, exc.message)
        letters = await asyncio.to_thread(repo.dead_letters, limit, include)
        rows = [letter_row(letter) for letter in letters]
        return json_response(200, {"dead_letters": rows, "count": len(rows)})

    @app.post("/v1/admin/dead-letters/replay")
    async def replay(request: Request) -> Response:
        """Replay dead letters by key (`{"keys": [...]}`) or every one not yet replayed
        (`{"all": true}`); `force` re-runs questions already final, `dry_run` changes nothing."""
        try:
            data = await read_json_body(request, max_body_bytes)
            unknown = set(data) - _REPLAY_FIELDS
            if unknown:
                raise BadRequest(
                    422,
                    "invalid_field",
                    f"unknown field(s) {sorted(unknown)}; expected {sorted(_REPLAY_FIELDS)}",
                )
            keys = data.get("keys")
            every, force, dry_run = _flag(data, "all"), _flag(data, "force"), _flag(data, "dry_run")
            if keys is not None and (
                not isinstance(keys, list)
                or not keys
                or not all(isinstance(k, str) and k for k in keys)
            ):
                raise BadRequest(422, "invalid_field", "'keys' must be a non-empty list of strings")
            if (keys is None) != every:  # exactly one of the two
                raise BadRequest(
                    422,
                    "missing_field",
                    "give either 'keys' (see GET /v1/admin/dead-letters) or \"all\": true",
                )
        except BadRequest as exc:
            return error(exc.status, exc.code, exc.message)
        async with replaying:
            letters: list[DeadLetter]
            if keys is not None:
                wanted = set(keys)
                # By key, a letter replayed before may be replayed again (as the CLI does).
                letters = await asyncio.to_thread(repo.dead_letters_by_key, sorted(wanted))
                missing = wanted - {letter.dedup_key for letter in letters}
                if missing:
                    return error(
                        404, "not_found", f"no dead letter with key {', '.join(sorted(missing))}"
                    )
            else:
                letters = await asyncio.to_thread(repo.dead_letters, MAX_REPLAY, False)
            steps = await replay_dead_letters(
                repo, service.bus, service.topics, letters, force=force, dry_run=dry_run
            )
        replayed = sum(step.message is not None for step in steps)
        return json_response(
            200,
            {
                "replayed": 0 if dry_run else replayed,
                "would_replay": replayed if dry_run else None,
                "skipped": len(steps) - replayed,
                "dry_run": dry_run,
                "results": [step.as_dict() for step in steps],
            },
        )
