"""Neighbour voters: tag scores from the training products most similar to a product.

* ``TfidfNeighbours``: TF-IDF over word n-grams and character n-grams (scikit-learn's
  ``TfidfVectorizer``; character n-grams make it work for Chinese titles); trained in seconds.
* ``EmbeddingNeighbours``: the fine-tuned neural tagger's pooled text vectors, which come free
  with its scores.

A tag's score is the similarity-weighted share of the ``k`` nearest training products that carry
it. ``TfidfNeighbours`` can also hold a ridge classifier over the same TF-IDF vectors
(``fit_ridge``): one linear model per tag, in kernel form (a coefficient per training product and
tag, applied to the cosine similarities the neighbours compute anyway), so it adds one product of
matrices at prediction time; where the neighbours look at ``k`` products, it weighs them all and
learns which n-grams tell tags apart. ``scores`` mixes the two by ``ridge_mix``.

Neural and neighbour evidence are complementary (XR-Transformer and Annif's ensembles combine
them too); ``labelrec.fusion`` weighs them. Both are saved as plain arrays and JSON
(``tfidf.*``, ``embedding_knn.*``): no pickle, nothing executable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from labelrec.data import Product, TagVocab
from labelrec.modeldir import EMBEDDING_ARRAYS, EMBEDDING_META, TFIDF_ARRAYS, TFIDF_META
from labelrec.taggers.base import (
    Evidence,
    TrainingSet,
    csr_arrays,
    csr_from,
    read_state,
    write_state,
)

log = logging.getLogger(__name__)

NEIGHBOURS_FORMAT = 1
# ridge coefficients below this magnitude are dropped: most of them, and they move the scores
# little (labels are 0 or 1)
RIDGE_PRUNE = 0.01
# the ridge solves a dense (products x products) float32 system: above this many training
# products it is not fitted (20,000 products: a 1.6 GB kernel; benchmarks/ridge.py)
RIDGE_MAX_PRODUCTS = 20_000
RIDGE_BLOCK = 2048  # tags solved for at a time
RIDGE_KERNEL_ROWS = 1024  # kernel rows computed at a time


def ridge_mixed(knn: np.ndarray, ridge: np.ndarray | None, share: float) -> np.ndarray:
    """The TF-IDF voter's scores: the neighbours', with the ridge classifier's ``share``."""
    if ridge is None or share <= 0:
        return knn
    return ((1.0 - share) * knn + share * ridge).astype(np.float32, copy=False)


def product_text(product: Product, use_description: bool = True) -> str:
    """The text the TF-IDF neighbours read: title, then description."""
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
            raise ValueError("TF-IDF found no word or character n-gram in the texts")
        return _stack(parts)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """The fitted vectorizers' TF-IDF of ``texts``: scikit-learn counts the n-grams; the
        weighting (sublinear tf, idf, L2 per part) is applied here because scikit-learn's
        per-call input validation costs more than the work for one product (docs/serving.md)."""
        from sklearn.feature_extraction.text import CountVectorizer

        parts = []
        for vec in (self.word, self.char):
            if vec is None:
                continue
            counts = CountVectorizer.transform(vec, texts).astype(np.float32)
            parts.append(_tfidf_weighted(counts, vec.idf_, vec.sublinear_tf))
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


def _tfidf_weighted(counts: sp.csr_matrix, idf: np.ndarray, sublinear: bool) -> sp.csr_matrix:
    """``TfidfTransformer(norm="l2")``'s weighting of n-gram ``counts`` (float32, in place)."""
    if sublinear:
        np.log(counts.data, out=counts.data)
        counts.data += 1.0
    counts.data *= idf[counts.indices].astype(np.float32)
    return _unit_csr_rows(counts)


def _unit_csr_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    """``x`` with every non-empty row scaled to unit L2 norm (in place)."""
    lengths = np.diff(x.indptr)
    rows = np.repeat(np.arange(x.shape[0]), lengths)
    norms = np.sqrt(np.bincount(rows, weights=x.data * x.data, minlength=x.shape[0]))
    norms[norms == 0] = 1.0
    x.data /= norms[rows].astype(x.data.dtype)
    return x


