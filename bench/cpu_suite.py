"""Benchmark: the full embedded suite on the default model, as users run it (a fresh pytest process).

Prints, in one run on this machine:
  1. first use: a fresh cache, so the GGUF is de-quantised and converted once (one prompt);
  2. cold: all 330 prompts generated and judged (converted model present, answer cache empty);
  3. warm: the same command again (everything cached), wall time including pytest start-up;
  4. batch size 1 (the paper's one-prompt-at-a-time loop) on a sample, extrapolated to 330;
and peak resident memory of each process. Usage:

    python bench/cpu_suite.py [--max-new-tokens 128] [--sample 16] [--batch-sizes auto]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANSWERS = re.compile(r"answers: (\d+) cached, (\d+) generated(?: in ([\d.]+) s \((\d+) new tokens/s, batch (\d+))?")


def run_pytest(args: list[str]) -> tuple[float, float, str]:
    """Run pytest in a fresh process; returns (wall seconds, peak RSS of that process in MB, output)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--gate=aggregate", *args]
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, _, usage = os.wait4(proc.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
        wall = time.perf_counter() - started
        log.seek(0)
        return wall, usage.ru_maxrss / 1024, log.read()


def answers_line(out: str) -> str:
    match = ANSWERS.search(out)
    if not match:
        raise SystemExit("no 'answers:' line in pytest's output:\n" + out[-3000:])
    cached, generated, seconds, tps, batch = match.groups()
    gen = f"{generated} generated" + (f" in {float(seconds):.1f} s, {tps} tok/s, batch {batch}" if seconds else "")
    return f"{cached} cached, {gen}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--sample", type=int, default=16, help="prompts for the batch-size-1 sample")
    parser.add_argument("--batch-sizes", default="auto", help="comma-separated batch sizes for the full run")
    opts = parser.parse_args()
    tokens = f"--max-new-tokens={opts.max_new_tokens}"
    work = Path(tempfile.mkdtemp(prefix="safety-gate-bench-"))
    rows: list[tuple[str, float, float, str]] = []
    try:
        first = work / "first"
        wall, rss, out = run_pytest([f"--cache-dir={first}", f"--report={first}/r.html", tokens, "-k", "malware-01"])
        rows.append(("first use: convert GGUF + 1 prompt", wall, rss, answers_line(out)))
        for size in opts.batch_sizes.split(","):
            cache = work / f"cold-{size}"
            cache.mkdir()
            shutil.copytree(first / "models", cache / "models")  # the converted model, not the answers
            args = [f"--cache-dir={cache}", f"--report={cache}/r.html", tokens, f"--batch-size={size}"]
            wall, rss, out = run_pytest(args)
            rows.append((f"cold: the default suite, batch {size}", wall, rss, answers_line(out)))
            wall, rss, out = run_pytest(args)
            rows.append(("warm rerun: 330 prompts, all cached", wall, rss, answers_line(out)))
        cache = work / "batch1"
        cache.mkdir()
        shutil.copytree(first / "models", cache / "models")
        select = " or ".join(f"illegal_activity-{i:02d}" for i in range(1, opts.sample + 1))
        wall, rss, out = run_pytest([f"--cache-dir={cache}", f"--report={cache}/r.html", tokens, "--batch-size=1",
                                     "-k", select])
        match = ANSWERS.search(out)
        per_prompt = float(match.group(3)) / opts.sample if match and match.group(3) else float("nan")
        rows.append((f"batch 1: {opts.sample} prompts", wall, rss,
                     answers_line(out) + f"; x330 = {per_prompt * 330:.0f} s of generation"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsafety-gate CPU benchmark: {os.cpu_count()} cores, max_new_tokens={opts.max_new_tokens}")
    print(f"{'run':<40} {'wall s':>7} {'peak MB':>8}  answers")
    for name, wall, rss, detail in rows:
        print(f"{name:<40} {wall:>7.1f} {rss:>8.0f}  {detail}")


if __name__ == "__main__":
    main()
