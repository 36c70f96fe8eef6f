"""CPU per request of the HTTP protocol layer alone: uvicorn's httptools protocol vs qaloop's
LimitedHttpToolsProtocol (gateway/server.py: head limit, read deadlines), fed the same
keep-alive POST from an in-memory transport with a trivial ASGI app. What the limits cost
the hot path, without sockets or a load generator.

    .venv/bin/python bench/bench_http_protocol.py     # prints µs per request, 3 pairs
"""

from __future__ import annotations

import asyncio
import time

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from qaloop.gateway.server import HttpLimits, limited_protocol


async def app(scope, receive, send):
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


class T(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.closing = False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data):
        pass

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def set_protocol(self, p):
        pass


REQ = (
    b"POST /v1/questions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 20\r\n\r\n" + b'{"question": "hi?"} '
)


async def run(cls, n):
    config = Config(app=app, access_log=False, log_level="warning")
    config.load()
    state = ServerState()
    p = cls(config=config, server_state=state, app_state={})
    p.connection_made(T())
    best = 1e9
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            p.data_received(REQ)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        best = min(best, (time.process_time() - t) / n)
    return best * 1e6


async def main():
    L = limited_protocol(HttpLimits())
    for _ in range(3):
        a = await run(HttpToolsProtocol, 20000)
        b = await run(L, 20000)
        print(f"plain {a:.2f} us, limited {b:.2f} us, +{b - a:.2f}")


if __name__ == "__main__":
    uvloop.run(main())
