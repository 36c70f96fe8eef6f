"""One place builds the gate stage for a Settings object; the LLM judge's provider is built
like generation's, with its own share of the quota under its own limiter key."""

from __future__ import annotations

from qaloop.llm.factory import judge_settings, make_judge_provider, make_provider
from qaloop.llm.judge import LLMJudge
from qaloop.llm.protection import ProtectedProvider
from qaloop.services.gating import build_gate_stage, cheap_gate, routing_config
from qaloop.settings import Settings


def test_the_stage_for_the_default_settings_is_cheap_gate_then_llm_judge() -> None:
    stage = build_gate_stage(Settings())
    assert stage.gate is not None and isinstance(stage.second, LLMJudge)
    assert cheap_gate(Settings(scorer="llm_judge")) is None
    alone = build_gate_stage(Settings(scorer="llm_judge"))
    assert alone.gate is None and alone.second is not None


def test_routing_config_carries_the_feedback_experiment() -> None:
    cfg = routing_config(Settings(feedback_control_share=0.3, feedback_seed=9, max_attempts=4))
    assert (cfg.control_share, cfg.control_seed, cfg.max_attempts, cfg.feedback) == (
        0.3,
        9,
        4,
        True,
    )


def test_the_judge_gets_its_share_of_the_quota_under_its_own_key() -> None:
    s = Settings(llm_rpm=100, llm_rpd=1000, judge_quota_share=0.25)
    js = judge_settings(s)
    assert (js.llm_rpm, js.llm_rpd, js.llm_tpm) == (25, 250, 0)
    assert js.llm_rate_key == "simulated:simulated:judge"
    gen = make_provider(s)
    judge = make_judge_provider(s)
    assert isinstance(gen, ProtectedProvider) and isinstance(judge, ProtectedProvider)
    assert gen.limiter is not None and judge.limiter is not None
    assert {lim.name: lim.limit for lim in gen.limiter.limits} == {"rpm": 75, "rpd": 750}
    assert {lim.name: lim.limit for lim in judge.limiter.limits} == {"rpm": 25, "rpd": 250}
    # without limits nothing is split
    assert judge_settings(Settings()).llm_rpm == 0


def test_replay_cannot_judge_so_its_judge_is_simulated() -> None:
    js = judge_settings(Settings(llm="replay", replay_file="x.jsonl"))
    assert js.llm == "simulated"
    assert judge_settings(Settings(judge_llm="openai", judge_model="m")).llm_model == "m"
