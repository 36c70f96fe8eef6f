"""What `qaloop calibrate` and `qaloop gate-bench` share: their common options, loading the
recorded answers and the scorers, and writing tables and plots (one matplotlib set-up, one way
to save a figure, one percent format), so the two reports stay alike."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from qaloop.quality.base import Scorer
from qaloop.quality.calibration import CalibrationInputError, LoadStats, Pair, load_pairs
from qaloop.quality.registry import get_scorer, scorer_names

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def pct(x: float, missing: str = "n/a") -> str:
    """A share as "12.3 %" (`missing` for NaN: a group with no case)."""
    return missing if math.isnan(x) else f"{100 * x:.1f} %"


# ----------------------------------------------------------------------------- options


def answers_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--answers",
        "answers",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help_text,
    )


def out_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--out",
        "out_dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
    )


def scorers_option(help_text: str) -> Callable[[F], F]:
    return click.option("--scorers", "scorer_list", default=None, help=help_text)


def seed_option(help_text: str) -> Callable[[F], F]:
    return click.option("--seed", type=int, default=0, show_default=True, help=help_text)


def no_plots_option() -> Callable[[F], F]:
    return click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")


# ----------------------------------------------------------------------------- inputs


def scorer_list_or_fail(scorer_list: str | None, default: Sequence[str]) -> list[str]:
    """The comma-separated names, or `default`; unknown names are a one-line CLI error."""
    names = [n.strip() for n in scorer_list.split(",")] if scorer_list else list(default)
    unknown = [n for n in names if n not in scorer_names()]
    if unknown:
        raise click.ClickException(f"unknown scorer(s) {unknown}; known: {scorer_names()}")
    return names


def pairs_or_fail(path: Path, repair: bool = True) -> tuple[list[Pair], LoadStats]:
    try:
        return load_pairs(path, repair=repair)
    except (CalibrationInputError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def build_scorers(names: Sequence[str]) -> tuple[dict[str, Scorer], dict[str, str]]:
    """The scorers that load, and why each other one didn't (a missing extra or model)."""
    scorers: dict[str, Scorer] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            scorers[name] = get_scorer(name)
        except (ImportError, RuntimeError) as exc:
            skipped[name] = str(exc).splitlines()[0]
    return scorers, skipped


def load_scorers(names: Sequence[str]) -> tuple[dict[str, Scorer], dict[str, str]]:
    """build_scorers, saying on stderr which were skipped."""
    scorers, skipped = build_scorers(names)
    for name, why in skipped.items():
        click.echo(f"skipping scorer {name}: {why}", err=True)
    return scorers, skipped


def enable_text_cache(scorers: Sequence[Scorer], size: int) -> None:
    """Memoise encodings in every embedding model the scorers use, composites' parts included
    (a composite has no `model` of its own: before, `--scorers composite_embedding` encoded
    every answer twice, once for the true pairs and once for the shuffled control)."""
    for scorer in scorers:
        parts = getattr(scorer, "parts", None)
        for part in [scorer, *(parts.values() if isinstance(parts, dict) else ())]:
            model = getattr(part, "model", None)
            if model is not None and hasattr(model, "text_cache_size"):
                model.text_cache_size = max(model.text_cache_size, size)


class PairMemo:
    """A scorer that keeps every score it gave during the run. `qaloop calibrate` scores the
    same pairs with a scorer alone and again inside a composite (chrF alone and inside
    composite_embedding: 9 s of an idle run); sharing one memo makes the second time free."""

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.name = inner.name
        self._scores: dict[tuple[str, str], float] = {}

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)  # `model`, `parts`: what the text cache looks for

    def score(self, answer: str, reference: str) -> float:
        return self.score_batch([(answer, reference)])[0]

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        missing = [p for p in dict.fromkeys(pairs) if p not in self._scores]
        if missing:
            self._scores.update(zip(missing, self.inner.score_batch(missing), strict=True))
        return [self._scores[p] for p in pairs]


def share_parts(scorers: dict[str, Scorer]) -> dict[str, Scorer]:
    """Each scorer behind a PairMemo, and each composite's parts pointed at the run's memo of
    the same name (one memo per name), so no pair is scored twice by one scorer in a run."""
    memos: dict[str, PairMemo] = {name: PairMemo(s) for name, s in scorers.items()}
    for memo in list(memos.values()):
        parts = getattr(memo.inner, "parts", None)
        if isinstance(parts, dict):
            for key, part in parts.items():
                parts[key] = memos.setdefault(key, PairMemo(part))
    return {name: memos[name] for name in scorers}


# ----------------------------------------------------------------------------- plots


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on a server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out_dir: Path, name: str) -> str:
    """Lay out, write `out_dir/name` and free the figure; returns `name`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out_dir / name)
    plt.close(fig)
    return name


def shares(values: Sequence[float]) -> list[float]:
    """Histogram weights that put each group in % of its own size (groups of different sizes
    compare on one axis)."""
    return [100.0 / len(values)] * len(values) if values else []


def plots_or_fail(write: Callable[[], T]) -> T:
    """Run `write()`; a missing matplotlib is a one-line CLI error that names the fix."""
    try:
        return write()
    except ImportError as exc:
        raise click.ClickException(
            f"plots need the `report` extra: pip install 'qaloop[report]' (or pass --no-plots) "
            f"({exc})"
        ) from exc
