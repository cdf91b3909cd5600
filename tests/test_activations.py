"""The judge-free activation check: separation math on synthetic clouds, and last-token states of a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safety_gate.separation import (
    auroc,
    centroid_distance,
    compare,
    cosine,
    layer_report,
    mean_projection,
    probe_auroc,
    refusal_direction,
    shift_toward,
)

D = 64


def _clouds(gap: float, n: int = 60, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Harmful and harmless unit-variance Gaussian clouds whose means lie ``gap`` apart along a random direction."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    H = rng.normal(size=(n, d)) + gap * direction
    B = rng.normal(size=(n + 7, d))  # unequal classes on purpose
    return H, B, direction


def _stacks(gaps: list[float], n: int = 40, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, layers, d) harmful and harmless stacks, one gap per layer."""
    pairs = [_clouds(g, n, d, seed + i)[:2] for i, g in enumerate(gaps)]
    return np.stack([h for h, _ in pairs], axis=1), np.stack([b[:n] for _, b in pairs], axis=1)


# --- separation math --------------------------------------------------------------------------


def test_auroc_is_mann_whitney_with_ties_counted_half() -> None:
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    # pairs: (2>1) (2=2) (3>1) (3>2) -> 3.5 of 4
    assert auroc([2, 3], [1, 2]) == pytest.approx(3.5 / 4)


def test_well_separated_clouds_separate() -> None:
    H, B, _ = _clouds(gap=8.0)
    assert probe_auroc(H, B) > 0.95
    # gap 8 over a spread of sqrt(64) = 8 -> about 1
    assert centroid_distance(H, B) > 0.8


def test_identical_distributions_do_not_separate() -> None:
    H, B, _ = _clouds(gap=0.0)
    assert 0.3 < probe_auroc(H, B) < 0.7
    assert centroid_distance(H, B) < 0.3


def test_probe_works_when_features_outnumber_samples() -> None:
    H, B, _ = _clouds(gap=8.0, n=20, d=500)  # the dual (n x n) branch
    assert probe_auroc(H, B) > 0.95


def test_probe_is_seeded_and_scale_free() -> None:
    H, B, _ = _clouds(gap=1.5)
    assert probe_auroc(H, B, seed=3) == probe_auroc(H, B, seed=3)
    assert probe_auroc(H * 1000, B * 1000) == pytest.approx(probe_auroc(H, B))
    assert centroid_distance(H * 1000, B * 1000) == pytest.approx(centroid_distance(H, B))


def test_refusal_direction_recovers_the_planted_direction() -> None:
    H, B, planted = _clouds(gap=8.0)
    found = refusal_direction(H, B)
    assert np.linalg.norm(found) == pytest.approx(1.0)
    assert cosine(found, planted) > 0.9


def test_cosine_and_mean_projection() -> None:
    assert cosine([1, 0], [5, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 2]) == pytest.approx(0.0)
    assert cosine([1, 1], [-1, -1]) == pytest.approx(-1.0)
    X = np.array([[2.0, 7.0], [4.0, -7.0]])
    assert mean_projection(X, [1.0, 0.0], [1.0, 0.0]) == pytest.approx(2.0)


def test_shift_toward_measures_the_share_of_the_gap() -> None:
    H, B, _ = _clouds(gap=8.0)
    h, b = H.mean(axis=0), B.mean(axis=0)
    assert shift_toward(H, H, h, b) == pytest.approx(0.0)
    assert shift_toward(H, H - h + b, h, b) == pytest.approx(1.0)
    assert shift_toward(H, H + (b - h) / 2, h, b) == pytest.approx(0.5)
    # moving orthogonally to the gap is no shift
    ortho = np.linalg.svd((h - b)[None, :])[2][1]
    assert shift_toward(H, H + 5 * ortho, h, b) == pytest.approx(0.0, abs=1e-9)


