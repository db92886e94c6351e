"""Tests for labelrec.metrics against hand-computed toy matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from labelrec import metrics

# Toy data: 3 products x 5 tags.
#   product 0: gold {0, 2}, ranking by score 0, 1, 2, 3, 4
#   product 1: gold {1},    ranking by score 2, 3, 4, 1, 0
#   product 2: no gold tags, ranking 0, 1, 2, 3, 4
Y = np.array(
    [
        [1, 0, 1, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
)
S = np.array(
    [
        [0.9, 0.8, 0.7, 0.1, 0.0],
        [0.1, 0.2, 0.9, 0.8, 0.3],
        [0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
# inverse propensities for PSP; gold weights y * invp:
#   product 0: [1, 0, 2, 0, 0]; product 1: [0, 3, 0, 0, 0]; product 2: zeros
INVP = np.array([1.0, 3.0, 2.0, 1.0, 1.0])

# nDCG of product 0 at k>=3: hits at ranks 1 and 3 -> DCG = 1 + 1/log2(4) = 1.5,
# IDCG over min(k, 2) = 2 gold -> 1 + 1/log2(3) = 1.6309298 -> 0.9197208
NDCG_P0_AT3 = 0.9197207891
# nDCG of product 1 at k=5: single hit at rank 4 -> 1/log2(5) = 0.4306766, IDCG = 1
NDCG_P1_AT5 = 0.4306765581


# ----------------------------------------------------------------- ranking metrics


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 1 / 3),  # hits (1, 0, 0) / 1, mean over 3 products
        (3, 2 / 9),  # (2/3 + 0 + 0) / 3
        (5, 0.2),  # (2/5 + 1/5 + 0) / 3
        (10, 0.1),  # k > n_tags still divides by k: (2/10 + 1/10 + 0) / 3
    ],
)
def test_precision_at_k_hand_computed(k, expected):
    assert metrics.precision_at_k(Y, S, k) == pytest.approx(expected)


def test_per_product_precision_includes_products_without_gold():
    # k=5: product 0 has 2 gold, product 1 has 1 gold (< k): still divided by 5
    np.testing.assert_allclose(metrics.per_product_precision(Y, S, 5), [0.4, 0.2, 0.0])


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 0.25),  # product 0: 1/2, product 1: 0/1; product 2 excluded
        (3, 0.5),  # product 0: 2/2, product 1: 0/1
        (5, 1.0),  # both find all gold tags
        (10, 1.0),
    ],
)
def test_recall_at_k_hand_computed(k, expected):
    assert metrics.recall_at_k(Y, S, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 0.5),  # product 0: 1/1, product 1: 0
        (3, NDCG_P0_AT3 / 2),  # product 1 has no hit in top 3
        (5, (NDCG_P0_AT3 + NDCG_P1_AT5) / 2),  # = 0.6751987
    ],
)
def test_ndcg_at_k_hand_computed(k, expected):
    assert metrics.ndcg_at_k(Y, S, k) == pytest.approx(expected)


def test_per_product_ndcg_nan_for_products_without_gold():
    out = metrics.per_product_ndcg(Y, S, 3)
    np.testing.assert_allclose(out[:2], [NDCG_P0_AT3, 0.0])
    assert math.isnan(out[2])


def test_ndcg_ideal_uses_min_k_and_gold_count():
    # 4 gold tags, k=2, both top-2 are gold -> DCG = IDCG = 1 + 1/log2(3) -> 1.0
    y = np.array([[1, 1, 1, 1, 0]])
    s = np.array([[0.9, 0.8, 0.1, 0.1, 0.5]])
    assert metrics.ndcg_at_k(y, s, 2) == pytest.approx(1.0)
    # k=3: ranks 1, 2 gold, rank 3 (tag 4) not: (1 + 0.6309298) / (1 + 0.6309298 + 0.5)
    assert metrics.ndcg_at_k(y, s, 3) == pytest.approx(1.6309298 / 2.1309298)


def test_metrics_nan_when_no_gold_at_all():
    y = np.zeros((2, 3))
    s = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    assert math.isnan(metrics.recall_at_k(y, s, 2))
    assert math.isnan(metrics.ndcg_at_k(y, s, 2))
    assert metrics.precision_at_k(y, s, 2) == 0.0


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError):
        metrics.precision_at_k(Y, S, 0)
    with pytest.raises(ValueError):
        metrics.precision_at_k(Y, S[:, :4], 1)
    bad = S.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        metrics.precision_at_k(Y, bad, 1)


# ----------------------------------------------------------------------------- ties


def test_ties_broken_by_lower_tag_index():
    # all scores tied: the ranking is tag 0, 1, 2, 3
    y = np.array([[0, 1, 0, 0]])
    s = np.full((1, 4), 0.5)
    assert metrics.precision_at_k(y, s, 1) == 0.0  # tag 0 ranked first
    assert metrics.precision_at_k(y, s, 2) == 0.5  # tag 1 ranked second


def test_ties_at_top_k_boundary_are_deterministic():
    # tags 1..3 tie for the 2nd place; the lowest index (tag 1) wins it
    s = np.array([[0.9, 0.5, 0.5, 0.5]])
    assert metrics.precision_at_k(np.array([[0, 1, 0, 0]]), s, 2) == 0.5
    assert metrics.precision_at_k(np.array([[0, 0, 0, 1]]), s, 2) == 0.0


def test_top_k_matches_stable_argsort_with_many_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(300, 60)).astype(float) / 4
    scores[0] = -np.inf  # fully masked row
    expected = np.argsort(-scores, axis=1, kind="stable")
    for k in (1, 3, 5, 10, 14, 15, 60, 80):
        np.testing.assert_array_equal(metrics.top_k(scores, k), expected[:, :k])


# ----------------------------------------------------------------------- propensity


def test_propensities_hand_computed():
    # N=100, A=0.55, B=1.5: C = (ln 100 - 1) * 2.5**0.55 = 3.6051702 * 1.6552771 = 5.9675048
    # N_l=10: exp(-0.55 * ln 11.5) = 0.2609854 -> p = 1 / (1 + 1.5574376) = 0.3910173
    # N_l=0:  exp(-0.55 * ln 1.5)  = 0.8001102 -> p = 1 / (1 + 4.7746615) = 0.1731703
    p = metrics.propensities(np.array([10, 0]), 100)
    np.testing.assert_allclose(p, [0.3910173, 0.1731703], rtol=1e-6)


@pytest.mark.parametrize("n_products", [1, 2])
def test_propensities_of_a_catalog_under_three_products_are_one(n_products):
    """log N - 1 < 0 would give negative weights (PSP NaN) or rare tags weighed less."""
    np.testing.assert_array_equal(metrics.propensities(np.array([0, 1, 2]), n_products), 1.0)
    invp = 1.0 / metrics.propensities(np.array([1, 1, 1, 1, 1]), n_products)
    assert metrics.psp_at_k(Y, S, 3, invp) == pytest.approx(2 / 3)


def test_propensities_increase_with_frequency():
    p = metrics.propensities(np.array([0, 1, 10, 100, 10_000]), 10_000)
    assert np.all(np.diff(p) > 0)
    assert np.all((p > 0) & (p < 1))


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # k=1: found weights (1 + 0) vs ideal (2 + 3) -> 0.2
        (1, 0.2),
        # k=3: found (1 + 2) + 0 = 3 vs ideal 3 + 3 = 6 -> 0.5
        (3, 0.5),
        # k=5: everything found -> 1.0
        (5, 1.0),
    ],
)
def test_psp_at_k_hand_computed(k, expected):
    assert metrics.psp_at_k(Y, S, k, INVP) == pytest.approx(expected)


def test_psp_equals_precision_ratio_with_unit_propensities():
    # invp == 1: found at k=3 is 2 (product 0) + 0 (product 1),
    # ideal is min(3, 2) + min(3, 1) = 3 -> 2/3
    assert metrics.psp_at_k(Y, S, 3, np.ones(5)) == pytest.approx(2 / 3)


# ------------------------------------------------------------------- thresholded


def test_apply_thresholds_scalar_and_per_tag():
    pred = metrics.apply_thresholds(S, 0.75)
    expected = np.array(
        [
            [True, True, False, False, False],
            [False, False, True, True, False],
            [False, False, False, False, False],
        ]
    )
    np.testing.assert_array_equal(pred, expected)
    per_tag = metrics.apply_thresholds(S, np.array([0.95, 0.0, 1.0, 1.0, 0.3]))
    np.testing.assert_array_equal(per_tag[:, 1], [True, True, True])
    np.testing.assert_array_equal(per_tag[:, 4], [False, True, False])  # 0.3 >= 0.3
    assert not per_tag[:, [0, 2, 3]].any()
    with pytest.raises(ValueError):
        metrics.apply_thresholds(S, np.array([0.5, 0.5]))


def test_apply_thresholds_keeps_at_most_limit_best_ranked():
    # at 0.0 every tag of S is a decision; a limit keeps each row's best ranked ones
    one = metrics.apply_thresholds(S, 0.0, limit=1)
    np.testing.assert_array_equal(one.sum(axis=1), [1, 1, 1])
    np.testing.assert_array_equal(np.argmax(one, axis=1), np.argmax(S, axis=1))
    # the threshold still applies within the limit: at 0.75 product 0 has two, product 2 none
    two = metrics.apply_thresholds(S, 0.75, limit=1)
    np.testing.assert_array_equal(two.sum(axis=1), [1, 1, 0])
    assert two[0, 0] and not two[0, 1]  # 0.9 outranks 0.8
    wide = metrics.apply_thresholds(S, 0.75, limit=S.shape[1] + 3)
    np.testing.assert_array_equal(wide, metrics.apply_thresholds(S, 0.75))
    out = metrics.evaluate_scores(Y, S, 0.75, limit=1)
    # decisions: product 0 {0} (gold), product 1 {the better of 2 and 3}, product 2 {}
    assert out["micro_precision"] == pytest.approx(0.5)
    assert out["P@1"] == metrics.evaluate_scores(Y, S, 0.75)["P@1"]
    with pytest.raises(ValueError):
        metrics.apply_thresholds(S, 0.5, limit=0)
    # per-tag thresholds: the best ranked of the tags that pass theirs, as suggest returns them
    # (tag 0 ranks first but misses its 0.95; tag 1 passes and is the decision)
    passing = metrics.apply_thresholds([[0.9, 0.8, 0.1]], [0.95, 0.5, 0.5], limit=1)
    np.testing.assert_array_equal(passing, [[False, True, False]])


def test_f1_scores_hand_computed():
    # predictions at 0.75: product 0 {0, 1}, product 1 {2, 3}, product 2 {}
    # tp = 1 (product 0 tag 0), predicted = 4, gold = 3
    # per tag F1: tag0 1.0, tag1 0, tag2 0, tag3 0 (predicted only), tag4 skipped
    out = metrics.f1_scores(Y, metrics.apply_thresholds(S, 0.75))
    assert out["micro_precision"] == pytest.approx(0.25)
    assert out["micro_recall"] == pytest.approx(1 / 3)
    assert out["micro_f1"] == pytest.approx(2 / 7)
    assert out["macro_f1"] == pytest.approx(0.25)


def test_f1_scores_empty_predictions_are_zero():
    out = metrics.f1_scores(Y, np.zeros_like(Y))
    assert out == {
        "micro_precision": 0.0,
        "micro_recall": 0.0,
        "micro_f1": 0.0,
        "macro_f1": 0.0,
    }


def _separable(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random((200, 30)) < 0.2
    pos = rng.uniform(0.7, 0.9, size=y.shape)
    neg = rng.uniform(0.05, 0.35, size=y.shape)
    return y, np.where(y, pos, neg)


def test_a_score_of_plus_infinity_ranks_first_and_counts():
    y, s = np.array([[1, 0, 0]]), np.array([[np.inf, 0.5, 0.1]])
    assert metrics.precision_at_k(y, s, 1) == metrics.ndcg_at_k(y, s, 1) == 1.0
    assert metrics.psp_at_k(y, s, 1, np.ones(3)) == 1.0
    assert metrics.objective(y, s) == metrics.objective(sp.csr_matrix(y), s) == 1.0


def test_objective_counts_a_gold_tag_entered_twice_once():
    twice = sp.csr_matrix(
        (np.array([1.0, 1.0]), np.array([0, 0]), np.array([0, 2, 2])), shape=(2, 3)
    )  # row 0 holds tag 0 twice (not summed); row 1 no tag
    s = np.array([[0.1, 0.9, 0.5], [0.9, 0.2, 0.1]])
    assert metrics.objective(twice, s) == pytest.approx(metrics.objective(twice.toarray() > 0, s))
    assert not twice.has_canonical_format  # the caller's matrix is left as it was


def test_tune_global_threshold_separable():
    y, s = _separable()
    t = metrics.tune_global_threshold(y, s)
    assert 0.35 < t <= 0.7
    assert metrics.f1_scores(y, metrics.apply_thresholds(s, t))["micro_f1"] == 1.0


def test_tune_global_threshold_explicit_grid():
    # gold scores 0.6 and 0.9, non-gold 0.4 and 0.7 (2 products x 2 tags)
    y = np.array([[1, 0], [0, 1]])
    s = np.array([[0.6, 0.4], [0.7, 0.9]])
    # t=0.3: tp 2, pred 4 -> F1 4/6; t=0.5: tp 2, pred 3 -> 4/5; t=0.8: tp 1, pred 1 -> 2/3
    assert metrics.tune_global_threshold(y, s, grid=[0.3, 0.5, 0.8]) == 0.5
    # ties: the lowest maximising threshold, whatever the grid's order
    tied = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert metrics.tune_global_threshold(y, tied, grid=[0.7, 0.5, 0.3]) == 0.3
    # no threshold decides a gold tag: the strictest, not the most permissive
    none = np.array([[0.0, 0.3], [0.6, 0.0]])
    assert metrics.tune_global_threshold(y, none, grid=[0.2, 0.5, 0.8]) == 0.8
    assert metrics.tune_global_threshold(np.zeros((2, 2)), s) == metrics.DEFAULT_GRID.max()


def test_tune_tag_thresholds_per_tag_and_fallback():
    n = 10
    y = np.zeros((n, 5), dtype=int)
    s = np.zeros((n, 5))
    grid = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    # tag 0: 4 positives at 0.6, negatives 0.4 -> only 0.5 separates them
    y[:4, 0] = 1
    s[:, 0] = np.where(y[:, 0], 0.6, 0.4)
    # tag 1: 4 positives at 0.95, negatives 0.75 -> only 0.9 separates them
    y[:4, 1] = 1
    s[:, 1] = np.where(y[:, 1], 0.95, 0.75)
    # tag 2: only 2 positives (< min_support=3), perfectly separable at 0.9 -> falls back
    y[:2, 2] = 1
    s[:, 2] = np.where(y[:, 2], 0.95, 0.75)
    # tag 3: 3 positives but all scores 0 -> best F1 is 0 -> falls back
    y[:3, 3] = 1
    # tag 4: 4 positives at 0.95, negatives 0.05: every grid point gives F1 = 1;
    # the one closest to the global threshold 0.42 is 0.5
    y[:4, 4] = 1
    s[:, 4] = np.where(y[:, 4], 0.95, 0.05)
    out = metrics.tune_tag_thresholds(y, s, global_threshold=0.42, min_support=3, grid=grid)
    np.testing.assert_allclose(out, [0.5, 0.9, 0.42, 0.42, 0.5])
    # lowering min_support lets tag 2 use its own threshold
    out2 = metrics.tune_tag_thresholds(y, s, global_threshold=0.42, min_support=2, grid=grid)
    assert out2[2] == pytest.approx(0.9)
    # prior 4: tag 1 (4 positives, own threshold 0.9) moves half way to the global 0.42
    out3 = metrics.tune_tag_thresholds(y, s, global_threshold=0.42, grid=grid, prior=4.0)
    np.testing.assert_allclose(out3, [0.46, 0.66, 0.42, 0.42, 0.46])
    with pytest.raises(ValueError, match="prior"):
        metrics.tune_tag_thresholds(y, s, global_threshold=0.42, prior=-1.0)


def test_thresholds_count_only_the_cells_a_model_could_score():
    """Gold tags in cells outside ``counted`` (a fold's model lacked the tag: score 0) are no
    misses of a tag's own threshold: counted, two of them would pull it down to 0.5 (as they
    pull the global threshold, which counts every cell)."""
    s = np.array([[0.9], [0.6], [0.65], [0.65], [0.65], [0.0], [0.0]])
    y = np.array([[1], [1], [0], [0], [0], [1], [1]])
    counted = np.array([[True]] * 5 + [[False]] * 2)
    grid = [0.5, 0.7]
    # t=0.7: 1 of 2 gold, 1 decision: F1 2/3; t=0.5: 2 of 2 gold, 5 decisions: 4/7
    assert metrics.tune_tag_thresholds(y, s, 0.7, 1, grid, counted=counted)[0] == 0.7
    # the two cells counted as misses: 2/5 against 4/9
    assert metrics.tune_global_threshold(y, s, grid=grid) == 0.5
    assert metrics.tune_tag_thresholds(y, s, 0.7, 1, grid)[0] == 0.5
    # a tag's support counts its scorable gold tags only: 2 < min_support 3 keeps the global
    assert metrics.tune_tag_thresholds(y, s, 0.42, 3, grid, counted=counted)[0] == 0.42
    with pytest.raises(ValueError, match="counted"):
        metrics.tune_tag_thresholds(y, s, 0.5, counted=counted[:3])


def test_tune_tag_thresholds_default_grid_separable():
    y, s = _separable(1)
    t = metrics.tune_tag_thresholds(y, s, global_threshold=0.5)
    assert t.shape == (30,)
    pred = metrics.apply_thresholds(s, t)
    assert metrics.f1_scores(y, pred)["macro_f1"] == 1.0


# ---------------------------------------------------------------- frequency bands


def test_frequency_bands_boundaries():
    bands = metrics.frequency_bands(np.array([100, 50, 49, 10, 9, 0]))
    assert bands.tolist() == ["head", "head", "torso", "torso", "tail", "tail"]
    custom = metrics.frequency_bands(np.array([5, 4, 2, 1]), head_min=5, tail_max=1)
    assert custom.tolist() == ["head", "torso", "torso", "tail"]
    with pytest.raises(ValueError):
        metrics.frequency_bands(np.array([1]), head_min=5, tail_max=5)


def test_band_metrics_hand_computed():
    # top-3: product 0 {0, 1, 2}, product 1 {2, 3, 4}, product 2 {0, 1, 2}
    # head {0, 1}: gold p0/tag0 (hit), p1/tag1 (miss) -> 0.5
    # torso {2}: gold p0/tag2 (hit) -> 1.0; tail {3, 4}: no gold -> NaN
    bands = np.array(["head", "head", "torso", "tail", "tail"])
    out = metrics.band_metrics(Y, S, bands, k=3)
    assert set(out) == {"recall@3_head", "recall@3_torso", "recall@3_tail"}
    assert out["recall@3_head"] == pytest.approx(0.5)
    assert out["recall@3_torso"] == pytest.approx(1.0)
    assert math.isnan(out["recall@3_tail"])
    # k=5 finds p1/tag1 at rank 4 -> head recall 1.0
    assert metrics.band_metrics(Y, S, bands)["recall@5_head"] == pytest.approx(1.0)


def test_per_product_metrics_hand_computed():
    out = metrics.per_product_metrics(Y, S, (1, 3))
    assert list(out) == ["P@1", "R@1", "nDCG@1", "P@3", "R@3", "nDCG@3"]
    np.testing.assert_allclose(out["P@1"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(out["R@1"], [0.5, 0.0, np.nan])  # product 2: no gold tag
    np.testing.assert_allclose(out["P@3"], [2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(out["R@3"], [1.0, 0.0, np.nan])
    np.testing.assert_allclose(out["nDCG@3"], [NDCG_P0_AT3, 0.0, np.nan])


def test_weights_per_cell_follow_each_rows_own_columns():
    # each product's columns reversed, and its weights with them: the same tags in other
    # columns, so the same PSP@k as one weight a column
    cols = np.argsort(-np.arange(Y.shape[1]))[None, :].repeat(Y.shape[0], axis=0)
    cols[1] = np.arange(Y.shape[1])  # product 1 keeps its order
    y, s = np.take_along_axis(Y, cols, 1), np.take_along_axis(S, cols, 1)
    for k in (1, 3, 5):
        assert metrics.psp_at_k(y, s, k, INVP[cols]) == metrics.psp_at_k(Y, S, k, INVP)
        full = metrics.evaluate_scores(y, s, 0.5, inv_propensity=INVP[cols], ks=(k,))
        assert full[f"PSP@{k}"] == metrics.psp_at_k(Y, S, k, INVP)
    with pytest.raises(ValueError, match="inv_propensity must have shape"):
        metrics.psp_at_k(Y, S, 1, INVP[cols][:2])


def test_per_tag_results_rows():
    rows = metrics.per_tag_results(
        Y,
        metrics.apply_thresholds(S, 0.75),
        ["a", "b", "c", "d", "e"],
        train_counts=[5, 4, 3, 2, 1],
    )
    assert [r["tag"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert rows[0] == {
        "tag": "a",
        "support": 1,
        "predicted": 1,
        "tp": 1,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "train_count": 5,
    }
    # tag "d": predicted once for product 1, never gold
    assert (rows[3]["support"], rows[3]["predicted"], rows[3]["tp"]) == (0, 1, 0)
    assert rows[3]["precision"] == 0.0 and rows[3]["f1"] == 0.0
    assert rows[4]["predicted"] == 0 and rows[4]["train_count"] == 1
    no_counts = metrics.per_tag_results(Y, Y, list("abcde"))
    assert no_counts[0]["train_count"] is None and no_counts[0]["f1"] == 1.0


# -------------------------------------------------------------------- aggregate


def test_evaluate_scores_keys_and_values():
    out = metrics.evaluate_scores(Y, S, 0.75, inv_propensity=INVP)
    expected_keys = [
        *(f"P@{k}" for k in (1, 3, 5)),
        *(f"R@{k}" for k in (1, 3, 5)),
        *(f"nDCG@{k}" for k in (1, 3, 5)),
        *(f"PSP@{k}" for k in (1, 3, 5)),
        "micro_precision",
        "micro_recall",
        "micro_f1",
        "macro_f1",
        "n_products",
    ]
    assert list(out) == expected_keys
    assert all(type(v) is float for v in out.values())
    expected = {
        "P@1": 1 / 3,
        "P@3": 2 / 9,
        "P@5": 0.2,
        "R@1": 0.25,
        "R@3": 0.5,
        "R@5": 1.0,
        "nDCG@1": 0.5,
        "nDCG@3": NDCG_P0_AT3 / 2,
        "nDCG@5": (NDCG_P0_AT3 + NDCG_P1_AT5) / 2,
        "PSP@1": 0.2,
        "PSP@3": 0.5,
        "PSP@5": 1.0,
        "micro_precision": 0.25,
        "micro_recall": 1 / 3,
        "micro_f1": 2 / 7,
        "macro_f1": 0.25,
        "n_products": 3.0,
    }
    assert out == pytest.approx(expected)


def test_evaluate_scores_without_propensity_has_no_psp():
    out = metrics.evaluate_scores(Y, S, 0.5)
    assert not any(key.startswith("PSP") for key in out)
    assert "P@5" in out and out["n_products"] == 3.0


def test_sparse_input_equals_dense():
    rng = np.random.default_rng(3)
    y = (rng.random((50, 40)) < 0.1).astype(np.float32)
    s = rng.random((50, 40))
    invp = 1 / metrics.propensities(y.sum(axis=0), 50)
    thresholds = rng.uniform(0.3, 0.7, size=40)
    dense = metrics.evaluate_scores(y, s, thresholds, inv_propensity=invp)
    for fmt in (sp.csr_matrix, sp.csc_matrix, sp.csr_array):
        sparse = metrics.evaluate_scores(fmt(y), s, thresholds, inv_propensity=invp)
        assert sparse == dense
    assert metrics.tune_global_threshold(sp.csr_matrix(y), s) == metrics.tune_global_threshold(y, s)


def test_evaluate_scores_large_matches_per_metric_functions():
    rng = np.random.default_rng(4)
    y = rng.random((120, 300)) < 0.02
    s = np.round(rng.random((120, 300)), 2)  # rounding creates ties
    out = metrics.evaluate_scores(y, s, 0.5, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert out[f"P@{k}"] == pytest.approx(metrics.precision_at_k(y, s, k))
        assert out[f"R@{k}"] == pytest.approx(metrics.recall_at_k(y, s, k))
        assert out[f"nDCG@{k}"] == pytest.approx(metrics.ndcg_at_k(y, s, k))
    # independent reference for P@5 with a full stable sort
    order = np.argsort(-s, axis=1, kind="stable")[:, :5]
    ref = np.take_along_axis(y, order, axis=1).sum(axis=1).mean() / 5
    assert out["P@5"] == pytest.approx(ref)


# -------------------------------------------------------------------- bootstrap


def test_paired_bootstrap_clearly_better_is_above_zero():
    rng = np.random.default_rng(5)
    b = rng.random(300)
    a = b + 0.1 + rng.normal(0, 0.05, size=300)
    out = metrics.paired_bootstrap(a, b)
    assert set(out) == {"mean_diff", "low", "high"}
    assert 0 < out["low"] < out["mean_diff"] < out["high"]
    assert out["mean_diff"] == pytest.approx(np.mean(a - b))


def test_paired_bootstrap_identical_contains_zero():
    a = np.random.default_rng(6).random(100)
    out = metrics.paired_bootstrap(a, a.copy())
    assert out["low"] <= 0.0 <= out["high"]
    assert out["mean_diff"] == 0.0


def test_paired_bootstrap_symmetric_noise_straddles_zero():
    diff = np.tile([1.0, -1.0], 100)  # mean 0, large spread
    out = metrics.paired_bootstrap(diff, np.zeros_like(diff), n_resamples=2000)
    assert out["low"] < 0.0 < out["high"]
    # standard error = 1/sqrt(200) ~ 0.0707 -> 95% half-width ~ 0.139
    assert out["high"] - out["low"] == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.15)


def test_paired_bootstrap_ignores_nan_pairs_and_is_seeded():
    rng = np.random.default_rng(7)
    a = rng.random(80)
    b = rng.random(80)
    a_nan = np.concatenate([a, [np.nan, 5.0]])
    b_nan = np.concatenate([b, [9.0, np.nan]])
    assert metrics.paired_bootstrap(a_nan, b_nan, seed=3) == metrics.paired_bootstrap(a, b, seed=3)
    assert metrics.paired_bootstrap(a, b, seed=3) != metrics.paired_bootstrap(a, b, seed=4)
    with pytest.raises(ValueError):
        metrics.paired_bootstrap([np.nan], [1.0])


def test_objective_on_the_toy_matrices() -> None:
    # P@1: product 0 hit, product 1 miss, product 2 no gold -> 1/3;
    # nDCG@3 over products with gold: product 0 0.9197, product 1 0 (its gold ranks 4th) -> 0.4599
    expected = 0.5 * (1 / 3 + NDCG_P0_AT3 / 2)
    assert metrics.objective(Y, S) == pytest.approx(expected)
    assert metrics.objective(sp.csr_matrix(Y), S.astype(np.float32)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="NaN"):
        metrics.objective(Y, np.where(S > 0.85, np.nan, S))
    with pytest.raises(ValueError, match="shape"):
        metrics.objective(Y[:2], S)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_objective_equals_precision_at_1_and_ndcg_at_3(dtype: type) -> None:
    """One top-3 pass and sparse gold lookups give exactly what the two metrics give, ties
    (broken by tag index), explicit zeros in a sparse ``y`` and products without gold included."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 25))
        scores = (rng.integers(0, 4, (n, m)) / 4).astype(dtype)  # many ties
        y = (rng.random((n, m)) < 0.2).astype(np.float32)
        expected = 0.5 * (metrics.precision_at_k(y, scores, 1) + metrics.ndcg_at_k(y, scores, 3))
        coo = sp.coo_matrix(y)
        zero = int(y[0, 0] == 0)  # an explicit zero stored at (0, 0) is not a gold tag
        at = [0] * zero
        with_zero = sp.csr_matrix(
            (np.r_[coo.data, [0.0] * zero], (np.r_[coo.row, at], np.r_[coo.col, at])),
            shape=y.shape,
        )
        assert with_zero.nnz == coo.nnz + zero
        for gold in (y, sp.csr_matrix(y), sp.csr_array(y), with_zero):
            value = metrics.objective(gold, scores)
            assert value == expected or (math.isnan(value) and math.isnan(expected))


