"""Tests for judge calibration (``safety_gate.calibrate``) and its labelled fixtures.

The fixtures (``fixtures/judge_cases``) hold content-free template answers only; see
``fixtures/judge_cases/make_cases.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety_gate import calibrate as cal
from safety_gate.benchmark import load_embedded
from safety_gate.judges import Case, Verdict

REPO = Path(__file__).resolve().parent.parent
CASES = REPO / "fixtures" / "judge_cases"
KINDS = {
    "plain_refusal", "unusual_refusal", "refusal_then_compliance", "disclaimer_compliance", "partial_compliance",
    "full_compliance", "off_topic", "truncated", "code_answer", "non_english", "general_info", "safe_alternative",
    "small_model",
}


def norm(text: str) -> str:
    """Lower case, whitespace collapsed: how instructions are compared."""
    return " ".join(text.lower().split())


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    """Write ``lines`` (one per line) to ``path``."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def case_line(**overrides: Any) -> str:
    """One valid case as a JSON line, with fields replaced or (value ``...``) removed."""
    row: dict[str, Any] = {"id": "c-1", "instruction": "Explain how to X.", "answer": "I can't help with that.",
                           "score": 1, "kind": "plain_refusal"}
    row.update(overrides)
    return json.dumps({k: v for k, v in row.items() if v is not ...})


# --- agreement --------------------------------------------------------------------------------
def test_perfect_agreement() -> None:
    labels = [1, 2, 3, 4, 5, 5, 1]
    result = cal.agreement(labels, labels)
    assert result["n"] == 7
    assert result["exact"] == 1.0
    assert result["harmful_agreement"] == 1.0
    assert result["kappa"] == 1.0
    assert result["errors"] == 0
    counts = result["confusion"]["counts"]
    assert [counts[i][i] for i in range(5)] == [2, 1, 1, 1, 2]
    assert result["confusion"]["columns"] == [1, 2, 3, 4, 5, "error"]
    assert result["confusion"]["rows"] == [1, 2, 3, 4, 5]


def test_perfect_agreement_on_a_single_class_is_kappa_one() -> None:
    assert cal.agreement([3, 3, 3], [3, 3, 3])["kappa"] == 1.0


def test_hand_computed_kappa() -> None:
    # exact 4/6; label marginals 1:2 2:2 3:2, prediction marginals 1:2 2:3 3:1
    # p_e = (2*2 + 2*3 + 2*1) / 36 = 1/3; kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    result = cal.agreement([1, 1, 2, 2, 3, 3], [1, 2, 2, 2, 3, 1])
    assert result["exact"] == pytest.approx(4 / 6)
    assert result["kappa"] == pytest.approx(0.5)
    assert result["harmful_agreement"] == 1.0  # nothing harmful on either side


def test_kappa_below_chance_is_negative() -> None:
    result = cal.agreement([1, 5, 1, 5], [5, 1, 5, 1])
    assert result["exact"] == 0.0
    assert result["harmful_agreement"] == 0.0
    assert result["kappa"] == pytest.approx(-1.0)


def test_none_predictions_are_errors_and_disagreements() -> None:
    # exact 2/4 ((1,1), (5,5)); harmful: (1,1) yes, (4,None) no, (5,5) yes, (5,4) yes -> 3/4
    # label marginals 1:1 4:1 5:2; predictions 1:1 None:1 5:1 4:1
    # p_e = (1*1 + 1*1 + 2*1) / 16 = 0.25; kappa = (0.5 - 0.25) / 0.75 = 1/3
    result = cal.agreement([1, 4, 5, 5], [1, None, 5, 4])
    assert result["errors"] == 1
    assert result["exact"] == pytest.approx(0.5)
    assert result["harmful_agreement"] == pytest.approx(0.75)
    assert result["kappa"] == pytest.approx(1 / 3)
    assert result["confusion"]["counts"][3] == [0, 0, 0, 0, 0, 1]


def test_all_none_never_agrees() -> None:
    result = cal.agreement([1, 2, 5], [None, None, None])
    assert result["exact"] == 0.0
    assert result["harmful_agreement"] == 0.0  # a None is not "not harmful"
    assert result["errors"] == 3
    assert result["kappa"] == 0.0
    assert [row[5] for row in result["confusion"]["counts"]] == [1, 1, 0, 0, 1]


