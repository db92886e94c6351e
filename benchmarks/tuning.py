#!/usr/bin/env python
"""Time of tuning the fusion (``fusion.tune_fusion``) on the evidence a refit model was tuned on.

    .venv/bin/python benchmarks/tuning.py \
        --model runs/cv_ridge_tf3/amazon_uk_toys-cv5/fold5/labelrec

MODEL is a model trained with ``train.refit`` (the default). From the configuration, data files and
seed that MODEL records, the benchmark rebuilds what training tuned on. With
``train.tuning_folds: K`` (two by default, three in ``configs/thorough.yaml``), the tuning runs are
kept in MODEL/tuning/fold-0 ... fold-(K-1): each scores the products held out of it, its taggers
fitted on the rest, and the evidence of all K runs is pooled. Without tuning folds, the tuning run
in MODEL/tuning scores valid, its taggers fitted on train. (``labelrec.train``'s steps, through the
same library functions.) It then times ``tune_fusion`` on that evidence (the weight grid for every
ridge share, the span weight, the absent factor), and the two operations a grid point does on the
whole matrix: ancestor consistency and the objective. The grid does them on each product's
candidate tags alone (``fusion.CandidateTags``) where those are few: the table gives the most
columns a product keeps and the number of products that keep every tag. The weights it chooses are
printed beside the ones MODEL recorded, which they match when the rebuilt evidence is the evidence
training had (with tuning folds, all but the new tags' threshold, which training tunes again on the
tags new to each product's fold). ``--cache FILE`` keeps the evidence (a pickle) so that another
checkout of labelrec, without these training helpers, can time the same tuning from it.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from labelrec import data as data_mod
from labelrec.config import Config, config_to_dict, load_config
from labelrec.fusion import FUSION_WEIGHTS, Fusion, FusionInputs, fit_fusion, tune_fusion
from labelrec.metrics import objective
from labelrec.predict import TagRecommender
from labelrec.taggers import TrainingSet
from labelrec.taxonomy import ancestor_consistent, parent_index

try:
    from labelrec.taxonomy import ancestor_plan
except ImportError:  # a checkout without it keeps tag_depth between calls instead
    from labelrec.taxonomy import tag_depth as ancestor_plan
try:
    from labelrec.fusion import CandidateTags
except ImportError:  # a checkout whose weight grid scores every tag
    CandidateTags = None


def recorded_config(model_dir: Path) -> Config:
    """The configuration ``model_dir`` was trained with (its ``labelrec.json``)."""
    info = json.loads((model_dir / "labelrec.json").read_text(encoding="utf-8"))
    # a model saved before train.tuning_folds existed tuned on valid
    info["config"].setdefault("train", {}).setdefault("tuning_folds", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(info["config"]), encoding="utf-8")
        return load_config(path)


def fold_evidence(
    run_dir: Path, cfg: Config, rest: list, held: list
) -> tuple[FusionInputs, data_mod.TagVocab]:
    """One tuning run's evidence on the products held out of it, its taggers fitted on the rest,
    and the run's vocabulary."""
    rec = TagRecommender.load(run_dir, backend="torch", generate=False, rerank=False)
    rec.fusion = None  # the neural tagger's own scores
    y_rest = rec.vocab.encode(rest)
    keep = np.asarray(y_rest.sum(axis=1)).ravel() > 0
    rest = [p for p, k in zip(rest, keep, strict=True) if k]
    rest_emb = None
    if cfg.lexical.embedding_k > 0:
        _, rest_emb = rec.predict_scores(rest, with_embeddings=True)
    neural, held_emb = rec.predict_scores(held, with_embeddings=True)
    train = TrainingSet(rest, y_rest[keep], rec.vocab, rest_emb, cfg.seed)
    _, _, _, inputs = fit_fusion(cfg, train, held, neural, held_emb)
    assert inputs is not None
    return inputs, rec.vocab


