#!/usr/bin/env python
"""Time of ancestor consistency (``taxonomy.ancestor_consistent``) on a catalog's category paths.

    .venv/bin/python benchmarks/hierarchy.py --catalog amazon_uk_toys [--json FILE]
    .venv/bin/python benchmarks/hierarchy.py --data CATALOG_FILE

The tags of the catalog's training split give the parent links (``data.category_separator``);
scores are random. Each row of the table times one call on a matrix of ROWS products: the
service's /suggest scores one product a call, /suggest_batch and scoring a file a list, tuning
the fusion a whole pooled training set at every grid point. "kept" passes what the fusion keeps
between calls (``ancestor_plan(parents)``; a checkout without it keeps ``tag_depth(parents)``),
"built" leaves the call to derive it. Run with ``PYTHONPATH=<another checkout>`` to time that
checkout's code on the same scores.

Needs ``../shared/data`` unless ``--data`` names a catalog file.
"""

from __future__ import annotations

import argparse
import json
import timeit
from pathlib import Path

import numpy as np

from labelrec import taxonomy
from labelrec.data import TagVocab, read_catalog

try:
    from labelrec.taxonomy import ancestor_plan
except ImportError:  # a checkout without it keeps tag_depth between calls instead
    from labelrec.taxonomy import tag_depth as ancestor_plan

ROOT = Path(__file__).resolve().parents[1]

ROWS = (1, 64, 6000)


def best_us(fn, number: int) -> float:
    """Best of five repeats of ``number`` calls, in microseconds a call."""
    return 1e6 * min(timeit.repeat(fn, number=number, repeat=5)) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", default="amazon_uk_toys")
    parser.add_argument("--data", type=Path, help="a catalog file instead of CATALOG/train.jsonl")
    parser.add_argument("--separator", default=" > ")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    path = args.data or ROOT.parent / "shared" / "data" / args.catalog / "train.jsonl"
    name = args.data.name if args.data else args.catalog
    if not path.exists():
        raise SystemExit(f"{path} does not exist (shared catalogs live in ../shared/data)")
    vocab = TagVocab.from_products(read_catalog(path).products)
    parents = taxonomy.parent_index(vocab.tags, args.separator)
    kept, keeps = ancestor_plan(parents), ancestor_plan.__name__
    rng = np.random.default_rng(0)
    rows = []
    for n in ROWS:
        scores = rng.random((n, len(vocab)), dtype=np.float32)
        reference = taxonomy.ancestor_consistent(scores, parents)
        np.testing.assert_array_equal(
            taxonomy.ancestor_consistent(scores, parents, kept), reference
        )
        number = max(1, 2000 // n)
        rows.append(
            {
                "rows": n,
                "kept_us": best_us(
                    lambda s=scores: taxonomy.ancestor_consistent(s, parents, kept), number
                ),
                "built_us": best_us(
                    lambda s=scores: taxonomy.ancestor_consistent(s, parents), number
                ),
            }
        )
    depth = int(taxonomy.tag_depth(parents).max()) if len(parents) else 0
    print(
        f"{name}: {len(vocab)} tags, {int((parents >= 0).sum())} with a parent, "
        f"{depth + 1} levels; kept between calls: {keeps}"
    )
    print("| rows | kept, µs a call | built, µs a call |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['rows']} | {row['kept_us']:.0f} | {row['built_us']:.0f} |")
    if args.json:
        args.json.write_text(
            json.dumps({"catalog": name, "keeps": keeps, "rows": rows}, indent=1) + "\n",
            "utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