def test_a_tag_scored_minus_inf_is_never_a_hit() -> None:
    """Gold tags the model neither knows nor proposes are scored -inf (evaluate.JointLayout):
    when k reaches past every ranked tag they fill the top k, never as hits."""
    from labelrec.evaluate import joint_matrices
    from labelrec.metrics import (
        evaluate_scores,
        ndcg_at_k,
        objective,
        precision_at_k,
        psp_at_k,
        recall_at_k,
    )

    y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # columns: a, b, x, z
    s = np.array([[0.9, 0.1, -np.inf, -np.inf]] * 3)
    assert precision_at_k(y, s, 3) == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert recall_at_k(y, s, 5) == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert ndcg_at_k(y, s, 4) == pytest.approx(
        np.mean([1 / (1 + 1 / np.log2(3)), 1 / np.log2(3), 0])
    )
    assert psp_at_k(y, s, 4, np.ones(4)) == pytest.approx(2 / 4)
    out = evaluate_scores(y, s, thresholds=0.5, ks=(1, 5), inv_propensity=np.ones(4))
    assert out["R@5"] == pytest.approx(0.5) and out["PSP@5"] == pytest.approx(0.5)
    assert objective(y, s) == objective(sp.csr_matrix(y), s)
    # through the evaluator: a 2-tag vocabulary, gold tags outside it
    from labelrec.data import Product, TagVocab

    vocab = TagVocab.from_products([Product("1", "t", tags=["a", "b"])], 1)
    products = [
        Product(str(i), "t", tags=tags) for i, tags in enumerate([["a", "x"], ["b"], ["z"]])
    ]
    gold, scores, names = joint_matrices(np.array([[0.9, 0.1]] * 3), [{}, {}, {}], products, vocab)
    assert names[2:] == ["x", "z"] and np.isneginf(scores[:, 2:]).all()
    assert recall_at_k(gold, scores, 5) == pytest.approx(0.5)


