"""Similar products, tag search and personalised recommendations over a :class:`ProductIndex`.

Everything here takes and returns plain Python data (str, int, float, list, dict), ready for a
JSON service; bad input (unknown product id, empty query, unknown tag filter, bad limit) raises
``ValueError`` with a message meant for the caller.
"""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from labelrec.data import Product, has_visible_text, is_missing
from labelrec.recommend.backends import ExactBackend, FaissBackend, Hits, Scorer
from labelrec.recommend.index import ProductIndex, normalize_rows, top_k_sparse
from labelrec.recommend.interactions import Interactions, UserSignals

logger = logging.getLogger(__name__)

MAX_LIMIT = 1000
ECHO_CHARS = 300  # of a free-text query or a new product's title, in the answer's "query"
ANN_THRESHOLD = 1_000_000


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise ValueError(f"limit must be an integer, got {limit!r}")
    if not 1 <= int(limit) <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return int(limit)


def _check_weight(value: Any, name: str) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= weight <= 1.0 or math.isnan(weight):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return weight


def _tag_list(tags: Any) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str):
        return [tags]
    if not isinstance(tags, (list, tuple)):
        raise ValueError(f"tags must be a list of tag strings, got {type(tags).__name__}")
    return list(tags)


def _row_normalize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    scale = 1.0 / np.maximum(norms, 1e-12)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ matrix)


def check_index_model(index: ProductIndex, tagger: Any) -> None:
    """Refuse a tagger that is not the model the index was built with.

    Tag scores compare across models with the same tags, but the index's embeddings come from
    one fine-tuned backbone: a query embedded by another one is compared in another space.
    Each saved model has its own ``save_id`` (``labelrec.json``), which the index records; an
    index or model without one is not checked.
    """
    source = index.manifest.get("model") or "another model"
    vocab = getattr(tagger, "vocab", None)
    if vocab is not None:
        n_index, tags = index.n_model_tags, list(vocab.tags)
        if n_index != len(tags) or list(index.tags[:n_index]) != tags:
            # the same tags in the same order, not only as many
            other = " (other tags or another order)" if n_index == len(tags) else ""
            raise ValueError(
                f"the product index was built with {source}, a model of {n_index} tags{other}; "
                f"this model has {len(tags)}: rebuild it with `labelrec product-index`"
            )
    built_with = index.manifest.get("save_id")
    info = getattr(tagger, "info", None)
    served = info.get("save_id") if isinstance(info, dict) else None
    if built_with and served and built_with != served:
        raise ValueError(
            f"the product index was built with {source} (save {built_with}), not with this "
            f"model (save {served}): rebuild it with `labelrec product-index`"
        )
    generator = index.manifest.get("generator")  # None: an index that does not record it
    uses = getattr(tagger, "uses_generator", None)
    if isinstance(generator, bool) and isinstance(uses, bool) and generator != uses:
        built, now = ("with", "without") if generator else ("without", "with")
        raise ValueError(
            f"the product index was built {built} the model's tag generator and this model is"
            f" loaded {now} it: queries would be tagged otherwise than the products; load the"
            " model as the index was built (generate, LABELREC_GENERATE) or rebuild the index"
            " (`labelrec product-index`, --no-generate to leave the generator out)"
        )


class InteractionsUnavailable(RuntimeError):
    """The interactions file given to the server could not be loaded: a user's history is not
    known (a history given with the request still works)."""


