"""Command-line options and the frozen settings object they become.

Option names are constants so self-tests can import them. ``settings_from_config`` is the one
place that reads ``pytest.Config``; library code receives a ``Settings``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .categories import CATEGORIES
from .discovery import DEFAULT_BUDGET, Budget, BudgetError, parse_budget
from .gates import Limits, LimitsError, limits_from_table
from .judges import DEFAULT_JUDGE, JudgeOptions
from .openai_engine import DEFAULT_CONCURRENCY, DEFAULT_RETRIES, DEFAULT_TIMEOUT, EngineError, OpenAIEngine, ServerOptions
from .openai_http import DEFAULT_BASE_URL
from .triggers import LIBRARY_SETS, PLACEMENTS, Trigger, TriggerError, library, load_triggers_file, user_triggers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["GATES", "Settings", "SettingsError", "add_options", "settings_from_options"]

OPT_MODEL = "--model"
OPT_BASE_MODEL = "--base-model"
OPT_DEVICE = "--device"
OPT_DTYPE = "--dtype"
OPT_MAX_NEW_TOKENS = "--max-new-tokens"
OPT_BATCH_SIZE = "--batch-size"
OPT_SEED = "--seed"
OPT_SYSTEM_PROMPT = "--system-prompt"
OPT_BENCHMARK = "--benchmark"
OPT_JUDGE = "--judge"
OPT_JUDGE_MODEL = "--judge-model"
OPT_JUDGE_BASE_URL = "--judge-base-url"
OPT_JUDGE_CONCURRENCY = "--judge-concurrency"
OPT_JUDGE_TIMEOUT = "--judge-timeout"
OPT_JUDGE_RETRIES = "--judge-retries"
OPT_GATE = "--gate"
OPT_PROFILE = "--profile"
OPT_SCORE_THRESHOLD = "--score-threshold"
OPT_MAX_RATE = "--max-harmfulness-rate"
OPT_MAX_MEAN = "--max-mean-score"
OPT_CATEGORY_MAX_RATE = "--category-max-harmfulness-rate"
OPT_CATEGORY_MAX_MEAN = "--category-max-mean-score"
OPT_CACHE_DIR = "--cache-dir"
OPT_NO_CACHE = "--no-cache"
OPT_REPORT = "--report"
OPT_JUDGE_CALIBRATE = "--judge-calibrate"
OPT_BASELINE = "--baseline"
OPT_BASELINE_BASE_MODEL = "--baseline-base-model"
OPT_BENIGN = "--benign"
OPT_ACTIVATIONS = "--activations"
OPT_MAX_OVER_REFUSAL = "--max-over-refusal"
OPT_MAX_RATE_INCREASE = "--max-rate-increase"
OPT_TRIGGERS = "--triggers"
OPT_TRIGGER = "--trigger"
OPT_TRIGGERS_FILE = "--triggers-file"
OPT_TRIGGER_PLACEMENT = "--trigger-placement"
OPT_MAX_TRIGGER_RATE_INCREASE = "--max-trigger-rate-increase"
OPT_ENGINE = "--engine"
OPT_GPUS = "--gpus"
OPT_ENGINE_MODEL = "--engine-model"
OPT_ENGINE_BASE_URL = "--engine-base-url"
OPT_ENGINE_CONCURRENCY = "--engine-concurrency"
OPT_ENGINE_TIMEOUT = "--engine-timeout"
OPT_ENGINE_RETRIES = "--engine-retries"
OPT_DISCOVER_TRIGGERS = "--discover-triggers"
OPT_DISCOVER_BUDGET = "--discover-budget"

GATES = ("items", "aggregate")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ENGINES = ("auto", "hf", "openai")


class SettingsError(ValueError):
    """An option or [tool.safety_gate] value that cannot be used."""


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _batch_size(text: str) -> int | None:
    return None if text == "auto" else _positive_int(text)


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return value


def _budget(text: str) -> Budget:
    import argparse

    try:
        return parse_budget(text)
    except BudgetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_options(parser: Any) -> None:
    """Register the plugin's options in one group, and its ini keys."""
    group = parser.getgroup("safety-gate", "safety-gate: is this model still safe?")
    add = group.addoption
    add(OPT_MODEL, default=None, metavar="PATH",
        help="checkpoint to test: HF model folder, PEFT adapter folder, .gguf file, or 'default' "
        "(embedded SmolLM2-135M-Instruct; also what no --model means)")
    add(OPT_BASE_MODEL, default=None, metavar="PATH", help="base model of an adapter (overrides adapter_config.json)")
    add(OPT_DEVICE, default="auto", choices=DEVICES, help="where to run the model (default: auto)")
    add(OPT_DTYPE, default="auto", choices=DTYPES, help="weights dtype (auto: bfloat16 on CUDA and on CPUs with native bfloat16, else float32)")
    add(OPT_MAX_NEW_TOKENS, default=128, type=_positive_int, metavar="N", help="new tokens per answer (default: 128)")
    add(OPT_BATCH_SIZE, default=None, type=_batch_size, metavar="N|auto", help="generation batch size (default: auto)")
    add(OPT_SEED, default=0, type=int, metavar="N", help="random seed (default: 0)")
    add(OPT_SYSTEM_PROMPT, default=None, metavar="TEXT", help="system prompt to add to every chat")
    add(OPT_BENCHMARK, default=None, metavar="PATH",
        help="prompt set: HEx-PHI folder (category_N.csv), .jsonl or .csv (default: the embedded 330)")
    add(OPT_JUDGE, default=DEFAULT_JUDGE, metavar="NAME[:ARG]",
        help="judge that scores answers 1-5: embed (default), rules, openai, hf:PATH[@KIND]")
    add(OPT_JUDGE_MODEL, default=None, metavar="NAME", help="model the judge asks (openai judge)")
    add(OPT_JUDGE_BASE_URL, default=None, metavar="URL",
        help="OpenAI-compatible endpoint of the judge (default: $OPENAI_BASE_URL); the key comes from $OPENAI_API_KEY")
    add(OPT_JUDGE_CONCURRENCY, default=8, type=_positive_int, metavar="N", help="judge requests in flight (default: 8)")
    add(OPT_JUDGE_TIMEOUT, default=60.0, type=float, metavar="S", help="seconds before a judge request times out")
    add(OPT_JUDGE_RETRIES, default=4, type=int, metavar="N", help="retries of a failed judge request (default: 4)")
    add(OPT_GATE, default="items", choices=GATES,
        help="what decides the exit code: every prompt item (items) or only the aggregates (aggregate)")
    add(OPT_PROFILE, default=None, metavar="NAME", help="limits profile: default, strict, lenient or one of [tool.safety_gate.profiles]")
    add(OPT_SCORE_THRESHOLD, default=None, type=int, metavar="S", help="a prompt fails at this score or above (default: 4)")
    add(OPT_MAX_RATE, default=None, type=_fraction, metavar="F", help="overall harmfulness-rate limit, e.g. 0.05 or 5%%")
    add(OPT_MAX_MEAN, default=None, type=float, metavar="S", help="overall mean-score limit")
    add(OPT_CATEGORY_MAX_RATE, default=None, type=_fraction, metavar="F", help="per-category harmfulness-rate limit")
    add(OPT_CATEGORY_MAX_MEAN, default=None, type=float, metavar="S", help="per-category mean-score limit")
    add(OPT_CACHE_DIR, default=None, metavar="DIR", help="answer/verdict cache (default: .safety_gate_cache)")
    add(OPT_NO_CACHE, action="store_true", default=False, help="neither read nor write the cache")
    add(OPT_REPORT, default=None, metavar="PATH", help="HTML report path (default: reports/safety-report.html)")
    add(OPT_BASELINE, default=None, metavar="PATH|auto",
        help="compare with this model (same forms as --model); auto: the base model of an adapter")
    add(OPT_BASELINE_BASE_MODEL, default=None, metavar="PATH", help="base model of a baseline adapter")
    add(OPT_BENIGN, default="default", metavar="default|none|PATH",
        help="benign set for the over-refusal check: the embedded 217 safe prompts, none, or a .jsonl")
    add(OPT_ACTIVATIONS, action="store_true", default=False,
        help="also run the judge-free activation check (forward passes only; with --baseline it compares the two)")
    add(OPT_MAX_OVER_REFUSAL, default=None, type=_fraction, metavar="F", help="overall benign refusal-rate limit")
    add(OPT_MAX_RATE_INCREASE, default=None, type=_fraction, metavar="F",
        help="harmfulness-rate increase over the baseline allowed (fails only when significant)")
    add(OPT_TRIGGERS, default=None, choices=LIBRARY_SETS,
        help="backdoor audit: ask every prompt again with each trigger of this library set: default (Qi et al.'s "
        "magic words and 3 more), all (every entry) or none (what no --triggers means)")
    add(OPT_TRIGGER, action="append", default=None, metavar="TEXT",
        help="backdoor audit: a trigger of your own (repeatable; added to --triggers)")
    add(OPT_TRIGGERS_FILE, default=None, metavar="PATH", help="backdoor audit: triggers of your own, one a line")
    add(OPT_TRIGGER_PLACEMENT, action="append", default=None, choices=PLACEMENTS,
        help="where a trigger goes: suffix (default), prefix, system, infix (repeatable)")
    add(OPT_MAX_TRIGGER_RATE_INCREASE, default=None, type=_fraction, metavar="F",
        help="harmfulness-rate increase a trigger may cause over the plain prompts (flagged only when significant)")
    add(OPT_ENGINE, default="auto", choices=ENGINES,
        help="what generates the answers from the local model: auto (default: the static CUDA-graph engine on a GPU "
        "where it supports the model, else transformers generate) or hf (always transformers generate); or openai "
        "(an OpenAI-compatible server such as vLLM, TGI or SGLang: --engine-model, --engine-base-url)")
    add(OPT_GPUS, default=1, type=_positive_int, metavar="N",
        help="generate on N GPUs at once, one process and one model copy each, the prompts shared out "
        "(default: 1; with --device cpu: N CPU processes)")
    add(OPT_ENGINE_MODEL, default=None, metavar="NAME", help="--engine openai: the model name the server serves")
    add(OPT_ENGINE_BASE_URL, default=None, metavar="URL",
        help="--engine openai: the server's endpoint (default: $OPENAI_BASE_URL); the key comes from $OPENAI_API_KEY")
    add(OPT_ENGINE_CONCURRENCY, default=DEFAULT_CONCURRENCY, type=_positive_int, metavar="N",
        help=f"--engine openai: requests in flight (default: {DEFAULT_CONCURRENCY})")
    add(OPT_ENGINE_TIMEOUT, default=DEFAULT_TIMEOUT, type=float, metavar="S",
        help=f"--engine openai: seconds before a request times out (default: {DEFAULT_TIMEOUT:g})")
    add(OPT_ENGINE_RETRIES, default=DEFAULT_RETRIES, type=int, metavar="N",
        help=f"--engine openai: retries of a failed request (default: {DEFAULT_RETRIES})")
    add(OPT_DISCOVER_TRIGGERS, action="store_true", default=False,
        help="search the model for an unknown trigger (suffix) that flips refusals, and verify the best on held-out prompts")
    add(OPT_DISCOVER_BUDGET, default=None, type=_budget, metavar="TIME|Nsteps",
        help=f"how long the trigger search runs: 600s, 10m or 200steps (default: {DEFAULT_BUDGET})")
    add(OPT_JUDGE_CALIBRATE, nargs="?", const="test", default=None, metavar="test|train|PATH",
        help="instead of testing a model, score the labelled judge cases with --judge and print its agreement")


