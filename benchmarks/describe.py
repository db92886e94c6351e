"""Benchmark: product descriptions written by a fine-tuned decoder vs copying a neighbour's.

For each catalog (train/valid files, or one file split by ``labelrec.data.split_products``), train
a describer on (a subset of) the training products that have a description, then on the first
``--eval-products`` valid products with a description measure ROUGE-L F1 (first 60 words,
lowercased) of

* the describer (``Describer.describe``: empty outputs replaced by the title-and-tags sentence,
  counted in "empty"); with ``--reference`` (the default) its prompt shows the most similar
  training product and its description,
* the baseline: copy the description of the most similar training product, with the same
  neighbour definition as the describer's reference (``labelrec.describe.NeighbourIndex``: TF-IDF
  cosine over titles, word 1-2-grams + character 2-5-grams, all training products with a
  description); the reference the describer saw is exactly the text this baseline copies,
* for comparison with earlier rows, the old baseline: the same copy with word 1-2-gram TF-IDF
  only,

and the describer's generation speed (products/s batched, p50 ms for one product), size on disk,
load time and training speed. Needs ``pip install 'labelrec[bench]'`` (rouge-score).

    python benchmarks/describe.py --catalogs amazon_in_sales --max-train-products 600 \\
        --epochs 1 --eval-products 100

"ROUGE-L vs reference" is the describer's output scored against the reference description it was
shown (1.0: a verbatim copy): how much it copies versus edits.

``--copy-ceiling`` trains nothing: it prints how far copying can go, the ROUGE-L of the best of
the K most similar training products' descriptions chosen with hindsight (knowing the real
description), for K in ``CEILING_K``: what any choice among the K nearest, a describer that
copies one of them included, cannot exceed.
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
    DECODING,
    Describer,
    NeighbourIndex,
    against_copying,
    fit_describer,
    is_describer_dir,
    rouge_l_scores,
)

CEILING_K = (1, 3, 10)  # neighbours among which --copy-ceiling picks the best with hindsight
TRAIN_MAX_NEW_TOKENS = 96  # a describer trained here writes at most this many tokens by default

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


def nearest_title_baseline(index: NeighbourIndex, valid: list[Product]) -> list[str]:
    """The description of the indexed training product whose title is most similar: the text
    the describer's reference shows (same index, same definition)."""
    return [r[1] if r else "" for r in index.references([p.title for p in valid])]


def copy_ceiling(name: str, folder: Path, seed: int) -> dict[str, float | str]:
    """ROUGE-L of copying the best of the K nearest training descriptions, chosen with hindsight,
    on every valid product with a description (K = 1 is the baseline)."""
    import numpy as np

    train, valid = load_catalog(folder, name, seed)
    train = [p for p in train if p.description.strip()]
    valid = [p for p in valid if p.description.strip()]
    index = NeighbourIndex.fit(train)
    k_max = min(max(CEILING_K), len(index))
    order = index.ranked([p.title for p in valid], k_max)  # the nearest first, as copying
    scores = np.array(
        [
            rouge_l_scores([index.descriptions[j] for j in row], [p.description] * len(row))
            for row, p in zip(order, valid, strict=True)
        ]
    )
    row: dict[str, float | str] = {"catalog": name, "eval_products": len(valid)}
    for k in CEILING_K:
        row[f"best_of_{k}"] = float(scores[:, : min(k, k_max)].max(axis=1).mean())
    return row


