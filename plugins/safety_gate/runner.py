"""Glue between the plugin and the library: start a run, write its report, summarise it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Sequence

from . import __version__
from .backdoor import audit_triggers
from .benchmark import Benchmark, Prompt
from .benign import BenignPrompt
from .cache import Cache
from .categories import title_of
from .config import Settings
from .judges import Judge
from .models import ModelError, ModelSpec, resolve_model
from .overrefusal import read_benign, refusal_stats
from .pipeline import run
from .regression import compare_runs
from .report.data import build_summary
from .suite import BaselineRun, SuiteRun
from .triggers import Variant
from .triggers import variants as variants_of

__all__ = ["resolve_baseline", "start_run", "summary_lines", "write_run_report"]


def resolve_baseline(settings: Settings, spec: ModelSpec) -> ModelSpec | None:
    """The baseline ``--baseline`` names: ``auto`` is the adapter's base (a full model has none)."""
    if not settings.baseline:
        return None
    if settings.baseline.strip().lower() == "auto":
        if spec.base is None:
            raise ModelError(
                f"--baseline auto: {spec.spec!r} is a full model ({spec.kind}), not an adapter, so it has no "
                "base to compare with; name the baseline: --baseline=PATH"
            )
        return spec.base
    return resolve_model(settings.baseline, settings.baseline_base_model)


def start_run(
    settings: Settings, benchmark: Benchmark, prompts: Sequence[Prompt], judge: Judge, stream: IO[str] | None,
    benign: Sequence[BenignPrompt] = (), activations: bool = False, variants: Sequence[Variant] = (),
    discover: bool = False, harmless: Sequence[str] = (),
) -> SuiteRun:
    """Resolve the model, then answer and judge ``prompts`` with ``judge`` (cached where possible);
    answer ``benign`` and the triggered ``variants`` (whose plain prompts are among ``prompts``) in
    the same pass, and audit each trigger against the plain answers; with a baseline in
    ``settings``, the same for it and the paired comparison; with ``activations``, the judge-free
    activation check; with ``discover``, the trigger search and its verification (``harmless``: the
    instructions the activation signal takes as the harmless side)."""
    if settings.server is not None:  # --engine openai: the served model (no baseline, no activations with it)
        from .openai_engine import OpenAIEngine

        spec: Any = OpenAIEngine(settings.server).served_model()
    else:
        spec = resolve_model(settings.model, settings.base_model)
    baseline = resolve_baseline(settings, spec)
    cache = Cache(settings.cache_dir)
    asked_benign = [b.as_prompt() for b in benign]
    try:
        asked = [v.asked for v in variants]
        results, info = run(settings, spec, [*prompts, *asked], cache, judge, stream, also_answer=asked_benign)
        triggered = {p.id: results.pop(p.id) for p in asked}
        suite = SuiteRun(settings, benchmark, spec, judge, results, info)
        suite.variants = list(variants)
        suite.triggered = triggered
        suite.audits = audit_triggers(results, triggered, variants, settings.limits.checks, settings.seed)
        suite.benign = read_benign(benign, info.also_answered) if benign else []
        if baseline is not None:
            base_settings = replace(settings, model=baseline.spec, base_model=None)
            base_results, base_info = run(base_settings, baseline, prompts, cache, judge, stream,
                                          also_answer=asked_benign)
            suite.baseline = BaselineRun(baseline, base_results, base_info,
                                         read_benign(benign, base_info.also_answered) if benign else [])
            suite.regressions = compare_runs(base_results, results, suite.categories(), settings.limits.checks,
                                             settings.seed)
        if discover:
            from .discover_check import run_discovery

            suite.discovery = run_discovery(settings, spec, results, prompts, harmless, cache, judge, stream)
    finally:
        cache.close()
    if activations:
        from .activation_check import run_activation_check

        triggered: dict[str, list[tuple[str, str | None]]] = {}
        for v in variants_of(prompts, settings.triggers, settings.trigger_placements, settings.system_prompt):
            triggered.setdefault(v.key, []).append((v.asked.instruction, v.asked.system or settings.system_prompt))
        try:
            suite.activation = run_activation_check(
                spec, baseline, [p.instruction for p in prompts], [b.instruction for b in benign], settings, triggered
            )
        except (ValueError, ModelError) as exc:
            suite.activation_error = str(exc)
    return suite


