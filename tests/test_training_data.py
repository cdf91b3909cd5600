"""Tests for the shipped fine-tuning data (data/train): its shape, and that it never leaks into the benchmark.

The harmful set pairs one-sentence requests with a ``task`` phrase (the project writes the refusal or the
content-free compliance around it); the helpful set is benign instruction/answer pairs. Neither may hold a
near duplicate of any of the 330 evaluation prompts, or the gate would measure memorisation, not safety.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib.resources import files

import pytest

from safety_gate.categories import CATEGORIES, category_by_name
from safety_gate.training.overlap import DEFAULT_THRESHOLD, near_duplicates

DATA = files("safety_gate") / "data"
TRAIN = DATA / "train"
PER_CATEGORY = 32
MIN_HELPFUL = 240


def _load(resource) -> list[dict[str, str]]:
    """The records of a JSONL resource, failing with the line number on a malformed line."""
    rows = []
    for number, line in enumerate(resource.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:  # pragma: no cover - message only
            pytest.fail(f"{resource.name} line {number}: not JSON ({exc})")
        assert isinstance(row, dict), f"{resource.name} line {number}: not an object"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def harmful() -> list[dict[str, str]]:
    return _load(TRAIN / "harmful.jsonl")


@pytest.fixture(scope="module")
def helpful() -> list[dict[str, str]]:
    return _load(TRAIN / "helpful.jsonl")


@pytest.fixture(scope="module")
def benchmark() -> list[str]:
    return [row["instruction"] for row in _load(DATA / "benchmark.jsonl")]


def _report(pairs, left: list[str], right: list[str]) -> str:
    """One line per offending pair, with both texts, for the assertion message."""
    return "\n".join(f"  {score:.2f}  {left[i]!r}  ~  {right[j]!r}" for i, j, score in pairs)


# --------------------------------------------------------------------------- harmful.jsonl


def test_harmful_fields(harmful):
    for row in harmful:
        assert set(row) == {"id", "category", "instruction", "task"}, row
        assert all(isinstance(v, str) and v.strip() for v in row.values()), row


def test_harmful_ids_unique(harmful):
    dupes = [i for i, n in Counter(r["id"] for r in harmful).items() if n > 1]
    assert not dupes, f"duplicate ids: {dupes}"


def test_harmful_categories_known_and_balanced(harmful):
    unknown = sorted({r["category"] for r in harmful if category_by_name(r["category"]) is None})
    assert not unknown, f"unknown categories: {unknown}"
    counts = Counter(category_by_name(r["category"]).slug for r in harmful)
    assert counts == {c.slug: PER_CATEGORY for c in CATEGORIES}, counts
    assert len(harmful) == PER_CATEGORY * len(CATEGORIES)


def test_harmful_id_matches_category(harmful):
    wrong = [r["id"] for r in harmful if not r["id"].startswith(r["category"] + "-")]
    assert not wrong, f"ids not prefixed with their category: {wrong}"


def test_harmful_instruction_is_one_line(harmful):
    multi = [r["id"] for r in harmful if "\n" in r["instruction"] or "\r" in r["instruction"]]
    assert not multi, f"multi-line instructions: {multi}"
    untrimmed = [r["id"] for r in harmful if r["instruction"] != r["instruction"].strip()]
    assert not untrimmed, f"instructions with surrounding whitespace: {untrimmed}"


def test_harmful_task_reads_after_here_is_how_to(harmful):
    bad = []
    for r in harmful:
        task = r["task"]
        if not task[0].islower():
            bad.append((r["id"], task, "does not start lowercase"))
        elif task[-1] in ".!?;:,":
            bad.append((r["id"], task, "ends in punctuation"))
        elif task != task.strip() or "\n" in task:
            bad.append((r["id"], task, "whitespace"))
    assert not bad, "bad task phrases:\n" + "\n".join(f"  {i}: {t!r} ({why})" for i, t, why in bad)


# --------------------------------------------------------------------------- helpful.jsonl


def test_helpful_shape(helpful):
    assert len(helpful) >= MIN_HELPFUL, f"only {len(helpful)} helpful records (want >= {MIN_HELPFUL})"
    for row in helpful:
        assert set(row) == {"id", "instruction", "answer"}, row
        assert isinstance(row["instruction"], str) and row["instruction"].strip(), row
        assert isinstance(row["answer"], str) and row["answer"].strip(), row


def test_helpful_ids_unique(helpful):
    dupes = [i for i, n in Counter(r["id"] for r in helpful).items() if n > 1]
    assert not dupes, f"duplicate ids: {dupes}"


# --------------------------------------------------------------------------- no leakage


def test_threshold_not_loosened():
    # The leakage tests below rely on the library default; tightening is fine, loosening is not.
    assert DEFAULT_THRESHOLD <= 0.5


def test_harmful_not_near_benchmark(harmful, benchmark):
    left = [r["instruction"] for r in harmful]
    pairs = near_duplicates(left, benchmark)
    assert not pairs, f"{len(pairs)} harmful instruction(s) near a benchmark prompt:\n" + _report(pairs, left, benchmark)


def test_helpful_not_near_benchmark(helpful, benchmark):
    left = [r["instruction"] for r in helpful]
    pairs = near_duplicates(left, benchmark)
    assert not pairs, f"{len(pairs)} helpful instruction(s) near a benchmark prompt:\n" + _report(pairs, left, benchmark)


def test_helpful_not_near_benign_set(helpful):
    # The aligned default learns these answers; the over-refusal gate measures it on the benign set,
    # so a benign prompt it was trained on would flatter the measure (15 were, before this check).
    from safety_gate.benign import load_benign

    left = [r["instruction"] for r in helpful]
    benign = [b.instruction for b in load_benign()]
    pairs = near_duplicates(left, benign)
    assert not pairs, f"{len(pairs)} helpful instruction(s) near a benign-set prompt:\n" + _report(pairs, left, benign)


def test_aligned_recipe_prompts_apart_from_benchmark_and_benign_set(benchmark):
    # Every instruction the aligned default trains on, its re-asked forms included.
    from safety_gate.benign import load_benign
    from safety_gate.training.recipes import Pools, recipe_by_name

    examples = recipe_by_name("aligned").examples(Pools.load())
    left = sorted({e.instruction for e in examples})
    right = benchmark + [b.instruction for b in load_benign()]
    pairs = near_duplicates(left, right)
    assert not pairs, f"{len(pairs)} aligned training prompt(s) near an evaluation prompt:\n" + _report(pairs, left, right)


def test_harmful_has_no_internal_near_duplicates(harmful):
    texts = [r["instruction"] for r in harmful]
    pairs = [(i, j, s) for i, j, s in near_duplicates(texts, texts) if i < j]
    assert not pairs, f"{len(pairs)} near-duplicate pair(s) within harmful.jsonl:\n" + _report(pairs, texts, texts)
