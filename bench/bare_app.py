"""The baseline for bench_gateway.py: a bare Starlette endpoint that parses the same JSON body
and answers from a dict — what a cache hit costs with nothing else in the way."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWERS: dict[str, bytes] = {}


async def ask(request: Request) -> Response:
    data = orjson.loads(await request.body())
    body = ANSWERS.get(data["question"])
    if body is None:
        body = orjson.dumps({"status": "answered", "answer": "x", "source": "dict"})
        ANSWERS[data["question"]] = body
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/v1/questions", ask, methods=["POST"])])
