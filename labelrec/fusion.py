"""The fusion: one score per tag from the evidence of every tagger, with weights tuned on valid.

Known tags: ``base = w * neural + e * embedding + (1 - w - e) * tfidf`` (the neural tagger,
``labelrec.model``; the neighbour voters, ``labelrec.taggers.neighbours``; ``tfidf`` is
``(1 - r) * neighbours + r * ridge`` where the TF-IDF tagger holds a ridge classifier), then
``(1 - b) * base + b * span`` where ``span`` is the span tagger's probability that the tag is a
span of the title (``labelrec.taggers.span``), then category paths made consistent (a parent
scores at least as high as its best child, since a child implies its parents). A known tag of
a kind the span tagger learns (a facet whose values are spans of titles, such as ``brand:``) whose
value the title does not contain is multiplied by ``absent_factor``: such a tag rests on other
products' evidence alone (a similar product's brand), and a brand the title names, known or
new, should win over it. Tags outside the
vocabulary that the span tagger proposes score ``b * span`` (new tags, shown when they reach
``new_threshold``). The tag generator (``labelrec.taggers.generator``), when a model has one,
votes last: ``blend``.

``fusion.json`` holds the weights and which taggers vote; each tagger saves its own files.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from labelrec import metrics
from labelrec.data import Product, TagVocab, category_separator
from labelrec.evaluate import JointLayout
from labelrec.metrics import objective
from labelrec.modeldir import (
    FUSION_META,
    LEXICAL_ARRAYS,
    LEXICAL_META,
    read_json,
    remove_component,
)
from labelrec.taggers.base import TrainingSet
from labelrec.taggers.neighbours import EmbeddingNeighbours, TfidfNeighbours, ridge_mixed
from labelrec.taggers.span import SpanTagger
from labelrec.taxonomy import (
    AncestorPlan,
    ancestor_consistent,
    ancestor_plan,
    parent_index,
    tag_depth,
)

log = logging.getLogger(__name__)

FUSION_FORMAT = 2  # 1: lexical.json, with the TF-IDF and embedding neighbours inside
WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
FUSION_WEIGHTS = (
    "weight",
    "embedding_weight",
    "span_weight",
    "new_threshold",
    "absent_factor",
    "ridge_mix",
)
RIDGE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # the ridge's share of the TF-IDF voter, when tuned
ABSENT_GRID = np.round(np.linspace(1.0, 0.0, 11), 2)  # from 1 (off) down: ties keep the larger


@dataclass
class TextEvidence:
    """What the fusion takes from the text alone, for ``Fusion.fuse_with_new``."""

    tfidf: np.ndarray | None  # TF-IDF neighbour scores (n, n_tags); None when not fused
    known: np.ndarray | None  # span tagger: probabilities of vocabulary tags; None when unused
    new: list[dict[str, float]]  # span tagger: tags outside the vocabulary -> probability
    absent: np.ndarray | None = None  # span kinds' known tags absent from the title (n, n_tags)


@dataclass
class Fusion:
    """The taggers fused with the neural scores, and their weights (see the module)."""

    tfidf: TfidfNeighbours | None
    weight: float
    parents: np.ndarray
    separator: str | None
    ancestor_consistency: bool
    span: SpanTagger | None = None
    span_weight: float = 0.0
    new_threshold: float = 1.0
    embedding: EmbeddingNeighbours | None = None
    embedding_weight: float = 0.0
    absent_factor: float = 1.0
    ridge_mix: float = 0.0  # the ridge classifier's share of the TF-IDF voter's scores

    @property
    def taggers(self) -> list[Any]:
        """The taggers it holds (``labelrec.taggers.Tagger``), voting or not."""
        return [t for t in (self.tfidf, self.embedding, self.span) if t is not None]

    @property
    def needs_embeddings(self) -> bool:
        """True when ``fuse`` needs the neural model's pooled embeddings."""
        return self.embedding is not None and self.embedding_weight > 0

    @property
    def uses_tfidf(self) -> bool:
        e = self.embedding_weight if self.needs_embeddings else 0.0
        return self.tfidf is not None and self.weight + e < 1.0

    @property
    def uses_span(self) -> bool:
        return self.span is not None and self.span_weight > 0

    @property
    def uses_absent(self) -> bool:
        """True when known tags absent from the title are scaled (``absent_factor`` < 1)."""
        return self.span is not None and self.absent_factor < 1.0

    def base(
        self,
        products: list[Product],
        neural: np.ndarray,
        embeddings: np.ndarray | None = None,
        tfidf: np.ndarray | None = None,
    ) -> np.ndarray:
        """Neural, TF-IDF-neighbour and embedding-neighbour scores, weighted (``tfidf``: the
        TF-IDF neighbour scores when already computed)."""
        w, e = self.weight, self.embedding_weight if self.needs_embeddings else 0.0
        scores = w * neural
        if e > 0:
            if embeddings is None:
                raise ValueError("this model fuses embedding neighbours: pass the embeddings")
            scores = scores + e * self.embedding.scores(embeddings)
        if self.uses_tfidf:
            if tfidf is None:
                tfidf = self.tfidf.scores(products, self.ridge_mix)
            scores = scores + (1.0 - w - e) * tfidf
        return scores

    def text_evidence(self, products: list[Product]) -> TextEvidence:
        """The parts of the fusion that need only the text (TF-IDF neighbours, span tagger).

        They do not depend on the neural model, so ``TagRecommender`` computes them in a
        second thread while the model runs.
        """
        tfidf = self.tfidf.scores(products, self.ridge_mix) if self.uses_tfidf else None
        absent = self.span.absent(products) if self.uses_absent else None
        if not self.uses_span:
            return TextEvidence(tfidf, None, [{} for _ in products], absent)
        span = self.span.score(products)
        return TextEvidence(tfidf, span.known, span.new, absent)

    def fuse(
        self, products: list[Product], neural: np.ndarray, embeddings: np.ndarray | None = None
    ) -> np.ndarray:
        """Final scores of the vocabulary's tags (n, n_tags) given the neural scores."""
        return self.fuse_with_new(products, neural, embeddings)[0]

    def fuse_with_new(
        self,
        products: list[Product],
        neural: np.ndarray,
        embeddings: np.ndarray | None = None,
        text: TextEvidence | None = None,
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """``fuse`` and ``new_tags`` together (the span tagger runs once); ``text`` is
        ``text_evidence(products)`` when already computed."""
        if text is None:
            text = self.text_evidence(products)
        scores = self.base(products, neural, embeddings, text.tfidf)
        new: list[dict[str, float]] = [{} for _ in products]
        if text.known is not None:
            scores = (1.0 - self.span_weight) * scores + self.span_weight * text.known
            new = [{t: self.span_weight * p for t, p in row.items()} for row in text.new]
        if text.absent is not None:
            scores = np.where(text.absent, self.absent_factor * scores, scores)
        if self.ancestor_consistency:
            scores = ancestor_consistent(scores, self.parents, self.plan)
        return scores.astype(np.float32, copy=False), new

    @functools.cached_property
    def plan(self) -> AncestorPlan:
        """``ancestor_plan(parents)``, computed once."""
        return ancestor_plan(self.parents)

    @property
    def hierarchy(self) -> tuple[np.ndarray, AncestorPlan] | None:
        """(parents, plan) of the category paths its scores keep consistent (a parent at least
        its best child), which decisions keep whole too; None without ancestor consistency."""
        if not self.ancestor_consistency or self.parents is None or not self.plan:
            return None
        return self.parents, self.plan

    def new_tags(self, products: list[Product]) -> list[dict[str, float]]:
        """Proposed tags outside the vocabulary, per product, with their final scores."""
        if not self.uses_span:
            return [{} for _ in products]
        new = self.span.score(products).new
        return [{t: self.span_weight * p for t, p in row.items()} for row in new]

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> None:
        """Write ``fusion.json`` and each tagger's files; remove files of taggers it lacks."""
        model_dir = Path(model_dir)
        for name in ("lexical", "tfidf", "embedding", "span"):
            if name not in {t.name for t in self.taggers}:
                remove_component(model_dir, name)
        for tagger in self.taggers:
            tagger.save(model_dir)
        meta = {
            "format_version": FUSION_FORMAT,
            "taggers": [t.name for t in self.taggers],
            "separator": self.separator,
            "ancestor_consistency": self.ancestor_consistency,
            **{key: float(getattr(self, key)) for key in FUSION_WEIGHTS},
        }
        (model_dir / FUSION_META).write_text(json.dumps(meta, ensure_ascii=False), "utf-8")

    @classmethod
    def load(cls, model_dir: str | Path, vocab: TagVocab) -> Fusion | None:
        """The fusion saved with a model, or None for models trained without one."""
        model_dir = Path(model_dir)
        meta_path = model_dir / FUSION_META
        if not meta_path.is_file():
            return _load_format_1(model_dir, vocab)
        meta = read_json(meta_path)
        if meta.get("format_version", 0) > FUSION_FORMAT:
            raise ValueError(f"{meta_path}: fusion format is newer than this labelrec")
        names = set(meta["taggers"])
        taggers = {
            t.name: t.load(model_dir, vocab) if t.name in names else None
            for t in (TfidfNeighbours, EmbeddingNeighbours, SpanTagger)
        }
        missing = [name for name in names if taggers.get(name) is None]
        if missing:
            raise ValueError(f"{meta_path}: the files of {', '.join(sorted(missing))} are missing")
        return cls(
            taggers["tfidf"],
            float(meta["weight"]),
            parent_index(vocab.tags, meta["separator"]),
            meta["separator"],
            bool(meta["ancestor_consistency"]),
            taggers["span"],
            float(meta["span_weight"]),
            float(meta["new_threshold"]),
            taggers["embedding"],
            float(meta["embedding_weight"]),
            float(meta.get("absent_factor", 1.0)),
            float(meta.get("ridge_mix", 0.0)),
        )


def _load_format_1(model_dir: Path, vocab: TagVocab) -> Fusion | None:
    """A fusion saved as ``lexical.json`` + ``lexical.npz`` (format 1), or None."""
    meta_path = model_dir / LEXICAL_META
    if not meta_path.is_file():
        return None
    meta = read_json(meta_path)
    if meta.get("format_version", 0) > 1:
        raise ValueError(f"{meta_path}: lexical format is newer than this labelrec")
    with np.load(model_dir / LEXICAL_ARRAYS, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    tfidf = None
    if meta.get("tagger") is not None:
        tfidf = TfidfNeighbours.checked(
            TfidfNeighbours.from_state(meta["tagger"], arrays), vocab, model_dir
        )
    embedding = None
    if meta.get("neighbours") is not None:
        embedding = EmbeddingNeighbours.from_state(meta["neighbours"], arrays)
    return Fusion(
        tfidf,
        float(meta["weight"]),
        parent_index(vocab.tags, meta["separator"]),
        meta["separator"],
        bool(meta["ancestor_consistency"]),
        SpanTagger.load(model_dir, vocab),
        float(meta.get("span_weight", 0.0)),
        float(meta.get("new_threshold", 1.0)),
        embedding,
        float(meta.get("embedding_weight", 0.0)),
    )


def save_fusion(fusion: Fusion | None, model_dir: str | Path) -> None:
    """Save ``fusion`` into a model directory; None removes the fusion files of an earlier run."""
    if fusion is None:
        for name in ("fusion", "lexical", "tfidf", "embedding", "span"):
            remove_component(model_dir, name)
        return
    fusion.save(model_dir)


# ----------------------------------------------------------------------------- tuning


def tune_weights(
    y_valid: Any,
    neural: np.ndarray,
    lexical: np.ndarray,
    embedding: np.ndarray | None = None,
    parents: np.ndarray | None = None,
    step: float = 0.05,
    weight: float | None = None,
    embedding_weight: float | None = None,
) -> tuple[float, float, dict[tuple[float, float], float]]:
    """Neural weight ``w`` and embedding-neighbour weight ``e`` (TF-IDF neighbours get
    ``1 - w - e``) maximising the valid objective on a grid; a weight given is kept fixed.

    Returns (w, e, objective per (w, e)). Ties go to the larger neural weight, then the larger
    embedding weight.
    """
    n = int(round(1 / step))
    grid = [round(i * step, 4) for i in range(n + 1)]
    ws = [weight] if weight is not None else grid
    if embedding is None:
        es = [0.0]
    else:
        es = [embedding_weight] if embedding_weight is not None else grid
    results: dict[tuple[float, float], float] = {}
    plan = ancestor_plan(parents) if parents is not None else None
    voters = [neural, lexical] + ([embedding] if embedding is not None else [])
    dtype = np.result_type(*voters, 0.5)  # the expression's: a float scalar times each voter
    few = None
    if len(ws) * len(es) > 4:  # the same objective from fewer columns, once found
        few = CandidateTags.of(voters, parents, plan)
    fused = term = None
    if few is None:
        fused, term = np.empty(neural.shape, dtype=dtype), np.empty(neural.shape, dtype=dtype)
    for w in ws:
        for e in es:
            if w + e > 1.0 + 1e-9:
                continue
            shares = (w, max(0.0, 1.0 - w - e), e)
            if few is not None:
                results[(w, e)] = few.objective(y_valid, shares)
                continue
            combine(voters, shares, fused, term)
            if parents is not None:
                ancestor_consistent(fused, parents, plan, in_place=True)
            results[(w, e)] = objective(y_valid, fused)
    if not results:
        raise ValueError("no admissible fusion weights (weight + embedding_weight > 1)")
    best = max(results.values())
    w, e = max(k for k, v in results.items() if v >= best - 1e-9)
    return float(w), float(e), results


def combine(
    voters: list[np.ndarray], shares: tuple[float, ...], out: np.ndarray, term: np.ndarray
) -> np.ndarray:
    """``shares[0] * voters[0] + shares[1] * voters[1] (+ shares[2] * voters[2] where that
    share is not 0)`` into ``out``, by way of the scratch matrix ``term``: the same float
    operations as the expression, without a new matrix for each of its terms (a weight grid's
    cost is mostly memory traffic)."""
    np.multiply(voters[0], shares[0], out=out)
    out += np.multiply(voters[1], shares[1], out=term)
    if len(voters) > 2 and shares[2] > 0:
        out += np.multiply(voters[2], shares[2], out=term)
    return out


@dataclass
class CandidateTags:
    """Per product, the tags that can be among its top 3 at any shares of the voters: a fused
    score lies between the tag's least and greatest vote (the shares sum to one), and ancestor
    consistency raises both bounds as it raises the score. A tag whose upper bound (its
    subtree's greatest vote) is below the product's third-best lower bound never reaches the
    top 3. The rest, ascending by column, fill the slots of a compact matrix, every ancestor of
    a candidate among them. A score there is the same float operations on the same numbers as
    in the full matrix, except a parent's whose best child is not a candidate (then it is too
    low to reach the top 3 either way), so the top 3, ties included (the lower column first),
    and the objective are the same. A product with many candidates (votes that disagree
    everywhere) keeps its full row."""

    rows: np.ndarray  # the products scored through slots
    columns: np.ndarray  # (len(rows), slots): the candidates' columns, ascending
    padding: np.ndarray  # (len(rows), slots): a slot that holds no tag
    voters: list[np.ndarray]  # each voter's scores at ``columns``
    # ancestor consistency over the flattened slots, deepest level first: each level's child
    # slots grouped by parent slot, where each group starts, the parent slot of each group
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    full_rows: np.ndarray  # the products scored over every column
    full_voters: list[np.ndarray]  # each voter's rows of them
    parents: np.ndarray | None
    plan: AncestorPlan | None
    n_columns: int  # of the full matrix
    dtype: np.dtype  # of the fused scores: that of a float scalar times each voter

    # Slack on the bounds for float rounding: a fused score is a few float operations away
    # from the real number between the bounds (relative error ~1e-7 in float32).
    SLACK = 1e-5
    # The most slots a product gets, as shares of the columns: the one of least cost (products
    # x slots, plus every column of each product with more candidates), if that is at most
    # MAX_COST of the full matrix's; else the grid scores the full matrix.
    SLOT_SHARES = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)
    MAX_COST = 0.5

    @classmethod
    def of(
        cls, voters: list[np.ndarray], parents: np.ndarray | None, plan: AncestorPlan | None
    ) -> CandidateTags | None:
        """The candidates of ``voters`` (one shape; left as they are); None where they would
        not make the grid cheaper, or a vote is not finite (the full matrix then reports it)."""
        n, m = voters[0].shape
        if n == 0 or m < 64 or not all(np.isfinite(v).all() for v in voters):
            return None
        dtype = np.result_type(*voters, 0.5)
        upper, lower = voters[0].astype(dtype), voters[0].astype(dtype)  # copies
        for v in voters[1:]:
            np.maximum(upper, v, out=upper)
            np.minimum(lower, v, out=lower)
        if parents is not None and plan:
            ancestor_consistent(upper, parents, plan, in_place=True)
            ancestor_consistent(lower, parents, plan, in_place=True)
        third = -np.partition(-lower, 2, axis=1)[:, 2]
        slack = cls.SLACK * (1.0 + max(float(np.abs(upper).max()), float(np.abs(lower).max())))
        keep = upper >= (third - slack)[:, None]
        del upper, lower
        counts = keep.sum(axis=1)
        costs = {}
        for share in cls.SLOT_SHARES:
            cap = max(3, int(m * share))
            fits = counts <= cap
            costs[cap] = int(counts[fits].max(initial=0)) * int(fits.sum()) + m * int((~fits).sum())
        cap = min(costs, key=lambda c: (costs[c], c))
        if costs[cap] > cls.MAX_COST * n * m:
            return None
        many = counts > cap
        rows, full_rows = np.flatnonzero(~many), np.flatnonzero(many)
        keep, counts = keep[rows], counts[rows]
        slots = int(counts.max(initial=0))
        r, cols = np.nonzero(keep)  # row by row, ascending columns
        del keep
        flat = r * slots + (np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts))
        size = len(rows) * slots
        columns = np.zeros(size, dtype=np.intp)
        columns[flat] = cols
        padding = np.ones(size, dtype=bool)
        padding[flat] = False
        gathered = []
        for v in voters:
            g = np.zeros(size, dtype=v.dtype)
            g[flat] = v[rows[r], cols]
            gathered.append(g.reshape(len(rows), slots))
        steps = []
        if parents is not None and plan:
            slot_of = np.full((len(rows), m), -1, dtype=np.int32 if size < 2**31 else np.int64)
            slot_of[r, cols] = flat
            up = parents[cols]
            child = np.flatnonzero(up >= 0)
            parent_slot = slot_of[r[child], up[child]]
            del slot_of
            if (parent_slot < 0).any():  # cannot be: a parent's upper bound is its child's
                return None
            depth = tag_depth(parents)[cols[child]]
            for d in np.unique(depth)[::-1]:
                at = depth == d
                kids, of = flat[child[at]], parent_slot[at]
                order = np.argsort(of, kind="stable")
                kids, of = kids[order], of[order]
                starts = np.flatnonzero(np.r_[True, of[1:] != of[:-1]])
                steps.append((kids, starts, of[starts]))
        return cls(
            rows,
            columns.reshape(len(rows), slots),
            padding.reshape(len(rows), slots),
            gathered,
            steps,
            full_rows,
            [v[full_rows] for v in voters],
            parents,
            plan,
            m,
            dtype,
        )

    def objective(self, y: Any, shares: tuple[float, ...]) -> float:
        """``objective`` of the full matrix fused at ``shares`` (as ``combine``), with
        ancestor consistency where the candidates were found with it."""
        n = len(self.rows) + len(self.full_rows)
        shape = (n, self.n_columns)
        got = y.shape if sp.issparse(y) else np.shape(y)
        if got != shape:
            raise ValueError(f"shape mismatch: y_true {got} vs scores {shape}")
        top = np.empty((n, 3), dtype=np.intp)
        top_scores = np.empty((n, 3), dtype=self.dtype)
        slots = self.columns.shape
        fused = combine(
            self.voters, shares, np.empty(slots, self.dtype), np.empty(slots, self.dtype)
        )
        flat = fused.reshape(-1)
        for kids, starts, parents in self.steps:
            raised = np.maximum.reduceat(flat[kids], starts)
            flat[parents] = np.maximum(flat[parents], raised)
        fused[self.padding] = -np.inf
        at = metrics.top_k(fused, 3)
        top[self.rows] = np.take_along_axis(self.columns, at, axis=1)
        top_scores[self.rows] = np.take_along_axis(fused, at, axis=1)
        if len(self.full_rows):
            rows = (len(self.full_rows), self.n_columns)
            fused = combine(
                self.full_voters, shares, np.empty(rows, self.dtype), np.empty(rows, self.dtype)
            )
            if self.parents is not None and self.plan:
                ancestor_consistent(fused, self.parents, self.plan, in_place=True)
            at = metrics.top_k(fused, 3)
            top[self.full_rows] = at
            top_scores[self.full_rows] = np.take_along_axis(fused, at, axis=1)
        return metrics.objective_of_top(y, top, top_scores)


