"""The judge's checks made cheaper decide exactly as before (issue 13, point 4).

- Every verdict (outcome, reason, score, detail) and every check's own result on the seeded
  inputs of tests/cases/gate_inputs.py equals the record made with main before the speed-up
  (tests/cases/record_gate_verdicts.py says how to re-record).
- The shortcuts are exact: with each of them turned off (the injection patterns run on every
  answer, difflib's alignment on every pair, no cache), the gate decides the same on the seeded
  inputs and on the 6,329 recorded answers of ../shared/data when present (a seeded 1,500 of them).
- The rewritten counts (control characters, binary characters, language votes) equal the
  per-character loops they replace, kept here as oracles.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import random
import re
import unicodedata
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaloop.quality import gate as gate_mod
from qaloop.quality import lang, llm_judge
from qaloop.quality import text as text_mod
from qaloop.quality.scorers import clear_caches
from qaloop.quality.text import ASCII_LOOKALIKES, ascii_view
from tests.cases.gate_inputs import inputs
from tests.cases.record_gate_verdicts import OUT, decisions

ROOT = Path(__file__).resolve().parents[3]


def shared_rows() -> list[tuple[str, str, str, str | None]]:
    base = Path(os.environ.get("QALOOP_SHARED_DATA", ROOT.parent / "shared" / "data"))
    path = base / "llm_answers.jsonl"
    if not path.is_file():
        pytest.skip(f"shared data not found ({path}): the recorded answers are not in the repo")
    rows = []
    with path.open("rb") as fh:
        for line in fh:
            row = orjson.loads(line)
            rows.append(("recorded", row["question"], row["llm_answer"], row["original_answer"]))
    return rows


def test_every_verdict_equals_the_record_made_before_the_speed_up() -> None:
    want = [orjson.loads(line) for line in OUT.read_bytes().splitlines()]
    got = decisions(inputs())
    assert len(got) == len(want) == 1000
    differ = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
    assert not differ, f"{len(differ)} of {len(want)} differ; first: {differ[0]}"


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shortcut off: the patterns on every answer, the alignment on every pair, and the
    caches bypassed."""
    monkeypatch.setattr(gate_mod, "_may_inject", lambda answer: True)
    monkeypatch.setattr(gate_mod, "may_match", lambda view, rows: True)
    monkeypatch.setattr(lang, "_may_be_url", lambda text: True)
    monkeypatch.setattr(
        text_mod, "_slow_tokens", lambda t: text_mod._TOKEN.findall(text_mod.normalize(t))
    )
    monkeypatch.setattr(llm_judge, "_may_inject", lambda answer: True)
    monkeypatch.setattr(gate_mod, "_may_restate", lambda r, a, pairs, asked: True)
    folded = lambda t: tuple(x.casefold() for x in gate_mod._align_tokens(t))  # noqa: E731
    monkeypatch.setattr(gate_mod, "_folded_tokens", folded)
    monkeypatch.setattr(gate_mod, "_answer_tokens", lambda answer, words: folded(answer))
    monkeypatch.setattr(gate_mod, "_contained_opcodes", lambda r, a: None)
    monkeypatch.setattr(gate_mod, "_question_words", gate_mod._words_of)
    monkeypatch.setattr(gate_mod, "_cached_reference", gate_mod._reference)
    monkeypatch.setattr(gate_mod, "_cached_asked", gate_mod._asked_words)
    monkeypatch.setattr(gate_mod, "_cached_language", lang.detect_language)
    monkeypatch.setattr(
        gate_mod,
        "detect_new_language",
        lambda text, words: lang._detect_language(text[: lang.LANG_CHARS]),
    )