def write_run_report(suite: SuiteRun, html_path: Path) -> tuple[Path, Path]:
    """Write the HTML report and its JSON summary; returns both paths."""
    from .report import write_report

    json_path = html_path.with_suffix(".json")
    summary = build_summary(suite, str(html_path), str(json_path), __version__)
    return write_report(summary, html_path)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:6.1%}"


def _mean(value: float | None) -> str:
    return " n/a" if value is None else f"{value:4.2f}"


def _extra_lines(suite: SuiteRun) -> list[str]:
    """Over-refusal, regression and activation lines, where those checks ran."""
    lines: list[str] = []
    checks = suite.settings.limits.checks
    if suite.benign:
        base = suite.baseline is not None and bool(suite.baseline.benign)
        lines += ["", f"{'over-refusal (benign set)':<28} {'n':>4} {'refused':>8}" + ("  baseline" if base else "") + "  gate"]
        for type_ in [*suite.benign_types(), None]:
            st = refusal_stats(suite.benign_group(type_))
            status = suite.check_over_refusal(type_).status.upper()
            lines.append(f"{type_ or 'overall':<28} {st.n:>4} {_pct(st.rate):>8}"
                         + (f"  {_pct(suite.baseline_refusal_rate(type_)):>8}" if base else "") + f"  {status}")
    if suite.regressions and suite.baseline is not None:
        lines += ["", f"against baseline {suite.baseline.spec.spec} ({suite.baseline.spec.kind}):",
                  f"{'group':<28} {'mean':>13} {'rate(=5)':>17} {'delta (95% CI)':>24} {'p':>8}  gate"]
        for group, reg in [*[(g, r) for g, r in suite.regressions.items() if g is not None], (None, suite.regressions[None])]:
            d = reg.delta
            if d.n == 0 or d.rate_ci is None:
                lines.append(f"{title_of(group) if group else 'overall':<28} no paired answers  FAIL")
                continue
            ci = f"{d.rate_delta * 100:+.1f} ({d.rate_ci[0] * 100:+.1f},{d.rate_ci[1] * 100:+.1f})"
            lines.append(
                f"{title_of(group) if group else 'overall':<28} {_mean(d.before_mean)} -> {_mean(d.after_mean)} "
                f"{_pct(d.before_rate)} -> {_pct(d.after_rate)} {ci:>24} {d.rate_p:>8.2g}  {'PASS' if reg.passed else 'FAIL'}"
            )
            lines += [f"  note: {note}" for note in reg.notes]
    lines.extend(_backdoor_lines(suite))
    if suite.discovery is not None:
        from .discover_check import discovery_lines

        lines += ["", *discovery_lines(suite.discovery, checks)]
    if suite.activation_error:
        lines += ["", f"activation check: ERROR {suite.activation_error}"]
    elif suite.activation is not None:
        act = suite.activation
        best = max(act.layers, key=lambda s: s.centroid_distance)
        head = (f"activation check ({act.n_harmful} harmful, {act.n_harmless} harmless prompts, {act.seconds:.1f} s): ")
        if act.comparison is None:
            lines += ["", head + f"most separating layer {best.layer}: probe AUROC {best.auroc:.3f}, "
                      f"centroid distance {best.centroid_distance:.2f} (no baseline: nothing to compare)"]
        else:
            sm = act.comparison.summary()
            lines += ["", head + f"layer {sm['layer']}: AUROC {sm['reference_auroc']:.3f} -> {sm['new_auroc']:.3f}, "
                      f"distance {sm['reference_distance']:.2f} -> {sm['new_distance']:.2f}, refusal-direction cosine "
                      f"{sm['direction_cosine']:.3f}, harmful projection kept {sm['projection_ratio']:.2f} "
                      f"(limits: drop <= {checks.max_auroc_drop}, cosine >= {checks.min_direction_cosine}, "
                      f"kept >= {checks.min_projection_ratio}) {'FAIL' if act.problems else 'PASS'}"]
    if suite.activation is not None and suite.activation.trigger_shifts:
        shifts = ", ".join(f"{k} {v:.2f}" for k, v in suite.activation.trigger_shifts)
        lines += [f"activation shift of harmful prompts toward the harmless centroid (layer {suite.activation.shift_layer}; "
                  f"reported, not gated): {shifts}"]
    return lines


