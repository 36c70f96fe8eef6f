"""A small offline language detector: script counts first, then stopword votes for Latin text.

It answers one question for the quality gate: are the answer and the reference in the same
language? So it only needs to be right on clear cases and to say "und" (undetermined) when
unsure; `cross_language` is true only when both sides are determined and differ.

- Non-Latin scripts decide by themselves: kana -> "ja", Hangul -> "ko", Han -> "zh",
  Cyrillic -> "ru", Arabic -> "ar", Greek -> "el", Hebrew -> "he", Devanagari -> "hi",
  Thai -> "th" (a script stands for its most common language; what matters is "different").
- Latin text votes with short lists of function words for en, es, pt, fr, de, it; a word
  listed for several languages counts for each with weight 1 / (number of languages).
  Letters proper to one language ("ñ", "¿", "¡" es; "ã", "õ" pt; "ß" de) add a vote each
  (up to 3 per letter). The winner needs >= 1.5 votes and 1.25x the runner-up's, else "und".
- URLs are dropped first; fewer than 3 word tokens -> "und"; a non-Latin script needs >= 3
  letters and >= 30 % of the letters.

Accuracy on the recorded answers (docs/quality.md): answers of the Spanish-prompted source
are detected "es" and their English references "en"; English/English sources are "en".
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from qaloop.quality.text import tokens

UNDETERMINED = "und"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words(
        """the and is are was were of to in that it you for with this have has be not on as
        they but or if what your can will would there from by at an about do my all so just
        like one get which their been more when who how than them these some i he she we
        should could because"""
    ),
    "es": _words(
        """el la los las de del que y en un una es por para con no se lo al su sus como más
        pero este esta son está también muy puede hay sí tu tus cuando qué porque ser sin
        sobre entre le les nos ya mi tiene hacer eso usted aunque puedes tengo ni hola
        también pueden muchos algunos o te"""
    ),
    "pt": _words(
        """o os as um uma de do da dos das que e em no na não é para com por mais mas como
        se ao você também isso muito seu sua são está uma pode ele ela"""
    ),
    "fr": _words(
        """le la les de des du un une et est que qui en dans pour pas ne sur au aux avec ce
        cette il elle je vous nous sont mais ou plus c'est être fait"""
    ),
    "de": _words(
        """der die das und ist nicht ein eine zu den dem mit von sich auf für es ich du sie
        wir auch aus bei oder wie wenn werden wird kann"""
    ),
    "it": _words(
        """il lo la gli le di del della che e è un una per non con sono ma come anche più
        questo questa nel alla essere ha"""
    ),
}
_WEIGHT: dict[str, float] = {}
for _stop in _STOPWORDS.values():
    for _w in _stop:
        _WEIGHT[_w] = _WEIGHT.get(_w, 0.0) + 1.0
_WEIGHT = {w: 1.0 / n for w, n in _WEIGHT.items()}
# word -> (weight, the languages it votes for, in _STOPWORDS order): one lookup a word.
_VOTES = {
    w: (weight, tuple(k for k, s in _STOPWORDS.items() if w in s)) for w, weight in _WEIGHT.items()
}

_MAYBE_URL = re.compile(r"https?://|www\.|\.(?:com|net|org|edu|gov)\b", re.IGNORECASE)
_URL_HINTS = ("www.", ".com", ".net", ".org", ".edu", ".gov")


def _may_be_url(text: str) -> bool:
    if "://" in text:
        return True
    low = text.lower()
    return any(hint in low for hint in _URL_HINTS)


_URL = re.compile(r"(?:https?://|www\.)\S+|\S+\.(?:com|net|org|edu|gov)\b\S*", re.IGNORECASE)

# Letters and marks that belong to one language of the list (each occurrence, up to 3, votes).
_MARKS = {"ñ": "es", "¿": "es", "¡": "es", "ã": "pt", "õ": "pt", "ß": "de", "ë": "fr"}
_MARK_VOTE = 1.0
_MIN_VOTES = 1.5
_MARGIN = 1.25

# Unicode character-name prefixes of the scripts we tell apart, in priority order.
_SCRIPTS = (
    ("HIRAGANA", "ja"),
    ("KATAKANA", "ja"),
    ("HANGUL", "ko"),
    ("CJK", "zh"),
    ("CYRILLIC", "ru"),
    ("ARABIC", "ar"),
    ("GREEK", "el"),
    ("HEBREW", "he"),
    ("DEVANAGARI", "hi"),
    ("THAI", "th"),
    ("LATIN", "latin"),
)


