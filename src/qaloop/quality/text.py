"""Text normalisation and Unicode-aware tokenisation shared by the lexical scorers.

- NFC normalisation, so a composed "é" and "e" + combining accent are the same token.
- Case folding (`str.casefold`, which also folds "ß" to "ss").
- The two characters backslash + "n" (how the Yahoo! Answers dumps write a newline) become a
  space, so "works\\nNot" is two tokens, not "works" and "nnot".
- Words are runs of letters/digits in any script (accents kept: "canción" != "cancion");
  CJK ideographs, kana and Hangul syllables are one token per character, because those
  scripts don't separate words with spaces; each emoji / pictographic symbol is a token.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# CJK ideographs (+ extension A, compatibility), Hiragana, Katakana, Hangul syllables.
_CJK = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0002fa1f"  # CJK extensions B-F, compatibility supplement
)
# Pictographs and emoji: misc symbols, dingbats, the emoji blocks.
_EMOJI = "\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff"

_TOKEN = re.compile(rf"[{_CJK}]|[{_EMOJI}]|(?:(?![{_CJK}])\w)+", re.UNICODE)
_LITERAL_NEWLINE = re.compile(r"\\n")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFC, literal "\\n" to space, case folded, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = _LITERAL_NEWLINE.sub(" ", text)
    return _SPACE.sub(" ", text.casefold()).strip()


_ASCII_WORD = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    """Unicode-aware word tokens of `text` (see the module docstring)."""
    if text.isascii():
        # Same tokens, several times faster: ASCII has no CJK or emoji, NFC changes nothing,
        # and casefold is lower (tests/unit/quality: the two paths agree on any ASCII text).
        return _ASCII_WORD.findall(text.replace("\\n", " ").lower())
    return _slow_tokens(text)


def _slow_tokens(text: str) -> list[str]:
    # normalize() without its whitespace collapsing, which moves no token boundary
    text = unicodedata.normalize("NFC", text).replace("\\n", " ").casefold()
    if _CJK_OR_EMOJI.search(text) is None:
        return _ASCII_WORD.findall(text)  # without those scripts _TOKEN is \w+
    return _TOKEN.findall(text)


_CJK_OR_EMOJI = re.compile(f"[{_CJK}{_EMOJI}]")


def is_cjk(char: str) -> bool:
    return bool(re.fullmatch(f"[{_CJK}]", char))


# The only non-ASCII characters that re.IGNORECASE matches to an ASCII letter or digit
# ("İ" and "ı" to "i", "ſ" to "s", the Kelvin sign to "k"); tests/unit/quality checks every
# code point.
ASCII_LOOKALIKES = "\u0130\u0131\u017f\u212a"


def ascii_view(text: str) -> str | None:
    """`text` lowercased, every non-ASCII character replaced by "?": any ASCII word that a
    re.IGNORECASE pattern matches in `text` is a substring of it, so a pattern whose every
    match contains one of a few words can be skipped when none of them is there (the judge's
    checks run on every answer). None when `text` holds an ASCII lookalike: only the pattern
    can tell then."""
    if text.isascii():
        return text.lower()
    if any(c in text for c in ASCII_LOOKALIKES):
        return None
    return text.encode("ascii", "replace").decode("ascii").lower()


def may_match(view: str | None, rows: Sequence[Sequence[tuple[str, ...]]]) -> bool:
    """False only when, for every row, `view` (an `ascii_view`) lacks every word of one of
    the row's groups: then no pattern whose every match holds a word of each group of some
    row can match. Plain loops: the answers are short, the call overhead is the cost."""
    if view is None:
        return True
    for first, *rest in rows:
        for word in first:
            if word in view:
                break
        else:
            continue
        if all(any(word in view for word in group) for group in rest):
            return True
    return False
