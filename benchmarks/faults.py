#!/usr/bin/env python
"""Hostile input and faults, in process: one table of what was tried and what came back.

    .venv/bin/python benchmarks/faults.py --model runs/minilm_amazon_uk_toys

Checks, each a row:
- long titles (64 KB and 1 MB: a brand repeated, a word repeated) answered by
  ``TagRecommender.suggest``, in seconds (goal: under 0.2 s), beside a normal title;
- ``labelrec index`` asked to write over its own input (directly and through a symlink): exit
  code, and whether the input is intact;
- a gzip upload that expands past the cap (``batch.gunzip_capped``): the status, and the bytes
  written before it stopped;
- a model directory whose MLmodel points ``model_data`` outside the logged model: refused?
- a checkpoint cut short (``epoch-N.tmp``, a folder without its state file): which one
  ``--resume`` would take;
- the service's event loop while ``/suggest_batch`` ranks 256 products with 100 exclude
  patterns of 512 characters: its longest stall (goal: under 100 ms).

``--live`` runs ``bentoml serve`` (this repository's bentofile) on the model and prints a second
table: a closed-loop load of valid ``/suggest`` requests, clean and with a share of hostile
requests mixed in (empty, non-JSON, bad UTF-8, deeply nested and over-cap bodies, gzip bombs,
over-cap and bad uploads, ``"limit": true``, 512 KB titles, uploads cut off mid-body), in
alternating rounds so that other load on the machine weighs on both alike; each hostile kind with
what came back; then 10 parallel ``/reload`` calls; and what was left behind: server errors
(5xx), upload folders in the server's temporary directory, open files and memory before and
after. The server runs with small caps (``LABELREC_MAX_BODY_MB=1``, ``LABELREC_MAX_UPLOAD_MB=1``)
so that over-cap requests stay cheap to send.

    .venv/bin/python benchmarks/faults.py --model runs/minilm_amazon_uk_toys --live --seconds 30

``--live`` also trains the default config on 600 products of ``--train`` (``--data`` as valid)
three ways: whole; killed with SIGKILL during its second epoch and ``--resume``d (the same valid
metrics?); and into the directory a second server polls every second while 4 clients send
``/suggest`` (all answered, the new model served at the end?). A registry error during promotion
and an index of another vocabulary are covered by tests (tests/test_promote.py,
tests/test_service_products.py), not here.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

ROOT = Path(__file__).resolve().parents[1]


# hostile kinds of the live run: name -> (path, what a well-behaved server answers)
HOSTILE_ANSWER = {
    "empty title": "4xx",
    "not JSON": "4xx",
    "bad UTF-8": "4xx",
    '"limit": true': "4xx",
    "300 products in a batch": "4xx",
    "JSON nested 100,000 deep": "4xx",
    "2 MB body (cap 1 MB)": "413",
    "gzip upload expanding to 8 MB (cap 1 MB)": "413",
    "3 MB upload (cap 1 MB)": "413",
    "CSV upload with an empty title": "4xx",
    "512 KB title": "200",
    "upload cut off mid-body": "no answer",
}


def hostile_request(kind: str) -> tuple[str, Any, dict[str, str]]:
    """(path, body or multipart form, headers) of one hostile request."""
    import aiohttp

    json_headers = {"content-type": "application/json"}
    bodies = {
        "empty title": b'{"product": {"title": ""}}',
        "not JSON": b"this is not json",
        "bad UTF-8": b'{"product": {"title": "caf\xe9 \xff\xfe"}}',
        '"limit": true': b'{"product": {"title": "lego"}, "limit": true}',
        "300 products in a batch": json.dumps({"products": [{"title": "t"}] * 300}).encode(),
        "JSON nested 100,000 deep": b'{"product": {"title": "x", "description": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}}",
        "2 MB body (cap 1 MB)": json.dumps(
            {"product": {"title": "lego", "description": "x" * (2 << 20)}}
        ).encode(),
        "512 KB title": json.dumps({"product": {"title": ("LEGO " * 110_000)[: 1 << 19]}}).encode(),
    }
    if kind in bodies:
        path = "/suggest_batch" if kind.startswith("300") else "/suggest"
        return path, bodies[kind], json_headers
    form = aiohttp.FormData()
    if kind.startswith("gzip"):
        bomb = gzip.compress(b'{"id": "1", "title": "x"}\n' + b" " * (8 << 20))
        form.add_field("file", bomb, filename="bomb.jsonl.gz", content_type="application/gzip")
    elif kind.startswith("3 MB"):  # refused while it streams, before it is spooled whole
        big = b'{"id": "1", "title": "lego"}\n' * (3 << 15)
        form.add_field("file", big, filename="big.jsonl", content_type="application/jsonl")
    else:
        form.add_field("file", b"id,title\n1,lego\n2,\n", filename="bad.csv")
    return "/suggest_file", form, {}


async def cut_upload(host: str, port: int) -> None:
    """Start a 1 MB multipart upload, send 64 KB of it, hang up."""
    reader, writer = await asyncio.open_connection(host, port)
    boundary = "labelrecfaults"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    writer.write(
        (
            f"POST /suggest_file HTTP/1.1\r\nHost: {host}\r\nContent-Length: {1 << 20}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        + head
        + b'{"id": "1", "title": "lego"}\n' * 2000
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def load(
    url: str, titles: list[str], concurrency: int, seconds: float, share: float, seed: int = 0
) -> dict[str, Any]:
    """``concurrency`` closed-loop clients for ``seconds``: valid /suggest requests, ``share`` of
    them replaced by hostile ones (round robin over the kinds)."""
    import random
    from urllib.parse import urlparse

    import aiohttp
    import numpy as np

    rng = random.Random(seed)
    kinds = list(HOSTILE_ANSWER)
    out: dict[str, Any] = {"latencies_ms": [], "valid_statuses": {}, "hostile": {}}
    counter = {"n": 0, "hostile": 0}
    deadline = time.monotonic() + seconds
    host, port = urlparse(url).hostname, urlparse(url).port

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            counter["n"] += 1
            if share > 0 and rng.random() < share:
                kind = kinds[counter["hostile"] % len(kinds)]
                counter["hostile"] += 1
                seen = out["hostile"].setdefault(kind, {"n": 0, "statuses": {}, "ms": []})
                t0 = time.perf_counter()
                if kind == "upload cut off mid-body":
                    await cut_upload(host, port)
                    status = "none"
                else:
                    path, body, headers = hostile_request(kind)
                    try:
                        async with session.post(url + path, data=body, headers=headers) as r:
                            await r.read()
                            status = str(r.status)
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        status = "599"
                seen["n"] += 1
                seen["statuses"][status] = seen["statuses"].get(status, 0) + 1
                seen["ms"].append((time.perf_counter() - t0) * 1000)
                continue
            body = {"product": {"title": titles[counter["n"] % len(titles)]}, "limit": 5}
            t0 = time.perf_counter()
            try:
                async with session.post(url + "/suggest", json=body) as answer:
                    await answer.read()
                    status = str(answer.status)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = "599"
            out["latencies_ms"].append((time.perf_counter() - t0) * 1000)
            out["valid_statuses"][status] = out["valid_statuses"].get(status, 0) + 1

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    lat = np.asarray(out["latencies_ms"] or [float("nan")])
    out["p50_ms"], out["p99_ms"] = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    out["valid_requests"] = len(out["latencies_ms"])
    return out


def merge(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Two load runs as one: latencies, statuses and hostile answers pooled."""
    import numpy as np

    if a is None:
        return b
    out = {"latencies_ms": a["latencies_ms"] + b["latencies_ms"], "valid_statuses": {}}
    for run in (a, b):
        for k, v in run["valid_statuses"].items():
            out["valid_statuses"][k] = out["valid_statuses"].get(k, 0) + v
    out["hostile"] = {}
    for run in (a, b):
        for kind, seen in run["hostile"].items():
            mine = out["hostile"].setdefault(kind, {"n": 0, "statuses": {}, "ms": []})
            mine["n"] += seen["n"]
            mine["ms"] += seen["ms"]
            for k, v in seen["statuses"].items():
                mine["statuses"][k] = mine["statuses"].get(k, 0) + v
    lat = np.asarray(out["latencies_ms"] or [float("nan")])
    out["p50_ms"], out["p99_ms"] = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    out["valid_requests"] = len(out["latencies_ms"])
    return out


