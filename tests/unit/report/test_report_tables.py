from __future__ import annotations

import pytest

from qaloop.report import tables as T
from qaloop.report.data import ERROR, HIT, QUEUED, ReportData, RequestRow, load
from qaloop.storage.factory import open_repository

approx = pytest.approx


@pytest.fixture
def data(known_db: str) -> ReportData:
    repo = open_repository(known_db)
    try:
        return load(repo, known_db)
    finally:
        repo.close()


def test_percentile_interpolates_like_numpy() -> None:
    assert T.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert T.percentile([1.0, 2.0, 3.0, 4.0], 95) == approx(3.85)
    assert T.percentile([], 50) is None
    assert T.percentile([7.0], 99) == 7.0


def test_overview(data: ReportData) -> None:
    o = T.overview(data.questions, data.events, data.dead_letters)
    assert o.questions == 5
    assert o.states == {"validated": 2, "failed": 2, "generating": 1}
    assert o.hits == 3
    assert o.llm_calls == 10
    assert o.dead_letters == 3
    assert o.span_s == approx(5.1)


def test_latency_from_storage(data: ReportData) -> None:
    lat = T.latency_from_storage(data.questions)
    assert sorted(lat.samples["queued -> validated"]) == approx([1.5, 3.2])
    assert sorted(lat.samples["queued -> failed"]) == approx([1.0, 5.1])
    assert lat.hits_without_latency == 3
    assert "3 repeat asks" in lat.table().note


def test_latency_from_requests() -> None:
    rows = [
        RequestRow(0.0, 0.001, HIT),
        RequestRow(0.1, 2.0, QUEUED),
        RequestRow(0.2, 4.0, QUEUED),
        RequestRow(0.3, 0.5, ERROR),
    ]
    lat = T.latency_from_requests(rows)
    assert lat.samples == {HIT: [0.001], QUEUED: [2.0, 4.0], ERROR: [0.5]}
    row = lat.table().rows[1]
    assert row[:4] == ["queued", 2, 3.0, 3.0]


def test_retries_per_error_class(data: ReportData) -> None:
    r = T.retries(T.group_events(data.events))
    assert [row.error_class for row in r.rows] == ["overload", "permanent", "quota_minute"]
    by = r.by_class()
    ov = by["overload"]
    assert (ov.errors, ov.questions, ov.retried_now, ov.parked) == (2, 2, 1, 0)
    assert (ov.recovered, ov.gave_up, ov.pending) == (1, 0, 1)
    assert ov.waits_s == approx([0.5])
    assert ov.recover_s == approx([1.0])
    quota = by["quota_minute"]
    assert (quota.errors, quota.parked, quota.recovered, quota.gave_up) == (1, 1, 1, 0)
    assert quota.waits_s == approx([2.0])
    assert quota.recover_s == approx([2.5])
    perm = by["permanent"]
    assert (perm.errors, perm.recovered, perm.gave_up, perm.waits_s) == (1, 0, 1, [])
    assert r.table().rows[0][8] == approx(50.0)  # overload recovered %


def test_feedback_loop(data: ReportData) -> None:
    f = T.feedback(T.group_events(data.events))
    assert [(a.attempt, a.scored, a.validated, a.regenerated, a.gave_up) for a in f.attempts] == [
        (1, 3, 1, 2, 0),
        (2, 2, 1, 1, 0),
        (3, 1, 0, 0, 1),
    ]
    assert [a.mean_score for a in f.attempts] == approx([1.3 / 3, 0.35, 0.4])
    assert f.validated_total == 2
    assert f.regenerated_questions == 2
    assert (f.first_mean, f.best_mean, f.gain_mean) == (approx(0.25), approx(0.5), approx(0.25))
    assert f.improved == 2
    assert (f.llm_calls, f.answers, f.errors, f.questions_called) == (10, 6, 4, 5)
    assert f.calls_per_validated == 5.0
    assert f.extra_calls == 5
    assert f.overhead_pct == 100.0
    assert f.extra_share_pct == 50.0
    assert f.attempts_table().rows[0][5] == 50.0  # % of validated on attempt 1


def test_scores_and_threshold(data: ReportData) -> None:
    s = T.scores(data.events, 0.5)
    assert sorted(s.all_scores) == approx([0.1, 0.2, 0.3, 0.4, 0.6, 0.8])
    assert sorted(s.first_attempt) == approx([0.2, 0.3, 0.8])
    assert s.pass_rate_pct == approx(100 / 3)
    assert s.table().rows[1][4] == 1  # first attempt: one pass


def test_dead_letters_by_reason(data: ReportData) -> None:
    d = T.dead_letters(data.dead_letters)
    assert d.total == 3
    assert sorted(d.by_reason) == [
        ("gave_up: low score", 1, 0),
        ("not JSON: bad", 1, 1),
        ("permanent error", 1, 0),
    ]


def test_throughput_bins() -> None:
    starts, rates, width = T.throughput([0.0, 0.5, 1.0, 4.0], bins=4)
    assert width == 1.0
    assert starts == [0.0, 1.0, 2.0, 3.0]
    assert rates == [2.0, 1.0, 0.0, 1.0]


def test_an_unscored_answer_is_not_counted_as_scored() -> None:
    """A question without a reference is validated unscored: judged, but not scored."""

    def ev(qid: str, seq: int, kind: str, **extra: object) -> dict[str, object]:
        return {"question_id": qid, "seq": seq, "attempt": 1, "kind": kind, "at": 1.0, **extra}

    events = [
        ev("a", 0, "generated"),
        ev("a", 1, "scored", score=0.8, decision="validate"),
        ev("b", 0, "generated"),
        ev("b", 1, "scored", score=None, decision="validate"),
    ]
    f = T.feedback(T.group_events(events))
    [row] = f.attempts
    assert (row.scored, row.unscored, row.validated) == (1, 1, 2)
    assert f.attempts_table().rows[0][:3] == [1, 1, 1]


def test_percentages_have_one_decimal_and_other_floats_keep_theirs() -> None:
    from qaloop.report.render import markdown_table

    table = T.Table(
        "t",
        ["name", "share %", "mean"],
        [["a", 3.14159, 0.123456], ["  overhead, % of x", 88.123, 8.8]],
    )
    text = markdown_table(table)
    assert "| a | 3.1 | 0.123 |" in text
    assert "overhead, % of x | 88.1 | 8.8 |" in text
