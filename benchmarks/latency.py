"""Where the time of tagging ONE product goes, in process: a table per stage, median ms.

Stages for each product of a catalog, one at a time (the service's /suggest at concurrency 1
without HTTP): tokenising, the model's forward pass (scores and pooled embedding) on ONNX Runtime
(what ``TagRecommender.load`` picks on the CPU) and on torch, the fusion with the span tagger
(``Fusion.fuse_with_new``), and the whole ``TagRecommender.suggest`` (its fusion's text-only part
runs in a second thread during the forward pass). Three more rows run ``suggest`` another way:
with that text part after the forward pass, with the TF-IDF features weighted by scikit-learn's
``TfidfVectorizer.transform`` instead of ``TfidfFeatures.transform``'s own weighting (both
interleaved with the first, product by product), and with numpy's BLAS threads left free during
fusion (``predict.one_blas_thread``); a model with a reranker (``labelrec.rerank``) is also timed
without it, and with its trees' OpenMP threads left free (``predict.one_thread``), and a model
whose TF-IDF voter mixes in a ridge classifier (``lexical.ridge``) without it. ``--busy K``
keeps K other processes spinning on the CPU while it measures: the machine as a service under
load leaves it (the forward passes of other requests). Also printed: the load time and the
largest difference between the ONNX Runtime and torch outputs; ``--throughput`` adds products/s
of ``suggest`` on lists of 16 and of 64 products by forward batch size
(``predict.CPU_BATCH_SIZE``), and the ms per product of the fusion's text-only part on those
lists, with the TF-IDF similarities as labelrec computes them and by scipy's sparse product.

Usage:
    python benchmarks/latency.py --model runs/all/amazon_uk_toys [--quantize] [--products 200]
    python benchmarks/latency.py --model runs/all/amazon_uk_toys --products 640 --throughput
    python benchmarks/latency.py --model runs/all/amazon_uk_toys --busy 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "amazon_uk_toys" / "valid.jsonl"
THROUGHPUT_BATCHES = (4, 8, 16, 32, 64)  # forward batch sizes of --throughput


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


def interleaved_median_ms(
    fns: dict[str, Callable[[int], object]], n: int, warmup: int = 5
) -> list[tuple[str, float]]:
    """Median wall time in ms of each ``fn(i)``, all run for one ``i`` before the next."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(-min(warmup, n), n):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(i if i >= 0 else -i - 1)  # warm-up: products w-1 .. 0
            if i >= 0:
                times[name].append(time.perf_counter() - start)
    return [(name, 1000 * statistics.median(t)) for name, t in times.items()]


