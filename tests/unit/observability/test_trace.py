"""GET /v1/questions/{id}/trace: the question's full history from storage."""

from __future__ import annotations

import httpx

from qaloop.dataset import load_sample
from qaloop.pipeline import EmbeddedPipeline


async def test_trace_shows_every_attempt_error_score_and_topic(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    ids = []
    for qa in load_sample(limit=150):
        r = await client.post(
            "/v1/questions", json={"question": qa.question, "reference_answer": qa.reference_answer}
        )
        ids.append(r.json()["id"])
    assert await pipeline.drain(60)
    t = pipeline.topics
    traces = [(await client.get(f"/v1/questions/{qid}/trace")).json() for qid in ids]
    for qid, trace in zip(ids, traces, strict=True):
        assert trace["id"] == qid
        assert len(trace["trace_id"]) == 32
        assert trace["status"] in ("validated", "failed")
        kinds = [e["kind"] for e in trace["events"]]
        assert kinds[0] == "accepted"
        assert [e["seq"] for e in trace["events"]] == list(range(len(kinds)))
        assert trace["events"][0]["topic"] == t.questions
        assert all(e["time"].endswith("+00:00") for e in trace["events"])
        assert [a["attempt"] for a in trace["by_attempt"]] == list(range(1, trace["attempts"] + 1))
        assert trace["topics"][0] == t.questions
    # Somewhere in the run: a regeneration, a park, and an answer that passed.
    regenerated = [
        tr for tr in traces if any(a["decision"] == "regenerate" for a in tr["by_attempt"])
    ]
    assert regenerated
    # a gate's pre-check (empty, echo, ...) fails without a score; a scored rejection has one
    tr = next(tr for tr in regenerated if tr["by_attempt"][0]["score"] is not None)
    assert tr["by_attempt"][0]["answer"]
    scored = [e for e in tr["events"] if e["kind"] == "scored"]
    assert scored[0]["decision"] == "regenerate" and scored[0]["topic"] == t.questions
    parked = [tr for tr in traces if t.delayed in tr["topics"]]
    assert parked
    errors = [err for a in parked[0]["by_attempt"] for err in a["errors"]]
    assert errors and errors[0]["error_class"] in ("quota_minute", "overload")
    assert any(e["kind"] == "resumed" for e in parked[0]["events"])
    validated = [tr for tr in traces if tr["status"] == "validated"]
    assert validated
    assert validated[0]["topics"][-1] == t.validated


async def test_unknown_or_malformed_ids_get_a_json_404(client: httpx.AsyncClient) -> None:
    for qid in ("0" * 32, "not-an-id"):
        r = await client.get(f"/v1/questions/{qid}/trace")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        assert qid in r.json()["error"]["message"]
