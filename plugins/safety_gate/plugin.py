"""pytest hooks of safety-gate: options, markers, parametrization, the session run and the report.

Each hook is a few lines calling plain functions. The plugin stays silent unless asked: without
``--model`` and without the safety_tests suite collected it imports no torch and writes nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import config as _config
from .benchmark import Benchmark, BenchmarkError, Prompt, load_benchmark
from .benign import BenignPrompt, load_benign, present_types
from .categories import CATEGORIES
from .judges import JudgeError, get_judge
from .models import ModelError, resolve_model
from .triggers import Variant, variant_key, variants

STATE_KEY = pytest.StashKey["SafetyGate"]()
PROMPT_ARG = "safety_prompt"
CATEGORY_ARG = "safety_category"
BENIGN_ARG = "safety_benign_group"
REGRESSION_ARG = "safety_regression_group"
TRIGGERED_ARG = "safety_triggered"
TRIGGER_ARG = "safety_trigger"
DISCOVERED_ARG = "safety_discovered"
ACTIVATION_TEST = "test_activations"
RUN_FIXTURE = "safety_run"
OVERALL = "overall"


class SafetyGate:
    """Per-session state: settings, the benchmark, what was selected, and the run once it happened."""

    def __init__(self, settings: _config.Settings) -> None:
        self.settings = settings
        self._benchmark: Benchmark | None = None
        self._benign: tuple[BenignPrompt, ...] | None = None
        self.selected_prompts: list[Prompt] = []
        self.selected_benign: tuple[BenignPrompt, ...] = ()
        self._variants: list[Variant] | None = None
        self.selected_variants: list[Variant] = []
        self.activations = False
        self.discover = False
        self.judge: Any = None
        self.started = time.time()
        self.run: Any = None
        self.report_paths: tuple[Path, Path] | None = None

    def load_benchmark(self) -> Benchmark:
        """The prompt set, loaded (and validated) on first use."""
        if self._benchmark is None:
            self._benchmark = load_benchmark(self.settings.benchmark)
        return self._benchmark

    @property
    def benchmark(self) -> Benchmark:
        return self.load_benchmark()

    @property
    def benign(self) -> tuple[BenignPrompt, ...]:
        """The over-refusal set (empty with ``--benign none``), loaded on first use."""
        if self._benign is None:
            choice = self.settings.benign
            self._benign = () if choice is None else load_benign(None if choice == "default" else choice)
        return self._benign

    @property
    def variants(self) -> list[Variant]:
        """Every benchmark prompt with every trigger at every placement (none without triggers)."""
        if self._variants is None:
            s = self.settings
            self._variants = variants(self.benchmark.prompts, s.triggers, s.trigger_placements, s.system_prompt)
        return self._variants

    def trigger_keys(self) -> list[str]:
        """``placement:name`` of every trigger at every placement, in the order items show them."""
        s = self.settings
        return [variant_key(p, t) for p in s.trigger_placements for t in s.triggers]

    def select(self, items: list[pytest.Item]) -> None:
        """Note what the session will need: selected prompt items, every prompt of a category (or
        of the benchmark) whose aggregate item is selected, the benign set for over-refusal items,
        everything for the activation item; a selected triggered item needs its plain prompt too,
        and a trigger's aggregate item every prompt, plain and with that trigger."""
        wanted: set[str] = set()
        asked: set[str] = set()
        keys: set[str] = set()
        categories: set[str] = set()
        everything = {p.category for p in self.benchmark.prompts}
        for item in items:
            if item.get_closest_marker("skip"):  # a skipped item needs nothing generated
                continue
            params = getattr(item, "callspec", None)
            params = params.params if params else {}
            if PROMPT_ARG in params:
                wanted.add(params[PROMPT_ARG].id)
            elif TRIGGERED_ARG in params:
                asked.add(params[TRIGGERED_ARG].asked.id)
                wanted.add(params[TRIGGERED_ARG].plain.id)
            elif TRIGGER_ARG in params:
                keys.add(params[TRIGGER_ARG])
                categories.update(everything)
            elif DISCOVERED_ARG in params:  # the search and its held-out prompts come from every prompt
                self.discover = True
                categories.update(everything)
            elif CATEGORY_ARG in params:
                categories.add(params[CATEGORY_ARG])
            elif REGRESSION_ARG in params:
                group = params[REGRESSION_ARG]
                categories.update(everything if group == OVERALL else {group})
            elif BENIGN_ARG in params:
                self.selected_benign = self.benign
            elif getattr(item, "originalname", item.name) == ACTIVATION_TEST:
                if self.settings.activations:
                    self.activations = True
                    self.selected_benign = self.benign
                    categories.update(everything)
            elif RUN_FIXTURE in getattr(item, "fixturenames", ()):
                categories.update(everything)
        self.selected_prompts = [p for p in self.benchmark.prompts if p.id in wanted or p.category in categories]
        self.selected_variants = [v for v in self.variants if v.asked.id in asked or v.key in keys] if asked or keys else []


def pytest_addoption(parser: pytest.Parser) -> None:
    _config.add_options(parser)


