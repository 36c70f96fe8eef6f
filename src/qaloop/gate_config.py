"""The default gate's spec from the settings (QALOOP_SCORER, QALOOP_THRESHOLD, QALOOP_GATE_*).

Outside qaloop.quality on purpose: the pure core doesn't read settings; the judge stage calls
`gate_spec_from_settings(settings)` and `qaloop.quality.gate.build_gate(spec)`."""

from __future__ import annotations

from qaloop.quality.gate import GateSpec
from qaloop.settings import Settings

CHECKS = ("language", "contradiction", "truncation")


def gate_spec_from_settings(settings: Settings) -> GateSpec:
    """QALOOP_SCORER = the relevance scorer, QALOOP_THRESHOLD = its pass threshold (both
    unset: the calibrated default, GateSpec()),
    QALOOP_GATE_UNSURE_THRESHOLD = the lower edge of the UNSURE band (default: the calibrated
    lower edge, clipped to the threshold), QALOOP_GATE_MAX_CHARS, QALOOP_GATE_CHECKS."""
    checks = {c.strip() for c in settings.gate_checks.split(",") if c.strip()}
    unknown = checks - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown gate check(s) {sorted(unknown)}; known: {list(CHECKS)}")
    default = GateSpec()
    explicit = settings.model_fields_set
    # Unset QALOOP_SCORER / QALOOP_THRESHOLD: the calibrated default gate. (Their Settings
    # defaults, composite / 0.14, are what the plain scorer path of the judge used before the
    # gate; an explicit value means "this scorer, this pass threshold".)
    scorer = settings.scorer if "scorer" in explicit else default.scorer
    if "threshold" in explicit:
        threshold = settings.threshold
    else:
        threshold = default.pass_threshold if scorer == default.scorer else settings.threshold
    unsure = settings.gate_unsure_threshold
    if unsure is None:
        unsure = min(default.unsure_threshold, threshold)
    return GateSpec(
        scorer=scorer,
        pass_threshold=threshold,
        unsure_threshold=unsure,
        max_chars=settings.gate_max_chars,
        check_language="language" in checks,
        check_contradiction="contradiction" in checks,
        check_truncation="truncation" in checks,
    )
