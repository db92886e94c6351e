"""What every training recipe shares (tag training in ``labelrec.train``, the describer in
``labelrec.describe``): the tracker it reports to, the splits it reads, the result it returns."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from labelrec import data as data_mod
from labelrec.config import Config, DataConfig

logger = logging.getLogger(__name__)


class Tracker(Protocol):
    """What the training loop reports to (MLflow in ``labelrec.mlflow``; nothing by default)."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None: ...


class NullTracker:
    """Reports nowhere."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None:
        pass


@dataclass
class Splits:
    """The labelled products of a run and where they came from."""

    train: list[data_mod.Product]
    valid: list[data_mod.Product]
    train_source: str
    valid_source: str
    skipped: list[str] = field(default_factory=list)
    feedback: list[data_mod.Product] = field(default_factory=list)  # reviewed, merged into train
    feedback_source: str | None = None
    # reviews of valid products, by id: out of the tuning run, merged into a refit's products
    valid_reviews: dict[str, data_mod.Product] = field(default_factory=dict)
    held_out: int = 0  # reviews left out of training: their products are in data.holdout
    hierarchy_separator: str | None = None  # of the category paths, where reviews were merged


# The id ``labelrec feedback export`` gives a product reviewed without one ("feedback-" and the
# review's number): such a row is matched to a catalog product by its title.
REVIEW_ID_PREFIX = "feedback-"


def reviewed_product(
    original: data_mod.Product,
    review: data_mod.Product,
    hierarchy_separator: str | None = None,
    text_of_review: bool = False,
) -> data_mod.Product:
    """A catalog product after its review: its tags without the rejected ones (and, with
    ``hierarchy_separator``, without the categories under a rejected one: ``Toys > Puzzles``
    rejected takes ``Toys > Puzzles > Jigsaw`` with it), then the accepted and added ones not
    among them in another case or width (a reviewer sees only the suggestions, so the gold tags
    not shown stay), and the rejected tags as known negatives: the catalog's own, less those
    the review accepted or added (the later verdict wins), and the review's. The title and
    description stay the catalog's (a review judges tags; the review page shows a description
    cut short), a missing description taken from the review; ``text_of_review`` (two reviews
    of one product) takes the review's."""
    key = data_mod.tag_key  # a tag in another case or width is that tag
    rejected = {key(t) for t in review.rejected}
    sep = data_mod.fold_width(hierarchy_separator) if hierarchy_separator else ""  # as tags read
    below = tuple(r + key(sep) for r in rejected) if sep else ()
    kept = [
        t
        for t in original.tags
        if key(t) not in rejected and not (below and key(t).startswith(below))
    ]
    spelt: dict[str, str] = {}  # one spelling per tag: the catalog's first
    for t in [*kept, *review.tags]:
        spelt.setdefault(key(t), t)
    accepted = {key(t) for t in review.tags}
    negatives = [t for t in original.rejected if key(t) not in accepted]
    text = review if text_of_review else original
    return dataclasses.replace(
        review,
        title=text.title,
        description=text.description or review.description,
        tags=list(spelt.values()),
        rejected=list(dict.fromkeys([*negatives, *review.rejected])),
    )


def _by_title(
    products: Sequence[data_mod.Product], catalog: Sequence[data_mod.Product]
) -> tuple[list[data_mod.Product], int]:
    """``products`` with the id of the one catalog product whose title (case aside) is theirs,
    where they were reviewed without an id; the number matched."""
    owners: dict[str, str | None] = {}
    for p in catalog:
        key = p.title.casefold()
        owners[key] = p.id if owners.get(key, p.id) == p.id else None  # None: two products
    ids = {p.id for p in catalog}
    out, matched = [], 0
    for p in products:
        unnamed = p.id.startswith(REVIEW_ID_PREFIX) and p.id not in ids
        owner = owners.get(p.title.casefold()) if unnamed else None
        if owner is not None:
            p, matched = dataclasses.replace(p, id=owner), matched + 1
        out.append(p)
    return out, matched


