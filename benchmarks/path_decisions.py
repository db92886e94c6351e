#!/usr/bin/env python
"""Decisions on category paths: a path under a parent that missed its own threshold.

    .venv/bin/labelrec train --config configs/default.yaml \\
        data.train=../shared/data/amazon_uk_toys/train.jsonl train.refit=false \\
        train.tuning_folds=1 output=runs/paths_uk
    .venv/bin/python benchmarks/path_decisions.py runs/paths_uk \\
        ../shared/data/amazon_uk_toys/valid.jsonl [--json FILE]

Per-tag thresholds are tuned tag by tag, and a parent's is often above its child's: a score
between the two passes the child alone (``Toys > Kites`` without ``Toys``). The model is trained
on the training split alone (its thresholds tuned on a part of it, ``data.valid`` unset), so
the catalog given here is held out from every choice. Three rules decide the same scores at the
same thresholds: each tag alone; a path only under a decided parent (the model's rule,
``taxonomy.consistent_decisions``); a decided path adding the parents that missed. The table:
micro precision, recall and F1 over the vocabulary's tags (new tags left out: the same for all
three), the decisions made and the paths decided without their parent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from labelrec import metrics  # noqa: E402
from labelrec.data import read_catalog  # noqa: E402
from labelrec.evaluate import gold_matrix  # noqa: E402
from labelrec.predict import TagRecommender  # noqa: E402
from labelrec.taxonomy import consistent_decisions  # noqa: E402


def with_parents(passed: np.ndarray, parents: np.ndarray, plan) -> np.ndarray:
    """``passed`` with the parent of every decided path decided too, deepest first."""
    out = passed.copy()
    for children, _, _ in plan:  # deepest level first
        for child in children:
            out[:, parents[child]] |= out[:, child]
    return out


def orphans(passed: np.ndarray, parents: np.ndarray) -> int:
    """Decided paths whose parent is not decided."""
    has = parents >= 0
    return int((passed[:, has] & ~passed[:, parents[has]]).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a trained model directory")
    parser.add_argument("catalog", type=Path, help="held-out products with their tags")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    rec = TagRecommender.load(args.model)
    if rec.hierarchy is None:
        print(f"{args.model}: no category paths kept consistent (ancestor consistency off)")
        return 1
    parents, plan = rec.hierarchy
    products = read_catalog(args.catalog).products
    scores, _ = rec.score(products)
    y = gold_matrix(products, rec.vocab)[0][:, : len(rec.vocab)]  # the vocabulary's tags
    alone = scores >= rec.tag_thresholds
    rules = {
        "each tag alone": alone,
        "a path only under a decided parent (labelrec)": consistent_decisions(
            alone.copy(), parents, plan
        ),
        "a decided path adds its parents": with_parents(alone, parents, plan),
    }
    rows = []
    for name, passed in rules.items():
        f1 = metrics.f1_scores(y, passed)
        rows.append(
            {
                "rule": name,
                "micro_precision": f1["micro_precision"],
                "micro_recall": f1["micro_recall"],
                "micro_f1": f1["micro_f1"],
                "decisions": int(passed.sum()),
                "paths without their parent": orphans(passed, parents),
            }
        )
    print(f"{args.catalog} ({len(products)} products), model {args.model}")
    print("| rule | micro P | micro R | micro F1 | decisions | paths without their parent |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rule']} | {r['micro_precision']:.4f} | {r['micro_recall']:.4f} |"
            f" {r['micro_f1']:.4f} | {r['decisions']} | {r['paths without their parent']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
