"""Evaluation metrics for multi-label tag recommendation.

Small pure functions over arrays (numpy, with scipy.sparse accepted for binary
matrices), in the spirit of Annif's ``annif/eval.py``.

Conventions
-----------
* ``y_true`` is a binary matrix of shape ``(n_products, n_tags)``: a numpy array or
  any ``scipy.sparse`` matrix/array. Non-zero entries are gold tags.
* ``scores`` is a dense float matrix of the same shape. NaN scores are rejected;
  ``-inf`` is allowed (e.g. to mask tags).
* Ranking is deterministic: tags are ordered by descending score and ties are broken
  by ascending tag index, i.e. exactly ``np.argsort(-scores, kind="stable")``.
  Top-k selection uses ``np.partition`` for speed but reproduces that order.
* Ranking metrics (P@k, R@k, nDCG@k, PSP@k) follow the extreme multi-label (XMC)
  definitions used by pyxclib and Jain et al. (2016).
* Zero-division in precision/recall/F1 yields 0.0 (like scikit-learn's
  ``zero_division=0``); averages over an empty set of products yield NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "RankingSums",
    "apply_thresholds",
    "band_metrics",
    "evaluate_scores",
    "f1_of_counts",
    "f1_scores",
    "frequency_bands",
    "ndcg_at_k",
    "paired_bootstrap",
    "per_product_ndcg",
    "per_product_precision",
    "per_tag_results",
    "per_tag_rows",
    "precision_at_k",
    "propensities",
    "psp_at_k",
    "recall_at_k",
    "tag_counts",
    "top_k",
    "tune_global_threshold",
    "tune_tag_thresholds",
]

DEFAULT_GRID = np.linspace(0.02, 0.98, 49)
_CHUNK_ELEMENTS = 1 << 22  # ~4M matrix cells per chunk in top-k selection


# --------------------------------------------------------------------------- helpers


def _as_binary(y: Any) -> np.ndarray:
    """Return ``y`` (dense or scipy.sparse) as a dense 2-D boolean array."""
    if sp.issparse(y):
        y = y.toarray()
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"expected a 2-D label matrix, got shape {y.shape}")
    return y != 0


def _as_scores(scores: Any) -> np.ndarray:
    """Return ``scores`` as a dense 2-D float array without NaNs: float32 scores stay float32
    (not copied; a catalog's scores over a large vocabulary are the largest array here)."""
    if sp.issparse(scores):
        scores = scores.toarray()
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    if scores.ndim != 2:
        raise ValueError(f"expected a 2-D score matrix, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def _inputs(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_binary(y_true)
    s = _as_scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"shape mismatch: y_true {y.shape} vs scores {s.shape}")
    return y, s


def _check_k(k: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the top-``k`` scores per row, best first.

    Equal to ``np.argsort(-scores, axis=1, kind="stable")[:, :k]`` (ties broken by
    lower tag index) but uses ``np.partition`` so cost is ~linear in ``n_tags``.
    If ``k`` exceeds ``n_tags`` all tags are returned.
    """
    n, m = scores.shape
    k = min(k, m)
    if k == 0 or k * 4 >= m:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = np.empty((n, k), dtype=np.intp)
    step = max(1, _CHUNK_ELEMENTS // m)
    for start in range(0, n, step):
        s = scores[start : start + step]
        if k <= _ARGMAX_K and s.dtype.kind == "f":
            out[start : start + s.shape[0]] = _top_k_by_argmax(s, k)
        else:
            out[start : start + s.shape[0]] = _top_k_by_partition(s, k)
    return out


_ARGMAX_K = 8  # up to this k, k passes of argmax beat a partition (the objective takes k 3)


def _top_k_by_argmax(s: np.ndarray, k: int) -> np.ndarray:
    """``top_k`` of a float block by ``k`` passes of argmax, which returns the lowest index of
    equal maxima, the stable order; a row that reaches -inf or NaN goes by partition."""
    work, rows = s.copy(), np.arange(s.shape[0])
    out = np.empty((s.shape[0], k), dtype=np.intp)
    odd = np.zeros(s.shape[0], dtype=bool)
    for q in range(k):
        j = work.argmax(axis=1)
        odd |= ~(work[rows, j] > -np.inf)  # -inf or NaN reached
        out[:, q] = j
        work[rows, j] = -np.inf
    if odd.any():
        at = np.flatnonzero(odd)
        out[at] = _top_k_by_partition(s[at], k)
    return out


def _top_k_by_partition(s: np.ndarray, k: int) -> np.ndarray:
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]  # k-th largest per row
    above = s > kth
    tied = s == kth
    need = k - above.sum(axis=1, keepdims=True)
    # take all scores above the k-th value plus the lowest-index ties to fill k
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(-1, k)  # ascending tag index per row
    order = np.argsort(-np.take_along_axis(s, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def _hits(y: np.ndarray, top: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Boolean ``(n_products, k)`` matrix: is the tag at each rank a gold tag. A tag scored
    ``-inf`` is not ranked at all (a gold tag the model neither knows nor proposes): when ``k``
    reaches past every ranked tag it fills a slot, never as a hit."""
    return np.take_along_axis(y, top, axis=1) & (np.take_along_axis(scores, top, 1) > -np.inf)


def _mean(values: np.ndarray) -> float:
    """Mean; NaN (without a warning) of nothing."""
    return float(values.mean()) if values.size else float("nan")


def _nanmean(values: np.ndarray) -> float:
    """Mean ignoring NaN; NaN (without a warning) if nothing is left."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _precision_from_hits(hits: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(axis=1) / k


def _recall_from_hits(hits: np.ndarray, n_gold: np.ndarray, k: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = hits[:, :k].sum(axis=1) / n_gold
    return np.where(n_gold > 0, rec, np.nan)


def _ndcg_from_hits(hits: np.ndarray, n_gold: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    h = hits[:, :k]
    # rank by rank: each product's sum in one order, whatever the rows and columns beside it
    # (a matrix product's rounding depends on the shape)
    dcg = np.zeros(h.shape[0])
    for rank in range(h.shape[1]):
        dcg += h[:, rank] * discounts[rank]
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_gold, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = dcg / ideal
    return np.where(n_gold > 0, ndcg, np.nan)


def _psp_from_top(
    y: np.ndarray, top: np.ndarray, inv_propensity: np.ndarray, k: int, scores: np.ndarray
) -> float:
    num, den = _psp_sums(y, top, inv_propensity, k, scores)
    # the 1/k and 1/n_products factors cancel in the ratio
    return float(num / den) if den > 0 else float("nan")


def _psp_sums(
    y: np.ndarray, top: np.ndarray, inv_propensity: np.ndarray, k: int, scores: np.ndarray
) -> tuple[float, float]:
    """PSP@k's gain summed over the products and the same for their ideal rankings."""
    top = top[:, :k]
    ranked = np.take_along_axis(scores, top, axis=1) > -np.inf  # as _hits
    invp = np.broadcast_to(inv_propensity, y.shape)  # one row for every product, or its own
    num = (np.take_along_axis(y, top, axis=1) * np.take_along_axis(invp, top, 1) * ranked).sum()
    # the ideal ranking: per product its k gold tags of largest weight (other tags weigh 0),
    # read from the gold entries alone, not from a products x tags matrix of weights
    rows, cols = np.nonzero(y)
    weights = invp[rows, cols]
    order = np.lexsort((-weights, rows))
    rows, weights = rows[order], weights[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place within its product
    den = weights[(rank < top.shape[1]) & (weights > 0)].sum()
    return float(num), float(den)


def _as_inv_propensity(inv_propensity: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    """Inverse propensities of the tags (one per column), or of each product's columns (the
    shape of the label matrix: a packed matrix whose columns hold different tags per row)."""
    invp = np.asarray(inv_propensity, dtype=np.float64)
    if invp.shape not in ((shape[1],), shape):
        raise ValueError(
            f"inv_propensity must have shape ({shape[1]},) or {shape}, got {invp.shape}"
        )
    return invp


def _safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """Element-wise ``num / den`` with 0.0 where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------- ranking metrics


def per_product_precision(y_true: Any, scores: ArrayLike, k: int) -> np.ndarray:
    """Per-product precision@k: (#gold tags among the top-k) / k.

    Always divides by ``k`` (XMC definition), also when a product has fewer than
    ``k`` gold tags or there are fewer than ``k`` tags. Products without gold tags
    get 0.0.
    """
    k = _check_k(k)
    y, s = _inputs(y_true, scores)
    return _precision_from_hits(_hits(y, top_k(s, k), s), k)


def precision_at_k(y_true: Any, scores: ArrayLike, k: int) -> float:
    """Mean precision@k over all products (XMC definition, see `per_product_precision`).

    Products with zero gold tags are included and contribute 0, so the metric is
    bounded by the share of products that have gold tags.
    """
    return float(per_product_precision(y_true, scores, k).mean())


def recall_at_k(y_true: Any, scores: ArrayLike, k: int) -> float:
    """Mean over products with at least one gold tag of (#gold in top-k) / #gold.

    Returns NaN if no product has a gold tag.
    """
    k = _check_k(k)
    y, s = _inputs(y_true, scores)
    return _nanmean(_recall_from_hits(_hits(y, top_k(s, k), s), y.sum(axis=1), k))


def per_product_ndcg(y_true: Any, scores: ArrayLike, k: int) -> np.ndarray:
    """Per-product nDCG@k with binary gains and ``1 / log2(rank + 1)`` discounts.

    The ideal DCG uses ``min(k, n_gold)`` relevant tags. Products without gold tags
    get NaN.
    """
    k = _check_k(k)
    y, s = _inputs(y_true, scores)
    return _ndcg_from_hits(_hits(y, top_k(s, k), s), y.sum(axis=1), k)


def per_product_metrics(y_true: Any, scores: ArrayLike, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """``P@k``, ``R@k`` and ``nDCG@k`` of each product, for each k in ``ks``; R@k and nDCG@k
    are NaN for a product without gold tags."""
    return RankingSums.of(y_true, scores, ks).per_product


@dataclass
class RankingSums:
    """What the ranking metrics of some products are made of: each product's ``P@k``,
    ``R@k`` and ``nDCG@k``, and PSP@k's gain and ideal gain summed over the products. Those of
    the parts of a catalog join (`join`) into the catalog's, so that its metrics can be
    measured a part at a time, the scores of one part in memory at once."""

    ks: tuple[int, ...]
    per_product: dict[str, np.ndarray]  # "P@k", "R@k", "nDCG@k" for each k, products in order
    psp: dict[int, tuple[float, float]] = field(default_factory=dict)  # k -> (gain, ideal)

    @classmethod
    def of(
        cls,
        y_true: Any,
        scores: ArrayLike,
        ks: Sequence[int],
        inv_propensity: ArrayLike | None = None,
    ) -> RankingSums:
        """The sums of ``scores`` against ``y_true``; PSP@k's when ``inv_propensity`` is given
        (per tag or per cell, as in `psp_at_k`). Ranks are computed once."""
        y, s = _inputs(y_true, scores)
        return cls._of_arrays(y, s, ks, inv_propensity)

    @classmethod
    def _of_arrays(
        cls, y: np.ndarray, s: np.ndarray, ks: Sequence[int], inv_propensity: ArrayLike | None
    ) -> RankingSums:
        """``of`` of a boolean gold matrix and checked scores (`_inputs`)."""
        ks = tuple(_check_k(k) for k in ks)
        n_gold = y.sum(axis=1)
        top = top_k(s, max(ks)) if ks else np.empty((y.shape[0], 0), dtype=np.intp)
        hits = _hits(y, top, s)
        per_product: dict[str, np.ndarray] = {}
        for k in ks:
            per_product[f"P@{k}"] = _precision_from_hits(hits, k)
            per_product[f"R@{k}"] = _recall_from_hits(hits, n_gold, k)
            per_product[f"nDCG@{k}"] = _ndcg_from_hits(hits, n_gold, k)
        psp = {}
        if inv_propensity is not None:
            invp = _as_inv_propensity(inv_propensity, y.shape)
            psp = {k: _psp_sums(y, top, invp, k, s) for k in ks}
        return cls(ks, per_product, psp)

    @classmethod
    def join(cls, parts: Sequence[RankingSums]) -> RankingSums:
        """The sums of the products of ``parts``, in their order (alike ``ks`` and PSP)."""
        if not parts:
            raise ValueError("no parts to join")
        first = parts[0]
        if any(p.ks != first.ks or p.psp.keys() != first.psp.keys() for p in parts):
            raise ValueError("parts of different metrics")
        per_product = {
            key: np.concatenate([p.per_product[key] for p in parts]) for key in first.per_product
        }
        psp = {
            k: (sum(p.psp[k][0] for p in parts), sum(p.psp[k][1] for p in parts)) for k in first.psp
        }
        return cls(first.ks, per_product, psp)

    def metrics(self) -> dict[str, float]:
        """``P@k``, ``R@k`` and ``nDCG@k`` (grouped by metric), then ``PSP@k`` where summed:
        P@k the mean over the products (NaN without any), R@k and nDCG@k over those with gold
        tags."""
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"P@{k}"] = _mean(self.per_product[f"P@{k}"])
        for name in ("R", "nDCG"):
            for k in self.ks:
                out[f"{name}@{k}"] = _nanmean(self.per_product[f"{name}@{k}"])
        for k, (num, den) in self.psp.items():
            # the 1/k and 1/n_products factors cancel in the ratio
            out[f"PSP@{k}"] = float(num / den) if den > 0 else float("nan")
        return out


def ndcg_at_k(y_true: Any, scores: ArrayLike, k: int) -> float:
    """Mean nDCG@k over products with at least one gold tag (NaN if there are none)."""
    return _nanmean(per_product_ndcg(y_true, scores, k))


def propensities(
    tag_counts: ArrayLike, n_products: int, a: float = 0.55, b: float = 1.5
) -> np.ndarray:
    """Tag propensities of Jain et al. (2016), "Extreme Multi-label Loss Functions...".

    ``C = (log N - 1) * (B + 1) ** A`` and ``p_l = 1 / (1 + C * exp(-A * log(N_l + B)))``
    with ``N = n_products`` (training set size), ``N_l = tag_counts[l]`` and natural
    logarithms. Rare tags get small propensities; use ``1 / propensities(...)`` as the
    ``inv_propensity`` argument of `psp_at_k` / `evaluate_scores`. Under three products
    (``log N < 1``) the formula's C turns negative; it is held at 0, every propensity 1, so
    PSP@k is precision@k normalised by its ideal ranking.
    """
    counts = np.asarray(tag_counts, dtype=np.float64)
    c = max(np.log(n_products) - 1.0, 0.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * np.exp(-a * np.log(counts + b)))


def psp_at_k(y_true: Any, scores: ArrayLike, k: int, inv_propensity: ArrayLike) -> float:
    """Normalised propensity-scored precision@k (pyxclib / Jain et al. 2016).

    ``sum_i sum_{l in topk(i)} y_il * invp_l`` divided by the same sum for the ideal
    ranking (per product, the ``k`` largest ``y_il * invp_l``), hence in [0, 1].
    Products without gold tags add 0 to both sums. NaN if the denominator is 0.
    ``inv_propensity``: one per tag (column), or per cell (the shape of ``y_true``).
    """
    k = _check_k(k)
    y, s = _inputs(y_true, scores)
    invp = _as_inv_propensity(inv_propensity, y.shape)
    return _psp_from_top(y, top_k(s, k), invp, k, s)


# --------------------------------------------------------- thresholded (set) metrics


def apply_thresholds(
    scores: ArrayLike, thresholds: float | ArrayLike, limit: int | None = None
) -> np.ndarray:
    """Binary predictions ``scores >= thresholds``, at most ``limit`` a row: the best ranked of
    the tags that pass their thresholds, as `top_k` ranks them and as ``suggest --limit`` returns
    them (None: no limit).

    ``thresholds`` is a scalar or a 1-D array with one threshold per tag (column).
    """
    s = _as_scores(scores)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 1:
        if t.shape[0] != s.shape[1]:
            raise ValueError(f"expected {s.shape[1]} per-tag thresholds, got {t.shape[0]}")
        t = t[None, :]
    elif t.ndim != 0:
        raise ValueError("thresholds must be a scalar or a 1-D per-tag array")
    return limit_decisions(s, s >= t, limit)


def limit_decisions(scores: np.ndarray, passed: np.ndarray, limit: int | None) -> np.ndarray:
    """``passed`` (the cells of ``scores`` at or above their thresholds) cut to at most ``limit``
    a row, the best ranked (``apply_thresholds``); None: every one. ``passed`` is cut in place
    and returned."""
    if limit is not None and _check_k(limit) < scores.shape[1]:
        ranked = np.zeros_like(passed)
        np.put_along_axis(ranked, top_k(np.where(passed, scores, -np.inf), limit), True, axis=1)
        passed &= ranked
    return passed


def tag_counts(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tag (column): true positives, gold positives and predicted positives."""
    y = _as_binary(y_true)
    p = _as_binary(y_pred)
    if y.shape != p.shape:
        raise ValueError(f"shape mismatch: y_true {y.shape} vs y_pred {p.shape}")
    return (y & p).sum(axis=0), y.sum(axis=0), p.sum(axis=0)


def f1_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Micro precision/recall/F1 and macro F1 of binary predictions (`f1_of_counts`)."""
    return f1_of_counts(*tag_counts(y_true, y_pred))


def f1_of_counts(tp_tag: ArrayLike, gold_tag: ArrayLike, pred_tag: ArrayLike) -> dict[str, float]:
    """Micro precision/recall/F1 and macro F1 from per-tag counts (`tag_counts`).

    Macro F1 averages per-tag F1 over tags with at least one gold or predicted
    positive (tags with neither are undefined and skipped). Zero divisions give 0.0.
    """
    tp_tag, gold_tag, pred_tag = (np.asarray(a) for a in (tp_tag, gold_tag, pred_tag))
    tp, n_gold, n_pred = tp_tag.sum(), gold_tag.sum(), pred_tag.sum()
    active = (gold_tag + pred_tag) > 0
    f1_tag = _safe_div(2 * tp_tag[active], gold_tag[active] + pred_tag[active])
    return {
        "micro_precision": float(_safe_div(tp, n_pred)),
        "micro_recall": float(_safe_div(tp, n_gold)),
        "micro_f1": float(_safe_div(2 * tp, n_gold + n_pred)),
        "macro_f1": float(f1_tag.mean()) if f1_tag.size else 0.0,
    }


def tune_global_threshold(y_true: Any, scores: ArrayLike, grid: ArrayLike | None = None) -> float:
    """Single threshold from ``grid`` that maximises micro-F1 of ``scores >= t``.

    Default grid: ``np.linspace(0.02, 0.98, 49)``. Uses one sort of all scores plus
    binary searches, so it is cheap even for large matrices. Ties: the lowest
    maximising threshold wins, in whatever order the grid is given. Where no threshold
    decides a single gold tag (F1 0 everywhere) the highest one wins: the fewest wrong
    decisions.
    """
    y, s = _inputs(y_true, scores)
    g = np.asarray(DEFAULT_GRID if grid is None else grid, dtype=np.float64).ravel()
    if g.size == 0:
        raise ValueError("grid is empty")
    all_sorted = np.sort(s, axis=None)
    pos_sorted = np.sort(s[y])
    n_pred = all_sorted.size - np.searchsorted(all_sorted, g, side="left")  # count >= t
    tp = pos_sorted.size - np.searchsorted(pos_sorted, g, side="left")
    f1 = _safe_div(2 * tp, pos_sorted.size + n_pred)
    if f1.max() <= 0:
        return float(g.max())
    return float(g[f1 == f1.max()].min())


def tune_tag_thresholds(
    y_true: Any,
    scores: ArrayLike,
    global_threshold: float,
    min_support: int = 3,
    grid: ArrayLike | None = None,
    prior: float = 0.0,
    counted: np.ndarray | None = None,
) -> np.ndarray:
    """Per-tag thresholds from ``grid`` maximising each tag's F1 on tuning data.

    Tags with fewer than ``min_support`` gold positives, or whose best F1 is 0, keep
    ``global_threshold``. When several grid values reach a tag's best F1 the one
    closest to ``global_threshold`` is taken (a mild shrinkage towards the global
    value). ``prior`` > 0 shrinks further: a tag with ``n`` positives gets
    ``(n * t_tag + prior * global_threshold) / (n + prior)``, so the fewer positives a
    threshold was fitted on, the closer it stays to the global one. ``counted`` (a boolean
    mask of ``scores``' shape): only these cells count, as gold tags and as decisions.
    Vectorised over tags; loops over the grid.
    """
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    y, s = _inputs(y_true, scores)
    if counted is not None:
        counted = np.asarray(counted, dtype=bool)
        if counted.shape != y.shape:
            raise ValueError(f"shape mismatch: counted {counted.shape} vs scores {y.shape}")
        y = y & counted
    g = np.asarray(DEFAULT_GRID if grid is None else grid, dtype=np.float64).ravel()
    if g.size == 0:
        raise ValueError("grid is empty")
    out = np.full(y.shape[1], float(global_threshold))
    # a tag under min_support keeps the global threshold: only the others are fitted (a large
    # vocabulary is mostly rare tags)
    fitted = np.flatnonzero(y.sum(axis=0) >= min_support)
    if not fitted.size:
        return out
    y, s = y[:, fitted], s[:, fitted]
    if counted is not None:
        counted = counted[:, fitted]
    n_tags = y.shape[1]
    tp = np.empty((g.size, n_tags), dtype=np.int64)
    n_pred = np.empty((g.size, n_tags), dtype=np.int64)
    for i, t in enumerate(g):
        pred = s >= t
        if counted is not None:
            pred &= counted
        n_pred[i] = pred.sum(axis=0)
        tp[i] = (pred & y).sum(axis=0)
    support = y.sum(axis=0)
    f1 = _safe_div(2 * tp, support[None, :] + n_pred)  # (n_grid, n_tags)
    best = f1.max(axis=0)
    distance = np.abs(g - global_threshold)[:, None]
    distance = np.where(f1 >= best[None, :] - 1e-12, distance, np.inf)
    chosen = g[np.argmin(distance, axis=0)]
    if prior > 0:
        chosen = (support * chosen + prior * global_threshold) / (support + prior)
    out[fitted] = np.where(best <= 0, float(global_threshold), chosen)
    return out


# ------------------------------------------------------------- frequency band analysis


def frequency_bands(tag_counts: ArrayLike, head_min: int = 50, tail_max: int = 9) -> np.ndarray:
    """Assign each tag a band by its training frequency.

    ``"head"`` if ``count >= head_min``, ``"tail"`` if ``count <= tail_max``, otherwise
    ``"torso"`` (defaults: head >= 50, torso 10..49, tail < 10).
    """
    if tail_max >= head_min:
        raise ValueError("tail_max must be smaller than head_min")
    counts = np.asarray(tag_counts)
    bands = np.full(counts.shape, "torso", dtype="<U5")
    bands[counts >= head_min] = "head"
    bands[counts <= tail_max] = "tail"
    return bands


def band_metrics(y_true: Any, scores: ArrayLike, bands: ArrayLike, k: int = 5) -> dict[str, float]:
    """Recall@k restricted to the gold tags of each frequency band (`band_recall`).

    For band ``b``: (gold tags of band ``b`` that appear in the top-``k`` over *all*
    tags) / (gold tags of band ``b``), pooled over products. Keys ``f"recall@{k}_{b}"``
    for ``head``, ``torso``, ``tail`` (then any other band labels); NaN when a band
    has no gold tags.
    """
    k = _check_k(k)
    y, s = _inputs(y_true, scores)
    bands = np.asarray(bands)
    if bands.shape != (y.shape[1],):
        raise ValueError(f"bands must have shape ({y.shape[1]},), got {bands.shape}")
    top = top_k(s, k)
    hit_tags = top[_hits(y, top, s)]  # tag index of every gold tag found in a top-k
    return band_recall(np.bincount(hit_tags, minlength=y.shape[1]), y.sum(axis=0), bands, k)


def band_recall(
    found_tag: ArrayLike, gold_tag: ArrayLike, bands: ArrayLike, k: int
) -> dict[str, float]:
    """`band_metrics` from per-tag counts: each tag's gold entries found in a top ``k``
    (``found_tag``), its gold entries (``gold_tag``) and its band."""
    found_tag, gold_tag, bands = (np.asarray(a) for a in (found_tag, gold_tag, bands))
    names = ["head", "torso", "tail"]
    names += sorted(set(bands.tolist()) - set(names))
    out = {}
    for name in names:
        mask = bands == name
        gold = gold_tag[mask].sum()
        out[f"recall@{k}_{name}"] = float(found_tag[mask].sum() / gold) if gold else float("nan")
    return out


def per_tag_results(
    y_true: Any,
    y_pred: Any,
    tag_names: Sequence[str],
    train_counts: ArrayLike | None = None,
) -> list[dict[str, Any]]:
    """One row per tag with evaluation counts and scores (`per_tag_rows` of `tag_counts`)."""
    return per_tag_rows(*tag_counts(y_true, y_pred), tag_names, train_counts)


def per_tag_rows(
    tp: ArrayLike,
    support: ArrayLike,
    predicted: ArrayLike,
    tag_names: Sequence[str],
    train_counts: ArrayLike | None = None,
) -> list[dict[str, Any]]:
    """One row per tag from its counts (`tag_counts`).

    Keys: ``tag``, ``support`` (gold positives), ``predicted``, ``tp``,
    ``precision``, ``recall``, ``f1`` (0.0 on zero division) and ``train_count``
    (None when ``train_counts`` is not given). Pass to ``pandas.DataFrame`` for a
    table.
    """
    tp, support, predicted = (np.asarray(a) for a in (tp, support, predicted))
    n_tags = tp.shape[0]
    if support.shape != (n_tags,) or predicted.shape != (n_tags,):
        raise ValueError(
            f"counts of different lengths: {n_tags}, {support.shape}, {predicted.shape}"
        )
    if len(tag_names) != n_tags:
        raise ValueError(f"expected {n_tags} tag names, got {len(tag_names)}")
    counts = None if train_counts is None else np.asarray(train_counts)
    if counts is not None and counts.shape != (n_tags,):
        raise ValueError(f"train_counts must have shape ({n_tags},), got {counts.shape}")
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    return [
        {
            "tag": tag_names[j],
            "support": int(support[j]),
            "predicted": int(predicted[j]),
            "tp": int(tp[j]),
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "train_count": None if counts is None else int(counts[j]),
        }
        for j in range(n_tags)
    ]


# ---------------------------------------------------------------------- aggregate


def evaluate_scores(
    y_true: Any,
    scores: ArrayLike,
    thresholds: float | ArrayLike,
    inv_propensity: ArrayLike | None = None,
    ks: Sequence[int] = (1, 3, 5),
    limit: int | None = None,
) -> dict[str, float]:
    """All headline metrics for one score matrix.

    Keys: ``P@k``, ``R@k``, ``nDCG@k`` for each k in ``ks`` (grouped by metric),
    ``PSP@k`` when ``inv_propensity`` is given (per tag or per cell, as in `psp_at_k`), then
    ``micro_precision``, ``micro_recall``, ``micro_f1``, ``macro_f1`` for ``scores >=
    thresholds`` (at most ``limit`` a product, `apply_thresholds`) and ``n_products``. All
    values are python floats. Ranks are computed once.
    """
    y, s = _inputs(y_true, scores)
    out = RankingSums._of_arrays(y, s, ks, inv_propensity).metrics()
    out.update(f1_scores(y, apply_thresholds(s, thresholds, limit)))
    out["n_products"] = float(y.shape[0])
    return out


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Paired percentile bootstrap of ``mean(a - b)`` over products (``scipy.stats.bootstrap``).

    ``a`` (challenger) and ``b`` (champion) are per-product metric values (e.g. from
    `per_product_ndcg`); pairs where either is NaN are dropped. Products are
    resampled with replacement ``n_resamples`` times. Returns ``mean_diff`` (on the
    original sample) and the ``ci`` interval bounds ``low`` / ``high``.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if not 0.0 < ci < 1.0:
        raise ValueError("ci must be in (0, 1)")
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    n = diff.size
    if n == 0:
        raise ValueError("no non-NaN pairs to bootstrap")
    if n == 1:  # nothing to resample: the interval is the one difference
        low = high = float(diff[0])
    else:
        result = stats.bootstrap(
            (a[keep], b[keep]),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            batch=max(1, _CHUNK_ELEMENTS // n),  # bounded memory on large catalogs
            confidence_level=ci,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval
    return {"mean_diff": float(diff.mean()), "low": float(low), "high": float(high)}


def objective(y: Any, scores: np.ndarray) -> float:
    """What fusion weights are tuned for on valid: (P@1 + nDCG@3) / 2.

    Equal to ``0.5 * (precision_at_k(y, scores, 1) + ndcg_at_k(y, scores, 3))``, from one top-3
    selection in the scores' own float dtype (ranking needs no float64 copy) and, for sparse
    ``y``, without a dense label matrix: weight searches call it hundreds of times."""
    s = np.asarray(scores)
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    if s.ndim != 2:
        raise ValueError(f"expected a 2-D score matrix, got shape {s.shape}")
    dense = None if sp.issparse(y) else _as_binary(y)
    shape = y.shape if dense is None else dense.shape
    if shape != s.shape:
        raise ValueError(f"shape mismatch: y_true {shape} vs scores {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    top = top_k(s, 3)
    return objective_of_top(y if dense is None else dense, top, np.take_along_axis(s, top, 1))


def objective_of_top(y: Any, top: np.ndarray, top_scores: np.ndarray) -> float:
    """``objective`` from each product's top 3 tags (``top``: their columns of ``y``, best
    first; ``top_scores``: their scores, ``-inf`` for a tag not ranked)."""
    dense = None
    if not sp.issparse(y):
        plain = isinstance(y, np.ndarray) and y.dtype == bool and y.ndim == 2
        dense = y if plain else _as_binary(y)
    ranked = top_scores > -np.inf  # as _hits
    if dense is None:
        csr = sp.csr_array(y)
        if not csr.has_canonical_format:  # a tag entered twice in a row is one gold tag
            csr = csr.copy()
            csr.sum_duplicates()
        rows, cols = csr.nonzero()  # explicit zeros are not gold
        n, m = csr.shape
        gold = rows.astype(np.int64) * m + cols
        keys = np.arange(n, dtype=np.int64)[:, None] * m + top  # distinct, as gold's are
        hits = np.isin(keys, gold, assume_unique=True) & ranked
        n_gold = np.bincount(rows, minlength=n)
    else:
        hits, n_gold = np.take_along_axis(dense, top, axis=1) & ranked, dense.sum(axis=1)
    p1 = float(_precision_from_hits(hits, 1).mean())
    return 0.5 * (p1 + _nanmean(_ndcg_from_hits(hits, n_gold, 3)))
