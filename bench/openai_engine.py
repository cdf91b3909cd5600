"""Benchmark: the 330 benchmark prompts generated through OpenAIEngine (--engine openai) against a
local chat-completions server with a fixed latency.

Starts tests/openai_server.py's FakeOpenAI on 127.0.0.1 (each request waits ``--latency`` seconds
before its reply, as a served model would while it generates; the fake server does not slow down
under load the way a real one does, so this measures the client: concurrency, connection reuse,
and storing answers as they arrive), and generates an answer for every instruction of the
embedded benchmark:

  1. the engine alone at ``--concurrency`` requests in flight (default 16);
  2. the pipeline's ``answer()`` at the same concurrency, each answer written to a fresh SQLite
     cache as it arrives (what ``pytest --engine=openai`` does), then once more, all cached;
  3. the engine at concurrency 1, for comparison.

Prints wall time, answers/s and the engine's stats for each, and checks every answer. Usage:

    python bench/openai_engine.py [--latency 0.1] [--concurrency 16] [--skip-serial]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "tests")]

from openai_server import FakeOpenAI, default_answer  # noqa: E402  (tests/openai_server.py)
from safety_gate.benchmark import load_embedded  # noqa: E402
from safety_gate.cache import Cache  # noqa: E402
from safety_gate.config import settings_from_options  # noqa: E402
from safety_gate.openai_engine import OpenAIEngine, ServerOptions  # noqa: E402
from safety_gate.pipeline import RunInfo, answer  # noqa: E402

MAX_NEW_TOKENS = 128


def check(answers: list[Any], instructions: list[str]) -> None:
    """Every answer is the server's answer to its own instruction."""
    want = [default_answer([{"role": "user", "content": text}]) for text in instructions]
    got = [a.text if hasattr(a, "text") else a for a in answers]
    if got != want:
        bad = sum(1 for a, b in zip(got, want) if a != b)
        raise SystemExit(f"{bad} of {len(want)} answers differ from the server's")


def engine_run(server: FakeOpenAI, instructions: list[str], concurrency: int) -> tuple[float, dict[str, int]]:
    """The engine alone; returns (wall seconds, stats)."""
    engine = OpenAIEngine(ServerOptions("bench-model", base_url=server.base_url, concurrency=concurrency, timeout=30.0))
    prompts = [engine.render(text, None) for text in instructions]
    started = time.perf_counter()
    answers = engine.generate(prompts, MAX_NEW_TOKENS, concurrency, lambda indices, batch: None)
    wall = time.perf_counter() - started
    check(answers, instructions)
    return wall, engine.stats()


def pipeline_run(server: FakeOpenAI, cache_dir: Path, concurrency: int) -> tuple[float, RunInfo, list[str | None]]:
    """``pipeline.answer`` with a SQLite cache in ``cache_dir``; returns (wall seconds, info, answers)."""
    values = {"engine": "openai", "engine_model": "bench-model", "engine_base_url": server.base_url,
              "engine_concurrency": concurrency, "engine_timeout": 30.0, "engine_retries": 4,
              "max_new_tokens": MAX_NEW_TOKENS, "seed": 0, "judge": "rules", "gate": "items", "device": "auto",
              "dtype": "auto", "cache_dir": str(cache_dir)}
    settings = settings_from_options(lambda name: values.get(name), cache_dir)
    cache = Cache(settings.cache_dir)
    info = RunInfo()
    started = time.perf_counter()
    try:
        answers = answer(settings, None, load_embedded().prompts, cache, info)  # type: ignore[arg-type]
    finally:
        cache.close()
    return time.perf_counter() - started, info, answers


def report(label: str, n: int, wall: float, stats: dict[str, int], server: FakeOpenAI) -> None:
    print(f"{label:<44} {wall:6.2f} s  {n / wall:7.1f} answers/s  server peak in flight {server.max_in_flight}")
    if stats:
        print(f"{'':<44} stats: " + ", ".join(f"{k} {v}" for k, v in stats.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.1, help="server seconds per request (default 0.1)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-serial", action="store_true", help="leave out the concurrency-1 run")
    opts = parser.parse_args()
    instructions = [p.instruction for p in load_embedded().prompts]
    n = len(instructions)
    print(f"{n} prompts, server latency {opts.latency * 1000:.0f} ms per request; "
          f"ideal at concurrency {opts.concurrency}: {-(-n // opts.concurrency) * opts.latency:.2f} s, "
          f"at concurrency 1: {n * opts.latency:.2f} s")
    with FakeOpenAI(latency=opts.latency, record=False) as server, tempfile.TemporaryDirectory() as tmp:
        wall, stats = engine_run(server, instructions, opts.concurrency)
        report(f"engine, concurrency {opts.concurrency}", n, wall, stats, server)
        server.reset()
        wall, info, answers = pipeline_run(server, Path(tmp), opts.concurrency)
        check(answers, instructions)
        report(f"pipeline + SQLite cache, concurrency {opts.concurrency}", n, wall, info.engine_stats, server)
        server.reset()
        wall, info, answers = pipeline_run(server, Path(tmp), opts.concurrency)
        check(answers, instructions)
        if info.answers_cached != n or server.max_in_flight:
            raise SystemExit(f"the rerun was not fully cached: {info.answers_cached} cached, "
                             f"{info.answers_generated} generated")
        report("pipeline rerun, all cached (no request)", n, wall, {}, server)
        if not opts.skip_serial:
            server.reset()
            wall, stats = engine_run(server, instructions, 1)
            report("engine, concurrency 1", n, wall, stats, server)


if __name__ == "__main__":
    main()