@lru_cache(maxsize=8192)  # characters repeat: the Unicode name lookup is the hot spot
def _script(char: str) -> str | None:
    name = unicodedata.name(char, "")
    for prefix, code in _SCRIPTS:
        if name.startswith(prefix):
            return code
    return None


# Every byte that is not an ASCII letter, for counting ASCII letters with bytes.translate.
_NOT_ASCII_LETTER = bytes(b for b in range(256) if not chr(b).isascii() or not chr(b).isalpha())
_ASCII = re.compile(r"[\x00-\x7f]+")


def _ascii_letters(text: str) -> int:
    """ASCII letters in `text`, counted at C speed (a per-character Python loop cost the judge
    ~200 µs per answer)."""
    return len(text.encode("utf-8", "surrogatepass").translate(None, _NOT_ASCII_LETTER))


def _script_counts(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    latin = _ascii_letters(text)  # every ASCII letter is Latin
    if not text.isascii():  # only the rest needs a Unicode name lookup
        for char in _ASCII.sub("", text):
            if char.isalpha():
                script = _script(char)
                if script is not None:
                    counts[script] += 1
    if latin:
        counts["latin"] += latin
    return counts


def clear_language_cache() -> None:
    _detect_language.cache_clear()


LANG_CHARS = 5_000  # enough to tell the language; bounds the work and the cache's keys


def detect_language(text: str) -> str:
    """ISO 639-1-like code of the dominant language of `text`, or "und" when unsure."""
    return _detect_language(text[:LANG_CHARS])


def detect_new_language(text: str, words: Sequence[str] | None = None) -> str:
    """`detect_language(text)` for a text seen once (an answer): no cache to fill, and
    `words`, its `tokens(text)` when the caller has them, are what the detector would
    compute for a text of <= LANG_CHARS characters without a URL."""
    if len(text) > LANG_CHARS:
        return _detect(text[:LANG_CHARS])
    return _detect(text, words)


_NO_SCRIPTS: Counter[str] = Counter()  # what ASCII text has besides Latin (never written to)


def _detect(text: str, words: Sequence[str] | None = None) -> str:
    # The full pattern backtracks at every word: only when needed; and the test for "needed"
    # only where one of its literals is (its letters have no non-ASCII case variants).
    if _may_be_url(text) and _MAYBE_URL.search(text):
        text = _URL.sub(" ", text)
        words = None
    plain = text.isascii()  # most answers: Latin letters only, and none of the _MARKS
    scripts = _NO_SCRIPTS if plain else _script_counts(text)
    total = _ascii_letters(text) if plain else sum(scripts.values())
    if total == 0:
        return UNDETERMINED
    non_latin = {k: v for k, v in scripts.items() if k != "latin"}
    if non_latin:
        # Japanese mixes kana with Han: any real amount of kana makes it Japanese.
        if scripts["ja"] >= 0.1 * total:
            return "ja"
        script, count = max(non_latin.items(), key=lambda kv: kv[1])
        if count >= 3 and count >= 0.3 * total:
            return script
    words = tokens(text) if words is None else words
    if len(words) < 3:
        return UNDETERMINED
    votes: dict[str, float] = {}
    for word in [w for w in words if w in _VOTES]:
        weight, langs = _VOTES[word]
        for lang in langs:  # the same sums, added in the same order
            votes[lang] = votes.get(lang, 0.0) + weight
    for char, lang in () if plain else _MARKS.items():
        if char in text:
            votes[lang] = votes.get(lang, 0.0) + _MARK_VOTE * min(3, text.count(char))
    ranked = sorted(votes.items(), key=lambda kv: kv[1], reverse=True)[:2]
    if not ranked:
        return UNDETERMINED
    best, best_votes = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
    if best_votes >= _MIN_VOTES and best_votes >= _MARGIN * runner_up:
        return best
    return UNDETERMINED


# keys of <= 5,000 characters: ~20 MB at most for ASCII text
_detect_language = lru_cache(maxsize=4096)(_detect)


def cross_language(answer: str, reference: str) -> bool:
    """True when both languages are determined and differ."""
    a, r = detect_language(answer), detect_language(reference)
    return a != UNDETERMINED and r != UNDETERMINED and a != r