# Largest dense block (rows x distinct terms) ``similarities`` builds; beyond it, scipy's
# sparse product (whose result is then made dense) is used instead.
DENSE_BLOCK = 4_000_000


def similarities(x: sp.csr_matrix, xt: sp.csr_matrix) -> np.ndarray:
    """``(x @ xt).toarray()``: the dot products of the rows of ``x`` (queries over terms) with
    the columns of ``xt`` (terms x indexed products), as a dense array.

    For a few queries it takes only the rows of ``xt`` that the queries' terms select and
    multiplies them by the queries made dense over those terms: no sparse result to build, which
    makes the short lists a service scores faster than scipy's sparse product (docs/serving.md;
    the same sums up to rounding, tests/test_fusion.py checks them against it)."""
    cols = np.unique(x.indices)
    if x.shape[0] * len(cols) > DENSE_BLOCK or not len(cols):
        return (x @ xt).toarray()
    queries = x[:, cols].toarray()  # (n, terms used)
    return np.ascontiguousarray((xt[cols].T @ queries.T).T)


def _stack(parts: list[sp.spmatrix]) -> sp.csr_matrix:
    """The parts side by side (a new matrix), each product's row scaled to unit L2 norm."""
    return _unit_csr_rows(sp.hstack(parts, format="csr", dtype=np.float32))


# ----------------------------------------------------------------------------- kNN tagger