def _one_per_product(
    products: Sequence[data_mod.Product], hierarchy_separator: str | None
) -> list[data_mod.Product]:
    """One row per product id: rows that are one product (reviewed with its id, and reviewed
    without one and matched by its title) merged tag by tag in their order, the export's order
    of their last reviews: on a tag both judge the later row wins, and so does its text."""
    merged: dict[str, data_mod.Product] = {}
    for p in products:
        earlier = merged.get(p.id)
        merged[p.id] = (
            p if earlier is None else reviewed_product(earlier, p, hierarchy_separator, True)
        )
    return list(merged.values())


def merge_feedback(
    splits: Splits,
    path: str,
    hierarchy_separator: str | None = None,
    holdout: Sequence[str | Path] = (),
    holdout_cfg: DataConfig | None = None,
) -> Splits:
    """``splits`` with the reviewed products of ``path`` (a ``labelrec feedback export``
    catalog) in train: a review of a training product is merged into it (``reviewed_product``),
    another reviewed product joins train. A product reviewed without an id is the catalog
    product with its title, where exactly one has it. A product outside the catalog whose
    review only rejected tags stays out (it has no tag to learn). Reviews of valid products
    stay out of train (valid measures the model) and are kept in ``valid_reviews`` for a
    refit, which trains on valid. Reviews of the products of the ``holdout`` catalogs (read
    with ``holdout_cfg``; the same id or a near-duplicate title) are left out: those catalogs
    measure the model. Category paths are expanded with ``hierarchy_separator`` as the
    training catalog's were."""
    cfg = DataConfig(hierarchy_separator=hierarchy_separator)
    reviewed = data_mod.read_catalog(path, cfg, require_tags=False)
    held_ids, held_titles = holdout_keys(holdout, holdout_cfg or DataConfig())
    products = [
        p
        for p in reviewed.products
        if p.id not in held_ids and data_mod.near_duplicate_key(p.title) not in held_titles
    ]
    held_out = len(reviewed.products) - len(products)
    if held_out:
        logger.warning(
            "feedback %s: %d of %d reviews are of products in data.holdout (%s): left out of"
            " training, so those catalogs keep measuring the model",
            path,
            held_out,
            len(reviewed.products),
            ", ".join(map(str, holdout)),
        )
    products, matched = _by_title(products, [*splits.train, *splits.valid])
    products = _one_per_product(products, hierarchy_separator)
    if matched:
        logger.info(
            "feedback %s: %d products reviewed without an id are catalog products with their title",
            path,
            matched,
        )
    known = {p.id for p in splits.train} | {p.id for p in splits.valid}
    untagged = [p.id for p in products if not p.tags and p.id not in known]
    if untagged:
        logger.warning(
            "feedback %s: %d reviewed products are in no catalog and have no tag, only rejected"
            " ones (first: %s): left out of training",
            path,
            len(untagged),
            untagged[0],
        )
        products = [p for p in products if p.tags or p.id in known]
    valid_ids = {p.id for p in splits.valid}
    by_id = {p.id: p for p in products if p.id not in valid_ids}
    train = [
        reviewed_product(p, by_id.pop(p.id), hierarchy_separator) if p.id in by_id else p
        for p in splits.train
    ] + list(by_id.values())
    return dataclasses.replace(
        splits,
        train=train,
        train_source=f"{splits.train_source} + feedback {path}",
        skipped=splits.skipped + list(reviewed.skipped),
        feedback=[p for p in products if p.id not in valid_ids],
        feedback_source=str(path),
        valid_reviews={p.id: p for p in products if p.id in valid_ids},
        held_out=held_out,
        hierarchy_separator=hierarchy_separator,
    )


