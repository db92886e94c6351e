"""MLflow tracking for labelrec runs: params, per-epoch metrics, datasets, artifacts and plots.

``MlflowTracker`` implements the ``Tracker`` protocol of ``labelrec.train``::

    with mlflow.start_run():
        result = train(cfg, tracker=MlflowTracker())

Only the main Accelerate process logs: on the other processes the tracker is a no-op and never
touches MLflow, so ``accelerate launch`` gives one run, not one per process.

MLflow names may hold letters, digits, ``_ - . / :`` and spaces but not ``@``; labelrec's metric
names are written with ``@`` replaced by ``_at_`` (``valid_nDCG@3`` -> ``valid_nDCG_at_3``), see
``metric_key``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import platform
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from labelrec.data import tag_string
from labelrec.modeldir import (
    HISTORY_FILE,
    LABELREC_FILE,
    THRESHOLDS_FILE,
    TUNED_FILE,
    TUNING_DIR,
    VOCAB_FILE,
)

logger = logging.getLogger(__name__)

CONTEXTS = {"train": "training", "valid": "validation", "eval": "evaluation"}
_BAD_CHARS = re.compile(r"[^\w.\-/ ]")
_BATCH = 100  # entries per log_batch call (server limits: 100 params, 1000 metrics)


# ---------------------------------------------------------------------- names and values
def metric_key(name: str) -> str:
    """An MLflow-safe metric/param name: ``@`` -> ``_at_``, other invalid characters -> ``_``."""
    key = _BAD_CHARS.sub("_", str(name).replace("@", "_at_"))
    return key[:250] or "_"


def param_value(value: Any) -> str:
    """A param value as MLflow stores it: lists/dicts as JSON, cut to MLflow's length limit."""
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VAL_LENGTH:
        marker = f"...[{len(text)} chars]"
        text = text[: MAX_PARAM_VAL_LENGTH - len(marker)] + marker
    return text


def accelerate_state() -> Any:
    """Accelerate's process state, set up as ``labelrec.train`` sets it up (cpu without CUDA)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """True on the Accelerate main process (and when not launched through Accelerate)."""
    try:
        return bool(accelerate_state().is_main_process)
    except Exception:  # accelerate missing or no distributed setup: trust the launcher env
        return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def system_info() -> dict[str, str]:
    """Python, platform, CPU/GPU and library versions of this process."""
    import torch

    info = {
        "system.python": platform.python_version(),
        "system.platform": platform.platform(),
        "system.cpu_count": str(os.cpu_count()),
        "system.torch": torch.__version__,
        "system.cuda": torch.version.cuda or "none",
        "system.gpus": str(torch.cuda.device_count()) if torch.cuda.is_available() else "0",
        "system.mlflow": mlflow.__version__,
    }
    if torch.cuda.is_available():
        info["system.gpu_name"] = torch.cuda.get_device_name(0)
    from importlib import metadata

    for package in ("transformers", "peft", "accelerate", "labelrec"):
        try:
            info[f"system.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return info


# ---------------------------------------------------------------------- datasets
def catalog_digest(products: Sequence[Any]) -> str:
    """A content digest of products (id, title, description, tags), order-sensitive, 16 hex."""
    h = hashlib.sha256()
    for p in products:
        h.update(
            json.dumps([p.id, p.title, p.description, list(p.tags)], ensure_ascii=False).encode(
                "utf-8"
            )
        )
        h.update(b"\n")
    return h.hexdigest()[:16]


def _source_of(source: str) -> tuple[Any, str]:
    """An MLflow dataset source for a labelrec source string, and a dataset name."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    text = str(source)
    path_text = text[: -len(" (split)")] if text.endswith(" (split)") else text
    path = Path(path_text)
    with warnings.catch_warnings():
        # "can be interpreted in multiple ways": two local-file source classes, same result.
        warnings.simplefilter("ignore", UserWarning)
        if path.is_file():
            return resolve_dataset_source(str(path.resolve())), path.name
        if "://" in path_text:
            try:
                return resolve_dataset_source(path_text), Path(path_text).name or path_text
            except Exception:  # not a kind of URI MLflow knows: keep it as a description
                pass
    name = text.split("(")[0] or "catalog"
    return CodeDatasetSource(tags={"labelrec.source": text}), name


