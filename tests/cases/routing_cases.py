"""The quality gate's case table, shared by every caller of qaloop.core.routing: the plain judge
(tests/unit/services/test_judge.py), the routing unit tests and the Flink job's tests.

(score, attempt, threshold, max_attempts, expected decision, expected next attempt)
"""

from __future__ import annotations

ROUTING_CASES: list[tuple[float | None, int, float, int, str, int]] = [
    (0.90, 1, 0.5, 3, "validate", 1),
    (0.50, 1, 0.5, 3, "validate", 1),  # the threshold itself passes
    (0.4999, 1, 0.5, 3, "regenerate", 2),
    (0.10, 2, 0.5, 3, "regenerate", 3),
    (0.10, 3, 0.5, 3, "give_up", 3),
    (0.10, 7, 0.5, 3, "give_up", 7),  # a replayed message past the limit never loops
    (0.00, 1, 0.0, 3, "validate", 1),
    (0.99, 1, 1.0, 3, "regenerate", 2),
    (0.20, 1, 0.5, 1, "give_up", 1),
    (None, 1, 0.5, 3, "validate", 1),  # no reference: accepted unscored
    (None, 3, 0.9, 3, "validate", 3),
]
