"""What storing a tagger's merged weights in bfloat16 (``model.save_dtype``) costs.

Writes a copy of a saved model directory whose weights go through labelrec's ``save_model`` in
the given dtype, then scores a catalog with both (each loads in float32) and prints size on disk,
load time, the largest score difference and the quality metrics side by side.

    python benchmarks/save_dtype.py --model runs/gemma_cls_uk_all \\
        --data ../shared/data/amazon_uk_toys/valid.jsonl --json runs/save_dtype_uk.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

METRICS = ("P@1", "nDCG@3", "PSP@5", "micro_f1", "macro_f1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a saved labelrec model directory")
    p.add_argument("--data", type=Path, required=True, help="labelled products to score")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--output", type=Path, help="the copy (default: MODEL-DTYPE)")
    p.add_argument("--json", type=Path, help="write the results here too")
    return p.parse_args(argv)


def resave(model_dir: Path, out: Path, dtype: str) -> None:
    """``out``: ``model_dir`` with its tagger weights written again by ``save_model``."""
    from labelrec.model import ModelInfo, load_model, save_model

    model, tokenizer, info = load_model(model_dir)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(
        model_dir, out, ignore=shutil.ignore_patterns("model.safetensors", "checkpoints", "tuning")
    )
    again = ModelInfo(info["backbone"], info["pooling"], info["max_length"], info["n_tags"])
    scratch = "labelrec.resave.json"  # the copied labelrec.json (head bias, config) stays
    save_model(model, tokenizer, out, again, info_file=scratch, dtype=dtype)
    (out / scratch).unlink()


def measure(model_dir: Path, products: list) -> tuple[dict[str, float], object]:
    from labelrec.evaluate import evaluate_scores_on
    from labelrec.predict import TagRecommender

    t0 = time.perf_counter()
    rec = TagRecommender.load(model_dir)
    load_s = time.perf_counter() - t0
    scores, _ = rec.score(products)
    result = evaluate_scores_on(
        scores, products, rec.vocab, rec.thresholds(None), hierarchy=rec.hierarchy
    ).metrics
    size = (model_dir / "model.safetensors").stat().st_size / 2**20
    row = {"weights MB": round(size, 1), "load s": round(load_s, 1)}
    row.update({k: round(float(result[k]), 4) for k in METRICS if k in result})
    return row, scores


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from labelrec.data import read_catalog

    args = parse_args(argv)
    out = args.output or args.model.with_name(f"{args.model.name}-{args.dtype}")
    resave(args.model, out, args.dtype)
    products = read_catalog(args.data).products
    base, base_scores = measure(args.model, products)
    copy, copy_scores = measure(out, products)
    diff = float(np.abs(np.asarray(base_scores) - np.asarray(copy_scores)).max())
    rows = {f"as saved ({args.model})": base, f"{args.dtype} ({out})": copy}
    keys = list(base)
    print(f"{args.data}, {len(base_scores)} products")
    print("| weights | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(str(row[k]) for k in keys) + " |")
    print(f"largest score difference: {diff:.5f}")
    if args.json:
        payload = {"data": str(args.data), "rows": rows, "max_score_difference": diff}
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