def catalog_dataset(products: Sequence[Any], source: str, name: str | None = None) -> Any:
    """An ``mlflow.data`` PandasDataset of products (id, title, description, tags)."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "id": [p.id for p in products],
            "title": [p.title for p in products],
            "description": [p.description for p in products],
            "tags": [tag_string(p.tags) for p in products],
        }
    )
    dataset_source, default_name = _source_of(source)
    return mlflow.data.from_pandas(
        frame,
        source=dataset_source,
        targets="tags",
        name=name or default_name,
        digest=catalog_digest(products),
    )


# ---------------------------------------------------------------------- the tracker
class MlflowTracker:
    """Logs a training run to MLflow (the ``Tracker`` protocol of ``labelrec.train``).

    ``run_id``: the run to log to; default: the active run, else a new run that ``close()`` ends.
    ``enabled``: default: only on the Accelerate main process.
    """

    def __init__(
        self,
        run_id: str | None = None,
        enabled: bool | None = None,
        log_system_info: bool = True,
    ) -> None:
        self.enabled = is_main_process() if enabled is None else enabled
        self.run_id: str | None = None
        self.datasets: dict[str, dict[str, Any]] = {}
        self._own_run = False
        self._system_logged = not log_system_info
        self.client: MlflowClient | None = None
        if not self.enabled:
            return
        self.client = MlflowClient()
        if run_id is not None:
            self.run_id = run_id
        elif (active := mlflow.active_run()) is not None:
            self.run_id = active.info.run_id
        else:
            self.run_id = mlflow.start_run().info.run_id
            self._own_run = True

    # -- Tracker protocol
    def log_params(self, params: dict[str, Any]) -> None:
        """Params (flattened config, sizes, devices) plus system info, once per key."""
        if not self.enabled:
            return
        values = {metric_key(k): param_value(v) for k, v in params.items()}
        if not self._system_logged:
            values.update(system_info())
            self._system_logged = True
        log_params(self.run_id, values, self.client)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Numeric metrics at ``step`` (epoch); names through ``metric_key``."""
        if not self.enabled:
            return
        log_metrics(self.run_id, metrics, step, self.client)

    def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None:
        """An MLflow dataset input (source, digest, size, tag counts) in context ``name``."""
        if not self.enabled:
            return
        info = log_catalog_input(self.run_id, name, source, products, n_tags, self.client)
        self.datasets[name] = info

    # -- extras
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's contents, under ``artifact_path``."""
        if not self.enabled:
            return
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Run tags (values as strings)."""
        if self.enabled and tags:
            self.client.log_batch(
                self.run_id, tags=[RunTag(k, param_value(v)) for k, v in tags.items()]
            )

    def close(self, status: str = "FINISHED") -> None:
        """End the run if this tracker started it."""
        if self.enabled and self._own_run:
            mlflow.end_run(status)
            self._own_run = False


# ---------------------------------------------------------------------- logging helpers
_EMPTY_PROJECT_PARAM = ("''", "")  # how `mlflow run` logs a project parameter given as ""


def _same_path(logged: str, value: str) -> bool:
    """Whether ``value`` is the absolute form of the path ``logged`` (``mlflow run`` logs a
    ``path`` parameter as given and hands the step its absolute path)."""
    if not os.path.isabs(value) or os.path.isabs(logged) or not logged:
        return False
    return os.path.abspath(logged) == os.path.normpath(value)


def log_params(run_id: str, params: dict[str, Any], client: MlflowClient | None = None) -> None:
    """Log params, skipping keys the run already has (MLflow refuses to change a param). Where
    ``mlflow run`` logged a project parameter left empty (``''``), a value given here goes to
    ``<key>.resolved``."""
    client = client or MlflowClient()
    existing = client.get_run(run_id).data.params
    fresh = []
    for key, value in params.items():
        key, value = metric_key(key), param_value(value)
        if key in existing and existing[key] in _EMPTY_PROJECT_PARAM:
            if value in _EMPTY_PROJECT_PARAM + ("None",):
                continue  # empty both ways
            key = f"{key}.resolved"
        if key in existing:
            if existing[key] != value and not _same_path(existing[key], value):
                logger.warning("param %s already logged as %r; keeping it", key, existing[key])
            continue
        fresh.append(Param(key, value))
    for i in range(0, len(fresh), _BATCH):
        client.log_batch(run_id, params=fresh[i : i + _BATCH])


def log_metrics(
    run_id: str,
    metrics: dict[str, Any],
    step: int | None = None,
    client: MlflowClient | None = None,
) -> dict[str, float]:
    """Log the numeric values of ``metrics`` (NaN/inf skipped); returns what was logged."""
    import time

    client = client or MlflowClient()
    now = int(time.time() * 1000)
    logged: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            continue
        value = float(value)
        if not math.isfinite(value):
            continue
        logged[metric_key(key)] = value
    entries = [Metric(k, v, now, step or 0) for k, v in logged.items()]
    for i in range(0, len(entries), _BATCH):
        client.log_batch(run_id, metrics=entries[i : i + _BATCH])
    return logged


def log_catalog_input(
    run_id: str,
    name: str,
    source: str,
    products: Sequence[Any],
    n_tags: int,
    client: MlflowClient | None = None,
) -> dict[str, Any]:
    """Log products as a dataset input of the run; returns source, digest and sizes."""
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client = client or MlflowClient()
    dataset = catalog_dataset(products, source)
    distinct = {t for p in products for t in p.tags}
    assignments = sum(len(p.tags) for p in products)
    info = {
        "name": dataset.name,
        "source": str(source),
        "digest": dataset.digest,
        "n_products": len(products),
        "n_tags": int(n_tags),
        "n_distinct_tags": len(distinct),
        "n_tag_assignments": assignments,
    }
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS.get(name, name))]
    tags += [InputTag(k, str(info[k])) for k in ("n_products", "n_tags", "n_distinct_tags")]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])
    client.log_batch(
        run_id,
        tags=[
            RunTag(f"labelrec.data.{name}.digest", info["digest"]),
            RunTag(f"labelrec.data.{name}.source", param_value(source)),
        ],
    )
    return info


# ---------------------------------------------------------------------- evaluation artifacts
def precision_recall_curve(
    y_true: Any, scores: np.ndarray, n_bins: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro precision and recall for one global threshold on a grid of ``n_bins`` cut-offs.

    ``y_true`` (csr, n x m) may have more columns than ``scores`` (unknown gold tags count as
    misses). Returns (thresholds, precision, recall); precision is NaN where nothing passes.
    """
    curve = PrecisionRecallCurve(n_bins)
    curve.add(y_true, scores)
    return curve.result()