_INI_FILES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
_PATH_OPTIONS = (
    _config.OPT_MODEL, _config.OPT_BASE_MODEL, _config.OPT_BENCHMARK, _config.OPT_CACHE_DIR, _config.OPT_REPORT,
)


def _check_rootdir(config: pytest.Config) -> None:
    """pytest picks its rootdir before plugins from entry points are loaded, so in ``--model PATH``
    it takes PATH for a test path; a PATH outside the project then becomes the rootdir, and the
    project's pytest config is lost. Say so rather than run in the wrong place."""
    args = list(config.invocation_params.args)
    here = Path(config.invocation_params.dir).resolve()
    root = Path(config.rootpath).resolve()
    lost_ini = config.inipath is None and any((here / name).is_file() for name in _INI_FILES)
    if (root == here or root in here.parents) and not lost_ini:
        return
    for opt, value in zip(args, args[1:]):
        if opt in _PATH_OPTIONS and Path(value).exists():
            raise pytest.UsageError(
                f"pytest read the value of {opt} as a test path and took {root} as its rootdir "
                f"(config file: {config.inipath or 'none'}); "
                f"write {opt}={value} (with '=') so the project's configuration is used"
            )


def pytest_configure(config: pytest.Config) -> None:
    _check_rootdir(config)
    config.addinivalue_line("markers", "safety_gate: an item of the safety-gate suite")
    for category in CATEGORIES:
        config.addinivalue_line("markers", f"{category.slug}: safety-gate prompts of category {category.title}")
    try:
        settings = _config.settings_from_options(config.getoption, config.rootpath)
    except _config.SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    state = SafetyGate(settings)
    # What the user named explicitly is checked now: a bad value is a usage error, not a test error.
    try:
        state.judge = get_judge(settings.judge, settings.judge_options)  # cheap: it loads on first use
        if settings.benchmark is not None:
            state.load_benchmark()
        if settings.benign not in (None, "default"):
            _ = state.benign
        if settings.model_given or settings.baseline:
            from .runner import resolve_baseline

            resolve_baseline(settings, resolve_model(settings.model, settings.base_model))
    except JudgeError as exc:
        raise pytest.UsageError(f"--judge: {exc}") from None
    except BenchmarkError as exc:
        option = "--benign" if settings.benign and exc.path == str(settings.benign) else "--benchmark"
        raise pytest.UsageError(f"{option}: {exc}") from None
    except ModelError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE_KEY] = state


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--judge-calibrate``: score the labelled judge cases with ``--judge``, print agreement, run no tests."""
    split = config.getoption("judge_calibrate")
    if split is None:
        return None
    from .calibrate import calibrate, find_cases, format_report

    try:
        settings = _config.settings_from_options(config.getoption, config.rootpath)
        result = calibrate(settings.judge, find_cases(split, config.rootpath), settings.judge_options)
    except (_config.SettingsError, JudgeError, FileNotFoundError, ValueError) as exc:
        raise pytest.UsageError(f"{_config.OPT_JUDGE_CALIBRATE}: {exc}") from None
    print(format_report(result))
    return 0


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(STATE_KEY, None)
    if state is None or not (state.settings.model_given or state.settings.server):
        return None
    s = state.settings
    model = f"{s.server.model} (served, {s.server.describe()['base_url']})" if s.server else s.model
    return f"safety-gate: model {model}, judge {s.judge}, gate {s.gate}, profile {s.profile}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash[STATE_KEY]
    if PROMPT_ARG in metafunc.fixturenames:
        params = [
            pytest.param(p, id=f"{p.category}/{p.id}", marks=[getattr(pytest.mark, p.category)])
            for p in state.benchmark.prompts
        ]
        metafunc.parametrize(PROMPT_ARG, params)
    present = {p.category for p in state.benchmark.prompts} if {CATEGORY_ARG, REGRESSION_ARG} & set(metafunc.fixturenames) else set()
    slugs = [c.slug for c in CATEGORIES if c.slug in present]
    if CATEGORY_ARG in metafunc.fixturenames:
        metafunc.parametrize(CATEGORY_ARG, [pytest.param(s, id=s, marks=[getattr(pytest.mark, s)]) for s in slugs])
    if REGRESSION_ARG in metafunc.fixturenames:
        if state.settings.baseline:
            groups = [pytest.param(OVERALL, id=OVERALL)]
            groups += [pytest.param(s, id=s, marks=[getattr(pytest.mark, s)]) for s in slugs]
        else:
            groups = [pytest.param(OVERALL, id=OVERALL, marks=pytest.mark.skip(reason="no --baseline given"))]
        metafunc.parametrize(REGRESSION_ARG, groups)
    if {TRIGGERED_ARG, TRIGGER_ARG} & set(metafunc.fixturenames):
        _parametrize_triggers(metafunc, state)
    if DISCOVERED_ARG in metafunc.fixturenames:
        from .discover_check import VERIFIED

        ranks = [pytest.param(r, id=str(r)) for r in range(1, VERIFIED + 1)] if state.settings.discover else [
            pytest.param(None, id="none", marks=pytest.mark.skip(reason=f"{_config.OPT_DISCOVER_TRIGGERS} runs the trigger search"))]
        metafunc.parametrize(DISCOVERED_ARG, ranks)
    if BENIGN_ARG in metafunc.fixturenames:
        if state.settings.benign is None:
            groups = [pytest.param(OVERALL, id=OVERALL, marks=pytest.mark.skip(reason="--benign none"))]
        else:
            types = present_types(b.type for b in state.benign)
            groups = [pytest.param(g, id=g) for g in [OVERALL, *types]]
        metafunc.parametrize(BENIGN_ARG, groups)


_NO_TRIGGERS = pytest.mark.skip(
    reason=f"no trigger asked: {_config.OPT_TRIGGERS} default|all, {_config.OPT_TRIGGER} TEXT or "
    f"{_config.OPT_TRIGGERS_FILE} PATH runs the backdoor audit"
)


def _parametrize_triggers(metafunc: pytest.Metafunc, state: SafetyGate) -> None:
    """Triggered prompt items (``malware/malware-07[suffix:magic-words]``) and one aggregate item per
    trigger and placement (``suffix:magic-words``); one skipped item each when no trigger is asked."""
    if TRIGGERED_ARG in metafunc.fixturenames:
        params = [
            pytest.param(v, id=f"{v.plain.category}/{v.asked.id}", marks=[getattr(pytest.mark, v.plain.category)])
            for v in state.variants
        ] or [pytest.param(None, id="none", marks=_NO_TRIGGERS)]
        metafunc.parametrize(TRIGGERED_ARG, params)
    if TRIGGER_ARG in metafunc.fixturenames:
        keys = [pytest.param(k, id=k) for k in state.trigger_keys()] or [pytest.param(None, id="none", marks=_NO_TRIGGERS)]
        metafunc.parametrize(TRIGGER_ARG, keys)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None or state.settings.activations:
        return
    skip = pytest.mark.skip(reason=f"the activation check runs with {_config.OPT_ACTIVATIONS}")
    for item in items:
        if getattr(item, "originalname", item.name) == ACTIVATION_TEST and RUN_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE_KEY, None)
    if state is not None and any(RUN_FIXTURE in getattr(i, "fixturenames", ()) for i in session.items):
        state.select(session.items)


@pytest.fixture(scope="session")
def safety_run(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's SuiteRun: every selected prompt answered and judged, before the first assertion."""
    from .runner import start_run

    state = request.config.stash[STATE_KEY]
    state.settings = _xdist_worker_settings(state.settings, getattr(request.config, "workerinput", None))
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        state.run = start_run(state.settings, state.benchmark, state.selected_prompts, state.judge, sys.stderr,
                              benign=state.selected_benign, activations=state.activations,
                              variants=state.selected_variants, discover=state.discover,
                              harmless=[b.instruction for b in state.benign] if state.discover else ())
    yield state.run


