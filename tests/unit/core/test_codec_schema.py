"""Envelope schema 2 (feedback + arm): version-1 messages and stored rows still decode."""

from __future__ import annotations

import orjson
import pytest

from qaloop.core import codec
from qaloop.core.model import SCHEMA_VERSION, Envelope, QuestionState


def _env(**kw: object) -> Envelope:
    return Envelope("b" * 32, "Why?", "ref", "t", 1.0, state=QuestionState.QUEUED, **kw)  # type: ignore[arg-type]


def test_feedback_and_arm_round_trip_on_both_paths() -> None:
    env = _env(attempt=2, feedback="echo", arm="control")
    raw = codec.encode(env)
    assert raw.startswith(b'{"schema_version":%d,' % SCHEMA_VERSION) and SCHEMA_VERSION == 2
    assert codec.decode(raw) == env  # fast path
    assert codec.decode(raw.decode()) == env  # str: the strict path


def test_a_version_1_message_decodes_with_no_feedback() -> None:
    data = _env().to_dict()
    data["schema_version"] = 1
    del data["feedback"], data["arm"]
    env = codec.decode(orjson.dumps(data))
    assert (env.feedback, env.arm, env.schema_version) == (None, None, SCHEMA_VERSION)


@pytest.mark.parametrize("version", [0, 3, None, True, "2"])
def test_unknown_versions_are_refused(version: object) -> None:
    data = _env().to_dict()
    data["schema_version"] = version
    with pytest.raises(codec.InvalidMessage, match="unsupported schema_version"):
        codec.decode(orjson.dumps(data))


@pytest.mark.parametrize("arm", ["treatment", 1, ""])
def test_a_bad_arm_is_refused_by_both_paths(arm: object) -> None:
    data = _env().to_dict()
    data["arm"] = arm
    raw = orjson.dumps(data)
    with pytest.raises(codec.InvalidMessage):
        codec.decode(raw)
    with pytest.raises(codec.InvalidMessage):
        codec.decode(raw.decode())