def tune_span_weight(
    known_span: np.ndarray,
    new_span: list[dict[str, float]],
    products: list[Product],
    vocab: TagVocab,
    fused: np.ndarray,
    parents: np.ndarray | None,
    grid: np.ndarray | None = None,
) -> tuple[float, float, np.ndarray]:
    """Span weight ``b`` maximising the valid objective over known + new tags, the threshold
    of new tags (best micro-F1 on valid), and the final known-tag scores at ``b``, given the span
    tagger's evidence on the products (``known_span``, ``new_span``)."""
    grid = WEIGHT_GRID if grid is None else grid
    plan = ancestor_plan(parents) if parents is not None else None

    def at(b: float | np.floating) -> tuple[np.ndarray, list[dict[str, float]]]:
        known = (1.0 - b) * fused + b * known_span
        if parents is not None:
            ancestor_consistent(known, parents, plan, in_place=True)
        return known, [{t: b * p for t, p in row.items()} for row in new_span]

    best: float | np.floating | None = None
    best_value = -1.0
    layout = JointLayout.of(new_span, products, vocab)  # the same tags at every weight
    for b in grid:
        value = layout.objective(*at(b))  # one weight's scores at a time: the best's again below
        if value > best_value + 1e-9:
            best_value, best = value, b
    assert best is not None
    known, scaled = at(best)
    b = float(best)
    new_threshold = 1.0
    if len(layout.names) > len(vocab) and b > 0:
        new_threshold = layout.new_threshold(scaled, len(vocab), known.dtype)
    return b, new_threshold, known.astype(np.float32)


