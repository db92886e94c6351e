#!/usr/bin/env python
"""Tagging quality of labelrec and its peers on the shared catalogs, in one table.

    .venv/bin/python benchmarks/quality.py --all
    .venv/bin/python benchmarks/quality.py --catalog amazon_uk_toys --labelrec-model runs/uk_norefit
    .venv/bin/python benchmarks/quality.py --all --cv 5 --json runs/cv.json

For each catalog: labelrec is trained with ``configs/default.yaml`` on the train split without
its refit on train + valid (or a given model directory trained without seeing valid is
reused: one trained with ``train.refit=false``), the peers (Omikuji on TF-IDF
word + char n-grams, fastText ``-loss ova``) are trained in this same process environment, and
all systems are scored on the valid split by the same metric code (``labelrec.evaluate``): peer
scores become dense matrices over labelrec's tag vocabulary, gold tags unknown to the vocabulary
count as misses, and the peers' per-tag thresholds are tuned on valid exactly as labelrec's are.
labelrec's open-vocabulary suggestions (new tags, ``known: false``) are scored against the gold
tags they name.

``--cv K`` measures instead by K-fold cross-validation over train + valid: in each fold labelrec
(refit as configured) and the peers train on the same products and are scored on the fold's
held-out products; means with 95% intervals and paired differences.

Needs the ``bench`` extra (``pip install -e '.[bench]'``) and ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelrec import metrics  # noqa: E402
from labelrec.config import Config, load_config  # noqa: E402
from labelrec.data import (  # noqa: E402
    Product,
    TagVocab,
    grouped_folds,
    near_duplicate_key,
    read_catalog,
)
from labelrec.evaluate import evaluate_scores_on  # noqa: E402
from labelrec.taggers.span import evaluate_with_new_tags, kind_precision  # noqa: E402
from labelrec.taxonomy import ancestor_consistent, hierarchical_precision  # noqa: E402

CATALOGS = ("amazon_uk_toys", "amazon_in_sales", "zh_taobao")
PEERS = ("Omikuji", "fastText")
DEFAULT_DATA = ROOT.parent / "shared" / "data"
COLUMNS = ("P@1", "P@3", "P@5", "nDCG@3", "PSP@5", "micro_f1", "hP@3")
FACETS = {"amazon_uk_toys": ("brand:",), "zh_taobao": ("品牌:", "型号:", "品类:")}


@dataclass
class Row:
    """One system on one catalog."""

    catalog: str
    system: str
    metrics: dict[str, float]
    train_seconds: float
    products_per_s: float
    notes: dict[str, object] = field(default_factory=dict)


def load_split(data_root: Path, catalog: str, split: str, cfg) -> list[Product]:
    path = data_root / catalog / f"{split}.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist (shared catalogs live in ../shared/data)")
    return read_catalog(path, cfg.data).products


def score_system(
    catalog: str,
    system: str,
    scores: np.ndarray,
    valid: list[Product],
    vocab: TagVocab,
    thresholds: np.ndarray | None,
    train_seconds: float,
    products_per_s: float,
    new_tags: list[dict[str, float]] | None = None,
    new_threshold: float = 1.0,
    notes: dict[str, object] | None = None,
    hierarchy: object = None,
) -> Row:
    """Metrics of a score matrix over ``vocab`` (plus new tags); thresholds tuned on valid when
    None, exactly as labelrec tunes its own; ``hierarchy``: a model's decisions keep its
    category paths whole (``TagRecommender.hierarchy``)."""
    y_valid = vocab.encode(valid)
    if thresholds is None:
        global_t = metrics.tune_global_threshold(y_valid, scores)
        thresholds = metrics.tune_tag_thresholds(y_valid, scores, global_t)
    if new_tags is None:
        result = evaluate_scores_on(scores, valid, vocab, thresholds, hierarchy=hierarchy).metrics
    else:
        result = evaluate_with_new_tags(
            scores, new_tags, valid, vocab, thresholds, new_threshold, hierarchy=hierarchy
        ).metrics
    result["hP@3"] = hierarchical_precision(scores, valid, vocab, k=3, new_tags=new_tags)
    for prefix in FACETS.get(catalog, ()):
        result.update(kind_precision(scores, new_tags, valid, vocab, prefix))
    return Row(catalog, system, result, train_seconds, products_per_s, notes or {})


def run_peers(
    catalog: str,
    train: list[Product],
    valid: list[Product],
    vocab: TagVocab,
    threads: int,
    parts: bool = False,
) -> list[Row]:
    """Omikuji and fastText trained on train, scored on valid.

    Each peer gets a few settings and keeps the best on valid by the objective labelrec's fusion
    weights are tuned for, (P@1 + nDCG@3) / 2, so the peers are tuned as fairly as labelrec:
    Omikuji's TF-IDF features (word + char_wb 2-5 for English, char 1-2 for Chinese titles...),
    fastText's epochs (25 for large catalogs, 100 for small ones) and, for Chinese titles, CJK
    characters as tokens. Train seconds count every setting tried. With ``parts`` each setting
    gets its own row.
    """
    from peers import FEATURE_SETS, FastTextPeer, OmikujiPeer, has_cjk

    from labelrec.metrics import objective

    y_train = vocab.encode(train)
    y_valid = vocab.encode(valid)
    families = {
        "Omikuji": [OmikujiPeer(n_threads=threads, features=kind) for kind in FEATURE_SETS],
        "fastText": [FastTextPeer(n_threads=threads, epoch=e) for e in (25, 100)],
    }
    if has_cjk([p.title for p in train[:500]]):
        families["fastText"] += [
            FastTextPeer(n_threads=threads, epoch=e, split_cjk=True) for e in (25, 100)
        ]
    rows = []
    for family, candidates in families.items():
        tried = []
        for peer in candidates:
            t0 = time.perf_counter()
            peer.fit(train, y_train)
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            scores = peer.predict_scores(valid)
            rate = len(valid) / max(time.perf_counter() - t0, 1e-9)
            tried.append((objective(y_valid, scores), peer, scores, train_s, rate))
        best = max(tried, key=lambda x: x[0])
        total_s = sum(x[3] for x in tried)
        _, peer, scores, _, rate = best
        name = f"{family} ({peer.setting})"
        rows.append(score_system(catalog, name, scores, valid, vocab, None, total_s, rate))
        if parts:
            for _, p, s, sec, r in tried:
                label = f"  {family} ({p.setting})"
                rows.append(score_system(catalog, label, s, valid, vocab, None, sec, r))
    return rows


def train_labelrec(
    catalog: str, data_root: Path, config: Path, output: Path, overrides: list[str]
) -> tuple[Path, float]:
    """Train labelrec with the given config on train, tuned on valid; returns (model dir, wall
    seconds). Valid measures it here, so there is no refit on train + valid (``--cv`` measures
    the refit)."""
    from labelrec.train import train

    cfg = load_config(
        config,
        [
            f"data.train={data_root / catalog / 'train.jsonl'}",
            f"data.valid={data_root / catalog / 'valid.jsonl'}",
            f"output={output}",
            "train.refit=false",
            *overrides,
        ],
    )
    t0 = time.perf_counter()
    train(cfg, progress=sys.stderr.isatty())
    return output, time.perf_counter() - t0


def refit_lexical(
    model_dir: str | Path,
    cfg: Config,
    train_products: list[Product],
    valid_products: list[Product],
) -> dict[str, float]:
    """Fit (or refit) the fusion of a trained model directory, as training does at its end.

    ``cfg`` is the configuration (its ``lexical`` section says which taggers). The model's own
    scores on valid are the neural evidence; the thresholds are re-tuned on the fused scores and
    saved with the fusion.
    Returns the fusion report (weights, objectives, seconds).
    """
    from labelrec.fusion import fit_fusion, save_fusion
    from labelrec.model import save_thresholds
    from labelrec.modeldir import THRESHOLDS_FILE
    from labelrec.predict import TagRecommender
    from labelrec.taggers import TrainingSet

    t0 = time.perf_counter()
    rec = TagRecommender.load(model_dir)
    rec.fusion = None
    vocab = rec.vocab
    y_train = vocab.encode(train_products)
    keep = np.asarray(y_train.sum(axis=1)).ravel() > 0
    train_products = [p for p, k in zip(train_products, keep, strict=True) if k]
    y_valid = vocab.encode(valid_products)
    neural, valid_emb = rec.predict_scores(valid_products, with_embeddings=True)
    train_emb = None
    if cfg.lexical.embedding_k > 0:
        _, train_emb = rec.predict_scores(train_products, with_embeddings=True)
    train = TrainingSet(train_products, y_train[keep], vocab, train_emb)
    model, fused, report, _ = fit_fusion(cfg, train, valid_products, neural, valid_emb)
    global_t = metrics.tune_global_threshold(y_valid, fused)
    per_tag = metrics.tune_tag_thresholds(y_valid, fused, global_t)
    save_thresholds(Path(model_dir) / THRESHOLDS_FILE, global_t, per_tag)
    save_fusion(model, model_dir)
    report["lexical_seconds"] = time.perf_counter() - t0
    return report


def recorded_train_seconds(model_dir: Path) -> float:
    """Training time of a saved model: its epochs plus the lexical fit, and a refit model's
    tuning run too (setup and the valid pass after each epoch are not recorded, so this is a
    lower bound of the wall time)."""
    info = json.loads((model_dir / "labelrec.json").read_text(encoding="utf-8"))
    if "train_wall_seconds" in info:
        return float(info["train_wall_seconds"])
    history_file = model_dir / "history.json"
    if not history_file.is_file():
        return float("nan")
    history = json.loads(history_file.read_text(encoding="utf-8"))
    seconds = sum(h.get("epoch_seconds", 0.0) for h in history)
    if "refit" in info:  # its valid metrics are the tuning's: the tuning runs' time is below
        tuning = model_dir / info["refit"].get("tuning_dir", "tuning")
        runs = sorted(tuning.glob("fold-*")) or [tuning]  # one run a fold, or one on valid
        return float(seconds + sum(recorded_train_seconds(run) for run in runs))
    return float(seconds + info.get("valid_metrics", {}).get("lexical_seconds", 0.0))


def trained_on_valid(model_dir: Path) -> str | None:
    """Why a saved model cannot be measured on the valid split, or None: one refit on train +
    valid (``train.refit``) has seen it."""
    try:
        info = json.loads((Path(model_dir) / "labelrec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{model_dir} is no trained model ({err})"
    source = str(info.get("train_source") or "")
    if " (fold " in source:  # a tuning fold's run: trained on train and part of valid
        return (
            f"{model_dir} is a tuning fold's run, trained on {source}: valid cannot measure"
            " it; give a model trained with train.refit=false"
        )
    if "refit" not in info:
        return None
    tuning = Path(model_dir) / info["refit"].get("tuning_dir", "tuning")
    instead = (
        f"its tuning run ({tuning}, trained on train alone) or a model"
        if (tuning / "labelrec.json").is_file()
        else "a model"
    )
    return (
        f"{model_dir} was refit on train + valid (train.refit), so valid cannot measure it;"
        f" give {instead} trained with train.refit=false"
    )


class ReuseError(ValueError):
    """``--reuse`` found a fold model trained with other settings than those given now."""


def reuse_mismatch(model_dir: Path, cfg: Config) -> str | None:
    """What ``cfg`` (the config and overrides given now) sets otherwise than the saved model in
    ``model_dir`` was trained with (``"train.epochs: 3 saved, 5 now"``), or None. Paths (data,
    output) and settings unset or ``auto`` on either side (resolved in training) are not
    compared."""
    from labelrec.config import config_to_dict, flatten, fold_count

    info = json.loads((model_dir / "labelrec.json").read_text(encoding="utf-8"))
    saved = flatten(info.get("config", {}))
    now = flatten(config_to_dict(cfg))
    # train.tuning_folds is compared as what it resolves to (auto: two folds with a refit, on
    # a catalog within the limit); a model saved before the setting existed tuned on valid
    folds = fold_count(
        saved.get("train.tuning_folds", 1),
        saved.get("task", "tag"),
        saved.get("train.refit", True),
        saved.get("generate.enabled", False),
    )
    now_folds = cfg.tuning_fold_count
    if folds != now_folds and cfg.train.tuning_folds == "auto" and now_folds > 1:
        # as training settles it on the catalog
        from labelrec.runs import load_splits
        from labelrec.train import settle_auto_folds

        now_folds = settle_auto_folds(cfg, load_splits(cfg)).tuning_fold_count
    if folds != now_folds:
        return f"train.tuning_folds: {folds} saved, {now_folds} now (resolved)"
    skipped = {"output", "data.train", "data.valid"}
    for key in sorted(set(saved) & set(now) - skipped):
        old, new = saved[key], now[key]
        if isinstance(old, list | tuple) and isinstance(new, list | tuple):
            old, new = list(old), list(new)
        if old is None or new is None or "auto" in (old, new) or old == new:
            continue
        return f"{key}: {old!r} saved, {new!r} now"
    return None


def rerank_requested(model_dir: Path) -> bool:
    """True when the model was trained with ``lexical.rerank`` (kept or not)."""
    info = json.loads((model_dir / "labelrec.json").read_text(encoding="utf-8"))
    return bool(info.get("config", {}).get("lexical", {}).get("rerank", False))


def eval_labelrec(
    catalog: str,
    model_dir: Path,
    valid: list[Product],
    train_seconds: float,
    parts: bool,
    generate: bool = True,
    rerank: bool = True,
    absent: bool = True,
) -> tuple[list[Row], TagVocab]:
    """labelrec as served (``TagRecommender``: scores and new tags), and with ``parts`` each
    component alone and added one at a time (thresholds re-tuned on valid for those rows);
    ``generate=False`` leaves out the model's tag generator, ``rerank=False`` its reranker,
    ``absent=False`` its factor on known tags absent from the title (``labelrec.fusion``)."""
    from labelrec.predict import TagRecommender

    rec = TagRecommender.load(model_dir, generate=generate, rerank=rerank)
    if not absent and rec.fusion is not None:
        rec.fusion.absent_factor = 1.0
    t0 = time.perf_counter()
    scores, new_tags = rec.score(valid)  # one pass: known and new tags
    rate = len(valid) / max(time.perf_counter() - t0, 1e-9)
    has_span = rec.fusion is not None and rec.fusion.span is not None
    # new tags count as `labelrec eval` counts them, whichever part proposes them (the span
    # tagger or the generator)
    has_new = has_span or any(new_tags)
    lex = rec.fusion
    notes = {}
    if lex is not None:
        notes = {
            "fusion_weight": lex.weight,
            "embedding_weight": lex.embedding_weight,
            "span_weight": lex.span_weight,
            "absent_factor": lex.absent_factor,
            "ridge_mix": lex.ridge_mix,
        }
    rows = [
        score_system(
            catalog,
            "labelrec",
            scores,
            valid,
            rec.vocab,
            rec.tag_thresholds,
            train_seconds,
            rate,
            new_tags=new_tags if has_new else None,
            new_threshold=rec.new_tag_threshold,
            notes=notes,
            hierarchy=rec.hierarchy,
        )
    ]
    if not parts or lex is None:
        return rows, rec.vocab
    rec.fusion = None
    t0 = time.perf_counter()
    neural, emb = rec.predict_scores(valid, with_embeddings=True)
    neural_rate = len(valid) / max(time.perf_counter() - t0, 1e-9)
    rec.fusion = lex
    nan = float("nan")
    variants: list[tuple[str, np.ndarray, float]] = [("neural (LoRA) only", neural, neural_rate)]
    w, e = lex.weight, lex.embedding_weight
    if lex.tfidf is not None:
        variants.append(("TF-IDF kNN only", lex.tfidf.scores(valid), nan))
    if lex.embedding is not None:
        variants.append(("embedding kNN only", lex.embedding.scores(emb), nan))
    base = lex.base(valid, neural, emb)
    variants += [
        (f"neural+kNNs (w={w:.2f}, e={e:.2f})", base, nan),
        ("neural+kNNs+hierarchy", ancestor_consistent(base, lex.parents), nan),
    ]
    for name, s, r in variants:
        rows.append(score_system(catalog, f"  {name}", s, valid, rec.vocab, None, nan, r))
    if has_span:
        known, new = lex.span.known_and_new(valid)
        rows.append(
            score_system(
                catalog, "  span tagger only", known, valid, rec.vocab, None, nan, nan, new, 0.5
            )
        )
        closed = lex.fuse(valid, neural, emb)
        rows.append(
            score_system(
                catalog, "  all, without new tags", closed, valid, rec.vocab, None, nan, nan
            )
        )
    return rows, rec.vocab


def inner_split(
    products: list[Product], valid_fraction: float, seed: int
) -> tuple[list[Product], list[Product]]:
    """(train, valid) of a fold's training products, near-duplicate titles on one side."""
    import hashlib

    def unit(p: Product) -> float:
        digest = hashlib.md5(f"{seed}:{near_duplicate_key(p.title)}".encode()).hexdigest()
        return int(digest, 16) / float(1 << 128)

    valid = [p for p in products if unit(p) < valid_fraction]
    return [p for p in products if unit(p) >= valid_fraction], valid


