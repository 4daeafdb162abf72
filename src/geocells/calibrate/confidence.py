"""Confidence of a prediction: the probability that a candidate cell is within 100 m.

A logistic model on three features of each top-k candidate, fitted on validation
queries: its score, its gap to the top-1 score, and the query's top-1/top-2 margin. The
features are standardised with the fit's mean and standard deviation, all of which are
stored in ``meta.json`` so a database carries its own confidence model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FEATURES = ("score", "gap_to_top", "top_margin")


def candidate_features(scores: np.ndarray) -> np.ndarray:
    """Features of ranked candidates: ``scores [Q, k] (k >= 2, descending) -> [Q, k, 3]``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"confidence needs ranked scores [Q, k>=2], got shape {scores.shape}")
    top = scores[:, :1]
    margin = np.broadcast_to(scores[:, :1] - scores[:, 1:2], scores.shape)
    return np.stack([scores, top - scores, margin], axis=2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class ConfidenceModel:
    """Logistic model ``P(within radius) = sigmoid(w · standardised(features) + b)``."""

    weights: list[float]
    bias: float
    mean: list[float]
    std: list[float]
    radius_m: float = 100.0

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        correct: np.ndarray,
        radius_m: float = 100.0,
        l2: float = 1e-2,
        iterations: int = 50,
    ) -> ConfidenceModel:
        """Fit on ranked ``scores [Q, k]`` and ``correct bool [Q, k]`` (candidate within radius)."""
        features = candidate_features(scores).reshape(-1, len(FEATURES))
        labels = np.asarray(correct, dtype=np.float64).reshape(-1)
        if len(labels) != len(features):
            raise ValueError(f"correct has {len(labels)} entries, scores {len(features)}")
        mean = features.mean(axis=0)
        std = np.maximum(features.std(axis=0), 1e-6)
        design = np.hstack([(features - mean) / std, np.ones((len(features), 1))])
        penalty = np.full(design.shape[1], l2)
        penalty[-1] = 0.0  # the bias is not shrunk
        params = np.zeros(design.shape[1])
        for _ in range(iterations):  # Newton steps (IRLS) on the ridge-penalised log-likelihood
            prob = _sigmoid(design @ params)
            gradient = design.T @ (prob - labels) + penalty * params
            hessian = (design * (prob * (1 - prob))[:, None]).T @ design + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            params -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        return cls(
            weights=params[:-1].tolist(),
            bias=float(params[-1]),
            mean=mean.tolist(),
            std=std.tolist(),
            radius_m=radius_m,
        )

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities ``[Q, k]`` for ranked ``scores [Q, k]``."""
        features = (candidate_features(scores) - np.asarray(self.mean)) / np.asarray(self.std)
        return _sigmoid(features @ np.asarray(self.weights) + self.bias)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored under ``meta.json["confidence"]``)."""
        return {"features": list(FEATURES), **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceModel:
        """Rebuild from ``to_dict`` output; other feature sets are refused."""
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"confidence model features {data.get('features')} != {FEATURES}")
        fields = {key: data[key] for key in ("weights", "bias", "mean", "std", "radius_m")}
        return cls(**fields)


def expected_calibration_error(
    probability: np.ndarray, correct: np.ndarray, bins: int = 10
) -> float:
    """ECE: bin-size-weighted mean |accuracy - mean probability| over equal-width bins."""
    probability = np.asarray(probability, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(probability) == 0:
        raise ValueError("expected_calibration_error of an empty set")
    which = np.minimum((probability * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - probability[members].mean())
    return float(total / len(probability))


def cross_fitted_ece(
    scores: np.ndarray, correct: np.ndarray, folds: int = 2, seed: int = 0
) -> float:
    """Top-1 ECE with each query scored by a model fitted on the other folds (honest ECE)."""
    order = np.random.default_rng(seed).permutation(len(scores))
    probability = np.empty(len(scores))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        model = ConfidenceModel.fit(scores[train], correct[train])
        probability[fold] = model.predict(scores[fold])[:, 0]
    return expected_calibration_error(probability, correct[:, 0])
