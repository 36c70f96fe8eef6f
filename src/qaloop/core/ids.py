"""Question identity: the same question, however it is typed, gets the same id."""

from __future__ import annotations

import hashlib
import unicodedata


def normalise(question: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: 'Qué  ES\\tpython?' == 'qué es python?'."""
    return " ".join(unicodedata.normalize("NFKC", question).casefold().split())


def question_id(question: str) -> str:
    """A stable 128-bit id (hex) of the normalised text; doubles as the Kafka message key."""
    return hashlib.blake2b(normalise(question).encode("utf-8"), digest_size=16).hexdigest()