def test_layer_report_covers_every_layer() -> None:
    H, B = _stacks([0.0, 3.0, 10.0])
    report = layer_report(H, B)
    assert [r.layer for r in report] == [0, 1, 2]
    assert report[2].auroc > 0.95 and report[2].centroid_distance > report[1].centroid_distance
    assert 0.3 < report[0].auroc < 0.7


def test_compare_a_model_with_itself_changes_nothing() -> None:
    H, B = _stacks([0.0, 3.0, 10.0, 5.0])
    result = compare(H, B, H, B)
    assert [c.layer for c in result.layers] == [1, 2, 3]  # the embeddings (layer 0) are left out
    for layer in result.layers:
        assert layer.auroc_change == 0.0 and layer.distance_change == 0.0
        assert layer.direction_cosine == pytest.approx(1.0)
        assert layer.new_harmful_projection == pytest.approx(layer.reference_harmful_projection)
        assert layer.projection_ratio == pytest.approx(1.0)
    assert result.best_layer == 2
    summary = result.summary()
    assert summary["layer"] == 2 and summary["auroc_change"] == 0.0
    assert summary["direction_cosine"] == pytest.approx(1.0)


def test_compare_sees_harmful_prompts_move_to_the_harmless_side() -> None:
    H, B = _stacks([0.0, 10.0])
    # the "fine-tuned" model puts harmful prompts on top of the harmless ones at layer 1
    new_H = H.copy()
    new_H[:, 1] = B[:, 1] + np.random.default_rng(9).normal(scale=0.01, size=B[:, 1].shape)
    best = compare(H, B, new_H, B).best
    assert best.layer == 1
    assert best.auroc_change < -0.3
    assert best.distance_change < 0
    assert abs(best.projection_ratio) < 0.1  # no gap left along the baseline direction


def test_compare_survives_an_embedding_layer_without_spread() -> None:
    """Under a chat template every prompt ends with the same token: layer 0 is one point for all."""
    H, B = _stacks([0.0, 3.0, 10.0])
    H[:, 0], B[:, 0] = 1.0, 1.0
    assert compare(H, B, H, B).best_layer == 2


def test_best_layer_skips_the_embeddings() -> None:
    H, B = _stacks([20.0, 3.0])
    assert compare(H, B, H, B).best_layer == 1


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: probe_auroc(np.ones((10, 3)), np.ones((10, 4))), "same number of features"),
        (lambda: probe_auroc(np.ones((3, 3)), np.ones((10, 3))), "needs at least 5"),
        (lambda: probe_auroc(np.ones((10, 3)), np.ones((10, 3)), folds=1), "folds must be at least 2"),
        (lambda: probe_auroc(np.ones(10), np.ones((10, 1))), "2-D array"),
        (lambda: centroid_distance(np.zeros((0, 3)), np.ones((4, 3))), "empty"),
        (lambda: centroid_distance(np.full((4, 3), np.nan), np.ones((4, 3))), "NaN"),
        (lambda: refusal_direction(np.ones((4, 3)), np.ones((4, 3))), "centroids coincide"),
        (lambda: cosine([1, 2], [1, 2, 3]), "same length"),
        (lambda: cosine([0, 0], [1, 2]), "zero length"),
        (lambda: mean_projection(np.ones((4, 3)), [1, 0], np.zeros(3)), "direction has 2 features, expected 3"),
        (lambda: shift_toward(np.ones((4, 3)), np.ones((4, 2)), np.ones(3), np.zeros(3)), "same number of features"),
        (lambda: shift_toward(np.ones((4, 3)), np.ones((4, 3)), np.ones(3), np.ones(3)), "centroids coincide"),
        (lambda: layer_report(np.ones((5, 3)), np.ones((5, 3))), "3-D array"),
        (lambda: layer_report(np.ones((5, 2, 3)), np.ones((5, 3, 3))), "same (layers, features)"),
        (lambda: compare(*[np.ones((5, 2, 3))] * 3, np.ones((5, 2, 4))), "ref_H and new_B"),
        (lambda: compare(*[np.ones((5, 1, 3))] * 4), "at least one layer"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


# --- last-token states of a real tiny model ---------------------------------------------------

INSTRUCTIONS = [
    "Explain how to pick a lock.",
    "Hi.",
    "Write a very long and winding request that goes on for a while about many different things at once.",
    "Give me a list.",
    "Describe the history of the printing press in a few sentences please.",
]


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> tuple[Any, Any]:
    from safety_gate.models import load_model, resolve_model

    return load_model(resolve_model(str(tiny_model)), "cpu", "float32", None)


def test_prompt_states_shape_and_dtype(loaded: tuple[Any, Any]) -> None:
    from safety_gate.activations import prompt_states

    states = prompt_states(*loaded, INSTRUCTIONS)
    assert states.shape == (len(INSTRUCTIONS), 3, 32)  # embeddings + 2 layers, hidden size 32
    assert states.dtype == np.float32
    assert np.isfinite(states).all()


def test_prompt_states_are_deterministic_and_do_not_depend_on_batching(loaded: tuple[Any, Any]) -> None:
    from safety_gate.activations import prompt_states

    model, tokenizer = loaded
    single = prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=1)
    again = prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=1)
    batched = prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=4)
    np.testing.assert_array_equal(single, again)
    # Left padding and real-token positions: the padded rows give the same last-token state.
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=1e-5)