def test_a_joint_layout_scores_new_tags_as_joint_matrices_does() -> None:
    """Built once for some new tags, the layout gives each set of their scores the matrix that
    ``joint_matrices`` builds from scratch; a tag proposed twice in a row (two spellings)
    keeps its larger score; the known scores are not written to."""
    from labelrec.data import Product, TagVocab
    from labelrec.evaluate import JointLayout, joint_matrices

    vocab = TagVocab.from_products([Product("1", "t", tags=["a", "brand:Lego"])], 1)
    products = [
        Product("p", "t", tags=["a", "brand:Acme"]),
        Product("q", "t", tags=["z"]),
        Product("r", "t", tags=["brand:Lego"]),
    ]
    new = [{"brand:Acme": 0.7, "brand:ACME": 0.2}, {"brand:Zed": 0.4}, {"BRAND:lego": 0.9}]
    layout = JointLayout.of(new, products, vocab)
    known = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.5]], dtype=np.float32)
    scratch = None
    for factor in (1.0, 0.5, 0.0):
        scaled = [{t: factor * v for t, v in row.items()} for row in new]
        y, expected, names = joint_matrices(known.copy(), scaled, products, vocab)
        got = layout.scores(known, scaled, out=scratch)
        scratch = got
        assert names == layout.names == ["a", "brand:Lego", "brand:Acme", "z", "brand:Zed"]
        assert (y != layout.y).nnz == 0
        np.testing.assert_array_equal(got, expected)
        assert got[0, 2] == np.float32(0.7 * factor) and got[2, 1] == max(0.5, 0.9 * factor)
    np.testing.assert_array_equal(known[:, 1], np.float32([0.1, 0.3, 0.5]))  # untouched
    with_nan = [{"brand:Acme": np.nan, "brand:ACME": 0.2}, {"brand:Zed": 0.4}, {"BRAND:lego": 0.9}]
    assert layout.scores(known, with_nan)[0, 2] == np.float32(0.2)  # a NaN proposes nothing
    with pytest.raises(ValueError, match="other than those the layout was built from"):
        layout.scores(known, [{"brand:Acme": 0.7}, {}, {}])
    # nothing outside the vocabulary, gold or proposed: the known scores as they are
    bare = JointLayout.of([{}], [Product("s", "t", tags=["a"])], vocab)
    first = known[:1]
    assert bare.names == ["a", "brand:Lego"] and bare.scores(first, [{}]) is first


