#!/usr/bin/env python
"""The neighbour voters alone over a grid of k and power: TF-IDF, or a model's embeddings.

    .venv/bin/python benchmarks/neighbours.py --catalogs amazon_uk_toys amazon_in_sales zh_taobao
    .venv/bin/python benchmarks/neighbours.py --catalogs amazon_uk_toys --models runs/emb_uk

Fits the TF-IDF voter (``labelrec.taggers.TfidfNeighbours``: the configuration's n-grams and
description setting, ``--set a.b=value`` to change them) on each catalog's train split and
scores its valid split once per grid point of ``lexical.k`` and ``lexical.power``: the tag share
of the ``k`` most similar training products, each weighted by its cosine similarity to the power
``power`` (one similarity matrix for the whole grid). With ``--models`` (one per catalog, each
trained on its catalog's train split without refit, ``train.refit=false``) it scores each
model's embedding voter instead (``labelrec.taggers.EmbeddingNeighbours``,
``lexical.embedding_k`` and ``lexical.embedding_power``): its saved training products'
embeddings and tags, valid read as the model reads a catalog and embedded by it. Prints P@1 and
nDCG@3 of the voter's ranking per grid point, over the tags of the training vocabulary (a gold
tag outside it is left out, as the fusion's tuning scores a voter: P@1 counts a product without
a known gold tag as a miss, nDCG@3 leaves it out); ``*`` marks the configuration's setting (the
model's, with ``--models``), and the best objective ((P@1 + nDCG@3) / 2, what the fusion
weights are tuned for) is in bold. It measures the voter, not the fused model
(docs/results.md, "The neighbour voters' k and power"). Needs ``../shared/data`` (or
``--data-root``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from labelrec import metrics  # noqa: E402
from labelrec.config import load_config  # noqa: E402
from labelrec.data import TagVocab, read_catalog  # noqa: E402
from labelrec.taggers.neighbours import (  # noqa: E402
    TfidfNeighbours,
    neighbour_vote,
    similarities,
    unit_rows,
)

DEFAULT_DATA = ROOT.parent / "shared" / "data"


def vote_grid(
    sim: np.ndarray, y: Any, y_train: Any, ks: list[int], powers: list[float]
) -> dict[tuple[int, float], tuple[float, float]]:
    """(P@1, nDCG@3) against the gold tags ``y`` of the votes of ``y_train``'s products by
    similarity ``sim`` (valid x train), for each (k, power)."""
    out = {}
    for k in ks:
        for power in powers:
            scores = neighbour_vote(sim, k, power, y_train)
            out[(k, power)] = (
                metrics.precision_at_k(y, scores, 1),
                metrics.ndcg_at_k(y, scores, 3),
            )
    return out


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
    return vote_grid(sim, vocab.encode(valid), voter.y_train, ks, powers)


def check_model(model_dir: Path, folder: Path) -> dict:
    """The model's ``labelrec.json``; refuses a model whose embedding voter is not held out from
    ``folder/valid.jsonl``: one refit on train + valid (its neighbours are the valid products),
    or one trained on another file than ``folder/train.jsonl`` (another catalog). A
    ``ModelError`` for no model."""
    from labelrec.model import read_info

    info = read_info(model_dir)
    if info.get("refit"):
        raise ValueError(
            f"{model_dir} was refit on train + valid (train.refit): its neighbours include the"
            " valid products; train it with train.refit=false"
        )
    source = Path(str(info.get("train_source", "?")))
    if (source.parent.name, source.name) != (folder.name, "train.jsonl"):
        raise ValueError(
            f"{model_dir} was trained on {source}, not on {folder.name}/train.jsonl: give each"
            " catalog a model trained on its train split"
        )
    return info


def embedding_grid_scores(
    model_dir: Path, folder: Path, ks: list[int], powers: list[float], overrides: list[str]
) -> tuple[dict[tuple[int, float], tuple[float, float]], tuple[int, float]]:
    """(P@1, nDCG@3) of the embedding voter of ``model_dir`` over ``folder/valid.jsonl`` for each
    (k, power), and the model's own (k, power). Valid is read as the model reads a catalog (its
    data settings, ``overrides`` on top) and scored over its vocabulary (``check_model``
    first)."""
    from labelrec.config import model_data_config
    from labelrec.predict import TagRecommender

    info = check_model(model_dir, folder)
    rec = TagRecommender.load(model_dir)
    if rec.fusion is None:
        raise ValueError(f"{model_dir} has no voters beside the model (lexical.enabled: false)")
    voter = rec.fusion.embedding
    if voter is None:
        raise ValueError(f"{model_dir} has no embedding voter (lexical.embedding_k: 0)")
    data = model_data_config(info, list(overrides))
    valid = read_catalog(folder / "valid.jsonl", data).products
    _, embeddings = rec.predict_scores(valid, with_embeddings=True)
    # unit rows, as the voter's own (voter.train): a norm cancels in the vote's weights, but
    # norm ** power overflows float32 at a steep power
    sim = unit_rows(np.asarray(embeddings, dtype=np.float32)) @ voter.train.T
    got = vote_grid(sim, rec.vocab.encode(valid), voter.y_train, ks, powers)
    return got, (voter.k, voter.power)


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
    parser.add_argument(
        "--models",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="score these models' embedding voters instead, one per catalog in --catalogs'"
        " order (each trained on its catalog's train split with train.refit=false)",
    )
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        help="default: 10 30 100 200; with --models: 5 10 20 30 50 100",
    )
    parser.add_argument(
        "--power",
        type=float,
        nargs="+",
        help="default: 0.5 1 2 4 8; with --models: 1 2 4 8 16 32",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="A.B=VALUE",
        help="a configuration override (repeatable), e.g. lexical.use_description=false; with"
        " --models only data settings apply, on top of each model's own",
    )
    args = parser.parse_args(argv)
    if args.models is not None and len(args.models) != len(args.catalogs):
        parser.error(f"--models: one per catalog ({len(args.catalogs)}), not {len(args.models)}")
    embedding = args.models is not None
    ks = args.k or ([5, 10, 20, 30, 50, 100] if embedding else [10, 30, 100, 200])
    powers = args.power or ([1.0, 2.0, 4.0, 8.0, 16.0, 32.0] if embedding else [0.5, 1, 2, 4, 8])
    lx = load_config(None, args.set).lexical
    folders = [args.data_root / catalog for catalog in args.catalogs]
    for folder in folders:
        if not (folder / "train.jsonl").is_file() or not (folder / "valid.jsonl").is_file():
            print(f"neighbours.py: {folder}: no train.jsonl and valid.jsonl", file=sys.stderr)
            return 2
    from labelrec.model import ModelError

    try:
        for model, folder in zip(args.models if embedding else [], folders, strict=False):
            check_model(model, folder)  # every model before any is scored
        for i, (catalog, folder) in enumerate(zip(args.catalogs, folders, strict=True)):
            if embedding:
                got, mark = embedding_grid_scores(args.models[i], folder, ks, powers, args.set)
            else:
                got, mark = grid_scores(folder, ks, powers, args.set), (lx.k, lx.power)
            print(("\n" if i else "") + format_table(catalog, got, mark), flush=True)
    except (ValueError, ModelError) as err:
        print(f"neighbours.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
