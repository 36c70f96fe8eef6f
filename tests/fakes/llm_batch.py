"""The fake server's batch protocols (mounted by tests/fakes/llm_server.py):

OpenAI Batch API (https://platform.openai.com/docs/api-reference/batch):
    POST /v1/files              multipart (purpose=batch, file=JSONL of {custom_id, method, url,
                                body}) -> {"id": "file-...", "object": "file", ...}
    POST /v1/batches            {input_file_id, endpoint, completion_window} -> a batch object
    GET  /v1/batches/{id}       status validating -> in_progress -> completed | failed | expired,
                                request_counts, output_file_id, error_file_id, errors
    GET  /v1/files/{id}/content JSONL: {id, custom_id, response: {status_code, body}, error}

Gemini Batch Mode (google-genai `client.batches`):
    POST /v1beta/models/{model}:batchGenerateContent
         {"batch": {"displayName", "inputConfig": {"requests": {"requests": [
             {"request": GenerateContentRequest, "metadata": {"key": ...}}]}}}}
         -> {"name": "batches/...", "metadata": {"name", "state": "BATCH_STATE_PENDING", ...}}
    GET  /v1beta/batches/{id}   metadata.state BATCH_STATE_RUNNING -> SUCCEEDED | FAILED | EXPIRED;
         when succeeded metadata.output.inlinedResponses.inlinedResponses: [{response |
         error, metadata}]

What a batch does is set per server (FakeConfig): `batch_polls` status reads before it ends,
`batch_outcome` "complete", "fail" (the whole job) or "expire" (OpenAI: the first half of the
requests answered, the rest in the error file as batch_expired; Gemini: no results). A request
whose prompt carries [[fake:400]] fails alone (a partial failure).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_ids = itertools.count(1)


class _Server(Protocol):
    config: Any

    def _answer(self, prompt: str) -> str: ...

    def _completion(self, model: str, text: str, finish: str, prompt: str) -> dict[str, Any]: ...


@dataclass
class FakeBatch:
    id: str
    kind: str  # "openai" | "gemini"
    model: str
    items: list[tuple[str, str]]  # (custom id / key, prompt)
    temperatures: list[float | None] = field(default_factory=list)  # per item, as sent
    created: float = field(default_factory=time.time)
    polls: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None


class BatchEndpoints:
    def __init__(self, server: _Server) -> None:
        self.server = server
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.submitted = 0
        self.status_reads = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers

    def _state(self, batch: FakeBatch) -> str:
        """running | complete | fail | expire, advancing one step per status read."""
        with self._lock:
            batch.polls += 1
            self.status_reads += 1
            if batch.polls <= self.server.config.batch_polls:
                return "running"
        return str(self.server.config.batch_outcome)

    @staticmethod
    def _item_fails(prompt: str) -> bool:
        return "[[fake:400]]" in prompt

    # ------------------------------------------------------------------ openai

    async def upload(self, request: Request) -> Response:
        raw = await request.body()
        header = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return _openai_error(400, "expected purpose=batch and a file")
        file_id = f"file-{next(_ids)}"
        self.files[file_id] = fields["file"]
        return JSONResponse(
            {"id": file_id, "object": "file", "bytes": len(fields["file"]), "purpose": "batch"}
        )

    async def create_openai(self, request: Request) -> Response:
        body = await request.json()
        content = self.files.get(str(body.get("input_file_id")))
        if content is None:
            return _openai_error(404, "No such File object")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _openai_error(400, "endpoint must be /v1/chat/completions, window 24h")
        items = []
        models: set[str] = set()
        temperatures: list[float | None] = []
        for line in content.decode().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            req = row["body"]
            models.add(str(req.get("model", "")))
            temperatures.append(req.get("temperature"))
            prompt = "".join(str(m.get("content", "")) for m in req["messages"])
            items.append((str(row["custom_id"]), prompt))
        if len(models) > 1:  # as the real API: one model per batch input file
            return _openai_error(400, f"a batch file must use one model, got {sorted(models)}")
        model = models.pop() if models else ""
        batch = FakeBatch(f"batch_{next(_ids)}", "openai", model, items, temperatures)
        self.batches[batch.id] = batch
        self.submitted += 1
        return JSONResponse(self._openai_batch(batch, "validating"))

    def _openai_batch(self, batch: FakeBatch, status: str) -> dict[str, Any]:
        total = len(batch.items)
        done = {"completed": 0, "failed": 0}
        if status in ("completed", "expired"):
            ok = [i for i in self._answered(batch) if not self._item_fails(i[1])]
            done = {"completed": len(ok), "failed": total - len(ok)}
        body: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "status": status,
            "completion_window": "24h",
            "created_at": int(batch.created),
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "request_counts": {"total": total, **done},
            "errors": None,
        }
        if status == "failed":
            body["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "fake: the batch failed"}],
            }
        return body

    def _answered(self, batch: FakeBatch) -> list[tuple[str, str]]:
        if self.server.config.batch_outcome == "expire":
            return batch.items[: len(batch.items) // 2]
        return batch.items

    async def get_openai(self, request: Request) -> Response:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None and f"batches/{request.path_params['batch_id']}" in self.batches:
            return await self.get_gemini(request)  # /v1/batches/... from a Gemini client
        if batch is None or batch.kind != "openai":
            return _openai_error(404, "No such Batch object")
        state = self._state(batch)
        if state == "running":
            return JSONResponse(self._openai_batch(batch, "in_progress"))
        if state == "fail":
            return JSONResponse(self._openai_batch(batch, "failed"))
        if batch.output_file_id is None:
            self._write_openai_results(batch, expired=state == "expire")
        return JSONResponse(
            self._openai_batch(batch, "expired" if state == "expire" else "completed")
        )

    def _write_openai_results(self, batch: FakeBatch, expired: bool) -> None:
        out, err = [], []
        answered = {cid for cid, _ in self._answered(batch)}
        for cid, prompt in batch.items:
            line: dict[str, Any] = {"id": f"batch_req_{next(_ids)}", "custom_id": cid}
            if cid not in answered:
                line |= {"response": None, "error": {"code": "batch_expired",
                                                     "message": "This request could not be "
                                                     "executed before the completion window "
                                                     "expired."}}  # fmt: skip
                err.append(line)
            elif self._item_fails(prompt):
                line |= {
                    "response": {
                        "status_code": 400,
                        "request_id": "r",
                        "body": {"error": {"message": "fake 400", "type": "invalid_request_error",
                                           "code": None}},
                    },
                    "error": None,
                }  # fmt: skip
                err.append(line)
            else:
                text = self.server._answer(prompt)
                body = self.server._completion(batch.model, text, "stop", prompt)
                line |= {"response": {"status_code": 200, "request_id": "r", "body": body},
                         "error": None}  # fmt: skip
                out.append(line)
        if out:
            batch.output_file_id = f"file-{next(_ids)}"
            self.files[batch.output_file_id] = "".join(json.dumps(x) + "\n" for x in out).encode()
        if err:
            batch.error_file_id = f"file-{next(_ids)}"
            self.files[batch.error_file_id] = "".join(json.dumps(x) + "\n" for x in err).encode()

    async def file_content(self, request: Request) -> Response:
        content = self.files.get(request.path_params["file_id"])
        if content is None:
            return _openai_error(404, "No such File object")
        return Response(content, media_type="application/jsonl")

    # ------------------------------------------------------------------ gemini

    async def create_gemini(self, request: Request, model: str) -> Response:
        body = await request.json()
        try:
            raw = body["batch"]["inputConfig"]["requests"]["requests"]
            items = []
            temperatures = []
            for i, entry in enumerate(raw):
                key = str((entry.get("metadata") or {}).get("key", i))
                contents = entry["request"]["contents"]
                prompt = "".join(p.get("text", "") for c in contents for p in c.get("parts", []))
                items.append((key, prompt))
                temperatures.append(
                    (entry["request"].get("generationConfig") or {}).get("temperature")
                )
        except (KeyError, TypeError):
            return _google_error(400, "INVALID_ARGUMENT", "batch.inputConfig.requests missing")
        batch = FakeBatch(f"batches/fake{next(_ids)}", "gemini", model, items, temperatures)
        self.batches[batch.id] = batch
        self.submitted += 1
        return JSONResponse(self._gemini_op(batch, "BATCH_STATE_PENDING"))

    def _gemini_op(self, batch: FakeBatch, state: str, output: Any = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "name": batch.id,
            "displayName": "qaloop",
            "model": f"models/{batch.model}",
            "state": state,
            "createTime": "2026-12-01T00:00:00Z",
        }
        if output is not None:
            metadata["output"] = output
        return {"name": batch.id, "metadata": metadata, "done": output is not None}

    async def get_gemini(self, request: Request) -> Response:
        name = f"batches/{request.path_params['batch_id']}"
        batch = self.batches.get(name)
        if batch is None or batch.kind != "gemini":
            return _google_error(404, "NOT_FOUND", f"{name} not found")
        state = self._state(batch)
        if state == "running":
            return JSONResponse(self._gemini_op(batch, "BATCH_STATE_RUNNING"))
        if state == "fail":
            return JSONResponse(self._gemini_op(batch, "BATCH_STATE_FAILED"))
        if state == "expire":
            return JSONResponse(self._gemini_op(batch, "BATCH_STATE_EXPIRED"))
        responses = []
        for key, prompt in batch.items:
            if self._item_fails(prompt):
                responses.append(
                    {"error": {"code": 400, "message": "fake 400", "status": "INVALID_ARGUMENT"},
                     "metadata": {"key": key}}
                )  # fmt: skip
                continue
            answer = self.server._answer(prompt)
            responses.append(
                {
                    "response": {
                        "candidates": [
                            {"content": {"role": "model", "parts": [{"text": answer}]},
                             "finishReason": "STOP", "index": 0}
                        ],
                        "usageMetadata": {
                            "promptTokenCount": len(prompt.split()),
                            "candidatesTokenCount": len(answer.split()),
                            "totalTokenCount": len(prompt.split()) + len(answer.split()),
                        },
                        "modelVersion": batch.model,
                    },
                    "metadata": {"key": key},
                }
            )  # fmt: skip
        output = {"inlinedResponses": {"inlinedResponses": responses}}
        return JSONResponse(self._gemini_op(batch, "BATCH_STATE_SUCCEEDED", output))


def _openai_error(status: int, message: str) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}},
        status_code=status,
    )


def _google_error(code: int, status: str, message: str) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message, "status": status}}, status_code=code
    )
