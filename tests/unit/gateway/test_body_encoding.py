"""A body that is not UTF-8 is named as such (orjson's own message is "surrogates not
allowed", which tells a client nothing)."""

from __future__ import annotations

from pathlib import Path

import httpx

from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings


async def test_invalid_utf8_body_is_a_400_that_says_utf8(tmp_path: Path) -> None:
    pipeline = EmbeddedPipeline(Settings(db=f"sqlite:///{tmp_path / 'g.db'}"))
    await pipeline.start()
    try:
        app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            r = await client.post("/v1/questions", content=b'{"question": "caf\xe9?"}')
            assert r.status_code == 400
            error = r.json()["error"]
            assert error["code"] == "invalid_encoding"
            assert "UTF-8" in error["message"] and "byte 17" in error["message"]
            assert "surrogates" not in error["message"]
            r = await client.post("/v1/questions", content=b'{"question": ')  # still JSON's
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    finally:
        await pipeline.stop()
