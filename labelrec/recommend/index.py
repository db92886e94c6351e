"""The product index: predicted tag scores, gold tags and text embeddings of a catalog.

An index directory holds plain files, loadable with numpy and pandas only (no torch, no model):

- ``manifest.json``: format version, the model it came from (path or ``models:/`` URI and its
  version when known), build settings, sizes;
- ``products.parquet``: ``id``, ``title``, ``description`` (cut to 300 characters), ``gold_tags``;
- ``tags.json``: the tag space (the model's tags, then gold tags the model does not know), the
  per-tag score thresholds (a product *carries* a predicted tag at or above its threshold, a
  category path only under a carried parent where the manifest names the model's
  ``path_separator``) and the tags' training counts (for idf weights);
- ``tag_scores.npz``: the top ``top_k`` predicted scores per product (at least ``min_score``; of
  scores tied at the cut, a parent path before its child) as CSR arrays ``indptr``,
  ``indices``, ``data`` (float32: a score just above its threshold stays above it) and
  ``shape``;
- ``gold_tags.npz``: the known (catalog) tags as CSR ``indptr``, ``indices``, ``shape``;
- ``embeddings.npy``: L2-normalised pooled text embeddings of the fine-tuned backbone (float16),
  absent when the index was built without them; by default reduced to 128 dimensions by PCA
  over the indexed products (``projection.npy``: the backbone-to-index matrix applied to
  queries), which keeps the neighbours' memory and scan time small (benchmarks/recommend.py;
  docs/products.md).

A million products take about 200 MB of tag scores (32 tags each at most) and, with
128-dimensional embeddings, 256 MB on disk (512 MB as float32 in memory).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import functools
import json
import logging
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from labelrec.data import Product, clean_tag, tag_key
from labelrec.modeldir import holds_cwd, load_whole, staged_dir
from labelrec.taxonomy import parent_index, tag_depth

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
PRODUCTS_FILE = "products.parquet"
TAGS_FILE = "tags.json"
SCORES_FILE = "tag_scores.npz"
GOLD_FILE = "gold_tags.npz"
EMBEDDINGS_FILE = "embeddings.npy"
PROJECTION_FILE = "projection.npy"
DESCRIPTION_CHARS = 300


class IndexFileError(ValueError):
    """A product index directory that cannot be read."""


class UnknownProductError(ValueError):
    """A product id that is not in the index."""


def _csr_save(path: Path, matrix: sp.csr_matrix, data_dtype: Any | None) -> None:
    arrays: dict[str, np.ndarray] = {
        "indptr": matrix.indptr.astype(np.int64),
        "indices": matrix.indices.astype(np.int32),
        "shape": np.asarray(matrix.shape, dtype=np.int64),
    }
    if data_dtype is not None:
        arrays["data"] = matrix.data.astype(data_dtype)
    np.savez(path, **arrays)


def _csr_load(path: Path) -> sp.csr_matrix:
    try:
        with np.load(path) as npz:
            indptr, indices, shape = npz["indptr"], npz["indices"], tuple(npz["shape"])
            data = (
                npz["data"].astype(np.float32)
                if "data" in npz.files
                else np.ones(len(indices), dtype=np.float32)
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:  # cut short
        raise IndexFileError(f"{path}: not a sparse matrix file ({err})") from None
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def top_k_sparse(
    scores: np.ndarray, top_k: int, min_score: float = 0.0, priority: np.ndarray | None = None
) -> sp.csr_matrix:
    """The ``top_k`` largest entries per row that are >= ``min_score``, as a CSR matrix.

    Scores tied at the cut are kept by ``priority`` (per column, lower first; a category path's
    depth keeps a parent before the child whose score it equals), then by column."""
    scores = np.asarray(scores, dtype=np.float32)
    n, n_cols = scores.shape
    k = min(top_k, n_cols)
    if n == 0 or k == 0:
        return sp.csr_matrix((n, n_cols), dtype=np.float32)
    if k < n_cols:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th largest
        keep = scores > kth
        # the ties at the cut, row-major (where they are kept at all: at least min_score)
        rows, cols = np.nonzero((scores == kth) & (kth >= min_score))
        rank = np.zeros(n_cols, np.int64) if priority is None else np.asarray(priority, np.int64)
        order = np.lexsort((cols, rank[cols], rows))
        rows, cols = rows[order], cols[order]
        place = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place among its row's ties
        take = place < (k - keep.sum(axis=1))[rows]
        keep[rows[take], cols[take]] = True
        keep &= scores >= min_score
    else:
        keep = scores >= min_score
    rows, cols = np.nonzero(keep)
    return sp.csr_matrix((scores[rows, cols], (rows, cols)), shape=(n, n_cols), dtype=np.float32)


def check_index_destination(directory: str | Path) -> None:
    """``IndexFileError`` when ``directory`` holds something that is not a product index, which
    ``ProductIndex.save`` does not replace (an empty folder or an index is fine)."""
    directory = Path(directory)
    if holds_cwd(directory):
        raise IndexFileError(
            f"{directory}: the current folder or one above it, which the index replaces whole:"
            " choose another --output"
        )
    if directory.exists() and (
        not directory.is_dir()
        or (any(directory.iterdir()) and not (directory / MANIFEST_FILE).is_file())
    ):
        raise IndexFileError(
            f"{directory} exists and is not a product index: choose another --output"
        )


class ProductIndex:
    """Arrays over the products of a catalog; see the module docstring for the files.

    Rows follow ``ids``. ``tag_scores`` and ``gold`` are (n_products x n_tags) CSR matrices over
    ``tags``; the first ``n_model_tags`` tags are the model's, in the model's order.
    """

    def __init__(
        self,
        ids: Sequence[str],
        tags: Sequence[str],
        tag_scores: sp.spmatrix | np.ndarray,
        *,
        embeddings: np.ndarray | None = None,
        gold: sp.spmatrix | None = None,
        titles: Sequence[str] | None = None,
        descriptions: Sequence[str] | None = None,
        thresholds: np.ndarray | None = None,
        tag_counts: np.ndarray | None = None,
        n_train_products: int | None = None,
        n_model_tags: int | None = None,
        manifest: dict[str, Any] | None = None,
        projection: np.ndarray | None = None,
    ) -> None:
        self.ids = [str(i) for i in ids]
        n = len(self.ids)
        self.row_of: dict[str, int] = {}
        for row, pid in enumerate(self.ids):
            if pid in self.row_of:
                raise ValueError(f"product id {pid!r} appears twice in the index")
            self.row_of[pid] = row
        self.tags = [str(t) for t in tags]
        self.tag_index = {t: j for j, t in enumerate(self.tags)}
        if len(self.tag_index) != len(self.tags):
            raise ValueError("repeated tags in the index tag list")
        n_tags = len(self.tags)
        self.n_model_tags = n_tags if n_model_tags is None else int(n_model_tags)
        scores = sp.csr_matrix(tag_scores, dtype=np.float32)
        if scores.shape != (n, n_tags):
            raise ValueError(f"tag scores have shape {scores.shape}, expected {(n, n_tags)}")
        scores.eliminate_zeros()
        scores.sort_indices()
        self.tag_scores: sp.csr_matrix = scores
        if gold is None:
            gold = sp.csr_matrix((n, n_tags), dtype=np.float32)
        gold = sp.csr_matrix(gold, dtype=np.float32)
        if gold.shape != (n, n_tags):
            raise ValueError(f"gold tags have shape {gold.shape}, expected {(n, n_tags)}")
        gold.data[:] = 1.0
        gold.eliminate_zeros()
        self.gold: sp.csr_matrix = gold
        if embeddings is not None:
            embeddings = normalize_rows(embeddings)
            if embeddings.ndim != 2 or embeddings.shape[0] != n:
                raise ValueError(f"embeddings have shape {embeddings.shape}, expected ({n}, d)")
        self.embeddings = embeddings
        self.titles = [str(t) for t in titles] if titles is not None else [""] * n
        self.descriptions = [str(d) for d in descriptions] if descriptions is not None else [""] * n
        if len(self.titles) != n or len(self.descriptions) != n:
            raise ValueError("titles and descriptions need one entry per product")
        self.thresholds = (
            np.full(n_tags, 0.5, dtype=np.float32)
            if thresholds is None
            else np.asarray(thresholds, dtype=np.float32).reshape(-1)
        )
        self.tag_counts = (
            np.zeros(n_tags, dtype=np.int64)
            if tag_counts is None
            else np.asarray(tag_counts, dtype=np.int64).reshape(-1)
        )
        if len(self.thresholds) != n_tags or len(self.tag_counts) != n_tags:
            raise ValueError("thresholds and tag counts need one entry per tag")
        self.n_train_products = n_train_products
        self.manifest = dict(manifest or {})
        #: (backbone dim x index dim) PCA directions applied to query embeddings, or None
        self.projection = None if projection is None else np.asarray(projection, np.float32)
        if self.projection is not None and embeddings is not None:
            if self.projection.shape[1] != embeddings.shape[1]:
                raise ValueError(
                    f"projection to {self.projection.shape[1]} dims, embeddings have "
                    f"{embeddings.shape[1]}"
                )
        self._membership_csc: sp.csc_matrix | None = None
        self._tags_by_key: dict[str, list[str]] | None = None  # tag_key -> tags, on first use

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        dim = None if self.embeddings is None else self.embeddings.shape[1]
        return f"ProductIndex({len(self)} products, {len(self.tags)} tags, embedding dim {dim})"

    @property
    def has_embeddings(self) -> bool:
        return self.embeddings is not None

    def row(self, product_id: Any) -> int:
        """Row of a product id; ValueError naming the id when it is not in the index."""
        key = str(product_id)
        try:
            return self.row_of[key]
        except KeyError:
            raise UnknownProductError(f"unknown product id {key!r} (not in the index)") from None

    def tag_column(self, tag: Any) -> int:
        """Column of a tag; ValueError with close matches when the index does not know it."""
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"unknown tag filter {tag!r}: tags are non-empty strings")
        exact = self.tag_index.get(clean_tag(tag))  # read as tags are: in either width
        if exact is not None:
            return exact
        if self._tags_by_key is None:  # built whole, then published: requests share the index
            by_key: dict[str, list[str]] = {}
            for t in self.tags:
                by_key.setdefault(tag_key(t), []).append(t)
            self._tags_by_key = by_key
        same = self._tags_by_key.get(tag_key(tag), [])  # another case: one tag, as in reviews
        if len(same) == 1:
            return self.tag_index[same[0]]
        if same:
            names = ", ".join(map(repr, same))
            raise ValueError(f"tag filter {tag!r} is ambiguous: this index has {names}; name one")
        close = [  # near misses, case apart: "brand:harbor" is near "brand:Harbor Freight"
            self._tags_by_key[k][0]
            for k in difflib.get_close_matches(
                tag_key(tag), list(self._tags_by_key), n=3, cutoff=0.6
            )
        ]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown tag filter {tag!r} (not a tag of this index){hint}")

    @functools.cached_property
    def parents(self) -> np.ndarray | None:
        """Each tag's parent path (``taxonomy.parent_index``) where the model keeps its category
        paths whole (the manifest's ``path_separator``), else None."""
        separator = self.manifest.get("path_separator")
        if not separator:
            return None
        # the model's tags as the model links them; a gold tag it does not know (threshold
        # 2.0, never carried by prediction) is no one's parent
        n = self.n_model_tags
        return np.r_[parent_index(self.tags[:n], separator), np.full(len(self.tags) - n, -1)]

    def passed(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Which predicted cells (``rows``, ``cols`` and their scores, each product's cells
        all given) its product carries: at or above the tag's threshold, and a category path
        only where its parent passed too, as the model decides its suggestions
        (``TagRecommender.decisions``)."""
        ok = values >= self.thresholds[cols]
        if self.parents is None or not ok.any():
            return ok
        depth = self.depths[cols]
        width = np.int64(len(self.tags))
        for level in range(1, int(depth.max()) + 1):  # parents decided before their children
            cells = np.flatnonzero(ok & (depth == level))
            if cells.size:
                carried = rows[ok].astype(np.int64) * width + cols[ok]
                parent = rows[cells].astype(np.int64) * width + self.parents[cols[cells]]
                ok[cells] = np.isin(parent, carried)
        return ok

    @functools.cached_property
    def depths(self) -> np.ndarray | None:
        """Each tag's number of ancestor paths (``taxonomy.tag_depth``) where ``parents`` has
        them, else None."""
        return tag_depth(self.parents) if self.parents is not None else None

    def membership(self) -> sp.csc_matrix:
        """Which products carry which tags (gold, or predicted: ``passed``)."""
        if self._membership_csc is None:
            scores = self.tag_scores
            rows = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
            passed = self.passed(rows, scores.indices, scores.data)
            predicted = sp.csr_matrix(
                (passed.astype(np.float32), scores.indices, scores.indptr), shape=scores.shape
            )
            both = (predicted + self.gold).tocsc()
            both.data[:] = 1.0
            both.eliminate_zeros()
            self._membership_csc = both
        return self._membership_csc

    def carried_tags(self, row: int) -> list[str]:
        """Tags a product carries: gold ones, then predicted ones by score (no repeats)."""
        gold = self.gold.indices[self.gold.indptr[row] : self.gold.indptr[row + 1]]
        lo, hi = self.tag_scores.indptr[row], self.tag_scores.indptr[row + 1]
        cols, vals = self.tag_scores.indices[lo:hi], self.tag_scores.data[lo:hi]
        order = np.argsort(-vals, kind="stable")
        ok = self.passed(np.full(len(cols), row), cols, vals)
        passed = [int(cols[i]) for i in order if ok[i]]
        chosen = dict.fromkeys(int(c) for c in gold)
        chosen.update(dict.fromkeys(passed))
        return [self.tags[c] for c in chosen]

    def filter_mask(self, tags: Iterable[str] | None) -> np.ndarray | None:
        """Boolean mask of the products carrying every tag of ``tags`` (None: no filter)."""
        if tags is None:
            return None
        if isinstance(tags, str):
            tags = [tags]
        cols = [self.tag_column(t) for t in tags]
        if not cols:
            return None
        members = self.membership()
        mask = np.ones(len(self), dtype=bool)
        for col in cols:
            hit = np.zeros(len(self), dtype=bool)
            hit[members.indices[members.indptr[col] : members.indptr[col + 1]]] = True
            mask &= hit
        return mask

    def product(self, row: int) -> dict[str, Any]:
        """A product row as plain data."""
        return {"id": self.ids[row], "title": self.titles[row], "tags": self.carried_tags(row)}

    def idf(self) -> np.ndarray:
        """Per-tag weights ``1 + log((N + 1) / (count + 1))`` from the training counts; N is the
        number of training products, or the largest count when that is unknown (older models).
        All ones when the counts are unknown."""
        if not self.tag_counts.any():
            return np.ones(len(self.tags), dtype=np.float32)
        n = self.n_train_products or int(self.tag_counts.max())
        return (1.0 + np.log((n + 1.0) / (self.tag_counts + 1.0))).astype(np.float32)

    def tile(self, n_products: int) -> ProductIndex:
        """A bigger index repeating these products (ids suffixed ``#k``), for load tests."""
        reps = -(-n_products // max(len(self), 1))
        rows = np.tile(np.arange(len(self)), reps)[:n_products]
        copy = np.repeat(np.arange(reps), len(self))[:n_products]
        ids = [f"{self.ids[r]}#{c}" if c else self.ids[r] for r, c in zip(rows, copy, strict=True)]
        return ProductIndex(
            ids,
            self.tags,
            self.tag_scores[rows],
            embeddings=None if self.embeddings is None else self.embeddings[rows],
            projection=self.projection,
            gold=self.gold[rows],
            titles=[self.titles[r] for r in rows],
            thresholds=self.thresholds,
            tag_counts=self.tag_counts,
            n_train_products=self.n_train_products,
            n_model_tags=self.n_model_tags,
            manifest=self.manifest,
        )

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path, write_more: Callable[[Path], Any] | None = None) -> Path:
        """Write the index into ``directory``; returns it. The files, then what ``write_more``
        writes (an ANN file), go into a new folder beside it, which then replaces it, so a reader
        sees the old index or the new one, never a mix. A folder there that is not an index (no
        manifest) is not replaced."""
        directory = Path(directory)
        check_index_destination(directory)
        with staged_dir(directory) as stage:
            self._write(stage)
            if write_more is not None:
                write_more(stage)
        return directory

    def _write(self, directory: Path) -> None:
        gold_lists = [
            [self.tags[j] for j in self.gold.indices[self.gold.indptr[i] : self.gold.indptr[i + 1]]]
            for i in range(len(self))
        ]
        table = pd.DataFrame(
            {
                "id": pd.Series(self.ids, dtype="string"),
                "title": pd.Series(self.titles, dtype="string"),
                "description": pd.Series(
                    [d[:DESCRIPTION_CHARS] for d in self.descriptions], dtype="string"
                ),
                "gold_tags": gold_lists,
            }
        )
        table.to_parquet(directory / PRODUCTS_FILE, index=False)
        tags_payload = {
            "tags": self.tags,
            "n_model_tags": self.n_model_tags,
            "thresholds": [float(t) for t in self.thresholds],
            "counts": [int(c) for c in self.tag_counts],
            "n_train_products": self.n_train_products,
        }
        (directory / TAGS_FILE).write_text(json.dumps(tags_payload, ensure_ascii=False), "utf-8")
        _csr_save(directory / SCORES_FILE, self.tag_scores, np.float32)
        _csr_save(directory / GOLD_FILE, self.gold, None)
        emb_path = directory / EMBEDDINGS_FILE
        if self.embeddings is not None:
            np.save(emb_path, self.embeddings.astype(np.float16))
        elif emb_path.exists():
            emb_path.unlink()
        proj_path = directory / PROJECTION_FILE
        if self.projection is not None:
            np.save(proj_path, self.projection)
        elif proj_path.exists():
            proj_path.unlink()
        manifest = {
            **self.manifest,
            "format_version": FORMAT_VERSION,
            "n_products": len(self),
            "n_tags": len(self.tags),
            "n_model_tags": self.n_model_tags,
            "embedding_dim": None if self.embeddings is None else int(self.embeddings.shape[1]),
            "tag_scores_nnz": int(self.tag_scores.nnz),
        }
        manifest.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat())
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), "utf-8")
        self.manifest = manifest

    @classmethod
    def load(cls, directory: str | Path) -> ProductIndex:
        """Read an index directory written by :meth:`save` (numpy, pandas and pyarrow only). An
        index built again into it meanwhile is waited for: the files read are those of one
        index (``modeldir.load_whole``)."""
        directory = Path(directory)
        return load_whole(directory, MANIFEST_FILE, lambda: cls._read(directory))

    @classmethod
    def _read(cls, directory: Path) -> ProductIndex:
        """``load``'s reading of the files, once."""
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise IndexFileError(
                f"{directory} is not a product index: {MANIFEST_FILE} is missing "
                "(build one with `labelrec product-index`)"
            )
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
            tag_info = json.loads((directory / TAGS_FILE).read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise IndexFileError(f"{directory}: unreadable index metadata ({err})") from None
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFileError(
                f"{manifest_path}: index format {version!r}, this labelrec reads {FORMAT_VERSION}"
            )
        try:
            table = pd.read_parquet(directory / PRODUCTS_FILE)
        except (OSError, ValueError) as err:
            raise IndexFileError(f"{directory / PRODUCTS_FILE}: {err}") from None
        arrays = {}
        for name in (EMBEDDINGS_FILE, PROJECTION_FILE):
            path = directory / name
            try:
                arrays[name] = np.load(path) if path.is_file() else None
            except (OSError, ValueError, EOFError) as err:  # cut short, not an array file
                raise IndexFileError(f"{path}: not an array file ({err})") from None
        embeddings = arrays[EMBEDDINGS_FILE]
        part = directory / TAGS_FILE
        try:
            tags, thresholds = tag_info["tags"], tag_info["thresholds"]
            counts = tag_info["counts"]
            part = directory / PRODUCTS_FILE
            ids, titles, descriptions = (
                table[c].fillna("").astype(str).tolist() for c in ("id", "title", "description")
            )
            part = directory
            return cls(
                ids,
                tags,
                _csr_load(directory / SCORES_FILE),
                embeddings=None if embeddings is None else embeddings.astype(np.float32),
                gold=_csr_load(directory / GOLD_FILE),
                titles=titles,
                descriptions=descriptions,
                thresholds=np.asarray(thresholds, dtype=np.float32),
                tag_counts=np.asarray(counts, dtype=np.int64),
                n_train_products=tag_info.get("n_train_products"),
                n_model_tags=tag_info.get("n_model_tags"),
                manifest=manifest,
                projection=arrays[PROJECTION_FILE],
            )
        except IndexFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # a damaged file
            what = f"no {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
            raise IndexFileError(
                f"{part}: damaged product index ({what}); rebuild it with `labelrec product-index`"
            ) from None

    def embed_query(self, embeddings: np.ndarray) -> np.ndarray:
        """Backbone embeddings of queries in this index's space (projected), L2-normalised."""
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if self.projection is not None:
            embeddings = embeddings @ self.projection
        return normalize_rows(embeddings)


def pca_projection(
    embeddings: np.ndarray, dim: int, sample: int = 50_000, seed: int = 0
) -> np.ndarray:
    """The ``dim`` leading principal directions (d x dim) of (a sample of) the rows."""
    rows = embeddings
    if len(rows) > sample:
        pick = np.random.default_rng(seed).choice(len(rows), sample, replace=False)
        rows = rows[np.sort(pick)]
    rows = np.asarray(rows, dtype=np.float32)
    _, _, vt = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)
    return np.ascontiguousarray(vt[:dim].T, dtype=np.float32)


# ---------------------------------------------------------------------- building


def build_index(
    tagger: Any,
    products: Iterable[Product | dict[str, Any]] | Iterable[list[Product]],
    *,
    top_k: int = 32,
    min_score: float = 0.005,
    embeddings: bool = True,
    embedding_dim: int | None = 128,
    chunk_size: int = 512,
    model_source: str | None = None,
    model_version: str | None = None,
    catalog_source: str | None = None,
    progress: Any = None,
) -> ProductIndex:
    """Tag and embed every product with a :class:`~labelrec.predict.TagRecommender`.

    ``products``: Products or dicts (``id``, ``title``, ``description``, ``tags``), or chunks
    (lists) of them as :func:`labelrec.data.iter_catalog` yields. Gold tags are kept apart from
    the predicted scores. Embeddings are reduced to ``embedding_dim`` dimensions by PCA (None or
    0: kept whole). ``progress(n)`` is called after each chunk when given.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    vocab = tagger.vocab
    model_tags = list(vocab.tags)
    extra_tags: dict[str, int] = {}
    ids: list[str] = []
    titles: list[str] = []
    descriptions: list[str] = []
    gold_rows: list[list[int]] = []
    score_parts: list[sp.csr_matrix] = []
    emb_parts: list[np.ndarray] = []
    seen: set[str] = set()

    extra_keys: dict[str, str] = {}  # tag_key -> the first spelling of a tag outside the model

    def column(tag: str) -> int:
        """A catalog tag's column: the model's tag in any case or width (as evaluation reads
        gold tags), else one column per tag outside the model, spelt as first met."""
        j = vocab.find(tag)
        if j is not None:
            return j
        tag = extra_keys.setdefault(tag_key(tag), tag)
        if tag not in extra_tags:
            extra_tags[tag] = len(model_tags) + len(extra_tags)
        return extra_tags[tag]

    def run(chunk: list[Product]) -> None:
        scores, emb = tagger.predict_scores(chunk, with_embeddings=embeddings)
        score_parts.append(top_k_sparse(scores, top_k, min_score, priority))
        if embeddings and emb is not None:
            emb_parts.append(normalize_rows(emb).astype(np.float16))
        for p in chunk:
            ids.append(p.id)
            titles.append(p.title)
            descriptions.append(p.description[:DESCRIPTION_CHARS])
            gold_rows.append(sorted({column(t) for t in p.tags}))
        if progress is not None:
            progress(len(chunk))

    hierarchy = getattr(tagger, "hierarchy", None)
    priority = tag_depth(hierarchy[0]) if hierarchy is not None else None  # parents first at ties
    pending: list[Product] = []
    for position, item in enumerate(products):
        batch = item if isinstance(item, list) else [item]
        for sub in batch:
            product = _as_indexed_product(sub, len(ids) + len(pending), position)
            if product.id in seen:
                raise ValueError(f"product id {product.id!r} appears twice in the catalog")
            seen.add(product.id)
            pending.append(product)
            if len(pending) >= chunk_size:
                run(pending)
                pending = []
    if pending:
        run(pending)

    n_tags = len(model_tags) + len(extra_tags)
    all_tags = model_tags + list(extra_tags)
    scores = (
        sp.vstack(score_parts, format="csr")
        if score_parts
        else sp.csr_matrix((0, len(model_tags)), dtype=np.float32)
    )
    scores = sp.csr_matrix(
        (scores.data, scores.indices, scores.indptr), shape=(len(ids), n_tags), dtype=np.float32
    )
    indptr = np.cumsum([0] + [len(r) for r in gold_rows])
    gold = sp.csr_matrix(
        (
            np.ones(int(indptr[-1]), dtype=np.float32),
            np.asarray([j for r in gold_rows for j in r], dtype=np.int64),
            indptr,
        ),
        shape=(len(ids), n_tags),
    )
    thresholds = np.concatenate(
        [np.asarray(tagger.tag_thresholds, dtype=np.float32), np.full(len(extra_tags), 2.0)]
    )
    counts = np.concatenate([vocab.counts, np.zeros(len(extra_tags), dtype=np.int64)])
    info = dict(getattr(tagger, "info", {}) or {})
    # the model's folder as an absolute path: the index is read from wherever it is opened
    source = model_source or (
        str(Path(tagger.path).resolve()) if getattr(tagger, "path", None) else None
    )
    manifest = {
        "model": source,
        "model_version": model_version,
        "save_id": info.get("save_id"),
        "model_info": {k: info.get(k) for k in ("backbone", "pooling", "max_length", "n_tags")},
        "catalog": catalog_source,
        "top_k": top_k,
        "min_score": min_score,
        # whether a tag generator voted in the scores (left out: `--no-generate`)
        "generator": bool(getattr(tagger, "uses_generator", False)),
        # the category paths its decisions keep whole (`ProductIndex.parents`)
        "path_separator": _path_separator(tagger),
    }
    emb = np.concatenate(emb_parts).astype(np.float32) if emb_parts else None
    projection = None
    if emb is not None:
        manifest["backbone_embedding_dim"] = int(emb.shape[1])
        if embedding_dim and embedding_dim < emb.shape[1] and len(emb) >= 2 * embedding_dim:
            projection = pca_projection(emb, embedding_dim)
            emb = normalize_rows(emb @ projection)
        elif embedding_dim:
            logger.info(
                "embeddings kept whole (%d dimensions): embedding_dim %d needs fewer dimensions"
                " than that and at least %d products (%d here)",
                emb.shape[1],
                embedding_dim,
                2 * embedding_dim,
                len(emb),
            )
    if embeddings and emb is None and ids:
        raise ValueError("the tagger returned no embeddings")
    return ProductIndex(
        ids,
        all_tags,
        scores,
        embeddings=emb if ids else None,
        projection=projection,
        gold=gold,
        titles=titles,
        descriptions=descriptions,
        thresholds=thresholds,
        tag_counts=counts,
        n_train_products=vocab.n_products,
        n_model_tags=len(model_tags),
        manifest=manifest,
    )


def _path_separator(tagger: Any) -> str | None:
    """The separator of the category paths ``tagger`` decides whole (its fusion's, under
    ancestor consistency), else None."""
    if getattr(tagger, "hierarchy", None) is None:
        return None
    return getattr(getattr(tagger, "fusion", None), "separator", None)


def _as_indexed_product(item: Any, position: int, line: int) -> Product:
    if isinstance(item, Product):
        return item
    if isinstance(item, dict):
        pid = item.get("id")
        if pid is None or str(pid).strip() == "":
            raise ValueError(f"product {line}: 'id' is missing")
        title = item.get("title")
        if not isinstance(title, str):
            raise ValueError(f"product {pid!r}: 'title' must be a string, got {title!r}")
        tags = item.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"product {pid!r}: 'tags' must be a list of strings")
        return Product(
            id=str(pid), title=title, description=str(item.get("description") or ""), tags=tags
        )
    raise ValueError(f"product {line}: expected a Product or a dict, got {type(item).__name__}")


def build_index_from_file(
    tagger: Any,
    catalog: str | Path,
    data_cfg: Any = None,
    *,
    chunk_size: int = 1000,
    progress: Any = None,
    **kwargs: Any,
) -> ProductIndex:
    """:func:`build_index` over a catalog file (JSONL/CSV/Parquet), streamed in chunks; tags are
    optional (kept as gold tags when present)."""
    from labelrec.data import iter_catalog

    chunks = iter_catalog(catalog, data_cfg, require_tags=False, chunk_size=chunk_size)
    return build_index(
        tagger,
        chunks,
        chunk_size=chunk_size,
        catalog_source=str(catalog),
        progress=progress,
        **kwargs,
    )
