"""A multi-label tagging evaluator for ``mlflow.models.evaluate`` (entry point ``labelrec``).

Works for any pyfunc whose output is ranked tags with scores per product: labelrec's own
(``tags`` column of ``{"tag", "score"}`` lists) or a peer wrapped as a pyfunc (lists of dicts,
of ``(tag, score)`` pairs, of tag strings in rank order, or ``{tag: score}`` dicts). The metrics
are those of ``labelrec eval`` (``labelrec.metrics``), computed from the ranking the model returns:

    mlflow.models.evaluate(model_uri, data=df, targets="tags", model_type="labelrec",
                           evaluators="labelrec")

MLflow metric names cannot hold ``@``: ``P@1`` is logged and returned as ``P_at_1``,
``recall@5_head`` as ``recall_at_5_head`` (see `metric_key`).

``evaluator_config``: ``limit`` (ranking depth asked of the model, default 10, at least the largest
k), ``ks`` (default (1, 3, 5)), ``decision_limit`` (at most this many tags a product count for F1,
default 50 for labelrec models; see `predict_ranked`), ``tag_counts`` (``{tag: training
count}`` for propensities and frequency bands of a peer; default: labelrec's vocabulary, else the
evaluation data), ``n_train_products``, ``tag_delimiter`` (for gold tags given as strings, "|"),
``metric_prefix`` (prefix of metric and artifact names), ``log_plots`` (default True).
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models.evaluation.artifacts import CsvEvaluationArtifact, ImageEvaluationArtifact
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator
from mlflow.tracking.artifact_utils import get_artifact_uri

from labelrec import metrics
from labelrec.data import is_missing, tag_cell, tag_key
from labelrec.evaluate import Evaluation
from labelrec.mlflow.flavor import text_inputs

MODEL_TYPES = ("labelrec", "multilabel")
KS = (1, 3, 5)
DECISION_LIMIT = 50
BAND_K = 5
PER_TAG = "per_tag_results"
PER_PRODUCT = "per_product_results"

Ranked = list[list[tuple[str, float | None]]]


def metric_key(name: str) -> str:
    """An MLflow-safe metric name: ``P@1`` -> ``P_at_1`` (MLflow rejects ``@``)."""
    return name.replace("@", "_at_")


# ----------------------------------------------------------------------- model output


def _ranked_row(value: Any, row: int) -> list[tuple[str, float | None]]:
    """One product's ranked tags from the forms a pyfunc may return."""
    if is_missing(value):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") or text.startswith("{"):
            return _ranked_row(json.loads(text), row)
        return [(text, None)] if text else []
    if isinstance(value, dict):
        if "tag" in value:
            return _ranked_row([value], row)
        pairs = sorted(value.items(), key=lambda kv: -float(kv[1]))
        return [(str(t), float(s)) for t, s in pairs]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"model output, row {row}: expected a list of tags, got {value!r}")
    out: list[tuple[str, float | None]] = []
    for item in value:
        if isinstance(item, dict):
            if "tag" not in item:
                raise ValueError(f"model output, row {row}: tag entry without 'tag': {item!r}")
            score = item.get("score")
            out.append((str(item["tag"]), None if score is None else float(score)))
        elif isinstance(item, str):
            out.append((item, None))
        elif isinstance(item, (list, tuple, np.ndarray)) and len(item) == 2:
            out.append((str(item[0]), float(item[1])))
        else:
            raise ValueError(f"model output, row {row}: cannot read tag entry {item!r}")
    return out


def parse_ranked(output: Any, column: str | None = None) -> Ranked:
    """Ranked ``(tag, score)`` lists per product from a pyfunc output (DataFrame, Series, list).

    A DataFrame is read from ``column``, else its ``tags`` column, else its only column.
    """
    if isinstance(output, pd.DataFrame):
        if column and column in output.columns:
            output = output[column]
        elif "tags" in output.columns:
            output = output["tags"]
        elif output.shape[1] == 1:
            output = output.iloc[:, 0]
        else:
            raise ValueError(
                f"model output has columns {list(output.columns)}; name the ranked tags column"
                " with predictions=... or return a 'tags' column"
            )
    if isinstance(output, pd.Series):
        output = output.tolist()
    elif isinstance(output, np.ndarray):
        output = output.tolist()
    if not isinstance(output, (list, tuple)):
        raise ValueError(f"model output must be one ranked tag list per product, got {output!r}")
    return [_ranked_row(v, i) for i, v in enumerate(output)]


