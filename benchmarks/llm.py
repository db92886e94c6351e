#!/usr/bin/env python
"""Generated tags: a decoder LLM as one more voter beside a trained labelrec model, in one table.

    .venv/bin/labelrec train --config configs/default.yaml train.refit=false \
        data.train=../shared/data/amazon_uk_toys/train.jsonl \
        data.valid=../shared/data/amazon_uk_toys/valid.jsonl output=runs/minilm_uk_norefit
    .venv/bin/python benchmarks/llm.py --catalog amazon_uk_toys --base runs/minilm_uk_norefit \
        --backbone HuggingFaceTB/SmolLM2-135M-Instruct --train-products 6493 --eval-products 984 \
        --output runs/llm_uk_full

The base model (a ``labelrec train`` output trained without refit: it must not have trained on
valid) is copied to ``--output``; the generator is fine-tuned on a random ``--train-products`` of
the catalog's train split (all of it when that is its size). The valid products evaluated
(``--eval-products``, a random subset, or all) are split in two halves by a seeded shuffle. On one
half the generator's fusion weights (for vocabulary tags and for new tags), the new-tag threshold
and every row's tag thresholds are tuned; the rows are measured on the other half; then the halves
swap. The table gives the mean of the two directions (each direction is printed below it), so no
number comes from products it was tuned on. Rows: the base model alone (its fusion of neural, kNN
and span voters), the generator alone, the two fused, and the base model and the fused ranking each
re-scored by a reranker (``labelrec.rerank``) fitted on the tuning half. ``facet brand new P@1`` is
the first-place hit rate among brand tags for products whose gold brand is not in the vocabulary
(only open-vocabulary taggers can get these); the lines below the table say how many such products
there are, and for how many the span tagger or the generator proposes the value. The generator is
then saved into ``--output`` with the weights and thresholds tuned on the first half, which makes
that directory a complete model (``labelrec eval``/``suggest`` use it). ``--reuse`` takes the
generator already in ``--output`` (no training) and caches its votes there (``bench_votes.pkl``), so
the table can be recomputed in a minute; with ``generate.num_beams=N`` among the overrides it
decodes with N beams instead of the saved generator's. The base model's factor on known tags
absent from the title (``lexical.absent_factor``, ``labelrec.fusion``) is tuned on each tuning
half like the generator's weights; ``lexical.absent_factor=X`` among the overrides fixes it.

Needs ``../shared/data`` and an offline LLM (``make install-llm``) or a local decoder directory.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
FACETS = {"amazon_uk_toys": ("brand:",), "zh_taobao": ("品牌:", "型号:", "品类:")}
COLUMNS = ("P@1", "P@3", "nDCG@3", "PSP@5", "micro_f1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--catalog", required=True, help="folder name under --data")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared catalogs root")
    p.add_argument("--base", type=Path, required=True, help="a trained labelrec model directory")
    p.add_argument("--output", type=Path, required=True, help="model directory to write")
    p.add_argument("--backbone", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--config", default=str(ROOT / "configs" / "llm.yaml"))
    p.add_argument("--train-products", type=int, default=None, help="random training subset")
    p.add_argument("--eval-products", type=int, default=None, help="random valid subset")
    p.add_argument("--epochs", type=int, default=None, help="override generate.epochs")
    p.add_argument("--latency-products", type=int, default=20, help="one-product p50 sample")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, default=None, help="write the rows here too")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="use the generator already in --output (no training) and cache its votes there",
    )
    p.add_argument(
        "--whole-vocabulary",
        action="store_true",
        help="decode over the backbone's whole vocabulary, not the narrowed one (to compare)",
    )
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. generate.num_beams=6")
    return p.parse_args(argv)


def evaluate(
    known, new, products, vocab, thresholds, new_threshold, facets, hierarchy=None
) -> dict[str, float]:
    """The rows' metrics; ``hierarchy``: the model's, so that a category path is decided only
    under a decided parent, as the model decides (``TagRecommender.decisions``)."""
    from labelrec.taggers.span import evaluate_with_new_tags, kind_precision

    out = evaluate_with_new_tags(
        known, new, products, vocab, thresholds, new_threshold, hierarchy=hierarchy
    ).metrics
    for prefix in facets:
        out.update(kind_precision(known, new, products, vocab, prefix))
    return out


def new_facet_reach(products, vocab, prefix, proposals) -> dict[str, int]:
    """Products whose gold ``prefix`` tag is not in the vocabulary, those where its value occurs
    in the title, and those where ``proposals`` (new tags per product, any voter) hold it: the
    most that any ranking of these proposals could put first."""
    from labelrec.rerank import tag_value

    out = {"products": 0, "in title": 0, "proposed": 0}
    for product, proposed in zip(products, proposals, strict=True):
        gold = [t for t in product.tags if t.startswith(prefix) and t not in vocab.index]
        if not gold:
            continue
        title = product.title.lower()
        out["products"] += 1
        out["in title"] += any(tag_value(t, None) in title for t in gold)
        out["proposed"] += any(t in proposed for t in gold)
    return out


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from labelrec import metrics
    from labelrec.config import load_config
    from labelrec.data import category_separator, read_catalog
    from labelrec.fusion import blend, tune_absent_factor, tune_generator
    from labelrec.model import read_info, save_thresholds
    from labelrec.modeldir import THRESHOLDS_FILE
    from labelrec.predict import TagRecommender
    from labelrec.rerank import Reranker
    from labelrec.taggers.generator import TagGenerator, fit_generator

    # whole splits: --train-products and --eval-products draw the random subsets
    overrides = [
        f"generate.backbone={args.backbone}",
        "generate.enabled=true",
        "data.max_products=null",
    ]
    if args.train_products:
        overrides.append(f"generate.max_train_products={args.train_products}")
    if args.epochs:
        overrides.append(f"generate.epochs={args.epochs}")
    cfg = load_config(args.config, overrides + list(args.overrides))
    folder = args.data / args.catalog
    if not folder.is_dir():
        raise SystemExit(f"{folder} does not exist (shared catalogs live in ../shared/data)")
    reuse = args.reuse and (args.output / "generator").is_dir()
    if read_info(args.output if reuse else args.base).get("refit"):  # before --output is replaced
        raise SystemExit(
            f"{args.base} was refit on train + valid (train.refit); its scores on valid would not "
            "be held out: train the base with train.refit=false"
        )
    if not reuse and args.output.resolve() != args.base.resolve():
        shutil.rmtree(args.output, ignore_errors=True)
        shutil.copytree(args.base, args.output, ignore=shutil.ignore_patterns("checkpoints"))
    rec = TagRecommender.load(args.output, generate=False, rerank=False)
    vocab = rec.vocab
    data_cfg = cfg.data
    train = read_catalog(folder / "train.jsonl", data_cfg).products
    valid = read_catalog(folder / "valid.jsonl", data_cfg).products
    rng = random.Random(args.seed)
    if args.eval_products and args.eval_products < len(valid):
        valid = rng.sample(valid, args.eval_products)
    else:
        valid = rng.sample(valid, len(valid))
    half = len(valid) // 2
    facets = FACETS.get(args.catalog, ())

    lexical_cfg = load_config(None, [])
    info_cfg = rec.info.get("config") or {}
    for section, key in (
        ("lexical", "path_separator"),
        ("lexical", "ancestor_consistency"),
        ("lexical", "span_max_chars"),
        ("data", "hierarchy_separator"),
    ):  # as the base model was trained: its category paths and spans
        if key in (info_cfg.get(section) or {}):
            setattr(getattr(lexical_cfg, section), key, info_cfg[section][key])
    old: dict = {}
    if reuse:
        generator = TagGenerator.load(args.output, vocab)
        if any(o.startswith("generate.num_beams=") for o in args.overrides):
            generator.num_beams = cfg.generate.num_beams  # decode it with other beams
        # training speed comes from the run that trained it, when its --json is at hand
        old = (
            json.loads(args.json.read_text("utf-8"))["speed"]
            if args.json and args.json.is_file()
            else {}
        )
        history = [{"products_per_s": old.get("train products/s", float("nan"))}]
        train_s = old.get("train s", float("nan"))
    else:
        print(f"training the generator ({cfg.generate.backbone}) ...", file=sys.stderr)
        t0 = time.perf_counter()
        generator, history = fit_generator(
            cfg.generate,
            lexical_cfg.lexical,
            train,
            vocab,
            args.seed,
            path_separator=category_separator(lexical_cfg),
        )
        train_s = time.perf_counter() - t0

    generator.narrow = generator.narrow and not args.whole_vocabulary
    absent = None  # the base's factor on known tags absent from the title, tuned on each half
    if rec.fusion is not None and rec.fusion.span is not None:
        if cfg.lexical.absent_factor is None:
            absent = rec.fusion.span.absent(valid)
            rec.fusion.absent_factor = 1.0
        else:  # lexical.absent_factor=X among the overrides: the base scored with X instead
            rec.fusion.absent_factor = cfg.lexical.absent_factor
    base_votes = rec.votes(valid)  # every voter's part: what the reranker reads
    base_known, base_new = base_votes.final, base_votes.final_new
    fusion = rec.fusion
    parents = fusion.parents if fusion is not None and fusion.ancestor_consistency else None
    cache = args.output / "bench_votes.pkl"
    ids = [p.id for p in valid]
    cached = pickle.loads(cache.read_bytes()) if reuse and cache.is_file() else {}
    if (
        cached.get("ids") != ids
        or cached.get("narrow", False) != generator.narrow
        or cached.get("num_beams", generator.num_beams) != generator.num_beams
    ):
        cached = {}
    t0 = time.perf_counter()
    if cached:
        gen_known, gen_new, gen_s = cached["known"], cached["new"], cached["seconds"]
    else:
        gen_known, gen_new = generator.votes(valid, progress=True)
        gen_s = time.perf_counter() - t0
        payload = {"ids": ids, "known": gen_known, "new": gen_new, "seconds": gen_s}
        payload["narrow"] = generator.narrow
        payload["num_beams"] = generator.num_beams
        cache.write_bytes(pickle.dumps(payload))
    lat = []
    for p in valid[: args.latency_products if not cached else 0]:
        t1 = time.perf_counter()
        generator.votes([p])
        lat.append(time.perf_counter() - t1)

    first, second = np.arange(half), np.arange(half, len(valid))

    def reranked(tune, report, tune_p, report_p, y_t, final_t, new_t, final_r, new_r, gen, cut):
        """The reranker (``labelrec.rerank``) over every voter's scores (the generator's too when
        ``gen`` holds its votes on both halves), fitted on the tuning half as training fits it on
        valid, thresholds from its out-of-fold scores there: (it or None, its row on
        ``report``, or the unreranked scores' row when it is not kept, with ``cut``, their
        new-tag threshold)."""
        votes_t, votes_r = base_votes.take(tune), base_votes.take(report)
        votes_t.final, votes_t.final_new = final_t, new_t
        votes_r.final, votes_r.final_new = final_r, new_r
        if gen is not None:
            votes_t.gen_known, votes_t.gen_new, votes_r.gen_known, votes_r.gen_new = gen
        reranker, scores, _, _ = Reranker.fit(
            tune_p,
            vocab,
            votes_t,
            fusion.separator,
            parents,
            cfg.lexical.rerank_candidates,
            args.seed,
        )
        new_threshold, known, new = cut, final_r, new_r
        if reranker is not None:
            known, new = reranker.apply(report_p, vocab, votes_r, parents)
            new_threshold = reranker.new_threshold
        glob = metrics.tune_global_threshold(y_t, scores)
        per_tag = metrics.tune_tag_thresholds(y_t, scores, glob)
        return reranker, evaluate(
            known, new, report_p, vocab, per_tag, new_threshold, facets, rec.hierarchy
        )

    def halves(tune: np.ndarray, report: np.ndarray) -> tuple[dict, dict]:
        """Tune the generator's weights and every row's thresholds on ``tune``; the rows'
        metrics on ``report``."""
        tune_p = [valid[i] for i in tune]
        report_p = [valid[i] for i in report]
        bk_t, bn_t = base_known[tune], [base_new[i] for i in tune]
        gk_t, gn_t = gen_known[tune], [gen_new[i] for i in tune]
        bk_r, bn_r = base_known[report], [base_new[i] for i in report]
        factor = 1.0
        if absent is not None:  # span kinds are not paths: scaled after ancestor consistency
            factor, bk_t = tune_absent_factor(absent[tune], tune_p, vocab, bk_t, bn_t, None)
            bk_r = np.where(absent[report], factor * bk_r, bk_r).astype(np.float32)
        gk_r, gn_r = gen_known[report], [gen_new[i] for i in report]
        tuning = tune_generator(tune_p, vocab, bk_t, bn_t, gk_t, gn_t, cfg.generate.weight)
        y_t = vocab.encode(tune_p)
        g, g_new = tuning.weight, tuning.new_weight
        fused_t, new_t = blend(bk_t, bn_t, gk_t, gn_t, g, g_new)
        cut = {}
        for name, scores in (("base", bk_t), ("gen", gk_t), ("fused", fused_t)):
            glob = metrics.tune_global_threshold(y_t, scores)
            cut[name] = (glob, metrics.tune_tag_thresholds(y_t, scores, glob))
        fused_r, new_r = blend(bk_r, bn_r, gk_r, gn_r, g, g_new)
        rerank = {
            name: reranked(tune, report, tune_p, report_p, y_t, *parts)
            for name, parts in (
                ("base model, reranked", (bk_t, bn_t, bk_r, bn_r, None, rec.new_tag_threshold)),
                (
                    "fused, reranked",
                    (
                        fused_t,
                        new_t,
                        fused_r,
                        new_r,
                        # as in training: the generator's votes only where it has weight
                        (gk_t, gn_t, gk_r, gn_r) if max(g, g_new) > 0 else None,
                        tuning.new_threshold,
                    ),
                ),
            )
            if fusion is not None  # the reranker reads the fusion's voters
        }
        rows = {
            "base model": evaluate(
                bk_r,
                bn_r,
                report_p,
                vocab,
                cut["base"][1],
                rec.new_tag_threshold,
                facets,
                rec.hierarchy,
            ),
            "generated tags alone": evaluate(
                gk_r,
                gn_r,
                report_p,
                vocab,
                np.full(len(vocab), cut["gen"][0], dtype=np.float32),
                cut["gen"][0],
                facets,
                rec.hierarchy,
            ),
            "fused": evaluate(
                fused_r,
                new_r,
                report_p,
                vocab,
                cut["fused"][1],
                tuning.new_threshold,
                facets,
                rec.hierarchy,
            ),
        }
        rows.update({name: row for name, (_, row) in rerank.items()})
        kept = {name: reranker is not None for name, (reranker, _) in rerank.items()}
        return rows, {
            "tuning": tuning,
            "thresholds": cut["fused"],
            "reranked": kept,
            "absent_factor": factor,
        }

    # two-fold: tuned on one half and reported on the other, then the other way round
    rows_a, kept = halves(first, second)
    rows_b, other = halves(second, first)
    tuning = kept["tuning"]
    g, g_new = tuning.weight, tuning.new_weight
    g_b, g_new_b = other["tuning"].weight, other["tuning"].new_weight
    rows = {
        name: {k: (rows_a[name][k] + rows_b[name][k]) / 2 for k in rows_a[name]} for name in rows_a
    }
    rows[f"fused (generator weights {g:.2f} / {g_b:.2f}, new tags {g_new:.2f} / {g_new_b:.2f})"] = (
        rows.pop("fused")
    )
    if absent is not None:
        by_half = f"{kept['absent_factor']:.2f} / {other['absent_factor']:.2f}"
        rows[f"base model (absent factor {by_half})"] = rows.pop("base model")
    for name in kept["reranked"]:  # whether each half's reranker was kept (rerank.Reranker.fit)
        by_half = " / ".join("kept" if h["reranked"][name] else "not kept" for h in (kept, other))
        rows[f"{name} ({by_half})"] = rows.pop(name)
    folds = {"first half reported": rows_b, "second half reported": rows_a}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    speed = {
        "train products": generator.meta["n_train"],
        "train s": round(train_s, 1),
        "train products/s": round(history[-1]["products_per_s"], 2),
        "generation products/s (batches)": round(len(valid) / gen_s, 2),
        "one product p50 ms": round(1000 * float(np.median(lat)), 1)
        if lat
        else old.get("one product p50 ms"),
        "beams": generator.num_beams,
        "vocabulary": "narrowed" if generator.narrow else "whole",
        "device": device,
    }
    generator.weight, generator.new_weight = g, g_new
    generator.new_threshold = tuning.new_threshold
    generator.save(args.output)
    save_thresholds(args.output / THRESHOLDS_FILE, *kept["thresholds"])
    speed["generator MB on disk"] = round(dir_mb(args.output / "generator"), 1)
    t0 = time.perf_counter()
    TagGenerator.load(args.output, vocab)
    speed["generator load s"] = round(time.perf_counter() - t0, 1)

    span_new = base_votes.span_new or [{} for _ in valid]
    proposals = [{**a, **b} for a, b in zip(span_new, gen_new, strict=True)]
    reach = {prefix: new_facet_reach(valid, vocab, prefix, proposals) for prefix in facets}
    keys = list(COLUMNS) + sorted({k for r in rows.values() for k in r if k.startswith("facet")})
    print(
        f"\n{args.catalog}: {len(valid)} valid products in two halves; each row is the mean of"
        f" the two halves, each reported with weights and thresholds tuned on the other;"
        f" generator {cfg.generate.backbone}"
    )
    print("| system | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, values in rows.items():
        cells = [f"{values.get(k, float('nan')):.3f}" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for fold, fold_rows in folds.items():
        print(f"\n{fold}:")
        for name, values in fold_rows.items():
            cells = [f"{k} {values.get(k, float('nan')):.3f}" for k in keys]
            print(f"  {name}: " + ", ".join(cells))
    for prefix, r in reach.items():
        most = r["proposed"] / max(r["products"], 1)
        print(
            f"\n{prefix} not in the vocabulary: {r['products']} products; in the title"
            f" {r['in title']}, proposed by the span tagger or the generator {r['proposed']}"
            f" (the most a ranking of them can put first: {most:.3f})"
        )
    print("\n| " + " | ".join(speed) + " |")
    print("|" + "---|" * len(speed))
    print("| " + " | ".join(str(v) for v in speed.values()) + " |")
    if args.json:
        payload = {
            "catalog": args.catalog,
            "rows": rows,
            "folds": folds,
            "speed": speed,
            "new_facets": reach,
            "args": vars(args),
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