def _spin() -> None:
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="catalog (.jsonl)")
    parser.add_argument("--products", type=int, default=200, help="products timed")
    parser.add_argument("--quantize", action="store_true", help="dynamic int8 (CPU)")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="also: products/s of suggest on lists of 16 and 64 products, by forward batch size",
    )
    parser.add_argument(
        "--busy", type=int, default=0, help="other processes spinning on the CPU meanwhile"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from labelrec.predict import TagRecommender

    if not args.data.is_file():
        raise SystemExit(f"{args.data} does not exist (shared catalogs live in ../shared/data)")
    start = time.perf_counter()
    rec = TagRecommender.load(args.model, quantize=args.quantize)
    load_s = time.perf_counter() - start
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for proc in busy:
        proc.start()
    try:
        return measure(args, rec, load_s)
    finally:
        for proc in busy:
            proc.terminate()


def measure(args: argparse.Namespace, rec: Any, load_s: float) -> int:
    """Time ``rec`` as the module says and print the tables."""
    from labelrec import predict
    from labelrec.model import score_token_ids
    from labelrec.predict import as_product
    from labelrec.taggers.neighbours import TfidfFeatures

    with args.data.open(encoding="utf-8") as fh:
        titles = [json.loads(line)["title"] for line in fh if line.strip()][: args.products]
    products = [[as_product({"title": t}, 0)] for t in titles]
    n = len(products)
    ids = [rec.encode(p) for p in products]
    need = rec.fusion is not None and rec.fusion.needs_embeddings

    def forward_with(model: object) -> Callable[[int], tuple]:
        def forward(i: int) -> tuple:
            return score_token_ids(
                model, ids[i], rec.tokenizer.pad_token_id, device=rec.device, with_embeddings=need
            )

        return forward

    forward = forward_with(rec.model if rec.runner is None else rec.runner)
    rows = [("tokenise", median_ms(lambda i: rec.encode(products[i]), n))]
    int8 = " (int8)" if args.quantize else ""
    if rec.runner is not None:
        rows.append((f"model forward pass, ONNX Runtime{int8}", median_ms(forward, n)))
        int8 = " (float32)" if args.quantize else ""  # torch's model, built from the files
    rows.append((f"model forward pass, torch{int8}", median_ms(forward_with(rec.model), n)))
    if rec.fusion is not None:
        outputs = [forward(i) for i in range(n)]

        def fuse(i: int) -> object:
            with predict.one_blas_thread():
                return rec.fusion.fuse_with_new(products[i], *outputs[i])

        rows.append(("fusion + span tagger", median_ms(fuse, n)))
    # Two ways of running suggest, interleaved product by product so that the machine's
    # drift over time does not favour one of them.
    variants: dict[str, Callable[[int], object]] = {
        "suggest (all of it)": lambda i: rec.suggest(products[i]),
    }
    if rec.fusion is not None:

        def text_after(i: int) -> object:
            with mock.patch.object(predict, "_text_worker", _Inline):
                return rec.suggest(products[i])

        def blas_free(i: int) -> object:
            with mock.patch.object(predict, "one_blas_thread", contextlib.nullcontext):
                return rec.suggest(products[i])

        variants["suggest, fusion's text part after the forward pass, not beside it"] = text_after
        if rec.fusion.tfidf is not None:

            def sklearn_weighting(i: int) -> object:
                with mock.patch.object(TfidfFeatures, "transform", _sklearn_transform):
                    return rec.suggest(products[i])

            variants["suggest, TF-IDF weighted by scikit-learn's TfidfVectorizer.transform"] = (
                sklearn_weighting
            )
        if rec.fusion.ridge_mix > 0:

            def without_ridge(i: int) -> object:
                with mock.patch.object(rec.fusion, "ridge_mix", 0.0):
                    return rec.suggest(products[i])

            variants["suggest without the ridge classifier (the TF-IDF neighbours alone)"] = (
                without_ridge
            )
    if rec.reranker is not None:

        def without_reranker(i: int) -> object:
            with mock.patch.object(rec, "reranker", None):
                return rec.suggest(products[i])

        def openmp_free(i: int) -> object:
            with mock.patch.object(predict, "one_thread", predict.one_blas_thread):
                return rec.suggest(products[i])

        variants["suggest without the model's reranker (the fused scores final)"] = without_reranker
        variants["suggest, the reranker's OpenMP threads free"] = openmp_free
    rows += interleaved_median_ms(variants, n)
    if rec.fusion is not None:  # apart: OpenBLAS threads spin on after it, slowing what follows
        rows.append(("suggest, BLAS threads free during fusion", median_ms(blas_free, n)))

    import torch

    print(
        f"{args.model} ({'int8' if args.quantize else 'fp32'}), {n} titles of {args.data.name}, "
        f"one at a time; torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"{args.busy} other processes spinning"
    )
    graph = (
        ""
        if rec.runner is None
        else (", ONNX graph " + ("cached" if rec.runner.cached else "exported"))
    )
    print(f"model loaded in {load_s:.1f} s (backend {rec.backend}{graph})")
    if rec.runner is not None:
        torch_forward = forward_with(rec.model)
        diff = max(
            float(np.abs(a - b).max())
            for i in range(n)
            for a, b in zip(forward(i), torch_forward(i), strict=True)
            if a is not None
        )
        int8 = " (int8) - torch (float32)" if args.quantize else " - torch"
        print(f"largest difference ONNX Runtime{int8} (scores, embeddings): {diff:.1e}")
    print("| stage | median ms |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")
    if args.throughput:
        sizes = (16, 64)  # 16: about what /suggest's shared passes hold at concurrency 32
        lists_of = " and ".join(map(str, sizes))
        print(f"\nsuggest on {len(titles)} titles in lists of {lists_of}, by forward batch size")
        print("| forward batch | " + " | ".join(f"lists of {k}, products/s" for k in sizes) + " |")
        print("|---:|" + "---:|" * len(sizes))
        for batch_size in THROUGHPUT_BATCHES:
            rec.batch_size = batch_size
            rates = []
            for size in sizes:
                lists = [titles[i : i + size] for i in range(0, len(titles), size)]
                rec.suggest(lists[0], 5)
                start = time.perf_counter()
                for part in lists:
                    rec.suggest(part, 5)
                rates.append(len(titles) / (time.perf_counter() - start))
            print(f"| {batch_size} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
        if rec.fusion is not None and rec.fusion.tfidf is not None:
            text_part_table(rec.fusion, titles, sizes)
    return 0


def text_part_table(fusion: Any, titles: list[str], sizes: tuple[int, ...]) -> None:
    """ms per product of the fusion's text-only part (TF-IDF neighbours and span tagger) on
    lists, with the TF-IDF similarities as labelrec computes them and by scipy's sparse product,
    alternately, twice."""
    from labelrec.predict import as_product
    from labelrec.taggers import neighbours

    ways = {
        "dense block over the queries' terms (labelrec)": neighbours.DENSE_BLOCK,
        "scipy's sparse product": 0,
    }
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(2):
        for name, block in ways.items():
            with mock.patch.object(neighbours, "DENSE_BLOCK", block):
                for size in sizes:
                    lists = [
                        [as_product({"title": t}, 0) for t in titles[i : i + size]]
                        for i in range(0, len(titles), size)
                    ]
                    fusion.text_evidence(lists[0])
                    start = time.perf_counter()
                    for part in lists:
                        fusion.text_evidence(part)
                    ms = 1000 * (time.perf_counter() - start) / len(titles)
                    times.setdefault((name, size), []).append(ms)
    print("\nthe fusion's text-only part (Fusion.text_evidence) on the same lists, ms per product")
    print("| TF-IDF similarities | " + " | ".join(f"lists of {k}, ms" for k in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name in ways:
        cells = " | ".join(" / ".join(f"{ms:.2f}" for ms in times[(name, size)]) for size in sizes)
        print(f"| {name} | {cells} |")


def _sklearn_transform(self: Any, texts: list[str]) -> Any:
    """``TfidfFeatures.transform`` through scikit-learn's own ``TfidfVectorizer.transform``."""
    from sklearn import config_context

    from labelrec.taggers.neighbours import _stack

    with config_context(assume_finite=True, skip_parameter_validation=True):
        parts = [v.transform(texts) for v in (self.word, self.char) if v is not None]
    return _stack(parts)


class _Inline:
    """An executor that runs the task at once in the calling thread."""

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


if __name__ == "__main__":
    sys.exit(main())