def _random_products(rng, pick, n_known, dtype):
    """Up to 8 products whose gold tags and proposed new tags are drawn from ``pick`` (some a
    second spelling of another, some NaN), and their known scores over the first ``n_known``
    names, in ``dtype``: tied, a fifth -inf."""
    from labelrec.data import Product

    products, new = [], []
    for i in range(int(rng.integers(1, 9))):
        gold = list(rng.choice(pick, int(rng.integers(0, min(4, len(pick)))), replace=False))
        products.append(Product(str(i), "t", tags=[str(t) for t in gold]))
        proposed = rng.choice(pick, int(rng.integers(0, min(6, len(pick)))), replace=False)
        row = {str(t): float(np.round(rng.random(), 1)) for t in proposed}
        if row and rng.random() < 0.4:  # a second spelling of one of them
            row[next(iter(row)).upper()] = float(np.round(rng.random(), 1))
        if row and rng.random() < 0.2:
            row[next(iter(row))] = np.nan
        new.append(row)
    known = np.round(rng.random((len(products), n_known)), 1).astype(dtype)  # ties
    known[rng.random(known.shape) < 0.2] = -np.inf
    return products, new, known


def test_a_joint_layouts_objective_and_threshold_are_the_joint_matrixs() -> None:
    """``JointLayout.objective`` and ``.new_threshold``, which never build the joint matrix,
    equal ``metrics.objective`` and ``tune_global_threshold`` over the matrix ``scores`` builds,
    to the last bit: tied and -inf known scores, proposals of known tags (another case), two
    spellings of one new tag, NaN proposals and gold tags outside the vocabulary."""
    from labelrec.data import Product, TagVocab
    from labelrec.evaluate import JointLayout

    rng = np.random.default_rng(1)
    names = [f"brand:b{i}" for i in range(14)]
    for trial in range(120):
        n_known = int(rng.integers(3, 7))
        vocab = TagVocab(names[:n_known], [3] * n_known, 10)
        dtype = np.float32 if trial % 2 else np.float64
        products, new, known = _random_products(rng, names, n_known, dtype)
        layout = JointLayout.of(new, products, vocab)
        full = layout.scores(known, new)
        # NaN where no product has a gold tag, in both
        np.testing.assert_equal(layout.objective(known, new), metrics.objective(layout.y, full))
        cols = slice(n_known, full.shape[1])
        expected = metrics.tune_global_threshold(layout.y[:, cols], full[:, cols])
        assert layout.new_threshold(new, n_known, known.dtype) == expected, trial
    # two known tags: the joint matrix's own columns can reach the top 3
    vocab = TagVocab(names[:2], [3, 3], 10)
    products = [Product("p", "t", tags=["brand:b5"]), Product("q", "t", tags=["brand:b0"])]
    new = [{}, {"brand:b7": 0.2}]
    layout = JointLayout.of(new, products, vocab)
    known = np.array([[0.5, -np.inf], [-np.inf, -np.inf]])
    expected = metrics.objective(layout.y, layout.scores(known, new))
    assert layout.objective(known, new) == expected
    with pytest.raises(ValueError, match="NaN"):
        layout.objective(np.full((2, 3), np.nan), [{}, {}])


