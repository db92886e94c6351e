#!/usr/bin/env python
"""The feedback store under concurrent writers: p50 per review and reviews written per second.

    .venv/bin/python benchmarks/feedback.py                       # SQLite in a temporary folder
    .venv/bin/python benchmarks/feedback.py --postgres postgresql+psycopg://user@host:5432/db

Each of ``--concurrency`` threads stores reviews (``FeedbackStore.add``: one committed
transaction each) for ``--seconds``; the table gives per database the reviews written, the p50
and p99 of one write and the writes per second, then checks that every review is there. This is
the database part of ``POST /feedback``; the HTTP part is the service's, as for every endpoint.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def measure(uri: str, concurrency: int, seconds: float) -> dict[str, float]:
    from labelrec.feedback import FeedbackStore, Review

    store = FeedbackStore(uri)
    before = len(store)
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def writer(n: int) -> None:
        own = []
        i = 0
        while time.perf_counter() < stop:
            review = Review(
                title=f"bench product {n}-{i}",
                product_id=f"bench-{n}-{i}",
                accepted=["Toys", "brand:Lego"],
                rejected=["Books"],
                added=["Toys > Building Sets"],
                reviewer=f"bench{n}",
                model_version="bench",
            )
            t0 = time.perf_counter()
            store.add(review)
            own.append(time.perf_counter() - t0)
            i += 1
        with lock:
            latencies.extend(own)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    stored = len(store) - before
    return {
        "written": len(latencies),
        "stored": stored,
        "p50_ms": 1000 * float(np.median(latencies)),
        "p99_ms": 1000 * float(np.quantile(latencies, 0.99)),
        "per_s": len(latencies) / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--postgres", default=None, help="a PostgreSQL SQLAlchemy URL to measure too")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="labelrec-feedback-bench-") as tmp:
        targets = {"SQLite (WAL)": f"sqlite:///{Path(tmp) / 'feedback.db'}"}
        if args.postgres:
            targets["PostgreSQL"] = args.postgres
        rows = {name: measure(uri, args.concurrency, args.seconds) for name, uri in targets.items()}
    print(f"\nfeedback store: {args.concurrency} writers for {args.seconds:.0f} s each database")
    print("| database | reviews written | stored (counted after) | p50 ms | p99 ms | reviews/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['written']} | {r['stored']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f}"
            f" | {r['per_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
