"""The reranker: a gradient-boosted model that re-scores each product's top candidate tags from
every voter's evidence at once.

The fusion (``labelrec.fusion``) adds the voters' scores with one weight each, the same for every
tag and product. Some choices it cannot make that way: which of two nested spans of a title is
the tag (``品类:眼镜`` or ``品类:眼镜框``), whether a brand-like span is the brand, how far to
trust the TF-IDF neighbours for a rare tag. The reranker reads, for each of a product's
``candidates`` best tags (known and new), the final and fused scores, each voter's own score, the
tag's kind (its facet key, or its depth in a category path), its training count and how its value
sits in the title and among the other candidates, and gives the probability that the tag is
right (scikit-learn's ``HistGradientBoostingClassifier``, its size chosen among ``SETTINGS``).
Tags outside the candidates keep their order below them. A saved reranker names the features it
was fitted on and is given those columns only, so a labelrec that computes more still applies it.

It is fitted on the valid products, whose evidence no voter was trained on. The scores that tune
the thresholds (and report valid metrics) are out-of-fold: each valid product is scored by a
reranker fitted on the other folds. It is kept only when those out-of-fold scores beat the fused
ones on the objective (``labelrec.metrics.objective``), and carried into a refit like the fusion
weights.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from labelrec.data import Product, TagVocab, is_facet, tag_key
from labelrec.errors import ModelError
from labelrec.evaluate import JointLayout
from labelrec.modeldir import RERANK_META, RERANK_MODEL, remove_component
from labelrec.taxonomy import AncestorPlan, ancestor_consistent

logger = logging.getLogger(__name__)

RERANK_FORMAT = 1
FEATURES = (
    "final",  # the score it reranks (fusion, then the generator)
    "final_vs_top",  # final / the product's best final score
    "rank",  # 0-based place in the final ranking
    "fused",  # the fusion's score before the generator
    "neural",  # the neural tagger alone (0 for new tags)
    "tfidf",  # the TF-IDF neighbours (0 when they do not vote)
    "span",  # the span tagger's probability (0 when it does not vote)
    "generator",  # the tag generator's vote (0 without one)
    "known",  # 1 for a vocabulary tag, 0 for a new one
    "log_count",  # log(1 + training products with the tag)
    "kind",  # facet key or category depth (categorical)
    "chars",  # characters in the tag's value
    "inside_others",  # other candidates whose value contains this one's
    "holds_others",  # other candidates whose value this one's contains
    "title_position",  # where the value starts in the title (0-1), -1 when absent
    "title_count",  # times the value occurs in the title
    "in_description",  # 1 when the value occurs in the description
    "children",  # candidates that are children of this category path
)
KIND = FEATURES.index("kind")
MAX_KINDS = 32  # the most frequent kinds get their own category; the rest share one
MIN_PRODUCTS = 30  # fewer valid products than this: no reranker
OOF_FOLDS = 5
CANDIDATE_CELLS = 1 << 22  # scores ranked at a time for the candidates (rows of products)


@dataclass
class Votes:
    """Every voter's scores on some products (columns follow the vocabulary): what the reranker
    reads. A voter that does not vote is None."""

    final: np.ndarray
    final_new: list[dict[str, float]]
    neural: np.ndarray
    fused: np.ndarray
    fused_new: list[dict[str, float]] | None = None  # new tags before the generator
    tfidf: np.ndarray | None = None
    span_known: np.ndarray | None = None
    span_new: list[dict[str, float]] | None = None
    gen_known: np.ndarray | None = None
    gen_new: list[dict[str, float]] | None = None

    def take(self, rows: list[int] | np.ndarray) -> Votes:
        """The votes on the products at ``rows``."""
        rows = [int(i) for i in rows]

        def pick(value: Any) -> Any:
            if value is None:
                return None
            return value[rows] if isinstance(value, np.ndarray) else [value[i] for i in rows]

        return Votes(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})


def _votes_span(inputs: Any, fusion: Any) -> bool:
    return inputs.span_known is not None and inputs.span_new is not None and fusion.span_weight > 0


def fusion_new_tags(
    inputs: Any, fusion: Any, rows: list[int] | None = None
) -> list[dict[str, float]]:
    """The new tags a fusion proposes for rows of ``inputs``: the span tagger's, weighted
    (none without its weight); ``fusion_votes``' new tags, without its vote matrices."""
    rows = list(range(len(inputs.products))) if rows is None else rows
    if not _votes_span(inputs, fusion):
        return [{} for _ in rows]
    b = fusion.span_weight
    return [{t: b * p for t, p in inputs.span_new[i].items()} for i in rows]


