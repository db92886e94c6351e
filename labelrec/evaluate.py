"""Evaluate a trained recommender on a labelled catalog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from labelrec import metrics
from labelrec.data import Product, TagVocab, tag_key
from labelrec.taxonomy import consistent_decisions

# evaluate_scores_on evaluates this many products x vocabulary scores at a time (about 10
# bytes a cell of copies: docs/architecture.md)
EVAL_PART_CELLS = 4_000_000
_PROPOSED = float(np.nextafter(np.float32(0), np.float32(1)))  # the least score of a proposed tag


def gold_matrix(products: list[Product], vocab: TagVocab) -> tuple[sp.csr_matrix, list[str]]:
    """Gold tags as a matrix over the vocabulary plus every gold tag the model does not know.

    Unknown gold tags stay in the denominator of recall and nDCG (a model cannot find them, and
    the metrics say so) instead of silently disappearing.
    """
    extra: dict[str, int] = {}  # tag_key -> its place after the vocabulary
    spelt: list[str] = []  # those tags, as first spelt
    rows, cols = [], []
    n_known = len(vocab)
    for r, product in enumerate(products):
        columns: set[int] = set()
        for tag in product.tags:  # another case, width or form of a model's tag is that tag
            j = vocab.find(tag)
            if j is None:
                key = tag_key(tag)
                if key not in extra:
                    extra[key] = len(extra)
                    spelt.append(tag)
                j = n_known + extra[key]
            columns.add(j)
        rows += [r] * len(columns)
        cols += sorted(columns)
    shape = (len(products), n_known + len(extra))
    y = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    return y, list(vocab.tags) + spelt


class JointColumns:
    """The columns of the joint matrix of some products: the vocabulary's tags, the products'
    gold tags outside it (as first spelt), then each new tag in the order the products first
    propose it. ``layout`` places the proposals of the products from ``start`` on; placed in
    the products' order a part at a time, they get the columns that placing them all at once
    gives."""

    def __init__(self, products: list[Product], vocab: TagVocab) -> None:
        self.gold, self.names = gold_matrix(products, vocab)
        # tag_key -> column: a new tag spelt otherwise is the gold one (the vocabulary's, cached)
        self._index: dict[str, int] = dict(vocab.folded)
        for j in range(len(vocab), len(self.names)):
            self._index.setdefault(tag_key(self.names[j]), j)

    def layout(self, start: int, new_tags: list[dict[str, float]]) -> JointLayout:
        """The layout of the products ``start`` to ``start + len(new_tags)`` and their
        ``new_tags`` (their tags; the scores are not read), over the columns placed so far."""
        if not 0 <= start <= start + len(new_tags) <= self.gold.shape[0]:
            raise ValueError(f"products {start} to {start + len(new_tags)} of {self.gold.shape[0]}")
        rows, cols = [], []
        for i, row in enumerate(new_tags):
            for tag in row:
                key = tag_key(tag)
                j = self._index.get(key)
                if j is None:
                    j = self._index[key] = len(self.names)
                    self.names.append(tag)
                rows.append(i)
                cols.append(j)
        gold = self.gold[start : start + len(new_tags)]
        shape = (len(new_tags), len(self.names))
        y = sp.csr_matrix((gold.data, gold.indices, gold.indptr), shape=shape)
        rows_, cols_ = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
        return JointLayout(y, list(self.names), rows_, cols_)

    def forget(self, n_columns: int) -> None:
        """Drop the columns from ``n_columns`` on (new tags placed since there were that many)."""
        for tag in self.names[n_columns:]:
            del self._index[tag_key(tag)]
        del self.names[n_columns:]


@dataclass
class JointLayout:
    """The gold matrix and columns of ``joint_matrices`` for some products and the new tags
    proposed for them: built once where only the scores change (a weight grid)."""

    y: sp.csr_matrix
    names: list[str]
    rows: np.ndarray  # each proposed new tag's product, in the order of its rows and items
    cols: np.ndarray  # and its column in ``names``

    @classmethod
    def of(
        cls, new_tags: list[dict[str, float]], products: list[Product], vocab: TagVocab
    ) -> JointLayout:
        """The layout of ``new_tags`` (their tags; the scores are not read), one a product."""
        if len(new_tags) != len(products):
            raise ValueError(f"new tags of {len(new_tags)} products, not {len(products)}")
        return JointColumns(products, vocab).layout(0, new_tags)

    def scores(
        self, known: np.ndarray, new_tags: list[dict[str, float]], out: np.ndarray | None = None
    ) -> np.ndarray:
        """``known`` and ``new_tags`` (the tags the layout was built from, in the same order:
        only their scores may differ) as one matrix over ``names``. A column neither scores is
        ``-inf``, not ranked (``labelrec.metrics``): a gold tag the model neither knows nor
        proposes is a miss even when ``k`` reaches past every tag the model ranks. ``out``: a
        scratch matrix of that shape to write into."""
        n_known, n_cols = known.shape[1], len(self.names)
        if sum(map(len, new_tags)) != len(self.rows):
            raise ValueError("new tags other than those the layout was built from")
        values = np.fromiter(
            (s for row in new_tags for s in row.values()), dtype=np.float64, count=len(self.rows)
        )
        if out is None and n_cols == n_known and not len(values):
            return known
        if out is None:
            out = np.empty((known.shape[0], n_cols), dtype=known.dtype)
        out[:, :n_known] = known
        out[:, n_known:] = -np.inf
        # one tag proposed twice in a row (two spellings) keeps its larger score; NaN none
        np.fmax.at(out, (self.rows, self.cols), values.astype(out.dtype))
        return out

    def _proposals(
        self, new_tags: list[dict[str, float]], dtype: np.dtype
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and scores (in ``dtype``, as ``scores`` writes them) of ``new_tags``,
        one entry a cell with its larger score, a NaN-only cell left out."""
        if sum(map(len, new_tags)) != len(self.rows):
            raise ValueError("new tags other than those the layout was built from")
        values = np.fromiter(
            (s for row in new_tags for s in row.values()), dtype=np.float64, count=len(self.rows)
        ).astype(dtype)
        keep = ~np.isnan(values)
        return _largest_per_cell(self.rows[keep], self.cols[keep], values[keep], len(self.names))

    def objective(self, known: np.ndarray, new_tags: list[dict[str, float]]) -> float:
        """``metrics.objective(self.y, self.scores(known, new_tags))`` without the joint
        matrix, whose new-tag columns grow with the products: each product's top 3 of its best
        3 known scores and its proposals (a proposal of a known tag raises its score). A NaN
        known score raises ValueError, even where a proposal of that tag would cover it."""
        n, n_known = known.shape
        if n_known < 3:  # the joint matrix's own -inf columns could be among the top 3
            return metrics.objective(self.y, self.scores(known, new_tags))
        if np.isnan(known).any():
            raise ValueError("scores contain NaN")
        top = metrics.top_k(known, 3)
        rows, cols, values = self._proposals(new_tags, known.dtype)
        rows = np.concatenate([np.repeat(np.arange(n, dtype=np.intp), 3), rows])
        cols = np.concatenate([top.ravel(), cols])
        values = np.concatenate([np.take_along_axis(known, top, axis=1).ravel(), values])
        # a cell twice (a known tag proposed too): its larger score, as np.fmax.at writes it
        rows, cols, values = _largest_per_cell(rows, cols, values, len(self.names))
        # each row's best 3, ties by the lower column (as metrics.top_k)
        order = np.lexsort((cols, -values, rows))
        starts = np.searchsorted(rows[order], np.arange(n))
        at = order[starts[:, None] + np.arange(3)]  # every row has its 3 known at least
        return metrics.objective_of_top(self.y, cols[at], values[at])

    def packed(
        self, known: np.ndarray, new_tags: list[dict[str, float]], min_width: int = 0
    ) -> PackedScores:
        """``self.y`` and ``self.scores(known, new_tags)`` with each product's new-tag columns
        (those it proposes or holds as gold) packed after the vocabulary's, in their order: as
        wide as the vocabulary plus the most new tags one product has, where the joint matrix
        has a column for every new tag of every product. A product ranks its tags there as in
        the joint matrix (ties by the lower column, a new tag after the known ones), so the
        metrics of a product's ranking and decisions are the joint matrix's; those of a tag
        (macro F1, per-tag results) need ``PackedScores.column_counts``. ``min_width``: at
        least that many columns (as many as the joint matrix at most), so that the top ``k`` of
        both are alike wide and their sums add up in the same order. Scores other than floats
        are float64 there, as the metrics read them."""
        n, n_known = known.shape
        width = len(self.names)
        dtype = known.dtype if known.dtype.kind == "f" else np.dtype(np.float64)
        rows, cols, values = self._proposals(new_tags, dtype)
        new = cols >= n_known
        y = self.y.tocoo()
        gold_new = y.col >= n_known
        proposed = rows[new].astype(np.int64) * width + cols[new]
        gold = y.row[gold_new].astype(np.int64) * width + y.col[gold_new]
        cells = np.unique(np.concatenate([proposed, gold]))  # by product, then column
        cell_rows = cells // width
        slot = np.arange(len(cells)) - np.searchsorted(cell_rows, cell_rows)
        n_slots = int(slot.max()) + 1 if len(cells) else 0
        n_slots = max(n_slots, min(min_width, width) - n_known)  # unused slots: -inf, none
        if n_slots or (~new).any():
            scores = np.full((n, n_known + n_slots), -np.inf, dtype=dtype)
            scores[:, :n_known] = known
            np.fmax.at(scores, (rows[~new], cols[~new]), values[~new])  # a known tag respelt
            scores[rows[new], n_known + slot[np.searchsorted(cells, proposed)]] = values[new]
        else:
            scores = known.astype(dtype, copy=False)
        slots = np.full((n, n_slots), -1, dtype=np.intp)
        slots[cell_rows, slot] = cells % width
        packed_cols = y.col.astype(np.intp)
        packed_cols[gold_new] = n_known + slot[np.searchsorted(cells, gold)]
        packed_y = sp.csr_matrix((y.data, (y.row, packed_cols)), shape=scores.shape)
        return PackedScores(packed_y, scores, slots)

    def new_threshold(self, new_tags: list[dict[str, float]], n_known: int, dtype: Any) -> float:
        """``metrics.tune_global_threshold`` over the new-tag columns (those past ``n_known``)
        of ``self.scores`` in ``dtype``, from the proposals and gold tags there alone."""
        rows, cols, values = self._proposals(new_tags, np.dtype(dtype))
        new = cols >= n_known
        rows, cols, values = rows[new], cols[new], values[new]
        y = self.y.tocoo()
        gold_new = (y.col >= n_known) & (y.data != 0)
        gold = set(zip(y.row[gold_new].tolist(), y.col[gold_new].tolist(), strict=True))
        hits = np.fromiter(
            ((r, c) in gold for r, c in zip(rows.tolist(), cols.tolist(), strict=True)),
            dtype=bool,
            count=len(rows),
        )
        return _proposal_threshold(values, hits, len(gold) - int(hits.sum()))


