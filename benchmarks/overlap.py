#!/usr/bin/env python
"""How close held-out products come to training products, in the splits the published results use.

    .venv/bin/python benchmarks/overlap.py --json benchmarks/results/overlap.json

Two tables:
- the 5-fold cross-validation of ``benchmarks/quality.py --cv 5`` (seed 0): near-duplicate titles
  (same ``labelrec.data.near_duplicate_key``: case, digits, punctuation) stay in one fold, but
  colour, size or word-order variants do not. For each fold's test products, the character TF-IDF
  cosine of its title to the most similar training title; the share at or above 0.9 and 0.8, and
  how often that most similar training product has exactly the same tags (what copying its tags
  would get right, for every system alike);
- the held-out split of ``benchmarks/describe.py`` (myntra: 10% by a hash of the id, seed 42;
  amazon_in_sales: its valid split): held-out products whose title has the near-duplicate key of
  a training title, or whose description a training product has word for word, and ROUGE-L of the
  copy-nearest baseline on those products and on the rest.

Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelrec.config import load_config  # noqa: E402
from labelrec.data import Product, grouped_folds, near_duplicate_key, read_catalog  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
CV_CATALOGS = ("amazon_uk_toys", "amazon_in_sales", "zh_taobao")
DESCRIBE_CATALOGS = ("myntra", "amazon_in_sales")


def nearest_titles(test: list[str], train: list[str], cjk: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per test title: the highest character 2-4-gram TF-IDF cosine to a training title, and
    which training title (fitted on both lists: the vocabulary of the whole catalog)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char" if cjk else "char_wb", ngram_range=(2, 4))
    x = vectorizer.fit_transform(test + train)
    sims = x[: len(test)] @ x[len(test) :].T
    best = np.asarray(sims.argmax(axis=1)).ravel()
    return sims.max(axis=1).toarray().ravel(), best


def cv_overlap(catalog: str, data_root: Path, k: int = 5, seed: int = 0) -> dict[str, float]:
    """Means over the folds of ``quality.py --cv k``."""
    cfg = load_config(ROOT / "configs" / "default.yaml")
    products: list[Product] = []
    for split in ("train", "valid"):
        products += read_catalog(data_root / catalog / f"{split}.jsonl", cfg.data).products
    rows = []
    for held in grouped_folds(products, k, seed):
        mask = np.zeros(len(products), dtype=bool)
        mask[held] = True
        test = [p for p, m in zip(products, mask, strict=True) if m]
        train = [p for p, m in zip(products, mask, strict=True) if not m]
        cos, best = nearest_titles(
            [p.title for p in test], [p.title for p in train], cjk=catalog == "zh_taobao"
        )
        same = [set(p.tags) == set(train[j].tags) for p, j in zip(test, best, strict=True)]
        rows.append([(cos >= 0.9).mean(), (cos >= 0.8).mean(), np.mean(same)])
    share_09, share_08, same_tags = np.mean(rows, axis=0)
    return {
        "products": len(products),
        "test_title_cos_ge_0.9": float(share_09),
        "test_title_cos_ge_0.8": float(share_08),
        "nearest_has_same_tags": float(same_tags),
    }


def describe_overlap(catalog: str, data_root: Path, seed: int = 42) -> dict[str, float]:
    """The held-out products of ``benchmarks/describe.py`` that repeat a training product."""
    from describe import load_catalog, nearest_title_baseline

    from labelrec.describe import NeighbourIndex, rouge_l_scores

    train, valid = load_catalog(data_root / catalog, catalog, seed)
    train = [p for p in train if p.description.strip()]
    valid = [p for p in valid if p.description.strip()]
    keys = {near_duplicate_key(p.title) for p in train}
    texts = {p.description for p in train}
    repeat = np.array(
        [near_duplicate_key(p.title) in keys or p.description in texts for p in valid]
    )
    copied = nearest_title_baseline(NeighbourIndex.fit(train), valid)
    rouge = np.asarray(rouge_l_scores(copied, [p.description for p in valid]))
    return {
        "held_out": len(valid),
        "repeats_a_training_product": int(repeat.sum()),
        "same_description_in_train": int(sum(p.description in texts for p in valid)),
        "copy_rougeL_all": float(rouge.mean()),
        "copy_rougeL_repeats": float(rouge[repeat].mean()) if repeat.any() else float("nan"),
        "copy_rougeL_rest": float(rouge[~repeat].mean()) if (~repeat).any() else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        parser.error(f"{args.data_root} does not exist (shared catalogs live in ../shared/data)")
    cv = {c: cv_overlap(c, args.data_root) for c in CV_CATALOGS}
    print("5-fold cross-validation (quality.py --cv 5), means over the folds")
    print("| catalog | products | test titles >= 0.9 cosine | >= 0.8 | nearest has the same tags |")
    print("|---|---:|---:|---:|---:|")
    for name, r in cv.items():
        print(
            f"| {name} | {r['products']:,} | {r['test_title_cos_ge_0.9']:.3f}"
            f" | {r['test_title_cos_ge_0.8']:.3f} | {r['nearest_has_same_tags']:.3f} |"
        )
    described = {c: describe_overlap(c, args.data_root) for c in DESCRIBE_CATALOGS}
    print("\nbenchmarks/describe.py held-out products (with a description)")
    print("| catalog | held out | repeat a training product | same description | copy ROUGE-L:"
          " all | repeats | rest |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in described.items():
        print(
            f"| {name} | {r['held_out']:,} | {r['repeats_a_training_product']:,}"
            f" | {r['same_description_in_train']:,} | {r['copy_rougeL_all']:.4f}"
            f" | {r['copy_rougeL_repeats']:.4f} | {r['copy_rougeL_rest']:.4f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"cv": cv, "describe": described}, indent=1), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
