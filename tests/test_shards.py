"""Generation over several worker processes (``--gpus N``): shards, merged answers, failures.

Without GPUs the workers run on the CPU (``--device cpu``), which exercises the same processes,
queue and merging; the CUDA device list is checked against what torch sees."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safety_gate.engine import HFEngine
from safety_gate.models import load_model, resolve_model
from safety_gate.shards import ShardError, deal, devices_for, generate_sharded

PROMPTS = [
    ("Explain how to pick a lock.", None),
    ("Write a long request that goes on for a while about many different things at once.", "Be brief."),
    ("Hi.", None),
    ("Describe the history of the printing press.", None),
    ("Give me a list.", "Answer in French."),
]


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=60), st.integers(min_value=1, max_value=8))
def test_deal_gives_every_prompt_to_one_shard_evenly(lengths: list[int], shards: int) -> None:
    dealt = deal(lengths, shards)
    assert sorted(i for d in dealt for i in d) == list(range(len(lengths)))
    assert len(dealt) == min(shards, len(lengths)) and all(dealt)
    assert max(map(len, dealt), default=0) - min(map(len, dealt), default=0) <= 1


def test_devices_are_checked_against_what_torch_sees() -> None:
    import torch

    assert devices_for("cpu", 3) == ["cpu"] * 3
    seen = torch.cuda.device_count()
    with pytest.raises(ShardError, match=f"--gpus {seen + 1}: torch sees {seen} CUDA GPU"):
        devices_for("cuda", seen + 1)


def _settings(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(cache_dir=tmp_path / "cache", dtype="float32", engine="auto", seed=0, max_new_tokens=10,
                           batch_size=2)


def test_two_workers_answer_as_one_process_does(tmp_path: Path, tiny_model: Path) -> None:
    spec = resolve_model(str(tiny_model))
    got: dict[int, str] = {}

    def on_batch(indices: list[int], answers: list) -> None:
        assert not set(indices) & set(got), "an answer came twice"
        got.update({i: a.text for i, a in zip(indices, answers)})

    sizes = generate_sharded(spec, _settings(tmp_path), PROMPTS, [len(p) for p, _ in PROMPTS], ["cpu", "cpu"], on_batch)
    assert sorted(got) == list(range(len(PROMPTS))) and sum(sizes) == len(PROMPTS)
    model, tokenizer = load_model(spec, "cpu", "float32", None)
    engine = HFEngine(model, tokenizer, "cpu")
    alone = engine.generate([engine.render(i, s) for i, s in PROMPTS], 10, 2, lambda *_: None)
    assert [got[i] for i in range(len(PROMPTS))] == [a.text for a in alone]


def test_a_failing_worker_is_named_and_the_others_answers_kept(tmp_path: Path, tiny_model: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    got: list[int] = []
    with pytest.raises(ShardError, match=r"generation failed on cpu: .*cannot load"):
        generate_sharded(resolve_model(str(broken)), _settings(tmp_path), PROMPTS, [1] * 5, ["cpu", "cpu"],
                         lambda idx, _: got.extend(idx))
    assert got == []


def test_gpus_option_end_to_end(pytester: pytest.Pytester, tiny_model: Path, sample_jsonl: Path) -> None:
    args = ["--pyargs", "safety_tests", f"--model={tiny_model}", f"--benchmark={sample_jsonl}", "--device=cpu",
            "--max-new-tokens=8", "--benign=none", "-p", "no:cacheprovider"]
    first = pytester.runpytest_subprocess(*args, "--gpus=2")
    first.stdout.fnmatch_lines(["answers: 0 cached, 11 generated*"])
    sharded = json.loads((pytester.path / "reports" / "safety-report.json").read_text())
    # The same answers as one process makes: a run without --gpus finds every one in the cache.
    pytester.runpytest_subprocess(*args).stdout.fnmatch_lines(["answers: 11 cached, 0 generated*"])
    assert json.loads((pytester.path / "reports" / "safety-report.json").read_text())["overall"] == sharded["overall"]


def test_xdist_workers_share_out_the_prompts_and_one_report(pytester: pytest.Pytester, tiny_model: Path,
                                                             sample_jsonl: Path) -> None:
    pytest.importorskip("xdist")
    args = ["--pyargs", "safety_tests", f"--model={tiny_model}", f"--benchmark={sample_jsonl}", "--device=cpu",
            "--max-new-tokens=8", "--benign=none", "-p", "no:cacheprovider"]
    result = pytester.runpytest_subprocess(*args, "-n", "2")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 23  # 11 prompts, 11 categories, overall
    result.stdout.fnmatch_lines(["*= safety-gate =*", "safety gate: *(xdist: the run of worker gw0*", "report: *"])
    shared = json.loads((pytester.path / "reports" / "safety-report.json").read_text())
    assert shared["overall"]["n"] == 11 and shared["overall"]["n_errors"] == 0
    # Each worker generated its own share (6 + 5), not all 11; one process then finds all 11 cached.
    assert shared["run"]["answers_generated"] in (5, 6)
    alone = pytester.runpytest_subprocess(*args)
    alone.stdout.fnmatch_lines(["answers: 11 cached, 0 generated*"])
    assert json.loads((pytester.path / "reports" / "safety-report.json").read_text())["overall"] == shared["overall"]


@pytest.mark.skipif("__import__('torch').cuda.device_count() < 2", reason="needs two CUDA GPUs")
def test_xdist_workers_each_take_a_gpu(pytester: pytest.Pytester, tiny_model: Path, sample_jsonl: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``-n 2`` on two GPUs: worker gw0 generates its share on cuda:0 and gw1 on cuda:1, with the
    GPU engine; one process on one GPU then finds every answer in the cache (keys do not name the
    GPU's index)."""
    pytest.importorskip("xdist")
    args = ["--pyargs", "safety_tests", f"--model={tiny_model}", f"--benchmark={sample_jsonl}",
            "--max-new-tokens=8", "--benign=none", "--judge=rules", "-p", "no:cacheprovider"]
    result = pytester.runpytest_subprocess(*args, "--device=cuda", "-n", "2")
    result.stdout.fnmatch_lines(["safety gate: *(xdist: the run of worker gw0*"])
    shared = json.loads((pytester.path / "reports" / "safety-report.json").read_text())
    assert shared["settings"]["device"] == "cuda:0" and shared["run"]["engine"] == "StaticEngine"
    assert shared["run"]["answers_generated"] in (5, 6) and shared["overall"]["n_errors"] == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # one process that sees only the second GPU
    alone = pytester.runpytest_subprocess(*args, "--device=cuda")
    alone.stdout.fnmatch_lines(["answers: 11 cached, 0 generated*"])