def gold_lists(values: Iterable[Any], delimiter: str = "|") -> list[list[str]]:
    """Gold tags per product from lists/arrays, JSON lists or ``delimiter``-joined strings."""
    out = []
    for row, value in enumerate(values):
        try:  # as a catalog's tag column reads it: "[Sale]" is a tag, not broken JSON
            out.append(tag_cell(value, delimiter))
        except ValueError as err:
            raise ValueError(f"targets, row {row}: {err}") from None
    return out


# ----------------------------------------------------------------------- metrics


@dataclass
class TagLists:
    """Products' tags as columns of ``names``, one spelling per tag: the ``n_known`` tags of
    ``tag_counts`` first, in its order, then every other tag named (`tag_lists`)."""

    gold: list[list[int]]  # each gold tag once
    ranked: list[list[int]]  # as listed, best first
    decided: list[list[int]]
    names: list[str]
    counts: np.ndarray  # training counts; 0 for a tag outside tag_counts
    n_known: int
    n_train: int


def tag_lists(
    ranked: Ranked,
    gold: Sequence[Sequence[str]],
    decided: Ranked,
    tag_counts: dict[str, int] | None,
    n_train: int | None,
) -> TagLists:
    """The tags of `evaluate_ranked`'s arguments as column numbers: another case, width or
    form of a tag is that tag, spelt as ``tag_counts`` (else as first named). Without
    ``tag_counts``, the gold tags are counted over the products."""
    spelt: dict[str, str] = {}
    for tag in tag_counts or ():
        spelt.setdefault(tag_key(tag), tag)
    for rows in (gold, [[t for t, _ in r] for r in ranked], [[t for t, _ in r] for r in decided]):
        for tags in rows:
            for tag in tags:
                spelt.setdefault(tag_key(tag), tag)

    def one(tag: str) -> str:
        return tag if tag_counts is not None and tag in tag_counts else spelt[tag_key(tag)]

    gold_tags = [list(dict.fromkeys(one(t) for t in row)) for row in gold]
    ranked_tags = [[one(t) for t, _ in row] for row in ranked]
    decided_tags = [[one(t) for t, _ in row] for row in decided]
    if tag_counts is None:
        counted: dict[str, int] = {}
        for tags in gold_tags:
            for tag in tags:
                counted[tag] = counted.get(tag, 0) + 1
        tag_counts, n_train = counted, len(gold_tags)
    index = {tag: j for j, tag in enumerate(tag_counts)}
    n_known = len(index)
    for rows in (gold_tags, ranked_tags, decided_tags):
        for tags in rows:
            for tag in tags:
                index.setdefault(tag, len(index))
    counts = np.zeros(len(index), dtype=np.int64)
    counts[:n_known] = [int(c) for c in tag_counts.values()]
    return TagLists(
        gold=[[index[t] for t in row] for row in gold_tags],
        ranked=[[index[t] for t in row] for row in ranked_tags],
        decided=[[index[t] for t in row] for row in decided_tags],
        names=list(index),
        counts=counts,
        n_known=n_known,
        n_train=int(n_train or counts.max(initial=1) or 1),
    )


