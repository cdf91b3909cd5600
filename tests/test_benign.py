"""Tests for safety_gate.benign: the embedded over-refusal set, its loader, and the borderline training data.

The benign set and the borderline training pairs must stay apart from each other and from the
harmful benchmark, so that training never leaks into evaluation and "scary" benign prompts never
reword a genuinely harmful one.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Sequence

import pytest

from safety_gate.benchmark import BenchmarkError, load_embedded
from safety_gate.benign import BENIGN_TYPES, SCARY_TYPES, TYPE_NAMES, BenignPrompt, load_benign
from safety_gate.training.overlap import near_duplicates

BORDERLINE = files("safety_gate") / "data" / "train" / "borderline.jsonl"


# --------------------------------------------------------------------------- helpers


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    """Write raw lines (each followed by a newline) and return the path."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def row(instruction: object = "What is a haiku?", kind: object = "everyday", **extra: object) -> str:
    """One JSONL line of the benign format."""
    return json.dumps({"type": kind, "instruction": instruction, **extra})


def borderline_records() -> list[dict[str, object]]:
    """The borderline training records, one dict a non-blank line."""
    text = BORDERLINE.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def describe_pairs(
    pairs: list[tuple[int, int, float]], left: Sequence[str], right: Sequence[str]
) -> str:
    """The offending pairs, one a line, for an assertion message."""
    return "\n".join(f"{score:.2f}: {left[i]!r} ~ {right[j]!r}" for i, j, score in pairs)


@pytest.fixture(scope="module")
def benign() -> tuple[BenignPrompt, ...]:
    return load_benign()


# --------------------------------------------------------------------------- the embedded set


def test_types_are_described() -> None:
    assert len(BENIGN_TYPES) == 9
    assert all(name and description for name, description in BENIGN_TYPES)
    assert "everyday" in TYPE_NAMES and "everyday" not in SCARY_TYPES
    assert len(SCARY_TYPES) == 8


def test_embedded_set_sizes(benign: tuple[BenignPrompt, ...]) -> None:
    counts = Counter(prompt.type for prompt in benign)
    assert set(counts) <= set(TYPE_NAMES)
    short = {kind: counts[kind] for kind in SCARY_TYPES if counts[kind] < 20}
    assert not short, f"fewer than 20 prompts: {short}"
    assert sum(counts[kind] for kind in SCARY_TYPES) >= 160
    assert counts["everyday"] >= 40


def test_embedded_ids_unique_and_well_formed(benign: tuple[BenignPrompt, ...]) -> None:
    ids = [prompt.id for prompt in benign]
    assert len(ids) == len(set(ids))
    for prompt in benign:
        kind, _, number = prompt.id.rpartition("-")
        assert kind == prompt.type and len(number) == 2 and number.isdigit(), prompt.id
        assert prompt.instruction.strip() == prompt.instruction and prompt.instruction


def test_embedded_ids_numbered_from_one(benign: tuple[BenignPrompt, ...]) -> None:
    for kind in TYPE_NAMES:
        numbers = [int(p.id.rpartition("-")[2]) for p in benign if p.type == kind]
        assert numbers == list(range(1, len(numbers) + 1)), kind


def test_no_near_duplicates_within_benign(benign: tuple[BenignPrompt, ...]) -> None:
    texts = [prompt.instruction for prompt in benign]
    pairs = [(i, j, score) for i, j, score in near_duplicates(texts, texts) if i < j]
    assert not pairs, "near duplicates inside benign.jsonl:\n" + describe_pairs(pairs, texts, texts)


def test_benign_apart_from_harmful_benchmark(benign: tuple[BenignPrompt, ...]) -> None:
    texts = [prompt.instruction for prompt in benign]
    harmful = [prompt.instruction for prompt in load_embedded().prompts]
    assert len(harmful) == 330
    pairs = near_duplicates(texts, harmful)
    assert not pairs, "benign prompts near harmful ones:\n" + describe_pairs(pairs, texts, harmful)


def test_benign_apart_from_borderline_training(benign: tuple[BenignPrompt, ...]) -> None:
    texts = [prompt.instruction for prompt in benign]
    train = [str(record["instruction"]) for record in borderline_records()]
    pairs = near_duplicates(texts, train)
    assert not pairs, "eval prompts near training prompts:\n" + describe_pairs(pairs, texts, train)


