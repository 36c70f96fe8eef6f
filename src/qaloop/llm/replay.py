"""A replay provider: answers from a recorded JSONL file (one object a line with at least
`question` and `llm_answer`; `model` is optional), for realistic offline runs.

Questions are matched by their normalised form (qaloop.core.ids.question_id), so case and
whitespace don't matter. A question recorded with several answers gets them in turn, one per
attempt, so a regeneration sees a different recorded answer when there is one. A question that
isn't in the file is a PermanentError: the worker dead-letters it with that reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import orjson

from qaloop.core.ids import question_id
from qaloop.llm.base import Generation, GenerationRequest, PermanentError

log = logging.getLogger(__name__)


class ReplayProvider:
    name = "replay"

    def __init__(self, path: str | Path, *, latency_ms: float = 0.0) -> None:
        self.path = Path(path)
        self.latency_ms = latency_ms
        self.answers: dict[str, list[tuple[str, str]]] = {}
        self.skipped = 0
        self.calls = 0
        self._load()

    def __repr__(self) -> str:
        return f"ReplayProvider(path={str(self.path)!r}, questions={len(self.answers)})"

    def _load(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"replay file not found: {self.path}")
        with self.path.open("rb") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                    question, answer = row["question"], row["llm_answer"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    self.skipped += 1
                    log.debug("replay file %s: skipping line %d", self.path, line_no)
                    continue
                if not isinstance(question, str) or not isinstance(answer, str):
                    self.skipped += 1
                    continue
                # The recordings keep newlines as the two characters backslash-n.
                answer = answer.replace("\\n", "\n").strip()
                if not question.strip() or not answer:
                    self.skipped += 1
                    continue
                model = row.get("model") if isinstance(row.get("model"), str) else None
                self.answers.setdefault(question_id(question), []).append(
                    (answer, model or "replay")
                )
        log.info(
            "replay file %s: %d questions, %d answers, %d lines skipped",
            self.path,
            len(self.answers),
            sum(len(v) for v in self.answers.values()),
            self.skipped,
        )

    def __contains__(self, question: str) -> bool:
        return question_id(question) in self.answers

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        started = time.perf_counter()
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        recorded = self.answers.get(question_id(request.question))
        if not recorded:
            raise PermanentError("question not in the replay file")
        text, model = recorded[(max(1, request.attempt) - 1) % len(recorded)]
        return Generation(text=text, latency_ms=(time.perf_counter() - started) * 1000, model=model)

    async def aclose(self) -> None:
        return None