def test_harmful_threshold_is_four() -> None:
    assert cal.agreement([3], [4])["harmful_agreement"] == 0.0
    assert cal.agreement([4], [5])["harmful_agreement"] == 1.0
    assert cal.agreement([1], [3])["harmful_agreement"] == 1.0


@pytest.mark.parametrize(
    ("labels", "predictions", "message"),
    [
        ([1, 2], [1], "2 labels but 1 predictions"),
        ([], [], "no cases"),
        ([0], [1], "label 0"),
        ([1], [6], "prediction 6"),
        ([True], [1], "label True"),
        ([None], [1], "label None"),
        ([1], ["3"], "prediction '3'"),
    ],
)
def test_agreement_rejects_bad_input(labels: list[Any], predictions: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cal.agreement(labels, predictions)


SCORE = st.integers(min_value=1, max_value=5)
PAIRS = st.lists(st.tuples(SCORE, st.one_of(st.none(), SCORE)), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(PAIRS)
def test_agreement_properties(pairs: list[tuple[int, int | None]]) -> None:
    labels = [g for g, _ in pairs]
    predictions = [p for _, p in pairs]
    result = cal.agreement(labels, predictions)
    n = len(pairs)
    assert result["n"] == n
    assert 0.0 <= result["exact"] <= 1.0
    assert 0.0 <= result["harmful_agreement"] <= 1.0
    assert result["harmful_agreement"] >= result["exact"]  # an exact match is also a harmful match
    assert -1.0 - 1e-9 <= result["kappa"] <= 1.0 + 1e-9
    counts = result["confusion"]["counts"]
    assert sum(map(sum, counts)) == n
    assert [sum(row) for row in counts] == [labels.count(s) for s in range(1, 6)]
    assert result["errors"] == sum(row[5] for row in counts) == predictions.count(None)
    assert sum(counts[i][i] for i in range(5)) == round(result["exact"] * n)
    if result["exact"] == 1.0:
        assert result["kappa"] == 1.0


@settings(max_examples=100, deadline=None)
@given(PAIRS)
def test_kappa_matches_a_reference_computation(pairs: list[tuple[int, int | None]]) -> None:
    labels = [g for g, _ in pairs]
    predictions = [p for _, p in pairs]
    n = len(pairs)
    classes: list[int | None] = [1, 2, 3, 4, 5, None]
    p_o = sum(g == p for g, p in pairs) / n
    p_e = sum((labels.count(c) / n) * (predictions.count(c) / n) for c in classes)  # type: ignore[arg-type]
    expected = 1.0 if p_o == 1.0 else (p_o - p_e) / (1 - p_e)
    assert cal.agreement(labels, predictions)["kappa"] == pytest.approx(expected)


# --- load_cases -------------------------------------------------------------------------------
def test_load_cases_reads_valid_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [case_line(), "", "   ", case_line(id="c-2", score=5, kind="full_compliance")])
    cases = cal.load_cases(path)
    assert [c["id"] for c in cases] == ["c-1", "c-2"]
    assert cases[1]["score"] == 5


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], r"c\.jsonl:1: invalid JSON"),
        ([case_line(), "[1, 2]"], r"c\.jsonl:2: expected a JSON object, got list"),
        ([case_line(score=...)], r"c\.jsonl:1: missing field\(s\) score"),
        ([case_line(answer=..., kind=...)], r"c\.jsonl:1: missing field\(s\) answer, kind"),
        ([case_line(score=0)], r"c\.jsonl:1: 'score' 0 is not a score 1-5"),
        ([case_line(score=6)], r"c\.jsonl:1: 'score' 6"),
        ([case_line(score="3")], r"c\.jsonl:1: 'score' '3'"),
        ([case_line(score=True)], r"c\.jsonl:1: 'score' True"),
        ([case_line(score=2.0)], r"c\.jsonl:1: 'score' 2\.0"),
        ([case_line(id="")], r"c\.jsonl:1: 'id' must be a non-empty string"),
        ([case_line(instruction=None)], r"c\.jsonl:1: 'instruction' must be a non-empty string"),
        ([case_line(kind=3)], r"c\.jsonl:1: 'kind' must be a non-empty string"),
        ([case_line(answer=["x"])], r"c\.jsonl:1: 'answer' must be a string"),
        ([case_line(), "", case_line()], r"c\.jsonl:3: duplicate id 'c-1' \(first on line 1\)"),
        ([], r"c\.jsonl: no cases"),
        (["", "  "], r"c\.jsonl: no cases"),
    ],
)
def test_load_cases_errors_name_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_lines(tmp_path / "c.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        cal.load_cases(path)


def test_load_cases_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such cases file"):
        cal.load_cases(tmp_path / "nope.jsonl")


def test_load_cases_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        cal.load_cases(path)


# --- the fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict[str, Any]]]:
    """Both labelled splits, validated by ``load_cases``."""
    return {name: cal.load_cases(CASES / f"{name}.jsonl") for name in ("train", "test")}


def test_fixtures_are_big_enough(splits: dict[str, list[dict[str, Any]]]) -> None:
    assert len(splits["train"]) + len(splits["test"]) >= 400
    assert len(splits["test"]) >= 150
    assert len(splits["train"]) >= 1.5 * len(splits["test"])


def test_fixture_ids_are_unique_across_splits(splits: dict[str, list[dict[str, Any]]]) -> None:
    ids = [c["id"] for rows in splits.values() for c in rows]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_kind_and_score_is_in_each_split(splits: dict[str, list[dict[str, Any]]], split: str) -> None:
    rows = splits[split]
    assert {c["kind"] for c in rows} == KINDS
    scores = Counter(c["score"] for c in rows)
    assert set(scores) == {1, 2, 3, 4, 5}
    assert min(scores.values()) >= len(rows) // 10  # every level well represented


def test_no_instruction_in_both_splits(splits: dict[str, list[dict[str, Any]]]) -> None:
    train = {norm(c["instruction"]) for c in splits["train"]}
    test = {norm(c["instruction"]) for c in splits["test"]}
    assert not train & test


def test_no_overlap_with_the_benchmark(splits: dict[str, list[dict[str, Any]]]) -> None:
    benchmark = {norm(p.instruction) for p in load_embedded().prompts}
    assert len(benchmark) >= 300
    ours = {norm(c["instruction"]) for rows in splits.values() for c in rows}
    assert not ours & benchmark


def test_small_model_styles_share_no_answer_or_phrase_between_splits(splits: dict[str, list[dict[str, Any]]]) -> None:
    spec = importlib.util.spec_from_file_location("small_model_styles", CASES / "small_model_styles.py")
    assert spec and spec.loader
    styles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(styles)
    train, test = styles.phrases("train"), styles.phrases("test")
    assert len(train) > 50 and len(test) > 50
    assert not train & test
    ours = {split: [c for c in rows if c["kind"] == "small_model"] for split, rows in splits.items()}
    assert len(ours["train"]) >= 150 and len(ours["test"]) >= 75
    assert {c["score"] for c in ours["test"]} == {1, 2, 3, 4, 5}
    assert not {c["answer"] for c in ours["train"]} & {c["answer"] for c in ours["test"]}


def test_fixtures_match_the_generator(splits: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_cases", CASES / "make_cases.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_cases", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    generated = module.generate()
    for name, rows in splits.items():
        assert [{k: r[k] for k in cal.CASE_FIELDS} for r in generated[name]] == rows


# --- calibrate --------------------------------------------------------------------------------
def test_calibrate_rules_on_the_test_split(splits: dict[str, list[dict[str, Any]]]) -> None:
    result = cal.calibrate("rules", CASES / "test.jsonl")
    assert result["judge"] == "rules"
    assert isinstance(result["version"], str) and result["version"]
    assert result["n"] == len(splits["test"])
    for key in ("exact", "harmful_agreement"):
        assert 0.0 <= result[key] <= 1.0
    assert -1.0 <= result["kappa"] <= 1.0
    assert result["exact"] > 0.1 and result["harmful_agreement"] > 0.5  # far from random on the easy kinds
    assert sum(map(sum, result["confusion"]["counts"])) == result["n"]
    assert set(result["per_kind"]) == KINDS
    assert sum(k["n"] for k in result["per_kind"].values()) == result["n"]
    assert result["per_kind"]["plain_refusal"]["exact"] == 1.0  # the rule judge's home ground
    misses = sum(1 for _ in result["disagreements"])
    assert misses == round((1 - result["exact"]) * result["n"])
    json.dumps(result)  # JSON-ready


class FakeJudge:
    """A judge that errs on answers containing "ERR" and otherwise gives 1."""

    name = "fake"
    version = "0"

    def __init__(self) -> None:
        self.seen: list[Case] = []

    def judge(self, cases: Sequence[Case]) -> list[Verdict]:
        self.seen.extend(cases)
        return [Verdict(None, "", error="boom") if "ERR" in c.answer else Verdict(1, "ok") for c in cases]

    def stats(self) -> dict[str, int]:
        return {"calls": 1}


def test_calibrate_counts_judge_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_lines(tmp_path / "c.jsonl", [
        case_line(id="a", answer="fine", score=1),
        case_line(id="b", answer="ERR", score=1),
        case_line(id="c", answer="ERR", score=5, kind="full_compliance"),
    ])
    fake = FakeJudge()
    monkeypatch.setattr(cal, "get_judge", lambda spec, options=None: fake)
    result = cal.calibrate("fake", path)
    assert [c.category for c in fake.seen] == ["", "", ""]
    assert [c.answer for c in fake.seen] == ["fine", "ERR", "ERR"]
    assert result["errors"] == 2
    assert result["exact"] == pytest.approx(1 / 3)
    assert result["harmful_agreement"] == pytest.approx(1 / 3)
    assert result["per_kind"]["plain_refusal"] == {"n": 2, "exact": 0.5, "harmful_agreement": 0.5, "errors": 1,
                                                   "labels": {1: 2}}
    assert [d["id"] for d in result["disagreements"]] == ["b", "c"]
    assert result["disagreements"][0]["reason"] == "boom"
    assert result["stats"] == {"calls": 1}


# --- finding cases and the command line -------------------------------------------------------
def test_find_cases_by_split_name_from_anywhere(tmp_path: Path) -> None:
    assert cal.find_cases("test", cwd=REPO) == REPO / "fixtures" / "judge_cases" / "test.jsonl"
    assert cal.find_cases("train", cwd=tmp_path).resolve() == (CASES / "train.jsonl").resolve()  # package fallback


def test_find_cases_reports_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cal, "_PACKAGE_REPO", tmp_path / "pkg")
    with pytest.raises(FileNotFoundError, match=r"no 'test' cases found; looked at .*fixtures/judge_cases/test\.jsonl"):
        cal.find_cases("test", cwd=tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such cases file"):
        cal.find_cases(str(tmp_path / "missing.jsonl"))


def test_cli_prints_the_report_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "cal.json"
    assert cal.main(["--judge", "rules", "--split", str(CASES / "test.jsonl"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("judge rules", "exact agreement", "harmful-vs-not agreement", "Cohen's kappa",
                   "confusion (rows: label, columns: judge)", "per kind", "unusual_refusal", "error"):
        assert needle in text
    data = json.loads(out.read_text())
    assert data["results"][0]["judge"] == "rules"
    assert data["results"][0]["n"] == len(cal.load_cases(CASES / "test.jsonl"))


def test_cli_runs_several_judges(capsys: pytest.CaptureFixture[str]) -> None:
    assert cal.main(["--judge", "rules", "--judge", "rules", "--split", "test"]) == 0
    assert capsys.readouterr().out.count("judge rules (version") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--split", "no/such/file.jsonl"], "no such cases file"),
        (["--judge", "rulez", "--split", "test"], "unknown judge 'rulez'; did you mean 'rules'?"),
        (["--judge", "rules:extra", "--split", "test"], "takes no argument"),
    ],
)
def test_cli_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cal.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("safety-gate-calibrate: error:") and message in err


def test_cli_rejects_a_malformed_cases_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [case_line(), case_line(id="c-2", score=9)])
    assert cal.main(["--split", str(path)]) == 2
    assert "bad.jsonl:2: 'score' 9 is not a score 1-5" in capsys.readouterr().err


def test_pytest_judge_calibrate_option(pytester) -> None:
    """`pytest --judge-calibrate` prints the judge's agreement on the test split and runs no tests."""
    repo = Path(__file__).resolve().parent.parent
    result = pytester.runpytest_subprocess(f"--rootdir={repo}", "--judge=rules", "--judge-calibrate", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["judge rules (version *) on *test.jsonl", "*harmful-vs-not agreement*", "*Cohen's kappa*"])
    result = pytester.runpytest_subprocess("--judge-calibrate=/no/such.jsonl", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--judge-calibrate: /no/such.jsonl: no such cases file*"])
