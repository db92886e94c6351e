#!/usr/bin/env python
"""How long a tagger takes to load, with its ONNX graph exported or read from the cache.

    .venv/bin/python benchmarks/load_time.py --model runs/uk --runs 5

Three ways, each ``--runs`` times in new processes: the cache off (``LABELREC_ONNX_CACHE=off``:
every load exports the graph), a first load into an empty cache (export, then the graph is
written), and a load that finds the graph in the cache (torch's model is not built). Columns,
median seconds: ``TagRecommender.load`` in the new process (its imports done before), and the
whole ``labelrec suggest MODEL --limit 3`` of one title (a new process: imports included). Also
printed: the median time of computing the cache key in process, part of every load. The
cache is a temporary folder, removed at the end; the user's own is not read or written. The
suggestions printed must be the same in every run, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLE = "LEGO Star Wars Millennium Falcon building set"
WAYS = (
    ("cache off (export on every load)", "off"),
    ("empty cache (export, then write)", "empty"),
    ("cached graph", "cached"),
)
LOAD = """
import sys, time
from labelrec.predict import TagRecommender
start = time.perf_counter()
rec = TagRecommender.load(sys.argv[1])
seconds = time.perf_counter() - start
cached = rec.runner is not None and rec.runner.cached
print(f"{seconds:.4f} {rec.backend} {cached}")
"""


def run_child(
    what: str, args: list[str], env: dict[str, str], stdin: str = ""
) -> tuple[float, str]:
    """Wall seconds and stdout of a child process; an error names ``what`` it ran."""
    start = time.perf_counter()
    out = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed: {out.stderr.strip()[-2000:]}")
    return seconds, out.stdout


def measure(
    model: Path, runs: int, cache: Path, kinds: tuple[str, ...] = ("load", "suggest")
) -> tuple[list[tuple[str, float, float]], bool]:
    """(way, median load s, median suggest s) rows (nan for a kind left out of ``kinds``), and
    whether every run suggested the same."""
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    rows, outputs = [], set()
    for name, way in WAYS:
        env["LABELREC_ONNX_CACHE"] = "off" if way == "off" else str(cache)
        loads, suggests = [], []
        for _ in range(runs):
            for kind in kinds:
                if way == "empty":
                    for graph in cache.glob("*.onnx"):
                        graph.unlink()
                if kind == "load":
                    _, out = run_child(
                        "TagRecommender.load", [sys.executable, "-c", LOAD, str(model)], env
                    )
                    seconds, backend, cached = out.split()
                    if backend != "onnx" or cached != str(way == "cached"):
                        raise RuntimeError(f"{name}: backend {backend}, cached graph {cached}")
                    loads.append(float(seconds))
                else:
                    cli = [sys.executable, "-m", "labelrec.cli", "suggest", str(model)]
                    seconds, out = run_child(
                        "labelrec suggest", [*cli, "--limit", "3"], env, TITLE + "\n"
                    )
                    suggests.append(seconds)
                    outputs.add(out)
        rows.append((name, _median(loads), _median(suggests)))
    return rows, len(outputs) <= 1


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def key_seconds(model: Path, runs: int) -> float:
    """Median seconds of computing the model's cache key (``runtime.graph_digest``: hashing its
    weights and files) in this process, after one call that warms the imports and file cache."""
    from labelrec.model import read_info
    from labelrec.runtime import graph_digest

    info = read_info(model)
    if graph_digest(model, info) is None:
        raise RuntimeError(f"{model}: no cache key (a decoder, or no safetensors weights?)")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        graph_digest(model, info)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def format_table(rows: list[tuple[str, float, float]], runs: int) -> str:
    """A Markdown table of the rows."""
    lines = [
        f"| load of the tagger, median of {runs} new processes | TagRecommender.load s |"
        " labelrec suggest (one title) s |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {load:.2f} | {suggest:.2f} |" for name, load, suggest in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a tagger's model directory")
    parser.add_argument("--runs", type=int, default=5, help="new processes per way")
    args = parser.parse_args(argv)
    if not (args.model / "labelrec.json").is_file():
        print(f"load_time.py: {args.model} is not a model directory", file=sys.stderr)
        return 2
    if args.runs < 1:
        print("load_time.py: --runs must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="labelrec-onnx-cache-") as folder:
        cache = Path(folder)
        rows, same = measure(args.model, args.runs, cache)
        size = sum(p.stat().st_size for p in cache.glob("*.onnx"))
    print(format_table(rows, args.runs))
    print(f"cached graph: {size / 1e6:.1f} MB; the same suggestions in every run: {same}")
    print(
        f"computing the cache key (hashing the weights): {key_seconds(args.model, args.runs):.3f} s"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
