"""Tokenisation and language detection: Unicode cases and the cross-language decision."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qaloop.quality.lang import UNDETERMINED, cross_language, detect_language
from qaloop.quality.text import normalize, tokens


def test_accents_are_kept_and_nfc_normalised() -> None:
    composed = "Canción"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert tokens(composed) == tokens(decomposed) == ["canción"]
    assert tokens("canción") != tokens("cancion")


def test_casefold_and_literal_newline() -> None:
    assert tokens("STRASSE Straße") == ["strasse", "strasse"]
    # The Yahoo! Answers dumps write a newline as backslash + n.
    assert tokens("it works\\nNot always") == ["it", "works", "not", "always"]
    assert normalize("  a \n\t b  ") == "a b"


def test_cjk_is_one_token_per_character() -> None:
    assert tokens("我喜欢猫") == ["我", "喜", "欢", "猫"]
    assert tokens("東京タワー") == ["東", "京", "タ", "ワ", "ー"]
    assert tokens("한국어 text") == ["한", "국", "어", "text"]


def test_emoji_are_tokens_and_punctuation_is_not() -> None:
    assert tokens("I love 🍕!!") == ["i", "love", "🍕"]
    assert tokens("☀️ sunny") == ["☀", "sunny"]
    assert tokens("...,;") == []
    assert tokens("") == []


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("The weather is lovely today and it is not going to rain.", "en"),
        ("No, tener los ojos de diferente color no es raro, aunque sí poco común.", "es"),
        ("¿Dónde está la biblioteca? Está cerca del parque.", "es"),
        ("Je pense que c'est une très bonne idée pour nous et pour vous.", "fr"),
        ("Ich glaube nicht, dass das eine gute Idee ist, und du?", "de"),
        ("我喜欢吃苹果和香蕉", "zh"),
        ("私は猫が好きです", "ja"),
        ("저는 고양이를 좋아합니다", "ko"),
        ("Я люблю читать книги", "ru"),
        ("Yes.", UNDETERMINED),  # too short
        ("http://www.example.com/index.asp", UNDETERMINED),  # URLs are ignored
        ("", UNDETERMINED),
        ("12 + 7 = 19", UNDETERMINED),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_cross_language_needs_both_sides_determined() -> None:
    en = "The cat is on the mat and it is sleeping."
    es = "El gato está en la alfombra y está durmiendo."
    assert cross_language(es, en)
    assert not cross_language(en, en)
    assert not cross_language("Sí.", en)  # answer undetermined: not flagged


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
def test_ascii_fast_path_gives_the_same_tokens(text: str) -> None:
    from qaloop.quality.text import _slow_tokens

    assert tokens(text) == _slow_tokens(text)
    assert tokens(text + "\\nX") == _slow_tokens(text + "\\nX")


def _script_counts_by_name(text: str) -> dict[str, int]:
    """The reference: every letter's script from its Unicode name, one character at a time."""
    from qaloop.quality.lang import _script

    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = _script(char)
            if script is not None:
                counts[script] = counts.get(script, 0) + 1
    return counts


@given(st.text(max_size=300))
def test_script_counts_match_a_per_character_lookup(text: str) -> None:
    from qaloop.quality.lang import _script_counts

    assert dict(_script_counts(text)) == _script_counts_by_name(text)


@given(st.text(max_size=120), st.sampled_from(["www.example.org", "https://x.io/a?b=1", "a.com"]))
def test_urls_are_ignored_wherever_they_appear(text: str, url: str) -> None:
    """The cheap pre-check must never skip the URL stripping: with or without a URL added, a
    URL-free text is detected the same."""
    if "." in text or "//" in text or "www" in text.lower():
        return  # the text may hold a URL of its own
    assert detect_language(f"{text} {url}") == detect_language(text)