class PrecisionRecallCurve:
    """`precision_recall_curve` of products whose scores come a part at a time: ``add`` each
    part's gold and scores, then ``result``; it keeps counts by bin, not the scores."""

    def __init__(self, n_bins: int = 100) -> None:
        self.edges = np.linspace(0.0, 1.0, n_bins + 1)
        self._pos = np.zeros(n_bins, dtype=np.int64)  # gold entries by score bin
        self._all = np.zeros(n_bins, dtype=np.int64)  # every entry by score bin
        self._n_gold = 0

    def add(self, y_true: Any, scores: np.ndarray) -> None:
        """Gold (csr, as in `precision_recall_curve`) and scores of the next products."""
        import scipy.sparse as sp

        y = sp.csr_matrix(y_true)
        rows, cols = y.nonzero()
        known = cols < scores.shape[1]
        pos_scores = scores[rows[known], cols[known]]
        self._pos += np.histogram(np.clip(pos_scores, 0, 1), bins=self.edges)[0]
        self._all += np.histogram(np.clip(scores, 0, 1).ravel(), bins=self.edges)[0]
        self._n_gold += int(y.nnz)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, precision, recall) of every product added."""
        # Items scoring >= edges[i]: sum of bins i..end.
        tp = np.cumsum(self._pos[::-1])[::-1]
        predicted = np.cumsum(self._all[::-1])[::-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan)
        recall = tp / max(self._n_gold, 1)
        return self.edges[:-1], precision, recall


def plot_precision_recall(
    thresholds: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
    tuned: float | None = None,
    title: str = "",
) -> Any:
    """Precision and recall against a global score threshold (matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot()
    ax.plot(thresholds, precision, label="precision (micro)")
    ax.plot(thresholds, recall, label="recall (micro)")
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    ax.plot(thresholds, f1, label="F1 (micro)", linestyle="--")
    if tuned is not None:
        ax.axvline(tuned, color="grey", linestyle=":", label=f"tuned global cut {tuned:.2f}")
    ax.set_xlabel("score threshold")
    ax.set_ylabel("value")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "Precision and recall against the threshold")
    fig.tight_layout()
    return fig


def plot_at_k(metrics: dict[str, float], ks: Iterable[int] = (1, 3, 5), title: str = "") -> Any:
    """Grouped bars of P@k, R@k, nDCG@k and PSP@k."""
    from matplotlib.figure import Figure

    ks = list(ks)
    families = [f for f in ("P", "R", "nDCG", "PSP") if any(f"{f}@{k}" in metrics for k in ks)]
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(len(ks), 1)
    x = np.arange(len(families))
    for i, k in enumerate(ks):
        values = [metrics.get(f"{f}@{k}", np.nan) for f in families]
        bars = ax.bar(x + (i - (len(ks) - 1) / 2) * width, values, width, label=f"@{k}")
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, families)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("value")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Ranking metrics at k")
    fig.tight_layout()
    return fig