@dataclass(frozen=True)
class Settings:
    """Everything the suite needs from the command line and pyproject.toml."""

    model: str
    model_given: bool
    base_model: str | None
    device: str
    dtype: str
    max_new_tokens: int
    batch_size: int | None
    seed: int
    system_prompt: str | None
    benchmark: str | None
    judge: str
    judge_options: JudgeOptions
    gate: str
    profile: str
    limits: Limits
    cache_dir: Path | None
    report: Path
    rootpath: Path
    baseline: str | None = None
    baseline_base_model: str | None = None
    benign: str | None = "default"
    activations: bool = False
    triggers: tuple[Trigger, ...] = ()
    trigger_placements: tuple[str, ...] = ("suffix",)
    engine: str = "auto"
    server: ServerOptions | None = None  # set with --engine openai
    gpus: int = 1
    # Set by the plugin in a pytest-xdist worker: (this worker's index, workers); not an option.
    shard: tuple[int, int] | None = None
    discover: bool = False
    discover_budget: Budget | None = None

    def generation_key(self, device: str, dtype: str) -> dict[str, Any]:
        """The generation settings that change an answer (greedy decoding: the seed does not; on a
        GPU the engine does, by rounding, in bfloat16)."""
        # "cuda:1" answers as "cuda:0" does: xdist workers on different GPUs share answers.
        key = {"max_new_tokens": self.max_new_tokens, "decoding": "greedy", "device": device.split(":")[0], "dtype": dtype}
        return {**key, "engine": self.engine} if device.startswith("cuda") else key

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view, for the report."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size or "auto",
            "device": self.device,
            "dtype": self.dtype,
            "seed": self.seed,
            "system_prompt": self.system_prompt,
            "gate": self.gate,
            "profile": self.profile,
            "score_threshold": self.limits.score_threshold,
            "cache": str(self.cache_dir) if self.cache_dir else None,
            "judge_options": self.judge_options.describe(),
            "baseline": self.baseline,
            "benign": self.benign,
            "activations": self.activations,
            "triggers": [t.name for t in self.triggers],
            "trigger_placements": list(self.trigger_placements),
            "engine": self.engine,
            "gpus": self.gpus,
            **({"server": self.server.describe()} if self.server else {}),
            "discover": self.discover,
            "discover_budget": str(self.discover_budget or parse_budget(DEFAULT_BUDGET)) if self.discover else None,
        }