def tune_absent_factor(
    absent: np.ndarray,
    products: list[Product],
    vocab: TagVocab,
    mixed: np.ndarray,
    new: list[dict[str, float]],
    parents: np.ndarray | None,
    grid: np.ndarray | list[float] | None = None,
) -> tuple[float, np.ndarray]:
    """The factor on known tags absent from the title (``absent``) that maximises the valid
    objective over known + new tags (``new``: the span tagger's, weighted), and the final
    known-tag scores at it; ``mixed``: the known scores after the span tagger's share, before
    ancestor consistency. Ties keep the larger factor (1: off)."""
    grid = ABSENT_GRID if grid is None else grid
    plan = ancestor_plan(parents) if parents is not None else None

    def at(a: float) -> np.ndarray:
        known = np.where(absent, a * mixed, mixed)
        if parents is not None:
            ancestor_consistent(known, parents, plan, in_place=True)
        return known

    best_value, best = -1.0, None
    layout = JointLayout.of(new, products, vocab)
    for a in grid:
        value = layout.objective(at(float(a)), new)  # one factor's scores at a time
        if value > best_value + 1e-9:
            best_value, best = value, float(a)
    if best is None:
        return 1.0, mixed.astype(np.float32)
    return best, at(best).astype(np.float32, copy=False)


