"""Where a model's first tag is wrong: its wrong first tags by kind, and the most common
confusions (the wrong first tag against the product's own top-level categories).

A tag's kind: ``top level`` (a category path of one level, ``Toys``), ``deeper level``
(``Toys > Puzzles``), a facet by its prefix (``brand``), ``other`` (a free keyword), ``new``
(a tag outside the vocabulary, from the span tagger or the generator).

Usage:
    python benchmarks/errors.py --model runs/minilm_uk_norefit \
        --data ../shared/data/amazon_uk_toys/valid.jsonl [--top 15]

Score a split the model did not train on (a model trained with ``train.refit=false`` on valid).
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
from labelrec.taggers.span import joint_matrices, split_tag  # noqa: E402

SEPARATOR = " > "


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="a trained labelrec model directory or URI")
    p.add_argument("--data", type=Path, required=True, help="labelled products to score")
    p.add_argument("--top", type=int, default=15, help="confusions to list")
    p.add_argument("--no-generate", action="store_true", help="leave a tag generator out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from labelrec.predict import TagRecommender

    rec = TagRecommender.load(args.model, generate=not args.no_generate)
    products = read_catalog(args.data).products
    scores, new = rec.score(products)
    first = first_tags(scores, new, products, rec.vocab)
    separator = rec.fusion.separator if rec.fusion is not None else SEPARATOR
    kinds, pairs = first_tag_errors(first, products, separator)
    wrong = sum(kinds.values())
    print(f"{args.data}: first tag wrong for {wrong} of {len(products)} products\n")
    print("| kind of the wrong first tag | products |\n|---|---:|")
    for kind, n in kinds.most_common():
        print(f"| {kind} | {n} |")
    print("\n| wrong first tag | the product's top-level tags | products |\n|---|---|---:|")
    for (tag, tops), n in pairs.most_common(args.top):
        print(f"| {tag} | {tops} | {n} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
