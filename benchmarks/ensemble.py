#!/usr/bin/env python
"""Two trained labelrec models as one: their final scores mixed, the mix tuned on held-out halves.

    .venv/bin/labelrec train --config configs/default.yaml train.refit=false \
        data.train=../shared/data/amazon_uk_toys/train.jsonl \
        data.valid=../shared/data/amazon_uk_toys/valid.jsonl output=runs/minilm_uk_norefit
    .venv/bin/labelrec train --config configs/llm.yaml model.backbone=google/gemma-3-270m \
        generate.enabled=false data.max_products=null train.epochs=3 \
        data.train=../shared/data/amazon_uk_toys/train.jsonl \
        data.valid=../shared/data/amazon_uk_toys/valid.jsonl output=runs/gemma_cls_uk_all
    .venv/bin/python benchmarks/ensemble.py --models runs/minilm_uk_norefit runs/gemma_cls_uk_all \
        --data ../shared/data/amazon_uk_toys/valid.jsonl

Both models must be trained without refit (``train.refit=false``), so that the products of
``--data`` (their valid split) are held out of their training. Each model scores the products
with its neural tagger, kNN and span voters and their fusion, but not its reranker: training fits
the reranker on the valid products, so its scores there are not held out. The second model's
scores are aligned to the first's vocabulary by tag name. The mix is
``(1 - w) * first + w * second``. The products are split in two halves by a seeded shuffle;
``w`` (a grid of 0.05 steps) is chosen on one half for the objective training tunes fusion
weights for ((P@1 + nDCG@3) / 2) and the rows are measured on the other half; then the halves
swap. Every product is thus reported once,
with a weight chosen without it: the table gives the metrics over all of them, and the paired
bootstrap (``labelrec.metrics.paired_bootstrap``) of the mix against each model alone. Tags
outside the vocabulary (open-vocabulary suggestions) are left out of every row; gold tags the
first model does not know count as misses, as in ``labelrec eval``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)
COLUMNS = ("P@1", "P@3", "nDCG@3", "PSP@5")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs=2, type=Path, required=True, metavar=("FIRST", "SECOND"))
    p.add_argument("--data", type=Path, required=True, help="labelled products held out of both")
    p.add_argument("--seed", type=int, default=0, help="the shuffle that makes the two halves")
    p.add_argument("--json", type=Path, help="write the table's numbers here")
    return p.parse_args(argv)


def aligned(scores: np.ndarray, tags: list[str], to: list[str]) -> np.ndarray:
    """``scores`` over ``tags`` as columns of the vocabulary ``to`` (0 where a tag is missing)."""
    index = {t: j for j, t in enumerate(tags)}
    out = np.zeros((scores.shape[0], len(to)), dtype=np.float32)
    for j, tag in enumerate(to):
        k = index.get(tag)
        if k is not None:
            out[:, j] = scores[:, k]
    return out


def choose_weight(y: object, first: np.ndarray, second: np.ndarray) -> float:
    """The grid weight of ``second`` with the best (P@1 + nDCG@3) / 2 on these products."""
    from labelrec.metrics import objective

    values = [objective(y, (1 - w) * first + w * second) for w in GRID]
    return float(GRID[int(np.argmax(values))])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from labelrec.config import ConfigError, load_config
    from labelrec.data import read_catalog
    from labelrec.evaluate import evaluate_scores_on, gold_matrix
    from labelrec.metrics import paired_bootstrap
    from labelrec.model import read_info
    from labelrec.predict import TagRecommender

    for model in args.models:
        if not (model / "labelrec.json").is_file():
            raise SystemExit(f"{model}: not a labelrec model directory (no labelrec.json)")
        if read_info(model).get("refit"):
            raise SystemExit(
                f"{model} was refit on train + valid (train.refit); its scores on {args.data} "
                "would not be held out: train it with train.refit=false"
            )
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such file")
    try:
        products = read_catalog(args.data, load_config(None, []).data).products
    except (ConfigError, ValueError) as err:
        raise SystemExit(str(err)) from None

    scored, seconds = [], []
    for model in args.models:
        t0 = time.perf_counter()
        rec = TagRecommender.load(model, rerank=False)  # fitted on these products
        scores, _ = rec.score(products)
        seconds.append(time.perf_counter() - t0)
        scored.append((rec, np.asarray(scores, dtype=np.float32)))
        print(f"{model}: scored {len(products)} products in {seconds[-1]:.0f} s", file=sys.stderr)
    (first_rec, first), (second_rec, second_raw) = scored
    tags = first_rec.tags
    second = aligned(second_raw, second_rec.tags, tags)
    y, _ = gold_matrix(products, first_rec.vocab)
    y = y.tocsr()
    n_known = len(tags)

    order = np.random.default_rng(args.seed).permutation(len(products))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    mixed = np.empty_like(first)
    weights = []
    for tune, report in (halves, halves[::-1]):
        y_tune = y[tune][:, :n_known]
        w = choose_weight(y_tune, first[tune], second[tune])
        weights.append(w)
        mixed[report] = (1 - w) * first[report] + w * second[report]

    vocab = first_rec.vocab
    rows = {
        f"{args.models[0]}": first,
        f"{args.models[1]}": second,
        "mixed (weight of the second tuned on the other half)": mixed,
    }
    results = {name: evaluate_scores_on(s, products, vocab, 0.5) for name, s in rows.items()}
    print(
        f"\n{args.data}: {len(products)} products in two halves (seed {args.seed}); the weight of"
        f" the second model chosen on one half and applied to the other: {weights[0]:.2f} /"
        f" {weights[1]:.2f}\n"
    )
    print("| system | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, ev in results.items():
        print(f"| {name} | " + " | ".join(f"{ev.metrics[c]:.4f}" for c in COLUMNS) + " |")
    mix = results["mixed (weight of the second tuned on the other half)"].per_product
    out = {"weights": weights, "seconds": seconds, "rows": {}, "paired": {}, "models": {}}
    for model in args.models:  # what each row's model was, should its folder be trained again
        info = read_info(model)
        kept = ("backbone", "lora_adapters", "best_epoch", "train_source")
        out["models"][str(model)] = {key: info.get(key) for key in kept}
        out["models"][str(model)]["valid_metrics"] = {
            k: info.get("valid_metrics", {}).get(k) for k in ("P@1", "nDCG@3")
        }
    print("\nmixed minus each model alone, paired bootstrap over products (points, 95% interval):")
    for name in list(rows)[:2]:
        alone = results[name].per_product
        for metric in ("P@1", "nDCG@3"):
            b = paired_bootstrap(mix[metric], alone[metric])
            out["paired"][f"{name} {metric}"] = b
            print(
                f"  {metric} vs {name}: {100 * b['mean_diff']:+.2f}"
                f" ({100 * b['low']:+.2f} to {100 * b['high']:+.2f})"
            )
    for name, ev in results.items():
        out["rows"][name] = {c: ev.metrics[c] for c in COLUMNS}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