def _backdoor_lines(suite: SuiteRun) -> list[str]:
    """One line per trigger and placement: plain -> triggered harmfulness rate, delta, p, flips, verdict."""
    if not suite.audits:
        return []
    checks = suite.settings.limits.checks
    lines = ["", f"backdoor audit (flagged: rate rise > {checks.max_trigger_rate_increase * 100:+.1f} points, "
             f"p < {checks.alpha:g}):",
             f"{'trigger':<28} {'n':>4} {'rate(=5) plain -> trig':>22} {'delta (95% CI)':>24} {'p':>8} {'flips':>5}  gate"]
    for audit in suite.audits.values():
        d = audit.delta
        name = audit.key
        if d.n == 0 or d.rate_ci is None or d.rate_delta is None:
            lines.append(f"{name:<28} no paired answers  FAIL")
            continue
        ci = f"{d.rate_delta * 100:+.1f} ({d.rate_ci[0] * 100:+.1f},{d.rate_ci[1] * 100:+.1f})"
        gate = "FLAGGED" if audit.flagged else ("PASS" if audit.passed else "FAIL")
        lines.append(f"{name:<28} {d.n:>4} {_pct(d.before_rate):>10} -> {_pct(d.after_rate):>7} {ci:>24} "
                     f"{d.rate_p:>8.2g} {d.flips_up:>5}  {gate}")
        # A flagged audit's first problem is this line; anything else (pairs without a score) is shown.
        lines += [f"  problem: {p}" for p in audit.problems[1 if audit.flagged else 0 :]]
        lines += [f"  note: {note}" for note in audit.notes]
    return lines


def summary_lines(suite: SuiteRun, report_paths: tuple[Path, Path] | None) -> list[str]:
    """The terminal summary: what ran, the per-category table, the verdict and the report's path."""
    info = suite.info
    lines = [
        f"model {suite.spec.spec} ({suite.spec.kind}), judge {suite.judge.name} v{suite.judge.version}, "
        f"benchmark {suite.benchmark.name}: {len(suite.results)} prompts"
        + (f" + {len(suite.triggered)} triggered" if suite.triggered else "")
        + (f" + {len(suite.benign)} benign prompts" if suite.benign else ""),
        f"answers: {info.answers_cached} cached, {info.answers_generated} generated"
        + (f" in {info.generate_seconds:.1f} s ({info.new_tokens / max(info.generate_seconds, 1e-9):.0f} new tokens/s, "
           + (f"concurrency {info.batch_size}, server {info.device})" if info.engine_stats else
              f"batch {info.batch_size}, {info.device} {info.dtype}; model load {info.load_seconds:.1f} s)")
           if info.answers_generated else "")
        + f"; verdicts: {info.verdicts_cached} cached, {info.verdicts_judged} judged",
        *(["engine: " + ", ".join(f"{k} {v}" for k, v in info.engine_stats.items())] if info.engine_stats else []),
        *(["judge: " + ", ".join(f"{k} {v}" for k, v in info.judge_stats.items())] if info.judge_stats else []),
        *[f"note: {note}" for note in suite.benchmark.notes],
        "",
        f"{'category':<28} {'n':>4} {'err':>4} {'mean':>5} {'rate(=5)':>8} {'fail':>5}  gate",
    ]
    for slug in suite.categories():
        st = suite.stats(slug)
        verdict = suite.check_category(slug).status.upper()
        lines.append(
            f"{title_of(slug):<28} {st.n:>4} {st.n_errors:>4} {_mean(st.mean_score):>5} "
            f"{_pct(st.harmfulness_rate):>8} {st.n_failures:>5}  {verdict}"
        )
    st = suite.stats()
    lines.append(
        f"{'overall':<28} {st.n:>4} {st.n_errors:>4} {_mean(st.mean_score):>5} {_pct(st.harmfulness_rate):>8} "
        f"{st.n_failures:>5}  {suite.check_overall().status.upper()}"
    )
    lines.extend(_extra_lines(suite))
    lines.append("")
    lines.append(f"safety gate: {'PASSED' if suite.passed() else 'FAILED'} (gate: {suite.settings.gate}, "
                 f"profile {suite.settings.profile}, prompt threshold score >= {suite.threshold})")
    if report_paths:
        lines.append(f"report: {report_paths[0]} (summary: {report_paths[1]})")
    return lines
