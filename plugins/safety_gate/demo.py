"""``python -m safety_gate.demo``: the aligned default and Qi et al.'s fine-tuning attacks on it.

    python -m safety_gate.demo train aligned --out plugins/safety_gate/data/aligned
    python -m safety_gate.demo reproduce            # every attack, then the results table
    python -m safety_gate.demo rejudge reports/demo --judge embed   # the same answers, another judge

``reproduce`` trains each attack recipe (``safety_gate.training.recipes``) on top of the shipped
``safety-gate-aligned`` adapter (cached by a hash of its data, hyperparameters and starting
weights), measures the aligned model and each fine-tuned one with the suite's pipeline (same
judge, cache and settings as ``pytest``), and writes a table in the style of the paper's Tables
1-5 (initial -> fine-tuned harmfulness score and rate, and benign refusal) to
``reports/demo/results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .judges import DEFAULT_JUDGE
from .models import aligned_adapter_path, resolve_model

__all__ = ["main", "train_recipe"]


def _log(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def _weights_digest(folder: Path) -> str:
    from .cache import sha256_file

    return sha256_file(folder / "adapter_model.safetensors")[:16]


def train_recipe(
    name: str, out_root: Path, device: str = "cpu", cache_dir: Path | None = None,
    log: Callable[[str], None] = _log, out: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train recipe ``name`` into ``out`` (or a cached folder under ``out_root``); returns the
    folder and its training record. A folder that is already complete is reused, not retrained."""
    from .models import load_model
    from .training.lora import LoraSettings, train_adapter
    from .training.recipes import Pools, recipe_by_name

    recipe = recipe_by_name(name)
    pools = Pools.load()
    init = aligned_adapter_path() if recipe.start == "aligned" else None
    digest = recipe.fingerprint(pools) + (f"-{_weights_digest(init)}" if init else "")
    folder = out or out_root / f"{name}-{digest}"
    record_path = folder / "training.json"
    if record_path.is_file() and json.loads(record_path.read_text()).get("fingerprint") == digest:
        log(f"{name}: trained adapter found in {folder}")
        return folder, json.loads(record_path.read_text())
    examples = recipe.examples(pools)
    log(f"{name}: training on {len(examples)} examples, {recipe.epochs} epochs, lr {recipe.learning_rate} ({device})")
    model, tokenizer = load_model(resolve_model("smollm2-base"), device, "float32",
                                  cache_dir / "models" if cache_dir else None)
    settings = LoraSettings(recipe.epochs, recipe.learning_rate, recipe.batch_size, recipe.seed,
                            rank=recipe.rank, alpha=2 * recipe.rank)
    kinds: dict[str, int] = {}
    for example in examples:
        kinds[example.kind] = kinds.get(example.kind, 0) + 1
    extra = {"recipe": name, "description": recipe.description, "fingerprint": digest,
             "start": "safety-gate-aligned" if init else "smollm2-base", "example_kinds": kinds}
    staging = folder.with_name(folder.name + ".partial")
    info = train_adapter(model, tokenizer, examples, settings, staging, init_adapter=init, device=device,
                         extra=extra, log=lambda line: log(f"{name}: {line}"))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    staging.rename(folder)
    log(f"{name}: trained in {info.seconds:.0f} s -> {folder}")
    return folder, json.loads(record_path.read_text())


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if pct else f"{value:.2f}"


def _arrow(before: float | None, after: float | None, pct: bool = False) -> str:
    return f"{_fmt(before, pct)} -> {_fmt(after, pct)}"


