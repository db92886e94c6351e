#!/usr/bin/env python
"""Per-tag thresholds with and without shrinkage toward the global one, on cross-validation folds.

    .venv/bin/python benchmarks/quality.py --catalog amazon_in_sales --cv 5 \\
        --output-root runs/cv train.tuning_folds=1
    .venv/bin/python benchmarks/thresholds.py --catalog amazon_in_sales --cv 5 --output-root runs/cv

Reuses the models of a ``quality.py --cv`` run (refit on, the default; tuned on valid,
``train.tuning_folds=1``): in each fold the tuning run scores its inner valid split, thresholds
are tuned there with each ``--priors`` value
(``train.threshold_prior``: a tag with n valid positives gets (n t_tag + m t_global) / (n + m)),
and the refit model's scores of the fold's test products are cut with them. Prints micro and
macro F1 on the test folds, mean ± 95% interval, and the paired difference to prior 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import CATALOGS, DEFAULT_DATA, ROOT, interval, load_split  # noqa: E402

from labelrec import metrics  # noqa: E402
from labelrec.config import load_config  # noqa: E402
from labelrec.data import grouped_folds, read_catalog  # noqa: E402


def fold_scores(fold_dir: Path, test: list, cfg) -> tuple:
    """(valid labels, tuning-run valid scores, test labels, refit test scores) of one fold,
    over the refit model's vocabulary."""
    from labelrec.predict import TagRecommender

    tuning_dir = fold_dir / "labelrec" / "tuning"
    if (tuning_dir / "fold-0").is_dir():
        raise SystemExit(
            f"{tuning_dir}: tuned by folds (train.tuning_folds); this benchmark reads one tuning"
            " run on valid: run quality.py with train.tuning_folds=1"
        )
    tuning = TagRecommender.load(tuning_dir)
    final = TagRecommender.load(fold_dir / "labelrec")
    valid = read_catalog(fold_dir / "valid.jsonl", cfg.data).products
    valid_scores, _ = tuning.score(valid)
    # the tuning run's columns placed in the refit vocabulary (tags it lacks score 0)
    cols = [final.vocab.index[t] for t in tuning.vocab.tags]
    placed = np.zeros((len(valid), len(final.vocab)), dtype=np.float32)
    placed[:, cols] = valid_scores
    test_scores, _ = final.score(test)
    return final.vocab.encode(valid), placed, final.vocab.encode(test), test_scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True, choices=CATALOGS)
    parser.add_argument("--cv", type=int, default=5, metavar="K")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--output-root", type=Path, default=ROOT / "runs" / "cv")
    parser.add_argument("--priors", default="0,1,3,10,30", help="comma-separated pseudo-counts")
    args = parser.parse_args(argv)
    priors = [float(p) for p in args.priors.split(",")]
    cfg = load_config(args.config)
    products = load_split(args.data_root, args.catalog, "train", cfg) + load_split(
        args.data_root, args.catalog, "valid", cfg
    )
    results = {m: {p: [] for p in priors} for m in ("micro_f1", "macro_f1")}
    for fold, test_idx in enumerate(grouped_folds(products, args.cv, args.seed)):
        fold_dir = args.output_root / f"{args.catalog}-cv{args.cv}" / f"fold{fold + 1}"
        test = [products[i] for i in sorted(test_idx.tolist())]
        y_valid, valid_scores, y_test, test_scores = fold_scores(fold_dir, test, cfg)
        global_t = metrics.tune_global_threshold(y_valid, valid_scores)
        for prior in priors:
            per_tag = metrics.tune_tag_thresholds(y_valid, valid_scores, global_t, prior=prior)
            f1 = metrics.f1_scores(y_test, metrics.apply_thresholds(test_scores, per_tag))
            for m in results:
                results[m][prior].append(f1[m])
        print(f"fold {fold + 1}/{args.cv} done", file=sys.stderr, flush=True)
    print(f"{args.catalog}, {args.cv} folds: F1 on the test folds, mean ± 95% interval")
    print("| threshold_prior | micro_f1 | macro_f1 | micro_f1 - prior 0 (points) |")
    print("|---|---|---|---|")
    base = np.array(results["micro_f1"][priors[0]])
    for prior in priors:
        cells = ["{:.4f} ± {:.4f}".format(*interval(np.array(results[m][prior]))) for m in results]
        diff = "{:+.2f} ± {:.2f}".format(
            *interval(100 * (np.array(results["micro_f1"][prior]) - base))
        )
        print(f"| {prior:g} | " + " | ".join(cells) + f" | {diff} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
