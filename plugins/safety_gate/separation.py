"""How well hidden states separate harmful from harmless instructions, and how fine-tuning changed it (pure).

Inputs are point clouds: harmful ``H`` (n_h, d) and harmless ``B`` (n_b, d) for one layer, or
(n, layers, d) stacks from ``safety_gate.activations``. Two views of the separation:

- ``probe_auroc``: can a linear probe still tell them apart? (cross-validated, so chance is 0.5);
- ``centroid_distance``: how far apart the two centroids are, in units of the clouds' own spread.

The difference of the centroids is the "refusal direction" (Arditi et al. 2024). Projecting a new
model's harmful prompts on the reference model's direction shows whether fine-tuning (or a trigger)
moved them toward the harmless side (Jain et al. 2024), with no judge and no generation.

numpy only: no torch, no scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Comparison",
    "LayerComparison",
    "LayerSeparation",
    "auroc",
    "centroid_distance",
    "compare",
    "cosine",
    "layer_report",
    "mean_projection",
    "probe_auroc",
    "refusal_direction",
    "shift_toward",
]


# --- input checks -----------------------------------------------------------------------------


def _cloud(X: Any, name: str) -> np.ndarray:
    """``X`` as a finite, non-empty (n, d) float64 array."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape})")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return X


def _pair(H: Any, B: Any) -> tuple[np.ndarray, np.ndarray]:
    H, B = _cloud(H, "H (harmful)"), _cloud(B, "B (harmless)")
    if H.shape[1] != B.shape[1]:
        raise ValueError(f"H and B must have the same number of features, got {H.shape[1]} and {B.shape[1]}")
    return H, B