@dataclass
class FusionInputs:
    """Each tagger's evidence on products it was not fitted on: what the weights are tuned on.
    ``None``: the tagger is not part of the fusion. Columns follow ``tags``."""

    products: list[Product]
    tags: list[str]
    neural: np.ndarray
    tfidf: np.ndarray | None = None
    embedding: np.ndarray | None = None
    span_known: np.ndarray | None = None
    span_new: list[dict[str, float]] | None = None
    absent: np.ndarray | None = None  # span kinds' known tags absent from the title (booleans)
    ridge: np.ndarray | None = None  # the TF-IDF tagger's ridge classifier (``tfidf``: neighbours)

    def lexical(self, ridge_mix: float) -> np.ndarray | None:
        """The TF-IDF voter's scores with the ridge classifier's share ``ridge_mix``."""
        return None if self.tfidf is None else ridge_mixed(self.tfidf, self.ridge, ridge_mix)

    @staticmethod
    def pool(parts: list[FusionInputs], tags: list[str]) -> FusionInputs:
        """The rows of ``parts`` together over the columns ``tags`` (a tag a part lacks scores 0
        there); a voter is kept when every part has it. Each voter is written once into its
        pooled matrix, part by part, with no copy of a whole part between."""
        column = {t: j for j, t in enumerate(tags)}
        plans = []  # per part: its rows, and its columns that ``tags`` has -> their place there
        start = 0
        for part in parts:
            pairs = [(j, column[t]) for j, t in enumerate(part.tags) if t in column]
            src = np.asarray([j for j, _ in pairs], dtype=np.int64)
            to = np.asarray([c for _, c in pairs], dtype=np.int64)
            plans.append((slice(start, start + len(part.products)), src, to))
            start += len(part.products)

        def stack(name: str) -> np.ndarray | None:
            found = [getattr(p, name) for p in parts]
            if any(m is None for m in found):
                return None
            dtype = bool if all(m.dtype == bool for m in found) else np.float32
            out = np.zeros((start, len(tags)), dtype=dtype)
            for m, (rows, src, to) in zip(found, plans, strict=True):
                out[rows, to] = m[:, src]
            return out

        new = [p.span_new for p in parts]
        return FusionInputs(
            [q for p in parts for q in p.products],
            list(tags),
            stack("neural"),
            stack("tfidf"),
            stack("embedding"),
            stack("span_known"),
            None if any(n is None for n in new) else [row for n in new for row in n],
            stack("absent"),
            stack("ridge"),
        )


