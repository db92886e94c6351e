"""A sparse lexical tagger trained in seconds, fused with the neural tagger's scores.

The lexical tagger represents a product by TF-IDF over word n-grams and character n-grams
(scikit-learn's ``TfidfVectorizer``; character n-grams make it work for Chinese titles) and scores
a tag by the similarity-weighted share of the product's ``k`` nearest training products that
carry it. Neural and lexical evidence are complementary (XR-Transformer and Annif's ensembles
combine them too): the fused score is ``w * neural + (1 - w) * lexical`` with ``w`` tuned on valid.

Category paths (``A``, ``A > B``, ``A > B > C``) are then made consistent: a parent scores at
least as high as its best child, since a child implies its parents.

Everything is saved in the model directory as plain arrays and JSON (``lexical.npz``,
``lexical.json``): no pickle, nothing executable.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from labelrec.data import Product, TagVocab
from labelrec.metrics import objective
from labelrec.modeldir import LEXICAL_ARRAYS, LEXICAL_META
from labelrec.taxonomy import ancestor_consistent, parent_index, tag_depth

LEXICAL_FORMAT = 1
WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def product_text(product: Product, use_description: bool = True) -> str:
    """The text the lexical tagger reads: title, then description."""
    text = product.title
    if use_description and product.description:
        text = f"{text} {product.description}"
    return " ".join(text.split())


# ----------------------------------------------------------------------------- features


class TfidfFeatures:
    """Word 1..n-gram and char_wb n-gram TF-IDF, stacked and L2-normalised per product."""

    def __init__(
        self,
        word_ngram_max: int = 2,
        char_ngrams: tuple[int, int] = (2, 5),
        max_features: int | None = 200_000,
    ) -> None:
        self.word_ngram_max = word_ngram_max
        self.char_ngrams = tuple(char_ngrams)
        self.max_features = max_features
        self.word = self._vectorizer("word")
        self.char = self._vectorizer("char")

    def _vectorizer(self, kind: str, vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        common = {
            "sublinear_tf": True,
            "dtype": np.float32,
            "vocabulary": vocabulary,
            "max_features": None if vocabulary is not None else self.max_features,
        }
        if kind == "word":
            return TfidfVectorizer(ngram_range=(1, self.word_ngram_max), **common)
        return TfidfVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, **common)

    def fit_transform(self, texts: list[str]) -> sp.csr_matrix:
        parts = []
        for name in ("word", "char"):
            vec = getattr(self, name)
            try:
                parts.append(vec.fit_transform(texts))
            except ValueError:  # empty vocabulary (e.g. no word of 2+ characters)
                setattr(self, name, None)
        if not parts:
            raise ValueError("the lexical tagger found no word or character n-gram in the texts")
        return _stack(parts)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        from sklearn import config_context

        # Our own lists of strings: skip sklearn's input checks, run at every call.
        with config_context(assume_finite=True, skip_parameter_validation=True):
            parts = [v.transform(texts) for v in (self.word, self.char) if v is not None]
        return _stack(parts)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able settings and vocabularies, idf arrays) for saving."""
        meta: dict[str, Any] = {
            "word_ngram_max": self.word_ngram_max,
            "char_ngrams": list(self.char_ngrams),
            "max_features": self.max_features,
        }
        arrays: dict[str, np.ndarray] = {}
        for name in ("word", "char"):
            vec = getattr(self, name)
            if vec is None:
                meta[f"{name}_terms"] = None
                continue
            terms = [""] * len(vec.vocabulary_)
            for term, j in vec.vocabulary_.items():
                terms[j] = term
            meta[f"{name}_terms"] = terms
            arrays[f"{name}_idf"] = vec.idf_.astype(np.float32)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfFeatures:
        self = cls(meta["word_ngram_max"], tuple(meta["char_ngrams"]), meta["max_features"])
        for name in ("word", "char"):
            terms = meta.get(f"{name}_terms")
            if terms is None:
                setattr(self, name, None)
                continue
            vec = self._vectorizer(name, {t: j for j, t in enumerate(terms)})
            vec.idf_ = arrays[f"{name}_idf"].astype(np.float64)
            setattr(self, name, vec)
        return self


