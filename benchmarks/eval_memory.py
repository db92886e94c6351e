#!/usr/bin/env python
"""Memory of scoring an evaluation against its size: ``evaluate.evaluate_scores_on`` (what
``labelrec eval``, training's valid metrics and its tuning folds' out-of-fold metrics run) on
synthetic scores of ``--products`` x ``--tags``, its peak of numpy and Python allocations beyond
the inputs (``tracemalloc``).

    .venv/bin/python benchmarks/eval_memory.py --products 2000 6000 --tags 15000

    .venv/bin/python benchmarks/eval_memory.py --products 4326 --tags 9932 --proposals 26

    .venv/bin/python benchmarks/eval_memory.py --products 4326 --tags 9932 --proposals 26 --ranked

Each product has ``--gold`` random tags of the vocabulary and 20% of products one tag outside
it; scores are float32, as ``TagRecommender.score`` returns them. New tags proposed (the span
tagger's, the generator's): ``--proposals`` a product on average, each a tag of its own (below
1: one for that share of products; the span tagger proposes 26 a product on zh_taobao's
two-fold tuning evidence). Prints one row a size: products, tags, the columns of the joint
matrix (every tag of the vocabulary, outside it and proposed: ``evaluate.JointLayout``), the
scores' own MB, the peak MB the evaluation added and that peak per products x tags cell, and
wall seconds.

``--ranked`` measures the MLflow evaluator's ``evaluate_ranked`` instead (the ``labelrec``
evaluator of ``mlflow.models.evaluate``, which the promotion gate runs on both models): each
product's 10 best tags of the same scores and proposals as ranked lists (half known, half new,
as far as it has new ones), as a model's ``predict`` returns them, and its known tags at or
above 0.5 and its proposals, 25 of each at most, as its decisions; its joint columns are every
tag the vocabulary, the gold tags, lists and decisions name.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from itertools import zip_longest

import numpy as np

from labelrec.data import Product, TagVocab
from labelrec.evaluate import JointLayout, evaluate_scores_on


def _case(n_products: int, n_tags: int, gold: int, proposals: float, seed: int):
    rng = np.random.default_rng(seed)
    names = [f"t{j}" for j in range(n_tags)]
    products = []
    for i in range(n_products):
        tags = [names[j] for j in rng.choice(n_tags, size=gold, replace=False)]
        if i % 5 == 0:
            tags.append(f"unseen{i}")
        products.append(Product(id=str(i), title=f"product {i}", tags=tags))
    vocab = TagVocab.from_products(
        Product(id=f"v{j}", title="x", tags=[t]) for j, t in enumerate(names)
    )
    scores = rng.random((n_products, len(vocab)), dtype=np.float32)
    if proposals >= 1:
        new = [{f"new{i}.{j}": 0.7 for j in range(round(proposals))} for i in range(n_products)]
    elif proposals > 0:
        every = round(1 / proposals)
        new = [{f"new{i}": 0.7} if i % every == 0 else {} for i in range(n_products)]
    else:
        new = [{} for _ in range(n_products)]
    return scores, products, vocab, new


def _ranked(scores: np.ndarray, vocab: TagVocab, new: list[dict[str, float]], depth: int):
    """A model's ranked output and decisions: half of each list the product's best known tags,
    half its proposals, alternating; its decisions its known tags at or above 0.5 and its
    proposals, 25 of each at most."""
    ranked, decided = [], []
    for i, row in enumerate(scores):
        best = np.argsort(-row)[:25]
        known = [(vocab.tags[j], float(row[j])) for j in best]
        proposed = list(new[i].items())
        mixed = [p for pair in zip_longest(known, proposed) for p in pair if p is not None]
        ranked.append(mixed[:depth])
        decided.append([p for p in known if p[1] >= 0.5] + proposed[:25])
    return ranked, decided


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--products", type=int, nargs="+", default=[2000, 6000])
    parser.add_argument("--tags", type=int, default=15000)
    parser.add_argument("--gold", type=int, default=3, help="vocabulary tags a product")
    parser.add_argument(
        "--proposals", type=float, default=0.1, help="new tags proposed a product, on average"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ranked", action="store_true", help="the MLflow evaluator's evaluate_ranked instead"
    )
    args = parser.parse_args(argv)
    print("| products | tags | joint columns | scores MB | eval peak MB | bytes a cell | seconds |")
    print("|---|---|---|---|---|---|---|")
    for n in args.products:
        scores, products, vocab, new = _case(n, args.tags, args.gold, args.proposals, args.seed)
        columns = len(JointLayout.of(new, products, vocab).names)
        if args.ranked:
            from labelrec.mlflow.evaluator import evaluate_ranked

            ranked, decided = _ranked(scores, vocab, new, 10)
            counts = dict(zip(vocab.tags, (int(c) for c in vocab.counts), strict=True))
            gold = [p.tags for p in products]
            named = {t for rows in (ranked, decided) for row in rows for t, _ in row}
            columns = len(named.union(vocab.tags, *gold))
        tracemalloc.start()
        t0 = time.perf_counter()
        if args.ranked:
            evaluate_ranked(ranked, gold, decided, counts, vocab.n_products)
        else:
            evaluate_scores_on(scores, products, vocab, 0.5, new_tags=new, new_threshold=0.5)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cells = scores.shape[0] * scores.shape[1]
        print(
            f"| {n} | {scores.shape[1]} | {columns} | {scores.nbytes / 2**20:.0f} |"
            f" {peak / 2**20:.0f} |"
            f" {peak / cells:.1f} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