def collect_inputs(
    fusion: Fusion,
    products: list[Product],
    tags: list[str],
    neural: np.ndarray,
    embeddings: np.ndarray | None = None,
) -> FusionInputs:
    """The evidence of ``fusion``'s taggers on ``products`` (``neural``: the neural tagger's
    scores; ``embeddings``: its pooled vectors, for the embedding neighbours)."""
    inputs = FusionInputs(list(products), list(tags), neural)
    if fusion.tfidf is not None:
        inputs.tfidf, inputs.ridge = fusion.tfidf.votes(products)
    if fusion.embedding is not None and embeddings is not None:
        inputs.embedding = fusion.embedding.scores(embeddings)
    if fusion.span is not None:
        evidence = fusion.span.score(products)
        inputs.span_known, inputs.span_new = evidence.known, evidence.new
        inputs.absent = fusion.span.absent(products)
    return inputs


def tune_fusion(
    fusion: Fusion, inputs: FusionInputs, vocab: TagVocab, cfg: Any
) -> tuple[np.ndarray, dict[str, float]]:
    """Set ``fusion``'s weights to what maximises the objective on ``inputs`` (``vocab``: its
    columns, ``cfg``: the configuration; a weight it fixes stays fixed); returns the fused known
    scores at those weights and a report of the parts and weights."""
    lx = cfg.lexical
    y = vocab.encode(inputs.products)
    parents = fusion.parents if fusion.ancestor_consistency else None
    report: dict[str, float] = {"neural_objective": objective(y, inputs.neural)}
    knn = inputs.tfidf if inputs.tfidf is not None else np.zeros_like(inputs.neural)
    if inputs.tfidf is not None:
        report["knn_objective"] = objective(y, inputs.tfidf)
    emb = inputs.embedding
    if emb is not None:
        report["embedding_knn_objective"] = objective(y, emb)
    elif fusion.embedding is not None:  # no embeddings to tune it on: left out
        fusion.embedding = None
    weight = lx.weight if inputs.tfidf is not None else 1.0
    mixes = [0.0]  # the ridge classifier's share of the TF-IDF voter: tried in turn
    if inputs.tfidf is not None and inputs.ridge is not None:
        report["ridge_objective"] = objective(y, inputs.ridge)
        mixes = list(RIDGE_GRID) if lx.ridge_mix is None else [lx.ridge_mix]
    best: tuple[float, float, float, float] | None = None
    for r in mixes:
        w, e, results = tune_weights(
            y,
            inputs.neural,
            inputs.lexical(r) if r > 0 else knn,
            emb,
            parents,
            weight=weight,
            embedding_weight=lx.embedding_weight if emb is not None else None,
        )
        if best is None or results[(w, e)] > best[0] + 1e-9:  # ties: the smaller share
            best = (results[(w, e)], r, w, e)
    assert best is not None
    _, fusion.ridge_mix, fusion.weight, fusion.embedding_weight = best
    if fusion.ridge_mix > 0:
        knn = inputs.lexical(fusion.ridge_mix)
    if emb is None:
        fusion.embedding_weight = 0.0
    fused = fusion.weight * inputs.neural + (1.0 - fusion.weight - fusion.embedding_weight) * knn
    if emb is not None:
        fused = fused + fusion.embedding_weight * emb
    mixed, new = fused, [{} for _ in inputs.products]  # known tags before ancestor consistency
    if inputs.span_known is not None and inputs.span_new is not None:
        fusion.span_weight, fusion.new_threshold, fused = tune_span_weight(
            inputs.span_known, inputs.span_new, inputs.products, vocab, fused, parents
        )
        b = fusion.span_weight
        mixed = (1.0 - b) * mixed + b * inputs.span_known
        new = [{t: b * p for t, p in row.items()} for row in inputs.span_new]
    elif parents is not None:
        fused = ancestor_consistent(fused, parents)
    fusion.absent_factor = 1.0
    if inputs.absent is not None and lx.absent_factor != 1.0:
        grid = None if lx.absent_factor is None else [lx.absent_factor]
        fusion.absent_factor, fused = tune_absent_factor(
            inputs.absent, inputs.products, vocab, mixed, new, parents, grid
        )
    report["fusion_weight"] = fusion.weight
    report["embedding_weight"] = fusion.embedding_weight
    report["span_weight"] = fusion.span_weight
    report["absent_factor"] = fusion.absent_factor
    report["ridge_mix"] = fusion.ridge_mix
    return fused.astype(np.float32), report


