#!/usr/bin/env python
"""Peak memory of ``TagRecommender.suggest`` (what the MLflow model's ``predict``, the Python API
and the MLflow evaluator run) on lists of ``--products`` products, each list in a fresh
interpreter, against the model's load alone.

    .venv/bin/python benchmarks/suggest_memory.py --model runs/zh_tf2 \
        --data ../shared/data/zh_taobao/train.jsonl --products 1000 4000 8000

``--data``'s titles and descriptions, read with the model's data settings, repeated in order
to reach each size. ``--chunk N`` scores N products at a time instead of
``predict.SCORE_CHUNK`` (``--chunk 1000000000``: every product at once). Prints one row a
size: products, tags of the model, the peak resident set size of the load alone and with the
suggestions (``VmHWM``, as benchmarks/memory.py reads it; a load first, unmeasured, caches
the model's ONNX graph), what the suggestions added, and the seconds they took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import peak_rss

SCRIPT = """
import sys, time
from itertools import islice, cycle
import labelrec.predict as predict
from labelrec.config import model_data_config
from labelrec.data import iter_catalog
from labelrec.opener import open_tagger

model, data, n, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = open_tagger(model)
if n:
    if chunk:
        predict.SCORE_CHUNK = chunk
    products = [p for c in iter_catalog(data, model_data_config(rec.info, None)) for p in c]
    items = list(islice(cycle(products), n))
    start = time.perf_counter()
    rec.suggest(items, limit=10)
    print("seconds", time.perf_counter() - start)
print("tags", len(rec.vocab))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True, help="a model directory or MLflow URI")
    parser.add_argument("--data", required=True, help="a catalog file: its products' texts")
    parser.add_argument("--products", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--chunk", type=int, default=0, help="products at a time (0: labelrec's)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "run.log"

        def run(n: int) -> tuple[int, dict[str, str]]:
            peak, _ = peak_rss(["-c", SCRIPT, args.model, args.data, str(n), str(args.chunk)], log)
            lines = log.read_text(encoding="utf-8").splitlines()
            return peak, dict(
                line.split(" ", 1) for line in lines if line.startswith(("seconds", "tags"))
            )

        run(0)  # a model's first load exports its ONNX graph (cached): not what is measured
        loaded, _ = run(0)
        print("| products | tags | load MB | load + suggest MB | suggest added MB | seconds |")
        print("|---|---|---|---|---|---|")
        for n in args.products:
            peak, out = run(n)
            print(
                f"| {n} | {out['tags']} | {loaded / 2**20:.0f} | {peak / 2**20:.0f} |"
                f" {(peak - loaded) / 2**20:.0f} | {float(out['seconds']):.2f} |"
            )


if __name__ == "__main__":
    main()