def fusion_votes(
    inputs: Any, fusion: Any, fused: np.ndarray, rows: list[int] | None = None
) -> Votes:
    """The votes of a fusion's taggers on rows of ``inputs`` (``fusion.FusionInputs``) as a model
    with ``fusion``'s weights scores them: a tagger without weight gives none (as at prediction
    time); ``fused`` (the fused known scores of all rows) is also the final score, and the new
    tags are the span tagger's, weighted. For every row (``rows`` None) the votes are the
    evidence's own matrices and ``fused`` itself (``final`` and ``fused`` one array), not copies:
    they are read, never written."""
    tfidf = inputs.tfidf is not None and fusion.weight + fusion.embedding_weight < 1.0 - 1e-9
    span = _votes_span(inputs, fusion)
    new = fusion_new_tags(inputs, fusion, rows)

    def pick(matrix: np.ndarray) -> np.ndarray:
        return matrix if rows is None else matrix[rows]

    fused = pick(fused)
    return Votes(
        final=fused,
        final_new=new,
        neural=pick(inputs.neural),
        fused=fused,
        fused_new=new,
        tfidf=pick(inputs.lexical(fusion.ridge_mix)) if tfidf else None,
        span_known=pick(inputs.span_known) if span else None,
        span_new=(inputs.span_new if rows is None else [inputs.span_new[i] for i in rows])
        if span
        else None,
    )


def tag_kind(tag: str, separator: str | None) -> str:
    """The facet key of a facet (``data.is_facet``, whatever its value holds), else ``path:D``
    for a category path of depth D (0: a plain tag)."""
    if is_facet(tag, separator):
        return "key:" + tag.split(":", 1)[0]
    depth = tag.count(separator) if separator else 0
    return f"path:{min(depth, 6)}"


def tag_value(tag: str, separator: str | None) -> str:
    """The part of a tag a product's text can hold: the facet value, the last path level, or
    the whole tag."""
    if is_facet(tag, separator):
        return tag.split(":", 1)[1].strip().lower()
    if separator and separator in tag:
        return tag.rsplit(separator, 1)[1].strip().lower()
    return tag.strip().lower()


