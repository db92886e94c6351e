#!/usr/bin/env python
"""Hostile input and faults, in process: one table of what was tried and what came back.

    .venv/bin/python benchmarks/faults.py --model runs/minilm_amazon_uk_toys

Checks, each a row:
- long titles (64 KB and 1 MB: a brand repeated, a word repeated) answered by
  ``TagRecommender.recommend``, in seconds (goal: under 0.2 s), beside a normal title;
- ``labelrec index`` asked to write over its own input (directly and through a symlink): exit
  code, and whether the input is intact;
- a gzip upload that expands past the cap (``service.gunzip_capped``): the status, and the bytes
  written before it stopped;
- a model directory whose MLmodel points ``model_data`` outside the logged model: refused?
- a checkpoint cut short (``epoch-N.tmp``, a folder without its state file): which one
  ``--resume`` would take.

The live part of the hardening issue (``bentoml serve`` under hostile load, kill -9 during
training, parallel reloads) is not here.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "runs" / "minilm_amazon_uk_toys")
    p.add_argument("--repeats", type=int, default=5, help="timings per long title (median)")
    args = p.parse_args(argv)
    if not (args.model / "labelrec.json").is_file():
        raise SystemExit(f"{args.model} is not a model directory (labelrec train ... output=)")
    from labelrec.cli import main as cli
    from labelrec.model import ModelError
    from labelrec.predict import TagRecommender

    rows: list[tuple[str, str, str]] = []
    rec = TagRecommender.load(args.model)
    rec.recommend(["warm up"])
    for name, title in [
        ("normal title (40 chars)", "LEGO City Police Station building set 6+"),
        ("64 KB title, a brand repeated", ("LEGO " * 13_200)[:65_536]),
        ("1 MB title, a brand repeated", ("LEGO " * 210_000)[: 1 << 20]),
        ("1 MB title, 'cable ' repeated", ("cable " * 180_000)[: 1 << 20]),
    ]:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rec.recommend([title])
            times.append(time.perf_counter() - t0)
        median = sorted(times)[len(times) // 2]
        goal = "-" if name.startswith("normal") else ("yes" if median < 0.2 else "no")
        rows.append((f"recommend: {name}", f"{median:.3f} s (median of {args.repeats})", goal))

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

        from labelrec import service

        cap = service.MAX_UPLOAD_BYTES
        service.MAX_UPLOAD_BYTES = 1 << 20
        bomb = gzip.compress(b'{"id": "1", "title": "x"}\n' + b" " * (64 << 20))
        target = work / "bomb.jsonl"
        try:
            service.gunzip_capped(io.BytesIO(bomb), target, "bomb.jsonl.gz")
            status = "accepted"
        except service.ServiceError as err:
            status = str(err.status)
        finally:
            service.MAX_UPLOAD_BYTES = cap
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

    print(f"\nfaults, in process (model {args.model})")
    print("| tried | what came back | as it should |")
    print("|---|---|---|")
    for tried, got, ok in rows:
        print(f"| {tried} | {got} | {ok} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