def ceiling_table(rows: list[dict]) -> str:
    head = ["catalog", "eval", *(f"best of {k} nearest, with hindsight" for k in CEILING_K)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["catalog"]), str(r["eval_products"])]
        cells += [f"{r[f'best_of_{k}']:.4f}" for k in CEILING_K]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def word_tfidf_baseline(train: list[Product], valid: list[Product]) -> list[str]:
    """The earlier baseline: nearest title by word 1-2-gram TF-IDF only (cosine)."""
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
    decoding = {k: getattr(args, k) for k in DECODING if getattr(args, k, None) is not None}
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
            f"describe.max_prompt_tokens={args.max_prompt_tokens}",
            f"describe.reference={str(args.reference).lower()}",
            f"describe.reference_chars={args.reference_chars}",
            f"describe.lr={args.lr}",
            f"seed={args.seed}",
            *(
                f"describe.{k}={v}"
                for k, v in {"max_new_tokens": TRAIN_MAX_NEW_TOKENS, **decoding}.items()
            ),
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
    describer = describer.with_decoding(**decoding)  # a reused one writes with these settings

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
    index = describer.index if describer.index is not None else NeighbourIndex.fit(train)
    baseline = nearest_title_baseline(index, valid)
    scored = against_copying(texts, baseline, refs, seed=args.seed)
    model_rouge, base_rouge = scored["rougeL_f1"], scored["rougeL_copy_nearest"]
    word_rouge = statistics.fmean(rouge_l_scores(word_tfidf_baseline(train, valid), refs))
    shown = describer.references(valid)
    vs_reference = float("nan")
    if describer.index is not None:
        vs_reference = statistics.fmean(rouge_l_scores(texts, [r[1] if r else "" for r in shown]))
    if args.show:
        for p, t in list(zip(valid, texts, strict=True))[: args.show]:
            logging.info("%s\n  written: %s\n  real:    %s", p.title, t[:300], p.description[:300])
        for p, t, r in list(zip(valid, texts, shown, strict=True))[: args.show]:
            if r is not None:
                logging.info("%s\n  reference: %s\n  written:   %s", p.title, r[1][:300], t[:300])
    return {
        "catalog": name,
        "reference": "yes" if describer.index is not None else "no",
        "train_products": n_train,
        "eval_products": len(valid),
        "rougeL_describer": model_rouge,
        "rougeL_baseline": base_rouge,
        "gain": model_rouge - base_rouge,
        "gain_low": scored["rougeL_gain_low"],
        "gain_high": scored["rougeL_gain_high"],
        "rougeL_word_baseline": word_rouge,
        "rougeL_vs_reference": vs_reference,
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
    ("reference", "reference", "{}"),
    ("train_products", "train", "{}"),
    ("eval_products", "eval", "{}"),
    ("rougeL_describer", "ROUGE-L describer", "{:.4f}"),
    ("rougeL_baseline", "ROUGE-L copy nearest (word+char index)", "{:.4f}"),
    ("gain", "gain", "{:+.4f}"),
    ("gain_interval", "gain 95% interval", "{}"),
    ("rougeL_word_baseline", "ROUGE-L copy nearest (word 1-2-gram index)", "{:.4f}"),
    ("rougeL_vs_reference", "ROUGE-L vs reference", "{:.3f}"),
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
        cells = {**row, "gain_interval": f"{row['gain_low']:+.4f} to {row['gain_high']:+.4f}"}
        lines.append("| " + " | ".join(f.format(cells[k]) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--catalogs", nargs="+", default=list(CATALOGS), choices=list(CATALOGS))
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--backbone", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--max-train-products", type=int, default=600)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument(
        "--eval-products",
        type=lambda v: None if v == "all" else int(v),
        default=100,
        help="the first N valid products with a description, or all",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-target-tokens", type=int, default=96)
    p.add_argument("--max-prompt-tokens", type=int, default=192)
    p.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show the nearest training product's description in the prompt",
    )
    p.add_argument("--reference-chars", type=int, default=400)
    # Decoding: unset keeps the reused describer's setting, or when training the config's
    # default (max_new_tokens: TRAIN_MAX_NEW_TOKENS).
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--no-repeat-ngram-size", type=int, default=None)
    p.add_argument("--latency-products", type=int, default=5, help="single-product timings")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--output", default="/tmp/labelrec-describe-bench", help="describers go here")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--show", type=int, default=3, help="log this many written descriptions")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--progress", action="store_true", help="training progress bars")
    p.add_argument("--reuse", action="store_true", help="evaluate describers already in --output")
    p.add_argument(
        "--copy-ceiling",
        action="store_true",
        help="train nothing: ROUGE-L of the best of the K nearest descriptions, with hindsight",
    )
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
        if args.copy_ceiling:
            rows.append(copy_ceiling(name, folder, args.seed))
        else:
            rows.append(run_catalog(name, folder, args))
            print(table(rows[-1:]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if rows:
        print(ceiling_table(rows) if args.copy_ceiling else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
