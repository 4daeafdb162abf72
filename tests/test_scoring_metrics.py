"""Metric functions on hand-computed cases."""

import math

import numpy as np
import pytest

from geocells.scoring import metrics


def test_recall_within_counts_inclusive_threshold():
    errors = [10.0, 25.0, 60.0, 150.0, 2000.0]
    assert metrics.recall_within(errors, 25) == pytest.approx(2 / 5)
    assert metrics.recall_within(errors, 100) == pytest.approx(3 / 5)
    assert metrics.recall_within(errors, 1000) == pytest.approx(4 / 5)
    assert metrics.recall_within(errors, 5) == 0.0


def test_recall_curve_is_monotone_and_keyed_by_threshold():
    curve = metrics.recall_curve([10.0, 25.0, 60.0, 150.0, 2000.0])
    assert list(curve) == [25, 50, 100, 200, 500, 1000]
    assert list(curve.values()) == pytest.approx([0.4, 0.4, 0.6, 0.8, 0.8, 0.8])


def test_median_and_mean_error():
    errors = [10.0, 30.0, 20.0, 1000.0]
    assert metrics.median_error(errors) == pytest.approx(25.0)
    assert metrics.mean_error(errors) == pytest.approx(265.0)


def test_bad_errors_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        metrics.recall_within([1.0, float("nan")], 100)
    with pytest.raises(ValueError, match="1-D"):
        metrics.median_error(np.zeros((2, 2)))


def test_recall_at_k_uses_any_of_first_k():
    topk = np.array(
        [
            [500.0, 50.0, 900.0],  # hit at rank 2
            [80.0, 900.0, 900.0],  # hit at rank 1
            [900.0, 900.0, 90.0],  # hit at rank 3
            [900.0, 900.0, 900.0],  # never
        ]
    )
    assert metrics.recall_at_k(topk, 1, 100) == pytest.approx(1 / 4)
    assert metrics.recall_at_k(topk, 2, 100) == pytest.approx(2 / 4)
    assert metrics.recall_at_k(topk, 3, 100) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="k=4"):
        metrics.recall_at_k(topk, 4, 100)


def test_rank_within_is_position_of_first_near_item():
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.1],  # near items 2 and 3 -> best near is 0.7 -> rank 3
            [0.2, 0.9, 0.5, 0.4],  # near item 1 scores highest -> rank 1
            [0.5, 0.4, 0.3, 0.2],  # nothing near -> 0
            [0.6, 0.6, 0.1, 0.0],  # near item 1 ties the best far item -> rank 1
        ]
    )
    distances = np.array(
        [
            [900.0, 300.0, 150.0, 10.0],
            [500.0, 199.0, 800.0, 800.0],
            [300.0, 300.0, 300.0, 300.0],
            [900.0, 0.0, 900.0, 900.0],
        ]
    )
    np.testing.assert_array_equal(metrics.rank_within(scores, distances, 200), [3, 1, 0, 1])
    summary = metrics.rank_summary(np.array([3, 1, 0, 1]))
    assert summary["median_rank"] == 1.0
    assert summary["share_without_near_item"] == pytest.approx(0.25)


def test_rank_within_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        metrics.rank_within(np.zeros((2, 3)), np.zeros((2, 4)))


def test_summarize_keys_and_values():
    errors = np.array([10.0, 120.0, 600.0, 40.0])
    topk = np.stack([errors, [900.0, 90.0, 900.0, 900.0]], axis=1)
    summary = metrics.summarize(errors, topk, np.array([1, 2, 0, 1]), top_k=(1, 2, 5))
    assert summary["queries"] == 4
    assert summary["R@1@25m"] == pytest.approx(0.25)
    assert summary["R@1@50m"] == pytest.approx(0.5)
    assert summary["R@1@200m"] == pytest.approx(0.75)
    assert summary["R@1@1000m"] == pytest.approx(1.0)
    assert summary["median_error_m"] == pytest.approx(80.0)
    assert summary["R@2@100m"] == pytest.approx(0.75)
    assert "R@5@100m" not in summary  # only 2 answers were given
    assert summary["median_rank"] == 1.0


def test_coverage_density_counts_images_within_radius():
    # One degree of latitude is ~111.2 km, so 0.001 deg ~ 111 m and 0.01 deg ~ 1.1 km.
    train_lat = np.array([0.0, 0.001, 0.002, 0.01, 0.02])
    train_lon = np.zeros(5)
    density = metrics.coverage_density_per_km2(
        np.array([0.0, 0.02]), np.array([0.0, 0.0]), train_lat, train_lon, radius_m=500
    )
    area_km2 = math.pi * 0.5**2
    np.testing.assert_allclose(density, [3 / area_km2, 1 / area_km2])
    labels = metrics.density_strata(density, urban_threshold_per_km2=2 / area_km2)
    assert labels.tolist() == ["urban", "rural"]


def test_covered_and_stratified():
    labels = metrics.covered_strata(np.array([1, 2, 3, 2], np.uint64), np.array([2, 5], np.uint64))
    assert labels.tolist() == ["uncovered", "covered", "uncovered", "covered"]
    result = metrics.stratified(labels, np.array([10.0, 300.0, 20.0, 50.0]))
    assert set(result) == {"covered", "uncovered"}
    assert result["covered"]["queries"] == 2
    assert result["covered"]["R@1@100m"] == pytest.approx(0.5)
    assert result["uncovered"]["R@1@25m"] == pytest.approx(1.0)
