"""Serving benchmark: the BentoML service against a naive baseline, on this machine.

    python benchmarks/serve.py                       # runs/uk and amazon_uk_toys valid titles
    python benchmarks/serve.py --seconds 5 --soak 20 # shorter

Starts ``bentoml serve`` (labelrec.service:LabelRec) on 127.0.0.1 with the model of ``--model``,
measures ``/suggest`` latency (p50/p99) at concurrency 1, 8 and 32 and ``/suggest_batch``
throughput (products/s), then the same load against a naive baseline server (a transformers
``text-classification`` pipeline called once per product, no batching, fp32, padding to
``max_length``; plain Starlette, one model call at a time). Also measured: the in-process
throughput of ``TagRecommender.suggest`` (the 80% target) and a soak at concurrency 32 with 5%
malformed requests (status codes, and the server's memory over the last ``--soak`` seconds after
``--soak-warmup`` seconds: BentoML keeps each request's timer for ``traffic.timeout``, 60 s, so
memory rises for the first minute of load). For each load on labelrec it also reports the
server's CPU time per product, the cores it kept busy and the products per shared forward pass
(from ``GET /model``), and the cores the benchmark's own client kept busy. Prints Markdown
tables; ``--json`` saves the raw numbers. Clients and servers share the machine's cores;
``LABELREC_*`` variables in the environment reach the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "runs" / "uk"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "amazon_uk_toys" / "valid.jsonl"
BATCH = 64  # products per /suggest_batch request
SET_HERE = ("LABELREC_MODEL_URI", "LABELREC_POLL_SECONDS", "LABELREC_QUANTIZE")  # by main()
ENV = {
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# Malformed requests mixed into the soak: (path, body bytes or None for a multipart upload).
MALFORMED: list[tuple[str, bytes | None]] = [
    ("/suggest", b'{"product": {"title": ""}}'),
    ("/suggest", b'{"product": {"description": "no title"}}'),
    ("/suggest", b'{"product": {"title": 12345}}'),
    ("/suggest", b'{"product": {"title": "x"}, "limit": -1}'),
    ("/suggest", b"this is not json"),
    ("/suggest", b'{"product": {"title": "caf\xe9 \xff\xfe"}}'),  # not UTF-8
    ("/suggest_batch", json.dumps({"products": [{"title": "t"}] * 300}).encode()),  # over cap
    ("/suggest_file", None),  # a CSV upload with an empty title
]


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **ENV, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> float:
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def missing_input(model: Path, data: Path) -> str | None:
    """Why a benchmark over ``model`` and the catalog ``data`` is skipped, or None."""
    for path, what in ((model / "labelrec.json", "model"), (data, "catalog")):
        if not path.exists():
            return f"skipped: {what} {path} not found (train runs/uk, see README)"
    return None


def read_titles(data: Path, limit: int = 4096) -> list[str]:
    """At most ``limit`` titles of the catalog ``data``, shuffled (seed 0): what the loads send."""
    from labelrec.data import iter_catalog

    titles = [p.title for chunk in iter_catalog(data) for p in chunk][:limit]
    random.Random(0).shuffle(titles)
    return titles


def start_service(model: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``bentoml serve`` of labelrec.service:LabelRec on a free local port, serving ``model``
    with registry polling off (``env`` adds settings); the process and its URL."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("bentoml")), "serve", "labelrec.service:LabelRec"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = {"LABELREC_MODEL_URI": str(model.resolve()), "LABELREC_POLL_SECONDS": "0", **env}
    return start(cmd, env, log), f"http://127.0.0.1:{port}"


def tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of ``pid`` and its children so far; 0 without a pid."""
    import psutil

    if pid is None:
        return 0.0
    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def baseline_server(model_dir: Path, port: int) -> None:
    """The naive baseline: a transformers pipeline per product, padding to max_length, fp32."""
    import threading

    import torch
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route
    from transformers import pipeline

    from labelrec.model import read_info

    max_length = int(read_info(model_dir)["max_length"])
    pipe = pipeline(
        "text-classification",
        model=str(model_dir),
        tokenizer=str(model_dir),
        device=-1,
        dtype=torch.float32,
    )
    lock = threading.Lock()  # one model call at a time, like one worker thread

    def tag(product: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        text: Any = product["title"]
        if product.get("description"):
            text = {"text": product["title"], "text_pair": product["description"]}
        with lock:
            out = pipe(
                text,
                top_k=limit,
                function_to_apply="sigmoid",
                padding="max_length",
                truncation=True,
                max_length=max_length,
            )
        return [{"tag": o["label"], "score": float(o["score"])} for o in out]

    async def suggest(request: Request) -> JSONResponse:
        body = await request.json()
        tags = await run_in_threadpool(tag, body["product"], int(body.get("limit", 10)))
        return JSONResponse({"tags": tags})

    async def suggest_batch(request: Request) -> JSONResponse:
        body = await request.json()
        limit = int(body.get("limit", 10))
        results = []
        for product in body["products"]:  # one pipeline call per product: no batching
            results.append({"tags": await run_in_threadpool(tag, product, limit)})
        return JSONResponse({"results": results})

    async def ready(_: Request) -> PlainTextResponse:
        return PlainTextResponse("\n")

    app = Starlette(
        routes=[
            Route("/suggest", suggest, methods=["POST"]),
            Route("/suggest_batch", suggest_batch, methods=["POST"]),
            Route("/readyz", ready),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    """Outcome of one load run."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    products: int = 0
    seconds: float = 0.0
    malformed: int = 0
    malformed_4xx: int = 0
    valid_not_200: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        n = sum(self.statuses.values())
        return {
            "requests": n,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "req_per_s": n / self.seconds if self.seconds else float("nan"),
            "products_per_s": self.products / self.seconds if self.seconds else float("nan"),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors_5xx": sum(v for k, v in self.statuses.items() if k >= 500),
        }


def _bad_upload() -> Any:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", b"id,title\n1,lego\n2,\n", filename="bad.csv", content_type="text/csv")
    return form


async def run_load(
    url: str,
    titles: list[str],
    concurrency: int,
    seconds: float,
    batch: int = 0,
    malformed_share: float = 0.0,
    rss_pid: int | None = None,
    seed: int = 0,
) -> Load:
    """``concurrency`` closed-loop clients for ``seconds``: /suggest (or /suggest_batch with
    ``batch`` products per request), ``malformed_share`` of the requests malformed."""
    import aiohttp

    load = Load()
    rng = random.Random(seed)
    cursor = 0
    deadline = time.monotonic() + seconds
    headers = {"content-type": "application/json"}

    def next_titles(n: int) -> list[str]:
        nonlocal cursor
        out = [titles[(cursor + i) % len(titles)] for i in range(n)]
        cursor += n
        return out

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            bad = malformed_share > 0 and rng.random() < malformed_share
            data: Any
            if bad:
                path, data = rng.choice(MALFORMED)
                data = _bad_upload() if data is None else data
                send = (
                    {"data": data}
                    if path == "/suggest_file"
                    else {"data": data, "headers": headers}
                )
                n = 0
            elif batch:
                path, n = "/suggest_batch", batch
                body = {"products": [{"title": t} for t in next_titles(batch)], "limit": 5}
                send = {"data": json.dumps(body).encode(), "headers": headers}
            else:
                path, n = "/suggest", 1
                body = {"product": {"title": next_titles(1)[0]}, "limit": 5}
                send = {"data": json.dumps(body).encode(), "headers": headers}
            t0 = time.perf_counter()
            try:
                async with session.post(url + path, **send) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 599  # no answer: counted as a server error
            elapsed = (time.perf_counter() - t0) * 1000
            load.statuses[status] = load.statuses.get(status, 0) + 1
            if bad:
                load.malformed += 1
                load.malformed_4xx += 400 <= status < 500
            else:
                load.latencies_ms.append(elapsed)
                if status == 200:
                    load.products += n
                else:
                    load.valid_not_200 += 1

    async def sample_rss() -> None:
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            load.rss_mb.append((time.monotonic() - t0, tree_rss_mb(rss_pid)))
            await asyncio.sleep(1.0)
        load.rss_mb.append((time.monotonic() - t0, tree_rss_mb(rss_pid)))

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.monotonic()
        tasks = [client(session) for _ in range(concurrency)]
        if rss_pid is not None:
            tasks.append(sample_rss())
        await asyncio.gather(*tasks)
        load.seconds = time.monotonic() - t0
    return load


def measure(
    url: str,
    titles: list[str],
    seconds: float,
    label: str,
    local: Any = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """Load levels against one server; with ``local`` (an InProcess) the in-process throughput is
    measured right before and after /suggest_batch, while the server idles, and averaged (the
    machine's other load drifts). With ``pid`` (the server's), each level also records the
    server's CPU ms per product, the cores it kept busy and the products per shared pass."""
    out: dict[str, Any] = {}

    def shared() -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"{url}/model", timeout=30) as answer:
            return json.loads(answer.read())["shared_passes"]

    def load(concurrency: int, batch: int = 0) -> dict[str, Any]:
        passes = shared() if pid is not None else None
        cpu, client, start = tree_cpu_s(pid), time.process_time(), time.perf_counter()
        run = asyncio.run(run_load(url, titles, concurrency, seconds, batch=batch))
        summary = run.summary()
        wall = time.perf_counter() - start
        # the load generator runs on the same cores as the server: what it takes, they lack
        summary["client_cores"] = (time.process_time() - client) / wall
        if pid is not None:
            cpu = tree_cpu_s(pid) - cpu
            summary["server_cpu_ms_per_product"] = 1000 * cpu / max(run.products, 1)
            summary["server_cores"] = cpu / wall
            after = shared()
            # with several workers each /model answer counts one worker's passes only
            ran = max(after["passes"] - passes["passes"], 1)
            summary["products_per_pass"] = (
                (after["products"] - passes["products"]) / ran
                if after.get("workers", 1) == 1
                else float("nan")
            )
        return summary

    asyncio.run(run_load(url, titles, 4, 3))  # warm-up (also trains BentoML's batcher)
    for c in (1, 8, 32):
        out[f"suggest_c{c}"] = load(c)
        print(f"  {label} /suggest c={c}: {out[f'suggest_c{c}']}", file=sys.stderr)
    before = local.measure(titles) if local else None
    out["batch"] = load(2, BATCH)
    print(f"  {label} /suggest_batch: {out['batch']}", file=sys.stderr)
    if local:
        after = local.measure(titles)
        out["in_process"] = {k: (before[k] + after[k]) / 2 for k in before} | {
            "before": before,
            "after": after,
        }
        print(f"  in-process: {out['in_process']}", file=sys.stderr)
    return out


class InProcess:
    """TagRecommender.suggest on lists of 64 products (throughput; its own forward-pass batch
    size inside, as in the service) and one by one (latency). With ``passes`` > 1 the lists run
    that many at a time, each on its share of the cores, as the service does with
    ``LABELREC_PASSES``.

    As in the service, the model is loaded in the main thread and runs in worker threads (on a
    busy machine torch runs far slower in the thread that loaded it than in another one, which
    would flatter the service)."""

    def __init__(self, model: Path, titles: list[str], quantize: bool, passes: int = 1) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from labelrec.predict import TagRecommender
        from labelrec.serving import threads_per_pass

        threads = threads_per_pass(passes)  # as the service splits the cores
        self.rec = TagRecommender.load(model, quantize=quantize, num_threads=threads)
        self.rec.suggest(titles[:BATCH], 5)  # warm-up, like the service's probe
        self.pool = ThreadPoolExecutor(passes)

    def measure(self, titles: list[str]) -> dict[str, float]:
        rec = self.rec
        self.pool.submit(rec.suggest, titles[:BATCH], 5).result()
        sample = titles[:512]
        t0 = time.perf_counter()
        lists = [sample[i : i + BATCH] for i in range(0, len(sample), BATCH)]
        list(self.pool.map(lambda part: rec.suggest(part, 5), lists))
        throughput = len(sample) / (time.perf_counter() - t0)
        single = self.pool.submit(self._one_by_one, titles[:50]).result()
        return {"products_per_s": throughput, "batch1_p50_ms": float(np.percentile(single, 50))}

    def _one_by_one(self, titles: list[str]) -> list[float]:
        single = []
        for title in titles:
            t0 = time.perf_counter()
            self.rec.suggest([title], 5)
            single.append((time.perf_counter() - t0) * 1000)
        return single


# --------------------------------------------------------------------------- report


def table(results: dict[str, Any]) -> str:
    svc, base = results["service"], results["baseline"]
    inproc = svc["in_process"]
    lines = [
        "| load | labelrec p50 ms | p99 ms | req/s | baseline p50 ms | p99 ms | req/s "
        "| throughput ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in (1, 8, 32):
        s, b = svc[f"suggest_c{c}"], base[f"suggest_c{c}"]
        lines.append(
            f"| /suggest, concurrency {c} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
            f"| {s['req_per_s']:.1f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} "
            f"| {b['req_per_s']:.1f} | {s['req_per_s'] / b['req_per_s']:.1f}x |"
        )
    s, b = svc["batch"], base["batch"]
    lines.append(
        f"| /suggest_batch ({BATCH}/request, concurrency 2), products/s | {s['p50_ms']:.0f} "
        f"| {s['p99_ms']:.0f} | {s['products_per_s']:.0f} | {b['p50_ms']:.0f} "
        f"| {b['p99_ms']:.0f} | {b['products_per_s']:.0f} "
        f"| {s['products_per_s'] / b['products_per_s']:.1f}x |"
    )
    ratio = s["products_per_s"] / inproc["products_per_s"]
    c1 = svc["suggest_c1"]["p50_ms"]
    speedup = s["products_per_s"] / b["products_per_s"]
    shared = svc["suggest_c32"]["req_per_s"] / s["products_per_s"]
    lines += [
        "",
        "| target | measured | met |",
        "|---|---:|:-:|",
        f"| /suggest p50 at concurrency 1 < 12 ms (in-process one by one: "
        f"{inproc['batch1_p50_ms']:.1f} ms) | {c1:.1f} ms | {'yes' if c1 < 12 else 'no'} |",
        f"| /suggest_batch >= 80% of in-process ({inproc['products_per_s']:.0f} products/s) "
        f"| {100 * ratio:.0f}% | {'yes' if ratio >= 0.8 else 'no'} |",
        f"| >= 3x the naive baseline (/suggest_batch products/s) | {speedup:.1f}x "
        f"| {'yes' if speedup >= 3 else 'no'} |",
        f"| /suggest at concurrency 32 >= 80% of /suggest_batch's products/s (shared forward "
        f"passes) | {100 * shared:.0f}% | {'yes' if shared >= 0.8 else 'no'} |",
    ]
    if "server_cpu_ms_per_product" in s:
        lines += [
            "",
            "| load (labelrec) | server CPU ms per product | server cores busy "
            "| benchmark client cores busy | products per shared pass |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, name in [(f"suggest_c{c}", f"/suggest, concurrency {c}") for c in (1, 8, 32)] + [
            ("batch", f"/suggest_batch ({BATCH}/request, concurrency 2)")
        ]:
            row = svc[key]
            per_pass = row["products_per_pass"]  # nan with several workers (see `load`)
            lines.append(
                f"| {name} | {row['server_cpu_ms_per_product']:.2f} | {row['server_cores']:.2f} "
                f"| {row.get('client_cores', math.nan):.2f} "
                f"| {'n/a' if math.isnan(per_pass) else f'{per_pass:.1f}'} |"
            )
        per_cpu = s["server_cpu_ms_per_product"] / svc["suggest_c32"]["server_cpu_ms_per_product"]
        lines += [
            "",
            f"Per second of server CPU, /suggest at concurrency 32 scores {100 * per_cpu:.0f}% of "
            "the products /suggest_batch scores (its share if both loads had the same server CPU).",
        ]
    soak = results.get("soak")
    if soak:
        rss = soak["rss_mb"]
        lines += [
            "",
            f"Soak: {soak['seconds']:.0f} s at concurrency 32 with 5% malformed requests, "
            f"{soak['requests']} requests, {soak['malformed']} malformed "
            f"({soak['malformed_4xx']} answered 4xx), {soak['errors_5xx']} answered 5xx, "
            f"{soak['valid_not_200']} valid ones not 200. Server RSS (MB, every 10 s): "
            f"{', '.join(f'{mb:.0f}' for mb in rss['every_10s'])}; over the last "
            f"{soak['seconds'] - soak['warmup']:.0f} s {rss['after_warmup']:.0f} -> "
            f"{rss['end']:.0f}, max {rss['max']:.0f} "
            f"({'flat' if soak['memory_flat'] else 'GROWING'}).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seconds", type=float, default=15, help="per load level")
    parser.add_argument("--soak", type=float, default=60, help="soak seconds (0: skip)")
    parser.add_argument(
        "--soak-warmup", type=float, default=60, help="soak seconds before memory is judged"
    )
    parser.add_argument("--quantize", action="store_true", help="dynamic int8 in the service")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        baseline_server(args.model, args.baseline_server)
        return 0
    skipped = missing_input(args.model, args.data)
    if skipped:
        print(skipped)
        return 0
    titles = read_titles(args.data)
    results: dict[str, Any] = {
        "model": str(args.model),
        "data": str(args.data),
        "titles": len(titles),
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        # the service's settings from this environment (the rest are its defaults; the model
        # and polling are set below, secrets left out)
        "service_env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith("LABELREC_") and k not in SET_HERE and "TOKEN" not in k
        },
    }
    passes = int(results["service_env"].get("LABELREC_PASSES") or 1)  # as the service runs
    local = InProcess(args.model, titles, args.quantize, passes)

    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    log = logs / "labelrec-bench-service.log"
    env = {"LABELREC_QUANTIZE": "1" if args.quantize else ""}
    proc, url = start_service(args.model, env, log)
    try:
        results["service_start_s"] = wait_ready(url, proc, log)
        print(f"service ready in {results['service_start_s']:.0f} s", file=sys.stderr)
        results["service"] = measure(url, titles, args.seconds, "labelrec", local, proc.pid)
        if args.soak > 0:
            total = args.soak_warmup + args.soak
            print(f"soak {total:.0f} s at concurrency 32...", file=sys.stderr)
            soak = asyncio.run(
                run_load(url, titles, 32, total, malformed_share=0.05, rss_pid=proc.pid)
            )
            summary = soak.summary()
            rss = [mb for t, mb in soak.rss_mb]
            settled = [mb for t, mb in soak.rss_mb if t >= args.soak_warmup] or rss
            summary.update(
                seconds=soak.seconds,
                warmup=args.soak_warmup,
                malformed=soak.malformed,
                malformed_4xx=soak.malformed_4xx,
                valid_not_200=soak.valid_not_200,
                rss_mb={
                    "start": rss[0],
                    "after_warmup": settled[0],
                    "end": rss[-1],
                    "max": max(rss),
                    "every_10s": rss[::10],
                },
                rss_samples=soak.rss_mb,
                memory_flat=bool(max(settled) - settled[0] <= 0.02 * settled[0]),
            )
            results["soak"] = summary
            print(f"  {summary}", file=sys.stderr)
    finally:
        stop(proc)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = logs / "labelrec-bench-baseline.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model", str(args.model.resolve())]
    proc = start([*cmd, "--baseline-server", str(port)], {}, log)
    try:
        results["baseline_start_s"] = wait_ready(url, proc, log)
        results["baseline"] = measure(url, titles, args.seconds, "baseline")
    finally:
        stop(proc)
    results["load_average_end"] = os.getloadavg()

    print(table(results))
    print(
        f"\n{os.cpu_count()} CPUs; load average {results['load_average_start'][0]:.1f} at the "
        f"start, {results['load_average_end'][0]:.1f} at the end (other processes share the "
        "cores)."
    )
    settings = " ".join(f"{k}={v}" for k, v in results["service_env"].items())
    print(f"Service settings from the environment: {settings or 'none (its defaults)'}.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
