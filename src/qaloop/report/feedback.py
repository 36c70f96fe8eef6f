"""The feedback loop's controlled gain and the LLM judge's share and cost (pure: no I/O).

From the stored events alone: every `scored` event's detail says who judged the answer, why,
what the LLM judge cost, and, for a regeneration, its arm (core.routing.scored_detail).

- **Gain.** For every rejected attempt n that got a judged attempt n+1: was n+1 validated?
  Split by arm -- "feedback" (the prompt said what was wrong) and "control" (the plain prompt,
  a seeded share of questions) -- with Wilson 95 % intervals, next to the base rate
  P(validated at attempt 1). The difference between the arms is the gain of the feedback;
  the control arm alone is what a plain re-roll buys.
- **Cost per validated answer**: generation calls (answers + errors) and tokens, plus the LLM
  judge's calls and tokens, divided by the validated questions; per arm for the regenerated
  questions.
- **LLM judge**: the share of judged answers it decided (no reference, or the cheap gate
  unsure), its calls and tokens.

With the simulated LLM, the gain is an input (`sim_feedback_effect`), not a finding.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qaloop.core.routing import CONTROL, FEEDBACK, parse_scored_detail
from qaloop.report.data import ReportData
from qaloop.report.tables import Cell, Table, group_events

_TOKENS = re.compile(r"tokens in=(\d+|None) out=(\d+|None)")
LLM_JUDGE = "llm_judge"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None for n = 0)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(slots=True)
class Rate:
    successes: int = 0
    n: int = 0

    @property
    def p(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson(self.successes, self.n)

    def cells(self) -> list[Cell]:
        ci = self.ci
        return [
            self.n,
            self.successes,
            None if self.p is None else 100 * self.p,
            None if ci is None else 100 * ci[0],
            None if ci is None else 100 * ci[1],
        ]


@dataclass(slots=True)
class Cost:
    validated: int = 0
    gen_calls: int = 0
    gen_tokens: int = 0
    judge_calls: int = 0
    judge_tokens: int = 0

    def per_validated(self) -> tuple[float | None, float | None]:
        if not self.validated:
            return None, None
        calls = (self.gen_calls + self.judge_calls) / self.validated
        tokens = (self.gen_tokens + self.judge_tokens) / self.validated
        return calls, tokens


@dataclass(slots=True)
class FeedbackGain:
    base: Rate = field(default_factory=Rate)  # validated at attempt 1
    arms: dict[str, Rate] = field(default_factory=dict)  # P(valid at n+1 | rejected at n)
    by_attempt: dict[tuple[str, int], Rate] = field(default_factory=dict)
    cost_all: Cost = field(default_factory=Cost)
    cost_arm: dict[str, Cost] = field(default_factory=dict)  # regenerated questions per arm
    judged: int = 0  # scored answers
    by_judge: Counter[str] = field(default_factory=Counter)
    llm_no_reference: int = 0
    llm_with_reference: int = 0
    llm_calls: int = 0
    llm_tokens: int = 0
    llm_outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # of rejections
    llm_usd: float | None = None  # the LLM judge's priced usage (llm_usage rows, purpose judge)
    validated: int = 0

    def gain_pp(self) -> float | None:
        f, c = self.arms.get(FEEDBACK), self.arms.get(CONTROL)
        if f is None or c is None or f.p is None or c.p is None:
            return None
        return 100 * (f.p - c.p)

    def gain_table(self) -> Table:
        cols = ["", "n", "validated", "%", "95 % CI low", "95 % CI high"]
        rows: list[list[Cell]] = [["base rate: validated at attempt 1", *self.base.cells()]]
        for arm, label in ((FEEDBACK, "feedback prompt"), (CONTROL, "control (plain prompt)")):
            rate = self.arms.get(arm, Rate())
            rows.append([f"rejected at n -> validated at n+1, {label}", *rate.cells()])
        for (arm, n), rate in sorted(self.by_attempt.items()):
            rows.append([f"  {arm}, n = {n}", *rate.cells()])
        gain = self.gain_pp()
        note = (
            "Wilson 95 % intervals. Gain of feedback = feedback - control = "
            + ("n/a" if gain is None else f"{gain:+.1f} points")
            + ". Overlapping intervals mean the data can't tell the arms apart. With the "
            "simulated LLM the gain is an input (QALOOP_SIM_FEEDBACK_EFFECT), not a finding."
        )
        return Table("Controlled feedback gain", cols, rows, note, digits=1)

    def cost_table(self) -> Table:
        cols = ["", "validated", "LLM calls", "tokens", "calls / validated", "tokens / validated"]
        rows: list[list[Cell]] = []
        for label, cost in (
            ("all questions", self.cost_all),
            ("regenerated, feedback arm", self.cost_arm.get(FEEDBACK, Cost())),
            ("regenerated, control arm", self.cost_arm.get(CONTROL, Cost())),
        ):
            calls, tokens = cost.per_validated()
            rows.append(
                [
                    label,
                    cost.validated,
                    cost.gen_calls + cost.judge_calls,
                    cost.gen_tokens + cost.judge_tokens,
                    calls,
                    tokens,
                ]
            )
        return Table(
            "Cost per validated answer",
            cols,
            rows,
            "LLM calls = generation calls (answers and errors) + LLM-judge calls; tokens as "
            "the providers reported them (~4 characters a token where they did not).",
            digits=2,
        )

    def judge_table(self) -> Table:
        to_llm = self.by_judge.get(LLM_JUDGE, 0)
        share = 100 * to_llm / self.judged if self.judged else None
        rows: list[list[Cell]] = [
            ["answers judged", self.judged],
            ["decided by the LLM judge", to_llm],
            ["  share (%)", share],
            ["  question without a reference", self.llm_no_reference],
            ["  with a reference (cheap gate unsure)", self.llm_with_reference],
            ["LLM-judge calls", self.llm_calls],
            ["LLM-judge tokens", self.llm_tokens],
            ["  tokens per judged answer", self.llm_tokens / to_llm if to_llm else None],
            ["LLM-judge spend (USD)", _usd(self.llm_usd)],
            [
                "  per validated answer (USD)",
                _usd(
                    self.llm_usd / self.validated
                    if self.llm_usd is not None and self.validated
                    else None
                ),
            ],
        ]
        rows += [[f"  LLM judge: {k}", v] for k, v in sorted(self.llm_outcomes.items())]
        rows += [[f"decided by {k}", v] for k, v in sorted(self.by_judge.items()) if k != LLM_JUDGE]
        rows += [[f"rejected: {k}", v] for k, v in sorted(self.reasons.items())]
        return Table("LLM judge: share and cost", ["", "value"], rows, digits=1)


def _usd(value: float | None) -> str:
    return "–" if value is None else f"{value:.8f}"


def judge_spend(usage: Iterable[dict[str, Any]]) -> float | None:
    """USD of the priced LLM-judge calls (None: no priced call at all, e.g. data from before
    spend accounting: unknown, not free)."""
    rows = list(usage)
    if not rows:
        return None
    return math.fsum(float(u["cost_usd"]) for u in rows if u["purpose"] == "judge")


def _gen_tokens(event: dict[str, Any]) -> int:
    m = _TOKENS.search(str(event.get("detail") or ""))
    if m is None:
        return 0
    return sum(int(x) for x in m.groups() if x != "None")


def feedback_gain(
    questions: Sequence[dict[str, Any]], events: Iterable[dict[str, Any]]
) -> FeedbackGain:
    refs = {str(q["question_id"]): q.get("reference_answer") for q in questions}
    states = {str(q["question_id"]): q.get("state") for q in questions}
    out = FeedbackGain()
    for qid, history in group_events(events).items():
        scored = [e for e in history if e["kind"] == "scored"]
        cost = Cost()
        arm: str | None = None
        by_attempt: dict[int, dict[str, Any]] = {}
        for e in history:
            if e["kind"] in ("generated", "llm_error"):
                cost.gen_calls += 1
                cost.gen_tokens += _gen_tokens(e)
        for e in scored:
            d = parse_scored_detail(e.get("detail"))
            by_attempt[int(e["attempt"])] = e
            judge = d.get("by", "gate")
            out.judged += 1
            out.by_judge[judge] += 1
            calls, tokens = int(d.get("judge_calls", 0)), int(d.get("judge_tokens", 0))
            cost.judge_calls += calls
            cost.judge_tokens += tokens
            if judge == LLM_JUDGE:
                out.llm_calls += calls
                out.llm_tokens += tokens
                out.llm_outcomes[d.get("reason", "?")] += 1
                ref = refs.get(qid)
                if ref is None or not str(ref).strip():
                    out.llm_no_reference += 1
                else:
                    out.llm_with_reference += 1
            if e.get("decision") != "validate":
                out.reasons[d.get("reason", "?")] += 1
            arm = d.get("arm", arm)
        if 1 in by_attempt:
            out.base.n += 1
            out.base.successes += by_attempt[1].get("decision") == "validate"
        for n, e in sorted(by_attempt.items()):
            if e.get("decision") != "regenerate" or n + 1 not in by_attempt:
                continue
            a = parse_scored_detail(e.get("detail")).get("arm")
            if a not in (FEEDBACK, CONTROL):
                continue
            ok = by_attempt[n + 1].get("decision") == "validate"
            rate = out.arms.setdefault(a, Rate())
            rate.n += 1
            rate.successes += ok
            per = out.by_attempt.setdefault((a, n), Rate())
            per.n += 1
            per.successes += ok
        validated = states.get(qid) == "validated"
        cost.validated = int(validated)
        out.validated += int(validated)
        _add(out.cost_all, cost)
        if arm in (FEEDBACK, CONTROL):
            _add(out.cost_arm.setdefault(arm, Cost()), cost)
    return out


def _add(total: Cost, part: Cost) -> None:
    total.validated += part.validated
    total.gen_calls += part.gen_calls
    total.gen_tokens += part.gen_tokens
    total.judge_calls += part.judge_calls
    total.judge_tokens += part.judge_tokens


def by_arm_counts(events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Regenerations per arm (for a quick look in tests and logs)."""
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        if e["kind"] == "scored" and e.get("decision") == "regenerate":
            counts[parse_scored_detail(e.get("detail")).get("arm", "?")] += 1
    return dict(counts)