@dataclass
class PackedScores:
    """Gold and scores with each product's new-tag columns packed (``JointLayout.packed``)."""

    y: sp.csr_matrix  # (products, vocabulary + slots)
    scores: np.ndarray
    slots: np.ndarray  # (products, slots): the joint column in each slot, -1 for none

    def column_counts(self, matrix: Any, n_columns: int) -> np.ndarray:
        """Nonzero entries of ``matrix`` (dense or sparse, in the packed shape) counted by the
        joint matrix's ``n_columns`` columns: a slot's entries count for the column it holds."""
        n_known = self.scores.shape[1] - self.slots.shape[1]
        out = np.zeros(n_columns, dtype=np.int64)
        out[:n_known] = np.asarray((matrix[:, :n_known] != 0).sum(axis=0)).ravel()
        rows, slots = matrix[:, n_known:].nonzero()
        out += np.bincount(self.slots[rows, slots], minlength=n_columns)
        return out


def _largest_per_cell(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries ``(rows, cols, values)`` one a cell of a matrix ``width`` wide, each with
    its larger value."""
    cells = rows.astype(np.int64) * width + cols
    order = np.lexsort((-values, cells))  # by cell, the larger value first
    first = np.ones(len(order), dtype=bool)
    first[1:] = cells[order][1:] != cells[order][:-1]
    pick = order[first]
    return rows[pick], cols[pick], values[pick]


def _proposal_threshold(scores: Any, hits: Any, missed: int) -> float:
    """``metrics.tune_global_threshold`` of proposed tags (``scores``; ``hits``: gold) and
    ``missed`` gold tags nothing proposed (-inf)."""
    scores = np.concatenate([np.asarray(scores, dtype=np.float64), np.full(missed, -np.inf)])
    truth = np.concatenate([np.asarray(hits, dtype=bool), np.ones(missed, dtype=bool)])
    return metrics.tune_global_threshold(truth.reshape(1, -1), scores.reshape(1, -1))


def joint_matrices(
    known: np.ndarray, new_tags: list[dict[str, float]], products: list[Product], vocab: TagVocab
) -> tuple[sp.csr_matrix, np.ndarray, list[str]]:
    """Gold and scores over the vocabulary + gold tags it lacks + proposed new tags.

    A proposed new tag that matches a gold tag counts as a hit; any other takes a rank slot.
    """
    layout = JointLayout.of(new_tags, products, vocab)
    return layout.y, layout.scores(known, new_tags), layout.names


def new_tag_threshold(
    new_tags: list[dict[str, float]],
    products: list[Product],
    known: list[set[str]] | list[frozenset[str]],
) -> float:
    """The threshold of proposed new tags with the best micro-F1 over tags new to each
    product's voters: its gold tags whose ``tag_key`` is not in ``known[i]`` (the keys of the
    vocabulary its voters were fitted with), missed unless proposed, and its proposals outside
    them (a proposal that folds into a known tag is that tag, scored with the known ones).

    With one vocabulary for every product this is ``metrics.tune_global_threshold`` over the
    new-tag columns of ``joint_matrices`` with float64 known scores (float32 ones round the new
    tags' scores to float32 there); the out-of-fold evidence of ``train.tuning_folds``
    gives each product its fold's."""
    scores: list[float] = []
    hits: list[bool] = []
    missed = 0  # gold tags new to their product that nothing proposed
    for row, product, keys in zip(new_tags, products, known, strict=True):
        gold = {tag_key(t) for t in product.tags} - keys
        best: dict[str, float] = {}  # one tag proposed twice (two spellings): the larger score
        for tag, s in row.items():
            key = tag_key(tag)
            if key not in keys and s > best.get(key, -np.inf):  # a NaN score: none
                best[key] = s
        missed += len(gold.difference(best))
        scores += best.values()
        hits += [k in gold for k in best]
    return _proposal_threshold(scores, hits, missed)


@dataclass
class Evaluation:
    """Metrics of one model on one catalog."""

    metrics: dict[str, float]
    per_tag: list[dict[str, Any]]
    per_product: dict[str, np.ndarray]


def evaluate_scores_on(
    scores: np.ndarray,
    products: list[Product],
    vocab: TagVocab,
    thresholds: np.ndarray | float,
    ks: tuple[int, ...] = (1, 3, 5),
    new_tags: list[dict[str, float]] | None = None,
    new_threshold: float = 1.0,
    limit: int | None = None,
    row_keys: Sequence[frozenset[str]] | None = None,
    hierarchy: tuple[np.ndarray, Any] | None = None,
) -> Evaluation:
    """All metrics of ``scores`` (n, len(vocab)) against the products' gold tags; the decisions
    (F1, per-tag results) are the tags at or above their threshold, at most ``limit`` a product
    as ``suggest`` returns them (None: every one); with ``hierarchy`` ((parents, plan), a
    model's ``TagRecommender.hierarchy``) a category path only where its parent is one too, as
    the model decides (``taxonomy.consistent_decisions``).

    ``new_tags`` (tags outside the vocabulary the model proposed, per product) are ranked with
    the known ones, as the model suggests them: one that is a gold tag is a hit, any other takes
    a rank slot; those at or above ``new_threshold`` are decisions. One number as
    ``thresholds`` is one cut-off for every tag, new ones too (``--threshold``), and
    ``new_threshold`` is then not used. Without new tags the metrics are the vocabulary's
    alone, and a gold tag outside it is a miss. ``row_keys``: each product's own vocabulary
    (``tag_key``s), where its scores come from a model that knew fewer tags (a tuning fold's):
    a vocabulary tag outside it is new to that product (``EvaluationStream``).

    The metrics are those of ``joint_matrices`` (a column for every tag of every product),
    computed on ``JointLayout.packed``: as wide as the vocabulary plus the most new tags one
    product has, however many distinct new tags the products have together. They are computed
    by `EvaluationStream`, ``EVAL_PART_CELLS`` scores at a time, so what they add to
    ``scores`` is a part's copies, not the whole matrix's.
    """
    n = scores.shape[0]
    if n != len(products):
        raise ValueError(f"scores of {n} products for {len(products)} products")
    if new_tags is not None and len(new_tags) != n:
        raise ValueError(f"scores of {n} products but new tags of {len(new_tags)}")
    stream = EvaluationStream(
        products, vocab, thresholds, ks, new_threshold, limit, row_keys, hierarchy
    )
    rows = max(1, EVAL_PART_CELLS // max(1, scores.shape[1]))
    for start in range(0, n, rows):
        stream.add(
            scores[start : start + rows],
            None if new_tags is None else new_tags[start : start + rows],
        )
    return stream.result()


class EvaluationStream:
    """``evaluate_scores_on`` of products whose scores come a part at a time: ``add`` the
    scores of the next products, in order, then ``result``. What it keeps between parts is
    each product's ranking metrics and the counts by tag, not the scores (products x
    vocabulary). The metrics are those of the products scored at once, all but PSP@k (sums
    of floats in another order: equal to about 1e-15).

    ``row_keys`` (one set of ``tag_key``s a product): the vocabulary of the model that scored
    each product, where it knew fewer tags than ``vocab`` (out-of-fold scores pooled over
    folds). A vocabulary tag outside a product's own is new to it, as tags outside the
    vocabulary are to every product: it is decided at the new tags' threshold and counts in
    the new-tag metrics. Its score is the column's, where a proposal of the tag (a new tag
    spelt as the vocabulary's) folds in."""

    def __init__(
        self,
        products: list[Product],
        vocab: TagVocab,
        thresholds: np.ndarray | float,
        ks: tuple[int, ...] = (1, 3, 5),
        new_threshold: float = 1.0,
        limit: int | None = None,
        row_keys: Sequence[frozenset[str]] | None = None,
        hierarchy: tuple[np.ndarray, Any] | None = None,
    ) -> None:
        self.products, self.vocab, self.ks, self.limit = products, vocab, tuple(ks), limit
        self._hierarchy = hierarchy  # (parents, plan): decisions keep category paths whole
        if row_keys is not None and len(row_keys) != len(products):
            raise ValueError(f"vocabularies of {len(row_keys)} products, not {len(products)}")
        self._row_keys = row_keys
        self._columns = JointColumns(products, vocab)
        self._thresholds = thresholds
        # a tag outside the vocabulary is a decision where it was proposed (a score above 0)
        one_cut = np.ndim(thresholds) == 0  # a number, or a 0-d array
        self._outside = max(float(thresholds if one_cut else new_threshold), _PROPOSED)
        self._n_train = vocab.n_products or int(vocab.counts.max(initial=1))
        self._done = 0
        self._ranking: list[metrics.RankingSums] = []
        self._per_product: dict[str, list[np.ndarray]] = {"nDCG@3": [], "P@1": []}
        # by joint column: gold entries decided, gold entries, decided, found in a top 5
        self._counts = [np.zeros(0, dtype=np.int64) for _ in range(4)]
        self._gold_entries = 0
        self._any_new = False
        # products whose first tag is new, gold tags outside the vocabulary, new tags decided,
        # new tags decided and gold
        self._new_counts = np.zeros(4, dtype=np.int64)

    @property
    def gold(self) -> sp.csr_matrix:
        """The products' gold tags (``gold_matrix``: the vocabulary's, then those outside it)."""
        return self._columns.gold

    @classmethod
    def for_model(
        cls,
        rec: Any,
        products: list[Product],
        threshold: float | None = None,
        limit: int | None = None,
    ) -> EvaluationStream:
        """The evaluation of a model's decisions as it suggests them (``TagRecommender``):
        its per-tag thresholds (``threshold``: one for every tag, new ones too), its new tags'
        threshold, its category paths whole."""
        return cls(
            products,
            rec.vocab,
            rec.thresholds(threshold),
            new_threshold=rec.new_tag_threshold if threshold is None else threshold,
            limit=limit,
            hierarchy=rec.hierarchy,
        )

    def add(self, known: np.ndarray, new_tags: list[dict[str, float]] | None = None) -> None:
        """The scores of the next ``len(known)`` products: ``known`` over the vocabulary and
        the new tags proposed for each (None: none)."""
        n = known.shape[0]
        if new_tags is None:
            new_tags = [{} for _ in range(n)]
        if len(new_tags) != n:
            raise ValueError(f"scores of {n} products but new tags of {len(new_tags)}")
        if self._done + n > len(self.products):
            raise ValueError(
                f"scores of products {self._done} to {self._done + n},"
                f" past the {len(self.products)} products"
            )
        n_columns = len(self._columns.names)
        try:
            measured = self._measure(known, new_tags)
        except BaseException:  # a part refused (NaN scores) leaves the stream as it was
            self._columns.forget(n_columns)
            raise
        self._done += n
        ranking, per_product, part_counts, gold_entries, new_counts, unknown = measured
        self._any_new = self._any_new or any(new_tags) or unknown
        self._ranking.append(ranking)
        for key, values in per_product.items():
            self._per_product[key].append(values)
        for i, part in enumerate(part_counts):
            part[: len(self._counts[i])] += self._counts[i]
            self._counts[i] = part
        self._gold_entries += gold_entries
        self._new_counts += new_counts

    def _measure(self, known: np.ndarray, new_tags: list[dict[str, float]]) -> tuple[Any, ...]:
        """What ``add`` keeps of the next products: their ranking sums, per-product values,
        counts by joint column and the counts of gold and new tags."""
        layout = self._columns.layout(self._done, new_tags)
        packed = layout.packed(known, new_tags, min_width=max((*self.ks, 5)))  # bands' k: 5
        y, full, n_known = packed.y, packed.scores, len(self.vocab)
        counts = np.zeros(full.shape[1], dtype=np.int64)  # a tag outside the vocabulary: 0
        counts[:n_known] = self.vocab.counts
        inv_p = 1.0 / metrics.propensities(counts, self._n_train)
        ranking = metrics.RankingSums.of(y, full, self.ks, inv_p)
        per_product = {  # ranked again only where ks lacks them
            "nDCG@3": ranking.per_product.get("nDCG@3"),
            "P@1": ranking.per_product.get("P@1"),
        }
        if per_product["nDCG@3"] is None:
            per_product["nDCG@3"] = metrics.per_product_ndcg(y, full, 3)
        if per_product["P@1"] is None:
            per_product["P@1"] = metrics.per_product_precision(y, full, 1)
        new_to = np.zeros(full.shape, dtype=bool)  # the cells of tags new to their product
        new_to[:, n_known:] = True
        new_to[:, :n_known] = self._unknown_to(self._done, full.shape[0])
        unknown = bool(new_to[:, :n_known].any())  # vocabulary tags new to their product
        cut = np.full(full.shape[1], self._outside)
        cut[:n_known] = self._thresholds
        passed = full >= cut  # compared in float64, as apply_thresholds
        if unknown:
            passed[new_to] = full[new_to] >= np.float64(self._outside)
        if self._hierarchy is not None:  # the vocabulary's columns: a view, cut in place
            consistent_decisions(passed[:, :n_known], *self._hierarchy)
        decided = metrics.limit_decisions(full, passed, self.limit)
        # a packed column past the vocabulary holds different tags in different products: the
        # counts are by the joint matrix's columns
        hits = sp.csr_matrix(y.multiply(decided))
        top = metrics.top_k(full, 5)
        gold_at = y.toarray() != 0
        found_at = np.take_along_axis(gold_at, top, 1)
        found_at &= np.take_along_axis(full, top, 1) > -np.inf  # as metrics._hits
        rows, ranks = np.nonzero(found_at)
        found = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.int8), (rows, top[rows, ranks])), shape=y.shape
        )
        n_cols = len(layout.names)
        part_counts = [packed.column_counts(m, n_cols) for m in (hits, y, decided, found)]
        gold_new, proposed = gold_at & new_to, decided & new_to
        first = np.argmax(full, axis=1)
        new_counts = np.array(
            [
                new_to[np.arange(len(first)), first].sum(),
                gold_new.sum(),
                proposed.sum(),
                (proposed & gold_new).sum(),
            ],
            dtype=np.int64,
        )
        return ranking, per_product, part_counts, y.nnz, new_counts, unknown

    def _unknown_to(self, start: int, n: int) -> np.ndarray:
        """Which vocabulary tags are outside the own vocabulary of each of the products
        ``start`` to ``start + n`` (none without ``row_keys``)."""
        n_known = len(self.vocab)
        if self._row_keys is None:
            return np.zeros((n, n_known), dtype=bool)
        masks: dict[frozenset[str], np.ndarray] = {}  # one a row vocabulary of these products
        rows = []
        for keys in self._row_keys[start : start + n]:
            mask = masks.get(keys)
            if mask is None:
                columns = self.vocab.keys
                mask = np.fromiter((k not in keys for k in columns), dtype=bool, count=n_known)
                masks[keys] = mask
            rows.append(mask)
        return np.array(rows, dtype=bool).reshape(n, n_known)

    def result(self) -> Evaluation:
        """The metrics of every product, once each has been added."""
        n = len(self.products)
        if self._done != n:
            raise ValueError(f"scores of {self._done} of the {n} products added")
        if not self._ranking:  # no products
            self.add(np.zeros((0, len(self.vocab)), dtype=np.float32))
        names = self._columns.names
        n_known, n_cols = len(self.vocab), len(names)
        tp, gold, decided, found = self._counts  # the last part's: as wide as the names
        result = metrics.RankingSums.join(self._ranking).metrics()
        result.update(metrics.f1_of_counts(tp, gold, decided))
        result["n_products"] = float(n)
        train_counts = np.zeros(n_cols, dtype=np.int64)  # a tag outside the vocabulary: 0
        train_counts[:n_known] = self.vocab.counts
        bands = metrics.frequency_bands(train_counts)
        result.update(metrics.band_recall(found, gold, bands, 5))
        top1, new_gold, new_decided, new_found = (int(c) for c in self._new_counts)
        result["unknown_gold_share"] = new_gold / max(self._gold_entries, 1)
        if self._any_new:  # how the new tags fare: first place, and at their threshold
            result["new_tag_share_of_top1"] = top1 / max(n, 1)
            result["new_tag_recall"] = new_found / max(new_gold, 1)
            result["new_tag_precision"] = new_found / max(new_decided, 1)
        per_tag = metrics.per_tag_rows(tp, gold, decided, names, train_counts=train_counts)
        per_product = {key: np.concatenate(parts) for key, parts in self._per_product.items()}
        return Evaluation(result, per_tag, per_product)
