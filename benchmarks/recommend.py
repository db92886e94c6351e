"""Recommendation benchmark: labelrec's product index against text baselines, same run.

For each catalog (valid split; myntra is split here by id hash, 15% valid), the valid products are
indexed with PREDICTED tags only (their gold tags are kept out of the index) and:

- similar products: share of the 10 nearest neighbours that carry the query's deepest category
  tag (amazon_uk_toys, amazon_in_sales) or its brand / gender facet (myntra);
  baseline: TF-IDF cosine over title + description.
- tag search: every tag with >= 5 valid products becomes a query made of the tag's own words
  (facet value; the last path segment, with its parent when that segment names several
  categories; CamelCase and '&' split); relevant = the valid products carrying the tag.
  recall@10 = relevant in the top 10 / min(10, relevant); nDCG@10 with binary gains.
  baseline: BM25 (rank-bm25, Okapi) over title + description.
- latency p50 / p99 per query at 10k and 100k products (the index tiled to that size):
  similar by id and tag search (query already encoded; plus end to end with the model's
  forward pass), against the TF-IDF / BM25 baselines on the same number of products.

Usage (models are trained with `labelrec train` when missing and --train is given, one at a time):
    python benchmarks/recommend.py --catalog amazon_uk_toys=runs/uk \
        --catalog amazon_in_sales=runs/in_sales --catalog myntra=runs/myntra --train
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402

from labelrec.data import (  # noqa: E402
    Product,
    is_facet,  # noqa: E402
    read_catalog,
    split_products,
)
from labelrec.metrics import paired_bootstrap  # noqa: E402
from labelrec.recommend import ProductSearch, build_index  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
K = 10
SEP = " > "


# ---------------------------------------------------------------------- data and models


def catalog_split(name: str, work: Path) -> tuple[Path, Path]:
    """(train, valid) files of a catalog; myntra is split here (15% valid, by id hash)."""
    folder = DATA / name
    if (folder / "valid.jsonl").is_file():
        return folder / "train.jsonl", folder / "valid.jsonl"
    products = read_catalog(folder / "catalog.jsonl").products
    train, valid = split_products(products, 0.15, seed=0)
    out = work / f"{name}_split"
    out.mkdir(parents=True, exist_ok=True)
    for part, rows in (("train", train), ("valid", valid)):
        path = out / f"{part}.jsonl"
        if not path.is_file():
            path.write_text(
                "".join(
                    json.dumps(
                        {
                            "id": p.id,
                            "title": p.title,
                            "description": p.description,
                            "tags": p.tags,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                    for p in rows
                ),
                encoding="utf-8",
            )
    return out / "train.jsonl", out / "valid.jsonl"


def ensure_model(model: Path, train: Path, valid: Path, allow_train: bool) -> None:
    if (model / "labelrec.json").is_file():
        return
    if not allow_train:
        raise SystemExit(f"no model in {model}: pass --train to train one")
    cmd = [
        sys.executable,
        "-m",
        "labelrec.cli",
        "train",
        "--config",
        str(ROOT / "configs" / "default.yaml"),
        f"data.train={train}",
        f"data.valid={valid}",
        f"output={model}",
        "train.refit=false",  # valid products are the queries measured here
        "--no-progress",
    ]
    print("training:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


# ---------------------------------------------------------------------- targets


def deepest_category(tags: list[str]) -> str | None:
    cats = [t for t in tags if not is_facet(t)]
    return max(cats, key=lambda t: (t.count(SEP), len(t))) if cats else None


def facet(tags: list[str], key: str) -> str | None:
    return next((t for t in tags if t.startswith(key + ":")), None)


def target_sets(name: str, products: list[Product]) -> dict[str, list[str | None]]:
    """Per similarity criterion, the tag each valid product's neighbours should share."""
    if name == "myntra":
        return {
            "brand": [facet(p.tags, "brand") for p in products],
            "gender": [facet(p.tags, "gender") for p in products],
        }
    return {"deepest category": [deepest_category(p.tags) for p in products]}


def _words(segment: str) -> str:
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", segment)
    text = re.sub(r"[&,/_]+", " ", text)
    return " ".join(text.split())