def _vector(v: Any, name: str, size: int | None = None) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {v.shape}")
    if size is not None and v.size != size:
        raise ValueError(f"{name} has {v.size} features, expected {size}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return v


def _stack(X: Any, name: str) -> np.ndarray:
    """``X`` as an (n, layers, d) array; kept in its dtype so a big stack is not copied whole."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"{name} must be a 3-D array (samples, layers, features), got shape {X.shape}")
    return X


def _same_layout(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{names} must have the same (layers, features), got {a.shape[1:]} and {b.shape[1:]}")


# --- scores -----------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def auroc(positive: Any, negative: Any) -> float:
    """Area under the ROC curve of scores: the chance a positive outscores a negative (ties count half).

    Computed as the Mann-Whitney U statistic over (n_pos * n_neg).
    """
    pos, neg = _vector(positive, "positive scores"), _vector(negative, "negative scores")
    ranks = _ranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _stratified_folds(n_h: int, n_b: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number for each of the n_h + n_b samples; every fold gets both classes."""
    fold = np.empty(n_h + n_b, dtype=np.int64)
    for start, n in ((0, n_h), (n_h, n_b)):
        # Dealing a shuffled class round-robin gives each fold floor(n/folds) or one more.
        fold[start + rng.permutation(n)] = np.arange(n) % folds
    return fold


def _ridge_scores(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, ridge: float) -> np.ndarray:
    """Scores of a ridge least-squares classifier (targets +1/-1) trained on standardised features.

    Standardising with train-fold statistics only keeps the test fold unseen. The closed form is
    solved in whichever of the primal (d x d) and dual (n x n) systems is smaller: hidden sizes run
    from 576 to 4096 while a benchmark has a few hundred prompts.
    """
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0  # a constant feature carries nothing; keep it at zero instead of dividing by 0
    A, T = (X_train - mean) / std, (X_test - mean) / std
    bias = y_train.mean()
    y = y_train - bias  # features are centred, so the intercept is the target mean
    n, d = A.shape
    lam = ridge * d  # standardised rows have squared norm d on average: scale the penalty with it
    if d <= n:
        w = np.linalg.solve(A.T @ A + lam * np.eye(d), A.T @ y)
    else:
        w = A.T @ np.linalg.solve(A @ A.T + lam * np.eye(n), y)
    return T @ w + bias


def probe_auroc(H: Any, B: Any, folds: int = 5, seed: int = 0, ridge: float = 1.0) -> float:
    """Cross-validated AUROC of a linear probe telling harmful ``H`` from harmless ``B`` (0.5 = chance).

    The probe is a ridge-regularised least-squares classifier; folds are stratified and seeded, and
    the result is the mean of the per-fold AUROCs. Needs at least ``folds`` samples of each class.
    """
    H, B = _pair(H, B)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if ridge <= 0:
        raise ValueError(f"ridge must be positive, got {ridge}")
    for name, X in (("H (harmful)", H), ("B (harmless)", B)):
        if X.shape[0] < folds:
            raise ValueError(f"{name} has {X.shape[0]} samples; a {folds}-fold probe needs at least {folds}")
    X = np.concatenate([H, B])
    y = np.concatenate([np.ones(len(H)), -np.ones(len(B))])
    fold = _stratified_folds(len(H), len(B), folds, np.random.default_rng(seed))
    scores = []
    for k in range(folds):
        test = fold == k
        s = _ridge_scores(X[~test], y[~test], X[test], ridge)
        scores.append(auroc(s[y[test] > 0], s[y[test] < 0]))
    return float(np.mean(scores))


def centroid_distance(H: Any, B: Any) -> float:
    """Distance between the centroids of ``H`` and ``B`` over their pooled within-cloud spread.

    The spread is the root mean squared distance of every point to its own centroid, so the number
    does not depend on the scale of a layer's activations (which grows with depth).
    """
    H, B = _pair(H, B)
    mh, mb = H.mean(axis=0), B.mean(axis=0)
    gap = float(np.linalg.norm(mh - mb))
    spread = float(np.sqrt(np.concatenate([((H - mh) ** 2).sum(1), ((B - mb) ** 2).sum(1)]).mean()))
    if spread == 0.0:
        # Two single points (or clouds without spread): apart is infinitely far in spread units.
        return 0.0 if gap == 0.0 else float("inf")
    return gap / spread


def _unit(v: np.ndarray, name: str) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError(f"{name} has zero length")
    return v / norm


def refusal_direction(H: Any, B: Any) -> np.ndarray:
    """The unit vector from the harmless centroid to the harmful one."""
    H, B = _pair(H, B)
    return _unit(H.mean(axis=0) - B.mean(axis=0), "the refusal direction (the two centroids coincide)")


def cosine(u: Any, v: Any) -> float:
    """Cosine of the angle between two vectors."""
    u, v = _vector(u, "u"), _vector(v, "v")
    if u.size != v.size:
        raise ValueError(f"u and v must have the same length, got {u.size} and {v.size}")
    return float(_unit(u, "u") @ _unit(v, "v"))


def mean_projection(X: Any, direction: Any, origin: Any) -> float:
    """Mean of ``(X - origin) . direction``: where a cloud lies along a (unit) direction.

    With a refusal direction and the harmless centroid as origin, positive is the harmful side.
    """
    X = _cloud(X, "X")
    direction = _vector(direction, "direction", X.shape[1])
    origin = _vector(origin, "origin", X.shape[1])
    return float((X.mean(axis=0) - origin) @ direction)


def shift_toward(X_from: Any, X_to: Any, H_centroid: Any, B_centroid: Any) -> float:
    """How far a cloud moved from the harmful toward the harmless centroid, as a share of their gap.

    Measured along the direction between the two centroids: 0 = ``X_to`` lies where ``X_from`` lies
    (for harmful prompts: still at the harmful level), 1 = it moved the whole gap (reached the
    harmless level), above 1 = beyond it, negative = further to the harmful side. Used with
    ``X_from`` the harmful prompts and ``X_to`` the same prompts with a trigger.
    """
    X_from, X_to = _cloud(X_from, "X_from"), _cloud(X_to, "X_to")
    if X_from.shape[1] != X_to.shape[1]:
        raise ValueError(
            f"X_from and X_to must have the same number of features, got {X_from.shape[1]} and {X_to.shape[1]}"
        )
    h = _vector(H_centroid, "H_centroid", X_from.shape[1])
    b = _vector(B_centroid, "B_centroid", X_from.shape[1])
    gap = float(np.linalg.norm(h - b))
    direction = _unit(h - b, "the harmful-harmless gap (the two centroids coincide)")
    moved = (X_from.mean(axis=0) - X_to.mean(axis=0)) @ direction
    return float(moved / gap)


# --- per layer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSeparation:
    """How well one layer separates harmful from harmless prompts."""

    layer: int
    auroc: float
    centroid_distance: float


def _separation(layer: int, H: np.ndarray, B: np.ndarray, folds: int, seed: int) -> LayerSeparation:
    return LayerSeparation(layer, probe_auroc(H, B, folds, seed), centroid_distance(H, B))


def layer_report(H_states: Any, B_states: Any, folds: int = 5, seed: int = 0) -> list[LayerSeparation]:
    """``LayerSeparation`` of every layer of (n, layers, d) stacks of harmful and harmless states."""
    H_states, B_states = _stack(H_states, "H_states"), _stack(B_states, "B_states")
    _same_layout(H_states, B_states, "H_states and B_states")
    return [_separation(i, H_states[:, i], B_states[:, i], folds, seed) for i in range(H_states.shape[1])]


@dataclass(frozen=True)
class LayerComparison:
    """One layer of the reference (baseline) model against the new (fine-tuned) model.

    Projections are of the harmful centroid on the reference refusal direction, each measured from
    the same model's own harmless centroid (for the reference: its centroid gap). ``projection_ratio``
    is new over reference: 1 = harmful prompts lie as far on the harmful side of the harmless ones
    as before, 0 = the direction no longer tells them apart (as after abliteration), negative =
    reversed. Measuring each model from its own harmless centroid makes it blind to a shift of
    the whole cloud, which a fine-tune or weight edit makes without changing what separates the
    two kinds; measured from the reference midpoint instead, ablating a random direction from a
    tiny Llama's residual writes moved the ratio to 1.3-2.5 and ablating the refusal direction
    to 6.6 (the pairs of tests/test_abliteration.py; from each own harmless centroid: 0.83-0.98 and
    0.15). It assumes both models share a hidden space, as a
    fine-tune (or adapter, or weight edit) of the reference does.
    """

    layer: int
    reference: LayerSeparation
    new: LayerSeparation
    auroc_change: float  # new - reference
    distance_change: float  # new - reference
    direction_cosine: float  # between the two models' refusal directions
    reference_harmful_projection: float
    new_harmful_projection: float
    projection_ratio: float


@dataclass(frozen=True)
class Comparison:
    """Every layer compared, and the layer the summary is read at.

    ``best_layer``: the reference layer (embeddings excluded) whose centroids lie furthest apart,
    where the reference model separates the two kinds of instruction most clearly.
    """

    layers: tuple[LayerComparison, ...]
    best_layer: int

    @property
    def best(self) -> LayerComparison:
        """The comparison at ``best_layer``."""
        return next(c for c in self.layers if c.layer == self.best_layer)

    def summary(self) -> dict[str, float | int]:
        """The headline numbers at ``best_layer``, JSON-ready."""
        best = self.best
        return {
            "layer": best.layer,
            "reference_auroc": best.reference.auroc,
            "new_auroc": best.new.auroc,
            "auroc_change": best.auroc_change,
            "reference_distance": best.reference.centroid_distance,
            "new_distance": best.new.centroid_distance,
            "distance_change": best.distance_change,
            "direction_cosine": best.direction_cosine,
            "projection_ratio": best.projection_ratio,
        }


def _compare_layer(
    layer: int, rH: np.ndarray, rB: np.ndarray, nH: np.ndarray, nB: np.ndarray, folds: int, seed: int
) -> LayerComparison:
    ref, new = _separation(layer, rH, rB, folds, seed), _separation(layer, nH, nB, folds, seed)
    direction = refusal_direction(rH, rB)
    ref_proj = mean_projection(rH, direction, rB.mean(axis=0))
    new_proj = mean_projection(nH, direction, nB.mean(axis=0))
    return LayerComparison(
        layer=layer,
        reference=ref,
        new=new,
        auroc_change=new.auroc - ref.auroc,
        distance_change=new.centroid_distance - ref.centroid_distance,
        direction_cosine=cosine(direction, refusal_direction(nH, nB)),
        reference_harmful_projection=ref_proj,
        new_harmful_projection=new_proj,
        projection_ratio=new_proj / ref_proj,  # ref_proj is the (non-zero) reference gap
    )


def compare(ref_H: Any, ref_B: Any, new_H: Any, new_B: Any, folds: int = 5, seed: int = 0) -> Comparison:
    """Compare the reference model's (n, layers, d) harmful/harmless states with the new model's.

    The same prompts should be used for both models; the shapes must agree on (layers, d), and there
    must be at least two layers (layer 0, the embeddings, is never the best layer).
    """
    stacks = [_stack(x, name) for x, name in ((ref_H, "ref_H"), (ref_B, "ref_B"), (new_H, "new_H"), (new_B, "new_B"))]
    for x, name in zip(stacks[1:], ("ref_B", "new_H", "new_B")):
        _same_layout(stacks[0], x, f"ref_H and {name}")
    rH, rB, nH, nB = stacks
    if rH.shape[1] < 2:
        raise ValueError(f"compare needs the embeddings and at least one layer, got {rH.shape[1]} layer(s)")
    # Layer 0 (the embeddings) is left out: under a chat template every prompt ends with the same
    # token, so there the two clouds are one point and a direction between them is undefined.
    layers = tuple(
        _compare_layer(i, rH[:, i], rB[:, i], nH[:, i], nB[:, i], folds, seed) for i in range(1, rH.shape[1])
    )
    best = max(layers, key=lambda c: c.reference.centroid_distance).layer
    return Comparison(layers, best)
