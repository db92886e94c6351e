#!/usr/bin/env python
"""Peak memory of ``TagRecommender.suggest`` (what the MLflow model's ``predict``, the Python API
and the MLflow evaluator run) on lists of ``--products`` products, each list in a fresh
interpreter, against the model's load alone; with ``--eval``, of the evaluation that
``labelrec eval`` and the MLflow evaluate step run on them instead.

    .venv/bin/python benchmarks/suggest_memory.py --model runs/zh_tf2 \
        --data ../shared/data/zh_taobao/train.jsonl --products 1000 4000 8000

    .venv/bin/python benchmarks/suggest_memory.py --eval --model runs/zh_tf2 \
        --data ../shared/data/zh_taobao/train.jsonl --products 1000 4000 8000

``--data``'s products, read with the model's data settings, repeated in order to reach each
size. ``--chunk N`` scores N products at a time instead of ``predict.SCORE_CHUNK``
(``--chunk 1000000000``: every product at once). ``--eval --matrix`` gathers the scores of
every product in one matrix (``TagRecommender.score``), then evaluates it
(``evaluate.evaluate_scores_on``), as training evaluates its valid products; it runs on
labelrec of any age.
Prints one row a size: products, tags of the model, the peak resident set size of the load
alone and with the work (``VmHWM``, as benchmarks/memory.py reads it; a load first,
unmeasured, caches the model's ONNX graph), what the work added, and the seconds it took.
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

model, data, task = sys.argv[1], sys.argv[2], sys.argv[5]
n, chunk = int(sys.argv[3]), int(sys.argv[4])
rec = open_tagger(model)
if n:
    if chunk:
        predict.SCORE_CHUNK = chunk
    products = [p for c in iter_catalog(data, model_data_config(rec.info, None)) for p in c]
    items = list(islice(cycle(products), n))
    start = time.perf_counter()
    if task == "suggest":
        rec.suggest(items, limit=10)
    elif task == "matrix":  # every score in one matrix
        from labelrec.evaluate import evaluate_scores_on

        scores, new = rec.score(items)
        evaluate_scores_on(
            scores, items, rec.vocab, rec.thresholds(None), new_tags=new,
            new_threshold=rec.new_tag_threshold, hierarchy=rec.hierarchy,
        )
    else:  # as labelrec eval: a part at a time
        from labelrec.evaluate import EvaluationStream

        stream = EvaluationStream.for_model(rec, items)
        for scores, new in rec.score_parts(items):
            stream.add(scores, new)
        stream.result()
    print("seconds", time.perf_counter() - start)
print("tags", len(rec.vocab))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True, help="a model directory or MLflow URI")
    parser.add_argument("--data", required=True, help="a catalog file: its products' texts")
    parser.add_argument("--products", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--chunk", type=int, default=0, help="products at a time (0: labelrec's)")
    parser.add_argument(
        "--eval", action="store_true", help="evaluate the products (--data with tags)"
    )
    parser.add_argument(
        "--matrix", action="store_true", help="with --eval: every score in one matrix first"
    )
    args = parser.parse_args(argv)
    if args.matrix and not args.eval:
        parser.error("--matrix is a way to --eval")
    task = ("matrix" if args.matrix else "eval") if args.eval else "suggest"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "run.log"

        def run(n: int) -> tuple[int, dict[str, str]]:
            script = ["-c", SCRIPT, args.model, args.data, str(n), str(args.chunk), task]
            peak, _ = peak_rss(script, log)
            lines = log.read_text(encoding="utf-8").splitlines()
            return peak, dict(
                line.split(" ", 1) for line in lines if line.startswith(("seconds", "tags"))
            )

        run(0)  # a model's first load exports its ONNX graph (cached): not what is measured
        loaded, _ = run(0)
        work = "eval" if args.eval else "suggest"
        print(f"| products | tags | load MB | load + {work} MB | {work} added MB | seconds |")
        print("|---|---|---|---|---|---|")
        for n in args.products:
            peak, out = run(n)
            print(
                f"| {n} | {out['tags']} | {loaded / 2**20:.0f} | {peak / 2**20:.0f} |"
                f" {(peak - loaded) / 2**20:.0f} | {float(out['seconds']):.2f} |"
            )


if __name__ == "__main__":
    main()
