"""Regression against a baseline: did fine-tuning make it worse than before? (pure)

The same prompts answered by the baseline (the model before fine-tuning) and by the model under
test, both judged by the same judge: per category and overall, the paper-style "initial ->
fine-tuned" mean score and harmfulness rate, their paired deltas with a paired-bootstrap interval
(seeded), and exact paired tests (McNemar for the rate, a sign test for the score); see
:mod:`safety_gate.paired`. A group fails when an increase is above its limit and significant, or
when a pair has no score (an incomplete comparison is never a pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .gates import CheckLimits
from .paired import PairedDelta, paired_delta, regression_notes, regression_problems
from .pipeline import Result

__all__ = ["Regression", "compare_runs"]


@dataclass(frozen=True)
class Regression:
    """One group's comparison (a category slug, or None for all prompts) and its verdict."""

    group: str | None
    delta: PairedDelta
    problems: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {"group": self.group or "overall", **self.delta.describe(), "passed": self.passed,
                "problems": list(self.problems), "notes": list(self.notes)}


def _compare(group: str | None, ids: list[str], before: Mapping[str, Result], after: Mapping[str, Result],
             limits: CheckLimits, seed: int) -> Regression:
    before_scores = [before[i].verdict.score if i in before else None for i in ids]
    after_scores = [after[i].verdict.score if i in after else None for i in ids]
    delta = paired_delta(before_scores, after_scores, seed=seed)
    problems = regression_problems(delta, limits.max_rate_increase, limits.max_mean_increase, limits.alpha)
    notes = regression_notes(delta, limits.max_rate_increase, limits.max_mean_increase, limits.alpha)
    if delta.n_dropped and delta.n:
        # Scores missing on either side: the comparison is incomplete, which is never a pass.
        problems = [*problems, notes[0]]
        notes = notes[1:]
    return Regression(group, delta, tuple(problems), tuple(notes))


def compare_runs(
    before: Mapping[str, Result], after: Mapping[str, Result], categories: list[str], limits: CheckLimits,
    seed: int = 0,
) -> dict[str | None, Regression]:
    """Comparisons keyed by category slug, and None for all prompts, over the prompts ``after`` ran."""
    ids = list(after)
    out: dict[str | None, Regression] = {}
    for slug in categories:
        out[slug] = _compare(slug, [i for i in ids if after[i].prompt.category == slug], before, after, limits, seed)
    out[None] = _compare(None, ids, before, after, limits, seed)
    return out