def evaluate_ranked(
    ranked: Ranked,
    gold: Sequence[Sequence[str]],
    decided: Ranked | None = None,
    tag_counts: dict[str, int] | None = None,
    n_train: int | None = None,
    ks: Sequence[int] = KS,
) -> Evaluation:
    """The metrics of ``labelrec eval`` from ranked tag lists instead of a score matrix.

    ``ranked``: each product's tags best first (deep enough for the largest k: products with
    fewer tags get no credit below their list). ``decided``: the tags the model assigns at its
    thresholds (micro/macro F1, per-tag results); default ``ranked``. ``tag_counts``: training
    counts (propensities, head/torso/tail bands; default: counts in ``gold``) over ``n_train``
    products. Only the order of the ranked tags counts, as in ``labelrec eval``.
    """
    n = len(gold)
    decided = ranked if decided is None else decided
    if len(ranked) != n or len(decided) != n:
        raise ValueError(f"{len(ranked)} predictions for {n} products with gold tags")
    if n == 0:
        raise ValueError("no products to evaluate")
    ks = tuple(int(k) for k in ks)
    depth = max(ks)
    tags = tag_lists(ranked, gold, decided, tag_counts, n_train)
    m, n_known = len(tags.names), tags.n_known
    counts = tags.counts

    # Each product's row holds its own tags (`cell_tag`, -1 for none): its first `depth`
    # ranked tags, best first; then `depth` never-gold cells that rank just below them, so a
    # short list earns nothing beyond its end (instead of unlisted tags filling the top k);
    # then its gold tags outside them. The rows are as wide as the widest product's, however
    # many tags the products name together; propensities are read per cell, and the band
    # recalls counted by tag.
    gold_ids = tags.gold
    top_ids = [list(dict.fromkeys(row))[:depth] for row in tags.ranked]
    rest_ids = []
    for gold_row, top in zip(gold_ids, top_ids, strict=True):
        listed = set(top)
        rest_ids.append([j for j in gold_row if j not in listed])
    width = max(len(top) + depth + len(rest) for top, rest in zip(top_ids, rest_ids, strict=True))
    cell_tag = np.full((n, width), -1, dtype=np.int32)
    scores = np.zeros((n, width), dtype=np.float32)
    y = np.zeros((n, width), dtype=bool)
    for i, (top, rest) in enumerate(zip(top_ids, rest_ids, strict=True)):
        cell_tag[i, : len(top)] = top
        cell_tag[i, len(top) + depth : len(top) + depth + len(rest)] = rest
        scores[i, : len(top)] = 2.0 + len(tags.ranked[i]) - np.arange(len(top))  # best first
        scores[i, len(top) : len(top) + depth] = 1.0
        y[i] = np.isin(cell_tag[i], gold_ids[i])
    band_k = min(BAND_K, depth)
    top_cells = metrics.top_k(scores, band_k)  # the tags of the gold cells found in a top k
    found = np.take_along_axis(cell_tag, top_cells, 1)[np.take_along_axis(y, top_cells, 1)]
    tagged = cell_tag >= 0
    inv_p = np.ones((n, width))
    inv_p[tagged] = (1.0 / metrics.propensities(counts, tags.n_train))[cell_tag[tagged]]
    del cell_tag, tagged, top_cells

    result = metrics.evaluate_scores(y, scores, np.inf, inv_propensity=inv_p, ks=ks)
    decided_ids = [list(dict.fromkeys(row)) for row in tags.decided]
    hit_ids = []
    for decided_row, gold_row in zip(decided_ids, gold_ids, strict=True):
        golden = set(gold_row)
        hit_ids.append([j for j in decided_row if j in golden])
    tp, support, predicted = (
        np.bincount(np.fromiter(chain.from_iterable(ids), dtype=np.int64), minlength=m)
        for ids in (hit_ids, gold_ids, decided_ids)
    )
    result.update(metrics.f1_of_counts(tp, support, predicted))
    found_tag = np.bincount(found, minlength=m)
    result.update(metrics.band_recall(found_tag, support, metrics.frequency_bands(counts), band_k))
    if tag_counts is not None:
        result["unknown_gold_share"] = float(support[n_known:].sum() / max(support.sum(), 1))
    per_tag = metrics.per_tag_rows(tp, support, predicted, tags.names, train_counts=counts)
    per_product = metrics.per_product_metrics(y, scores, ks)
    return Evaluation(result, per_tag, per_product)


# ----------------------------------------------------------------------- plots


def _plot_ranking(values: dict[str, float], ks: Sequence[int], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.9)
    ax = fig.add_subplot()
    families = [f for f in ("P", "R", "nDCG", "PSP") if f"{f}@{ks[0]}" in values]
    width = 0.8 / max(len(ks), 1)
    for i, k in enumerate(ks):
        heights = [values.get(f"{f}@{k}", float("nan")) for f in families]
        ax.bar(np.arange(len(families)) + i * width, heights, width, label=f"k={k}")
    ax.set_xticks(np.arange(len(families)) + width * (len(ks) - 1) / 2, families)
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score")
    ax.set_title("Ranking metrics at k")
    ax.legend(ncols=len(ks), loc="upper center", frameon=False)
    fig.savefig(path, dpi=100)


