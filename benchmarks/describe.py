"""Benchmark: product descriptions written by a fine-tuned decoder vs copying a neighbour's.

For each catalog (train/valid files, or one file split by ``labelrec.data.split_products``), train
a describer on (a subset of) the training products that have a description, then on the first
``--eval-products`` valid products with a description measure ROUGE-L F1 (first 60 words,
lowercased) of

* the describer (``Describer.describe``: empty outputs replaced by the title-and-tags sentence,
  counted in "empty"),
* the baseline: copy the description of the most similar training product (TF-IDF over titles,
  scikit-learn, cosine),

and the describer's generation speed (products/s batched, p50 ms for one product), size on disk,
load time and training speed. Needs ``pip install 'labelrec[bench]'`` (rouge-score).

    python benchmarks/describe.py --catalogs amazon_in_sales --max-train-products 600 \\
        --epochs 1 --eval-products 100
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelrec.config import load_config  # noqa: E402
from labelrec.data import Product, read_catalog, split_products  # noqa: E402
from labelrec.describe import (  # noqa: E402
    Describer,
    fit_describer,
    is_describer_dir,
    rouge_l_scores,
)

CATALOGS = {
    "amazon_in_sales": ("train.jsonl", "valid.jsonl"),
    "myntra": ("catalog.jsonl", None),
}


def load_catalog(folder: Path, name: str, seed: int) -> tuple[list[Product], list[Product]]:
    """(train, valid) products, read without requiring tags."""
    train_file, valid_file = CATALOGS[name]
    products = read_catalog(folder / train_file, require_tags=False).products
    if valid_file is None:
        return split_products(products, 0.1, seed=seed)
    return products, read_catalog(folder / valid_file, require_tags=False).products


def nearest_title_baseline(train: list[Product], valid: list[Product]) -> list[str]:
    """The description of the training product whose title is most similar (TF-IDF cosine)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import linear_kernel

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vec.fit_transform([p.title for p in train])
    sims = linear_kernel(vec.transform([p.title for p in valid]), x_train)
    return [train[int(i)].description for i in sims.argmax(axis=1)]


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run_catalog(name: str, folder: Path, args: argparse.Namespace) -> dict[str, float | str]:
    train, valid = load_catalog(folder, name, args.seed)
    train = [p for p in train if p.description.strip()]
    valid = [p for p in valid if p.description.strip()][: args.eval_products]
    logging.info(
        "%s: %d training products with a description, %d valid evaluated",
        name,
        len(train),
        len(valid),
    )
    cfg = load_config(
        None,
        [
            f"describe.backbone={args.backbone}",
            f"describe.epochs={args.epochs}",
            f"describe.max_train_products={args.max_train_products}",
            f"describe.batch_size={args.batch_size}",
            f"describe.max_target_tokens={args.max_target_tokens}",
            f"describe.max_new_tokens={args.max_new_tokens}",
            f"describe.num_beams={args.num_beams}",
            f"describe.lr={args.lr}",
            f"seed={args.seed}",
        ],
    )
    out = Path(args.output) / name
    if args.reuse and is_describer_dir(out):  # measured before: only evaluate again
        logging.info("%s: reusing the describer in %s", name, out)
        meta = json.loads((out / "causal.json").read_text(encoding="utf-8"))
        history = meta["history"]
        n_train = int(meta["n_train"])
    else:
        describer, history = fit_describer(cfg.describe, train, args.seed, progress=args.progress)
        describer.meta["history"] = history
        n_train = int(describer.meta["n_train"])
        describer.save(out)
        del describer
    t0 = time.perf_counter()
    describer = Describer.load(out, device=args.device)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw = describer.generate(valid)
    gen_s = time.perf_counter() - t0
    texts = describer.describe(valid) if any(not t.strip() for t in raw) else raw
    singles = []
    for p in valid[: args.latency_products]:
        t0 = time.perf_counter()
        describer.generate([p])
        singles.append((time.perf_counter() - t0) * 1000)
    refs = [p.description for p in valid]
    baseline = nearest_title_baseline(train, valid)
    model_rouge = statistics.fmean(rouge_l_scores(texts, refs))
    base_rouge = statistics.fmean(rouge_l_scores(baseline, refs))
    if args.show:
        for p, t in list(zip(valid, texts, strict=True))[: args.show]:
            logging.info("%s\n  written: %s\n  real:    %s", p.title, t[:300], p.description[:300])
    return {
        "catalog": name,
        "train_products": n_train,
        "eval_products": len(valid),
        "rougeL_describer": model_rouge,
        "rougeL_baseline": base_rouge,
        "gain": model_rouge - base_rouge,
        "empty": sum(not t.strip() for t in raw),
        "gen_products_per_s": len(valid) / gen_s,
        "p50_ms_one": statistics.median(singles) if singles else float("nan"),
        "size_mb": dir_size_mb(out),
        "load_s": load_s,
        "train_products_per_s": float(history[-1]["products_per_s"]),
        "train_s": float(sum(h["epoch_seconds"] for h in history)),
        "final_loss": float(history[-1]["loss"]),
        "mean_words": statistics.fmean(len(t.split()) for t in texts),
    }


COLUMNS = [
    ("catalog", "catalog", "{}"),
    ("train_products", "train", "{}"),
    ("eval_products", "eval", "{}"),
    ("rougeL_describer", "ROUGE-L describer", "{:.4f}"),
    ("rougeL_baseline", "ROUGE-L nearest-title copy", "{:.4f}"),
    ("gain", "gain", "{:+.4f}"),
    ("empty", "empty", "{}"),
    ("gen_products_per_s", "gen products/s", "{:.2f}"),
    ("p50_ms_one", "p50 ms (1 product)", "{:.0f}"),
    ("size_mb", "size MB", "{:.0f}"),
    ("load_s", "load s", "{:.1f}"),
    ("train_products_per_s", "train products/s", "{:.2f}"),
    ("mean_words", "words written", "{:.0f}"),
]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows:
        lines.append("| " + " | ".join(f.format(row[k]) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--catalogs", nargs="+", default=list(CATALOGS), choices=list(CATALOGS))
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--backbone", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--max-train-products", type=int, default=600)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--eval-products", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-target-tokens", type=int, default=96)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--latency-products", type=int, default=5, help="single-product timings")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--output", default="/tmp/labelrec-describe-bench", help="describers go here")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--show", type=int, default=3, help="log this many written descriptions")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--progress", action="store_true", help="training progress bars")
    p.add_argument("--reuse", action="store_true", help="evaluate describers already in --output")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 on a shared, busy CPU)"
    )
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("transformers", "accelerate", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    rows = []
    for name in args.catalogs:
        folder = Path(args.data_root) / name
        if not folder.is_dir():
            print(f"{name}: skipped, {folder} does not exist", file=sys.stderr)
            continue
        rows.append(run_catalog(name, folder, args))
        print(table(rows[-1:]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if rows:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
