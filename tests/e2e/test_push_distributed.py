"""Completion push in the distributed mode: the gateway (its own process) streams a
question's states over SSE from storage, and the store process — the one that sees the final
state — delivers the signed callback; the delivery is recorded in PostgreSQL."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import orjson
import pytest

from qaloop.services.webhooks import verify_signature
from tests.e2e.distributed_stack import Stack, pg_schema, require_servers, sql

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
SECRET = "e2e-secret-not-a-real-one"
REFERENCE = (
    "Sunlight is refracted, reflected and dispersed inside raindrops, which splits it into its "
    "colours."
)


class Hooks(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail_first = 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append((dict(self.headers.items()), body))
        status = 500 if Hooks.fail_first > 0 else 204
        Hooks.fail_first -= 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_sse_and_a_callback_across_processes(tmp_path: Path) -> None:
    bootstrap, pg = require_servers()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/done"
    with pg_schema(pg) as (_, db):
        stack = Stack.create(
            tmp_path,
            bootstrap,
            db,
            sim_latency_ms=50,
            webhook_secret=SECRET,
            webhook_backoff_base_s=0.2,
            webhook_backoff_cap_s=0.5,
        )
        try:
            stack.start_all()
            # A question the seeded simulated LLM answers well at once (seed 42; see README).
            body = {"question": "How does a rainbow form?", "reference_answer": REFERENCE}
            with httpx.Client(base_url=stack.url, timeout=60) as client:
                r = client.post("/v1/questions", json={**body, "callback_url": hook_url})
                assert r.status_code == 202, r.text
                qid = r.json()["id"]
                with client.stream("GET", f"/v1/questions/{qid}/events") as stream:
                    text = "".join(stream.iter_text())
            states = [
                orjson.loads(line[6:])["status"]
                for line in text.splitlines()
                if line[:6] == "data: "
            ]
            assert states[0] == "queued" and states[-1] == "validated", states
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(Hooks.received) < 2:
                time.sleep(0.1)
            assert len(Hooks.received) == 2, stack.tails()  # one 500, then the retry
            headers, raw = Hooks.received[-1]
            assert verify_signature(SECRET, raw, headers["X-Qaloop-Signature"])
            assert orjson.loads(raw)["id"] == qid
            [(state, attempts, status)] = sql(
                db, "SELECT state, attempts, last_status FROM webhooks WHERE question_id = %s", qid
            )
            assert (state, attempts, status) == ("delivered", 2, 204)
        finally:
            stack.stop_all()
            server.shutdown()
            server.server_close()
