"""Where the time of tagging ONE product goes, in process: a table per stage, median ms.

Stages for each product of a catalog, one at a time (the service's /suggest at concurrency 1
without HTTP): tokenising, the model's forward pass (scores and pooled embedding) on ONNX Runtime
(what ``TagRecommender.load`` picks on the CPU) and on torch, the lexical fusion with the span
tagger (``LexicalModel.fuse_with_new``), and the whole ``TagRecommender.recommend`` (its fusion's
text-only part runs in a second thread during the forward pass). The last row runs ``recommend``
with numpy's BLAS threads left free during fusion (what labelrec did before
``predict.one_blas_thread``), to show what that costs.

Usage:
    python benchmarks/latency.py --model runs/all/amazon_uk_toys [--quantize] [--products 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "amazon_uk_toys" / "valid.jsonl"


def median_ms(fn: Callable[[int], object], n: int, warmup: int = 5) -> float:
    """Median wall time of ``fn(i)`` over ``i`` in range(n), in milliseconds."""
    for i in range(min(warmup, n)):
        fn(i)
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="catalog (.jsonl)")
    parser.add_argument("--products", type=int, default=200, help="products timed")
    parser.add_argument("--quantize", action="store_true", help="dynamic int8 (CPU)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from labelrec import predict
    from labelrec.model import score_token_ids
    from labelrec.predict import TagRecommender, as_product

    if not args.data.is_file():
        raise SystemExit(f"{args.data} does not exist (shared catalogs live in ../shared/data)")
    rec = TagRecommender.load(args.model, quantize=args.quantize)
    with args.data.open(encoding="utf-8") as fh:
        titles = [json.loads(line)["title"] for line in fh if line.strip()][: args.products]
    products = [[as_product({"title": t}, 0)] for t in titles]
    n = len(products)
    ids = [rec.encode(p) for p in products]
    need = rec.lexical is not None and rec.lexical.needs_embeddings

    def forward_with(model: object) -> Callable[[int], tuple]:
        def forward(i: int) -> tuple:
            return score_token_ids(
                model, ids[i], rec.tokenizer.pad_token_id, device=rec.device, with_embeddings=need
            )

        return forward

    forward = forward_with(rec.model if rec.runner is None else rec.runner)
    rows = [("tokenise", median_ms(lambda i: rec.encode(products[i]), n))]
    if rec.runner is not None:
        rows.append(("model forward pass, ONNX Runtime", median_ms(forward, n)))
    rows.append(("model forward pass, torch", median_ms(forward_with(rec.model), n)))
    if rec.lexical is not None:
        outputs = [forward(i) for i in range(n)]

        def fuse(i: int) -> object:
            with predict.one_blas_thread():
                return rec.lexical.fuse_with_new(products[i], *outputs[i])

        rows.append(("lexical fusion + span tagger", median_ms(fuse, n)))
    rows.append(("recommend (all of it)", median_ms(lambda i: rec.recommend(products[i]), n)))
    if rec.lexical is not None:
        with mock.patch.object(predict, "one_blas_thread", contextlib.nullcontext):
            free = median_ms(lambda i: rec.recommend(products[i]), n)
        rows.append(("recommend, BLAS threads free during fusion", free))

    import torch

    print(
        f"{args.model} ({'int8' if args.quantize else 'fp32'}), {n} titles of {args.data.name}, "
        f"one at a time; torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
    )
    print("| stage | median ms |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