def fit_taggers(cfg: Any, train: TrainingSet) -> Fusion:
    """The taggers of ``cfg.lexical`` fitted on ``train``, fused with default weights."""
    lx = cfg.lexical
    separator = category_separator(cfg)
    fusion = Fusion(
        TfidfNeighbours.fit(train, cfg),
        0.5 if lx.weight is None else lx.weight,
        parent_index(train.vocab.tags, separator),
        separator,
        lx.ancestor_consistency,
        SpanTagger.fit(train, cfg),
        embedding=EmbeddingNeighbours.fit(train, cfg),
    )
    if fusion.embedding is not None:
        default_e = (1.0 - fusion.weight) / 2
        fusion.embedding_weight = default_e if lx.embedding_weight is None else lx.embedding_weight
    if fusion.span is not None:
        fusion.span_weight = 0.5
    if fusion.tfidf is not None and fusion.tfidf.ridge is not None:
        fusion.ridge_mix = 0.5 if lx.ridge_mix is None else lx.ridge_mix
    return fusion


def fit_fusion(
    cfg: Any,
    train: TrainingSet,
    valid_products: list[Product],
    valid_neural: np.ndarray | None,
    valid_embeddings: np.ndarray | None = None,
) -> tuple[Fusion, np.ndarray | None, dict[str, float], FusionInputs | None]:
    """Fit the taggers on ``train`` and tune their weights on valid.

    ``cfg`` is the whole configuration (its ``lexical`` section says which taggers and how);
    ``train.embeddings`` and ``valid_embeddings`` (pooled text vectors of the trained neural
    tagger) enable the embedding neighbours. Returns (fusion, final valid scores of the
    vocabulary's tags, report of the parts and weights, the evidence the weights were tuned on:
    None without valid products)."""
    t0 = time.perf_counter()
    log.info(
        "fitting the lexical and neighbour voters on %d training products", len(train.products)
    )
    fusion = fit_taggers(cfg, train)
    if valid_neural is None or not len(valid_products):
        report = {"fusion_weight": fusion.weight, "embedding_weight": fusion.embedding_weight}
        return fusion, valid_neural, report, None
    inputs = collect_inputs(
        fusion, valid_products, train.vocab.tags, valid_neural, valid_embeddings
    )
    log.info(
        "tuning the fusion weights on %d valid products x %d tags (voters fitted in %.0f s)",
        len(valid_products),
        len(train.vocab),
        time.perf_counter() - t0,
    )
    fused, report = tune_fusion(fusion, inputs, train.vocab, cfg)
    report["lexical_seconds"] = time.perf_counter() - t0
    return fusion, fused, report, inputs