def write_products(products: list[Product], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (
        {"id": p.id, "title": p.title, "description": p.description, "tags": list(p.tags)}
        for p in products
    )
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def refit_peers(
    catalog: str,
    train: list[Product],
    valid: list[Product],
    test: list[Product],
    vocab: TagVocab,
    threads: int,
    families: tuple[str, ...] = PEERS,
    runs: int = 1,
) -> list[Row]:
    """Each peer family (of ``families``) as labelrec is trained: settings and thresholds chosen on
    ``valid`` (by the objective labelrec's fusion uses), then the chosen setting refit on train +
    valid and scored on ``test``. Train seconds count every fit. On Chinese titles fastText runs
    with CJK characters as tokens only: split on whitespace, a title without spaces is one unseen
    token (P@1 0.013 on zh_taobao valid), so those settings only cost time.

    The peers are not deterministic (Omikuji's clustering takes no seed; fastText's threads
    race): two runs on the same products differ by up to a point or more of P@1. With ``runs``
    > 1 each fit is repeated ``runs`` times (fastText with seeds 42, 43, ...): a setting is
    chosen by its mean objective over the runs, and the row is the mean of the runs' test
    metrics, each run refit and thresholded from its own valid scores (each run's P@1 in
    ``notes``)."""
    from peers import FEATURE_SETS, FastTextPeer, OmikujiPeer, has_cjk

    from labelrec.metrics import objective

    y_train, y_valid = vocab.encode(train), vocab.encode(valid)
    both = train + valid
    y_both = vocab.encode(both)
    candidates = {
        "Omikuji": [
            lambda run, kind=kind: OmikujiPeer(n_threads=threads, features=kind)
            for kind in FEATURE_SETS
        ],
    }
    cjk = has_cjk([p.title for p in train[:500]])
    candidates["fastText"] = [
        lambda run, e=e: FastTextPeer(n_threads=threads, epoch=e, split_cjk=cjk, seed=42 + run)
        for e in (25, 100)
    ]
    rows = []
    for family, makers in candidates.items():
        if family not in families:
            continue
        seconds, tried = 0.0, []
        for make in makers:
            objectives, valid_scores = [], []
            for run in range(runs):
                peer = make(run)
                t0 = time.perf_counter()
                peer.fit(train, y_train)
                seconds += time.perf_counter() - t0
                valid_scores.append(peer.predict_scores(valid))
                objectives.append(objective(y_valid, valid_scores[-1]))
            tried.append((float(np.mean(objectives)), make, valid_scores))
        _, make, valid_scores = max(tried, key=lambda x: x[0])
        per_run = []
        for run, scores in enumerate(valid_scores):
            global_t = metrics.tune_global_threshold(y_valid, scores)
            thresholds = metrics.tune_tag_thresholds(y_valid, scores, global_t)
            peer = make(run)
            t0 = time.perf_counter()
            peer.fit(both, y_both)
            seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            test_scores = peer.predict_scores(test)
            rate = len(test) / max(time.perf_counter() - t0, 1e-9)
            name = f"{family} ({peer.setting})"
            per_run.append(
                score_system(catalog, name, test_scores, test, vocab, thresholds, seconds, rate)
            )
        row = per_run[0]
        if runs > 1:
            by_run = [r.metrics["P@1"] for r in per_run]  # before the first run's become the mean
            row.metrics = {
                key: float(np.mean([r.metrics[key] for r in per_run])) for key in row.metrics
            }
            row.notes["runs"] = runs
            row.notes["P@1 by run"] = by_run
        row.train_seconds = seconds
        row.products_per_s = float(np.mean([r.products_per_s for r in per_run]))
        rows.append(row)
    return rows


def in_fold(rows: list[Row], fold: int, n_test: int, k: int, seed: int) -> list[Row]:
    """``rows`` marked with their fold (0-based), its number of test products, and the run's
    fold count and seed (``--report`` pairs only folds of the same split)."""
    for row in rows:
        row.notes.update(fold=fold, n_test=n_test, folds=k, seed=seed)
    return rows


def run_cv(
    catalog: str,
    data_root: Path,
    config: Path,
    output_root: Path,
    overrides: list[str],
    k: int,
    seed: int,
    threads: int,
    skip_labelrec: bool = False,
    skip_peers: bool = False,
    reuse: bool = False,
    on_fold: Callable[[list[Row]], None] | None = None,
    peers: tuple[str, ...] = PEERS,
    folds: set[int] | None = None,
    without_refit: bool = True,
    peer_runs: int = 1,
    discard_models: bool = False,
) -> list[Row]:
    """``k``-fold cross-validation over train + valid of a shared catalog: in each fold labelrec
    (tuned on an inner valid split, then refit as configured) and every peer (tuned on the same
    inner split, then refit) train on exactly the same products and are scored on the fold's
    test products. A refit model's tuning run (trained on the inner train split only) is scored
    too, as "labelrec without refit". Each fold's products are written beside its model
    (``output_root/CATALOG-cvK/foldF/{train,valid,test}.jsonl``, F from 1: the inner split, and
    the test products for ``benchmarks/errors.py``). With ``reuse`` the fold models already in
    ``output_root`` are scored again instead of trained (training seconds as recorded in them).
    A model with a tag generator is scored without it too ("labelrec without generator": the
    same model, the rest of its fusion), and one with a reranker without it ("labelrec without
    reranker": the fused scores, ranked by the thresholds tuned for the reranked ones; where
    the tuning run kept no reranker, the model itself). Where the fusion has a span tagger,
    "labelrec without reranker or absent factor" is the fusion with its factor on known tags
    absent from the title at 1: against "labelrec without reranker" (the same where tuning
    chose 1), what the factor does to the ranking (``--report ... --versus SYSTEM``).
    ``folds`` (1-based) runs only those folds (a long cross-validation spread over several runs,
    merged by ``--report``); ``without_refit=False`` skips scoring the tuning runs (a model
    tuned by ``train.tuning_folds`` has no single tuning run: its fold says so on stderr and has
    no such row); ``peer_runs``: `refit_peers`' runs. ``discard_models`` deletes each fold's
    labelrec model (with its tuning runs) once its rows are scored and passed to ``on_fold``;
    the fold's products stay, but ``reuse`` and ``benchmarks/errors.py --cv-dir`` need the
    models. The folds, the inner split and the vocabulary everyone is scored over follow the
    config with the ``overrides`` (``data.min_tag_count``, ``data.valid_fraction``), as
    labelrec's training does. Rows carry the fold in ``notes``; ``on_fold`` gets the rows so far
    after each fold."""
    if discard_models and on_fold is None:
        raise ValueError("discard_models needs on_fold: the rows are kept there before it goes")
    cfg = load_config(config, overrides)
    products = load_split(data_root, catalog, "train", cfg) + load_split(
        data_root, catalog, "valid", cfg
    )
    rows: list[Row] = []
    for fold, test_idx in enumerate(grouped_folds(products, k, seed)):
        if folds is not None and fold + 1 not in folds:
            continue
        held = set(test_idx.tolist())
        test = [products[i] for i in sorted(held)]
        rest = [p for i, p in enumerate(products) if i not in held]
        train, valid = inner_split(rest, cfg.data.valid_fraction, seed + fold)
        vocab = TagVocab.from_products(rest, cfg.data.min_tag_count)
        fold_dir = output_root / f"{catalog}-cv{k}" / f"fold{fold + 1}"
        paths = {
            name: write_products(part, fold_dir / f"{name}.jsonl")
            for name, part in (("train", train), ("valid", valid), ("test", test))
        }
        fold_rows = []
        model_dir = fold_dir / "labelrec"
        if not skip_labelrec:
            lr_cfg = load_config(
                config,
                [
                    f"data.train={paths['train']}",
                    f"data.valid={paths['valid']}",
                    f"output={model_dir}",
                    f"seed={seed}",
                    *overrides,
                ],
            )
            if reuse and (model_dir / "labelrec.json").is_file():
                mismatch = reuse_mismatch(model_dir, lr_cfg)
                if mismatch is not None:
                    raise ReuseError(
                        f"--reuse: {model_dir} was trained with other settings ({mismatch}):"
                        " give the same config and overrides, or another --output"
                    )
                train_s = recorded_train_seconds(model_dir)
            else:
                from labelrec.train import train as train_labelrec

                t0 = time.perf_counter()
                train_labelrec(lr_cfg, progress=sys.stderr.isatty())
                train_s = time.perf_counter() - t0
            lr_rows, vocab = eval_labelrec(catalog, model_dir, test, train_s, False)
            fold_rows += lr_rows
            if (model_dir / "generator").is_dir():
                rows_g, _ = eval_labelrec(catalog, model_dir, test, train_s, False, generate=False)
                rows_g[0].system = "labelrec without generator"
                fold_rows += rows_g
            if (model_dir / "rerank.json").is_file():
                rows_r, _ = eval_labelrec(catalog, model_dir, test, train_s, False, rerank=False)
                rows_r[0].system = "labelrec without reranker"
                fold_rows += rows_r
            elif rerank_requested(model_dir):  # its tuning kept none: the model is the fusion
                same = lr_rows[0]
                fold_rows.append(
                    Row(
                        catalog,
                        "labelrec without reranker",
                        dict(same.metrics),
                        same.train_seconds,
                        same.products_per_s,
                        {**same.notes, "reranker": "not kept"},
                    )
                )
            meta = model_dir / "fusion.json"
            fusion_meta = json.loads(meta.read_text("utf-8")) if meta.is_file() else {}
            if "span" in fusion_meta.get("taggers", ()):  # the ranking without the factor
                rows_a, _ = eval_labelrec(
                    catalog, model_dir, test, train_s, False, rerank=False, absent=False
                )
                rows_a[0].system = "labelrec without reranker or absent factor"
                fold_rows += rows_a
            tuning = model_dir / "tuning"
            if without_refit and (tuning / "labelrec.json").is_file():
                rows_t, _ = eval_labelrec(
                    catalog, tuning, test, recorded_train_seconds(tuning), False
                )
                rows_t[0].system = "labelrec without refit"
                fold_rows += rows_t
            elif without_refit and (tuning / "fold-0" / "labelrec.json").is_file():
                print(
                    f"{catalog} fold {fold + 1}/{k}: no row 'labelrec without refit': the model"
                    " was tuned by train.tuning_folds, whose fold runs each left a product"
                    " group out; no one tuning model trained on the inner train split",
                    file=sys.stderr,
                    flush=True,
                )
        if on_fold is not None and fold_rows:  # labelrec's rows kept before the peers train
            on_fold(rows + in_fold(fold_rows, fold, len(test), k, seed))
        if discard_models and not skip_labelrec:  # once its rows are kept
            shutil.rmtree(model_dir, ignore_errors=True)
        if not skip_peers:
            fold_rows += refit_peers(catalog, train, valid, test, vocab, threads, peers, peer_runs)
        in_fold(fold_rows, fold, len(test), k, seed)
        print(
            f"{catalog} fold {fold + 1}/{k}: {len(train)} train, {len(valid)} valid, {len(test)}"
            f" test\n" + format_table(fold_rows),
            file=sys.stderr,
            flush=True,
        )
        rows += fold_rows
        if on_fold is not None:
            on_fold(rows)
    return rows


def family(system: str) -> str:
    """The system without its chosen setting: folds may choose different peer settings."""
    return system.split(" (")[0]


def interval(values: np.ndarray, test_to_train: float | None = None) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (NaN with one value). ``test_to_train``
    (held-out / training products of a fold): Nadeau and Bengio's corrected resampled t-test,
    whose variance ``1/k + test_to_train`` allows for the folds' overlapping training sets
    (the plain ``1/k`` treats the folds as independent, and is too narrow)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    k = len(values)
    if k < 2:
        return float(values.mean()), float("nan")
    scale = np.sqrt(1.0 / k + (test_to_train or 0.0))
    half = stats.t.ppf(0.975, k - 1) * values.std(ddof=1) * scale
    return float(values.mean()), float(half)


def format_by_fold(catalog: str, by: dict[str, list[Row]], metric: str = "P@1") -> list[str]:
    """One ``metric`` per system and fold (1-based), so that runs of other folds can be read
    beside these."""
    folds = sorted({r.notes["fold"] for rows in by.values() for r in rows})
    head = " | ".join(str(f + 1) for f in folds)
    lines = [
        f"{catalog}: {metric} by fold",
        f"| system | {head} |",
        "|" + "---|" * (len(folds) + 1),
    ]
    for s, rows in by.items():
        value = {r.notes["fold"]: r.metrics[metric] for r in rows}
        cells = [f"{value[f]:.3f}" if f in value else "" for f in folds]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def format_cv(rows: list[Row], base: str = "labelrec", corrected: bool = False) -> str:
    """Mean over folds with 95% intervals per system, then ``base`` (a system's name) minus each
    other row, paired by fold (points, with intervals), and the goals of the quality issue.
    ``corrected``: the paired intervals by Nadeau and Bengio's correction for k folds (held-out
    to training products 1 to k - 1; k read from the highest fold number of the rows)."""
    out = []
    metric_names = ("P@1", "nDCG@3", "PSP@5", "micro_f1")
    for catalog in dict.fromkeys(r.catalog for r in rows):
        mine = [r for r in rows if r.catalog == catalog]
        systems = list(dict.fromkeys(family(r.system) for r in mine))
        k = len({r.notes["fold"] for r in mine})
        # the run's fold count (--corrected): recorded in the rows (``main`` notes the highest
        # fold number of a saved run that did not record it, before --folds shows fewer)
        n_folds = max(2, k, *(int(r.notes.get("folds", 1 + int(r.notes["fold"]))) for r in mine))
        head = ["system", *metric_names, "train s (mean)"]
        lines = [f"{catalog}, {k} folds: mean ± 95% interval", "| " + " | ".join(head) + " |"]
        lines.append("|" + "---|" * len(head))
        by = {
            s: sorted((r for r in mine if family(r.system) == s), key=lambda r: r.notes["fold"])
            for s in systems
        }
        for s in systems:
            cells = []
            for m in metric_names:
                mean, half = interval(np.array([r.metrics[m] for r in by[s]]))
                cells.append(f"{mean:.3f} ± {half:.3f}")
            secs = np.mean([r.train_seconds for r in by[s]])
            name = s if len(by[s]) == k else f"{s} ({len(by[s])} folds)"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {secs:.0f} |")
        lines += ["", *format_by_fold(catalog, by)]
        if base in by:
            ours = by[base]
            kind = "corrected 95% interval" if corrected else "95% interval"
            title = f"{catalog}: {base} minus each other row, paired by fold (points ± {kind})"
            lines += ["", title]
            lines.append("| other | " + " | ".join(metric_names) + " |")
            lines.append("|" + "---|" * (len(metric_names) + 1))
            gaps = {}
            for s in systems:
                folds_of = [r.notes["fold"] for r in by[s]]
                if s == base or folds_of != [r.notes["fold"] for r in ours]:
                    continue  # paired only on the same folds (--folds: choose them)
                is_peer = not s.startswith("labelrec")
                cells = []
                for m in metric_names:
                    diff = 100 * np.array(
                        [a.metrics[m] - b.metrics[m] for a, b in zip(ours, by[s], strict=True)]
                    )
                    mean, half = interval(diff, 1 / (n_folds - 1) if corrected else None)
                    if is_peer:
                        gaps.setdefault(m, []).append(mean)
                    cells.append(f"{mean:+.1f} ± {half:.1f}")
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
            if gaps and base == "labelrec":
                p1 = np.mean([r.metrics["P@1"] for r in ours])
                met = min(gaps["P@1"]) >= CV_GOAL_POINTS and min(gaps["nDCG@3"]) >= CV_GOAL_POINTS
                met = met and p1 >= CV_GOAL_MIN_P1.get(catalog, 0.0)
                lines.append(
                    f"\ngoal (+{CV_GOAL_POINTS:.0f} P@1 and nDCG@3 over the best peer"
                    + (f", P@1 >= {CV_GOAL_MIN_P1[catalog]}" if catalog in CV_GOAL_MIN_P1 else "")
                    + f"): {'met' if met else 'not met'}"
                    + (f" on {len(ours)} folds (the goal counts 5)" if len(ours) < 5 else "")
                )
        out.append("\n".join(lines))
    return "\n\n".join(out)


CV_GOAL_POINTS = 3.0
CV_GOAL_MIN_P1 = {"amazon_in_sales": 0.985, "zh_taobao": 0.85}


def measure_overhead(config: Path, data_root: Path, catalog: str, n_steps: int) -> str:
    """Products/s of the training loop (``TagTrainer.train``: DataLoader, collate, Accelerate,
    progress bar) against the pure model step (forward, backward, clip, AdamW step) on the same
    batches, padded beforehand. Same process, same model, one after the other."""
    import tempfile

    import torch

    from labelrec.data import bucketed_batches
    from labelrec.model import pad_batch
    from labelrec.train import TagTrainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            config,
            [
                f"data.train={data_root / catalog / 'train.jsonl'}",
                f"data.valid={data_root / catalog / 'valid.jsonl'}",
                f"output={tmp}",
                "train.epochs=1",
                f"train.max_steps={n_steps + 2}",
                "lexical.enabled=false",
            ],
        )
        trainer = TagTrainer(cfg, progress=False)
        trainer.setup()
        trainer.valid_products = []  # time the loop only, not the valid pass after it
        tcfg = cfg.train
        batches = bucketed_batches(
            [len(t) for t in trainer.train_ids], tcfg.batch_size, tcfg.bucket_size, seed=cfg.seed
        )[: n_steps + 2]
        ready = []
        for b in batches:
            enc = pad_batch(
                [trainer.train_ids[i] for i in b],
                trainer.tokenizer.pad_token_id,
                trainer.padding_side,
            )
            labels = torch.from_numpy(trainer.train_set.labels[b].toarray()).float()
            ready.append((enc["input_ids"], enc["attention_mask"], labels))
        model, opt = trainer.model, trainer.optimizer
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()

        def pure(items: list) -> float:
            t0 = time.perf_counter()
            for ids, mask, labels in items:
                loss = loss_fn(model(ids, mask).float(), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
                opt.step()
                opt.zero_grad()
            return sum(len(x[0]) for x in items) / (time.perf_counter() - t0)

        pure(ready[:2])  # warm-up
        pure_rate = pure(ready[2:])
        trainer.train()
        loop_rate = trainer.state["history"][-1]["products_per_s"]
        pure_rate2 = pure(ready[2:])
    base = (pure_rate + pure_rate2) / 2
    overhead = 1 - loop_rate / base
    return (
        f"{catalog}: pure model step {base:.1f} products/s (runs: {pure_rate:.1f}, "
        f"{pure_rate2:.1f}); training loop {loop_rate:.1f} products/s; "
        f"pipeline overhead {100 * overhead:.1f}% ({n_steps} steps of {tcfg.batch_size})"
    )


def _num(value: float) -> str:
    return "" if value != value else f"{value:.0f}"


def format_facets(rows: list[Row]) -> str:
    """Per-facet precision (brand, model, type): top tag of that facet right, known vs new gold."""
    keys = sorted({k for r in rows for k in r.metrics if k.startswith("facet ")})
    if not keys:
        return ""
    lines = ["| catalog | system | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        if any(k in r.metrics for k in keys):
            cells = [f"{r.metrics.get(k, float('nan')):.3f}" for k in keys]
            lines.append(f"| {r.catalog} | {r.system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(rows: list[Row]) -> str:
    """A Markdown table of all rows."""
    head = ["catalog", "system", *COLUMNS, "train s", "predict products/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.catalog, r.system]
        cells += [f"{r.metrics.get(c, float('nan')):.3f}" for c in COLUMNS]
        cells += [_num(r.train_seconds), _num(r.products_per_s)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


GOAL_POINTS = 2.0  # labelrec beats the best peer by this many points of P@1 and nDCG@3
GOAL_TRAIN_MINUTES = 15.0
GOAL_MIN_P1 = {"zh_taobao": 0.70}


def format_goal(rows: list[Row]) -> str:
    """labelrec against the best peer per metric (peers' chosen settings), in points, and whether
    the goal of the quality issue is met: +2 P@1 and nDCG@3, no loss on PSP@5, training under
    15 minutes, and P@1 >= 0.70 on zh_taobao."""
    lines = [
        "| catalog | labelrec - best peer: P@1 | nDCG@3 | PSP@5 | labelrec train min | goal met |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    for catalog in dict.fromkeys(r.catalog for r in rows):
        ours = [r for r in rows if r.catalog == catalog and r.system == "labelrec"]
        peers = [
            r
            for r in rows
            if r.catalog == catalog and r.system != "labelrec" and not r.system.startswith(" ")
        ]
        if not ours or not peers:
            continue
        lr = ours[0]
        diff = {
            m: 100 * (lr.metrics[m] - max(p.metrics[m] for p in peers))
            for m in ("P@1", "nDCG@3", "PSP@5")
        }
        minutes = lr.train_seconds / 60 if lr.train_seconds == lr.train_seconds else float("nan")
        met = (
            diff["P@1"] >= GOAL_POINTS
            and diff["nDCG@3"] >= GOAL_POINTS
            and diff["PSP@5"] >= 0
            and minutes < GOAL_TRAIN_MINUTES
            and lr.metrics["P@1"] >= GOAL_MIN_P1.get(catalog, 0.0)
        )
        lines.append(
            f"| {catalog} | {diff['P@1']:+.1f} | {diff['nDCG@3']:+.1f} | {diff['PSP@5']:+.1f} | "
            f"{minutes:.1f} | {'yes' if met else 'no'} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def print_report(rows: list[Row]) -> None:
    """The tables of a run: all rows, per facet, and the goal."""
    print(format_table(rows))
    facets = format_facets(rows)
    if facets:
        print(
            "\nFacets (P@1 within the facet's tags; known/new: products whose gold facet tag is"
            " in / outside the training vocabulary):\n" + facets
        )
    goal = format_goal(rows)
    if goal:
        print("\nGoal (points; best peer per metric among the peers' chosen settings):\n" + goal)


class ReportError(ValueError):
    """A saved run that ``--report`` cannot read."""


#: the notes that tell one cross-validation's folds from another's (fold count and seed are
#: recorded since they are checked; the number of test products always was)
SPLIT_NOTES = ("n_test", "folds", "seed")


def check_same_split(row: Row, path: str, splits: dict[tuple, tuple[dict, str]]) -> None:
    """A ``ReportError`` when ``row``'s fold is not the fold of that number that an earlier file
    had for its catalog (another ``--cv`` or ``--seed``): folds are paired by number."""
    key = (row.catalog, row.notes["fold"])
    mine = {n: row.notes[n] for n in SPLIT_NOTES if n in row.notes}
    if key not in splits:
        splits[key] = (mine, path)
        return
    theirs, other = splits[key]
    differ = [n for n in SPLIT_NOTES if n in mine and n in theirs and mine[n] != theirs[n]]
    if differ:
        said = ", ".join(f"{n} {theirs[n]} against {mine[n]}" for n in differ)
        raise ReportError(
            f"{path}: fold {key[1] + 1} of {row.catalog} is not the fold of {other} ({said}):"
            " only runs of the same --cv and --seed are paired"
        )
    splits[key] = ({**theirs, **mine}, other)


def merge_saved(paths: list[Path]) -> list[Row]:
    """The rows of runs saved with ``--json``, in order; a row whose catalog, system family and
    fold an earlier file already has is left out (e.g. a ``--cv --reuse --skip-peers`` run adds
    only its new rows to the first run). ``FILE@LABEL``: that file's labelrec rows are named
    "labelrec, LABEL" (two labelrec configurations side by side, paired by fold)."""
    rows: list[Row] = []
    seen: set[tuple] = set()
    splits: dict[tuple, tuple[dict, str]] = {}  # (catalog, fold) -> its split's notes, file
    for spec in paths:
        path, _, label = str(spec).partition("@")
        try:
            new = [Row(**item) for item in json.loads(Path(path).read_text(encoding="utf-8"))]
        except OSError as exc:
            raise ReportError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        except (ValueError, TypeError) as exc:
            raise ReportError(f"{path}: not the --json of a quality.py run ({exc})") from None
        if label:
            for r in new:
                if r.system.startswith("labelrec"):
                    r.system = f"{r.system}, {label}"
        for r in new:
            if "fold" in r.notes:
                check_same_split(r, path, splits)
        keys = [(r.catalog, family(r.system), r.notes.get("fold")) for r in new]
        rows += [r for r, key in zip(new, keys, strict=True) if key not in seen]
        seen.update(keys)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", action="append", choices=CATALOGS, help="repeatable")
    parser.add_argument("--all", action="store_true", help="every shared catalog with splits")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--output-root", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--skip-labelrec", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--labelrec-model", type=Path, help="reuse this trained model (one catalog only)"
    )
    parser.add_argument(
        "--refit-lexical",
        action="store_true",
        help="with --labelrec-model: copy it and fit its lexical parts as training would",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and the peers")
    parser.add_argument("--json", type=Path, help="also write all rows as JSON here")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the tables of runs saved with --json (a row already read from an earlier"
        " file, same catalog, system and fold, is not read again); FILE@LABEL names that file's"
        " labelrec rows 'labelrec, LABEL'",
    )
    parser.add_argument(
        "--parts", action="store_true", help="also score each part of labelrec (ablation rows)"
    )
    parser.add_argument(
        "--overhead",
        type=int,
        default=0,
        metavar="STEPS",
        help="measure the training pipeline's overhead over the pure model step rate",
    )
    parser.add_argument(
        "--cv",
        type=int,
        default=0,
        metavar="K",
        help="K-fold cross-validation over train + valid (everyone trained on the same products)",
    )
    parser.add_argument("--seed", type=int, default=0, help="fold assignment seed (--cv)")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="--cv: peer families to train, comma-separated (fastText on zh_taobao: 9 min a fold)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="--cv: score the fold models already trained (with this config and these"
        " overrides: a model trained otherwise stops the run)",
    )
    parser.add_argument(
        "--discard-models",
        action="store_true",
        help="--cv: delete each fold's labelrec model (with its tuning runs) once its rows are"
        " saved (--json); --reuse and benchmarks/errors.py --cv-dir need them",
    )
    parser.add_argument(
        "--folds",
        help="--cv: run only these folds, comma-separated from 1 (merge runs with --report);"
        " --report: read only these folds of the saved runs",
    )
    parser.add_argument(
        "--peer-runs",
        type=int,
        default=3,
        metavar="N",
        help="--cv: train each peer N times and report the mean (Omikuji and fastText are not"
        " deterministic: one run moves by up to a point of P@1)",
    )
    parser.add_argument(
        "--no-without-refit",
        action="store_true",
        help="--cv: do not score the tuning runs (with a tag generator: minutes of beam search)",
    )
    parser.add_argument(
        "--versus",
        default="labelrec",
        metavar="SYSTEM",
        help="--report of a --cv run: the row the others are subtracted from, paired by fold",
    )
    parser.add_argument(
        "--corrected",
        action="store_true",
        help="--report of a --cv run: paired intervals by Nadeau and Bengio's corrected"
        " resampled t-test (the folds' training sets overlap, so the plain one is too narrow);"
        " K is the highest fold number among the rows reported",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides for labelrec, a.b=value")
    args = parser.parse_args(argv)
    folds = None
    if args.folds:
        try:
            folds = {int(f) for f in args.folds.split(",") if f.strip()}
        except ValueError:
            parser.error(f"--folds: comma-separated fold numbers, not {args.folds!r}")
        if not folds or min(folds) < 1 or (args.cv and max(folds) > args.cv):
            parser.error(f"--folds: numbers from 1 to {args.cv or 'K'}")
    if args.report:
        try:
            saved = merge_saved(args.report)
        except ReportError as exc:
            parser.error(f"--report: {exc}")
        highest: dict[str, int] = {}  # the run's fold count, before --folds shows fewer
        for r in saved:
            if "fold" in r.notes:
                highest[r.catalog] = max(highest.get(r.catalog, 0), int(r.notes["fold"]) + 1)
        for r in saved:
            if "fold" in r.notes:
                r.notes.setdefault("folds", highest[r.catalog])
        if folds is not None:  # fold numbers are 0-based in the saved rows
            saved = [r for r in saved if "fold" not in r.notes or r.notes["fold"] + 1 in folds]
        if not saved:
            parser.error("--report: no rows" + (" of those --folds" if folds else ""))
        if any("fold" in r.notes for r in saved):
            print(format_cv(saved, args.versus, args.corrected))
        else:
            print_report(saved)
        return 0
    catalogs = list(CATALOGS) if args.all else (args.catalog or [])
    if not catalogs:
        parser.error("give --catalog NAME (repeatable) or --all")
    families = tuple(p.strip() for p in args.peers.split(",") if p.strip()) if args.cv else PEERS
    if not args.skip_peers:
        from peers import missing_packages

        if missing := missing_packages(families):
            parser.error(
                f"the peers need {', '.join(missing)}: pip install -e '.[bench]' (make bench),"
                " or --skip-peers"
            )
    if args.labelrec_model and len(catalogs) != 1:
        parser.error("--labelrec-model needs exactly one --catalog")
    if args.labelrec_model and (refit := trained_on_valid(args.labelrec_model)):
        parser.error(f"--labelrec-model: {refit}")

    import torch

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)  # the peers' data and vocabulary too
    rows: list[Row] = []
    if args.cv:
        if args.cv < 2:
            parser.error("--cv needs K >= 2")
        if args.peer_runs < 1:
            parser.error("--peer-runs needs N >= 1")
        if args.discard_models and not args.json:
            parser.error("--discard-models needs --json: the rows are kept there before it goes")

        def save(done: list[Row]) -> None:  # after each fold: a long run keeps what it measured
            if args.json:
                payload = [r.__dict__ for r in rows + done]
                args.json.write_text(json.dumps(payload, indent=1, default=float), "utf-8")

        for catalog in catalogs:
            try:
                rows += run_cv(
                    catalog,
                    args.data_root,
                    args.config,
                    args.output_root,
                    args.overrides,
                    args.cv,
                    args.seed,
                    args.threads,
                    args.skip_labelrec,
                    args.skip_peers,
                    args.reuse,
                    on_fold=save,
                    peers=families,
                    folds=folds,
                    without_refit=not args.no_without_refit,
                    peer_runs=args.peer_runs,
                    discard_models=args.discard_models,
                )
            except ReuseError as err:  # a fold model trained otherwise; the folds done are saved
                print(f"quality.py: error: {err}", file=sys.stderr)
                return 2
        print(format_cv(rows))
        return 0
    for catalog in catalogs:
        train = load_split(args.data_root, catalog, "train", cfg)
        valid = load_split(args.data_root, catalog, "valid", cfg)
        vocab = TagVocab.from_products(train, cfg.data.min_tag_count)
        if not args.skip_labelrec:
            if args.labelrec_model:
                model_dir = args.labelrec_model
                train_s = recorded_train_seconds(model_dir)
                if args.refit_lexical:
                    model_dir = args.output_root / f"{catalog}-refit"
                    shutil.rmtree(model_dir, ignore_errors=True)
                    shutil.copytree(
                        args.labelrec_model, model_dir, ignore=shutil.ignore_patterns("checkpoints")
                    )
                    report = refit_lexical(model_dir, cfg, train, valid)
                    train_s += report["lexical_seconds"]
                    print(f"{catalog}: lexical parts fitted: {report}", file=sys.stderr)
            else:
                model_dir, train_s = train_labelrec(
                    catalog, args.data_root, args.config, args.output_root / catalog, args.overrides
                )
            lr_rows, vocab = eval_labelrec(catalog, model_dir, valid, train_s, args.parts)
            rows += lr_rows
        if not args.skip_peers:
            rows += run_peers(catalog, train, valid, vocab, args.threads, args.parts)
        print(format_table([r for r in rows if r.catalog == catalog]), file=sys.stderr, flush=True)
        if args.overhead:
            print(measure_overhead(args.config, args.data_root, catalog, args.overhead), flush=True)
    print_report(rows)
    if args.json:
        payload = [r.__dict__ for r in rows]
        args.json.write_text(json.dumps(payload, indent=1, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    # labelrec's log (epochs, tuning, the reranker) on stderr: the progress of a run whose
    # stderr is a file, where no progress bar is drawn
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # with --cv, the folds done are in --json (saved after each)
        print("quality.py: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
