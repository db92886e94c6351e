#!/usr/bin/env python
"""Memory of the tuning against its size: ``fusion.tune_fusion`` (the voters' weights, the span
tagger's weight and the absent factor) and ``rerank.Reranker.fit`` on synthetic out-of-fold
evidence of ``--products`` x ``--tags``, as ``train.tune_by_folds`` runs them on every labelled
product; the peak of numpy and Python allocations each adds beyond the evidence
(``tracemalloc``).

    .venv/bin/python benchmarks/tuning_memory.py --products 4326 --tags 9932 --proposals 26

The evidence is what the default configuration's voters give: neural, TF-IDF neighbour,
embedding neighbour and span tagger scores (float32), each gold tag scored higher by some
voters than the others, the span tagger's proposals (``--proposals`` new tags a product, each
of its own, and one of the product's gold tags for half of them) and the tags absent from the
title. zh_taobao's two tuning folds pool 4,326 products over 9,932 tags, with 26 proposals a
product. Prints one row a size: products, tags, the evidence's MB (its score matrices), the
peak MB each step added and its wall seconds, and whether the reranker was kept (it beat the
fusion out of fold).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np

from labelrec.config import load_config
from labelrec.data import Product, TagVocab
from labelrec.fusion import Fusion, FusionInputs, tune_fusion
from labelrec.rerank import Reranker, fusion_votes

ROOT = Path(__file__).resolve().parents[1]


def _evidence(n_products: int, n_tags: int, gold: int, proposals: int, seed: int):
    rng = np.random.default_rng(seed)
    names = [f"t{j}" for j in range(n_tags)]
    products, picks = [], []
    for i in range(n_products):
        cols = rng.choice(n_tags, size=gold, replace=False)
        picks.append(cols)
        products.append(Product(id=str(i), title=f"product {i}", tags=[names[j] for j in cols]))
    vocab = TagVocab(names, rng.integers(1, 40, n_tags), n_products)
    rows = np.repeat(np.arange(n_products), gold)
    cols = np.concatenate(picks)

    def voter(strength: float) -> np.ndarray:
        scores = rng.random((n_products, n_tags), dtype=np.float32) * np.float32(0.5)
        scores[rows, cols] += np.float32(strength) * rng.random(len(rows), dtype=np.float32)
        return scores

    span_new = []
    for i in range(n_products):
        new = {f"new{i}.{j}": float(rng.random()) * 0.6 for j in range(proposals)}
        if i % 2:
            new[products[i].tags[0]] = 0.9
        span_new.append(new)
    inputs = FusionInputs(
        products,
        names,
        neural=voter(0.3),
        tfidf=voter(0.5),
        embedding=voter(0.4),
        span_known=voter(0.6),
        span_new=span_new,
        absent=rng.random((n_products, n_tags)) < 0.5,
    )
    return inputs, vocab


def _traced(step, *args):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = step(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak, seconds


def _fit_reranker(inputs, vocab, fusion, scores, cfg) -> bool:
    """The reranker fitted on the fusion's votes, as ``train.tune_by_folds`` fits it: kept?"""
    votes = fusion_votes(inputs, fusion, scores)
    fit = Reranker.fit(inputs.products, vocab, votes, None, None, cfg.lexical.rerank_candidates, 0)
    return fit[0] is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--products", type=int, nargs="+", default=[2000, 4326])
    parser.add_argument("--tags", type=int, default=9932)
    parser.add_argument("--gold", type=int, default=4, help="vocabulary tags a product")
    parser.add_argument("--proposals", type=int, default=26, help="new tags proposed a product")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = load_config(ROOT / "configs" / "default.yaml")
    lx = cfg.lexical
    print(
        "| products | tags | evidence MB | tune_fusion peak MB | seconds"
        " | reranker peak MB | seconds | reranker kept |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.products:
        inputs, vocab = _evidence(n, args.tags, args.gold, args.proposals, args.seed)
        matrices = (inputs.neural, inputs.tfidf, inputs.embedding, inputs.span_known)
        evidence = sum(m.nbytes for m in matrices) + inputs.absent.nbytes
        fusion = Fusion(None, 0.5, np.full(len(vocab), -1), None, lx.ancestor_consistency)
        (scores, _), fusion_peak, fusion_s = _traced(tune_fusion, fusion, inputs, vocab, cfg)

        kept, rerank_peak, rerank_s = _traced(_fit_reranker, inputs, vocab, fusion, scores, cfg)
        print(
            f"| {n} | {args.tags} | {evidence / 2**20:.0f} | {fusion_peak / 2**20:.0f} |"
            f" {fusion_s:.1f} | {rerank_peak / 2**20:.0f} | {rerank_s:.1f} |"
            f" {'yes' if kept else 'no'} |"
        )


if __name__ == "__main__":
    main()
