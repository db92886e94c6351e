"""Where a model's first tag is wrong: its wrong first tags by kind, the most common
confusions (the wrong first tag against the product's own top-level categories), and P@1 by how
many training products share the product's deepest category path (the model's tag counts: a
category the training products never had counts 0).

A tag's kind: ``top level`` (a category path of one level, ``Toys``), ``deeper level``
(``Toys > Puzzles``), a facet by its prefix (``brand``), ``other`` (a free keyword), ``new``
(a tag outside the vocabulary, from the span tagger or the generator).

Usage:
    python benchmarks/errors.py --model runs/minilm_uk_norefit \
        --data ../shared/data/amazon_uk_toys/valid.jsonl [--top 15]
    python benchmarks/errors.py --cv-dir runs/cv/amazon_in_sales-cv5

Score a split the model did not train on (a model trained with ``train.refit=false`` on valid).
``--cv-dir`` sums the tables over the folds of ``benchmarks/quality.py --cv`` (each
``foldF/labelrec`` on its ``foldF/test.jsonl``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelrec.data import Product, TagVocab, read_catalog  # noqa: E402
from labelrec.evaluate import joint_matrices  # noqa: E402
from labelrec.taggers.span import split_tag  # noqa: E402

SEPARATOR = " > "
COUNT_BINS = ((0, 0), (1, 1), (2, 4), (5, None))  # training products of the deepest category


def tag_kind(tag: str, known: bool = True, separator: str | None = SEPARATOR) -> str:
    """The kind of a tag (see the module); facets are the span tagger's tag prefixes."""
    if not known:
        return "new"
    if separator and separator in tag:
        return "deeper level"
    prefix, _ = split_tag(tag)
    if prefix:
        return prefix.rstrip(":")
    return "other" if tag[:1].islower() else "top level"


def first_tag_errors(
    first: Sequence[tuple[str, bool]],
    products: Sequence[Product],
    separator: str | None = SEPARATOR,
) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """(wrong first tags by kind, (wrong first tag, the product's top-level tags) pairs) for
    each product's first tag ``(tag, known)``."""
    kinds: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for (tag, known), product in zip(first, products, strict=True):
        if tag in product.tags:
            continue
        kinds[tag_kind(tag, known, separator)] += 1
        tops = sorted(t for t in product.tags if tag_kind(t, True, separator) == "top level")
        pairs[(tag, ", ".join(tops) or "-")] += 1
    return kinds, pairs


def first_tags(
    scores: np.ndarray, new: list[dict[str, float]], products: list[Product], vocab: TagVocab
) -> list[tuple[str, bool]]:
    """The best tag of each product, known or new, ranked as P@1 ranks them (known and new tags
    together, ``joint_matrices``): ``(tag, known)``."""
    _, joint, names = joint_matrices(scores, new, products, vocab)
    best = [names[j] for j in np.argmax(joint, axis=1)]
    return [(tag, tag in vocab.index) for tag in best]


def deepest_category(product: Product, separator: str | None = SEPARATOR) -> str | None:
    """The product's category path with the most levels (the first of equals), None without
    category paths."""
    paths = [
        t for t in product.tags if tag_kind(t, True, separator) in ("top level", "deeper level")
    ]
    if not paths:
        return None
    return max(paths, key=lambda t: t.count(separator) if separator else 0)


def by_category_count(
    first: Sequence[tuple[str, bool]],
    products: Sequence[Product],
    vocab: TagVocab,
    separator: str | None = SEPARATOR,
) -> Counter[tuple[str, bool]]:
    """(bin of ``COUNT_BINS``, first tag right) -> products, binned by the training count
    (``vocab.counts``) of each product's deepest category; ``no category path`` for the rest."""
    out: Counter[tuple[str, bool]] = Counter()
    for (tag, _), product in zip(first, products, strict=True):
        deepest = deepest_category(product, separator)
        if deepest is None:
            label = "no category path"
        else:
            j = vocab.index.get(deepest)
            n = int(vocab.counts[j]) if j is not None else 0
            label = next(
                bin_label(lo, hi) for lo, hi in COUNT_BINS if n >= lo and (hi is None or n <= hi)
            )
        out[(label, tag in product.tags)] += 1
    return out


def bin_label(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"{lo} or more"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="a trained labelrec model directory or URI")
    p.add_argument("--data", type=Path, help="labelled products to score")
    p.add_argument("--cv-dir", type=Path, help="the folds of quality.py --cv: every foldF")
    p.add_argument("--top", type=int, default=15, help="confusions to list")
    p.add_argument("--no-generate", action="store_true", help="leave a tag generator out")
    args = p.parse_args(argv)
    if bool(args.cv_dir) == bool(args.model or args.data):
        p.error("give --model and --data, or --cv-dir")
    if bool(args.model) != bool(args.data):
        p.error("--model and --data go together")
    return args


def pairs_to_score(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(model, labelled products) to score: one pair, or one per fold of ``--cv-dir``."""
    if not args.cv_dir:
        return [(args.model, args.data)]
    folds = sorted(args.cv_dir.glob("fold*/test.jsonl"))
    if not folds:
        raise SystemExit(f"{args.cv_dir}: no foldF/test.jsonl (written by quality.py --cv)")
    gone = [f.parent.name for f in folds if not (f.parent / "labelrec").is_dir()]
    if gone:
        raise SystemExit(
            f"{args.cv_dir}: no labelrec model in {', '.join(gone)} (quality.py --discard-models"
            " deletes them once scored): run those folds again without it"
        )
    return [(str(f.parent / "labelrec"), f) for f in folds]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from labelrec.predict import TagRecommender

    kinds: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    counts: Counter[tuple[str, bool]] = Counter()
    total = 0
    for model, data in pairs_to_score(args):
        rec = TagRecommender.load(model, generate=not args.no_generate)
        products = read_catalog(data).products
        scores, new = rec.score(products)
        first = first_tags(scores, new, products, rec.vocab)
        separator = rec.fusion.separator if rec.fusion is not None else SEPARATOR
        k, p = first_tag_errors(first, products, separator)
        kinds.update(k)
        pairs.update(p)
        counts.update(by_category_count(first, products, rec.vocab, separator))
        total += len(products)
    wrong = sum(kinds.values())
    print(f"{args.cv_dir or args.data}: first tag wrong for {wrong} of {total} products\n")
    print("| kind of the wrong first tag | products |\n|---|---:|")
    for kind, n in kinds.most_common():
        print(f"| {kind} | {n} |")
    print("\n| wrong first tag | the product's top-level tags | products |\n|---|---|---:|")
    for (tag, tops), n in pairs.most_common(args.top):
        print(f"| {tag} | {tops} | {n} |")
    print(
        "\n| training products of its deepest category | products | first tag wrong | P@1 |"
        "\n|---|---:|---:|---:|"
    )
    labels = [bin_label(lo, hi) for lo, hi in COUNT_BINS] + ["no category path"]
    for label in labels:
        right, bad = counts[(label, True)], counts[(label, False)]
        if right + bad:
            print(f"| {label} | {right + bad} | {bad} | {right / (right + bad):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
