#!/usr/bin/env python
"""A simulated review loop: do reviewers' verdicts make the next model better?

    .venv/bin/python benchmarks/review_loop.py --catalog amazon_uk_toys --output runs/review_uk \
        train.tuning_folds=1

The catalog's train split is cut by a seeded hash of the product id into 80% "initial" and 20%
"reviewed"; its valid split into two halves, "tune" (the valid split every model below trains
with: early stopping, fusion weights, thresholds) and "report" (where every row is measured).

1. A model trained on the initial part suggests tags for the reviewed products (its tuned
   thresholds, at most ``--limit`` tags).
2. A simulated reviewer accepts the suggestions that are gold tags, rejects the others and adds
   the gold tags that were not suggested. The reviews go through the feedback store
   (``labelrec.feedback``, a SQLite file in ``--output``) and its export, as the service's would.
3. Rows, all measured on the report half:
   - initial: the model of step 1;
   - feedback: trained on the initial part with ``data.feedback`` = the export (accepted and
     added tags as labels, rejected ones as known negatives, ``train.negative_weight``);
   - plain labels: trained on the initial part plus the reviewed products with their gold tags
     (the same positive labels as the feedback row, without the negatives).

Prints a Markdown table; ``--json`` saves it. Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
COLUMNS = ("P@1", "P@3", "nDCG@3", "PSP@5", "micro_f1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--catalog", required=True, help="folder name under --data")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared catalogs root")
    p.add_argument("--output", type=Path, required=True, help="working folder")
    p.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    p.add_argument("--reviewed-share", type=float, default=0.2, help="share of train reviewed")
    p.add_argument("--limit", type=int, default=10, help="tags suggested per reviewed product")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, default=None, help="write the table here too")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=2")
    return p.parse_args(argv)


def share(product_id: str, seed: int) -> float:
    """A stable number in [0, 1) per id and seed."""
    digest = hashlib.sha1(f"{seed}:{product_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def write_jsonl(products: list, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for p in products:
            row = {"id": p.id, "title": p.title, "description": p.description, "tags": p.tags}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from labelrec.config import load_config
    from labelrec.data import read_catalog
    from labelrec.evaluate import evaluate_scores_on
    from labelrec.feedback import FeedbackStore, Review
    from labelrec.predict import TagRecommender
    from labelrec.train import train

    folder = args.data / args.catalog
    if not folder.is_dir():
        raise SystemExit(f"{folder} does not exist (shared catalogs live in ../shared/data)")
    out = args.output
    base_cfg = load_config(args.config, list(args.overrides))
    train_all = read_catalog(folder / "train.jsonl", base_cfg.data).products
    valid_all = read_catalog(folder / "valid.jsonl", base_cfg.data).products
    initial = [p for p in train_all if share(p.id, args.seed) >= args.reviewed_share]
    reviewed = [p for p in train_all if share(p.id, args.seed) < args.reviewed_share]
    tune = [p for p in valid_all if share(p.id, args.seed + 1) < 0.5]
    report = [p for p in valid_all if share(p.id, args.seed + 1) >= 0.5]
    files = {
        "initial": write_jsonl(initial, out / "data" / "initial.jsonl"),
        "plain": write_jsonl(initial + reviewed, out / "data" / "initial_plus_reviewed.jsonl"),
        "tune": write_jsonl(tune, out / "data" / "tune.jsonl"),
    }
    columns = [
        f"data.{k}={v}"
        for k, v in (("id_column", "id"), ("title_column", "title"), ("tag_columns", "[tags]"))
    ]
    columns += ["data.description_column=description", "data.tag_prefixes=null"]
    columns += ["data.hierarchy_separator=null", "data.max_products=null"]

    def fit(name: str, train_file: Path, *extra: str) -> tuple[Path, float]:
        overrides = [*args.overrides, *columns, f"data.train={train_file}"]
        overrides += [f"data.valid={files['tune']}", f"output={out / name}", f"seed={args.seed}"]
        cfg = load_config(args.config, overrides + list(extra))
        print(f"training {name} ...", file=sys.stderr)
        t0 = time.perf_counter()
        train(cfg, progress=False)
        return out / name, time.perf_counter() - t0

    def measure(model_dir: Path) -> dict[str, float]:
        rec = TagRecommender.load(model_dir)
        scores, _ = rec.predict_scores(report)
        return evaluate_scores_on(
            scores, report, rec.vocab, rec.tag_thresholds, hierarchy=rec.hierarchy
        ).metrics

    rows: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    model, seconds["initial"] = fit("initial", files["initial"])
    rows["initial (80% of train)"] = measure(model)

    rec = TagRecommender.load(model)
    store_path = out / "feedback.db"
    store_path.unlink(missing_ok=True)
    store = FeedbackStore(f"sqlite:///{store_path}")
    counts = {"accepted": 0, "rejected": 0, "added": 0}
    for product, suggested in zip(reviewed, rec.suggest(reviewed, limit=args.limit), strict=True):
        gold = set(product.tags)
        shown = [s.tag for s in suggested]
        review = Review(
            title=product.title,
            description=product.description,
            product_id=product.id,
            accepted=[t for t in shown if t in gold],
            rejected=[t for t in shown if t not in gold],
            added=[t for t in product.tags if t not in shown],
            reviewer="simulated",
            model_version="initial",
        )
        store.add(review)
        for key in counts:
            counts[key] += len(getattr(review, key))
    export = out / "data" / "reviewed.jsonl"
    store.export(export)

    model, seconds["feedback"] = fit("feedback", files["initial"], f"data.feedback={export}")
    rows["retrained with the reviews (labels + rejected as negatives)"] = measure(model)
    model, seconds["plain"] = fit("plain", files["plain"])
    rows["retrained with the reviewed products' plain labels"] = measure(model)

    negative_weight = load_config(args.config, list(args.overrides)).train.negative_weight
    print(
        f"\n{args.catalog}: {len(initial)} initial and {len(reviewed)} reviewed training products"
        f" ({counts['accepted']} tags accepted, {counts['rejected']} rejected, {counts['added']}"
        f" added); tuned on {len(tune)} valid products, reported on the other {len(report)};"
        f" train.negative_weight {negative_weight}"
    )
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in COLUMNS) + " |")
    print("\ntraining seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    if args.json:
        payload = {
            "catalog": args.catalog,
            "rows": rows,
            "counts": counts,
            "seconds": seconds,
            "negative_weight": negative_weight,
            "n": {"initial": len(initial), "reviewed": len(reviewed), "report": len(report)},
            "args": vars(args),
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