def _stack(parts: list[sp.spmatrix]) -> sp.csr_matrix:
    x = sp.hstack(parts).tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms).dot(x), dtype=np.float32)


# ----------------------------------------------------------------------------- kNN tagger


class LexicalTagger:
    """Tag scores from the ``k`` most similar training products (TF-IDF cosine)."""

    def __init__(
        self,
        features: TfidfFeatures,
        x_train: sp.csr_matrix,
        y_train: sp.csr_matrix,
        k: int = 30,
        power: float = 2.0,
        use_description: bool = True,
        train_ids: list[str] | None = None,
        train_titles: list[str] | None = None,
    ) -> None:
        self.features = features
        self.x_train = x_train.tocsr().astype(np.float32)
        self.y_train = y_train.tocsr().astype(np.float32)
        self.k = int(k)
        self.power = float(power)
        self.use_description = use_description
        # who the neighbours are, for explanations (None in models saved without them)
        self.train_ids = train_ids
        self.train_titles = train_titles
        self._x_train_t: sp.csr_matrix | None = None

    @property
    def x_train_t(self) -> sp.csr_matrix:
        """The training matrix transposed, as CSR (computed once: per call it cost ~10 ms)."""
        if self._x_train_t is None:
            self._x_train_t = self.x_train.T.tocsr()
        return self._x_train_t

    @classmethod
    def fit(
        cls,
        products: list[Product],
        y: sp.spmatrix,
        k: int = 30,
        power: float = 2.0,
        word_ngram_max: int = 2,
        char_ngrams: tuple[int, int] = (2, 5),
        max_features: int | None = 200_000,
        use_description: bool = True,
    ) -> LexicalTagger:
        """Vectorise the training products; the tag matrix ``y`` is (n_products, n_tags)."""
        if len(products) != y.shape[0]:
            raise ValueError(f"{len(products)} products but {y.shape[0]} label rows")
        features = TfidfFeatures(word_ngram_max, char_ngrams, max_features)
        x = features.fit_transform([product_text(p, use_description) for p in products])
        ids, titles = [p.id for p in products], [p.title for p in products]
        return cls(features, x, sp.csr_matrix(y), k, power, use_description, ids, titles)

    @property
    def n_tags(self) -> int:
        return self.y_train.shape[1]

    def transform(self, products: list[Product]) -> sp.csr_matrix:
        return self.features.transform([product_text(p, self.use_description) for p in products])

    def scores(self, products: list[Product]) -> np.ndarray:
        """Scores in [0, 1] (n, n_tags): similarity^power-weighted tag share of the neighbours."""
        n = len(products)
        out = np.zeros((n, self.n_tags), dtype=np.float32)
        if n == 0:
            return out
        x = self.transform(products)
        n_train = self.x_train.shape[0]
        k = min(self.k, n_train)
        chunk = max(1, min(1024, 20_000_000 // max(n_train, 1)))
        xt = self.x_train_t
        for start in range(0, n, chunk):
            sim = (x[start : start + chunk] @ xt).toarray()
            out[start : start + chunk] = neighbour_vote(sim, k, self.power, self.y_train)
        return out

    def nearest_with_tag(
        self, products: list[Product], columns: list[list[int]], n: int = 3
    ) -> list[dict[int, list[dict[str, Any]]]]:
        """For each product and each tag column asked for it: up to ``n`` of its ``k`` nearest
        training products (TF-IDF cosine) that carry the tag, nearest first, as ``id``,
        ``title`` and ``similarity`` (empty where the model has no training ids)."""
        out: list[dict[int, list[dict[str, Any]]]] = [{} for _ in products]
        if self.train_ids is None or self.train_titles is None or not products:
            return out
        sim = (self.transform(products) @ self.x_train_t).toarray()
        k = min(self.k, sim.shape[1])
        for i, wanted in enumerate(columns):
            top = np.argpartition(-sim[i], k - 1)[:k] if k < sim.shape[1] else np.arange(k)
            top = top[np.argsort(-sim[i, top], kind="stable")]
            top = top[sim[i, top] > 0]
            for j in wanted:
                carry = top[self.y_train[top, j].toarray().ravel() > 0][:n]
                out[i][j] = [
                    {
                        "id": self.train_ids[r],
                        "title": self.train_titles[r],
                        "similarity": round(float(sim[i, r]), 4),
                    }
                    for r in carry
                ]
        return out

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = self.features.state()
        meta.update({"k": self.k, "power": self.power, "use_description": self.use_description})
        if self.train_ids is not None and self.train_titles is not None:
            meta.update({"train_ids": self.train_ids, "train_titles": self.train_titles})
        for name, m in (("x", self.x_train), ("y", self.y_train)):
            arrays[f"{name}_data"] = m.data.astype(np.float32)
            arrays[f"{name}_indices"] = m.indices.astype(np.int32)
            arrays[f"{name}_indptr"] = m.indptr.astype(np.int64)
            arrays[f"{name}_shape"] = np.asarray(m.shape, dtype=np.int64)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> LexicalTagger:
        def matrix(name: str) -> sp.csr_matrix:
            return sp.csr_matrix(
                (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
                shape=tuple(int(v) for v in arrays[f"{name}_shape"]),
            )

        return cls(
            TfidfFeatures.from_state(meta, arrays),
            matrix("x"),
            matrix("y"),
            meta["k"],
            meta["power"],
            meta["use_description"],
            meta.get("train_ids"),
            meta.get("train_titles"),
        )


def neighbour_vote(sim: np.ndarray, k: int, power: float, y_train: sp.csr_matrix) -> np.ndarray:
    """Tag scores from a similarity matrix (queries, training products): the tag share of the
    ``k`` most similar products, each weighted by similarity ** power."""
    sim = np.asarray(sim, dtype=np.float32)
    n, m = sim.shape
    k = min(k, m)
    if k < m:
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    else:
        idx = np.broadcast_to(np.arange(m), (n, m))
    weights = np.maximum(np.take_along_axis(sim, idx, axis=1), 0.0) ** power
    total = weights.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    weights = weights / total
    votes = sp.csr_matrix(
        (weights.ravel(), np.ascontiguousarray(idx).ravel(), np.arange(0, n * k + 1, k)),
        shape=(n, m),
    )
    return (votes @ y_train).toarray().astype(np.float32)


class EmbeddingNeighbours:
    """Tag scores from the nearest training products in the fine-tuned model's embedding space.

    The training products are embedded once after training (pooled text vectors, the ones
    ``predict_scores(with_embeddings=True)`` returns); at prediction time the embeddings come
    free with the neural scores.
    """

    def __init__(
        self, train_embeddings: np.ndarray, y_train: sp.spmatrix, k: int = 30, power: float = 8.0
    ) -> None:
        self.train = _unit_rows(np.asarray(train_embeddings, dtype=np.float32))
        self.y_train = sp.csr_matrix(y_train, dtype=np.float32)
        self.k = int(k)
        self.power = float(power)
        if self.train.shape[0] != self.y_train.shape[0]:
            raise ValueError(
                f"{self.train.shape[0]} embeddings but {self.y_train.shape[0]} label rows"
            )

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        out = np.zeros((len(embeddings), self.y_train.shape[1]), dtype=np.float32)
        if len(embeddings) == 0:
            return out
        query = _unit_rows(np.asarray(embeddings, dtype=np.float32))
        k = min(self.k, self.train.shape[0])
        chunk = max(1, min(1024, 20_000_000 // max(self.train.shape[0], 1)))
        for start in range(0, len(query), chunk):
            sim = query[start : start + chunk] @ self.train.T
            out[start : start + chunk] = neighbour_vote(sim, k, self.power, self.y_train)
        return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


# ----------------------------------------------------------------------------- fusion


@dataclass
class TextEvidence:
    """What the fusion takes from the text alone, for ``LexicalModel.fuse_with_new``."""

    tfidf: np.ndarray | None  # TF-IDF neighbour scores (n, n_tags); None when not fused
    known: np.ndarray | None  # span tagger: probabilities of vocabulary tags; None when unused
    new: list[dict[str, float]]  # span tagger: tags outside the vocabulary -> probability


@dataclass
class LexicalModel:
    """What is fused with the neural scores, with the weights tuned on valid.

    Known tags: ``base = w * neural + e * embedding_knn + (1 - w - e) * tfidf_knn``, then
    ``(1 - b) * base + b * span`` where ``span`` is the open-vocabulary span tagger's
    probability that the tag is a span of the title (``labelrec.openvocab``), then category paths
    made consistent. Tags outside the vocabulary that the span tagger proposes score
    ``b * span`` (new tags, shown when they reach ``new_threshold``).
    """

    tagger: LexicalTagger | None
    weight: float
    parents: np.ndarray
    separator: str | None
    ancestor_consistency: bool
    span: Any = None  # labelrec.openvocab.SpanTagger
    span_weight: float = 0.0
    new_threshold: float = 1.0
    neighbours: EmbeddingNeighbours | None = None
    embedding_weight: float = 0.0

    @property
    def needs_embeddings(self) -> bool:
        """True when ``fuse`` needs the neural model's pooled embeddings."""
        return self.neighbours is not None and self.embedding_weight > 0

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
            scores = scores + e * self.neighbours.scores(embeddings)
        if self.uses_tfidf:
            if tfidf is None:
                tfidf = self.tagger.scores(products)
            scores = scores + (1.0 - w - e) * tfidf
        return scores

    @property
    def uses_tfidf(self) -> bool:
        e = self.embedding_weight if self.needs_embeddings else 0.0
        return self.tagger is not None and self.weight + e < 1.0

    @property
    def uses_span(self) -> bool:
        return self.span is not None and self.span_weight > 0

    def text_evidence(self, products: list[Product]) -> TextEvidence:
        """The parts of the fusion that need only the text (TF-IDF neighbours, span tagger).

        They do not depend on the neural model, so ``TagRecommender`` computes them in a
        second thread while the model runs.
        """
        tfidf = self.tagger.scores(products) if self.uses_tfidf else None
        if not self.uses_span:
            return TextEvidence(tfidf, None, [{} for _ in products])
        known, spans = self.span.known_and_new(products)
        return TextEvidence(tfidf, known, spans)

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
        if self.ancestor_consistency:
            scores = ancestor_consistent(scores, self.parents, self.depth)
        return scores.astype(np.float32, copy=False), new

    @functools.cached_property
    def depth(self) -> np.ndarray:
        """``tag_depth(parents)``, computed once."""
        return tag_depth(self.parents)

    def new_tags(self, products: list[Product]) -> list[dict[str, float]]:
        """Proposed tags outside the vocabulary, per product, with their final scores."""
        if not self.uses_span:
            return [{} for _ in products]
        _, new = self.span.known_and_new(products)
        return [{t: self.span_weight * p for t, p in row.items()} for row in new]

    def save(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        meta: dict[str, Any] = {
            "format_version": LEXICAL_FORMAT,
            "weight": self.weight,
            "embedding_weight": self.embedding_weight,
            "separator": self.separator,
            "ancestor_consistency": self.ancestor_consistency,
            "span_weight": self.span_weight,
            "new_threshold": self.new_threshold,
            "tagger": None,
            "neighbours": None,
        }
        arrays: dict[str, np.ndarray] = {}
        if self.tagger is not None:
            meta["tagger"], arrays = self.tagger.state()
        if self.neighbours is not None:
            meta["neighbours"] = {"k": self.neighbours.k, "power": self.neighbours.power}
            arrays["embeddings"] = self.neighbours.train.astype(np.float16)
            y = self.neighbours.y_train
            arrays["emb_y_indices"] = y.indices.astype(np.int32)
            arrays["emb_y_indptr"] = y.indptr.astype(np.int64)
            arrays["emb_y_shape"] = np.asarray(y.shape, dtype=np.int64)
        if self.span is not None:
            self.span.save(model_dir)
        (model_dir / LEXICAL_META).write_text(json.dumps(meta, ensure_ascii=False), "utf-8")
        np.savez_compressed(model_dir / LEXICAL_ARRAYS, **arrays)

    @classmethod
    def load(cls, model_dir: str | Path, vocab: TagVocab) -> LexicalModel | None:
        """The lexical model saved with a model, or None for models trained without one."""
        from labelrec.openvocab import SpanTagger

        model_dir = Path(model_dir)
        meta_path = model_dir / LEXICAL_META
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version", 0) > LEXICAL_FORMAT:
            raise ValueError(f"{meta_path}: lexical format is newer than this labelrec")
        with np.load(model_dir / LEXICAL_ARRAYS, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        tagger = None
        if meta.get("tagger") is not None:
            tagger = LexicalTagger.from_state(meta["tagger"], arrays)
            if tagger.n_tags != len(vocab):
                raise ValueError(
                    f"{model_dir}: lexical tagger has {tagger.n_tags} tags, vocabulary {len(vocab)}"
                )
        neighbours = None
        if meta.get("neighbours") is not None:
            y = sp.csr_matrix(
                (
                    np.ones(len(arrays["emb_y_indices"]), dtype=np.float32),
                    arrays["emb_y_indices"],
                    arrays["emb_y_indptr"],
                ),
                shape=tuple(int(v) for v in arrays["emb_y_shape"]),
            )
            neighbours = EmbeddingNeighbours(
                arrays["embeddings"], y, meta["neighbours"]["k"], meta["neighbours"]["power"]
            )
        return cls(
            tagger,
            float(meta["weight"]),
            parent_index(vocab.tags, meta["separator"]),
            meta["separator"],
            bool(meta["ancestor_consistency"]),
            SpanTagger.load(model_dir, vocab),
            float(meta.get("span_weight", 0.0)),
            float(meta.get("new_threshold", 1.0)),
            neighbours,
            float(meta.get("embedding_weight", 0.0)),
        )


def save_lexical(model: LexicalModel | None, model_dir: str | Path) -> None:
    """Save ``model`` into a model directory; None removes lexical files of an earlier run."""
    from labelrec.openvocab import remove_span_files

    model_dir = Path(model_dir)
    if model is None:
        for name in (LEXICAL_META, LEXICAL_ARRAYS):
            (model_dir / name).unlink(missing_ok=True)
        remove_span_files(model_dir)
        return
    if model.span is None:
        remove_span_files(model_dir)
    model.save(model_dir)


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
    for w in ws:
        for e in es:
            if w + e > 1.0 + 1e-9:
                continue
            fused = w * neural + max(0.0, 1.0 - w - e) * lexical
            if e > 0:
                fused = fused + e * embedding
            if parents is not None:
                fused = ancestor_consistent(fused, parents)
            results[(w, e)] = objective(y_valid, fused)
    if not results:
        raise ValueError("no admissible fusion weights (weight + embedding_weight > 1)")
    best = max(results.values())
    w, e = max(k for k, v in results.items() if v >= best - 1e-9)
    return float(w), float(e), results


def tune_weight(
    y_valid: Any,
    neural: np.ndarray,
    lexical: np.ndarray,
    parents: np.ndarray | None = None,
) -> tuple[float, dict[float, float]]:
    """Neural weight (lexical gets ``1 - w``) maximising the valid objective (ties: larger)."""
    w, _, results = tune_weights(y_valid, neural, lexical, None, parents)
    return w, {k[0]: v for k, v in results.items()}


def fit_lexical(
    cfg: Any,
    train_products: list[Product],
    y_train: sp.spmatrix,
    valid_products: list[Product],
    y_valid: Any,
    valid_neural: np.ndarray | None,
    vocab: TagVocab,
    train_embeddings: np.ndarray | None = None,
    valid_embeddings: np.ndarray | None = None,
) -> tuple[LexicalModel, np.ndarray | None, dict[str, float]]:
    """Train the lexical parts and tune their weights on valid.

    ``cfg`` is the ``lexical`` config section; the embeddings (pooled text vectors of the
    trained model for the training and valid products) enable the embedding neighbours. Returns
    (model, final valid scores of the vocabulary's tags, report of the parts and weights).
    """
    import time

    from labelrec.openvocab import SpanTagger, tune_span_weight

    t0 = time.perf_counter()
    separator = cfg.path_separator if cfg.ancestor_consistency else None
    parents = parent_index(vocab.tags, separator)
    tagger = LexicalTagger.fit(
        train_products,
        y_train,
        k=cfg.k,
        power=cfg.power,
        word_ngram_max=cfg.word_ngram_max,
        char_ngrams=(cfg.char_ngram_min, cfg.char_ngram_max),
        max_features=cfg.max_features,
        use_description=cfg.use_description,
    )
    neighbours = None
    if cfg.embedding_k > 0 and train_embeddings is not None:
        neighbours = EmbeddingNeighbours(
            train_embeddings, y_train, cfg.embedding_k, cfg.embedding_power
        )
    span = SpanTagger.fit(train_products, vocab, cfg.span_max_chars) if cfg.open_vocab else None
    model = LexicalModel(
        tagger,
        0.5 if cfg.weight is None else cfg.weight,
        parents,
        separator,
        cfg.ancestor_consistency,
        span,
        neighbours=neighbours,
    )
    if neighbours is not None:
        default_e = (1.0 - model.weight) / 2
        model.embedding_weight = default_e if cfg.embedding_weight is None else cfg.embedding_weight
    report: dict[str, float] = {}
    if valid_neural is None or not len(valid_products):
        if span is not None:
            model.span_weight = 0.5
        report.update(fusion_weight=model.weight, embedding_weight=model.embedding_weight)
        return model, valid_neural, report
    report["neural_objective"] = objective(y_valid, valid_neural)
    knn = tagger.scores(valid_products)
    report["knn_objective"] = objective(y_valid, knn)
    emb = None
    if neighbours is not None and valid_embeddings is not None:
        emb = neighbours.scores(valid_embeddings)
        report["embedding_knn_objective"] = objective(y_valid, emb)
    elif neighbours is not None:
        model.neighbours, model.embedding_weight = None, 0.0
    model.weight, model.embedding_weight, _ = tune_weights(
        y_valid,
        valid_neural,
        knn,
        emb,
        parents if cfg.ancestor_consistency else None,
        weight=cfg.weight,
        embedding_weight=cfg.embedding_weight if emb is not None else None,
    )
    if emb is None:
        model.embedding_weight = 0.0
    fused = model.weight * valid_neural + (1.0 - model.weight - model.embedding_weight) * knn
    if emb is not None:
        fused = fused + model.embedding_weight * emb
    if span is not None:
        model.span_weight, model.new_threshold, fused = tune_span_weight(
            span, valid_products, vocab, fused, parents if cfg.ancestor_consistency else None
        )
    elif cfg.ancestor_consistency:
        fused = ancestor_consistent(fused, parents)
    report["fusion_weight"] = model.weight
    report["embedding_weight"] = model.embedding_weight
    report["span_weight"] = model.span_weight
    report["lexical_seconds"] = time.perf_counter() - t0
    return model, fused.astype(np.float32), report