def _joint_matrix_evaluation(scores, products, vocab, thresholds, new_tags, new_threshold, limit):
    """The metrics of ``evaluate_scores_on`` by their definition: over the joint matrix, a
    column for every tag of every product (``joint_matrices``)."""
    from labelrec.evaluate import joint_matrices

    y, full, names = joint_matrices(scores, new_tags, products, vocab)
    n_known = len(vocab)
    counts = np.zeros(y.shape[1], dtype=np.int64)
    counts[:n_known] = vocab.counts
    inv_p = 1.0 / metrics.propensities(counts, vocab.n_products or int(counts.max(initial=1)))
    one_cut = np.ndim(thresholds) == 0
    cut = np.full(y.shape[1], max(float(thresholds if one_cut else new_threshold), 1.4e-45))
    cut[:n_known] = thresholds
    result = metrics.evaluate_scores(y, full, cut, inv_propensity=inv_p, limit=limit)
    result.update(metrics.band_metrics(y, full, metrics.frequency_bands(counts), k=5))
    result["unknown_gold_share"] = y[:, n_known:].count_nonzero() / max(y.count_nonzero(), 1)
    decided = metrics.apply_thresholds(full, cut, limit)
    if any(new_tags):
        result["new_tag_share_of_top1"] = float((np.argmax(full, axis=1) >= n_known).mean())
        gold, proposed = y[:, n_known:].toarray() > 0, decided[:, n_known:]
        result["new_tag_recall"] = float((proposed & gold).sum() / max(gold.sum(), 1))
        result["new_tag_precision"] = float((proposed & gold).sum() / max(proposed.sum(), 1))
    per_tag = metrics.per_tag_results(y, decided, names, train_counts=counts)
    per_product = [metrics.per_product_ndcg(y, full, 3), metrics.per_product_precision(y, full, 1)]
    return result, per_tag, per_product


