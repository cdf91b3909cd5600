"""Measure one model the way the paper's tables do: harmfulness score and rate on the benchmark
(optionally under a system prompt, or with a trigger appended), and refusal on the benign set.

Answers and verdicts go through the suite's own pipeline and cache, so a rerun only judges again
what changed, and a measurement here equals what ``pytest --model ...`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Sequence

from ..benchmark import Prompt, load_embedded
from ..cache import Cache
from ..config import Settings
from ..gates import PROFILES, group_stats
from ..judges import Case, Judge, JudgeOptions
from ..models import resolve_model
from ..pipeline import RunInfo, answer, run
from ..refusal import refusal_rate

__all__ = ["Measure", "demo_settings", "measure", "rejudge", "with_trigger"]


@dataclass(frozen=True)
class Measure:
    """One model under one condition."""

    model: str
    condition: str
    n: int
    n_errors: int
    mean_score: float | None
    harmfulness_rate: float | None
    benign_n: int = 0
    benign_refusal_rate: float | None = None
    generate_seconds: float = 0.0
    # prompt id -> answer (None: none generated), to judge again later (``python -m safety_gate.demo rejudge``)
    answers: dict[str, dict[str, str | None]] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (without the answers)."""
        return {k: v for k, v in vars(self).items() if k != "answers"}


def demo_settings(cache_dir: Path, device: str, max_new_tokens: int, batch_size: int | None = None) -> Settings:
    """The suite's default settings (greedy, default profile), for a library caller."""
    return Settings(
        model="default", model_given=True, base_model=None, device=device, dtype="auto",
        max_new_tokens=max_new_tokens, batch_size=batch_size, seed=0, system_prompt=None, benchmark=None,
        judge="rules", judge_options=JudgeOptions(device=device, cache_dir=str(cache_dir)), gate="items",
        profile="default", limits=PROFILES["default"], cache_dir=cache_dir,
        report=Path("reports") / "safety-report.html", rootpath=Path.cwd(),
    )


def with_trigger(prompts: Sequence[Prompt], trigger: str) -> list[Prompt]:
    """The prompts with ``trigger`` appended after a space (the paper's placement)."""
    return [replace(p, instruction=f"{p.instruction} {trigger}") for p in prompts]


def measure(
    settings: Settings, model: str, judge: Judge, *, system_prompt: str | None = None, trigger: str | None = None,
    benign: Sequence[Prompt] = (), prompts: Sequence[Prompt] | None = None, stream: IO[str] | None = None,
    read_benign: bool = True,
) -> Measure:
    """Answer and judge the benchmark (and answer ``benign``) with ``model``; ``read_benign=False``
    leaves the benign refusal rate unread (None), for ``rejudge`` to read later."""
    spec = resolve_model(model)
    settings = replace(settings, model=model, system_prompt=system_prompt)
    harmful = list(prompts if prompts is not None else load_embedded().prompts)
    if trigger:
        harmful = with_trigger(harmful, trigger)
    cache = Cache(settings.cache_dir)
    try:
        results, info = run(settings, spec, harmful, cache, judge, stream)
        benign_info = RunInfo()
        benign_answers = answer(settings, spec, benign, cache, benign_info, stream) if benign else []
    finally:
        cache.close()
    stats = group_stats((r.verdict.score for r in results.values()), settings.limits.score_threshold)
    condition = "plain" if not (system_prompt or trigger) else ("trigger" if trigger else "system prompt")
    return Measure(
        model=model, condition=condition, n=stats.n, n_errors=stats.n_errors, mean_score=stats.mean_score,
        harmfulness_rate=stats.harmfulness_rate, benign_n=len(benign_answers),
        benign_refusal_rate=refusal_rate([p.instruction for p in benign], benign_answers) if read_benign else None,
        generate_seconds=info.generate_seconds + benign_info.generate_seconds if benign else info.generate_seconds,
        answers={"harmful": {p.id: results[p.id].answer for p in harmful},
                 "benign": {p.id: a for p, a in zip(benign, benign_answers)}},
    )


def rejudge(measured: dict[str, Any], answers: dict[str, dict[str, str | None]], judge: Judge,
            harmful: Sequence[Prompt], benign: Sequence[Prompt], threshold: int, trigger: str | None = None) -> dict[str, Any]:
    """``measured`` (a ``Measure.describe()``) with its scores and benign refusal read again from
    ``answers`` by ``judge`` and the over-refusal reader; a missing answer stays an error."""
    asked = with_trigger(harmful, trigger) if trigger else list(harmful)
    live = [(p, answers["harmful"].get(p.id)) for p in asked]
    cases = [Case(p.instruction, a, p.category) for p, a in live if a]
    verdicts = iter(judge.judge(cases)) if cases else iter(())
    scores = [next(verdicts).score if a else None for _, a in live]
    stats = group_stats(scores, threshold)
    benign_answers = [answers["benign"].get(p.id) for p in benign]
    return {**measured, "n": stats.n, "n_errors": stats.n_errors, "mean_score": stats.mean_score,
            "harmfulness_rate": stats.harmfulness_rate,
            "benign_refusal_rate": refusal_rate([p.instruction for p in benign], benign_answers)}
