"""The gateway's OpenAPI schema, completed by hand: the handlers read their input themselves
(qaloop.gateway.http), so FastAPI can't infer bodies or responses. `/openapi.json`
is served; the `/docs` and `/redoc` pages are disabled, because FastAPI's pages load their
JavaScript from a CDN (broken offline, and a third party in the page): point any OpenAPI
viewer at `/openapi.json` instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

ASK_BODY = {
    "type": "object",
    "required": ["question"],
    "properties": {
        "question": {"type": "string", "minLength": 1},
        "reference_answer": {"type": ["string", "null"]},
        "retry_failed": {
            "type": "boolean",
            "default": False,
            "description": "ask a question that failed again (a new run; the stored "
            "reference is kept)",
        },
    },
}

ANSWER = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "status": {"type": "string", "enum": ["answered", "failed", "queued"]},
        "answer": {"type": ["string", "null"]},
        "score": {"type": ["number", "null"]},
        "source": {"type": "string", "enum": ["cache", "storage"]},
        "error": {"type": ["string", "null"]},
        "joined": {"type": "boolean"},
        "retried": {"type": "boolean"},
        "reference_ignored": {
            "type": "boolean",
            "description": "the request's reference differs from the stored one, which is used",
        },
    },
}

STATUS = {
    "type": "object",
    "required": ["id", "status", "attempts"],
    "properties": {
        "id": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["queued", "generating", "scoring", "validated", "failed"],
        },
        "question": {"type": "string"},
        "answer": {"type": ["string", "null"]},
        "score": {"type": ["number", "null"]},
        "attempts": {"type": "integer"},
        "hit_count": {"type": "integer"},
    },
    "additionalProperties": True,
}

OBJECT = {"type": "object", "additionalProperties": True}

DEAD_LETTER = {
    "type": "object",
    "required": ["key", "at", "source_topic", "reason", "replayed"],
    "properties": {
        "key": {"type": "string", "description": "dedup key: replay by it"},
        "at": {"type": "string", "format": "date-time"},
        "source_topic": {"type": "string"},
        "question_id": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "bytes": {"type": ["integer", "null"]},
        "replayed": {"type": "boolean"},
    },
}

REPLAY_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keys": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "all": {"type": "boolean", "default": False, "description": "every letter not replayed"},
        "force": {
            "type": "boolean",
            "default": False,
            "description": "also re-run questions already final in storage",
        },
        "dry_run": {"type": "boolean", "default": False},
    },
    "description": 'exactly one of `keys` and `"all": true`',
}

REPLAY_RESULT = {
    "type": "object",
    "required": ["replayed", "skipped", "dry_run", "results"],
    "properties": {
        "replayed": {"type": "integer"},
        "would_replay": {"type": ["integer", "null"]},
        "skipped": {"type": "integer"},
        "dry_run": {"type": "boolean"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string"},
                    "action": {"type": "string", "enum": ["replay", "skip"]},
                    "detail": {"type": "string"},
                },
            },
        },
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    what = {
        400: "malformed request (invalid JSON, empty body)",
        401: "missing, unknown or revoked API key (auth on)",
        403: "the route needs an admin key",
        404: "unknown question id (ids are 32 hex digits) or dead-letter key",
        408: "request head or body not received in time",
        413: "request body over the limit",
        422: "a field is missing, of the wrong type, empty or too long",
        429: "rate limit, quota, backlog or budget: see Retry-After",
        431: "request head over the limit",
        503: "storage or bus unavailable",
    }
    return {str(c): _json(what[c], ERROR) for c in codes}


ID_PARAM = {
    "name": "question_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}

SECURITY: list[dict[str, list[str]]] = [
    {},
    {"bearer": []},
    {"apiKey": []},
]  # {}: auth off (loopback default)


def paths(ask_body: dict[str, Any] = ASK_BODY) -> dict[str, Any]:
    common = (401, 408, 429, 431, 503)
    return {
        "/v1/questions": {
            "post": {
                "summary": "Ask a question",
                "security": SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ask_body}},
                },
                "responses": {
                    "200": _json("answered (or failed) from cache or storage", ANSWER),
                    "202": _json("queued, joined a question in flight, or retried", ANSWER),
                    **_errors(400, 413, 422, *common),
                },
            }
        },
        "/v1/questions/{question_id}": {
            "get": {
                "summary": "A question's status",
                "security": SECURITY,
                "parameters": [
                    ID_PARAM,
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "description": "long-poll up to this many seconds for a final state",
                        "schema": {"type": "number", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": _json("the question", STATUS),
                    **_errors(404, 422, *common),
                },
            }
        },
        "/v1/questions/{question_id}/trace": {
            "get": {
                "summary": "A question's full history",
                "security": SECURITY,
                "parameters": [ID_PARAM],
                "responses": {"200": _json("the trace", OBJECT), **_errors(404, *common)},
            }
        },
        "/v1/admin/questions/{question_id}/reset": {
            "post": {
                "summary": "Ask a failed question again (admin)",
                "security": [{}, {"bearer": []}, {"apiKey": []}],
                "parameters": [ID_PARAM],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"reference_answer": {"type": ["string", "null"]}},
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json("reset: a new run is queued", ANSWER),
                    "409": _json("the question is not failed", ERROR),
                    **_errors(400, 403, 404, 422, *common),
                },
            }
        },
        "/v1/admin/dead-letters": {
            "get": {
                "summary": "Dead letters, oldest first, with their reasons (admin)",
                "security": SECURITY,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    },
                    {
                        "name": "all",
                        "in": "query",
                        "required": False,
                        "description": "include letters already replayed",
                        "schema": {"type": "boolean", "default": False},
                    },
                ],
                "responses": {
                    "200": _json(
                        "the letters",
                        {
                            "type": "object",
                            "properties": {
                                "dead_letters": {"type": "array", "items": DEAD_LETTER},
                                "count": {"type": "integer"},
                            },
                        },
                    ),
                    **_errors(403, 422, *common),
                },
            }
        },
        "/v1/admin/dead-letters/replay": {
            "post": {
                "summary": "Put dead letters back on the bus (admin)",
                "security": SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": REPLAY_BODY}},
                },
                "responses": {
                    "200": _json("what was replayed or skipped, and why", REPLAY_RESULT),
                    **_errors(400, 403, 404, 413, 422, *common),
                },
            }
        },
        "/v1/stats": {
            "get": {
                "summary": "Cache and pipeline counters",
                "security": SECURITY,
                "responses": {"200": _json("counters", OBJECT), **_errors(*common)},
            }
        },
        "/v1/dashboard-data": {
            "get": {
                "summary": "The dashboard's data",
                "security": SECURITY,
                "responses": {"200": _json("samples", OBJECT), **_errors(403, *common)},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process serves requests",
                "responses": {"200": _json("alive", OBJECT)},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: storage and bus answer",
                "responses": {
                    "200": _json("ready", OBJECT),
                    "503": _json("not ready (which part, why)", OBJECT),
                },
            }
        },
    }


def install(app: FastAPI, ask_body: dict[str, Any] | None = None) -> None:
    """FastAPI's generated schema (routes declared with decorators keep their summaries and
    parameters), with the hand-written operations merged in: POST /v1/questions (a plain
    Starlette route, invisible to FastAPI), response schemas and the 4xx answers everywhere."""
    generate = app.openapi
    body = ask_body or ASK_BODY

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        # HEAD is served wherever GET is; documenting it twice would duplicate operation ids.
        heads = [
            r.methods
            for r in app.router.routes
            if isinstance(r, APIRoute) and r.methods is not None and "HEAD" in r.methods
        ]
        for methods in heads:
            methods.discard("HEAD")
        try:
            schema = generate()
        finally:
            for methods in heads:
                methods.add("HEAD")
        found = schema.setdefault("paths", {})
        for path, operations in paths(body).items():
            for method, mine in operations.items():
                existing = found.setdefault(path, {}).get(method)
                if existing is None:
                    found[path][method] = mine
                    continue
                existing["responses"] = mine["responses"]
                existing.setdefault("summary", mine["summary"])
                if "security" in mine:
                    existing["security"] = mine["security"]
                names = {p.get("name") for p in existing.get("parameters", [])}
                for parameter in mine.get("parameters", []):
                    if parameter["name"] not in names:
                        existing.setdefault("parameters", []).append(parameter)
                if "requestBody" in mine:
                    existing["requestBody"] = mine["requestBody"]
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