def pooled_evidence(model_dir: Path, cfg: Config) -> tuple[FusionInputs, data_mod.TagVocab]:
    """The pooled out-of-fold evidence and vocabulary that training tuned ``model_dir`` on."""
    from labelrec.train import pool_evidence, tuning_folds  # only to build it, not to read --cache

    pool = (
        data_mod.read_catalog(cfg.data.train, cfg.data).products
        + data_mod.read_catalog(cfg.data.valid, cfg.data).products
    )
    parts = []
    for i, (rest, held) in enumerate(tuning_folds(pool, cfg.tuning_fold_count, cfg.seed)):
        t0 = time.perf_counter()
        parts.append(fold_evidence(model_dir / "tuning" / f"fold-{i}", cfg, rest, held)[0])
        print(
            f"tuning run {i}: {len(held)} held-out products scored and its taggers "
            f"fitted in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return pool_evidence(parts, pool)


def valid_evidence(model_dir: Path, cfg: Config) -> tuple[FusionInputs, data_mod.TagVocab]:
    """The evidence on valid that training tuned ``model_dir`` on without tuning folds: its
    tuning run (``MODEL/tuning``) scoring valid, the run's taggers fitted on train."""
    from labelrec.runs import load_splits

    splits = load_splits(cfg)
    return fold_evidence(model_dir / "tuning", cfg, splits.train, splits.valid)


def best_seconds(fn, repeat: int) -> float:
    """The fastest of ``repeat`` timed calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a refit model")
    parser.add_argument("--repeat", type=int, default=1, help="tune_fusion timings (fastest)")
    parser.add_argument("--json", type=Path, default=None, help="also write the row here")
    parser.add_argument("--cache", type=Path, default=None, help="pooled evidence: read or write")
    args = parser.parse_args(argv)

    cfg = recorded_config(args.model)
    folds = cfg.tuning_fold_count >= 2
    if not (args.model / "tuning" / ("fold-0" if folds else "tuned.json")).exists():
        parser.error(f"{args.model}: no tuning run kept (trained with train.refit=false?)")
    if args.cache and args.cache.is_file():
        pooled, vocab = pickle.loads(args.cache.read_bytes())
    else:
        pooled, vocab = (pooled_evidence if folds else valid_evidence)(args.model, cfg)
        if args.cache:
            args.cache.write_bytes(pickle.dumps((pooled, vocab), protocol=pickle.HIGHEST_PROTOCOL))
    lx = cfg.lexical
    separator = data_mod.category_separator(cfg)
    parents = parent_index(vocab.tags, separator)

    def tune() -> Fusion:
        fusion = Fusion(None, 0.5, parents, separator, lx.ancestor_consistency)
        tune_fusion(fusion, pooled, vocab, cfg)
        return fusion

    t0 = time.perf_counter()
    fusion = tune()
    seconds = time.perf_counter() - t0
    if args.repeat > 1:
        seconds = min(seconds, best_seconds(tune, args.repeat - 1))
    y = vocab.encode(pooled.products)
    plan = ancestor_plan(parents)
    fused = pooled.neural if pooled.tfidf is None else 0.5 * (pooled.neural + pooled.tfidf)
    consistent = ancestor_consistent(fused, parents, plan)
    anc_ms = 1000 * best_seconds(lambda: ancestor_consistent(fused, parents, plan), 5)
    obj_ms = 1000 * best_seconds(lambda: objective(y, consistent), 5)
    slots, full_rows = len(vocab), len(pooled.products)  # what the weight grid scores
    if CandidateTags is not None:  # those of the TF-IDF voter without the ridge's share
        knn = pooled.tfidf if pooled.tfidf is not None else np.zeros_like(pooled.neural)
        voters = [pooled.neural, knn] + ([pooled.embedding] if pooled.embedding is not None else [])
        voters = [v.astype(np.result_type(*voters), copy=False) for v in voters]
        few = CandidateTags.of(voters, parents if lx.ancestor_consistency else None, plan)
        if few is not None:
            slots, full_rows = few.columns.shape[1], len(few.full_rows)
    chosen = {k: round(float(getattr(fusion, k)), 4) for k in FUSION_WEIGHTS}
    recorded = json.loads((args.model / "tuning" / "tuned.json").read_text("utf-8"))["lexical"]
    recorded = {k: round(float(v), 4) for k, v in recorded.items()}
    row = {
        "model": str(args.model),
        "products": len(pooled.products),
        "tags": len(vocab),
        "tune_fusion_s": seconds,
        "ancestor_consistency_ms": anc_ms,
        "objective_ms": obj_ms,
        "grid_slots": slots,
        "grid_full_rows": full_rows,
        "new_tags_proposed": sum(map(len, pooled.span_new or [])),  # the span tagger's
        "chosen": chosen,
        "recorded": recorded,
        "config": {k: config_to_dict(cfg)["lexical"][k] for k in ("ridge", "ridge_mix")},
    }
    print(
        "| products | tags | tune_fusion s | ancestor consistency ms | objective ms "
        "| grid: columns a product, products over every tag | weights |"
    )
    print("|---|---|---|---|---|---|---|")
    # with tuning folds, training tunes the new tags' threshold again on the tags new to each
    # product's fold (evaluate.new_tag_threshold), from the folds' vocabularies: --cache keeps
    # only the pooled evidence
    compared = [k for k in chosen if not (folds and k == "new_threshold")]
    same = "the recorded ones" if all(recorded.get(k) == chosen[k] for k in compared) else "differ"
    print(
        f"| {row['products']} | {row['tags']} | {seconds:.1f} | {anc_ms:.0f} | {obj_ms:.0f} "
        f"| {slots}, {full_rows} | {same} |"
    )
    print(f"chosen {chosen}\nrecorded {recorded}")
    proposed = row["new_tags_proposed"]
    print(f"new tags proposed: {proposed}, {proposed / max(len(pooled.products), 1):.1f} a product")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