def tag_query(tag: str, last_segment_counts: Counter) -> str:
    """The tag's own words: a facet's value, a path's last segment (with its parent when the
    last segment alone names several categories)."""
    if is_facet(tag):
        return _words(tag.split(":", 1)[1])
    parts = tag.split(SEP)
    if len(parts) > 1 and last_segment_counts[parts[-1]] > 1:
        return _words(parts[-2]) + " " + _words(parts[-1])
    return _words(parts[-1])


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


# ---------------------------------------------------------------------- metrics


def share_sharing(
    neighbours: list[np.ndarray], targets: list[str | None], gold: list[set]
) -> np.ndarray:
    """Per query with a target: the share of its first K neighbours carrying the target."""
    return np.asarray(
        [
            np.mean([t in gold[j] for j in nb[:K]]) if len(nb) else 0.0
            for nb, t in zip(neighbours, targets, strict=True)
            if t is not None
        ]
    )


def recall_ndcg(ranked: np.ndarray, relevant: set[int]) -> tuple[float, float]:
    top = [int(r) for r in ranked[:K]]
    hits = [1.0 if r in relevant else 0.0 for r in top]
    ideal = min(K, len(relevant))
    recall = sum(hits) / ideal
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    idcg = sum(1.0 / math.log2(i + 2) for i in range(ideal))
    return recall, dcg / idcg


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


# ---------------------------------------------------------------------- baselines