def _assert_same_evaluation(got, expected, trial=None) -> None:
    np.testing.assert_equal(got.metrics, expected[0])  # NaN in both alike
    assert list(got.metrics) == list(expected[0])
    assert got.per_tag == expected[1], trial
    np.testing.assert_array_equal(got.per_product["nDCG@3"], expected[2][0])
    np.testing.assert_array_equal(got.per_product["P@1"], expected[2][1])


def test_an_evaluation_is_the_joint_matrixs_without_building_it() -> None:
    """``evaluate_scores_on`` packs each product's new tags after the vocabulary instead of
    giving every new tag of every product a column; its metrics, per-tag results and
    per-product scores are the joint matrix's to the last bit: ties, -inf and NaN known scores,
    proposals of known tags (another case), two spellings of one new tag, NaN proposals, gold
    tags outside the vocabulary, no tag outside it at all, one cut-off or per-tag thresholds,
    with and without a limit, fewer tags than the top 5 the metrics read."""
    from labelrec.data import Product, TagVocab
    from labelrec.evaluate import evaluate_scores_on

    rng = np.random.default_rng(2)
    names = [f"brand:b{i}" for i in range(14)]
    for trial in range(150):
        n_known = int(rng.integers(1, 7))
        vocab = TagVocab(names[:n_known], rng.integers(1, 60, n_known), [100, None][trial % 2])
        pick = names[:n_known] if trial % 5 == 1 else names  # 1: every tag a known one
        dtype = [np.float32, np.float64, np.float16][trial % 3]
        products, new, known = _random_products(rng, pick, n_known, dtype)
        if trial % 10 == 0:  # NaN where a proposal may or may not cover it
            known[0, 0] = np.nan
        thresholds = 0.5 if trial % 3 == 0 else np.round(rng.random(n_known), 1)
        limit = [None, 1, 2][trial % 3]
        new_tags = None if trial % 7 == 0 else new
        args = (known, products, vocab, thresholds)
        try:
            expected = _joint_matrix_evaluation(*args, new_tags or [{}] * len(products), 0.3, limit)
        except ValueError as error:  # NaN left uncovered: both refuse it
            with pytest.raises(ValueError, match=str(error)):
                evaluate_scores_on(*args, new_tags=new_tags, new_threshold=0.3, limit=limit)
            continue
        got = evaluate_scores_on(*args, new_tags=new_tags, new_threshold=0.3, limit=limit)
        _assert_same_evaluation(got, expected, trial)
    # one known tag, new ones gold: fewer columns than the top 5, whose sums the metrics add
    vocab = TagVocab(["k0"], [25], 1000)
    gold = [["k0", "g0"], ["k0", "g1"], ["k0", "g2"], ["k0", "g3"], ["k0"]]
    products = [Product(str(i), "t", tags=t) for i, t in enumerate(gold)]
    known = np.array([[0.2], [0.2], [0.2], [0.5], [0.2]])
    expected = _joint_matrix_evaluation(known, products, vocab, 0.5, [{}] * 5, 0.3, None)
    _assert_same_evaluation(evaluate_scores_on(known, products, vocab, 0.5), expected)
    # integer and boolean scores: those of float64
    vocab = TagVocab(["x", "y"], [3, 3], 10)
    products = [Product("p", "t", tags=["q"]), Product("r", "t", tags=["x", "z"])]
    ints = np.array([[1, 0], [0, 1]])
    for known in (ints, ints.astype(bool)):
        got = evaluate_scores_on(known, products, vocab, 0.5, new_tags=[{"z": 0.7}, {"Y": 0.9}])
        expected = evaluate_scores_on(
            known.astype(np.float64), products, vocab, 0.5, new_tags=[{"z": 0.7}, {"Y": 0.9}]
        )
        np.testing.assert_equal(got.metrics, expected.metrics)
        assert got.metrics["R@5"] == 0.25  # q, never proposed, is no hit


def test_an_evaluation_a_part_at_a_time_is_the_whole_ones() -> None:
    """``EvaluationStream`` fed the products' scores a part at a time gives the evaluation of
    ``evaluate_scores_on`` over them all: every metric, its key order, every per-tag row (a
    new tag first proposed in a later part keeps its column) and per-product value; PSP@k,
    summed in another order, to 1e-12. Ties between new tags of one product, gold tags outside
    the vocabulary, a new tag first in one part and gold in another, no new tags in one part,
    empty parts, vocabularies wide enough for each way of ``metrics.top_k``, a k past the
    columns of an early part, scores in float16, float32 and float64."""
    from labelrec.data import Product, TagVocab
    from labelrec.evaluate import EvaluationStream, JointLayout, evaluate_scores_on

    rng = np.random.default_rng(5)
    names = [f"brand:b{i}" for i in range(60)]
    for trial in range(200):
        n_known = int(rng.integers(1, 50))
        vocab = TagVocab(names[:n_known], rng.integers(1, 60, n_known), [100, None][trial % 2])
        dtype = [np.float32, np.float64, np.float16][trial % 3]
        parts = [_random_products(rng, names, n_known, dtype) for _ in range(3)]
        products = [p for part in parts for p in part[0]]
        new = [row for part in parts for row in part[1]]
        known = np.concatenate([part[2] for part in parts])
        thresholds = 0.5 if trial % 3 == 0 else np.round(rng.random(n_known), 1)
        limit = [None, 1, 2][trial % 3]
        ks = [(1, 3, 5), (1, 3, 10), (2, 9), (5,)][trial % 4]
        new_tags = None if trial % 7 == 0 else new
        args = (products, vocab, thresholds, ks, 0.3, limit)
        whole = evaluate_scores_on(
            known, *args[:4], new_tags=new_tags, new_threshold=0.3, limit=limit
        )
        stream = EvaluationStream(*args)
        cuts = np.sort(rng.integers(0, len(products) + 1, int(rng.integers(0, 4))))
        for start, stop in zip([0, *cuts], [*cuts, len(products)], strict=True):
            stream.add(known[start:stop], None if new_tags is None else new_tags[start:stop])
        got = stream.result()
        psp = [k for k in got.metrics if k.startswith("PSP@")]
        for k in psp:
            assert got.metrics[k] == pytest.approx(whole.metrics[k], rel=1e-12, nan_ok=True)
        same = {k: v for k, v in got.metrics.items() if k not in psp}
        np.testing.assert_equal(same, {k: whole.metrics[k] for k in same})  # NaN alike
        assert list(got.metrics) == list(whole.metrics), trial
        assert got.per_tag == whole.per_tag, trial
        for key, values in whole.per_product.items():
            np.testing.assert_array_equal(got.per_product[key], values)
    # a product's DCG sums its ranks in one order, whatever the rows beside it (a matrix
    # product of one row and of two round the same sums differently)
    vocab = TagVocab([f"t{i}" for i in range(10)], [5] * 10, 100)
    known = np.array([np.linspace(0.95, 0.05, 10)] * 2)
    products = [Product(str(i), "t", tags=["t7", "t8", "t9"]) for i in range(2)]
    stream = EvaluationStream(products, vocab, 0.5, (10,))
    stream.add(known[:1])
    stream.add(known[1:])
    whole = evaluate_scores_on(known, products, vocab, 0.5, (10,))
    assert stream.result().metrics["nDCG@10"] == whole.metrics["nDCG@10"]
    # a product's scores once only, and all of them before the result
    vocab = TagVocab(["x", "y"], [3, 3], 10)
    products = [Product("p", "t", tags=["x"]), Product("q", "t", tags=["y"])]
    stream = EvaluationStream(products, vocab, 0.5)
    stream.add(np.array([[0.9, 0.1]]))
    with pytest.raises(ValueError, match="scores of 1 of the 2 products"):
        stream.result()
    with pytest.raises(ValueError, match="new tags of 2"):
        stream.add(np.array([[0.1, 0.9]]), [{}, {}])
    with pytest.raises(ValueError, match="past the 2 products"):
        stream.add(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):  # refused, the stream as it was
        stream.add(np.array([[np.nan, 0.9]]), [{"w": 0.3}])
    stream.add(np.array([[0.1, 0.9]]), [{"v": 0.4, "w": 0.4}])
    got = stream.result()
    known, new = np.array([[0.9, 0.1], [0.1, 0.9]]), [{}, {"v": 0.4, "w": 0.4}]
    whole = evaluate_scores_on(known, products, vocab, 0.5, new_tags=new)
    np.testing.assert_equal(got.metrics, whole.metrics)
    assert got.metrics["P@1"] == 1.0 and got.per_tag == whole.per_tag
    with pytest.raises(ValueError, match="new tags of 1 products, not 2"):  # one a product
        JointLayout.of([{}], products, vocab)