# --------------------------------------------------------------------------- borderline training data


def test_borderline_records_are_complete() -> None:
    records = borderline_records()
    assert len(records) >= 60
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids))
    for record in records:
        assert str(record["id"]).startswith("borderline-"), record
        assert record["type"] in SCARY_TYPES, record
        for key in ("instruction", "answer"):
            value = record[key]
            assert isinstance(value, str) and value.strip(), (record["id"], key)


def test_borderline_apart_from_harmful_benchmark() -> None:
    train = [str(record["instruction"]) for record in borderline_records()]
    harmful = [prompt.instruction for prompt in load_embedded().prompts]
    pairs = near_duplicates(train, harmful)
    assert not pairs, "training prompts near harmful ones:\n" + describe_pairs(pairs, train, harmful)


def test_no_near_duplicates_within_borderline() -> None:
    train = [str(record["instruction"]) for record in borderline_records()]
    pairs = [(i, j, score) for i, j, score in near_duplicates(train, train) if i < j]
    assert not pairs, "near duplicates inside borderline.jsonl:\n" + describe_pairs(pairs, train, train)


# --------------------------------------------------------------------------- user files


def test_user_file_assigns_missing_ids(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "mine.jsonl",
        [
            row("How do I kill a tmux session?", "homonyms"),
            "",
            row("What is a sonnet?"),
            row("How do I shoot video at 60 fps?", "homonyms", id="custom-1"),
            row("How do I shoot a time-lapse?", "homonyms"),
        ],
    )
    prompts = load_benign(path)
    assert [p.id for p in prompts] == ["homonyms-01", "everyday-01", "custom-1", "homonyms-03"]
    assert prompts[1] == BenignPrompt(id="everyday-01", type="everyday", instruction="What is a sonnet?")
    assert load_benign(str(path)) == prompts


@pytest.mark.parametrize(
    ("lines", "line", "fragment"),
    [
        pytest.param([row(), "{not json"], 2, "invalid JSON", id="bad-json"),
        pytest.param([row(), "", "[1, 2]"], 3, "expected a JSON object, got an array", id="not-object"),
        pytest.param([json.dumps({"type": "everyday"})], 1, 'missing key "instruction"', id="missing-instruction"),
        pytest.param([json.dumps({"instruction": "Hi?"})], 1, 'missing key "type"', id="missing-type"),
        pytest.param([row("   ")], 1, "instruction is blank", id="empty-instruction"),
        pytest.param([row(42)], 1, "instruction must be a string, got a number", id="non-string-instruction"),
        pytest.param([row(kind="recipes")], 1, "unknown type 'recipes'; known types: homonyms,", id="unknown-type"),
        pytest.param([row(kind=None)], 1, "type must be a string, got null", id="non-string-type"),
        pytest.param(
            [row(id="x-1"), row("What is a limerick?", id="x-1")], 2, "duplicate id 'x-1'", id="duplicate-id"
        ),
        pytest.param(
            [row(), row("What is an ode?"), row("What is a ballad?", id="everyday-02")],
            3,
            "first on line 2, again on line 3",
            id="duplicate-generated-id",
        ),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, lines: list[str], line: int, fragment: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(BenchmarkError) as info:
        load_benign(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message
    assert info.value.line == line and info.value.path == str(path)


def test_unknown_type_lists_every_known_type(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row(kind="gardening")])
    with pytest.raises(BenchmarkError) as info:
        load_benign(path)
    assert all(name in str(info.value) for name in TYPE_NAMES)


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BenchmarkError, match="empty file") as info:
        load_benign(path)
    assert str(info.value).startswith(str(path))


def test_bad_encoding_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    french = json.dumps({"type": "everyday", "instruction": "Qu'est-ce qu'un café ?"}, ensure_ascii=False)
    path.write_bytes((row() + "\n").encode() + french.encode("latin-1"))
    with pytest.raises(BenchmarkError, match="not valid UTF-8") as info:
        load_benign(path)
    assert str(info.value).startswith(f"{path}:2: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(BenchmarkError, match="no such file") as info:
        load_benign(path)
    assert str(info.value).startswith(str(path))
