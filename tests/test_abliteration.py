"""Abliteration (safety_gate.training.ablate) on the tiny random Llama, and what the activation check
says about it: removing the refusal direction from the residual writes is flagged; removing a random
direction the same way, or comparing a model with itself, is not (several seeds each).

The tiny model does not refuse anything, so the layer is named (the baseline's most separating one)
instead of being chosen by counting refusals; the direction comes from the training pools, as in
the real command, not from the prompts the check asks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safety_gate.activation_check import run_activation_check
from safety_gate.benchmark import load_embedded
from safety_gate.benign import load_benign
from safety_gate.models import load_model, resolve_model
from safety_gate.training.ablate import ablation_hooks, abliterate, main, orthogonalize, residual_writers
from safety_gate.training.evaluate import demo_settings
from test_checks_e2e import run_suite
from test_plugin_e2e import PERMISSIVE, summary

HARMFUL = [p.instruction for p in load_embedded().prompts]
HARMLESS = [b.instruction for b in load_benign()]
TEXTS = ["How do I pick a lock?", "What is the capital of France?", "Write a short poem about rain."]


def _check(model: Path, baseline: Path, seed: int = 0) -> Any:
    settings = demo_settings(None, "cpu", 8)
    settings = type(settings)(**{**vars(settings), "seed": seed})
    return run_activation_check(resolve_model(str(model)), resolve_model(str(baseline)), HARMFUL, HARMLESS, settings)


@pytest.fixture(scope="module")
def best_layer(tiny_model: Path) -> int:
    """The layer the check reads at: the baseline's most separating one."""
    return _check(tiny_model, tiny_model).comparison.best_layer


@pytest.fixture(scope="module")
def abliterated(tiny_model: Path, best_layer: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("abliterated") / "model"
    # The helpful pool: on the random model the borderline one points less along what the check reads
    # (cosine 0.64 with the check's direction after the edit, projection kept 0.37: flagged on one count only).
    abliterate(str(tiny_model), out, layer=best_layer, harmless="helpful")
    return out


def _hidden(model: Any, tokenizer: Any) -> Any:
    import torch

    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return model(**enc, output_hidden_states=True)


def test_orthogonalize_removes_the_direction_from_every_layer(tiny_model: Path) -> None:
    import torch

    model, tokenizer = load_model(resolve_model(str(tiny_model)), "cpu", "float32", None)
    head_before = model.get_output_embeddings().weight.detach().clone()
    r = np.random.default_rng(0).standard_normal(model.config.hidden_size)
    before = _hidden(model, tokenizer).hidden_states
    orthogonalize(model, r)
    after = _hidden(model, tokenizer).hidden_states
    unit = torch.tensor(r / np.linalg.norm(r), dtype=torch.float32)
    # Every residual-stream state but the last (which has the final norm applied) lost the direction.
    for i, (b, a) in enumerate(zip(before[:-1], after[:-1])):
        assert (b @ unit).abs().max() > 1e-2, f"layer {i} had no component to remove"
        assert (a @ unit).abs().max() < 1e-4 * a.norm(dim=-1).max(), f"layer {i} still writes the direction"
    # The tied output head was untied and reads with the original weights.
    assert model.config.tie_word_embeddings is False
    assert model.get_output_embeddings().weight is not residual_writers(model)[0].weight
    assert torch.equal(model.get_output_embeddings().weight, head_before)


def test_hooks_give_the_same_model_as_the_weight_edit(tiny_model: Path) -> None:
    import torch

    model, tokenizer = load_model(resolve_model(str(tiny_model)), "cpu", "float32", None)
    r = np.random.default_rng(1).standard_normal(model.config.hidden_size)
    with ablation_hooks(model, r):
        hooked = _hidden(model, tokenizer).logits
    plain = _hidden(model, tokenizer).logits  # the hooks are gone again
    orthogonalize(model, r)
    edited = _hidden(model, tokenizer).logits
    assert torch.allclose(hooked, edited, atol=1e-4)
    assert not torch.allclose(plain, edited, atol=1e-3)


def test_saved_folder_reloads_as_the_edited_model(abliterated: Path, tiny_model: Path, best_layer: int) -> None:
    import torch

    record = json.loads((abliterated / "abliteration.json").read_text())
    assert record["layer"] == best_layer and record["source"] == str(tiny_model) and record["harmless"] == "helpful"
    assert record["n_direction_prompts"] == [176, 176]
    model, tokenizer = load_model(resolve_model(str(abliterated)), "cpu", "float32", None)
    base, _ = load_model(resolve_model(str(tiny_model)), "cpu", "float32", None)
    assert model.config.tie_word_embeddings is False
    assert torch.equal(model.get_output_embeddings().weight, base.get_output_embeddings().weight)
    assert not torch.equal(residual_writers(model)[0].weight, residual_writers(base)[0].weight)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_check_flags_the_abliterated_model(abliterated: Path, tiny_model: Path, seed: int) -> None:
    check = _check(abliterated, tiny_model, seed)
    best = check.comparison.best
    assert best.direction_cosine < 0.5 and best.projection_ratio < 0.5
    assert any("refusal direction turned" in p for p in check.problems)
    assert any("moved toward the harmless side" in p for p in check.problems)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_check_does_not_flag_a_random_direction_removed(tiny_model: Path, tmp_path: Path, seed: int) -> None:
    """The negative control: the same weight edit along a random direction is not a refusal change."""
    model, tokenizer = load_model(resolve_model(str(tiny_model)), "cpu", "float32", None)
    orthogonalize(model, np.random.default_rng(seed).standard_normal(model.config.hidden_size))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    check = _check(tmp_path, tiny_model, seed)
    assert check.problems == (), check.problems
    assert check.comparison.best.projection_ratio > 0.7


def test_check_flags_it_as_users_run_it(pytester: pytest.Pytester, abliterated: Path, tiny_model: Path) -> None:
    result = run_suite(pytester, f"--model={abliterated}", f"--baseline={tiny_model}", "--activations",
                       *PERMISSIVE, "-k", "activations")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*refusal direction turned*", "*activation check*FAIL*"])
    assert summary(pytester)["activations"]["passed"] is False


def test_bad_inputs_are_clear_errors(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = load_model(resolve_model(str(tiny_model)), "cpu", "float32", None)
    with pytest.raises(ValueError, match="hidden size 32, got shape \\(31,\\)"):
        orthogonalize(model, np.ones(31))
    with pytest.raises(ValueError, match="zero length"):
        orthogonalize(model, np.zeros(32))
    with pytest.raises(ValueError, match="Llama-style model"):
        residual_writers(model.model.layers[0])
    assert main(["--model", str(tiny_model), "--layer", "3", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--layer 3" in err and "has layers 1 .. 2" in err


def test_layer_search_scores_each_candidate_and_respects_the_kl_bound(tiny_model: Path, tmp_path: Path) -> None:
    # Two layers: the search tries layers 1 .. 80% of the depth, here layer 1 only.
    record = abliterate(str(tiny_model), tmp_path / "searched", harmless="helpful", max_kl=1e9)
    (tried,) = record.candidates
    assert record.layer == 1 and tried["layer"] == 1
    assert tried["refusals"] == 0.0 and tried["kl"] > 0.0  # random text is never a refusal; the edit moved it
    with pytest.raises(ValueError, match="no candidate layer keeps the harmless next-token KL within 0.0"):
        abliterate(str(tiny_model), tmp_path / "bounded", harmless="helpful", max_kl=0.0)
    with pytest.raises(ValueError, match="harmless pool 'alpaca': choose one of borderline, helpful"):
        abliterate(str(tiny_model), tmp_path / "x", harmless="alpaca")