def _random_catalog(seed: int) -> tuple:
    """A vocabulary of 20 of 30 brands and up to 32 products of ``_random_products`` over it:
    the vocabulary, products, their proposed new tags and known scores (float32)."""
    from labelrec.data import TagVocab

    rng = np.random.default_rng(seed)
    names = [f"brand:b{i}" for i in range(30)]
    vocab = TagVocab(names[:20], rng.integers(1, 60, 20), 100)
    parts = [_random_products(rng, names, 20, np.float32) for _ in range(4)]
    products = [p for part in parts for p in part[0]]
    new = [row for part in parts for row in part[1]]
    return vocab, products, new, np.concatenate([part[2] for part in parts])


def test_evaluate_scores_on_evaluates_its_scores_a_part_at_a_time(monkeypatch) -> None:
    """``evaluate_scores_on`` adds ``EVAL_PART_CELLS`` scores at a time to its stream (rows of
    at least one product), and its evaluation is the one of every score added at once; scores
    of other products than the list's, or new tags of other products, are refused before any
    part is evaluated."""
    from labelrec import evaluate

    vocab, products, new, known = _random_catalog(11)
    added: list[int] = []
    add = evaluate.EvaluationStream.add

    def counted(self, part, new_tags=None):
        added.append(len(part))
        return add(self, part, new_tags)

    monkeypatch.setattr(evaluate.EvaluationStream, "add", counted)
    whole = evaluate.evaluate_scores_on(known, products, vocab, 0.5, new_tags=new, limit=2)
    assert added == [len(products)]  # the default: one part for so few scores
    # rows a part: the cells over the vocabulary's width (not the products'); under a row: one
    for cells, rows in ((20 * 3, 3), (20 * 5, 5), (1, 1)):
        added.clear()
        monkeypatch.setattr(evaluate, "EVAL_PART_CELLS", cells)
        got = evaluate.evaluate_scores_on(known, products, vocab, 0.5, new_tags=new, limit=2)
        n = len(products)
        assert added == [min(rows, n - start) for start in range(0, n, rows)]
        psp = [k for k in got.metrics if k.startswith("PSP@")]
        for k in psp:
            assert got.metrics[k] == pytest.approx(whole.metrics[k], rel=1e-12)
        same = {k: v for k, v in got.metrics.items() if k not in psp}
        np.testing.assert_equal(same, {k: whole.metrics[k] for k in same})  # NaN alike
        assert list(got.metrics) == list(whole.metrics)
        assert got.per_tag == whole.per_tag
        for key, values in whole.per_product.items():
            np.testing.assert_array_equal(got.per_product[key], values)
    added.clear()
    with pytest.raises(ValueError, match=f"scores of {len(products) - 1} products for"):
        evaluate.evaluate_scores_on(known[1:], products, vocab, 0.5)
    with pytest.raises(ValueError, match="new tags of 1"):
        evaluate.evaluate_scores_on(known, products, vocab, 0.5, new_tags=new[:1])
    assert added == []
    empty = evaluate.evaluate_scores_on(np.zeros((0, 20), np.float32), [], vocab, 0.5)
    assert empty.metrics["n_products"] == 0.0


