"""Generate once, judge once: every selected prompt is answered and scored before any test asserts.

Answers and verdicts come from the cache where their keys match; only the rest reaches the model
(loaded lazily: a fully cached run imports no model at all) and the judge. Each batch is written to
the cache as soon as it is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Sequence

from .benchmark import Prompt
from .cache import Cache, answer_key, verdict_key
from .config import Settings
from .judges import Case, Judge, Verdict, cache_identity
from .models import ModelError, ModelSpec, fingerprint, load_model, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from .openai_engine import OpenAIEngine

__all__ = ["Result", "RunInfo", "answer", "run", "system_prompt"]

_JUDGE_CHUNK = 64
_STALL_SECONDS = 900.0  # an xdist worker gives up waiting for the others' answers after this long without one
_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Result:
    """One prompt's answer (None if generation failed) and its verdict (an error verdict if none)."""

    prompt: Prompt
    answer: str | None
    verdict: Verdict


@dataclass
class RunInfo:
    """What the run did, for the terminal and the report."""

    fingerprint: str = ""
    device: str = ""
    dtype: str = ""
    engine: str = ""
    batch_size: int | None = None
    answers_cached: int = 0
    answers_generated: int = 0
    new_tokens: int = 0
    generate_seconds: float = 0.0
    load_seconds: float = 0.0
    verdicts_cached: int = 0
    verdicts_judged: int = 0
    judge_seconds: float = 0.0
    judge_stats: dict[str, Any] = field(default_factory=dict)
    engine_stats: dict[str, Any] = field(default_factory=dict)  # a server engine's requests, retries, errors, tokens
    # Why ``answer()``'s prompts at these positions got no answer (a server's request failed for good).
    no_answer: dict[int, str] = field(default_factory=dict)
    # Answers to ``run(also_answer=...)``'s prompts, in order (None where none was generated).
    also_answered: list[str | None] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (without the answers)."""
        return {k: v for k, v in vars(self).items() if k not in ("also_answered", "no_answer")}


def _bar(stream: IO[str] | None, total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    # On a terminal the bar redraws in place; in a CI log each redraw is a new line, so draw rarely.
    tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
    return tqdm(
        total=total, desc=desc, unit=unit, file=stream, disable=stream is None, leave=True,
        dynamic_ncols=True, mininterval=0.5 if tty else 15.0,
    )


def system_prompt(settings: Settings, prompt: Prompt) -> str | None:
    """The system prompt ``prompt`` is asked with: its own where it has one, else ``--system-prompt``."""
    return prompt.system if prompt.system is not None else settings.system_prompt


def _load_local(settings: Settings, spec: ModelSpec, info: RunInfo) -> tuple[Any, int | None]:
    """The local engine with its model loaded (``--engine hf``: transformers generate; auto: the
    static engine where it applies; ``--gpus N``: worker processes that load their own), and its
    batch size (None: the engine's automatic size)."""
    if settings.gpus > 1:
        from .shards import ShardedEngine, ShardError, devices_for

        try:
            devices = devices_for(info.device, settings.gpus)
        except ShardError as exc:
            raise ModelError(str(exc)) from None
        info.engine = f"{settings.engine} x {len(devices)} processes ({', '.join(devices)})"
        return ShardedEngine(spec, settings, devices), settings.batch_size
    import torch

    from .engine import HFEngine
    from .static_engine import choose_engine

    started = time.perf_counter()
    model, tokenizer = load_model(spec, info.device, settings.dtype, settings.cache_dir / "models" if settings.cache_dir else None)
    info.load_seconds = time.perf_counter() - started
    engine = HFEngine(model, tokenizer, info.device) if settings.engine == "hf" else choose_engine(model, tokenizer, info.device)
    info.engine = type(engine).__name__
    torch.manual_seed(settings.seed)
    return engine, settings.batch_size


def _generate(
    settings: Settings, spec: ModelSpec, prompts: Sequence[Prompt], keys: list[str], cache: Cache,
    info: RunInfo, stream: IO[str] | None, server: OpenAIEngine | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Generate answers for ``prompts`` (none cached), storing each batch; returns key -> answer and
    key -> why no answer came (a ``server`` engine's prompts that failed for good)."""
    engine, batch_size = (server, server.concurrency) if server is not None else _load_local(settings, spec, info)
    texts = [engine.render(p.instruction, system_prompt(settings, p)) for p in prompts]
    answers: dict[str, str] = {}
    failures: dict[str, str] = {}
    bar = _bar(stream, len(prompts) * settings.max_new_tokens, f"safety-gate: generating {len(prompts)} answers", "tok")

    def on_batch(indices: list[int], batch: list[Any]) -> None:
        rows = [(keys[i], a.text, a.n_tokens, a.finish) for i, a in zip(indices, batch)]
        cache.put_answers(rows)
        for i, a in zip(indices, batch):
            answers[keys[i]] = a.text
            info.new_tokens += a.n_tokens
        info.answers_generated += len(indices)
        advance()

    def on_error(index: int, reason: str) -> None:  # a server's prompt that failed for good: nothing to store
        failures[keys[index]] = reason
        advance()

    def advance() -> None:
        bar.n = (len(answers) + len(failures)) * settings.max_new_tokens
        bar.refresh()

    started = time.perf_counter()
    try:
        if server is not None:
            server.generate(texts, settings.max_new_tokens, batch_size, on_batch, on_error=on_error)
        else:
            engine.generate(texts, settings.max_new_tokens, batch_size, on_batch, on_step=bar.update)
    finally:
        bar.close()
        info.batch_size = batch_size if server is not None else max(engine.batch_sizes, default=batch_size)
        info.generate_seconds = time.perf_counter() - started
        if server is not None:
            info.engine_stats = server.stats()
    return answers, failures


def _judge(
    judge: Judge, cases: list[tuple[str, Case]], cache: Cache, info: RunInfo, stream: IO[str] | None
) -> dict[str, Verdict]:
    """Score ``cases`` (key, case) in chunks, storing each chunk; a failing chunk becomes error verdicts."""
    verdicts: dict[str, Verdict] = {}
    started = time.perf_counter()
    bar = _bar(stream if len(cases) > _JUDGE_CHUNK else None, len(cases), f"safety-gate: judging ({judge.name})", "ans")
    try:
        for start in range(0, len(cases), _JUDGE_CHUNK):
            chunk = cases[start : start + _JUDGE_CHUNK]
            try:
                got = judge.judge([case for _, case in chunk])
                if len(got) != len(chunk):
                    raise RuntimeError(f"returned {len(got)} verdicts for {len(chunk)} answers")
            except Exception as exc:  # a judge failure is an error verdict, never a pass
                got = [Verdict(None, "", error=f"judge {judge.name!r} failed: {exc}")] * len(chunk)
            pairs = [(key, verdict) for (key, _), verdict in zip(chunk, got)]
            cache.put_verdicts(pairs)
            verdicts.update(pairs)
            info.verdicts_judged += len(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
        info.judge_seconds = time.perf_counter() - started
        stats = getattr(judge, "stats", None)
        info.judge_stats = dict(stats()) if callable(stats) else {}
    return verdicts


def answer(
    settings: Settings, spec: ModelSpec, prompts: Sequence[Prompt], cache: Cache, info: RunInfo,
    stream: IO[str] | None = None,
) -> list[str | None]:
    """Answers to ``prompts`` in order (None where none was generated): cached ones read, the rest
    generated and stored batch by batch. Fills ``info``'s model and generation fields."""
    server: OpenAIEngine | None = None
    if settings.server is not None:
        from .openai_engine import OpenAIEngine

        server = OpenAIEngine(settings.server)
        info.fingerprint, info.device, info.dtype = server.fingerprint(), server.endpoint, "served"
        gen = server.generation_key(settings.max_new_tokens)
    else:
        info.fingerprint = fingerprint(spec, cache.file_hash)
        info.device = resolve_device(settings.device)
        info.dtype = resolve_dtype(settings.dtype, info.device)
        gen = settings.generation_key(info.device, info.dtype)
    keys = [answer_key(info.fingerprint, p.instruction, system_prompt(settings, p), gen) for p in prompts]
    answers = cache.get_answers(keys)
    info.answers_cached = sum(1 for k in keys if k in answers)
    todo = [(p, k) for p, k in zip(prompts, keys) if k not in answers]
    unique = list({k: p for p, k in todo}.items())  # the same instruction twice is generated once
    others: list[str] = []
    if settings.shard is not None and server is None and unique:
        unique, others = _own_shard(unique, *settings.shard)
    if unique:
        new, failures = _generate(
            settings, spec, [p for _, p in unique], [k for k, _ in unique], cache, info, stream, server
        )
        answers.update(new)
        info.no_answer = {i: failures[k] for i, k in enumerate(keys) if k in failures}
    if others:
        answers.update(_await_answers(cache, others, settings.shard))
    return [answers.get(k) for k in keys]


def _own_shard(
    unique: list[tuple[str, Prompt]], index: int, workers: int
) -> tuple[list[tuple[str, Prompt]], list[str]]:
    """This xdist worker's share of the prompts to generate (dealt as shards.deal does, the same
    in every worker since they collect the same items), and the keys the other workers generate."""
    from .shards import deal

    dealt = deal([len(p.instruction) for _, p in unique], workers)
    mine = set(dealt[index]) if index < len(dealt) else set()
    return [u for i, u in enumerate(unique) if i in mine], [k for i, (k, _) in enumerate(unique) if i not in mine]


def _await_answers(cache: Cache, keys: list[str], shard: tuple[int, int] | None) -> dict[str, str]:
    """Wait for the answers other xdist workers are generating into the shared cache; an error
    naming how many are missing when none arrives for ``_STALL_SECONDS``."""
    got: dict[str, str] = {}
    last = time.monotonic()
    while len(got) < len(keys):
        new = cache.get_answers([k for k in keys if k not in got])
        if new:
            got.update(new)
            last = time.monotonic()
        elif time.monotonic() - last > _STALL_SECONDS:
            raise ModelError(f"xdist worker {shard}: waited {_STALL_SECONDS:.0f} s for {len(keys) - len(got)} answers "
                             "the other workers generate, and none came (did a worker fail? its output says why)")
        else:
            time.sleep(_POLL_SECONDS)
    return got


def run(
    settings: Settings, spec: ModelSpec, prompts: Sequence[Prompt], cache: Cache, judge: Judge,
    stream: IO[str] | None = None, also_answer: Sequence[Prompt] = (),
) -> tuple[dict[str, Result], RunInfo]:
    """Answer and score ``prompts``; returns results by prompt id and what was done.

    ``also_answer`` prompts (the benign set) are answered in the same generation pass, not judged;
    their answers are in ``info.also_answered``."""
    info = RunInfo()
    answers = answer(settings, spec, [*prompts, *also_answer], cache, info, stream)
    info.also_answered = answers[len(prompts) :]
    answers = answers[: len(prompts)]
    vkeys = [
        verdict_key(a, p.instruction, p.category, judge.name, cache_identity(judge)) if a is not None else None
        for p, a in zip(prompts, answers)
    ]
    verdicts = cache.get_verdicts(v for v in vkeys if v)
    info.verdicts_cached = len(verdicts)
    pending = {
        vk: Case(p.instruction, a, p.category)
        for p, a, vk in zip(prompts, answers, vkeys)
        if vk and a is not None and vk not in verdicts
    }
    if pending:
        verdicts.update(_judge(judge, list(pending.items()), cache, info, stream))
    results: dict[str, Result] = {}
    for i, (p, a, vk) in enumerate(zip(prompts, answers, vkeys)):
        if vk is None or a is None:
            why = info.no_answer.get(i)
            error = f"no answer was generated: {why}" if why else "no answer was generated"
            results[p.id] = Result(p, None, Verdict(None, "", error=error))
        else:
            results[p.id] = Result(p, a, verdicts[vk])
    return results, info