def _plot_f1_frequency(per_tag: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.9)
    ax = fig.add_subplot()
    rows = per_tag[per_tag["support"] > 0]
    counts = rows["train_count"].fillna(0).astype(float) + 1.0
    ax.scatter(counts, rows["f1"], s=12, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("training count + 1")
    ax.set_ylabel("F1 at the model's thresholds")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Per-tag F1 against tag frequency")
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------- the evaluator


def _labelrec_recommender(model: Any) -> Any:
    """The TagRecommender inside a labelrec pyfunc, or None for other models."""
    try:
        raw = model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - any non-PythonModel pyfunc
        return None
    return getattr(raw, "recommender", None)


def _params_schema(model: Any) -> set[str]:
    try:
        schema = model.metadata.get_params_schema()
    except Exception:  # noqa: BLE001 - models without metadata
        return set()
    return {p.name for p in schema.params} if schema is not None else set()


def unmatched_gold_warning(gold: list[list[str]], ranked: Ranked, delimiter: str) -> str | None:
    """A warning when no gold tag is among the model's ranked tags of any product (every
    metric is then 0): the usual cause is gold tags joined by another delimiter."""
    if not any(gold) or not any(ranked):
        return None
    predicted = {tag for row in ranked for tag, _ in row}
    if any(tag in predicted for row in gold for tag in row):
        return None
    example = next(tag for row in gold for tag in row)
    return (
        f"no gold tag is among the model's ranked tags (e.g. gold {example!r}): every metric is 0;"
        f" gold tags in a string are split by evaluator_config['tag_delimiter'] ({delimiter!r})"
    )


def predict_ranked(
    model: Any,
    data: Any,
    limit: int = 10,
    decision_limit: int | None = None,
    column: str | None = None,
) -> tuple[Ranked, Ranked, Any]:
    """(ranking, thresholded decisions, labelrec recommender or None) of a pyfunc on ``data``.

    A labelrec model is asked once for its top ``decision_limit`` (default 50) tags with
    ``threshold=0``; its decisions are the tags among them at or above its per-tag thresholds
    (a new tag, outside the vocabulary: at or above its new-tag threshold), a category path
    only where the paths above it are decisions too, as the model decides.
    Other models with a ``threshold`` param are asked twice (``threshold=0`` for the ranking, their
    default for the decisions); models without one once (their output is both).
    """
    features = text_inputs(data)
    accepted = _params_schema(model)
    rec = _labelrec_recommender(model)
    if "threshold" not in accepted:
        params = {"limit": int(limit)} if "limit" in accepted else None
        ranked = parse_ranked(model.predict(features, params=params), column)
        return ranked, ranked, rec
    depth = max(int(limit), int(decision_limit or DECISION_LIMIT)) if rec is not None else limit
    params: dict[str, Any] = {"threshold": 0.0}
    if "limit" in accepted:
        params["limit"] = int(depth)
    ranked = parse_ranked(model.predict(features, params=params), column)
    if rec is not None:  # its decisions: known tags at their thresholds, new ones at theirs
        # (a category path only under a decided parent: the model's own rule, on its columns)
        index, new_cut = rec.vocab.index, rec.new_tag_threshold
        decided = []
        for row in ranked:  # a product at a time: a row over the vocabulary, not a matrix
            scores = np.full((1, len(index)), -np.inf)
            for t, s in row:
                if s is not None and t in index:
                    scores[0, index[t]] = s
            ok = rec.decisions(scores, rec.tag_thresholds)[0]
            decided.append(
                [
                    (t, s)
                    for t, s in row
                    if s is not None and (ok[index[t]] if t in index else s >= new_cut)
                ]
            )
        return ranked, decided, rec
    params = {"limit": int(decision_limit)} if decision_limit and "limit" in accepted else None
    decided = parse_ranked(model.predict(features, params=params), column)
    return ranked, decided, rec


class LabelrecEvaluator(ModelEvaluator):
    """P@k, R@k, nDCG@k, PSP@k, micro/macro F1, head/torso/tail recall of ranked tag output."""

    @classmethod
    def can_evaluate(cls, *, model_type: str | None, evaluator_config: dict, **kwargs: Any) -> bool:
        """``model_type="labelrec"`` or ``"multilabel"``.

        ``mlflow.models.evaluate`` refuses ``model_type=None`` without ``extra_metrics``, and
        accepting None would also enrol this evaluator in every untyped evaluation.
        """
        return model_type in MODEL_TYPES

    def evaluate(
        self,
        *,
        model_type: str | None,
        dataset: Any,
        run_id: str,
        evaluator_config: dict | None,
        model: Any = None,
        extra_metrics: Any = None,
        custom_artifacts: Any = None,
        predictions: str | None = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        cfg = dict(evaluator_config or {})
        ks = tuple(int(k) for k in cfg.get("ks", KS))
        if not ks or min(ks) < 1:
            raise ValueError(f"evaluator_config ks: one or more ranks k >= 1, got {list(ks)}")
        limit = max(int(cfg.get("limit", 10)), max(ks))
        prefix = str(cfg.get("metric_prefix", ""))
        if dataset.labels_data is None:
            raise ValueError("the labelrec evaluator needs targets=<column of gold tag lists>")
        gold = gold_lists(dataset.labels_data, cfg.get("tag_delimiter", "|"))
        rec = None
        if model is not None:
            ranked, decided, rec = predict_ranked(
                model, dataset.features_data, limit, cfg.get("decision_limit"), predictions
            )
        elif dataset.predictions_data is not None:
            ranked = decided = parse_ranked(dataset.predictions_data)
        else:
            raise ValueError("nothing to evaluate: give a model or a predictions column")
        delimiter = cfg.get("tag_delimiter", "|")
        if (warning := unmatched_gold_warning(gold, ranked, delimiter)) is not None:
            warnings.warn(warning, stacklevel=2)
        tag_counts = cfg.get("tag_counts")
        n_train = cfg.get("n_train_products")
        if tag_counts is None and rec is not None:
            tag_counts = dict(zip(rec.vocab.tags, (int(c) for c in rec.vocab.counts), strict=True))
            n_train = n_train or rec.vocab.n_products
        evaluation = evaluate_ranked(ranked, gold, decided, tag_counts, n_train, ks)
        values = {
            prefix + metric_key(k): float(v)
            for k, v in evaluation.metrics.items()
            if v is not None and math.isfinite(v)
        }
        client = mlflow.MlflowClient()
        mlflow.log_metrics(values, run_id=run_id)
        artifacts = self._log_artifacts(client, run_id, evaluation, ks, prefix, cfg)
        return EvaluationResult(metrics=values, artifacts=artifacts, run_id=run_id)

    @staticmethod
    def _log_artifacts(
        client: Any, run_id: str, evaluation: Evaluation, ks: Sequence[int], prefix: str, cfg: dict
    ) -> dict[str, Any]:
        per_tag = pd.DataFrame(evaluation.per_tag)
        per_product = pd.DataFrame(evaluation.per_product)
        per_product.insert(0, "row", np.arange(len(per_product)))
        artifacts: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as tmp:
            tables = {PER_TAG: per_tag, PER_PRODUCT: per_product}
            for name, table in tables.items():
                path = Path(tmp) / f"{prefix}{name}.csv"
                table.to_csv(path, index=False)
                client.log_artifact(run_id, str(path))
                uri = get_artifact_uri(run_id, path.name)
                artifacts[prefix + name] = CsvEvaluationArtifact(uri=uri, content=table)
            if cfg.get("log_plots", True):
                plots = {
                    "ranking_metrics": lambda p: _plot_ranking(evaluation.metrics, ks, p),
                    "f1_vs_tag_frequency": lambda p: _plot_f1_frequency(per_tag, p),
                }
                for name, draw in plots.items():
                    path = Path(tmp) / f"{prefix}{name}.png"
                    draw(path)
                    client.log_artifact(run_id, str(path))
                    uri = get_artifact_uri(run_id, path.name)
                    artifacts[prefix + name] = ImageEvaluationArtifact(uri=uri)
        return artifacts


def register_evaluator() -> None:
    """Make ``evaluators="labelrec"`` known to MLflow in this process. MLflow finds evaluators
    through the entry points of installed packages; the MLflow Project runs labelrec from the
    project directory (``conda.yaml``), where there is no installed package to read them from."""
    try:  # MLflow's registry object is internal: where it moves, the entry point still works
        from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry
    except ImportError:
        return
    if not _model_evaluation_registry.is_registered("labelrec"):
        _model_evaluation_registry.register("labelrec", LabelrecEvaluator)
