#!/usr/bin/env python
"""Peak memory of training against the catalog's size: ``labelrec train`` in a subprocess on
demo catalogs of each ``--products`` size, its peak resident set size read from the kernel
(the whole process: Python, torch, tokenizers and the taggers).

    .venv/bin/python benchmarks/memory.py --products 2000 6000 14000 --config configs/tiny.yaml

Each size writes a demo catalog (``labelrec.demo.write_demo``: train 70%, valid 15%) into a
temporary folder and trains on it with ``--config`` and the overrides after ``--``
(``-- model.backbone=DIR train.epochs=1``). Prints one row a size: products trained on, peak
RSS, wall seconds and the valid nDCG@3 the run saved, then the growth per 1,000 products
(least squares over the sizes). The peak is the training process's own (``VmHWM`` of Linux's
``/proc``, read as it exits). Other processes do not count, but they slow the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELREC = [str(Path(sys.executable).with_name("labelrec"))]  # the installed entry point


# Runs a Python script (a path, or -c CODE) and writes its peak resident set (VmHWM, kB) to the
# file argv[1] at exit. VmHWM is the high-water mark of the process's own memory since its exec;
# wait4's ru_maxrss is not: it keeps the forking parent's size, and this parent holds numpy.
RUNNER = """
import atexit, re, runpy, sys
out, script = sys.argv[1], sys.argv[2:]
def hwm():
    with open("/proc/self/status") as status:
        kb = re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)
    with open(out, "w") as fh:
        fh.write(kb)
atexit.register(hwm)
sys.argv = script
if script[0] == "-c":
    sys.argv = ["-c", *script[2:]]
    exec(compile(script[1], "<string>", "exec"), {"__name__": "__main__"})
else:
    runpy.run_path(script[0], run_name="__main__")
"""


def peak_rss(script: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[int, float]:
    """(peak resident bytes, wall seconds) of a Python ``script`` (``[path, args...]`` or
    ``["-c", code, args...]``) run in a fresh interpreter, its output in ``log``;
    ``RuntimeError`` with the log's tail when it fails."""
    hwm = log.with_suffix(".hwm")
    hwm.unlink(missing_ok=True)
    start = time.perf_counter()
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(hwm), *script],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(script)[:200]} exited {done.returncode}:\n{tail}")
    return int(hwm.read_text()) * 1024, seconds


def measure(products: int, config: str, overrides: list[str], work: Path) -> dict[str, float]:
    """Train on a demo catalog of ``products`` products; its row of the table."""
    from labelrec.demo import write_demo

    paths = write_demo(work / f"demo{products}", n_products=products, seed=0)
    output = work / f"model{products}"
    command = [
        *LABELREC,
        "train",
        "--config",
        config,
        f"data.train={paths['train']}",
        f"data.valid={paths['valid']}",
        f"output={output}",
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    rss, seconds = peak_rss(command, work / f"train{products}.log", env)
    info = json.loads((output / "labelrec.json").read_text(encoding="utf-8"))
    metrics = info.get("valid_metrics") or {}
    n_train = sum(1 for line in paths["train"].open(encoding="utf-8") if line.strip())
    return {
        "products": products,
        "train_products": n_train,
        "peak_rss_gb": rss / 1e9,
        "seconds": seconds,
        "nDCG@3": float(metrics.get("nDCG@3", float("nan"))),
    }


def format_table(rows: list[dict[str, float]]) -> str:
    """A Markdown table of ``measure`` rows, and the growth per 1,000 products."""
    lines = [
        "| demo products | trained on | peak RSS | wall s | valid nDCG@3 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['products']:,} | {r['train_products']:,} | {r['peak_rss_gb']:.2f} GB"
            f" | {r['seconds']:.0f} | {r['nDCG@3']:.4f} |"
        )
    if len(rows) >= 2:
        x = np.array([r["train_products"] for r in rows], dtype=float)
        y = np.array([r["peak_rss_gb"] for r in rows])
        slope, intercept = np.polyfit(x, y, 1)
        lines.append(
            f"\npeak RSS ~ {intercept:.2f} GB + {slope * 1000 * 1000:.0f} MB per 1,000 trained"
            " products (least squares)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="after --: config overrides (key=value)"
    )
    parser.add_argument("--products", type=int, nargs="+", default=[2000, 6000, 14000])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (logs)")
    args, overrides = parser.parse_known_args(argv)
    overrides = [o for o in overrides if o != "--"]
    if bad := [o for o in overrides if "=" not in o]:
        parser.error(f"not a key=value override: {bad[0]}")
    if any(n < 20 for n in args.products):
        parser.error("--products: at least 20 (the demo catalog's splits need products)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="labelrec-memory-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in args.products:
            rows.append(measure(n, args.config, overrides, work))
            print(f"{n:,} products: {rows[-1]['peak_rss_gb']:.2f} GB", file=sys.stderr)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