def holdout_keys(paths: Sequence[str | Path], cfg: DataConfig) -> tuple[set[str], set[str]]:
    """(ids, near-duplicate title keys) of the products of the catalogs ``paths``, read whole
    (``data.max_products`` cuts training files, not what must stay out of them)."""
    cfg = dataclasses.replace(cfg, max_products=None)
    ids: set[str] = set()
    titles: set[str] = set()
    for path in paths:
        for product in data_mod.read_catalog(path, cfg, require_tags=False).products:
            ids.add(product.id)
            if key := data_mod.near_duplicate_key(product.title):
                titles.add(key)
    return ids, titles


def refit_products(splits: Splits) -> list[data_mod.Product]:
    """What a refit trains on: train, then valid with its reviews merged in."""
    reviews = splits.valid_reviews
    sep = splits.hierarchy_separator
    valid = [
        reviewed_product(p, reviews[p.id], sep) if p.id in reviews else p for p in splits.valid
    ]
    return splits.train + valid


def load_splits(cfg: Config, require_tags: bool = True) -> Splits:
    """Train and valid products: from files, or the built-in demo catalog when none is given;
    with ``data.feedback``, the reviewed products merged into train (``merge_feedback``)."""
    splits = _read_splits(cfg, require_tags)
    if cfg.data.feedback:
        splits = merge_feedback(
            splits,
            cfg.data.feedback,
            cfg.data.hierarchy_separator,
            cfg.data.holdout or (),
            cfg.data,
        )
    return splits


def _read_splits(cfg: Config, require_tags: bool) -> Splits:
    dcfg = cfg.data
    if dcfg.train is None:
        from labelrec.demo import generate_catalog

        rows = generate_catalog(dcfg.demo_products, seed=cfg.seed)
        products = [data_mod.Product(**row) for row in rows]
        train, valid = data_mod.split_products(products, dcfg.valid_fraction, seed=cfg.seed)
        source = f"labelrec-demo(n={dcfg.demo_products},seed={cfg.seed})"
        return Splits(train, valid, source, f"{source} (split)")
    train_cat = data_mod.read_catalog(dcfg.train, dcfg, require_tags)
    skipped = list(train_cat.skipped)
    if dcfg.valid is None:
        train, valid = data_mod.split_products(  # near-duplicate titles on one side
            train_cat.products, dcfg.valid_fraction, seed=cfg.seed, by_title=True
        )
        return Splits(train, valid, str(dcfg.train), f"{dcfg.train} (split)", skipped)
    valid_cat = data_mod.read_catalog(dcfg.valid, dcfg, require_tags)
    if not valid_cat.products:  # nothing to stop, tune or measure on: not what a file is given for
        dropped = f" ({len(valid_cat.skipped)} bad rows skipped)" if valid_cat.skipped else ""
        raise ValueError(f"data.valid={dcfg.valid}: no products{dropped}")
    skipped += valid_cat.skipped
    return Splits(train_cat.products, valid_cat.products, str(dcfg.train), str(dcfg.valid), skipped)


@dataclass
class TrainResult:
    """What a finished run produced."""

    output: Path
    metrics: dict[str, float]
    history: list[dict[str, float]]
    best_epoch: int
    train_seconds: float
    n_tags: int
    # The final (fused) scores of the valid products the thresholds were tuned on, with what
    # scores them: what tracking logs as the valid evaluation, without loading the model again.
    valid_scores: np.ndarray | None = None
    valid_products: list[data_mod.Product] = field(default_factory=list)
    vocab: data_mod.TagVocab | None = None
    global_threshold: float = 0.5
    tag_thresholds: np.ndarray | None = None
    # what valid chose (a tuning run); for a refit model, what it was trained with
    tuned: Any = None  # labelrec.train.TunedSettings
    refit: dict[str, Any] | None = None  # a refit model: products, epochs, seconds
    # each tagger's valid evidence the fusion weights were tuned on (labelrec.fusion.FusionInputs)
    fusion_inputs: Any = None
    # (parents, plan) its decisions keep category paths whole by (labelrec.fusion.Fusion.hierarchy)
    hierarchy: Any = None