def _fast_and_slow(
    items: list[tuple[str, str, str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    _forget()
    fast = decisions(items)
    with monkeypatch.context() as m:
        _slow(m)
        _forget()
        slow = decisions(items)
    return fast, slow


def _forget() -> None:
    """Empty every cache, so that the second run computes what the first one kept."""
    clear_caches()
    for cache in ("_question_words", "_cached_reference", "_cached_asked", "_cached_language"):
        clear = getattr(getattr(gate_mod, cache), "cache_clear", None)
        if clear is not None:  # (turned off, it is no cache)
            clear()


def test_the_shortcuts_change_no_decision_on_the_seeded_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast, slow = _fast_and_slow(inputs(), monkeypatch)
    assert fast == slow


def test_the_shortcuts_change_no_decision_on_the_recorded_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,500 of them (~5 s); all 6,329 against main: record_gate_verdicts.py --shared
    rows = random.Random(4).sample(shared_rows(), 1_500)
    fast, slow = _fast_and_slow(rows, monkeypatch)
    differ = sum(1 for f, s in zip(fast, slow, strict=True) if f != s)
    assert differ == 0, f"{differ} of {len(rows)} recorded answers judged differently"


# ------------------------------------------------------------- the rewritten counts


def _control_share_loop(text: str) -> float:
    sample = text[:4_000]
    if not sample:
        return 0.0
    bad = sum(
        1
        for ch in sample
        if (unicodedata.category(ch) in ("Cc", "Co", "Cn", "Cs") and ch not in "\n\r\t")
        or ch == "\ufffd"
    )
    return bad / len(sample)


def _binary_loop(text: str) -> bool:
    sample = text[:4000]
    bad = sum(1 for c in sample if (ord(c) < 32 and c not in "\t\n\r") or c == "\ufffd")
    return bad > max(2, len(sample) // 100)


def _votes_loop(words: list[str]) -> dict[str, float]:
    votes: dict[str, float] = {}
    for word in words:
        weight = lang._WEIGHT.get(word)
        if weight is None:
            continue
        for code, stop in lang._STOPWORDS.items():
            if word in stop:
                votes[code] = votes.get(code, 0.0) + weight
    return votes


def _votes_table(words: list[str]) -> dict[str, float]:
    votes: dict[str, float] = {}
    for word in words:
        vote = lang._VOTES.get(word)
        if vote is not None:
            for code in vote[1]:
                votes[code] = votes.get(code, 0.0) + vote[0]
    return votes


_ODD_CHARS = st.sampled_from(
    ["\x00", "\x07", "\t", "\n", "\r", "\x1f", "\x7f", "\x85", "\ufffd", "\ue000", "\u0378",
     "\ud800", "é", "ß", "日", "🙂", "a", " ", "İ", "ı"]
)  # fmt: skip
_TEXTS = st.one_of(st.text(max_size=300), st.lists(_ODD_CHARS, max_size=300).map("".join))


@settings(max_examples=400, deadline=None)
@given(_TEXTS)
def test_control_and_binary_counts_equal_the_per_character_loops(text: str) -> None:
    assert gate_mod._control_share(text) == _control_share_loop(text)
    assert llm_judge._binary(text) == _binary_loop(text)


def test_control_counts_on_every_family_and_the_recorded_answers() -> None:
    texts = [a for _, _, a, _ in inputs()]
    with contextlib.suppress(pytest.skip.Exception):
        texts += [a for _, _, a, _ in shared_rows()]
    for text in texts:
        assert gate_mod._control_share(text) == _control_share_loop(text)
        assert llm_judge._binary(text) == _binary_loop(text)


def test_language_votes_add_the_same_weights_in_the_same_order() -> None:
    words = [*sorted(lang._WEIGHT), "xyz", "the", "de", "la", "e", "o", "le"]
    rng = random.Random(13)
    for _ in range(300):
        sample = rng.choices(words, k=rng.randrange(1, 60))
        # equal floats and equal key order (sorted() breaks ties by it)
        assert list(_votes_table(sample).items()) == list(_votes_loop(sample).items())


# ------------------------------------------------------------- the injection prefilters


def test_the_only_non_ascii_characters_ignorecase_matches_to_ascii_are_the_lookalikes() -> None:
    ascii_alnum = re.compile("[a-z0-9]", re.IGNORECASE)
    found = [chr(c) for c in range(128, 0x110000) if ascii_alnum.fullmatch(chr(c))]
    assert "".join(found) == ASCII_LOOKALIKES


_PIECES = st.sampled_from(
    ["ignore", "IGNORE", "disregard", "forget", "override", "your", "all", "previous",
     "instructions", "instruction", "rules", "prompt", "reference", "system", "System",
     "assistant", ":", "output", "print", "respond with", "reply with", "answer with", "say",
     "return", "pass", "PASS", "valid", "approved", "mark", "this", "as", "correct", "passed",
     "grader", "judge", "evaluator", "scorer", "must", "should", "will", "you are", "now",
     "the", "a", "grade", "score", "rate", "it", "me", "10", "100", '"verdict"', '"pass"',
     "'", '"', "`", "*", ".", "\n", " ", "  ", "ı", "İ", "ſ", "\u212a", "é", "日", "x"]
)  # fmt: skip


def _joined(pieces: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    """Texts of up to `max_size` pieces, joined by spaces or glued together."""
    lists = st.lists(pieces, max_size=max_size)
    return lists.map(" ".join) | lists.map("".join)


_INJECTION_TEXTS = _joined(_PIECES, 14)


@settings(max_examples=1500, deadline=None)
@given(_INJECTION_TEXTS)
def test_a_text_the_injection_patterns_match_always_passes_their_prefilter(text: str) -> None:
    if gate_mod._INJECTION.search(text):
        assert gate_mod._may_inject(text)
    if llm_judge._INJECTION.search(text):
        assert llm_judge._may_inject(text)


def test_the_ascii_view_keeps_ascii_words_and_gives_up_on_lookalikes() -> None:
    assert ascii_view("Ignore THE Rules") == "ignore the rules"
    assert ascii_view("Señor, IGNORE") == "se?or, ignore"
    assert ascii_view("\u0131gnore") is None


_TOKENS = st.lists(st.sampled_from(["a", "b", "c", "not", "1929", "x"]), min_size=1, max_size=14)


@settings(max_examples=1500, deadline=None)
@given(_TOKENS, st.integers(0, 13), st.integers(1, 14), st.booleans(), _TOKENS)
def test_the_opcodes_of_a_contained_run_are_difflibs(
    r: list[str], i: int, k: int, swap: bool, other: list[str]
) -> None:
    a = r[i : i + k] or other  # often a run of r, sometimes anything
    if swap:
        r, a = a, r
    got = gate_mod._contained_opcodes(tuple(r), tuple(a))
    want = difflib.SequenceMatcher(None, r, a, autojunk=False).get_opcodes()
    assert got is None or got == want


_NON_ANSWER_PIECES = st.sampled_from(
    ["i", "I", "don't", "do not", "dont", "really", "know", "knows", "who", "no", "idea", "not",
     "sure", "i'm", "I am", "sorry", "unable", "able", "apologise", "apologize", "can't",
     "cannot", "couldn't", "won't", "will not", "help", "answer", "assist", "provide", "say",
     "comment", "give", "to", "share", "as", "an", "ai", "AI", "language", "model", "consult",
     "ask", "see", "a", "your", "professional", "expert", "doctor", "specialist", "google",
     "it", "search", "online", "the web", "for it", "quick", "depends", "varies", "on", "many",
     "a lot", "several", "simple", "easy", "single", "clear", "hard", "different", "various",
     "opinions", "views", "their", "his", "her", "own", "view", "opinion", "for", "from",
     "everyone", "person to person", "have", "any", "information", "about", "rather", "get",
     "back", "you", "ni", "lo", "se", "sé", "SÉ", "se\u0301", "puedo", "ayudar", "responder",
     "ı", "İ", "ſ", "\u212a", ".", "?", " ", "é"]
)  # fmt: skip
_NON_ANSWER_TEXTS = _joined(_NON_ANSWER_PIECES, 10)


@settings(max_examples=2000, deadline=None)
@given(_NON_ANSWER_TEXTS)
def test_a_text_the_non_answer_pattern_matches_always_passes_its_prefilter(text: str) -> None:
    if gate_mod._NON_ANSWER.search(text):
        assert gate_mod.may_match(ascii_view(text), gate_mod._NON_ANSWER_WORDS)


_URL_PIECES = st.sampled_from(
    ["http", "HTTPS", "://", "www", "WWW", ".", "com", "COM", "net", "org", "edu", "gov", "x",
     "ſ", "ı", " ", "/", "é"]
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(_URL_PIECES, max_size=10).map("".join))
def test_a_text_with_a_url_always_passes_the_url_prefilter(text: str) -> None:
    if lang._MAYBE_URL.search(text):
        assert lang._may_be_url(text)


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_the_last_character_test_equals_searching_the_end(text: str) -> None:
    text = text.rstrip()
    if text:
        found = gate_mod._TRUNCATED_LAST.search(text)
        assert bool(found) == bool(gate_mod._TRUNCATED_LAST.match(text[-1]))


_SCRIPTS = st.sampled_from(
    ["a", "É", "ß", "ﬁ", "e\u0301", "日", "本", "한", "ア", "🙂", "❶", "☀", "١", "\\n", "\n", " ",
     "\u00a0", "\x1c", "_", "-", "'", "ſ", "İ", "x1"]
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(_SCRIPTS, max_size=20).map("".join) | st.text(max_size=40))
def test_the_tokens_of_text_without_cjk_or_emoji_equal_the_full_pattern(text: str) -> None:
    assert text_mod.tokens(text) == text_mod._TOKEN.findall(text_mod.normalize(text))


_ALIGN_PIECES = st.sampled_from(
    ["Can't", "cannot", "CANNOT", "isn't", "3.5", "1,000", "x1", "\\n", "\n", " ", ".", ",", "a",
     "Not", "it's", "é", "The", "_", "1929"]
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(_ALIGN_PIECES, max_size=16).map("".join) | st.text(max_size=40))
def test_the_answers_alignment_tokens_from_its_words_equal_the_full_path(text: str) -> None:
    want = tuple(t.casefold() for t in gate_mod._align_tokens(text))
    assert gate_mod._answer_tokens(text, text_mod.tokens(text)) == want
    assert gate_mod._folded_tokens(text) == want


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=6), max_size=8))
def test_casefolding_the_joined_words_casefolds_each(words: list[str]) -> None:
    assert gate_mod._casefolded(words) == tuple(w.casefold() for w in words)