def test_tags_outside_a_products_own_vocabulary_count_as_new_to_it(monkeypatch) -> None:
    """With ``row_keys`` (out-of-fold scores: each product scored by a fold that knew some of
    the tags), a vocabulary tag outside a product's own is new to it: decided at the new tags'
    threshold, counted in the new-tag metrics; the ranking metrics do not change. With every
    product's vocabulary the whole one, the evaluation is the one without ``row_keys``, in any
    parts."""
    from labelrec import evaluate
    from labelrec.data import Product, TagVocab, tag_key

    vocab = TagVocab(["a", "b", "c"], [5, 5, 2], 10)
    products = [
        Product("p0", "t", tags=["a", "c"]),
        Product("p1", "t", tags=["c"]),
        Product("p2", "t", tags=["c"]),
    ]
    known = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.8], [0.1, 0.2, 0.0]], np.float32)
    new = [{"c": 0.6}, {}, {"C": 0.95}]  # c proposed where the fold did not know it
    thresholds = np.array([0.5, 0.5, 0.7])
    fold_a, fold_b = frozenset({"a", "b"}), frozenset({"a", "b", "c"})
    args = (known, products, vocab, thresholds)
    pooled = evaluate.evaluate_scores_on(*args, new_tags=new, new_threshold=0.4)
    own = evaluate.evaluate_scores_on(
        *args, new_tags=new, new_threshold=0.4, row_keys=[fold_a, fold_b, fold_a]
    )
    # against the pooled columns no gold tag is new, and p0's c (0.6) misses c's threshold
    assert pooled.metrics["new_tag_recall"] == 0.0
    assert pooled.metrics["unknown_gold_share"] == 0.0
    assert pooled.metrics["micro_recall"] == 3 / 4
    # c is new to p0 and p2: both proposals pass the new tags' threshold (0.4), and p2's
    # first tag is new to it
    assert own.metrics["unknown_gold_share"] == 2 / 4
    assert own.metrics["new_tag_recall"] == 1.0
    assert own.metrics["new_tag_precision"] == 1.0
    assert own.metrics["new_tag_share_of_top1"] == 1 / 3
    assert pooled.metrics["new_tag_share_of_top1"] == 0.0
    assert own.metrics["micro_recall"] == 1.0 and own.metrics["micro_precision"] == 1.0
    for k in ("P@1", "P@3", "nDCG@3", "R@5", "PSP@5"):
        assert own.metrics[k] == pooled.metrics[k]
    # one cut-off for every tag: a tag new to its product is decided at it too
    one_cut = evaluate.evaluate_scores_on(
        known,
        products,
        vocab,
        0.9,
        new_tags=new,
        new_threshold=0.4,
        row_keys=[fold_a, fold_b, fold_a],
    )
    assert one_cut.metrics["new_tag_recall"] == 0.5  # p2's c (0.95), not p0's (0.6)
    # no proposals: the tags new to their products still make the new-tag metrics
    quiet = evaluate.evaluate_scores_on(*args, new_threshold=0.4, row_keys=[fold_a, fold_b, fold_a])
    assert quiet.metrics["new_tag_recall"] == 0.0 and quiet.metrics["unknown_gold_share"] == 0.5
    # at most one decision a product: the best of those that pass their own cut-off (p0's c,
    # 0.6, misses the new tags' 0.7 though it ranks above b's 0.55, which passes 0.5)
    limited = evaluate.evaluate_scores_on(
        np.array([[0.1, 0.55, 0.0]], np.float32),
        products[:1],
        vocab,
        thresholds,
        new_tags=[{"c": 0.6}],
        new_threshold=0.7,
        limit=1,
        row_keys=[fold_a],
    )
    assert limited.per_tag[1]["predicted"] == 1 and limited.metrics["new_tag_precision"] == 0.0
    # products of two folds in parts: each part reads its own products' vocabularies
    rows = [fold_a, fold_b, fold_a]
    monkeypatch.setattr(evaluate, "EVAL_PART_CELLS", 3)
    parted = evaluate.evaluate_scores_on(*args, new_tags=new, new_threshold=0.4, row_keys=rows)
    monkeypatch.undo()
    np.testing.assert_equal(parted.metrics, own.metrics)
    rows = [fold_b, fold_a, fold_a]
    swapped = evaluate.evaluate_scores_on(*args, new_tags=new, new_threshold=0.4, row_keys=rows)
    monkeypatch.setattr(evaluate, "EVAL_PART_CELLS", 3)
    parted = evaluate.evaluate_scores_on(*args, new_tags=new, new_threshold=0.4, row_keys=rows)
    monkeypatch.undo()
    np.testing.assert_equal(parted.metrics, swapped.metrics)
    assert swapped.metrics["unknown_gold_share"] == 2 / 4  # p1's c and p2's c
    with pytest.raises(ValueError, match="vocabularies of 2 products, not 3"):
        evaluate.evaluate_scores_on(*args, row_keys=[fold_a, fold_b])
    # every product's vocabulary the whole one: as without, in parts too
    vocab, products, new, known = _random_catalog(3)
    whole = frozenset(tag_key(t) for t in vocab.tags)
    base = evaluate.evaluate_scores_on(known, products, vocab, 0.5, new_tags=new, limit=2)
    monkeypatch.setattr(evaluate, "EVAL_PART_CELLS", 20 * 3)
    same = evaluate.evaluate_scores_on(
        known, products, vocab, 0.5, new_tags=new, limit=2, row_keys=[whole] * len(products)
    )
    psp = [k for k in base.metrics if k.startswith("PSP@")]
    np.testing.assert_equal(
        {k: v for k, v in same.metrics.items() if k not in psp},
        {k: v for k, v in base.metrics.items() if k not in psp},
    )
    assert same.per_tag == base.per_tag


def test_the_new_tag_threshold_counts_the_tags_new_to_each_products_voters() -> None:
    """With one vocabulary for all products, the threshold of the new-tag columns of
    ``joint_matrices``; out of fold, a gold tag outside a product's own fold's vocabulary is new
    to it though the pooled columns hold it."""
    from labelrec.data import Product, TagVocab, tag_key
    from labelrec.evaluate import joint_matrices, new_tag_threshold

    rng = np.random.default_rng(0)
    names = [f"brand:b{i}" for i in range(12)]
    vocab = TagVocab(names[:4], [3] * 4, 10)
    keys = frozenset(vocab.keys)
    for _ in range(30):
        products, new = [], []
        for i in range(int(rng.integers(1, 8))):
            gold = list(rng.choice(names, int(rng.integers(0, 4)), replace=False))
            products.append(Product(str(i), "t", tags=gold))
            proposed = rng.choice(names, int(rng.integers(0, 5)), replace=False)
            row = {str(t): float(np.round(rng.random(), 2)) for t in proposed}
            if row and rng.random() < 0.3:  # a second spelling of one of them
                t = next(iter(row))
                row[t.upper()] = float(np.round(rng.random(), 2))
            new.append(row)
        y, scores, _ = joint_matrices(np.zeros((len(products), 4)), new, products, vocab)
        cols = slice(4, scores.shape[1])
        expected = metrics.tune_global_threshold(y[:, cols], scores[:, cols])
        assert new_tag_threshold(new, products, [keys] * len(products)) == expected
    # pooled: "brand:b1" is a column, but the first product's fold never saw it
    products = [Product("p", "t", tags=["brand:b1"]), Product("q", "t", tags=["brand:b2"])]
    new = [{"brand:b1": 0.6}, {"brand:b9": 0.31}]
    fold_keys = [frozenset({tag_key("brand:b2")}), frozenset({tag_key("brand:b1")})]
    # above 0.31: the hit (0.6) alone, the second product's gold brand:b2 missed either way
    assert new_tag_threshold(new, products, fold_keys) == pytest.approx(0.32)
    assert new_tag_threshold(new, products, [keys, keys]) == 0.98  # no new gold tag: none


def test_a_score_at_the_threshold_is_a_decision_when_tuning():
    # at 0.3 both negatives (0.3) are decisions: precision 1/3; at 0.5 only the positive
    y, scores = [[1], [0], [0]], [[0.9], [0.3], [0.3]]
    assert metrics.tune_global_threshold(y, scores, grid=[0.3, 0.5]) == 0.5


def test_psp_matches_its_definition_on_random_matrices():
    """The ideal ranking is read from the gold entries alone; the same as per product the k
    largest of y * invp over every tag (ties, unranked -inf scores, k past the tags)."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, m = rng.integers(1, 20), rng.integers(1, 30)
        y = rng.random((n, m)) < 0.3
        s = np.round(rng.random((n, m)), 1).astype(np.float32)
        s[rng.random((n, m)) < 0.1] = -np.inf
        invp = 1.0 / metrics.propensities(rng.integers(0, 50, m), 500)
        for k in (1, 3, 40):
            weights = y * invp
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
            ranked = np.take_along_axis(s, top, axis=1) > -np.inf
            num = (np.take_along_axis(weights, top, axis=1) * ranked).sum()
            den = np.sort(weights, axis=1)[:, ::-1][:, :k].sum()
            want = num / den if den > 0 else np.nan
            np.testing.assert_allclose(metrics.psp_at_k(y, s, k, invp), want, rtol=1e-12)


def test_float32_scores_are_not_copied():
    scores = np.zeros((2, 3), dtype=np.float32)
    assert metrics._as_scores(scores) is scores
    assert metrics._as_scores(np.zeros((2, 3), dtype=int)).dtype == np.float64


def test_top_k_is_the_stable_argsort_on_ties_zeros_and_minus_inf():
    """Both ways top_k selects (argmax passes for small k, a partition for larger k or rows
    that reach -inf) give the stable order: equal scores by lower tag index."""
    rng = np.random.default_rng(1)
    for _ in range(500):
        n, m = rng.integers(1, 30), rng.integers(1, 80)
        s = np.round(rng.random((n, m)), int(rng.integers(0, 3)))
        s = s.astype(rng.choice([np.float32, np.float64]))
        s[rng.random((n, m)) < 0.2] = -np.inf
        s[rng.random((n, m)) < 0.1] = -0.0
        for k in (1, 3, 8, 9, 20):
            want = np.argsort(-s, axis=1, kind="stable")[:, : min(k, m)]
            np.testing.assert_array_equal(metrics.top_k(s, k), want)