# --- plot and section (matplotlib only here: the optional `report` extra) ---------------------

PLOT_FILE = "feedback_gain.png"


def plot_gain(gain: FeedbackGain, path: Path) -> Path:
    from qaloop.report.plots import new_figure, no_data, save

    fig = new_figure(8.0, 4.2)
    ax = fig.subplots()
    bars = [
        ("attempt 1\n(base rate)", gain.base, "#8d99ae"),
        ("n+1 after a rejection,\nfeedback prompt", gain.arms.get(FEEDBACK, Rate()), "#2a9d8f"),
        ("n+1 after a rejection,\ncontrol (plain)", gain.arms.get(CONTROL, Rate()), "#e9c46a"),
    ]
    if not any(r.n for _, r, _ in bars):
        no_data(ax, "no judged answers")
        return save(fig, path)
    for x, (_, rate, color) in enumerate(bars):
        p = rate.p
        if p is None:
            ax.text(x, 2, "n = 0", ha="center")
            continue
        lo, hi = rate.ci or (p, p)
        ax.bar(x, 100 * p, color=color)
        ax.errorbar(x, 100 * p, yerr=[[100 * (p - lo)], [100 * (hi - p)]], color="#222", capsize=6)
        ax.text(x, 100 * hi + 2, f"{100 * p:.0f} % (n = {rate.n})", ha="center")
    ax.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax.set_ylim(0, 110)
    ax.set_ylabel("validated (%), Wilson 95 % CI")
    ax.set_title("Does telling the model what was wrong help?")
    return save(fig, path)


def section(data: ReportData, out_dir: Path) -> tuple[str, str, list[Table], list[str]]:
    """The report section's title, text, tables and plots (qaloop.report.render.build makes
    it a Section)."""
    gain = feedback_gain(data.questions, data.events)
    gain.llm_usd = judge_spend(data.usage)
    plot_gain(gain, out_dir / PLOT_FILE)
    return (
        "Feedback gain, controlled, and the LLM judge",
        "A seeded share of the questions (QALOOP_FEEDBACK_CONTROL_SHARE) is regenerated with the "
        "plain prompt: comparing its P(validated at n+1 | rejected at n) with the feedback "
        "arm's measures what the feedback adds over a re-roll. Answers the cheap gate is unsure "
        "of, and every answer to a question without a reference, go to the LLM judge.",
        [gain.gain_table(), gain.cost_table(), gain.judge_table()],
        [PLOT_FILE],
    )