def candidates(
    final: np.ndarray, final_new: list[dict[str, float]], vocab: TagVocab, n: int
) -> list[list[tuple[str, int | None, float]]]:
    """Each product's ``n`` best tags by final score: (tag, vocabulary index or None, score).

    A new tag stays new (index None) even when ``vocab`` holds it: in the out-of-fold evidence
    of ``train.tuning_folds`` the columns are every fold's tags, and a tag outside the scoring
    fold's vocabulary is new to its voters (its column scores 0), as a tag outside the refit's
    vocabulary is to a product scored later. A new tag and a known one that differ at most in
    case, width or Unicode form (``tag_key``) are one tag: the higher score stays."""
    out = []
    k = min(n, final.shape[1])
    top = np.zeros((len(final), k), dtype=np.intp)
    step = max(1, CANDIDATE_CELLS // max(final.shape[1], 1))
    for start in range(0, len(final) if k else 0, step):  # a part's ranks, not every row's
        part = -final[start : start + step]
        top[start : start + len(part)] = np.argpartition(part, k - 1, axis=1)[:, :k]
    for i, cols in enumerate(top):
        row: list[tuple[str, int | None, float]] = [
            (vocab.tags[j], int(j), float(final[i, j])) for j in cols
        ]
        row += [(t, None, float(s)) for t, s in final_new[i].items()]
        row.sort(key=lambda c: -c[2])  # stable: of equal scores, the known tag first
        kept, known_keys, new_keys = [], set(), set()
        for tag, j, score in row:  # a new tag and a known one of one key: the higher only
            if j is None:
                key = tag_key(tag)
                if key in known_keys:
                    continue
                new_keys.add(key)
            else:
                key = tag_key(tag)
                if key in new_keys:
                    continue
                known_keys.add(key)
            kept.append((tag, j, score))
        out.append(kept[:n])
    return out


def features(
    products: list[Product],
    votes: Votes,
    vocab: TagVocab,
    cands: list[list[tuple[str, int | None, float]]],
    separator: str | None,
    kinds: dict[str, int],
    row_counts: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """One row of ``FEATURES`` per candidate, products in order (``kinds``: kind -> category,
    0 for kinds not in it). ``row_counts``: per product, the training counts of ``vocab``'s
    tags its voters were fitted on (out-of-fold evidence: its fold's, which never count the
    product itself); None: ``vocab.counts`` for every product."""
    rows: list[list[float]] = []
    for i, (product, row) in enumerate(zip(products, cands, strict=True)):
        counts = vocab.counts if row_counts is None else row_counts[i]
        title = product.title.lower()
        desc = (product.description or "").lower()
        values = [tag_value(t, separator) for t, _, _ in row]
        top = row[0][2] if row else 1.0
        tags = [t for t, _, _ in row]
        new_span = votes.span_new[i] if votes.span_new is not None else {}
        new_gen = votes.gen_new[i] if votes.gen_new is not None else {}
        new_fused = votes.fused_new[i] if votes.fused_new is not None else {}
        for r, (tag, j, score) in enumerate(row):
            v = values[r]
            pos = title.find(v) if v else -1
            if j is None:
                fused = new_fused.get(tag, 0.0)
                neural = tfidf = 0.0
                span = new_span.get(tag, 0.0)
                gen = new_gen.get(tag, 0.0)
                count = 0
            else:
                fused = float(votes.fused[i, j])
                neural = float(votes.neural[i, j])
                tfidf = float(votes.tfidf[i, j]) if votes.tfidf is not None else 0.0
                span = float(votes.span_known[i, j]) if votes.span_known is not None else 0.0
                gen = float(votes.gen_known[i, j]) if votes.gen_known is not None else 0.0
                count = int(counts[j])
            prefix = tag + separator if separator else None
            rows.append(
                [
                    score,
                    score / top if top > 0 else 0.0,
                    r,
                    fused,
                    neural,
                    tfidf,
                    span,
                    gen,
                    float(j is not None),
                    math.log1p(count),
                    kinds.get(tag_kind(tag, separator), 0),
                    len(v),
                    sum(1 for q, w in enumerate(values) if q != r and w != v and v in w),
                    sum(1 for q, w in enumerate(values) if q != r and w != v and w and w in v),
                    pos / max(len(title), 1) if pos >= 0 else -1.0,
                    title.count(v) if v else 0,
                    float(bool(v) and v in desc),
                    sum(1 for t in tags if prefix and t.startswith(prefix)),
                ]
            )
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


# the classifier's settings tried; the one with the best out-of-fold objective on valid is kept
SETTINGS = (
    {"max_iter": 100, "max_depth": 3},
    {"max_iter": 200, "max_depth": 3},
    {"max_iter": 200, "max_depth": None, "max_leaf_nodes": 15},
)


def _classifier(seed: int, settings: dict[str, Any]) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        l2_regularization=1.0,
        categorical_features=[KIND],
        early_stopping=False,
        random_state=seed,
        **settings,
    )


def _scatter(
    probs: np.ndarray,
    cands: list[list[tuple[str, int | None, float]]],
    final: np.ndarray,
    parents: np.ndarray | None,
    plan: AncestorPlan | None = None,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Reranked scores: candidates get their probability; the other known tags keep their order
    below the lowest candidate (scaled into half of it); new tags outside the candidates drop.
    ``plan``: ``taxonomy.ancestor_plan(parents)`` when the caller keeps it."""
    known = np.array(final, dtype=np.float32, copy=True)
    new: list[dict[str, float]] = []
    at = 0
    for i, row in enumerate(cands):
        p = probs[at : at + len(row)]
        at += len(row)
        floor = 0.5 * float(p.min()) if len(p) else 0.0
        top = float(known[i].max()) if known.shape[1] else 0.0
        known[i] *= floor / top if top > 0 else 0.0
        extra: dict[str, float] = {}
        for (tag, j, _), s in zip(row, p, strict=True):
            if j is None:
                extra[tag] = float(s)
            else:
                known[i, j] = s
        new.append(extra)
    if parents is not None:
        known = ancestor_consistent(known, parents, plan, in_place=True)  # known is a copy
    return known.astype(np.float32, copy=False), new


@dataclass
class Reranker:
    """A fitted reranker (see the module) and what it was fitted with."""

    model: Any  # sklearn HistGradientBoostingClassifier
    kinds: dict[str, int]
    candidates: int
    separator: str | None
    new_threshold: float = 1.0
    report: dict[str, float] | None = None
    generator: bool = False  # fitted on the tag generator's votes: needs them to apply
    features: tuple[str, ...] = FEATURES  # the columns it was fitted on, in order (of FEATURES)

    def apply(
        self,
        products: list[Product],
        vocab: TagVocab,
        votes: Votes,
        parents: np.ndarray | None = None,
        plan: AncestorPlan | None = None,
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Reranked (known scores, new tags) of ``products``; ``parents`` (``taxonomy``): keep
        category paths consistent (``plan``: ``taxonomy.ancestor_plan(parents)``, computed once by
        the caller instead of at every call)."""
        if not products:
            return votes.final, votes.final_new
        cands = candidates(votes.final, votes.final_new, vocab, self.candidates)
        x = features(products, votes, vocab, cands, self.separator, self.kinds)
        if self.features != FEATURES:  # fitted on some of the columns
            x = x[:, [FEATURES.index(name) for name in self.features]]
        probs = self.model.predict_proba(x)[:, 1] if len(x) else np.zeros(0)
        return _scatter(probs, cands, votes.final, parents, plan)

    @classmethod
    def fit(
        cls,
        products: list[Product],
        vocab: TagVocab,
        votes: Votes,
        separator: str | None,
        parents: np.ndarray | None,
        n_candidates: int = 20,
        seed: int = 0,
        min_gain: float = 1e-9,
        row_counts: Sequence[np.ndarray] | None = None,
    ) -> tuple[Reranker | None, np.ndarray, list[dict[str, float]], dict[str, float]]:
        """Fit on ``products`` (valid: evidence of voters not trained on them; ``row_counts``:
        the tag counts each product's voters were trained on, when they differ, see
        ``features``).

        Kept when its out-of-fold objective beats the given scores' by more than ``min_gain``.
        Returns (the reranker, or None when it is not kept; out-of-fold reranked known scores
        and new tags of ``products``, or the given final ones when not kept; report)."""
        from sklearn.model_selection import GroupKFold

        report: dict[str, float] = {}
        layout = JointLayout.of(votes.final_new, products, vocab)
        report["rerank_objective_before"] = layout.objective(votes.final, votes.final_new)
        cands = candidates(votes.final, votes.final_new, vocab, n_candidates)
        counts = Counter(tag_kind(t, separator) for row in cands for t, _, _ in row)
        kinds = {k: i + 1 for i, (k, _) in enumerate(counts.most_common(MAX_KINDS - 1))}
        x = features(products, votes, vocab, cands, separator, kinds, row_counts)
        gold = [{tag_key(t) for t in p.tags} for p in products]  # as the objective matches
        y = np.asarray([tag_key(t) in gold[i] for i, row in enumerate(cands) for t, _, _ in row])
        groups = np.repeat(np.arange(len(products)), [len(row) for row in cands])
        folds = min(OOF_FOLDS, len(products))
        if len(products) < MIN_PRODUCTS or y.all() or not y.any():
            report["rerank_kept"] = 0.0
            return None, votes.final, votes.final_new, report
        splits = list(GroupKFold(folds).split(x, y, groups))
        best: tuple[float, int, np.ndarray] | None = None  # the probabilities, not the scores
        for which, settings in enumerate(SETTINGS):
            oof = np.zeros(len(y))
            for fit_rows, held in splits:
                if y[fit_rows].all() or not y[fit_rows].any():
                    oof[held] = x[held, 0]
                    continue
                model = _classifier(seed, settings).fit(x[fit_rows], y[fit_rows])
                oof[held] = model.predict_proba(x[held])[:, 1]
            known, new = _scatter(oof, cands, votes.final, parents)
            value = JointLayout.of(new, products, vocab).objective(known, new)
            del known  # one setting's scores at a time: the best are scattered again below
            logger.info(
                "reranker: setting %d of %d, out-of-fold objective %.4f",
                which + 1,
                len(SETTINGS),
                value,
            )
            if best is None or value > best[0] + 1e-9:
                best = (value, which, oof)
        assert best is not None
        report["rerank_objective_after"], which, oof = best
        report["rerank_settings"] = float(which)
        kept = report["rerank_objective_after"] > report["rerank_objective_before"] + min_gain
        report["rerank_kept"] = float(kept)
        if not kept:
            return None, votes.final, votes.final_new, report
        known, new = _scatter(oof, cands, votes.final, parents)
        layout = JointLayout.of(new, products, vocab)
        new_threshold = 1.0
        if len(layout.names) > len(vocab):
            new_threshold = layout.new_threshold(new, len(vocab), known.dtype)
        model = _classifier(seed, SETTINGS[which]).fit(x, y)
        generator = votes.gen_known is not None or votes.gen_new is not None
        return (
            cls(model, kinds, n_candidates, separator, float(new_threshold), report, generator),
            known,
            new,
            report,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> None:
        """Write ``rerank.json`` and the fitted classifier (``rerank.joblib``)."""
        import joblib
        import sklearn

        model_dir = Path(model_dir)
        joblib.dump(self.model, model_dir / RERANK_MODEL)
        meta = {
            "format_version": RERANK_FORMAT,
            "features": list(self.features),
            "kinds": self.kinds,
            "candidates": self.candidates,
            "separator": self.separator,
            "new_threshold": self.new_threshold,
            "generator": self.generator,
            "sklearn_version": sklearn.__version__,
            "report": self.report or {},
        }
        (model_dir / RERANK_META).write_text(json.dumps(meta, ensure_ascii=False), "utf-8")

    @classmethod
    def load(cls, model_dir: str | Path) -> Reranker | None:
        """The reranker saved with a model, or None. The classifier is a pickle (joblib):
        load model directories you trust, as with any pickled model."""
        import joblib

        from labelrec.taggers.base import read_meta

        model_dir = Path(model_dir)
        meta = read_meta(model_dir, RERANK_META, RERANK_FORMAT, "reranker")
        if meta is None:
            return None
        damaged = (
            "the model directory is damaged: train it again, or remove"
            f" {RERANK_META} and {RERANK_MODEL} to serve it without its reranker"
        )
        if not isinstance(meta, dict) or not isinstance(meta.get("features"), list):
            raise ModelError(f"{model_dir / RERANK_META}: not a reranker's settings; {damaged}")
        unknown = [name for name in meta["features"] if name not in FEATURES]
        if unknown:
            raise ValueError(
                f"{model_dir / RERANK_META}: fitted on features this labelrec does not compute"
                f" ({', '.join(map(str, unknown))}): train the model again"
            )
        try:
            separator = meta["separator"]
            if separator is not None and not isinstance(separator, str):
                raise TypeError(f"separator {separator!r} is not a string")
            settings = (
                {str(k): int(v) for k, v in meta["kinds"].items()},
                int(meta["candidates"]),
                separator,
                float(meta["new_threshold"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            what = f"no {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
            raise ModelError(
                f"{model_dir / RERANK_META}: a setting is wrong ({what}); {damaged}"
            ) from None
        import sklearn

        path = model_dir / RERANK_MODEL
        saved = meta.get("sklearn_version")
        if isinstance(saved, str) and saved != sklearn.__version__:
            logger.warning(
                "%s: saved by scikit-learn %s, read by %s; a pickle is read by the version"
                " that wrote it (its scores may differ): train the model again to be sure",
                path,
                saved,
                sklearn.__version__,
            )
        try:
            with warnings.catch_warnings():  # said once above, by labelrec
                warnings.filterwarnings("ignore", message=".*Trying to unpickle estimator.*")
                model = joblib.load(path)
        except Exception as err:  # noqa: BLE001 - cut short, not a pickle, another library's: one line
            first = str(err).splitlines()[0] if str(err) else ""
            raise ModelError(
                f"{path}: the reranker cannot be read ({type(err).__name__}: {first}); {damaged}"
            ) from None
        width = getattr(model, "n_features_in_", len(meta["features"]))
        if width != len(meta["features"]):
            raise ModelError(
                f"{model_dir / RERANK_META}: {len(meta['features'])} features named for a"
                f" classifier of {width}; {damaged}"
            )
        return cls(
            model,
            *settings,
            meta.get("report"),
            bool(meta.get("generator", False)),
            tuple(meta["features"]),
        )


def save_reranker(reranker: Reranker | None, model_dir: str | Path) -> None:
    """Save ``reranker`` with a model; None removes one an earlier run left there."""
    if reranker is None:
        remove_component(model_dir, "rerank")
    else:
        reranker.save(model_dir)
