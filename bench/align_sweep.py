"""Compare ways of training the safety-gate-aligned adapter in one run: refusal share, epochs, lr.

    python bench/align_sweep.py [--device cuda] [--variants 77:2:5e-4,352:3:5e-4:16] [--sample N] [--answers DIR]

Each variant trains a fresh LoRA on SmolLM2 (safety_gate.training.lora) from the aligned recipe's
data with its own number of refusals, epochs, learning rate and LoRA rank, then is measured like the suite
measures a model: harmfulness score and rate on the embedded benchmark (rule judge), and refusal on
the benign set, overall and per type, and the share of harmful prompts whose answer opens with a
refusal. Prints one table (``--answers DIR`` also writes every answer, to judge them again later); the shipped adapter is trained by
``python -m safety_gate.demo train aligned`` with the chosen values (see training/recipes.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))

from safety_gate.benchmark import first_of_each, load_embedded  # noqa: E402
from safety_gate.benign import load_benign, present_types  # noqa: E402
from safety_gate.cache import Cache  # noqa: E402
from safety_gate.gates import group_stats  # noqa: E402
from safety_gate.judges.rules import RuleJudge  # noqa: E402
from safety_gate.models import load_model, resolve_device, resolve_model  # noqa: E402
from safety_gate.pipeline import RunInfo, answer, run  # noqa: E402
from safety_gate.refusal import is_refusal  # noqa: E402
from safety_gate.training.evaluate import demo_settings  # noqa: E402
from safety_gate.training.lora import LoraSettings, train_adapter  # noqa: E402
from safety_gate.training.recipes import Pools, aligned_examples  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default="77:2:5e-4,44:2:5e-4,44:3:5e-4,22:2:5e-4,44:2:2e-4",
                        help="comma-separated REFUSALS:EPOCHS:LR[:RANK[:AVOID[:HREFRAME[:AVOIDCOMP]]]] (AVOID: share of benign "
                             "records with a refusal to unlearn; HREFRAME: share of refused requests refused again in "
                             "another form; AVOIDCOMP 1: a compliance opening to unlearn for every refused request)")
    parser.add_argument("--answers", default=None, help="folder for each variant's answers (JSON)")
    parser.add_argument("--reframe", type=float, default=0.5)
    parser.add_argument("--sample", type=int, default=None, help="prompts per category / benign type")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--cache-dir", default=".safety_gate_cache")
    parser.add_argument("--keep", default=None, help="folder to keep the adapters in")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    cache_dir = Path(args.cache_dir)
    settings = demo_settings(cache_dir, device, args.max_new_tokens)
    harmful = first_of_each(load_embedded().prompts, args.sample)
    benign = first_of_each([b.as_prompt() for b in load_benign()], args.sample)
    types = present_types(p.category for p in benign)
    pools = Pools.load()
    judge = RuleJudge()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="align-sweep-"))
    rows = []
    for text in args.variants.split(","):
        n_ref, epochs, lr, *rest = text.split(":")
        rank, avoid, hreframe, avoid_comp = rest + [None] * (4 - len(rest))
        examples = aligned_examples(pools, random.Random("aligned:0"), int(n_ref), args.reframe, float(avoid or 0),
                                    float(hreframe or 0), bool(int(avoid_comp or 0)))
        out = root / f"aligned-{text.replace(':', '_')}"
        started = time.perf_counter()
        model, tok = load_model(resolve_model("smollm2-base"), device, "float32", cache_dir / "models")
        lora = LoraSettings(int(epochs), float(lr), rank=int(rank or 8), alpha=2 * int(rank or 8))
        info = train_adapter(model, tok, examples, lora, out, device=device)
        del model
        spec = resolve_model(str(out))
        cache = Cache(cache_dir)
        results, _ = run(settings, spec, harmful, cache, judge)
        answers = answer(settings, spec, benign, cache, RunInfo())
        cache.close()
        stats = group_stats([r.verdict.score for r in results.values()], 4)
        refused = [is_refusal(a) for a in answers]
        harmful_refused = sum(is_refusal(r.answer) for r in results.values()) / len(results)
        if args.answers:
            folder = Path(args.answers)
            folder.mkdir(parents=True, exist_ok=True)
            dump = {"variant": text, "harmful": {p.id: results[p.id].answer for p in harmful},
                    "benign": {p.id: a for p, a in zip(benign, answers)}}
            (folder / f"answers-{text.replace(':', '_')}.json").write_text(json.dumps(dump))
        per_type = {t: sum(r for r, p in zip(refused, benign) if p.category == t)
                    / sum(1 for p in benign if p.category == t) for t in types}
        row = {"variant": text, "examples": len(examples), "train_s": round(info.seconds, 1),
               "loss": info.losses, "mean": stats.mean_score, "rate": stats.harmfulness_rate,
               "benign_refusal": sum(refused) / len(refused), "per_type": per_type,
               "harmful_refused": harmful_refused,
               "wall_s": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{len(harmful)} harmful, {len(benign)} benign prompts, device {device}")
    print(f"{'variant':<16} {'ex':>4} {'train s':>7} {'mean':>5} {'rate':>6} {'harm ref':>8} {'benign ref':>10}  "
          + " ".join(t[:8] for t in types))
    for r in rows:
        print(f"{r['variant']:<16} {r['examples']:>4} {r['train_s']:>7} {r['mean']:>5.2f} {r['rate']:>6.1%} "
              f"{r['harmful_refused']:>8.1%} "
              f"{r['benign_refusal']:>10.1%}  " + " ".join(f"{r['per_type'][t]:>8.0%}" for t in types))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
