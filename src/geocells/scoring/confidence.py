"""Confidence of a prediction: the probability that a candidate cell is within 100 m.

A raw similarity says little on its own: a blank, white or noise image can score higher
than any real view (it is "close" to everything). So the confidence is calibrated on
what separates right from wrong answers on the validation queries, relative to them:

- **within the val range, never beyond.** Each candidate is described by its score, its
  gap to the top-1 and its query's top-1/top-2 margin, each clipped to the range the val
  queries span, plus whether it is the top-1. A logistic model
  ``P(within radius) = sigmoid(w · standardised(features) + b)`` is fitted on the val
  top-k; clipped features cannot extrapolate a score no val query had to 99 %.
- **no evidence, no confidence.** A query the val set does not resemble gets at most the
  val base rate (the share of val queries whose top-1 is within the radius): when its
  *typicality* (mean cosine similarity of its embedding to its ``neighbours`` nearest val
  embeddings) is below the ``alpha`` quantile of the val queries' own (leave-one-out)
  typicality, when its top-1 score lies outside the range of the val top-1 scores, or
  when its shape (width / height) lies outside the val images' range widened by
  ``ASPECT_SLACK`` (a 2:1 panorama given as a perspective view of a 1:1 or 4:3 val set).

Everything but the val embeddings is stored in ``meta.json["confidence"]``; the val
embeddings (float16, at most ``MAX_REFERENCE`` of them) in ``DB/confidence.npy``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FEATURES = ("score", "gap_to_top", "top_margin", "is_top")
VERSION = 2
REFERENCE_FILE = "confidence.npy"  # val embeddings, float16 [R, D]
MAX_REFERENCE = 4096
ASPECT_SLACK = 1.2  # a query's width/height may be this factor beyond the val range


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _range(values: np.ndarray) -> list[float]:
    return [float(np.min(values)), float(np.max(values))]


def aspect_ratios(images: list) -> np.ndarray:
    """width / height of uint8 HxWx3 arrays or PIL images -> ``[B]``."""
    ratios = []
    for image in images:
        if isinstance(image, np.ndarray):
            height, width = image.shape[:2]
        else:
            width, height = image.size
        ratios.append(width / max(height, 1))
    return np.asarray(ratios, np.float64)


def raw_features(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scores [Q, k]`` (k >= 2, descending) -> (scores, gap to top-1, margin) ``[Q, k]``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"confidence needs ranked scores [Q, k>=2], got shape {scores.shape}")
    gap = scores[:, :1] - scores
    margin = np.broadcast_to(scores[:, :1] - scores[:, 1:2], scores.shape)
    return scores, gap, margin


def typicality(queries: np.ndarray, reference: np.ndarray, neighbours: int, skip_self=False):
    """Mean cosine similarity of each query ``[Q, D]`` to its ``neighbours`` nearest rows of
    ``reference [R, D]`` -> ``[Q]``; ``skip_self``: queries are the reference (leave one out)."""
    queries = np.asarray(queries, np.float32)
    reference = np.asarray(reference, np.float32)
    out = np.empty(len(queries))
    for start in range(0, len(queries), 1024):
        sims = queries[start : start + 1024] @ reference.T
        if skip_self:
            rows = np.arange(len(sims))
            sims[rows, start + rows] = -np.inf
        k = min(neighbours, sims.shape[1] - (1 if skip_self else 0))
        out[start : start + len(sims)] = np.sort(sims, axis=1)[:, -k:].mean(axis=1)
    return out


@dataclass
class ConfidenceModel:
    """Clipped features -> logistic probability, capped at ``base_rate`` outside the val data."""

    weights: list[float]
    bias: float
    mean: list[float]
    std: list[float]
    score_range: list[float]  # [min, max] of the val candidates' scores
    top_range: list[float]  # [min, max] of the val top-1 scores
    gap_range: list[float]  # of the val gaps to the top-1
    margin_range: list[float]  # of the val top-1/top-2 margins
    base_rate: float  # share of val queries whose top-1 is within radius_m
    typicality_floor: float  # the alpha quantile of the val (leave-one-out) typicality
    aspect_range: list[float]  # [min, max] width / height of the val images
    neighbours: int = 5
    alpha: float = 0.01
    radius_m: float = 100.0

    def features(self, scores: np.ndarray) -> np.ndarray:
        """``scores [Q, k]`` -> ``[Q, k, 4]``: ``FEATURES``, clipped to the val ranges."""
        score, gap, margin = raw_features(scores)
        top = np.zeros(score.shape)
        top[:, 0] = 1.0
        return np.stack(
            [
                np.clip(score, *self.score_range),
                np.clip(gap, *self.gap_range),
                np.clip(margin, *self.margin_range),
                top,
            ],
            axis=2,
        )

    def outside(
        self,
        scores: np.ndarray,
        query_typicality: np.ndarray | None = None,
        aspect: np.ndarray | None = None,
    ) -> np.ndarray:
        """``bool [Q]``: queries the val data say nothing about (see the module docstring)."""
        top = np.asarray(scores, np.float64)[:, 0]
        out = (top < self.top_range[0]) | (top > self.top_range[1])
        if query_typicality is not None:
            out |= np.asarray(query_typicality) < self.typicality_floor
        if aspect is not None:
            low, high = self.aspect_range[0] / ASPECT_SLACK, self.aspect_range[1] * ASPECT_SLACK
            aspect = np.asarray(aspect, np.float64)
            out |= (aspect < low) | (aspect > high)
        return out

    def predict(
        self,
        scores: np.ndarray,
        query_typicality: np.ndarray | None = None,
        aspect: np.ndarray | None = None,
    ) -> np.ndarray:
        """Probabilities ``[Q, k]`` for ranked ``scores [Q, k]``; ``query_typicality [Q]``
        (``typicality`` against the stored val embeddings) and the images' ``aspect [Q]``
        (width / height; NaN: unknown) enable the out-of-data caps."""
        features = (self.features(scores) - np.asarray(self.mean)) / np.asarray(self.std)
        probability = _sigmoid(features @ np.asarray(self.weights) + self.bias)
        capped = self.outside(scores, query_typicality, aspect)
        probability[capped] = np.minimum(probability[capped], self.base_rate)
        return probability

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored under ``meta.json["confidence"]``)."""
        return {"version": VERSION, "features": list(FEATURES), **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceModel:
        """Rebuild from ``to_dict`` output; other versions are refused (recalibrate)."""
        if data.get("version") != VERSION or list(data.get("features", [])) != list(FEATURES):
            raise ValueError(
                f"confidence model version {data.get('version')} / features "
                f"{data.get('features')}; this geocells reads version {VERSION}, {FEATURES}"
            )
        names = [name for name in cls.__dataclass_fields__]
        return cls(**{name: data[name] for name in names})


def fit_confidence_model(
    scores: np.ndarray,
    correct: np.ndarray,
    embeddings: np.ndarray,
    aspect: np.ndarray | None = None,
    radius_m: float = 100.0,
    neighbours: int = 5,
    alpha: float = 0.01,
    l2: float = 1.0,
) -> ConfidenceModel:
    """Fit on val ``scores [Q, k]``, ``correct bool [Q, k]`` (candidate within radius), the
    val query ``embeddings [Q, D]`` (the reference of the typicality) and the val images'
    ``aspect [Q]`` (width / height; None: any shape is in range).

    ``l2`` is a ridge penalty on the standardised weights: with the few correct answers of
    a small or weak database it keeps the model near the base rate instead of certain.
    """
    scores = np.asarray(scores, np.float64)
    correct = np.asarray(correct, bool)
    if correct.shape != scores.shape:
        raise ValueError(f"correct has shape {correct.shape}, scores {scores.shape}")
    if len(scores) < 2:
        raise ValueError(f"confidence needs at least 2 val queries, got {len(scores)}")
    score, gap, margin = raw_features(scores)
    reference = reference_embeddings(embeddings)  # what the database stores and compares to
    own = typicality(reference, reference, neighbours, skip_self=True)
    model = ConfidenceModel(
        weights=[0.0] * len(FEATURES),
        bias=0.0,
        mean=[0.0] * len(FEATURES),
        std=[1.0] * len(FEATURES),
        score_range=_range(score),
        top_range=_range(score[:, 0]),
        gap_range=_range(gap),
        margin_range=_range(margin[:, 0]),
        base_rate=float(correct[:, 0].mean()),
        typicality_floor=float(np.quantile(own, alpha)),
        aspect_range=[0.0, 1e9] if aspect is None else _range(aspect),
        neighbours=neighbours,
        alpha=alpha,
        radius_m=radius_m,
    )
    features = model.features(scores).reshape(-1, len(FEATURES))
    mean, std = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-6)
    weights, bias = _logistic((features - mean) / std, correct.reshape(-1).astype(float), l2)
    model.weights, model.bias = weights.tolist(), bias
    model.mean, model.std = mean.tolist(), std.tolist()
    return model