def plot_f1_by_frequency(per_tag: Sequence[dict[str, Any]], title: str = "") -> Any:
    """Per-tag F1 against the tag's training frequency (log scale), with a binned mean."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = [r for r in per_tag if (r.get("train_count") or 0) > 0 and r.get("support", 0) > 0]
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot()
    if rows:
        counts = np.array([r["train_count"] for r in rows], dtype=float)
        f1 = np.array([r["f1"] for r in rows], dtype=float)
        support = np.array([r["support"] for r in rows], dtype=float)
        ax.scatter(counts, f1, s=8 + 4 * np.sqrt(support), alpha=0.35, label="tag")
        edges = np.unique(np.geomspace(1, counts.max() + 1, num=12).astype(int))
        if len(edges) > 1:
            idx = np.clip(np.digitize(counts, edges) - 1, 0, len(edges) - 2)
            centers, means = [], []
            for b in range(len(edges) - 1):
                mask = idx == b
                if mask.any():
                    centers.append(np.sqrt(edges[b] * edges[b + 1]))
                    means.append(f1[mask].mean())
            ax.plot(centers, means, color="C1", marker="o", label="mean F1 per bin")
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        if counts.max() / counts.min() < 100:  # few decades: label the 2..9 ticks too
            ax.xaxis.set_minor_formatter(plain)
        else:
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    ax.set_xlabel("training products with the tag")
    ax.set_ylabel("F1 on evaluation data")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Per-tag F1 against tag frequency ({len(rows)} tags)")
    fig.tight_layout()
    return fig


def write_per_tag_csv(per_tag: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Per-tag results as CSV (tag, support, predicted, tp, precision, recall, f1, train_count)."""
    path = Path(path)
    fields = list(per_tag[0]) if per_tag else ["tag"]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(per_tag)
    return path


def _json_number(value: Any) -> Any:
    """A metric as JSON holds it: numbers (numpy's too) as floats, NaN and infinities as null
    (JSON has neither: a metric without the data it needs), anything else as it is."""
    if value is None or isinstance(value, (bool, str)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if math.isfinite(number) else None


def log_evaluation(
    run_id: str,
    evaluation: Any,
    curve: PrecisionRecallCurve,
    global_threshold: float | None = None,
    artifact_dir: str = "evaluation",
    metric_prefix: str | None = "",
    step: int | None = None,
    client: MlflowClient | None = None,
) -> dict[str, float]:
    """Metrics, per-tag CSV, metrics JSON and the three plots of an ``Evaluation`` and the
    ``curve`` of the same scores.

    Metrics are logged as ``<metric_prefix><name>`` (names through ``metric_key``; None: no
    metrics, only files); files go to
    ``<artifact_dir>/``: ``metrics.json``, ``per_tag.csv``, ``precision_recall_threshold.png``,
    ``metrics_at_k.png``, ``f1_by_tag_frequency.png``.
    """
    client = client or MlflowClient()
    logged: dict[str, float] = {}
    if metric_prefix is not None:
        values = {f"{metric_prefix}{k}": v for k, v in evaluation.metrics.items()}
        logged = log_metrics(run_id, values, step, client)
    thresholds, precision, recall = curve.result()
    figures = {
        "precision_recall_threshold.png": plot_precision_recall(
            thresholds, precision, recall, global_threshold
        ),
        "metrics_at_k.png": plot_at_k(evaluation.metrics),
        "f1_by_tag_frequency.png": plot_f1_by_frequency(evaluation.per_tag),
    }
    with tempfile.TemporaryDirectory(prefix="labelrec-eval-") as tmp:
        folder = Path(tmp) / "files"
        folder.mkdir()
        finite = {k: _json_number(v) for k, v in evaluation.metrics.items()}
        (folder / "metrics.json").write_text(
            json.dumps(finite, indent=2, allow_nan=False), encoding="utf-8"
        )
        write_per_tag_csv(evaluation.per_tag, folder / "per_tag.csv")
        curve = [
            {"threshold": round(float(t), 4), "precision": float(p), "recall": float(r)}
            for t, p, r in zip(thresholds, precision, recall, strict=True)
        ]
        (folder / "precision_recall_threshold.json").write_text(
            json.dumps(curve, indent=1), encoding="utf-8"
        )
        for name, fig in figures.items():
            fig.savefig(folder / name)
        for item in sorted(folder.iterdir()):
            client.log_artifact(run_id, str(item), artifact_dir)
    return logged


def log_model_files(run_id: str, model_dir: str | Path, client: MlflowClient | None = None) -> None:
    """The model's tag vocabulary, thresholds, info and training history as run artifacts
    (with a refit, the tuning run's choices and history in ``model_files/tuning``)."""
    client = client or MlflowClient()
    for sub, names in (
        ("", (VOCAB_FILE, THRESHOLDS_FILE, LABELREC_FILE, HISTORY_FILE)),
        (TUNING_DIR, (TUNED_FILE, HISTORY_FILE)),
    ):
        for name in names:
            path = Path(model_dir) / sub / name
            if path.is_file():
                client.log_artifact(run_id, str(path), f"model_files/{sub}".rstrip("/"))
