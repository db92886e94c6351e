"""Where the service's time per product goes: /suggest one product a request against /suggest_batch.

Usage:
    python benchmarks/serve_profile.py --model runs/uk            # amazon_uk_toys valid titles
    python benchmarks/serve_profile.py --model runs/uk --seconds 10 --json runs/profile.json

Starts ``bentoml serve`` (labelrec.service:LabelRec) with the model of ``--model`` as
benchmarks/serve.py does, and samples the service's Python stacks with py-spy (``pip install
'labelrec[bench]'``) while closed-loop clients load it: /suggest at concurrency 32, then
/suggest_batch (64 products a request, 2 clients). Each sample is filed under the part of the
request's path it was taken in (the innermost labelrec module on its stack, or the HTTP stack
around it), and the table gives each part's sampled time per product served, in both loads.

py-spy reads another process's memory: it needs the right to trace it (root, or
``CAP_SYS_PTRACE`` in a container). The raw stacks stay in
``$TMPDIR/labelrec-profile-N.txt`` (``/tmp`` without ``TMPDIR``).

A sample is a Python thread found running (py-spy leaves idle threads out). The time is thread
time, not CPU time: ONNX Runtime's forward pass counts as one thread however many cores it uses,
and it lasts longer when the HTTP side takes its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve  # noqa: E402  (benchmarks/serve.py: the service's start, stop and load)

FORWARD = "forward pass (ONNX Runtime)"
VOTERS = "kNN and TF-IDF voters"
SPAN = "span tagger"
RERANK = "reranker"
RANK = "tokenize, batch, fuse and rank"
ENDPOINT = "labelrec's endpoints and middleware (lines of labelrec/service.py)"
HTTP = "HTTP path (uvicorn, Starlette, BentoML, OpenTelemetry, pydantic, access log)"
OTHER = "other (event loop, threads)"
PARTS = (FORWARD, VOTERS, SPAN, RERANK, RANK, ENDPOINT, HTTP, OTHER)
_HTTP_MARKS = ("uvicorn", "starlette", "bentoml", "opentelemetry", "prometheus", "pydantic")
_HTTP_MARKS += ("logging/",)


def part_of(frames: list[str]) -> str:
    """The part of the path one sampled stack (outermost frame first) is in."""
    if any("Session.run" in f for f in frames):
        return FORWARD
    for frame in reversed(frames):  # the innermost labelrec frame decides
        if "labelrec/" not in frame:
            continue
        if "labelrec/service.py" in frame:  # beneath the endpoints: only the HTTP side
            return ENDPOINT if frame is frames[-1] else HTTP
        if "labelrec/taggers/neighbours.py" in frame:
            return VOTERS
        if "labelrec/taggers/span.py" in frame:
            return SPAN
        if "labelrec/rerank.py" in frame:
            return RERANK
        return RANK
    return HTTP if any(m in f for f in frames for m in _HTTP_MARKS) else OTHER


def summarize(collapsed: str) -> Counter[str]:
    """Samples per part from py-spy's ``--format raw`` output (``frame;frame;... count``; the
    process and thread names that head a stack are not frames)."""
    parts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            parts[part_of(frames)] += int(count)
    return parts


def table(loads: dict[str, dict[str, Any]], rate: int) -> str:
    """Sampled ms per product served, by part, for each load (``samples``, ``products``)."""
    names = list(loads)
    per = {
        name: {
            part: 1000.0 * n / rate / max(load["products"], 1)
            for part, n in load["samples"].items()
        }
        for name, load in loads.items()
    }
    lines = [
        "| part of the path | " + " | ".join(f"{n}, ms per product" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for part in PARTS:
        if any(part in per[n] for n in names):
            cells = " | ".join(f"{per[n].get(part, 0.0):.2f}" for n in names)
            lines.append(f"| {part} | {cells} |")
    totals = " | ".join(f"{sum(per[n].values()):.2f}" for n in names)
    lines.append(f"| all sampled threads | {totals} |")
    served = " | ".join(f"{loads[n]['products_per_s']:.0f}" for n in names)
    lines.append(f"| products/s while sampled | {served} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=serve.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=serve.DEFAULT_DATA)
    parser.add_argument("--seconds", type=float, default=25, help="sampled seconds per load")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--json", type=Path, help="write the samples per part here")
    args = parser.parse_args(argv)
    skipped = serve.missing_input(args.model, args.data)
    if skipped:
        print(skipped)
        return 0
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("error: py-spy not found: pip install 'labelrec[bench]'", file=sys.stderr)
        return 2

    titles = serve.read_titles(args.data)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "labelrec-profile-service.log"
    proc, url = serve.start_service(args.model, {}, log)
    loads: dict[str, dict[str, Any]] = {}
    try:
        print(f"service ready in {serve.wait_ready(url, proc, log):.0f} s", file=sys.stderr)
        asyncio.run(serve.run_load(url, titles, 8, 5))  # warm-up, not sampled
        for name, concurrency, batch in (
            ("/suggest, concurrency 32", 32, 0),
            ("/suggest_batch", 2, 64),
        ):
            out = log.with_name(f"labelrec-profile-{len(loads)}.txt")
            sampler = subprocess.Popen(
                [spy, "record", "--pid", str(proc.pid), "--subprocesses", "--nonblocking"]
                + ["--rate", str(args.rate), "--duration", str(math.ceil(args.seconds) + 2)]
                + ["--format", "raw", "--output", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            # py-spy attaches before the load starts and samples until after it ends: every
            # product counted was sampled (an idle service adds no samples)
            time.sleep(1.0)
            load = asyncio.run(serve.run_load(url, titles, concurrency, args.seconds, batch=batch))
            _, err = sampler.communicate()
            if sampler.returncode != 0 or not out.exists():
                print(f"error: py-spy failed: {err.strip()[-500:]}", file=sys.stderr)
                return 2
            loads[name] = {
                "samples": dict(summarize(out.read_text("utf-8"))),
                "products": load.products,
                "products_per_s": load.products / load.seconds,
            }
            print(f"{name}: {load.products} products sampled", file=sys.stderr)
    finally:
        serve.stop(proc)
    print(table(loads, args.rate))
    if args.json:
        payload = {"model": str(args.model), "rate": args.rate, "loads": loads}
        args.json.write_text(json.dumps(payload, indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
