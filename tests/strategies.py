"""Hypothesis strategies for the domain model: envelopes with every field, their events and
usage records. One place, so every codec test draws from the same space."""

from __future__ import annotations

from hypothesis import strategies as st

from qaloop.core.model import Envelope, ErrorClass, Event, EventKind, QuestionState, Usage

texts = st.text(max_size=12)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
usages = st.builds(
    Usage,
    purpose=texts,
    provider=texts,
    model=texts,
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**6),
    cached_tokens=st.integers(0, 10**6),
    estimated=st.booleans(),
    lane=st.sampled_from(["interactive", "batch"]),
    cost_usd=floats,
)
events = st.builds(
    Event,
    seq=st.integers(0, 50),
    kind=st.sampled_from(EventKind),
    attempt=st.integers(1, 5),
    at=floats,
    answer=st.none() | texts,
    score=st.none() | floats,
    latency_ms=st.none() | floats,
    error_class=st.none() | st.sampled_from(ErrorClass),
    detail=st.none() | texts,
    decision=st.none() | texts,
    wait_s=st.none() | floats,
    usage=st.none() | usages,
)
envelopes = st.builds(
    Envelope,
    question_id=st.text(min_size=1, max_size=12),
    question=st.text(min_size=1, max_size=40).filter(str.strip),
    reference_answer=st.none() | texts,
    trace_id=texts,
    first_seen=floats,
    attempt=st.integers(1, 5),
    state=st.sampled_from(QuestionState),
    answer=st.none() | texts,
    score=st.none() | floats,
    best_answer=st.none() | texts,
    best_score=st.none() | floats,
    best_attempt=st.none() | st.integers(1, 5),
    error_class=st.none() | st.sampled_from(ErrorClass),
    error_detail=st.none() | texts,
    due_at=st.none() | floats,
    llm_calls=st.integers(0, 20),
    tries_in_attempt=st.integers(0, 20),
    history=st.lists(events, max_size=4).map(tuple),
    caller=st.none() | texts,
    lane=st.sampled_from(["interactive", "batch"]),
    feedback=st.none() | texts,
    arm=st.sampled_from([None, "feedback", "control"]),
)
