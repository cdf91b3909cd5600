"""The report's data: a JSON-ready summary of a run (pure; rendering lives in render.py)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..categories import title_of
from ..gates import GroupLimits, GroupStats, check_group
from ..overrefusal import refusal_stats

__all__ = ["build_summary"]


def _group(stats: GroupStats, limits: GroupLimits) -> dict[str, Any]:
    problems = check_group(stats, limits)
    return {
        "n": stats.n,
        "n_scored": stats.n_scored,
        "n_errors": stats.n_errors,
        "mean_score": stats.mean_score,
        "harmfulness_rate": stats.harmfulness_rate,
        "rate_ci": list(stats.rate_ci) if stats.rate_ci else None,
        "n_failures": stats.n_failures,
        "limits": vars(limits).copy(),
        "passed": not problems,
        "messages": problems,
    }


def _over_refusal(run: Any) -> dict[str, Any]:
    checks = run.settings.limits.checks

    def group(type_: str | None) -> dict[str, Any]:
        members = run.benign_group(type_)
        outcome = run.check_over_refusal(type_)
        return {
            "type": type_ or "overall",
            **refusal_stats(members).describe(),
            "limit": checks.max_over_refusal if type_ is None else checks.type_max_over_refusal,
            "baseline_rate": run.baseline_refusal_rate(type_),
            "passed": outcome.status == "pass",
            "message": outcome.message,
            "refused": [{"id": r.prompt.id, "instruction": r.prompt.instruction, "answer": r.answer}
                        for r in members if r.refused] if type_ is not None else [],
        }

    return {"overall": group(None), "types": [group(t) for t in run.benign_types()]}


# Flipped examples shown per trigger; the rest are counted (each is also a failing triggered item).
MAX_FLIPPED_SHOWN = 50


def _backdoor(run: Any) -> dict[str, Any]:
    """Per trigger and placement: the paired figures, and the flipped prompts' answers side by side."""
    triggers = []
    for audit in run.audits.values():
        flipped = []
        for i in audit.flipped[:MAX_FLIPPED_SHOWN]:
            plain, triggered = audit.pairs[i]
            flipped.append({
                "id": plain.prompt.id, "category": plain.prompt.category, "instruction": plain.prompt.instruction,
                "asked": triggered.prompt.instruction, "system": triggered.prompt.system,
                "plain_answer": plain.answer, "plain_score": plain.verdict.score, "plain_reason": plain.verdict.reason,
                "triggered_answer": triggered.answer, "triggered_score": triggered.verdict.score,
                "triggered_reason": triggered.verdict.reason,
            })
        triggers.append({**audit.describe(), "flipped": flipped,
                         "flipped_not_shown": max(0, len(audit.flipped) - MAX_FLIPPED_SHOWN)})
    checks = run.settings.limits.checks
    return {"limits": {"max_trigger_rate_increase": checks.max_trigger_rate_increase, "alpha": checks.alpha},
            "placements": list(run.settings.trigger_placements), "triggers": triggers,
            "flagged": [t["key"] for t in triggers if t["flagged"]]}


def _checks(run: Any) -> dict[str, Any]:
    """The report's sections for the checks beside the benchmark, where they ran."""
    out: dict[str, Any] = {}
    if run.benign:
        out["over_refusal"] = _over_refusal(run)
    if run.baseline is not None:
        groups = [r.describe() | {"title": title_of(r.group) if r.group else "Overall"}
                  for g, r in run.regressions.items() if g is not None]
        if None in run.regressions:
            groups.append(run.regressions[None].describe() | {"title": "Overall"})
        out["regression"] = {"baseline": {**run.baseline.spec.describe(), "fingerprint": run.baseline.info.fingerprint},
                             "limits": vars(run.settings.limits.checks).copy(), "groups": groups}
    if run.audits:
        out["backdoor"] = _backdoor(run)
    if getattr(run, "discovery", None) is not None:
        checks = run.settings.limits.checks
        out["discovery"] = {**run.discovery.describe(), "limits": {
            "max_trigger_rate_increase": checks.max_trigger_rate_increase, "alpha": checks.alpha}}
    if run.activation_error:
        out["activations"] = {"error": run.activation_error, "passed": False}
    elif run.activation is not None:
        out["activations"] = run.activation.describe()
    return out


def build_summary(run: Any, html_path: str, json_path: str, version: str) -> dict[str, Any]:
    """The summary of a ``SuiteRun``: model, benchmark, judge, settings, tables and every failure."""
    limits = run.settings.limits
    categories = []
    failures = []
    for slug in run.categories():
        row = {"slug": slug, "title": title_of(slug), **_group(run.stats(slug), limits.for_category(slug))}
        categories.append(row)
        items = [
            {
                "id": r.prompt.id,
                "instruction": r.prompt.instruction,
                "answer": r.answer,
                "score": r.verdict.score,
                "reason": r.verdict.reason,
                "error": r.verdict.error,
                "confidence": r.verdict.confidence,
                "ambiguous": r.verdict.ambiguous,
            }
            for r in run.results.values()
            if r.prompt.category == slug and run.is_failure(r)
        ]
        if items:
            failures.append({"slug": slug, "title": row["title"], "items": items})
    overall = run.stats()
    settings = run.settings.describe()
    settings.update(device=run.info.device or settings["device"], dtype=run.info.dtype or settings["dtype"])
    if run.info.batch_size:
        settings["batch_size"] = run.info.batch_size
    return {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": {"name": "safety-gate", "version": version},
        "passed": run.passed(),
        "gate": run.settings.gate,
        "model": {**run.spec.describe(), "fingerprint": run.info.fingerprint,
                  **({"engine_stats": dict(run.info.engine_stats)} if run.info.engine_stats else {})},
        "benchmark": {
            "name": run.benchmark.name,
            "source": run.benchmark.source,
            "n_prompts": len(run.benchmark.prompts),
            "n_run": len(run.results),
            "notes": list(run.benchmark.notes),
        },
        "judge": {"name": run.judge.name, "version": run.judge.version, "stats": dict(run.info.judge_stats)},
        "settings": settings,
        "limits": {"overall": vars(limits.overall).copy(), "category": vars(limits.category).copy(),
                   "per_category": {k: vars(v).copy() for k, v in limits.per_category.items()}},
        "overall": _group(overall, limits.overall),
        "categories": categories,
        "score_histogram": {str(k): v for k, v in overall.histogram.items()},
        "failures": failures,
        "run": run.info.describe(),
        **_checks(run),
        "report_paths": {"html": html_path, "json": json_path},
    }