def _logistic(design: np.ndarray, labels: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Ridge-penalised logistic regression by Newton steps (IRLS): (weights, bias)."""
    design = np.hstack([design, np.ones((len(design), 1))])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    params = np.zeros(design.shape[1])
    for _ in range(50):
        prob = _sigmoid(design @ params)
        gradient = design.T @ (prob - labels) + penalty * params
        hessian = (design * (prob * (1 - prob))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        params -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return params[:-1], float(params[-1])


def reference_embeddings(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """At most ``MAX_REFERENCE`` val embeddings (a seeded sample), float16, to store."""
    embeddings = np.asarray(embeddings, np.float32)
    if len(embeddings) > MAX_REFERENCE:
        keep = np.random.default_rng(seed).choice(len(embeddings), MAX_REFERENCE, replace=False)
        embeddings = embeddings[np.sort(keep)]
    return embeddings.astype(np.float16)


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
    scores: np.ndarray, correct: np.ndarray, embeddings: np.ndarray, folds: int = 2, seed: int = 0
) -> float:
    """Top-1 ECE with each query scored by a model fitted on the other folds (honest ECE)."""
    order = np.random.default_rng(seed).permutation(len(scores))
    probability = np.empty(len(scores))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        model = fit_confidence_model(scores[train], correct[train], embeddings[train])
        near = typicality(embeddings[fold], embeddings[train], model.neighbours)
        probability[fold] = model.predict(scores[fold], near)[:, 0]
    return expected_calibration_error(probability, correct[:, 0])
