"""Request bodies and JSON responses of the gateway's routes: one parser (size limit while
reading, JSON object, UTF-8) for the question routes and the admin routes alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps({"error": {"code": code, "message": message}}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def read_json_body(
    request: Request, max_bytes: int, *, required: bool = True
) -> dict[str, Any]:
    """The body as a JSON object, within `max_bytes`; an empty body is {} unless `required`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, "bad_content_length", "Content-Length is not a number")
        if int(declared) > max_bytes:
            # Connection: close (bad_request_response): the unread body is not drained.
            raise BadRequest(
                413, "body_too_large", f"request body is {declared} bytes; the limit is {max_bytes}"
            )
        raw = await request.body()  # declared and within the limit: read it at once
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # chunked: enforce the limit while reading
            size += len(chunk)
            if size > max_bytes:
                raise BadRequest(413, "body_too_large", f"request body exceeds {max_bytes} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
    if not raw:
        if not required:
            return {}
        raise BadRequest(400, "empty_body", "request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _refuse_bad_utf8(raw)  # orjson's own words for it: "surrogates not allowed"
        raise BadRequest(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "invalid_body", f"expected a JSON object, got {type(data).__name__}")
    return data


def _refuse_bad_utf8(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            400,
            "invalid_encoding",
            f"request body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8",
        ) from None