def answered_as_it_should(kind: str, statuses: dict[str, int]) -> bool:
    want = HOSTILE_ANSWER[kind]
    if want == "no answer":
        return set(statuses) == {"none"}
    if want == "4xx":
        return all(s.isdigit() and 400 <= int(s) < 500 for s in statuses)
    return set(statuses) == {want}


def live(
    model: Path,
    data: Path,
    seconds: float,
    concurrency: int,
    share: float,
    rounds: int = 3,
    train: Path | None = None,
) -> int:
    """The live run against ``bentoml serve``; prints its table. With ``train`` (a catalog;
    ``data`` is its valid split) also the training faults: kill -9 and ``--resume``, and a retrain
    into a served directory."""
    import psutil
    from serve import free_port, start, stop, wait_ready

    from labelrec.data import read_catalog

    titles = [p.title for p in read_catalog(data).products][:4096]
    work = Path(tempfile.mkdtemp(prefix="labelrec-faults-live-"))
    server_tmp = work / "tmp"
    server_tmp.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "LABELREC_MODEL_URI": str(model),
        "LABELREC_POLL_SECONDS": "0",
        "LABELREC_MAX_BODY_MB": "1",
        "LABELREC_MAX_UPLOAD_MB": "1",
        "LABELREC_ADMIN_TOKEN": "faults",
        "TMPDIR": str(server_tmp),
        "BENTOML_HOME": str(work / "bentoml"),
    }
    log = work / "serve.log"
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    proc = start([bentoml, "serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
    rows: list[tuple[str, str, str]] = []
    try:
        wait_ready(url, proc, log)
        asyncio.run(load(url, titles, 4, 3, 0.0))  # warm-up

        def tree() -> tuple[int, float]:
            procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            return sum(p.num_fds() for p in procs), sum(p.memory_info().rss for p in procs) / 2**20

        fds0, rss0 = tree()
        # clean and hostile in alternating rounds: other load on the machine weighs on both alike
        clean = hostile = None
        for r in range(rounds):
            part = seconds / rounds
            clean = merge(clean, asyncio.run(load(url, titles, concurrency, part, 0.0)))
            hostile = merge(
                hostile, asyncio.run(load(url, titles, concurrency, part, share, seed=r + 1))
            )
        import aiohttp

        async def reloads() -> list[int]:
            async with aiohttp.ClientSession() as session:

                async def one(force: bool) -> int:
                    headers = {"authorization": "Bearer faults"}
                    path = "/reload?force=true" if force else "/reload"
                    async with session.post(url + path, headers=headers) as answer:
                        return answer.status

                return await asyncio.gather(*(one(i % 2 == 0) for i in range(10)))

        reload_statuses = asyncio.run(reloads())
        time.sleep(2)  # let the cut-off uploads' handlers finish
        fds1, rss1 = tree()
        left = sorted(p.name for p in server_tmp.glob("labelrec-upload-*"))
        alive = proc.poll() is None
    finally:
        stop(proc)
    if train is not None:
        rows.append(killed_training(train, data, work))
        rows.append(retrain_under_traffic(model, train, data, titles, work))

    for name, run in (("clean", clean), (f"{share:.0%} hostile", hostile)):
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run["valid_statuses"].items()))
        rows.append(
            (
                f"{concurrency} clients, {seconds:.0f} s ({rounds} rounds), {name}: /suggest",
                f"{run['valid_requests']} requests ({statuses}), p50 {run['p50_ms']:.0f} ms,"
                f" p99 {run['p99_ms']:.0f} ms",
                "yes" if set(run["valid_statuses"]) == {"200"} else "no",
            )
        )
    ratio = hostile["p99_ms"] / clean["p99_ms"]
    rows.append(("p99 of valid requests, hostile / clean", f"{ratio:.2f}x", _ok(ratio <= 2.0)))
    for kind, seen in hostile["hostile"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(seen["statuses"].items()))
        median = sorted(seen["ms"])[len(seen["ms"]) // 2]
        rows.append(
            (
                f"hostile: {kind} (should get {HOSTILE_ANSWER[kind]})",
                f"{seen['n']} sent: {statuses}; median {median:.0f} ms",
                _ok(answered_as_it_should(kind, seen["statuses"])),
            )
        )
    errors = sum(
        n
        for run in (clean, hostile)
        for statuses in [run["valid_statuses"], *(h["statuses"] for h in run["hostile"].values())]
        for s, n in statuses.items()
        if s.isdigit() and int(s) >= 500
    )
    rows.append(("5xx answers, both runs", str(errors), _ok(errors == 0)))
    counts = {s: reload_statuses.count(s) for s in sorted(set(reload_statuses))}
    rows.append(
        (
            "10 parallel /reload (5 forced) with the admin token",
            ", ".join(f"{k}: {v}" for k, v in counts.items()),
            _ok(all(s in (200, 429) for s in reload_statuses)),
        )
    )
    rows.append(("server alive after it all", str(alive), _ok(alive)))
    rows.append(("upload folders left in the server's TMPDIR", str(len(left)), _ok(not left)))
    rows.append(
        ("open files of the server, before / after", f"{fds0} / {fds1}", _ok(fds1 <= fds0 + 8))
    )
    rows.append(("server memory (RSS, MB), before / after", f"{rss0:.0f} / {rss1:.0f}", "-"))
    shutil.rmtree(work, ignore_errors=True)
    print_table(f"faults, live (bentoml serve, model {model})", rows)
    return 0


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    print("| tried | what came back | as it should |")
    print("|---|---|---|")
    for tried, got, ok in rows:
        print(f"| {tried} | {got} | {ok} |")


def train_command(train: Path, valid: Path, out: Path, *extra: str) -> list[str]:
    """``labelrec train`` of the default config on a small slice of a catalog (a minute)."""
    return [
        sys.executable,
        "-m",
        "labelrec.cli",
        "train",
        "--config",
        str(ROOT / "configs" / "default.yaml"),
        f"data.train={train}",
        f"data.valid={valid}",
        "data.max_products=600",
        "train.epochs=2",
        "train.refit=false",
        f"output={out}",
        "--no-progress",
        *extra,
    ]


def killed_training(train: Path, valid: Path, work: Path) -> tuple[str, str, str]:
    """Train once whole; train again, kill -9 during epoch 2, ``--resume``: the same model?"""
    import signal
    import subprocess

    from labelrec.train import STATE_FILE

    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(train_command(train, valid, work / "whole"), check=True, **quiet)
    killed = work / "killed"
    proc = subprocess.Popen(train_command(train, valid, killed), start_new_session=True, **quiet)
    while proc.poll() is None and not (killed / "checkpoints" / "epoch-1" / STATE_FILE).exists():
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2
    was_running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    complete_before = (killed / "labelrec.json").exists()
    resumed = subprocess.run(train_command(train, valid, killed, "--resume"), **quiet)

    def metrics(path: Path) -> tuple[float, float]:
        info = json.loads((path / "labelrec.json").read_text(encoding="utf-8"))
        return info["valid_metrics"]["P@1"], info["valid_metrics"]["nDCG@3"]

    a, b = metrics(work / "whole"), metrics(killed)
    same = all(abs(x - y) < 1e-4 for x, y in zip(a, b, strict=True))
    return (
        "kill -9 during epoch 2 of `labelrec train`, then `--resume`",
        f"killed while running: {was_running}; a model before the resume: {complete_before};"
        f" resume exit {resumed.returncode}; valid P@1 / nDCG@3 {b[0]:.4f} / {b[1]:.4f},"
        f" uninterrupted {a[0]:.4f} / {a[1]:.4f}",
        _ok(was_running and not complete_before and resumed.returncode == 0 and same),
    )


def retrain_under_traffic(
    model: Path, train: Path, valid: Path, titles: list[str], work: Path
) -> tuple[str, str, str]:
    """``labelrec train`` writes into the directory a server polls every second while 4 clients
    send /suggest: every answer 200, and the new model served at the end?"""
    import subprocess

    import httpx
    from serve import free_port, start, stop, wait_ready

    from labelrec.opener import fingerprint

    served = work / "served"
    shutil.copytree(model, served, ignore=shutil.ignore_patterns("checkpoints", "tuning"))
    before = fingerprint(served)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "LABELREC_MODEL_URI": str(served),
        "LABELREC_POLL_SECONDS": "1",
        "BENTOML_HOME": str(work / "bentoml2"),
    }
    log = work / "serve2.log"
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    proc = start([bentoml, "serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
    statuses: dict[str, int] = {}
    versions: list[str] = []
    final = None
    try:
        wait_ready(url, proc, log)
        trainer = subprocess.Popen(
            train_command(train, valid, served),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        async def traffic() -> None:
            async def client(i: int) -> None:
                async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                    n = 0
                    while trainer.poll() is None or n < 20:
                        title = titles[(4 * n + i) % len(titles)]
                        body = {"product": {"title": title}, "limit": 5}
                        try:
                            answer = await http.post("/suggest", json=body)
                            status = str(answer.status_code)
                            if answer.status_code == 200:
                                version = answer.json()["model_version"]
                                if not versions or versions[-1] != version:
                                    versions.append(version)
                        except httpx.HTTPError:
                            status = "599"
                        statuses[status] = statuses.get(status, 0) + 1
                        n += 1

            await asyncio.gather(*(client(i) for i in range(4)))

        asyncio.run(traffic())
        trainer.wait()
        after = fingerprint(served)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            final = httpx.get(f"{url}/model", timeout=10).json().get("version")
            if final == after:
                break
            time.sleep(1)
    finally:
        stop(proc)
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    return (
        "retrain into the served directory (1 s polling, 4 clients of /suggest)",
        f"{sum(statuses.values())} requests ({shown}); versions answered in order:"
        f" {' -> '.join(versions)}; /model at the end: {final} (the new files: {after})",
        _ok(set(statuses) == {"200"} and final == after != before and versions[:1] == [before]),
    )


def loop_stall(model: Path, patterns: int = 100, chars: int = 512) -> tuple[str, str, str]:
    """The service's event loop while /suggest_batch ranks its cap of products with as many
    long tag patterns as a request may have: the longest it went without running a 5 ms
    ticker (what every other request and the health checks wait for)."""
    os.environ.update(LABELREC_MODEL_URI=str(model), LABELREC_POLL_SECONDS="0")
    from labelrec.service import MAX_BATCH_PRODUCTS, LabelRec, ProductIn

    svc = LabelRec()
    # patterns that match no tag after a long scan: each is translated and tried on every tag
    exclude = [f"*{i}" + "x*" * ((chars - 8) // 2) + "q" for i in range(patterns)]
    exclude = [e[:chars] for e in exclude]
    products = [ProductIn(title=f"LEGO City police station {i}") for i in range(MAX_BATCH_PRODUCTS)]

    async def scenario() -> tuple[float, float]:
        stall = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal stall
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                stall = max(stall, now - last - 0.005)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        await svc.suggest_batch(products=products, limit=10, threshold=0.0, exclude=exclude)
        took = time.perf_counter() - t0
        done.set()
        await tick
        return stall, took

    try:
        asyncio.run(scenario())  # warm up: the model's first pass, the patterns compiled
        stall, took = asyncio.run(scenario())
    finally:
        svc.holder.stop()
    return (
        f"event loop during /suggest_batch: {len(products)} products, {patterns} exclude"
        f" patterns of {chars} chars",
        f"longest stall {stall * 1000:.0f} ms (the batch took {took:.2f} s)",
        _ok(stall < 0.1),
    )


def _ok(flag: bool) -> str:
    return "yes" if flag else "no"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "runs" / "minilm_amazon_uk_toys")
    p.add_argument("--repeats", type=int, default=5, help="timings per long title (median)")
    p.add_argument("--live", action="store_true", help="also run against `bentoml serve`")
    p.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "amazon_uk_toys" / "valid.jsonl",
        help="titles of the valid requests (--live)",
    )
    p.add_argument("--seconds", type=float, default=60, help="--live: seconds per load run")
    p.add_argument("--concurrency", type=int, default=32, help="--live: clients")
    p.add_argument("--share", type=float, default=0.1, help="--live: share of hostile requests")
    p.add_argument("--rounds", type=int, default=3, help="--live: clean/hostile alternations")
    p.add_argument(
        "--train",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "amazon_uk_toys" / "train.jsonl",
        help="--live: training catalog of the training faults ('' skips them)",
    )
    args = p.parse_args(argv)
    if not (args.model / "labelrec.json").is_file():
        raise SystemExit(f"{args.model} is not a model directory (labelrec train ... output=)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from labelrec.cli import main as cli
    from labelrec.model import ModelError
    from labelrec.predict import TagRecommender

    rows: list[tuple[str, str, str]] = []
    rec = TagRecommender.load(args.model)
    rec.suggest(["warm up"])
    for name, title in [
        ("normal title (40 chars)", "LEGO City Police Station building set 6+"),
        ("64 KB title, a brand repeated", ("LEGO " * 13_200)[:65_536]),
        ("1 MB title, a brand repeated", ("LEGO " * 210_000)[: 1 << 20]),
        ("1 MB title, 'cable ' repeated", ("cable " * 180_000)[: 1 << 20]),
    ]:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rec.suggest([title])
            times.append(time.perf_counter() - t0)
        median = sorted(times)[len(times) // 2]
        goal = "-" if name.startswith("normal") else ("yes" if median < 0.2 else "no")
        rows.append((f"suggest: {name}", f"{median:.3f} s (median of {args.repeats})", goal))

    work = Path(tempfile.mkdtemp(prefix="labelrec-faults-"))
    try:
        catalog = work / "c.jsonl"
        catalog.write_text(
            "".join(json.dumps({"id": str(i), "title": f"toy {i}"}) + "\n" for i in range(500)),
            encoding="utf-8",
        )
        before = catalog.read_bytes()
        link = work / "link.jsonl"
        link.symlink_to(catalog)
        for name, out in (("the same path", catalog), ("a symlink to it", link)):
            err = io.StringIO()
            stderr, sys.stderr = sys.stderr, err
            try:
                code = cli(["index", str(args.model), "--data", str(catalog), "--output", str(out)])
            finally:
                sys.stderr = stderr
            intact = catalog.read_bytes() == before
            rows.append(
                (
                    f"index --output {name} as --data",
                    f"exit {code}, input {'intact' if intact else 'CHANGED'}",
                    "yes" if code == 2 and intact else "no",
                )
            )

        from labelrec.batch import gunzip_capped
        from labelrec.errors import ServiceError

        bomb = gzip.compress(b'{"id": "1", "title": "x"}\n' + b" " * (64 << 20))
        target = work / "bomb.jsonl"
        try:
            gunzip_capped(io.BytesIO(bomb), target, "bomb.jsonl.gz", 1 << 20)
            status = "accepted"
        except ServiceError as err:
            status = str(err.status)
        written = target.stat().st_size if target.exists() else 0
        rows.append(
            (
                f"gzip upload of {len(bomb) >> 10} KB expanding to 64 MB, cap 1 MB",
                f"{status}, {written >> 10} KB written",
                "yes" if status == "413" and written <= 1 << 20 else "no",
            )
        )

        from labelrec.mlflow import flavor

        logged = work / "logged"
        flavor.save_model(args.model, logged)
        mlmodel = logged / "MLmodel"
        text = mlmodel.read_text(encoding="utf-8")
        mlmodel.write_text(text.replace("model_data: artifacts/", "model_data: ../"), "utf-8")
        try:
            flavor.download_model(str(logged))
            outcome = "loaded"
        except ModelError as err:
            outcome = f"refused ({str(err).split(': ', 1)[-1][:40]}...)"
        rows.append(
            (
                "MLmodel model_data outside the model",
                outcome,
                "yes" if "refused" in outcome else "no",
            )
        )

        from labelrec.train import STATE_FILE, complete_checkpoints

        ckpts = work / "checkpoints"
        for name, state in (("epoch-1", True), ("epoch-2", False), ("epoch-3.tmp", True)):
            (ckpts / name).mkdir(parents=True)
            if state:
                (ckpts / name / STATE_FILE).write_text("{}", encoding="utf-8")
        chosen = [c.name for c in complete_checkpoints(ckpts)]
        rows.append(
            (
                "--resume with epoch-1 complete, epoch-2 without state, epoch-3.tmp",
                f"takes {chosen[-1] if chosen else 'none'}",
                "yes" if chosen == ["epoch-1"] else "no",
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows.append(loop_stall(args.model))
    print_table(f"faults, in process (model {args.model})", rows)
    if args.live:
        train = args.train if str(args.train) not in ("", ".") else None
        return live(
            args.model, args.data, args.seconds, args.concurrency, args.share, args.rounds, train
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
