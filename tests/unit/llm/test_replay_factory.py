"""The replay provider (recorded answers by normalised question) and make_provider."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
import pytest

from qaloop.llm.base import GenerationRequest, PermanentError
from qaloop.llm.factory import make_provider, make_raw_provider
from qaloop.llm.protection import ProtectedProvider
from qaloop.llm.replay import ReplayProvider
from qaloop.settings import Settings

SHARED_DATA = Path(
    os.environ.get(
        "QALOOP_SHARED_DATA", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    )
)


def _req(question: str, attempt: int = 1) -> GenerationRequest:
    return GenerationRequest("id", question, attempt, 1, f"Question: {question}\nAnswer:")


@pytest.fixture
def replay_file(tmp_path: Path) -> Path:
    rows = [
        {
            "question": "Why is the sky blue?",
            "llm_answer": "Rayleigh\\nscattering.",
            "model": "gemini-2.5-flash",
        },
        {"question": "why is  the SKY blue?", "llm_answer": "Scattering of light."},
        {"question": "¿Qué es Python?", "llm_answer": "Un lenguaje.", "model": None},
        {"question": "no answer"},
    ]
    path = tmp_path / "answers.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\nnot json\n\n")
    return path


async def test_replay_answers_by_normalised_question_in_turn(replay_file: Path) -> None:
    provider = ReplayProvider(replay_file)
    assert len(provider.answers) == 2 and provider.skipped == 2
    first = await provider.generate(_req("WHY is the sky   blue?"))
    assert first.text == "Rayleigh\nscattering." and first.model == "gemini-2.5-flash"
    second = await provider.generate(_req("Why is the sky blue?", attempt=2))
    assert second.text == "Scattering of light." and second.model == "replay"
    third = await provider.generate(_req("Why is the sky blue?", attempt=3))
    assert third.text == first.text
    assert (await provider.generate(_req("¿QUÉ es python?"))).text == "Un lenguaje."
    assert "¿qué es python?" in provider


async def test_unknown_question_is_a_clear_permanent_error(replay_file: Path) -> None:
    provider = ReplayProvider(replay_file, latency_ms=5)
    with pytest.raises(PermanentError, match="question not in the replay file"):
        await provider.generate(_req("What is the meaning of life?"))
    with pytest.raises(FileNotFoundError):
        ReplayProvider(replay_file.with_name("missing.jsonl"))


async def test_replay_of_the_shared_recordings() -> None:
    path = SHARED_DATA / "llm_answers.jsonl"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (set QALOOP_SHARED_DATA)")
    provider = ReplayProvider(path)
    assert len(provider.answers) > 5000
    first = orjson.loads(path.read_bytes().split(b"\n", 1)[0])
    answer = await provider.generate(_req(first["question"]))
    assert answer.text


def test_factory_builds_every_provider(replay_file: Path, tmp_path: Path) -> None:
    sim = make_provider(Settings())
    assert isinstance(sim, ProtectedProvider) and sim.name == "simulated"
    replay = make_raw_provider(Settings(llm="replay", replay_file=str(replay_file)))
    assert isinstance(replay, ReplayProvider)
    with pytest.raises(ValueError, match="QALOOP_REPLAY_FILE"):
        make_provider(Settings(llm="replay"))
    with pytest.raises(ValueError, match="API key"):
        make_provider(Settings(llm="gemini"))
    key_file = tmp_path / "key"
    key_file.write_text("file-key-987\n")
    gemini = make_provider(Settings(llm="gemini", llm_api_key_file=str(key_file)))
    assert isinstance(gemini, ProtectedProvider) and gemini.breaker is not None
    assert "file-key-987" not in repr(gemini)
    openai = make_provider(
        Settings(llm="openai", llm_base_url="http://127.0.0.1:1/v1", llm_model="llama3.2")
    )
    assert openai.name == "openai" and "llama3.2" in repr(openai)


async def test_api_key_never_appears_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "AIza-super-secret-key-0123456789"
    settings = Settings(llm="gemini", llm_api_key=secret, llm_base_url="http://127.0.0.1:9")
    provider = make_provider(settings)
    assert secret not in repr(provider) and secret not in str(provider)
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    from qaloop.llm.base import ServerError

    with pytest.raises(ServerError) as info:  # nothing listens on port 9: connection refused
        await provider.generate(_req("q"))
    assert secret not in str(info.value) and secret not in repr(info.value.__cause__)
    await provider.aclose()
    assert secret not in caplog.text