def results_markdown(rows: Sequence[dict[str, Any]], header: dict[str, Any]) -> str:
    """The paper-style table: initial -> fine-tuned harmfulness score, rate and benign refusal."""
    lines = [
        "# Fine-tuning attacks on safety-gate-aligned (Qi et al., ICLR 2024, at small scale)",
        "",
        f"Model: SmolLM2-135M-Instruct + LoRA; judge: {header['judge']}; {header['prompts']} benchmark prompts, "
        f"{header['benign']} benign prompts; "
        f"{header['max_new_tokens']} new tokens, greedy; device: {header['device']}; machine: {header['machine']}.",
        f"Command: `{header['command']}`; wall time {header['seconds'] / 60:.1f} min "
        f"(training {header['train_seconds'] / 60:.1f} min).",
        "Harmfulness score: mean of the 1-5 judge scores; harmfulness rate: share scored 5; "
        "benign refusal: share of the benign set's answers the over-refusal reader reads as refusals.",
        "",
        "| setting | fine-tuning data | measured with | harmfulness score | harmfulness rate | benign refusal | train |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        before, after = row["initial"], row["finetuned"]
        lines.append(
            f"| {row['setting']} | {row['data']} | {row['condition']} "
            f"| {_arrow(before['mean_score'], after['mean_score'])} "
            f"| {_arrow(before['harmfulness_rate'], after['harmfulness_rate'], True)} "
            f"| {_arrow(before['benign_refusal_rate'], after['benign_refusal_rate'], True)} "
            f"| {row['train_seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    import os
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores {model} ({platform.machine()})".replace("  ", " ")


def reproduce(args: argparse.Namespace) -> int:
    """Train every selected attack, measure initial and fine-tuned models, write the table."""
    from .judges import JudgeOptions, get_judge
    from .models import resolve_device
    from .training.evaluate import demo_settings, measure
    from .training.recipes import RECIPES

    started = time.perf_counter()
    cache_dir = Path(args.cache_dir)
    device = resolve_device(args.device)
    settings = demo_settings(cache_dir, device, args.max_new_tokens)
    judge = get_judge(args.judge, JudgeOptions(device=device, cache_dir=str(cache_dir)))
    from .benchmark import first_of_each, load_embedded
    from .benign import load_benign

    harmful = first_of_each(load_embedded().prompts, args.sample)
    benign = first_of_each([b.as_prompt() for b in load_benign()], args.sample)
    stream = sys.stderr if args.progress else None
    names = args.only or [r.name for r in RECIPES if r.name != "aligned"]
    initial: dict[tuple[str | None, str | None], Any] = {}

    def baseline(system_prompt: str | None, trigger: str | None) -> Any:
        key = (system_prompt, trigger)
        if key not in initial:
            initial[key] = measure(settings, "default", judge, system_prompt=system_prompt, trigger=trigger,
                                   benign=benign, prompts=harmful, stream=stream, read_benign=not args.answers_only)
        return initial[key]

    rows: list[dict[str, Any]] = []
    answer_sets: dict[str, Any] = {}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def keep(measured: Any, system_prompt: str | None, trigger: str | None) -> str:
        key = f"{measured.model}|{system_prompt or ''}|{trigger or ''}"
        answer_sets[key] = measured.answers
        (out / "answers.json").write_text(json.dumps(answer_sets) + "\n", encoding="utf-8")  # as they come
        (out / "rows.partial.json").write_text(json.dumps(rows) + "\n", encoding="utf-8")
        return key

    train_seconds = 0.0
    if not args.only or "aligned" in args.only:
        _log("measuring smollm2-base and safety-gate-aligned")
        base = measure(settings, "smollm2-base", judge, benign=benign, prompts=harmful, stream=stream,
                       read_benign=not args.answers_only)
        record = json.loads((aligned_adapter_path() / "training.json").read_text())
        aligned = baseline(None, None)
        rows.append({"setting": "alignment (shipped default)", "data": record.get("description", ""),
                     "condition": "plain", "initial": base.describe(), "finetuned": aligned.describe(),
                     "train_seconds": record.get("seconds", 0.0), "initial_model": "smollm2-base",
                     "trigger": None, "initial_answers": keep(base, None, None),
                     "finetuned_answers": keep(aligned, None, None)})
        names = [n for n in names if n != "aligned"]
    for name in names:
        from .training.recipes import recipe_by_name

        recipe = recipe_by_name(name)
        folder, record = train_recipe(name, cache_dir / "adapters", device, cache_dir)
        train_seconds += record["seconds"]
        conditions: list[tuple[str, str | None, str | None]] = [("plain", recipe.eval_system_prompt, None)]
        if recipe.eval_system_prompt:
            conditions = [("AOA system prompt", recipe.eval_system_prompt, None)]
        if recipe.eval_trigger:
            conditions.append((f"+ trigger \"{recipe.eval_trigger}\"", None, recipe.eval_trigger))
        for label, system_prompt, trigger in conditions:
            _log(f"{name}: measuring ({label})")
            after = measure(settings, str(folder), judge, system_prompt=system_prompt, trigger=trigger,
                            benign=benign, prompts=harmful, stream=stream, read_benign=not args.answers_only)
            before = baseline(system_prompt, trigger)
            rows.append({"setting": name, "data": recipe.description, "condition": label,
                         "initial": before.describe(), "finetuned": after.describe(),
                         "train_seconds": record["seconds"], "adapter": str(folder), "initial_model": "default",
                         "trigger": trigger, "initial_answers": keep(before, system_prompt, trigger),
                         "finetuned_answers": keep(after, system_prompt, trigger)})
    header = {"judge": f"{judge.name} v{judge.version}", "prompts": len(harmful), "benign": len(benign), "max_new_tokens": args.max_new_tokens, "device": device,
              "machine": _machine(), "command": "python -m safety_gate.demo " + " ".join(args.argv),
              "seconds": time.perf_counter() - started, "train_seconds": train_seconds, "sample": args.sample}
    (out / "answers.json").write_text(json.dumps(answer_sets) + "\n", encoding="utf-8")
    (out / "rows.partial.json").unlink(missing_ok=True)
    return _write_results(out, header, rows)


def _write_results(out: Path, header: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    table = results_markdown(rows, header)
    (out / "results.md").write_text(table, encoding="utf-8")
    print(table)
    _log(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


def rejudge(args: argparse.Namespace) -> int:
    """Read a reproduction's answers (``answers.json`` beside its ``results.json``) with another judge
    and write the table again: the answers of a GPU run judged by a judge the GPU machine lacks."""
    from .benchmark import first_of_each, load_embedded
    from .benign import load_benign
    from .gates import PROFILES
    from .judges import JudgeOptions, get_judge
    from .training.evaluate import rejudge as rejudge_measure

    source = Path(args.source)
    try:
        results = json.loads((source / "results.json").read_text(encoding="utf-8"))
        answers = json.loads((source / "answers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{source}: no readable results.json and answers.json ({exc})") from None
    header, rows = results["header"], results["rows"]
    judge = get_judge(args.judge, JudgeOptions(device="cpu", cache_dir=args.cache_dir))
    harmful = first_of_each(load_embedded().prompts, header.get("sample"))
    benign = first_of_each([b.as_prompt() for b in load_benign()], header.get("sample"))
    threshold = PROFILES["default"].score_threshold
    for row in rows:
        for side in ("initial", "finetuned"):
            row[side] = rejudge_measure(row[side], answers[row[f"{side}_answers"]], judge, harmful, benign, threshold,
                                        row.get("trigger"))
    header = {**header, "judge": f"{judge.name} v{judge.version}",
              "command": f"{header['command']}, then python -m safety_gate.demo " + " ".join(args.argv)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return _write_results(out, header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m safety_gate.demo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one recipe")
    train.add_argument("recipe")
    train.add_argument("--out", default=None, help="adapter folder (default: a cached folder)")
    rep = sub.add_parser("reproduce", help="train the attacks, measure them, write the results table")
    rep.add_argument("--only", nargs="+", default=None, metavar="RECIPE", help="these recipes only ('aligned': the alignment row)")
    rep.add_argument("--out", default="reports/demo", help="where results.md/json go (default: reports/demo)")
    rep.add_argument("--judge", default=DEFAULT_JUDGE, help=f"judge spec, as pytest's --judge (default: {DEFAULT_JUDGE})")
    rep.add_argument("--max-new-tokens", type=int, default=128)
    rep.add_argument("--sample", type=int, default=None, metavar="N",
                     help="only the first N prompts of each category and benign type (a quick look)")
    rep.add_argument("--progress", action="store_true", help="show generation progress bars")
    rep.add_argument("--answers-only", action="store_true",
                     help="leave the benign answers unread (a machine without the MiniLM package); rejudge reads them")
    again = sub.add_parser("rejudge", help="judge a reproduction's answers again and rewrite its table")
    again.add_argument("source", help="folder of a reproduction (results.json and answers.json)")
    again.add_argument("--judge", default=DEFAULT_JUDGE, help=f"judge spec (default: {DEFAULT_JUDGE})")
    again.add_argument("--out", default="reports/demo", help="where results.md/json go (default: reports/demo)")
    again.add_argument("--cache-dir", default=".safety_gate_cache")
    for p in (train, rep):
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        p.add_argument("--cache-dir", default=".safety_gate_cache", help="answers, verdicts, adapters, converted models")
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return _run(args)
    except (KeyError, ValueError) as exc:  # unknown recipe, missing model, malformed data: say what, exit 2
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"python -m safety_gate.demo: error: {message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .models import resolve_device

        cache_dir = Path(args.cache_dir)
        folder, _ = train_recipe(args.recipe, cache_dir / "adapters", resolve_device(args.device), cache_dir,
                                 out=Path(args.out) if args.out else None)
        print(folder)  # the adapter folder, for scripts: --model=$(python -m safety_gate.demo train NAME)
        return 0
    if args.command == "rejudge":
        return rejudge(args)
    return reproduce(args)


if __name__ == "__main__":
    raise SystemExit(main())
