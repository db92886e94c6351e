#!/usr/bin/env python
"""The TF-IDF neighbour voter alone over a grid of ``lexical.k`` and ``lexical.power``.

    .venv/bin/python benchmarks/neighbours.py --catalogs amazon_uk_toys amazon_in_sales zh_taobao

Fits the voter (``labelrec.taggers.TfidfNeighbours``: the configuration's n-grams and
description setting, ``--set a.b=value`` to change them) on each catalog's train split and
scores its valid split once per grid point: the tag share of the ``k`` most similar training
products, each weighted by its cosine similarity to the power ``power`` (one similarity matrix
for the whole grid). Prints P@1 and nDCG@3 of the voter's ranking per grid point, over the tags
of the training vocabulary (a gold tag outside it is left out, as the fusion's tuning scores a
voter: P@1 counts a product without a known gold tag as a miss, nDCG@3 leaves it out); ``*``
marks the configuration's setting, and the best objective ((P@1 + nDCG@3) / 2, what the fusion
weights are tuned for) is in bold. It measures the voter, not the fused model (docs/results.md,
"The neighbour voters' k and power"). Needs ``../shared/data`` (or ``--data-root``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from labelrec import metrics  # noqa: E402
from labelrec.config import load_config  # noqa: E402
from labelrec.data import TagVocab, read_catalog  # noqa: E402
from labelrec.taggers.neighbours import (  # noqa: E402
    TfidfNeighbours,
    neighbour_vote,
    similarities,
)

DEFAULT_DATA = ROOT.parent / "shared" / "data"


def grid_scores(
    folder: Path, ks: list[int], powers: list[float], overrides: list[str] | None = None
) -> dict[tuple[int, float], tuple[float, float]]:
    """(P@1, nDCG@3) of the voter fitted on ``folder/train.jsonl`` over ``folder/valid.jsonl``
    for each (k, power); the voter's other settings from the configuration (``overrides``)."""
    cfg = load_config(None, list(overrides or []))
    lx = cfg.lexical
    train = read_catalog(folder / "train.jsonl", cfg.data).products
    valid = read_catalog(folder / "valid.jsonl", cfg.data).products
    vocab = TagVocab.from_products(train, cfg.data.min_tag_count)
    voter = TfidfNeighbours.build(  # the neighbours alone: no ridge, k and power below
        train,
        vocab.encode(train),
        word_ngram_max=lx.word_ngram_max,
        char_ngrams=(lx.char_ngram_min, lx.char_ngram_max),
        max_features=lx.max_features,
        use_description=lx.use_description,
    )
    sim = similarities(voter.transform(valid), voter.x_train_t)
    y = vocab.encode(valid)
    out = {}
    for k in ks:
        for power in powers:
            scores = neighbour_vote(sim, k, power, voter.y_train)
            out[(k, power)] = (
                metrics.precision_at_k(y, scores, 1),
                metrics.ndcg_at_k(y, scores, 3),
            )
    return out


def format_table(
    catalog: str, got: dict[tuple[int, float], tuple[float, float]], default: tuple[int, float]
) -> str:
    """A Markdown table: one row per k, one column per power, cells "P@1 / nDCG@3"."""
    ks = sorted({k for k, _ in got})
    powers = sorted({p for _, p in got})
    best = max(got, key=lambda key: (sum(got[key]), -key[0], -key[1]))
    head = [f"{catalog}: k", *(f"power {p:g}" for p in powers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in ks:
        cells = [str(k)]
        for p in powers:
            text = "{:.3f} / {:.3f}".format(*got[(k, p)])
            if (k, p) == best:
                text = f"**{text}**"
            cells.append(text + (" *" if (k, p) == default else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogs", nargs="+", required=True)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 30, 100, 200])
    parser.add_argument("--power", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="A.B=VALUE",
        help="a configuration override (repeatable), e.g. lexical.use_description=false",
    )
    args = parser.parse_args(argv)
    lx = load_config(None, args.set).lexical
    folders = [args.data_root / catalog for catalog in args.catalogs]
    for folder in folders:
        if not (folder / "train.jsonl").is_file() or not (folder / "valid.jsonl").is_file():
            print(f"neighbours.py: {folder}: no train.jsonl and valid.jsonl", file=sys.stderr)
            return 2
    for i, (catalog, folder) in enumerate(zip(args.catalogs, folders, strict=True)):
        got = grid_scores(folder, args.k, args.power, args.set)
        print(("\n" if i else "") + format_table(catalog, got, (lx.k, lx.power)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