class TfidfBaseline:
    def __init__(self, texts: list[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=1)
        self.matrix = self.vectorizer.fit_transform(texts).tocsr()

    def neighbours(self, row: int, k: int = K, matrix: Any = None) -> np.ndarray:
        matrix = self.matrix if matrix is None else matrix
        sims = (matrix @ self.matrix[row].T).toarray().ravel()
        sims[row] = -np.inf
        top = np.argpartition(-sims, k)[:k]
        return top[np.argsort(-sims[top], kind="stable")]


class Bm25Baseline:
    """Okapi BM25 (k1=1.5, b=0.75, rank-bm25's idf floor) as sparse matrix products; the
    scores equal ``rank_bm25.BM25Okapi``'s (checked by ``check_against_rank_bm25``)."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75) -> None:
        import scipy.sparse as sp
        from sklearn.feature_extraction.text import CountVectorizer

        self.vectorizer = CountVectorizer(analyzer=tokenize)
        tf = self.vectorizer.fit_transform(texts).tocsr().astype(np.float64)
        n = tf.shape[0]
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        idf = np.log(n - df + 0.5) - np.log(df + 0.5)
        idf[idf < 0] = 0.25 * idf.mean()
        length = np.asarray(tf.sum(axis=1)).ravel()
        norm = k1 * (1 - b + b * length / max(length.mean(), 1e-9))
        rows = np.repeat(np.arange(n), np.diff(tf.indptr))
        data = idf[tf.indices] * tf.data * (k1 + 1) / (tf.data + norm[rows])
        self.weights = sp.csr_matrix((data, tf.indices, tf.indptr), shape=tf.shape).tocsc()
        self.vocab = self.vectorizer.vocabulary_

    def scores(self, query: str) -> np.ndarray:
        cols = Counter(self.vocab[t] for t in tokenize(query) if t in self.vocab)
        if not cols:
            return np.zeros(self.weights.shape[0])
        keys = list(cols)
        return self.weights[:, keys] @ np.asarray([cols[c] for c in keys], dtype=np.float64)

    def search(self, query: str, k: int = K) -> np.ndarray:
        scores = self.scores(query)
        top = np.argpartition(-scores, k)[:k]
        return top[np.lexsort((top, -scores[top]))]


def check_against_rank_bm25(texts: list[str], queries: list[str]) -> float | None:
    """Largest absolute score difference to rank-bm25 (None when it is not installed)."""
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        return None
    ref = BM25Okapi([tokenize(t) for t in texts])
    ours = Bm25Baseline(texts)
    return max(float(np.max(np.abs(ref.get_scores(tokenize(q)) - ours.scores(q)))) for q in queries)


# ---------------------------------------------------------------------- runs


def run_catalog(
    name: str, model_dir: Path, args: argparse.Namespace, rows: list[dict[str, Any]]
) -> None:
    from labelrec.predict import TagRecommender

    train_path, valid_path = catalog_split(name, Path(args.work))
    ensure_model(model_dir, train_path, valid_path, args.train)
    valid = read_catalog(valid_path).products
    tagger = TagRecommender.load(model_dir, batch_size=64)
    t0 = time.perf_counter()
    stripped = [Product(p.id, p.title, p.description, []) for p in valid]  # predicted tags only
    index = build_index(tagger, stripped, model_source=str(model_dir))
    build_s = time.perf_counter() - t0
    print(f"{name}: indexed {len(index)} valid products in {build_s:.1f}s", file=sys.stderr)
    texts = [f"{p.title} {p.description}".strip() for p in valid]
    gold = [set(p.tags) for p in valid]
    weights = {"labelrec": None, "tags only": 1.0, "embedding only": 0.0}
    engine = ProductSearch(
        index,
        tagger,
        similar_tag_weight=args.similar_tag_weight,
        search_tag_weight=args.search_tag_weight,
    )

    def add(task: str, metric: str, values: dict[str, np.ndarray]) -> None:
        """One table row from per-query values of labelrec, the baseline and the ablations."""
        diff = paired_bootstrap(values["labelrec"], values["baseline"], n_resamples=2000, seed=0)
        rows.append(
            {"catalog": name, "task": task, "metric": metric}
            | {label: float(np.mean(v)) for label, v in values.items()}
            | {"diff_low": diff["low"], "diff_high": diff["high"]}
        )

    # similar products
    tfidf = TfidfBaseline(texts)
    base_nb = [tfidf.neighbours(i) for i in range(len(valid))]
    q_tags = np.asarray(engine.tag_vectors.todense(), dtype=np.float32)
    q_emb = index.embeddings
    ours_nb: dict[str, list[np.ndarray]] = {}
    for label, w in weights.items():
        w = engine.similar_tag_weight if w is None else w
        hits = engine.exact.search(
            q_tags, q_emb, K, w, exclude=[np.asarray([i]) for i in range(len(valid))]
        )
        ours_nb[label] = [h.rows for h in hits]
    for criterion, targets in target_sets(name, valid).items():
        n_q = sum(t is not None for t in targets)
        values = {label: share_sharing(nb, targets, gold) for label, nb in ours_nb.items()}
        values["baseline"] = share_sharing(base_nb, targets, gold)
        add("similar", f"share of 10 NN with same {criterion} ({n_q} queries)", values)

    # tag search
    counts = Counter(t for p in valid for t in p.tags)
    eval_tags = sorted(t for t, c in counts.items() if c >= 5)
    last = Counter(t.split(SEP)[-1] for t in tagger.vocab.tags if not is_facet(t))
    queries = [tag_query(t, last) for t in eval_tags]
    relevant = [{i for i, g in enumerate(gold) if t in g} for t in eval_tags]
    bm25 = Bm25Baseline(texts)
    diff = check_against_rank_bm25(texts, queries[:20])
    if diff is not None:
        print(f"{name}: BM25 scores differ from rank-bm25 by at most {diff:.2e}", file=sys.stderr)
    base_scores = [
        recall_ndcg(bm25.search(q), rel) for q, rel in zip(queries, relevant, strict=True)
    ]
    enc_tags, enc_emb, _ = engine.encode_texts([{"title": q} for q in queries])
    ours_scores = {}
    for label, w in weights.items():
        hits = engine.search_encoded(enc_tags, enc_emb, K, w)
        ours_scores[label] = [
            recall_ndcg(h.rows, rel) for h, rel in zip(hits, relevant, strict=True)
        ]
    ours_scores["baseline"] = base_scores
    for m, metric in enumerate(("recall@10", "nDCG@10")):
        values = {label: np.asarray([s[m] for s in v]) for label, v in ours_scores.items()}
        add("search", f"{metric} ({len(eval_tags)} tag queries)", values)
    if args.show_queries:
        for t, q in list(zip(eval_tags, queries, strict=True))[:15]:
            print(f"  query {q!r} <- {t!r}", file=sys.stderr)

    if args.latency:
        import torch
        from threadpoolctl import threadpool_limits

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            with threadpool_limits(args.threads):
                measure_latency(name, index, tagger, queries, enc_tags, enc_emb, texts, args, rows)
        finally:
            torch.set_num_threads(torch_threads)


def measure_latency(
    name: str,
    index: Any,
    tagger: Any,
    queries: list[str],
    enc_tags: np.ndarray,
    enc_emb: np.ndarray | None,
    texts: list[str],
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
) -> None:
    """p50/p99 per query, one query at a time, at each of ``args.sizes`` products."""
    rng = np.random.default_rng(0)
    for size in args.sizes:
        big = index.tile(size)
        eng = ProductSearch(
            big,
            tagger,
            similar_tag_weight=args.similar_tag_weight,
            search_tag_weight=args.search_tag_weight,
        )
        picks = rng.integers(0, size, args.latency_queries)
        qpicks = rng.integers(0, len(queries), args.latency_queries)
        few = qpicks[: max(20, args.latency_queries // 4)]
        ours: dict[str, list[float]] = defaultdict(list)
        base: dict[str, list[float]] = defaultdict(list)

        def timed(samples: list[float], fn: Any, *fn_args: Any, **kwargs: Any) -> None:
            t = time.perf_counter()
            fn(*fn_args, **kwargs)
            samples.append(time.perf_counter() - t)

        for r in picks[:5]:  # warm up
            eng.similar(id=big.ids[r], limit=K)
        similar_label = "similar by id (vs TF-IDF)"
        search_label = "search, query encoded (vs BM25)"
        e2e_label = "search end to end, with the model (vs BM25)"
        for r in picks:
            timed(ours[similar_label], eng.similar, id=big.ids[r], limit=K)
        for qi in qpicks:
            e = None if enc_emb is None else enc_emb[qi]
            timed(ours[search_label], eng.search_encoded, enc_tags[qi], e, K)
        for qi in few:
            timed(ours[e2e_label], eng.search, queries[qi], limit=K)
        big_texts = [texts[i % len(texts)] for i in range(size)]
        base_tfidf = TfidfBaseline(big_texts)
        for r in picks:
            timed(base[similar_label], base_tfidf.neighbours, int(r))
        base_bm25 = Bm25Baseline(big_texts)
        for qi in qpicks:
            timed(base[search_label], base_bm25.search, queries[qi])
        base[e2e_label] = base[search_label]
        for label in ours:
            p50, p99 = percentiles(ours[label])
            b50, b99 = percentiles(base[label])
            rows.append(
                {
                    "catalog": name,
                    "task": "latency",
                    "metric": f"{label} @ {size // 1000}k products, ms p50 / p99",
                    "labelrec": p50,
                    "labelrec_p99": p99,
                    "baseline": b50,
                    "baseline_p99": b99,
                    "latency": True,
                    "load_average": os.getloadavg()[0],
                }
            )


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| catalog | task | metric | labelrec | baseline | difference, 95% CI "
        "| labelrec tags only | labelrec embedding only |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("latency"):
            print(
                f"| {r['catalog']} | latency | {r['metric']} | "
                f"{r['labelrec']:.1f} / {r['labelrec_p99']:.1f} | "
                f"{r['baseline']:.1f} / {r['baseline_p99']:.1f} | "
                f"load average {r['load_average']:.1f} | | |"
            )
            continue
        diff = r["labelrec"] - r["baseline"]
        print(
            f"| {r['catalog']} | {r['task']} | {r['metric']} | {r['labelrec']:.3f} | "
            f"{r['baseline']:.3f} | {diff:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}] | "
            f"{r['tags only']:.3f} | {r['embedding only']:.3f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--catalog",
        action="append",
        default=None,
        metavar="NAME=MODEL_DIR",
        help="catalog under ../shared/data and its model (repeat); default amazon_uk_toys=runs/uk",
    )
    parser.add_argument("--train", action="store_true", help="train missing models")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench"), help="scratch folder")
    parser.add_argument("--similar-tag-weight", type=float, default=0.5)
    parser.add_argument("--search-tag-weight", type=float, default=0.5)
    parser.add_argument("--no-latency", dest="latency", action="store_false")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS and torch threads while timing queries"
    )
    parser.add_argument("--show-queries", action="store_true")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: the benchmark needs the shared catalogs")
    rows: list[dict[str, Any]] = []
    for spec in args.catalog or ["amazon_uk_toys=runs/uk"]:
        name, _, model = spec.partition("=")
        if not model:
            raise SystemExit(f"--catalog {spec!r}: expected NAME=MODEL_DIR")
        model_dir = Path(model) if Path(model).is_absolute() else ROOT / model
        run_catalog(name, model_dir, args, rows)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
