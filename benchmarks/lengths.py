#!/usr/bin/env python
"""How long the products of a catalog are in model tokens: title [SEP] description as the
tagger encodes them (``labelrec.model.encode_products``), before ``model.max_length`` cuts them.

    .venv/bin/python benchmarks/lengths.py --catalogs amazon_in_sales amazon_uk_toys zh_taobao

Prints, for the train + valid products of each catalog, the median and 90th percentile of the
number of tokens and the share longer than each of ``--limits`` (128 and 256: what
``model.max_length`` keeps). The default tokenizer is the default backbone's (all-MiniLM-L6-v2).
Needs ``../shared/data`` (or ``--data-root``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from labelrec.config import load_config  # noqa: E402
from labelrec.data import read_catalog  # noqa: E402
from labelrec.model import encode_products, load_tokenizer, resolve_backbone  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
NO_LIMIT = 1_000_000  # tokens: no product is cut


def token_counts(
    tokenizer, folder: Path, splits: tuple[str, ...] = ("train", "valid")
) -> np.ndarray:
    """Tokens of each product in ``folder``'s ``splits`` (JSON lines), special tokens included."""
    data = load_config(None, []).data
    products = [
        p for split in splits for p in read_catalog(folder / f"{split}.jsonl", data).products
    ]
    ids = encode_products(
        tokenizer, [p.title for p in products], [p.description for p in products], NO_LIMIT
    )
    return np.array([len(row) for row in ids])


def format_table(rows: list[tuple[str, np.ndarray]], limits: list[int]) -> str:
    """A Markdown table: catalog, products, median, p90, share over each limit."""
    head = ["catalog", "products", "median tokens", "p90", *[f"over {n}" for n in limits]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, counts in rows:
        cells = [name, f"{len(counts):,}", f"{np.median(counts):.0f}"]
        cells.append(f"{np.percentile(counts, 90):.0f}")
        cells += [f"{np.mean(counts > n):.0%}" for n in limits]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogs", nargs="+", required=True)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbone", default=None, help="tokenizer (default: model.backbone's)")
    parser.add_argument("--limits", type=int, nargs="+", default=[128, 256])
    args = parser.parse_args(argv)
    backbone = args.backbone or load_config(None, []).model.backbone
    tokenizer = load_tokenizer(resolve_backbone(backbone))
    rows = []
    for catalog in args.catalogs:
        folder = args.data_root / catalog
        if not folder.is_dir():
            print(f"lengths.py: {folder}: no such catalog folder", file=sys.stderr)
            return 2
        rows.append((catalog, token_counts(tokenizer, folder)))
    print(format_table(rows, args.limits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