# ----------------------------------------------------------------------------- the generator


@dataclass
class GeneratorTuning:
    """What tuning the generator's fusion weights on valid chose and measured."""

    weight: float
    new_threshold: float
    known: np.ndarray  # final known-tag scores of the tuned products
    report: dict[str, float]
    new_weight: float = 0.0
    new: list[dict[str, float]] = field(default_factory=list)  # final new tags per product


def blend(
    fused: np.ndarray,
    new: list[dict[str, float]],
    gen_known: np.ndarray,
    gen_new: list[dict[str, float]],
    weight: float,
    new_weight: float | None = None,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """``(1 - g) * fused + g * generator`` for known tags; new tags get ``(1 - g) * theirs +
    new_weight * generator`` (``new_weight`` None: ``g``; a missing tag scores 0)."""
    new_weight = weight if new_weight is None else new_weight
    if weight <= 0 and new_weight <= 0:
        return fused, new
    known = fused if weight <= 0 else (1.0 - weight) * fused + weight * gen_known
    out = []
    for a, b in zip(new, gen_new, strict=True):
        row = {t: (1.0 - weight) * v for t, v in a.items()}
        if new_weight > 0:
            for t, v in b.items():
                row[t] = row.get(t, 0.0) + new_weight * v
        out.append(row)
    return known.astype(np.float32, copy=False), out


def tune_generator(
    products: list[Product],
    vocab: TagVocab,
    fused: np.ndarray,
    new: list[dict[str, float]],
    gen_known: np.ndarray,
    gen_new: list[dict[str, float]],
    weight: float | None = None,
    new_weight: float | None = None,
) -> GeneratorTuning:
    """Generator weights maximising (P@1 + nDCG@3) / 2 over known and new tags ranked together
    (first the weight of its votes for vocabulary tags, then the weight of its new tags; ties go
    to the smaller weight), and the threshold of new tags (best micro-F1 among them).
    Known and new tags get separate weights because new ones rest on the generator alone."""

    def score(g: float, g_new: float) -> float:
        known, rows = blend(fused, new, gen_known, gen_new, g, g_new)
        return JointLayout.of(rows, products, vocab).objective(known, rows)

    def best_of(results: dict[float, float]) -> float:
        top = max(results.values())
        return min(k for k, v in results.items() if v >= top - 1e-9)

    grid = [round(0.05 * i, 2) for i in range(21)]
    results = {g: score(g, 0.0) for g in ([weight] if weight is not None else grid)}
    g = best_of(results)
    new_results = {gn: score(g, gn) for gn in ([new_weight] if new_weight is not None else grid)}
    g_new = best_of(new_results)
    best = new_results[g_new]
    known, rows = blend(fused, new, gen_known, gen_new, g, g_new)
    layout = JointLayout.of(rows, products, vocab)
    new_threshold = 1.0
    if len(layout.names) > len(vocab) and (g > 0 or g_new > 0):
        new_threshold = layout.new_threshold(rows, len(vocab), known.dtype)
    y_known = vocab.encode(products)
    report = {
        "generator_weight": g,
        "generator_new_weight": g_new,
        "generator_objective": JointLayout.of(gen_new, products, vocab).objective(
            gen_known, gen_new
        ),
        "generator_known_objective": objective(y_known, gen_known),
        "fused_objective_without_generator": score(0.0, 0.0),
        "fused_objective_with_generator": best,
        "generator_tuned_products": float(len(products)),
    }
    return GeneratorTuning(g, new_threshold, known, report, g_new, rows)
