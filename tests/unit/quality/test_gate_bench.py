"""The gate benchmark's families (qaloop.quality.gate_bench) on small synthetic pairs, and the
`qaloop gate-bench` command end to end with a lexical scorer (no model)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from qaloop.cli import main
from qaloop.quality import gate_bench as gb
from qaloop.quality.calibration import Pair
from qaloop.quality.lang import detect_language

TOPICS = [
    ("the Eiffel Tower", "Paris", "built in 1889 for the World Fair, and it is 330 meters tall"),
    ("the Great Wall", "China", "built over many centuries, and it is not visible from space"),
    ("the Colosseum", "Rome", "finished in 80 AD under Titus, and it could hold 50,000 people"),
    ("Big Ben", "London", "completed in 1859, and the name belongs to the bell, not the tower"),
    ("the Golden Gate Bridge", "San Francisco", "opened in 1937 and it is painted orange"),
    ("the Statue of Liberty", "New York", "a gift from France dedicated in October 1886"),
]


def pairs() -> list[Pair]:
    out = []
    for name, city, fact in TOPICS:
        question = f"What do you know about {name} in {city} and why is it famous?"
        reference = f"It is in {city}. It was {fact}. People visit it because it is beautiful."
        answer = (
            f"{name.capitalize()} is a landmark of {city}: it was {fact}. Millions of tourists "
            "visit it every year, which is why it is famous around the world."
        )
        p = Pair(answer=answer, reference=reference, question=question, source="test/x")
        p.answer_lang, p.reference_lang = detect_language(answer), detect_language(reference)
        out.append(p)
    spanish = Pair(
        answer="Es un monumento muy famoso de la ciudad y lo visitan muchos turistas cada año.",
        reference=out[0].reference,
        question=out[0].question,
        source="NicolasMoreno98/x",
    )
    spanish.answer_lang = detect_language(spanish.answer)
    spanish.reference_lang = "en"
    bad = Pair(out[1].answer, out[1].reference, out[1].question, "Dhater/x", recorded_score=3.0)
    bad.answer_lang = bad.reference_lang = "en"
    return [*out, spanish, bad]


def test_families_are_seeded_and_split_by_question() -> None:
    data = pairs()
    a = gb.build_benchmark(data, seed=1, most_similar=lambda qs: [1, 0, 3, 2, 5, 4][: len(qs)])
    b = gb.build_benchmark(data, seed=1, most_similar=lambda qs: [1, 0, 3, 2, 5, 4][: len(qs)])
    assert a.cases == b.cases
    families = {c.family for c in a.cases}
    assert {gb.REAL, gb.GRADED_BAD, "off_topic_random", "off_topic_similar", "echo"} <= families
    assert {"non_answer", "contradiction_number", "contradiction_date", "truncated"} <= families
    assert {"other_language", "bad_input", "contradiction_polarity"} <= families
    # The Dhater row graded 3/10 is not a real answer; the Spanish answer is another language.
    real = [c for c in a.cases if c.family == gb.REAL]
    assert len(real) == len(TOPICS)
    for c in a.cases:
        assert c.split == gb.split_of(c.item.question, 1)
        if c.family == "off_topic_similar" or c.family == "off_topic_random":
            assert c.item.answer not in {p.answer for p in data if p.question == c.item.question}
        if c.family.startswith("contradiction"):
            assert c.item.answer != c.item.reference
    # Held-out questions only get the second non-answer pool.
    for c in a.cases:
        if c.family == "non_answer" and c.split == gb.HELD_OUT:
            k = int(c.variant[1:])
            assert gb.NON_ANSWERS_B[k].split("{")[0] in c.item.answer


def test_echo_with_filler_is_the_question_verbatim_plus_a_split_pool() -> None:
    data = pairs()
    bench = gb.build_benchmark(data, seed=3)
    fillers = [c for c in bench.cases if c.family == "echo" and c.variant.startswith("filler")]
    assert len(fillers) == len(TOPICS)  # one per real answer, on top of the plain echoes
    for c in fillers:
        assert c.item.question in c.item.answer
        pool = gb.ECHO_FILLERS_A if c.split == gb.CALIBRATION else gb.ECHO_FILLERS_B
        rest = c.item.answer.replace(c.item.question, "")
        assert any(f in rest for f in pool)
        other = gb.ECHO_FILLERS_B if c.split == gb.CALIBRATION else gb.ECHO_FILLERS_A
        assert not any(f in rest for f in other)
    assert not set(gb.ECHO_FILLERS_A) & set(gb.ECHO_FILLERS_B)


def test_mutations() -> None:
    rng = random.Random(0)
    assert gb.mutate_number("It holds 50,000 people and 12 lions.", rng) not in (
        None,
        "It holds 50,000 people and 12 lions.",
    )
    assert gb.mutate_number("Built in 1889.", rng) is None  # years belong to the date family
    assert gb.mutate_date("Built in 1889.", rng) not in (None, "Built in 1889.")
    assert gb.mutate_polarity("It is famous.", rng) == "It is not famous."
    assert gb.mutate_polarity("It isn't famous.", rng) == "It is famous."
    assert gb.mutate_name("He met Alice there.", rng, ["Bob"]) == "He met Bob there."
    cut = gb.truncate("This is a long sentence that goes on. " * 4, rng)
    assert cut is not None and cut[-1] not in ".!?"


def test_choose_band_uses_the_calibration_split_only() -> None:
    cal, held = gb.CALIBRATION, gb.HELD_OUT
    item = pairs()[0]
    from qaloop.quality.verdict import GateInput

    gi = GateInput(item.question, item.answer, item.reference)
    cases = [gb.Case(gb.REAL, cal, gi)] * 10 + [gb.Case("echo", cal, gi)] * 10
    cases += [gb.Case("echo", held, gi)] * 10
    scores: list[float | None] = [0.8] * 10 + [0.3] * 10 + [0.95] * 10  # held out: ignored
    pass_t, unsure_t = gb.choose_band(scores, cases, [True] * 30)
    assert pass_t == pytest.approx(0.31)
    assert unsure_t == pytest.approx(0.31)


def test_gate_bench_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {
            "question": p.question,
            "original_answer": p.reference,
            "llm_answer": p.answer,
            "source": p.source,
            "score": p.recorded_score,
        }
        for p in pairs() * 3
    ]
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    monkeypatch.setenv("QALOOP_SCORER", "keyword_recall")
    monkeypatch.setenv("QALOOP_THRESHOLD", "0.3")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "gate-bench",
            "--answers",
            str(answers),
            "--out",
            str(out),
            "--scorers",
            "keyword_recall,rouge_l",
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "| real |" in report and "| echo |" in report
    assert "off_topic_similar family is left out" in report  # no embedding scorer asked for
    csv_text = (out / "verdicts.csv").read_text()
    assert rows[0]["llm_answer"] not in csv_text  # numbers only, no text of the data


def test_gate_bench_command_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = CliRunner().invoke(main, ["gate-bench", "--answers", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "invalid JSON" in result.output
    result = CliRunner().invoke(
        main, ["gate-bench", "--answers", str(bad), "--out", str(tmp_path), "--scorers", "nope"]
    )
    assert result.exit_code == 1 and "unknown scorer" in result.output


def test_text_cache_reaches_the_model_inside_composites() -> None:
    from types import SimpleNamespace

    from qaloop.cli.calibrate import default_scorers, enable_text_cache

    model = SimpleNamespace(text_cache_size=0)
    part = SimpleNamespace(name="embedding", model=model)
    composite = SimpleNamespace(name="composite_embedding", parts={"embedding": part})
    enable_text_cache([composite], 1000)  # type: ignore[list-item]
    assert model.text_cache_size == 1000
    enable_text_cache([part], 10)  # type: ignore[list-item]
    assert model.text_cache_size == 1000  # never shrunk by a later, smaller request
    assert "embedding_int8" not in default_scorers() and "embedding" in default_scorers()