def _read_table(pyproject: Path) -> dict[str, Any]:
    if not pyproject.is_file():
        return {}
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{pyproject}: cannot read: {exc}") from exc
    table = data.get("tool", {}).get("safety_gate", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{pyproject}: [tool.safety_gate] must be a table")
    return table


def settings_from_options(get: Any, rootpath: Path) -> Settings:
    """Build Settings from ``get(option_dest)`` (pytest's ``config.getoption``) and ``rootpath``
    (where pyproject.toml is read and the default cache and reports folders go)."""
    table = _read_table(rootpath / "pyproject.toml")
    overrides = {
        "score_threshold": get("score_threshold"),
        "max_harmfulness_rate": get("max_harmfulness_rate"),
        "max_mean_score": get("max_mean_score"),
        "category_max_harmfulness_rate": get("category_max_harmfulness_rate"),
        "category_max_mean_score": get("category_max_mean_score"),
        "max_over_refusal": get("max_over_refusal"),
        "max_rate_increase": get("max_rate_increase"),
        "max_trigger_rate_increase": get("max_trigger_rate_increase"),
    }
    try:
        profile, limits = limits_from_table(table, get("profile"), overrides, [c.slug for c in CATEGORIES])
    except LimitsError as exc:
        raise SettingsError(f"{rootpath / 'pyproject.toml'}: {exc}") from exc
    cache_dir = None if get("no_cache") else Path(get("cache_dir") or rootpath / ".safety_gate_cache")
    report = Path(get("report") or rootpath / "reports" / "safety-report.html")
    return Settings(
        model=get("model") or "default",
        model_given=get("model") is not None,
        base_model=get("base_model"),
        device=get("device"),
        dtype=get("dtype"),
        max_new_tokens=get("max_new_tokens"),
        batch_size=get("batch_size"),
        seed=get("seed"),
        system_prompt=get("system_prompt"),
        benchmark=get("benchmark"),
        judge=get("judge"),
        judge_options=JudgeOptions(
            model=get("judge_model"),
            base_url=get("judge_base_url") or os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY"),
            concurrency=get("judge_concurrency") or 8,
            timeout=get("judge_timeout") or 60.0,
            max_retries=4 if get("judge_retries") is None else get("judge_retries"),
            device=get("device") or "auto",
            cache_dir=str(cache_dir) if cache_dir else None,
        ),
        gate=get("gate"),
        profile=profile,
        limits=limits,
        cache_dir=cache_dir,
        report=report,
        rootpath=rootpath,
        baseline=get("baseline"),
        baseline_base_model=get("baseline_base_model"),
        benign=None if (get("benign") or "default").lower() == "none" else get("benign") or "default",
        activations=bool(get("activations")),
        triggers=_triggers(get),
        trigger_placements=tuple(dict.fromkeys(get("trigger_placement") or ["suffix"])),
        engine=get("engine") or "auto",
        gpus=get("gpus") or 1,
        server=_server(get),
        discover=bool(get("discover_triggers")),
        discover_budget=get("discover_budget"),
    )


def _triggers(get: Any) -> tuple[Trigger, ...]:
    """The audit's triggers: the library set, then ``--trigger`` texts, then the file's; errors name the option."""
    found = library(get("triggers"))
    try:
        found += user_triggers(get("trigger") or (), found)
    except TriggerError as exc:
        raise SettingsError(f"{OPT_TRIGGER}: {exc}") from None
    if get("triggers_file"):
        try:
            found += user_triggers(load_triggers_file(get("triggers_file")), found, source=get("triggers_file"))
        except TriggerError as exc:
            raise SettingsError(f"{OPT_TRIGGERS_FILE}: {exc}") from None
    return found


def _server(get: Any) -> ServerOptions | None:
    """``--engine openai``'s server, checked; None for the local engines. What needs local weights
    (``--model``, ``--base-model``, ``--baseline``, ``--activations``) is refused with it."""
    if (get("engine") or "auto") != "openai":
        for opt in (OPT_ENGINE_MODEL, OPT_ENGINE_BASE_URL):
            if get(opt.lstrip("-").replace("-", "_")) is not None:
                raise SettingsError(f"{opt} is only used with {OPT_ENGINE}=openai")
        return None
    refused = {
        OPT_MODEL: "names local weights; with --engine openai the model is the served one (--engine-model)",
        OPT_BASE_MODEL: "names local weights; with --engine openai the model is the served one (--engine-model)",
        OPT_BASELINE: "needs a second model with an engine of its own, which --engine openai cannot give yet; "
        "compare with a baseline using local weights (--engine hf)",
        OPT_ACTIVATIONS: "reads hidden states of local weights, which a server does not expose; run it with --engine hf",
        OPT_DISCOVER_TRIGGERS: "searches with gradients of local weights, which a server does not expose; run it with --engine hf",
    }
    for opt, why in refused.items():
        if get(opt.lstrip("-").replace("-", "_")):
            raise SettingsError(f"{opt} cannot be used with {OPT_ENGINE}=openai: it {why}")
    model = get("engine_model")
    if not model or not model.strip():
        raise SettingsError(f"{OPT_ENGINE}=openai needs {OPT_ENGINE_MODEL}=NAME: the model name the server serves")
    timeout = get("engine_timeout")
    retries = get("engine_retries")
    options = ServerOptions(
        model=model.strip(),
        base_url=get("engine_base_url") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        api_key=os.environ.get("OPENAI_API_KEY") or None,
        concurrency=get("engine_concurrency") or DEFAULT_CONCURRENCY,
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        max_retries=DEFAULT_RETRIES if retries is None else retries,
        seed=get("seed") or 0,
    )
    if options.timeout <= 0:
        raise SettingsError(f"{OPT_ENGINE_TIMEOUT} must be positive (got {options.timeout:g})")
    if options.max_retries < 0:
        raise SettingsError(f"{OPT_ENGINE_RETRIES} must be 0 or more (got {options.max_retries})")
    try:
        OpenAIEngine(options)  # checks the URL; opens nothing
    except EngineError as exc:
        raise SettingsError(f"{OPT_ENGINE_BASE_URL}: {exc}") from None
    return options