class ProductSearch:
    """Queries over a product index; a tagger (``TagRecommender``) is needed only for free-text
    queries and is loaded lazily from the index manifest's model path when not given.

    ``tag_weight`` (per call, or the defaults here) blends tag-vector cosine (1.0) with
    embedding cosine (0.0). Tag vectors weight each tag's score by its idf
    (``tag_weighting="idf"``) so that specific tags (a brand, a deep category) count more than
    the root categories most products share; known (gold) tags count with score 1.
    """

    def __init__(
        self,
        index: ProductIndex,
        tagger: Any | None = None,
        *,
        backend: str = "auto",
        ann_threshold: int = ANN_THRESHOLD,
        tag_weighting: str = "idf",
        use_gold: bool = True,
        similar_tag_weight: float = 0.5,
        search_tag_weight: float = 0.5,
        recommend_tag_weight: float = 0.5,
        query_top_k: int | None = None,
        interactions: Interactions | str | Path | None = None,
        half_life_days: float | None = None,
        index_dir: str | Path | None = None,
    ) -> None:
        if tag_weighting not in ("idf", "none"):
            raise ValueError(f"tag_weighting must be 'idf' or 'none', got {tag_weighting!r}")
        if backend not in ("auto", "exact", "faiss"):
            raise ValueError(f"backend must be auto, exact or faiss, got {backend!r}")
        self.index = index
        if tagger is not None:
            check_index_model(index, tagger)
        self._tagger = tagger
        self.similar_tag_weight = _check_weight(similar_tag_weight, "similar_tag_weight")
        self.search_tag_weight = _check_weight(search_tag_weight, "search_tag_weight")
        self.recommend_tag_weight = _check_weight(recommend_tag_weight, "recommend_tag_weight")
        self.query_top_k = int(query_top_k or index.manifest.get("top_k") or 32)
        self.query_min_score = float(index.manifest.get("min_score") or 0.0)
        n_tags = len(index.tags)
        self.tag_weights = (
            index.idf() if tag_weighting == "idf" else np.ones(n_tags, dtype=np.float32)
        )
        vectors = index.tag_scores
        if use_gold and index.gold.nnz:
            vectors = vectors.maximum(index.gold)
        self.tag_vectors = _row_normalize(sp.csr_matrix(vectors) @ sp.diags(self.tag_weights))
        self.scorer = Scorer(self.tag_vectors, index.embeddings)
        self.exact = ExactBackend(self.scorer)
        self.backend: ExactBackend | FaissBackend = self.exact
        want_ann = backend == "faiss" or (backend == "auto" and len(index) >= ann_threshold)
        if backend == "faiss" and not index.has_embeddings:
            raise ValueError("backend 'faiss' needs an index with embeddings")
        if want_ann and index.has_embeddings:
            if FaissBackend.available():
                ann = FaissBackend.load_ann(index_dir) if index_dir is not None else None
                if ann is not None and ann.ntotal != len(index):
                    logger.warning("%s: stale approximate index, rebuilding it", index_dir)
                    ann = None
                self.backend = FaissBackend(self.scorer, self.exact, ann=ann)
            elif backend == "faiss":
                raise ValueError("backend 'faiss' needs faiss-cpu: pip install 'labelrec[ann]'")
            else:
                logger.warning("no faiss-cpu: exact search over %d products", len(index))
        self.signals: UserSignals | None = None
        #: why the interactions a server was given are not loaded (users' histories are missing)
        self.interactions_error: str | None = None
        if interactions is not None:
            self.set_interactions(interactions, half_life_days=half_life_days)

    @classmethod
    def load(cls, index_dir: str | Path, tagger: Any | None = None, **kwargs: Any) -> ProductSearch:
        """Load an index directory (and its approximate index when one was saved)."""
        return cls(ProductIndex.load(index_dir), tagger, index_dir=index_dir, **kwargs)

    # ------------------------------------------------------------------ helpers

    @property
    def tagger(self) -> Any:
        """The tagger for free-text queries, loaded from the manifest's model when needed."""
        if self._tagger is None:
            source = self.index.manifest.get("model")
            if not source:
                raise ValueError(
                    "free-text queries need the tagging model: pass a TagRecommender "
                    "(the index manifest names no model)"
                )
            # as the index was built: with the model's tag generator or without it
            without = self.index.manifest.get("generator") is False
            tagger = load_tagger(source, **({"generate": False} if without else {}))
            check_index_model(self.index, tagger)
            self._tagger = tagger
        return self._tagger

    def _weighted_vectors(self, scores: sp.csr_matrix) -> np.ndarray:
        """Dense normalised tag vectors (m, n_tags) from (m, n_model_tags) sparse scores."""
        n_tags = len(self.index.tags)
        padded = sp.csr_matrix(
            (scores.data, scores.indices, scores.indptr), shape=(scores.shape[0], n_tags)
        )
        dense = np.asarray((padded @ sp.diags(self.tag_weights)).todense(), dtype=np.float32)
        return normalize_rows(dense)

    def encode_texts(self, products: list[Any]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(tag vectors, embeddings, raw tag scores) of free-text products through the tagger."""
        scores, emb = self.tagger.predict_scores(products, with_embeddings=True)
        depths = self.index.depths  # the model's tags come first among the index's
        priority = None if depths is None else depths[: scores.shape[1]]
        sparse = top_k_sparse(scores, self.query_top_k, self.query_min_score, priority)
        q_emb = (
            self.index.embed_query(emb) if (emb is not None and self.index.has_embeddings) else None
        )
        return self._weighted_vectors(sparse), q_emb, scores

    def _row_query(self, row: int) -> tuple[np.ndarray, np.ndarray | None]:
        q_tags = np.asarray(self.tag_vectors[row].todense(), dtype=np.float32).ravel()
        q_emb = None if self.index.embeddings is None else self.index.embeddings[row]
        return q_tags, q_emb

    def _predicted_tags(self, scores: np.ndarray, at_least: int = 3) -> list[dict[str, Any]]:
        """Tags of a free-text query: those passing their threshold, else the best few."""
        depths = self.index.depths  # a parent before the child whose score it equals
        ties = np.zeros(len(scores), np.int64) if depths is None else depths[: len(scores)]
        order = np.lexsort((ties, -scores))[: max(self.query_top_k, at_least)]
        # as an indexed product carries them: a category path only under a passing parent
        ok = self.index.passed(np.zeros(len(order), dtype=np.int64), order, scores[order])
        passed = [j for j, keep in zip(order, ok, strict=True) if keep]
        chosen = passed or list(order[:at_least])
        return [{"tag": self.index.tags[j], "score": round(float(scores[j]), 6)} for j in chosen]

    def _tag_details(self, row: int, tags: list[str]) -> list[dict[str, Any]]:
        """``{"tag", "score" (predicted, 0 when not), "gold"}`` for tags of an indexed product."""
        lo, hi = self.index.tag_scores.indptr[row], self.index.tag_scores.indptr[row + 1]
        predicted = dict(
            zip(
                self.index.tag_scores.indices[lo:hi].tolist(),
                self.index.tag_scores.data[lo:hi].tolist(),
                strict=True,
            )
        )
        glo, ghi = self.index.gold.indptr[row], self.index.gold.indptr[row + 1]
        gold = set(self.index.gold.indices[glo:ghi].tolist())
        out = []
        for tag in tags:
            j = self.index.tag_index[tag]
            out.append(
                {"tag": tag, "score": round(float(predicted.get(j, 0.0)), 6), "gold": j in gold}
            )
        return out

    def _results(
        self, hits: Hits, q_tags: np.ndarray, query_tags: list[str], extra: Any = None
    ) -> list[dict[str, Any]]:
        """Result rows with the tags each shares with the query, biggest contribution first."""
        wanted = set(query_tags)
        out = []
        for i, row in enumerate(hits.rows):
            row = int(row)
            tags = self.index.carried_tags(row)
            shared = [t for t in tags if t in wanted]
            vec = self.tag_vectors[row]
            contrib = dict(
                zip(vec.indices.tolist(), (vec.data * q_tags[vec.indices]).tolist(), strict=True)
            )
            shared.sort(key=lambda t: -contrib.get(self.index.tag_index[t], 0.0))
            item = {
                "id": self.index.ids[row],
                "title": self.index.titles[row],
                "score": round(float(hits.scores[i]), 6),
                "tag_similarity": round(float(hits.tag_sims[i]), 6),
                "embedding_similarity": round(float(hits.embedding_sims[i]), 6),
                "shared_tags": shared,
                "tags": tags,
            }
            if extra is not None:
                item.update(extra(row))
            out.append(item)
        return out

    # ------------------------------------------------------------------ similar products

    def similar(
        self,
        id: Any = None,  # noqa: A002 - the service's JSON field
        product: Any = None,
        *,
        limit: int = 10,
        tags: list[str] | None = None,
        tag_weight: float | None = None,
    ) -> dict[str, Any]:
        """Products most similar to an indexed product (``id``) or to a new one (``product``:
        a dict with title/description or a title string, tagged by the model).

        ``tags``: only products carrying all these tags. Returns ``{"query": {...},
        "results": [{"id", "title", "score", "tag_similarity", "embedding_similarity",
        "shared_tags", "tags"}]}``.
        """
        limit = _check_limit(limit)
        weight = self._weight(tag_weight, self.similar_tag_weight)
        mask = self.index.filter_mask(_tag_list(tags))
        if id is None and product is None:
            raise ValueError("give an indexed product 'id' or a new 'product'")
        if id is not None and product is not None:
            raise ValueError("give either an indexed product 'id' or a new 'product', not both")
        exclude: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        if id is not None:
            row = self.index.row(id)
            q_tags, q_emb = self._row_query(row)
            query_tags = self.index.carried_tags(row)
            query = {
                "id": self.index.ids[row],
                "title": self.index.titles[row],
                "tags": self._tag_details(row, query_tags),
            }
            exclude = [np.asarray([row], dtype=np.int64)]
        else:
            item = _check_product(product)
            q, e, scores = self.encode_texts([item])
            q_tags, q_emb = q[0], (None if e is None else e[0])
            predicted = self._predicted_tags(scores[0])
            query_tags = [t["tag"] for t in predicted]
            query = {"title": _title_of(item), "tags": predicted}
        hits = self.backend.search(q_tags, q_emb, limit, weight, mask, exclude)[0]
        return {"query": query, "results": self._results(hits, q_tags, query_tags)}

    # ------------------------------------------------------------------ tag search

    def search(
        self,
        query: Any,
        *,
        limit: int = 10,
        tags: list[str] | None = None,
        tag_weight: float | None = None,
    ) -> dict[str, Any]:
        """Products for a free-text query: the model tags (and embeds) the query, products are
        ranked by the blend of tag and embedding similarity; ``tags`` are exact filters.

        Returns ``{"query": {"text", "tags": [{"tag", "score"}]}, "results": [...]}``.
        """
        if not isinstance(query, str) or not has_visible_text(query):
            raise ValueError("empty query: give some words to search for")
        if not any(ch.isalnum() for ch in query):  # "!!!", "，。": nothing to match on
            raise ValueError(f"query {query[:40]!r} has no letters or digits to search for")
        limit = _check_limit(limit)
        weight = self._weight(tag_weight, self.search_tag_weight)
        mask = self.index.filter_mask(_tag_list(tags))
        text = " ".join(query.split())
        q, e, scores = self.encode_texts([{"title": text}])
        predicted = self._predicted_tags(scores[0])
        hits = self.backend.search(q[0], None if e is None else e[0], limit, weight, mask)[0]
        return {
            "query": {"text": _echo(text), "tags": predicted},
            "results": self._results(hits, q[0], [t["tag"] for t in predicted]),
        }

    def search_encoded(
        self,
        q_tags: np.ndarray,
        q_emb: np.ndarray | None,
        limit: int = 10,
        tag_weight: float | None = None,
        mask: np.ndarray | None = None,
    ) -> list[Hits]:
        """Raw hits for pre-encoded queries (rows of ``q_tags``/``q_emb``), e.g. for benchmarks."""
        weight = self._weight(tag_weight, self.search_tag_weight)
        return self.backend.search(q_tags, q_emb, _check_limit(limit), weight, mask)

    def _weight(self, value: Any, default: float) -> float:
        if value is None:
            return default if self.index.has_embeddings else 1.0
        weight = _check_weight(value, "tag_weight")
        if not self.index.has_embeddings and weight < 1.0:
            raise ValueError(
                f"tag_weight {weight}: this index has no embeddings (built with"
                " --no-embeddings), so it ranks by tags alone; give 1 or leave it out"
            )
        return weight

    # ------------------------------------------------------------------ personalised

    def set_interactions(
        self, interactions: Interactions | str | Path, half_life_days: float | None = None
    ) -> dict[str, int]:
        """Use these interactions (or a CSV/Parquet file of them) for :meth:`recommend`."""
        if not isinstance(interactions, Interactions):
            interactions = Interactions.read(interactions)
        self.signals = UserSignals(
            interactions, self.index.row_of, len(self.index), half_life_days=half_life_days
        )
        if self.signals.n_dropped:
            logger.info(
                "%s: %d of %d interactions name products outside the index (ignored)",
                interactions.source,
                self.signals.n_dropped,
                len(interactions),
            )
        return {
            "interactions": len(interactions),
            "ignored": self.signals.n_dropped,
            "users": len(self.signals.user_index),
        }

    def recommend(
        self,
        user: Any = None,
        *,
        history: list[Any] | None = None,
        limit: int = 10,
        tags: list[str] | None = None,
        tag_weight: float | None = None,
        cooccurrence_weight: float = 0.5,
        min_support: int = 3,
        popularity_weight: float = 0.5,
    ) -> dict[str, Any]:
        """Products for a user: a profile from the tag vectors and embeddings of the products in
        their history (from the interactions, plus ``history``: product ids or
        ``{"product_id", "weight"}`` objects), blended with item-item co-occurrence in
        proportion to how many other users share their products (full weight
        ``cooccurrence_weight`` from ``min_support`` users). Products already in the history
        are left out. Users without history get popular products, ranked with the tag profile
        of all interactions ("strategy": "popular").
        """
        limit = _check_limit(limit)
        weight = self._weight(tag_weight, self.recommend_tag_weight)
        beta = _check_weight(cooccurrence_weight, "cooccurrence_weight")
        pop_weight = _check_weight(popularity_weight, "popularity_weight")
        integer = isinstance(min_support, numbers.Integral) and not isinstance(min_support, bool)
        if not integer or min_support < 1:
            raise ValueError(f"min_support must be an integer >= 1, got {min_support!r}")
        mask = self.index.filter_mask(_tag_list(tags))
        rows, weights = self._history(user, history)
        n = len(self.index)
        if not (weights > 0).any():  # no history, or one weighing nothing (weights of 0)
            return self._cold_start(user, limit, weight, mask, pop_weight, np.unique(rows))
        q_tags = self._profile(rows, weights)
        q_tags = normalize_rows(q_tags[None, :])[0]
        q_emb = None
        if self.index.embeddings is not None:
            q_emb = normalize_rows((weights[:, None] * self.index.embeddings[rows]).sum(0)[None])[0]
        seen = np.unique(rows)
        cooc = np.zeros(n, dtype=np.float32)
        support = 0
        if self.signals is not None:
            cooc, support = self.signals.cooccurrence(rows, weights, user)
            cooc[seen] = 0.0
            if mask is not None:
                cooc[~mask] = 0.0
        blend = beta * min(1.0, support / min_support) if cooc.max() > 0 else 0.0
        pool = limit * 5 + 50
        hits = self.backend.search(q_tags, q_emb, pool, weight, mask, [seen])[0]
        candidates = hits.rows
        if blend > 0:
            top_cooc = np.argsort(-cooc, kind="stable")[:pool]
            top_cooc = top_cooc[cooc[top_cooc] > 0]
            candidates = np.union1d(candidates, top_cooc)
        content = self.scorer.hits(candidates, q_tags, q_emb, weight, len(candidates))
        final = (1.0 - blend) * content.scores
        if blend > 0:
            final = final + blend * cooc[content.rows] / cooc.max()
        order = np.lexsort((content.rows, -final))[:limit]
        ranked = content.take(order, final[order])
        profile_tags = self._profile_tags(q_tags)
        return {
            "user": None if user is None else str(user),
            "strategy": "history+cooccurrence" if blend > 0 else "history",
            "history": [self.index.ids[r] for r in seen],
            "profile_tags": profile_tags,
            "cooccurrence_weight": round(blend, 6),
            "results": self._results(
                ranked,
                q_tags,
                profile_tags,
                extra=lambda r: {"cooccurrence": round(float(cooc[r]), 6)},
            ),
        }

    def _history(self, user: Any, history: list[Any] | None) -> tuple[np.ndarray, np.ndarray]:
        rows: list[int] = []
        weights: list[float] = []
        if user is not None and self.interactions_error is not None:
            raise InteractionsUnavailable(
                f"no interactions to find user {str(user)!r} in: {self.interactions_error}"
            )
        if user is not None and self.signals is not None:
            r, w = self.signals.history(str(user))
            rows.extend(r.tolist())
            weights.extend(w.tolist())
        if history is not None:
            if not isinstance(history, (list, tuple)):
                raise ValueError("history must be a list of product ids")
            for i, item in enumerate(history):
                weight = 1.0
                if isinstance(item, dict):
                    pid = item.get("product_id", item.get("id"))
                    weight = item.get("weight", 1.0)
                    if (
                        isinstance(weight, bool)
                        or not isinstance(weight, (int, float))
                        or not math.isfinite(weight)
                        or weight < 0
                    ):
                        raise ValueError(f"history[{i}]: weight must be a finite number >= 0")
                else:
                    pid = item
                if pid is None:
                    raise ValueError(f"history[{i}]: missing product id")
                rows.append(self.index.row(pid))
                weights.append(float(weight))
        w = np.asarray(weights, dtype=np.float64)
        top = w.max() if len(w) else 0.0
        if top > 0:  # the profile, the embedding and co-occurrence are all scale-free
            w = w / top
        return np.asarray(rows, dtype=np.int64), w.astype(np.float32)

    def _cold_start(
        self,
        user: Any,
        limit: int,
        weight: float,
        mask: np.ndarray | None,
        pop_weight: float,
        seen: np.ndarray,
    ) -> dict[str, Any]:
        """Popular products, ranked with the tag profile of all interactions; a history that
        weighs nothing is still left out of them."""
        if self.signals is None:
            raise ValueError(
                f"user {user!r} has no history and no interactions are loaded to fall back on: "
                "give a history or load interactions"
            )
        if not self.signals.popularity.any():
            dropped = self.signals.n_dropped
            why = (
                "each was ignored: are they from another catalog?"
                if dropped == len(self.signals.interactions.product_ids)
                else "those naming its products all weigh 0"
            )
            raise ValueError(
                f"user {user!r} has no history, and no loaded interaction names a product of the"
                f" index to fall back on ({why})"
            )
        pop = self.signals.popularity
        rows = np.flatnonzero(pop)
        q_tags = normalize_rows(self._profile(rows, pop[rows])[None])[0]
        q_emb = None
        if self.index.embeddings is not None:
            q_emb = normalize_rows((pop[rows, None] * self.index.embeddings[rows]).sum(0)[None])[0]
        pool = limit * 5 + 50
        hits = self.backend.search(q_tags, q_emb, pool, weight, mask, [seen])[0]
        popular = np.argsort(-pop, kind="stable")[: pool + len(seen)]
        popular = popular[(pop[popular] > 0) & ~np.isin(popular, seen)][:pool]
        if mask is not None:
            popular = popular[mask[popular]]
        candidates = np.union1d(hits.rows, popular)
        content = self.scorer.hits(candidates, q_tags, q_emb, weight, len(candidates))
        final = (1.0 - pop_weight) * content.scores + pop_weight * pop[content.rows] / pop.max()
        order = np.lexsort((content.rows, -final))[:limit]
        ranked = content.take(order, final[order])
        profile_tags = self._profile_tags(q_tags)
        return {
            "user": None if user is None else str(user),
            "strategy": "popular",
            "history": [self.index.ids[r] for r in seen],
            "profile_tags": profile_tags,
            "cooccurrence_weight": 0.0,
            "results": self._results(
                ranked, q_tags, profile_tags, extra=lambda r: {"popularity": float(pop[r])}
            ),
        }

    def _profile(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Weighted sum of the tag vectors of ``rows`` (dense, n_tags)."""
        summed = self.tag_vectors[rows].T @ np.asarray(weights, dtype=np.float32)
        return np.asarray(summed, dtype=np.float32).ravel()

    def _profile_tags(self, q_tags: np.ndarray, limit: int = 10) -> list[str]:
        top = np.argsort(-q_tags, kind="stable")[:limit]
        return [self.index.tags[j] for j in top if q_tags[j] > 0]


def load_tagger(source: str | Path, **kwargs: Any) -> Any:
    """A ``TagRecommender`` from a model directory or an MLflow URI (``models:/name@alias``,
    ``runs:/...``): :func:`labelrec.opener.open_tagger`."""
    from labelrec.opener import open_tagger

    return open_tagger(source, **kwargs)


def _check_product(product: Any) -> Any:
    if isinstance(product, Product):  # as TagRecommender.suggest takes it
        product = {"title": product.title, "description": product.description}
    if isinstance(product, str):
        if not has_visible_text(product):
            raise ValueError("empty product: give a title")
        return {"title": product}
    if isinstance(product, dict):
        title = product.get("title")
        if not isinstance(title, str) or not has_visible_text(title):
            raise ValueError("product: 'title' must be a non-empty string")
        desc = product.get("description")
        desc = "" if is_missing(desc) else desc  # a table's empty cell
        if not isinstance(desc, str):
            raise ValueError("product: 'description' must be a string")
        return {"title": title, "description": desc}
    raise ValueError(
        f"product must be a Product, an object with a title or a string, got {product!r}"
    )


def _title_of(item: Any) -> str:
    return _echo(item["title"] if isinstance(item, dict) else str(item))


def _echo(text: str) -> str:
    """A query as an answer repeats it: its first ``ECHO_CHARS`` characters (a long query is
    not sent back whole)."""
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


def format_results(result: dict[str, Any]) -> list[str]:
    """Plain-text lines for a result of :meth:`ProductSearch.similar`, ``search`` or
    ``recommend``: score, id, title and the shared tags, one product a line."""
    lines = []
    query = result.get("query") or {}
    tags = query.get("tags")
    if tags:
        names = [t["tag"] if isinstance(t, dict) else t for t in tags]
        lines.append("# query tags: " + ", ".join(names))
    if "strategy" in result:
        lines.append(
            f"# strategy: {result['strategy']}, history: {len(result['history'])} products"
        )
    for item in result["results"]:
        shared = ", ".join(item["shared_tags"]) or "-"
        lines.append(f"{item['score']:.4f}\t{item['id']}\t{item['title']}\t[{shared}]")
    return lines
