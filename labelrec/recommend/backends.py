"""Nearest-neighbour search over blended tag-vector and embedding similarity.

A product's score for a query is ``w * cos(tags) + (1 - w) * cos(embedding)``, with tag vectors
and embeddings L2-normalised beforehand so both cosines are inner products.

- :class:`ExactBackend` scores every product with numpy/scipy matrix products, in blocks of rows
  so that batched queries over a million products keep memory bounded.
- :class:`FaissBackend` (optional ``faiss-cpu``, ``pip install labelrec[ann]``) fetches candidates
  by embedding from an HNSW graph and re-scores them exactly with the blend; it falls back to the
  exact search when the filters leave too few candidates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

ANN_FILE = "ann.faiss"


@dataclass
class Hits:
    """Results of one query, best first."""

    rows: np.ndarray
    scores: np.ndarray
    tag_sims: np.ndarray
    embedding_sims: np.ndarray

    def take(self, order: np.ndarray, scores: np.ndarray | None = None) -> Hits:
        """These hits reordered (and re-scored when ``scores`` is given)."""
        return Hits(
            self.rows[order],
            self.scores[order] if scores is None else scores,
            self.tag_sims[order],
            self.embedding_sims[order],
        )


class Scorer:
    """The blended similarity between queries and (some) products."""

    def __init__(self, tag_vectors: sp.csr_matrix, embeddings: np.ndarray | None) -> None:
        self.tag_vectors = tag_vectors.tocsr()
        self.embeddings = embeddings
        self.n = tag_vectors.shape[0]
        self._blocks: dict[tuple[int | None, int | None], sp.csr_matrix] = {}

    def parts(
        self, rows: np.ndarray | slice, q_tags: np.ndarray, q_emb: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(tag cosines, embedding cosines), each (len(rows), m), for dense queries
        ``q_tags`` (m, n_tags) and ``q_emb`` (m, d)."""
        if isinstance(rows, slice):
            key = (rows.start, rows.stop)
            tv = self._blocks.get(key)
            if tv is None:
                full = rows.start in (0, None) and rows.stop in (None, self.n)
                tv = self.tag_vectors if full else self.tag_vectors[rows]
                self._blocks[key] = tv
        else:
            tv = self.tag_vectors[rows]
        if q_tags.shape[0] == 1:
            tag = np.asarray(tv @ q_tags[0], dtype=np.float32)[:, None]
        else:
            tag = np.asarray(tv @ q_tags.T, dtype=np.float32)
        if self.embeddings is None or q_emb is None:
            return tag, np.zeros_like(tag)
        block = self.embeddings[rows]
        emb = (block @ q_emb[0])[:, None] if q_emb.shape[0] == 1 else block @ q_emb.T
        return tag, np.asarray(emb, dtype=np.float32)

    def hits(
        self,
        rows: np.ndarray,
        q_tags: np.ndarray,
        q_emb: np.ndarray | None,
        tag_weight: float,
        k: int,
    ) -> Hits:
        """The best ``k`` of ``rows`` for one query (q_tags (n_tags,), q_emb (d,)); equal scores
        by lower row, in whatever order ``rows`` come (an ANN index's)."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        if len(rows) == 0:
            empty = np.zeros(0, dtype=np.float32)
            return Hits(rows, empty, empty, empty)
        tag, emb = self.parts(rows, q_tags[None, :], None if q_emb is None else q_emb[None, :])
        tag, emb = tag[:, 0], emb[:, 0]
        score = tag_weight * tag + (1.0 - tag_weight) * emb
        top = _top_indices(score, k)
        return Hits(rows[top], score[top], tag[top], emb[top])


def _top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite values, best first; equal values by lower index,
    also at the cut, so the first ``k`` of a longer list are the ``k`` of a shorter one."""
    if k <= 0 or len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(values)
    n_finite = int(np.count_nonzero(finite))
    if n_finite <= k:
        top = np.flatnonzero(finite)
    else:
        kept = values if n_finite == len(values) else np.where(finite, values, -np.inf)
        top = np.argpartition(-kept, k - 1)[:k]
        kth = kept[top].min()  # the k-th largest value
        if np.count_nonzero(kept == kth) > np.count_nonzero(kept[top] == kth):  # a tie at the cut
            above = top[kept[top] > kth]
            top = np.concatenate([above, np.flatnonzero(kept == kth)[: k - len(above)]])
    return top[np.lexsort((top, -values[top]))]


class ExactBackend:
    """Scores all products (or the rows passing a filter) for every query."""

    name = "exact"

    def __init__(self, scorer: Scorer, block_size: int = 1 << 17) -> None:
        self.scorer = scorer
        self.block_size = block_size

    def search(
        self,
        q_tags: np.ndarray,
        q_emb: np.ndarray | None,
        k: int,
        tag_weight: float,
        mask: np.ndarray | None = None,
        exclude: list[np.ndarray] | None = None,
    ) -> list[Hits]:
        """Top ``k`` per query row of ``q_tags`` (m, n_tags) / ``q_emb`` (m, d); ``mask``
        keeps only some products, ``exclude[i]`` drops rows for query ``i``."""
        q_tags = np.atleast_2d(np.asarray(q_tags, dtype=np.float32))
        m = q_tags.shape[0]
        if q_emb is not None:
            q_emb = np.atleast_2d(np.asarray(q_emb, dtype=np.float32))
        n = self.scorer.n
        candidates: np.ndarray | None = None
        if mask is not None:
            candidates = np.flatnonzero(mask)
            if len(candidates) > n // 4:
                candidates = None  # a weak filter: masking whole blocks is cheaper
        best_rows = [np.zeros(0, dtype=np.int64) for _ in range(m)]
        best_scores = [np.zeros(0, dtype=np.float32) for _ in range(m)]
        blocks: list[np.ndarray | slice]
        if candidates is not None:
            blocks = [
                candidates[i : i + self.block_size]
                for i in range(0, len(candidates), self.block_size)
            ]
        else:
            blocks = [
                slice(lo, min(lo + self.block_size, n)) for lo in range(0, n, self.block_size)
            ]
        for block in blocks:
            if isinstance(block, slice):
                lo, size = block.start, block.stop - block.start
                rows = None
            else:
                lo, size, rows = 0, len(block), block
            if size == 0:
                continue
            tag, emb = self.scorer.parts(block, q_tags, q_emb)
            score = tag_weight * tag + (1.0 - tag_weight) * emb
            if mask is not None and candidates is None:
                score[~mask[block]] = -np.inf
            for i in range(m):
                col = score[:, i]
                if exclude is not None and len(exclude[i]):
                    ex = np.asarray(exclude[i], dtype=np.int64)
                    if rows is None:
                        drop = ex[(ex >= lo) & (ex < lo + size)] - lo
                    else:
                        drop = np.flatnonzero(np.isin(rows, ex))
                    if len(drop):
                        col = col.copy()
                        col[drop] = -np.inf
                top = _top_indices(col, k)
                found = lo + top if rows is None else rows[top]
                merged_rows = np.concatenate([best_rows[i], found])
                merged_scores = np.concatenate([best_scores[i], col[top]])
                keep = _top_indices(merged_scores, k)
                best_rows[i], best_scores[i] = merged_rows[keep], merged_scores[keep]
        out = []
        for i in range(m):
            out.append(
                self.scorer.hits(
                    best_rows[i],
                    q_tags[i],
                    None if q_emb is None else q_emb[i],
                    tag_weight,
                    k,
                )
            )
        return out


class FaissBackend:
    """HNSW candidates by embedding (faiss), re-scored exactly with the blend."""

    name = "faiss"

    def __init__(
        self,
        scorer: Scorer,
        exact: ExactBackend | None = None,
        ann: object | None = None,
        candidates: int = 256,
        hnsw_m: int = 32,
        ef_search: int = 128,
    ) -> None:
        import faiss  # optional dependency: pip install labelrec[ann]

        if scorer.embeddings is None:
            raise ValueError("the approximate backend needs an index with embeddings")
        self.faiss = faiss
        self.scorer = scorer
        self.exact = exact if exact is not None else ExactBackend(scorer)  # the fallback
        self.candidates = candidates
        if ann is None:
            emb = np.ascontiguousarray(scorer.embeddings, dtype=np.float32)
            ann = faiss.IndexHNSWFlat(emb.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
            ann.hnsw.efConstruction = 80
            ann.add(emb)
        self.ef_search = max(ef_search, candidates)
        ann.hnsw.efSearch = self.ef_search
        self.ann = ann

    @classmethod
    def available(cls) -> bool:
        try:
            import faiss  # noqa: F401
        except ImportError:
            return False
        return True

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / ANN_FILE
        self.faiss.write_index(self.ann, str(path))
        return path

    @classmethod
    def load_ann(cls, directory: str | Path) -> object | None:
        path = Path(directory) / ANN_FILE
        if not path.is_file():
            return None
        import faiss

        return faiss.read_index(str(path))

    def search(
        self,
        q_tags: np.ndarray,
        q_emb: np.ndarray | None,
        k: int,
        tag_weight: float,
        mask: np.ndarray | None = None,
        exclude: list[np.ndarray] | None = None,
    ) -> list[Hits]:
        if q_emb is None or tag_weight >= 1.0:
            return self.exact.search(q_tags, q_emb, k, tag_weight, mask, exclude)
        q_tags = np.atleast_2d(np.asarray(q_tags, dtype=np.float32))
        q_emb = np.ascontiguousarray(np.atleast_2d(q_emb), dtype=np.float32)
        out: list[Hits] = []
        n = self.scorer.n
        for i in range(q_tags.shape[0]):
            drop = exclude[i] if exclude is not None else np.zeros(0, dtype=np.int64)
            want = max(self.candidates, 4 * (k + len(drop)))
            hits = None
            while hits is None and want < n:
                self.ann.hnsw.efSearch = max(self.ef_search, want)
                _, found = self.ann.search(q_emb[i : i + 1], want)
                rows = found[0][found[0] >= 0]
                if mask is not None:
                    rows = rows[mask[rows]]
                if len(drop):
                    rows = rows[~np.isin(rows, drop)]
                if len(rows) >= k:
                    hits = self.scorer.hits(rows, q_tags[i], q_emb[i], tag_weight, k)
                want *= 4
            self.ann.hnsw.efSearch = self.ef_search
            if hits is None:  # a selective filter or a tiny index: score exactly
                hits = self.exact.search(
                    q_tags[i : i + 1], q_emb[i : i + 1], k, tag_weight, mask, [drop]
                )[0]
            out.append(hits)
        return out
