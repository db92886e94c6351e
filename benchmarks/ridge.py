#!/usr/bin/env python
"""Time and peak memory of the ridge classifier in the TF-IDF voter (``lexical.ridge``).

    .venv/bin/python benchmarks/ridge.py --products 5000 10000 20000 [--json FILE]
    .venv/bin/python benchmarks/ridge.py --data CATALOG_FILE --products 10000

Each size runs in a process of its own, so that its peak resident memory (``ru_maxrss``) is
its own: the TF-IDF vectors of that many products (``TfidfNeighbours.build``, the defaults'
n-grams), then ``fit_ridge(0.3)``, whose dense (products x products) kernel is what grows with
the square of the catalog. The products are the built-in demo catalog's (``labelrec.demo``,
English and Chinese titles with descriptions) unless ``--data`` names a catalog.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def measure(n: int, data: str | None) -> dict[str, float]:
    """One size, in this process."""
    from labelrec.data import Product, TagVocab, read_catalog
    from labelrec.demo import generate_catalog
    from labelrec.taggers.neighbours import TfidfNeighbours

    if data:
        products = read_catalog(data).products[:n]
    else:
        products = [Product(**row) for row in generate_catalog(n_products=n, seed=0)]
    vocab = TagVocab.from_products(products)
    y = vocab.encode(products)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    tagger = TfidfNeighbours.build(products, y)
    built = time.perf_counter() - start
    start = time.perf_counter()
    fitted = tagger.fit_ridge(0.3)
    ridge = time.perf_counter() - start
    return {
        "products": len(products),
        "tags": len(vocab),
        "fitted": fitted,
        "build_s": round(built, 1),
        "ridge_s": round(ridge, 1),
        "peak_mb_before": round(before),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "kernel_mb": round(len(products) ** 2 * 4 / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--data", help="a catalog file (default: the demo catalog)")
    parser.add_argument("--json", help="write the rows as JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.data)))
        return
    rows = []
    print("| products | tags | TF-IDF build s | ridge s | peak MB | dense kernel MB |")
    print("|---|---|---|---|---|---|")
    for n in args.products:
        cmd = [sys.executable, __file__, "--one", str(n)]
        if args.data:
            cmd += ["--data", args.data]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        ridge = row["ridge_s"] if row["fitted"] else "not fitted"
        print(
            f"| {row['products']:,} | {row['tags']:,} | {row['build_s']} | {ridge} "
            f"| {row['peak_mb']:,} | {row['kernel_mb']:,} |",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