class TfidfNeighbours:
    """Tag scores from the ``k`` most similar training products (TF-IDF cosine)."""

    name: ClassVar[str] = "tfidf"
    needs_embeddings: ClassVar[bool] = False

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
        ridge: sp.csr_matrix | None = None,
        ridge_lambda: float = 0.0,
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
        # the ridge classifier's coefficients (training products x tags, pruned), or None
        self.ridge = None if ridge is None else ridge.tocsr().astype(np.float32)
        self.ridge_lambda = float(ridge_lambda)
        self._x_train_t: sp.csr_matrix | None = None

    @property
    def x_train_t(self) -> sp.csr_matrix:
        """The training matrix transposed, as CSR (computed once, not per call)."""
        if self._x_train_t is None:
            self._x_train_t = self.x_train.T.tocsr()
        return self._x_train_t

    @classmethod
    def fit(cls, train: TrainingSet, cfg: Any) -> TfidfNeighbours:
        """Fit on ``train`` with the ``lexical`` section of the configuration ``cfg``."""
        lx = cfg.lexical
        tagger = cls.build(
            train.products,
            train.labels,
            k=lx.k,
            power=lx.power,
            word_ngram_max=lx.word_ngram_max,
            char_ngrams=(lx.char_ngram_min, lx.char_ngram_max),
            max_features=lx.max_features,
            use_description=lx.use_description,
        )
        if lx.ridge > 0:
            tagger.fit_ridge(lx.ridge)
        return tagger

    def fit_ridge(self, lam: float) -> bool:
        """Fit the ridge classifier with regularisation ``lam`` on the training products: the
        coefficients ``(K + lam I)^-1 Y`` of the kernel ``K`` of TF-IDF cosines, pruned below
        ``RIDGE_PRUNE``. False (and none fitted) above ``RIDGE_MAX_PRODUCTS`` products."""
        n = self.x_train.shape[0]
        self.ridge, self.ridge_lambda = None, 0.0
        if n > RIDGE_MAX_PRODUCTS:
            log.warning(
                "ridge classifier not fitted: %d training products, more than %d",
                n,
                RIDGE_MAX_PRODUCTS,
            )
            return False
        if n == 0 or self.n_tags == 0:
            return False
        # Filled a block of rows at a time: with character n-grams the product is almost dense,
        # and as one sparse matrix it would take twice the dense kernel's memory before it.
        kernel = np.empty((n, n), dtype=np.float32)
        for start in range(0, n, RIDGE_KERNEL_ROWS):
            rows = self.x_train[start : start + RIDGE_KERNEL_ROWS]
            kernel[start : start + RIDGE_KERNEL_ROWS] = (rows @ self.x_train_t).toarray()
        kernel[np.diag_indices_from(kernel)] += np.float32(lam)
        # LAPACK factors a column-major matrix in place; the kernel is symmetric, so its
        # transpose (a column-major view of the same memory) is it, and no copy is made
        factor = scipy.linalg.cho_factor(kernel.T, overwrite_a=True)
        blocks = []  # the tags a block at a time: the dense coefficients never all at once
        for start in range(0, self.n_tags, RIDGE_BLOCK):
            labels = self.y_train[:, start : start + RIDGE_BLOCK].toarray()
            coef = scipy.linalg.cho_solve(factor, labels, overwrite_b=True)
            coef[np.abs(coef) < RIDGE_PRUNE] = 0.0
            blocks.append(sp.csr_matrix(coef, dtype=np.float32))
        self.ridge = sp.hstack(blocks, format="csr", dtype=np.float32)
        self.ridge_lambda = float(lam)
        return True

    @classmethod
    def build(
        cls,
        products: list[Product],
        y: sp.spmatrix,
        k: int = 30,
        power: float = 2.0,
        word_ngram_max: int = 2,
        char_ngrams: tuple[int, int] = (2, 5),
        max_features: int | None = 200_000,
        use_description: bool = True,
    ) -> TfidfNeighbours:
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

    def scores(self, products: list[Product], ridge_mix: float = 0.0) -> np.ndarray:
        """Scores in [0, 1] (n, n_tags): similarity^power-weighted tag share of the neighbours,
        mixed with the ridge classifier's scores by ``ridge_mix`` when it has one."""
        return ridge_mixed(*self.votes(products, with_ridge=ridge_mix > 0), ridge_mix)

    def votes(
        self, products: list[Product], with_ridge: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The neighbours' scores and the ridge classifier's (clipped to [0, 1]; None without
        one, or when not asked), from one similarity computation."""
        n = len(products)
        knn = np.zeros((n, self.n_tags), dtype=np.float32)
        coef = self.ridge if with_ridge else None
        ridge = None if coef is None else np.zeros_like(knn)
        if n == 0:
            return knn, ridge
        x = self.transform(products)
        n_train = self.x_train.shape[0]
        k = min(self.k, n_train)
        chunk = max(1, min(1024, 20_000_000 // max(n_train, 1)))
        xt = self.x_train_t
        for start in range(0, n, chunk):
            sim = similarities(x[start : start + chunk], xt)
            knn[start : start + chunk] = neighbour_vote(sim, k, self.power, self.y_train)
            if coef is not None and ridge is not None:
                part = np.asarray((coef.T @ sim.T).T, dtype=np.float32)
                ridge[start : start + chunk] = np.clip(part, 0.0, 1.0)
        return knn, ridge

    def score(self, products: list[Product], embeddings: np.ndarray | None = None) -> Evidence:
        """``scores`` as the fusion takes it (no tags outside the vocabulary)."""
        return Evidence(self.scores(products), [{} for _ in products])

    def nearest_with_tag(
        self, products: list[Product], columns: list[list[int]], n: int = 3
    ) -> list[dict[int, list[dict[str, Any]]]]:
        """For each product and each tag column asked for it: up to ``n`` of its ``k`` nearest
        training products (TF-IDF cosine) that carry the tag, nearest first, as ``id``,
        ``title`` and ``similarity`` (empty where the model has no training ids)."""
        out: list[dict[int, list[dict[str, Any]]]] = [{} for _ in products]
        if self.train_ids is None or self.train_titles is None or not products:
            return out
        sim = similarities(self.transform(products), self.x_train_t)
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
        arrays.update(csr_arrays("x", self.x_train))
        arrays.update(csr_arrays("y", self.y_train))
        if self.ridge is not None:
            meta["ridge_lambda"] = self.ridge_lambda
            arrays.update(csr_arrays("ridge", self.ridge))
        return meta, arrays

    def save(self, model_dir: str | Path) -> None:
        write_state(model_dir, TFIDF_META, TFIDF_ARRAYS, *self.state(), NEIGHBOURS_FORMAT)

    @classmethod
    def load(cls, model_dir: str | Path, vocab: TagVocab) -> TfidfNeighbours | None:
        found = read_state(
            model_dir, TFIDF_META, TFIDF_ARRAYS, NEIGHBOURS_FORMAT, "TF-IDF neighbours"
        )
        return None if found is None else cls.checked(cls.from_state(*found), vocab, model_dir)

    @classmethod
    def checked(
        cls, tagger: TfidfNeighbours, vocab: TagVocab, model_dir: str | Path
    ) -> TfidfNeighbours:
        """``tagger``, when it has the vocabulary's number of tags."""
        if tagger.n_tags != len(vocab):
            raise ValueError(
                f"{model_dir}: TF-IDF neighbours have {tagger.n_tags} tags, vocabulary {len(vocab)}"
            )
        return tagger

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfNeighbours:
        return cls(
            TfidfFeatures.from_state(meta, arrays),
            csr_from("x", arrays),
            csr_from("y", arrays),
            meta["k"],
            meta["power"],
            meta["use_description"],
            meta.get("train_ids"),
            meta.get("train_titles"),
            csr_from("ridge", arrays) if "ridge_indptr" in arrays else None,
            meta.get("ridge_lambda", 0.0),
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

    name: ClassVar[str] = "embedding"
    needs_embeddings: ClassVar[bool] = True

    def __init__(
        self, train_embeddings: np.ndarray, y_train: sp.spmatrix, k: int = 30, power: float = 8.0
    ) -> None:
        self.train = unit_rows(np.asarray(train_embeddings, dtype=np.float32))
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
        query = unit_rows(np.asarray(embeddings, dtype=np.float32))
        k = min(self.k, self.train.shape[0])
        chunk = max(1, min(1024, 20_000_000 // max(self.train.shape[0], 1)))
        for start in range(0, len(query), chunk):
            sim = query[start : start + chunk] @ self.train.T
            out[start : start + chunk] = neighbour_vote(sim, k, self.power, self.y_train)
        return out

    @classmethod
    def fit(cls, train: TrainingSet, cfg: Any) -> EmbeddingNeighbours | None:
        """Index ``train.embeddings``; None when ``lexical.embedding_k`` is 0 or there are no
        embeddings."""
        if cfg.lexical.embedding_k <= 0 or train.embeddings is None:
            return None
        return cls(
            train.embeddings, train.labels, cfg.lexical.embedding_k, cfg.lexical.embedding_power
        )

    def score(self, products: list[Product], embeddings: np.ndarray | None = None) -> Evidence:
        """``scores`` of the products' ``embeddings`` (required)."""
        if embeddings is None:
            raise ValueError("embedding neighbours score the neural tagger's embeddings: pass them")
        return Evidence(self.scores(embeddings), [{} for _ in products])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"k": self.k, "power": self.power}
        arrays = {"embeddings": self.train.astype(np.float16)}
        arrays.update(csr_arrays("emb_y", self.y_train, with_data=False))
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> EmbeddingNeighbours:
        return cls(arrays["embeddings"], csr_from("emb_y", arrays), meta["k"], meta["power"])

    def save(self, model_dir: str | Path) -> None:
        write_state(model_dir, EMBEDDING_META, EMBEDDING_ARRAYS, *self.state(), NEIGHBOURS_FORMAT)

    @classmethod
    def load(cls, model_dir: str | Path, vocab: TagVocab) -> EmbeddingNeighbours | None:
        found = read_state(
            model_dir, EMBEDDING_META, EMBEDDING_ARRAYS, NEIGHBOURS_FORMAT, "embedding neighbours"
        )
        if found is None:
            return None
        neighbours = cls.from_state(*found)
        if neighbours.y_train.shape[1] != len(vocab):
            raise ValueError(
                f"{model_dir}: embedding neighbours have {neighbours.y_train.shape[1]} tags, "
                f"vocabulary {len(vocab)}"
            )
        return neighbours


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms
