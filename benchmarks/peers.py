"""Peer systems for ``benchmarks/quality.py``: Omikuji (Annif's lexical engine) and fastText.

Both are trained on a catalog's train split and return dense score matrices over a given tag
list, so every system is measured by the same metric code. Needs the ``bench`` extra
(``pip install -e '.[bench]'``: omikuji, fasttext, scikit-learn).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from labelrec.data import Product

# The package each peer family trains with; all of them and scikit-learn (TF-IDF features) are
# the `bench` extra: pip install -e ".[bench]".
PACKAGES = {"Omikuji": "omikuji", "fastText": "fasttext"}


def missing_packages(families: tuple[str, ...]) -> list[str]:
    """The packages ``families`` need that are not installed, so that a long benchmark stops
    before it trains anything rather than after labelrec's part."""
    import importlib.util

    wanted = ["sklearn"] + [PACKAGES[f] for f in families if f in PACKAGES]
    return [name for name in wanted if importlib.util.find_spec(name) is None]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence native code writing progress bars straight to file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def product_text(product: Product) -> str:
    """Title and description as one line of text."""
    text = f"{product.title} {product.description or ''}"
    return " ".join(text.split())


FEATURE_SETS = {
    "word+char_wb2-5": (("word", 1, 2), ("char_wb", 2, 5)),
    "word+char1-2": (("word", 1, 2), ("char", 1, 2)),
    "char1-2": (("char", 1, 2),),
}


class TfidfFeatures:
    """TF-IDF over word and/or character n-grams, stacked and L2-normalised per row.

    ``kind`` names one of ``FEATURE_SETS``: word 1-2-grams with character 2-5-grams inside word
    boundaries (English), or with character 1-2-grams (Chinese titles have no spaces, so a
    whitespace "word" is a whole title), or character 1-2-grams alone.
    """

    def __init__(
        self, kind: str = "word+char_wb2-5", min_df: int = 1, max_features: int | None = 200_000
    ) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.kind = kind
        self.vectorizers = [
            TfidfVectorizer(
                analyzer=analyzer,
                ngram_range=(lo, hi),
                min_df=min_df,
                sublinear_tf=True,
                max_features=max_features,
            )
            for analyzer, lo, hi in FEATURE_SETS[kind]
        ]

    def fit_transform(self, texts: list[str]) -> sp.csr_matrix:
        return self._stack([v.fit_transform(texts) for v in self.vectorizers])

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        return self._stack([v.transform(texts) for v in self.vectorizers])

    @staticmethod
    def _stack(parts: list[sp.spmatrix]) -> sp.csr_matrix:
        from sklearn.preprocessing import normalize

        return normalize(sp.hstack(parts).tocsr().astype(np.float32))


class OmikujiPeer:
    """Omikuji label-tree model on TF-IDF features, with Annif's default hyperparameters.

    Annif's ``omikuji`` backend defaults (Parabel-like): balanced 2-means clustering, max depth
    20, no layer collapsing; 3 trees, linear C 1.0 with hinge loss (Omikuji's own defaults).
    """

    name = "Omikuji"

    def __init__(
        self,
        n_threads: int = 2,
        top_k: int = 100,
        beam_size: int = 10,
        cluster_k: int = 2,
        max_depth: int = 20,
        collapse_every_n_layers: int = 0,
        cluster_balanced: bool = True,
        min_df: int = 1,
        features: str = "word+char_wb2-5",
    ) -> None:
        self.n_threads = n_threads
        self.top_k = top_k
        self.beam_size = beam_size
        self.params = {
            "cluster_k": cluster_k,
            "max_depth": max_depth,
            "collapse_every_n_layers": collapse_every_n_layers,
            "cluster_balanced": cluster_balanced,
        }
        self.features = TfidfFeatures(features, min_df=min_df)
        self.setting = features
        self.model = None

    def fit(self, products: list[Product], y: sp.csr_matrix) -> OmikujiPeer:
        """Train on products with multi-hot labels ``y`` (n, n_tags)."""
        import omikuji

        x = self.features.fit_transform([product_text(p) for p in products])
        y = sp.csr_matrix(y)
        hp = omikuji.Model.default_hyper_param()
        for key, value in self.params.items():
            setattr(hp, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "train.txt"
            write_xc_file(x, y, path)
            with quiet():
                self.model = omikuji.Model.train_on_data(str(path), hp, n_threads=self.n_threads)
        self.model.init_prediction_thread_pool(self.n_threads)
        self.n_tags = y.shape[1]
        return self

    def predict_scores(self, products: list[Product]) -> np.ndarray:
        """Dense scores (n, n_tags); tags outside the returned top-k score 0."""
        x = self.features.transform([product_text(p) for p in products])
        out = np.zeros((x.shape[0], self.n_tags), dtype=np.float32)
        for i in range(x.shape[0]):
            row = x.getrow(i)
            pairs = list(zip(row.indices.tolist(), row.data.tolist(), strict=True))
            for label, score in self.model.predict(pairs, self.beam_size, self.top_k):
                out[i, label] = score
        return out


def write_xc_file(x: sp.csr_matrix, y: sp.csr_matrix, path: Path) -> None:
    """Write features and labels in the Extreme Classification Repository text format."""
    x = x.tocsr()
    x.sort_indices()
    y = y.tocsr()
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{x.shape[0]} {x.shape[1]} {y.shape[1]}\n")
        for i in range(x.shape[0]):
            labels = ",".join(map(str, y.indices[y.indptr[i] : y.indptr[i + 1]]))
            lo, hi = x.indptr[i], x.indptr[i + 1]
            feats = " ".join(
                f"{j}:{v:.6g}" for j, v in zip(x.indices[lo:hi], x.data[lo:hi], strict=True)
            )
            f.write(f"{labels} {feats}\n")


_SPACE = re.compile(r"\s+")
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def has_cjk(texts: list[str]) -> bool:
    """True when some text holds Chinese/Japanese characters."""
    return any(_CJK.search(t) for t in texts)


class FastTextPeer:
    """fastText supervised with one-vs-all loss (``-loss ova``) on whitespace tokens.

    ``split_cjk``: each CJK character becomes a token of its own (fastText splits on whitespace
    only, so a Chinese title without spaces would be one unseen token); with ``word_ngrams`` 2
    the model then sees character bigrams too.
    """

    name = "fastText"

    def __init__(
        self,
        epoch: int = 25,
        lr: float = 0.2,
        word_ngrams: int = 2,
        dim: int = 100,
        n_threads: int = 2,
        top_k: int = 100,
        seed: int = 42,
        split_cjk: bool = False,
    ) -> None:
        self.split_cjk = split_cjk
        self.kwargs = {
            "epoch": epoch,
            "lr": lr,
            "wordNgrams": word_ngrams,
            "dim": dim,
            "loss": "ova",
            "thread": n_threads,
            "seed": seed,
            "verbose": 0,
        }
        self.setting = f"{epoch} epochs" + (", CJK characters as tokens" if split_cjk else "")
        self.top_k = top_k
        self.model = None

    def clean(self, text: str) -> str:
        if self.split_cjk:
            text = _CJK.sub(r" \1 ", text)
        return _SPACE.sub(" ", text).strip().lower()

    def fit(self, products: list[Product], y: sp.csr_matrix) -> FastTextPeer:
        import fasttext

        y = sp.csr_matrix(y)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "train.txt"
            with open(path, "w", encoding="utf-8") as f:
                for i, p in enumerate(products):
                    labels = y.indices[y.indptr[i] : y.indptr[i + 1]]
                    if len(labels) == 0:
                        continue
                    head = " ".join(f"__label__{j}" for j in labels)
                    f.write(f"{head} {self.clean(product_text(p))}\n")
            kwargs = dict(self.kwargs)
            for _ in range(4):
                try:
                    with quiet():
                        self.model = fasttext.train_supervised(input=str(path), **kwargs)
                    break
                except RuntimeError as err:  # "Encountered NaN": ova diverges at a high lr
                    if "NaN" not in str(err):
                        raise
                    kwargs["lr"] = kwargs["lr"] / 2
            else:
                raise RuntimeError("fastText diverged (NaN) even at a low learning rate")
            self.lr_used = kwargs["lr"]
        self.n_tags = y.shape[1]
        return self

    def predict_scores(self, products: list[Product]) -> np.ndarray:
        texts = [self.clean(product_text(p)) for p in products]
        k = min(self.top_k, len(self.model.labels))
        labels, probs = self.model.predict(texts, k=k, threshold=0.0)
        out = np.zeros((len(texts), self.n_tags), dtype=np.float32)
        for i, (names, values) in enumerate(zip(labels, probs, strict=True)):
            idx = np.fromiter((int(n[9:]) for n in names), dtype=np.int64, count=len(names))
            out[i, idx] = values
        return out
