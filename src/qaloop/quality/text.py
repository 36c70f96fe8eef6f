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
    return _TOKEN.findall(normalize(text))


def is_cjk(char: str) -> bool:
    return bool(re.fullmatch(f"[{_CJK}]", char))
