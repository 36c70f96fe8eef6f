"""CPU per cache hit, calling the gateway's ASGI app directly (no sockets, no load generator):
steadier than wrk on a busy machine, and what the hot path's own code costs.

    .venv/bin/python bench/bench_gateway_cpu.py [--hits 20000] [--repeats 7] [--auth]

Run it with PYTHONPATH pointing at another checkout's src/ for a before/after (the `--auth`
variant needs this checkout's qaloop.gateway.auth). Prints µs of process CPU per hit (the
minimum over repeats: noise only ever adds).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson


async def measure(hits: int, repeats: int, auth_on: bool) -> dict[str, Any]:
    from qaloop.dataset import load_sample
    from qaloop.gateway.http import create_app
    from qaloop.pipeline import EmbeddedPipeline
    from qaloop.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="qaloop-cpu-"))
    extra: dict[str, Any] = {}
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if auth_on:
        from qaloop.gateway.auth import ApiKey, format_key, hash_token, new_token

        token = new_token()
        keys = tmp / "keys.txt"
        keys.write_text(format_key(ApiKey("bench", hash_token(token), "user", 1e9, 1e9)) + "\n")
        extra = {"auth": "on", "api_keys_file": str(keys)}
        headers.append((b"authorization", f"Bearer {token}".encode()))
    settings = Settings(db=f"sqlite:///{tmp / 'c.db'}", **extra)
    pipeline = EmbeddedPipeline(settings)
    kwargs: dict[str, Any] = {"stats": pipeline.stats}
    if auth_on:
        from qaloop.gateway.guard import build_auth

        kwargs["auth"] = build_auth(settings, pipeline.service)
    await pipeline.start()
    app = create_app(pipeline.service, settings, **kwargs)
    qas = load_sample(limit=100)
    bodies = [
        orjson.dumps({"question": q.question, "reference_answer": q.reference_answer}) for q in qas
    ]
    for q in qas:
        await pipeline.service.ask(q.question, q.reference_answer)
    await pipeline.drain(60)
    for q in qas:  # storage -> cache
        await pipeline.service.ask(q.question, q.reference_answer)

    statuses: list[int] = []

    async def call(body: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/questions",
            "raw_path": b"/v1/questions",
            "query_string": b"",
            "root_path": "",
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for i in range(hits):
            await call(bodies[i % len(bodies)])
        best = min(best, (time.process_time() - started) / hits)
    await pipeline.stop()
    assert set(statuses) == {200}, set(statuses)
    return {
        "qaloop": str(Path(inspect.getfile(create_app)).parents[2]),
        "auth": auth_on,
        "us_per_hit": round(best * 1e6, 2),
        "hits": hits,
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hits", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--auth", action="store_true")
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(measure(args.hits, args.repeats, args.auth))).decode())


if __name__ == "__main__":
    main()