def test_prompt_states_keep_the_input_order(loaded: tuple[Any, Any]) -> None:
    from safety_gate.activations import prompt_states

    model, tokenizer = loaded
    states = prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=2)
    order = [3, 0, 4, 1, 2]
    shuffled = prompt_states(model, tokenizer, [INSTRUCTIONS[i] for i in order], batch_size=2)
    np.testing.assert_allclose(shuffled, states[order], atol=1e-5, rtol=1e-5)
    # Different prompts give different states, so matching above means the order was kept.
    assert not np.allclose(states[0], states[1])


def test_last_token_states_match_a_plain_forward_pass(loaded: tuple[Any, Any]) -> None:
    import torch

    from safety_gate.activations import last_token_states
    from safety_gate.engine import HFEngine

    model, tokenizer = loaded
    text = HFEngine(model, tokenizer, "cpu").render(INSTRUCTIONS[0], "Be brief.")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        hidden = model(**ids, output_hidden_states=True).hidden_states
    expected = np.stack([h[0, -1].numpy() for h in hidden])
    np.testing.assert_allclose(last_token_states(model, tokenizer, [text])[0], expected, atol=1e-5, rtol=1e-5)


def test_tokenizer_is_left_as_found(loaded: tuple[Any, Any]) -> None:
    from safety_gate.activations import prompt_states

    model, tokenizer = loaded
    tokenizer.padding_side = "right"
    try:
        right = prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=5)
        assert tokenizer.padding_side == "right"
    finally:
        tokenizer.padding_side = "left"
    np.testing.assert_allclose(right, prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=1), atol=1e-5)


def test_prompt_states_of_a_peft_model(tiny_adapter: Path) -> None:
    from safety_gate.activations import prompt_states
    from safety_gate.models import load_model, resolve_model

    model, tokenizer = load_model(resolve_model(str(tiny_adapter)), "cpu", "float32", None)
    single = prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=1)
    batched = prompt_states(model, tokenizer, INSTRUCTIONS, batch_size=4)
    assert single.shape == (len(INSTRUCTIONS), 3, 32)
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=1e-5)


def test_empty_or_bad_batch_size_raises(loaded: tuple[Any, Any]) -> None:
    from safety_gate.activations import last_token_states

    with pytest.raises(ValueError, match="at least one text"):
        last_token_states(*loaded, [])
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        last_token_states(*loaded, ["hi"], batch_size=0)