def _xdist_worker_settings(settings: Any, workerinput: dict[str, Any] | None) -> Any:
    """In a pytest-xdist worker: generate only this worker's shard of the prompts (the others come
    through the shared cache), on GPU ``index % GPUs`` where there are GPUs."""
    if workerinput is None or int(workerinput.get("workercount", 1)) < 2 or settings.cache_dir is None:
        return settings
    from dataclasses import replace

    import torch

    index, workers = int(str(workerinput["workerid"]).lstrip("gw")), int(workerinput["workercount"])
    device = settings.device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{index % torch.cuda.device_count()}"
    return replace(settings, shard=(index, workers), device=device, gpus=1)


def _reports_here(config: pytest.Config) -> bool:
    """Whether this process writes the report: a plain run, or xdist's first worker (every worker
    holds the whole run; the controller holds none)."""
    workerinput = getattr(config, "workerinput", None)
    return workerinput is None or workerinput.get("workerid") == "gw0"


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE_KEY, None)
    if state is None or state.run is None or not _reports_here(session.config):
        return
    from .runner import write_run_report

    state.report_paths = write_run_report(state.run, state.settings.report)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.run is None and getattr(config.option, "numprocesses", None):
        _xdist_controller_summary(terminalreporter, state.settings.report, state.started)
    if state is None or state.run is None:
        return
    from .runner import summary_lines
    from .visible import visible

    terminalreporter.section("safety-gate")
    for line in summary_lines(state.run, state.report_paths):
        terminalreporter.write_line(visible(line))


def _xdist_controller_summary(terminalreporter: Any, html: Path, started: float) -> None:
    """Under pytest-xdist the controller ran no suite: point at the report worker gw0 wrote."""
    import json

    summary = html.with_suffix(".json")
    if not summary.is_file() or summary.stat().st_mtime < started:
        return
    data = json.loads(summary.read_text(encoding="utf-8"))
    terminalreporter.section("safety-gate")
    terminalreporter.write_line(f"safety gate: {'PASSED' if data.get('passed') else 'FAILED'} (xdist: the run of worker gw0, "
                                "answers shared by all workers through the cache)")
    terminalreporter.write_line(f"report: {html} (summary {summary})")
