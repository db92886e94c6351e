"""The Model Registry: register a challenger, describe a version, gated promotion to champion.

Aliases only (``@challenger``, ``@champion``), no stages. ``promote`` evaluates the challenger and
the current champion on the same catalog with the ``labelrec`` evaluator (the numbers of
``labelrec eval``) and moves ``@champion`` only when the challenger is better by more than a
margin, a paired bootstrap over products puts the 95% interval of the difference above zero, and
no head/torso/tail band loses more than ``max_band_drop`` of recall@5.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from labelrec import metrics
from labelrec.config import DataConfig, model_data_config
from labelrec.data import TagVocab, check_catalog_file, read_catalog
from labelrec.describe import DESCRIBER_KIND
from labelrec.mlflow.evaluator import KS, PER_PRODUCT, metric_key, register_evaluator
from labelrec.mlflow.flavor import (
    MODEL_SUBPATH,
    describer_info,
    destination_for,
    labelrec_version,
    log_model,
)
from labelrec.mlflow.store import model_versions
from labelrec.model import ModelError, read_info
from labelrec.modeldir import VOCAB_FILE

BANDS = ("head", "torso", "tail")
METRIC_TAG_PREFIX = "valid."
KIND_TAG = "labelrec.kind"  # on each registered version: tagger or describer
# Figures of labelrec.json's valid_metrics that are settings the tuning chose or timings, not the
# model's quality: not tagged as metrics (n_products is tagged as labelrec.valid_products).
NOT_METRICS = {"rerank_settings", "rerank_kept", "absent_factor", "ridge_mix"}
NOT_METRIC_SUFFIXES = ("_seconds", "_per_s", "_weight")
# The valid metrics a version's description names, when it has them.
DESCRIBED_METRICS = ("P_at_1", "nDCG_at_3", "micro_f1", "rougeL_f1")
PROMOTION_TAG_PREFIX = "promotion."


class RegistryError(ModelError):
    """A registry operation cannot be done (missing alias, broken model version...)."""


@dataclass
class PromotionDecision:
    """The outcome of `promote` (also written as ``promotion.*`` tags on the challenger)."""

    promoted: bool
    reason: str
    challenger_version: int | None = None
    champion_version: int | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    band_drops: dict[str, float] = field(default_factory=dict)
    metric: str = "nDCG@3"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def code_version() -> str:
    """labelrec's version, plus ``+g<commit>`` when the source is a git checkout of labelrec
    (not an installed copy inside some other repository, e.g. a project's virtualenv)."""
    version = labelrec_version()
    root = Path(__file__).resolve().parents[2]  # the folder that holds the package
    try:
        lines = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return version
    if len(lines) != 2 or Path(lines[0]).resolve() != root:
        return version
    return f"{version}+g{lines[1]}"


def _canonical(metric: str) -> str:
    """``nDCG_at_3`` -> ``nDCG@3``; only per-product metrics can be bootstrapped."""
    name = metric.replace("_at_", "@")
    family, _, k = name.partition("@")
    if family not in ("P", "R", "nDCG") or not k.isdigit() or int(k) not in KS:
        allowed = ", ".join(f"{f}@{k}" for f in ("P", "R", "nDCG") for k in KS)
        raise ValueError(f"promotion metric must be one of {allowed}; got {metric!r}")
    return name


def _run_context(run_name: str) -> Any:
    """The active run, or a new one that ends (FAILED on an exception) with the block."""
    if mlflow.active_run() is not None:
        return contextlib.nullcontext(mlflow.active_run())
    return mlflow.start_run(run_name=run_name)


# ----------------------------------------------------------------------- registering


def register_challenger(
    model_dir: str | Path,
    name: str = "labelrec",
    alias: str = "challenger",
    tags: dict[str, Any] | None = None,
    input_example: Any = None,
) -> ModelVersion:
    """Log ``model_dir`` in the active run (one is started if none), register it, set ``alias``.

    The version is tagged with its valid metrics from ``labelrec.json`` (``valid.P_at_1``...),
    ``code_version``, backbone and tag count, plus ``tags`` (e.g. ``data_digest``). A describer
    directory is registered the same way, tagged ``labelrec.kind: describer`` with the metrics of
    its ``causal.json``.
    """
    describer = describer_info(Path(model_dir))
    info = describer if describer is not None else read_info(model_dir)
    version_tags: dict[str, str] = {
        "code_version": code_version(),
        "labelrec.backbone": str(info.get("backbone")),
        KIND_TAG: DESCRIBER_KIND if describer is not None else "tagger",
    }
    if describer is None:
        version_tags["labelrec.n_tags"] = str(info.get("n_tags"))
    for key, value in (info.get("valid_metrics") or {}).items():
        if describer is not None:  # a describer's training figures sit beside its valid_ ones
            if not key.startswith("valid_"):
                continue
            key = key[len("valid_") :]
        if key == "n_products":
            version_tags["labelrec.valid_products"] = str(int(value))
        elif key == "tuning_folds":  # > 1: the figures are out of fold over train + valid
            version_tags["labelrec.tuning_folds"] = str(int(value))
        elif key in NOT_METRICS or key.endswith(NOT_METRIC_SUFFIXES):
            continue
        elif isinstance(value, (int, float)) and math.isfinite(value):
            version_tags[METRIC_TAG_PREFIX + metric_key(key)] = repr(float(value))
    version_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    with _run_context(f"register {name}"):
        model_info = log_model(
            model_dir, name="model", registered_model_name=name, input_example=input_example
        )
        version = str(model_info.registered_model_version)
        client = mlflow.MlflowClient()
        for key, value in version_tags.items():
            client.set_model_version_tag(name, version, key, value)
        description = version_description(version_tags)
        client.update_model_version(name, version, description=description)
        client.set_registered_model_alias(name, alias, version)
        return client.get_model_version(name, version)


def version_description(version_tags: dict[str, str]) -> str:
    """One line for a registered version: its kind, backbone, tag count and main valid metrics."""
    kind = version_tags.get(KIND_TAG, "tagger")
    text = f"labelrec {kind} on {version_tags.get('labelrec.backbone')}"
    if kind != DESCRIBER_KIND:
        text += f", {version_tags.get('labelrec.n_tags')} tags"
    shown = [
        f"{key[len(METRIC_TAG_PREFIX) :].replace('_at_', '@')} {float(value):.4f}"
        for key, value in version_tags.items()
        if key.startswith(METRIC_TAG_PREFIX) and key[len(METRIC_TAG_PREFIX) :] in DESCRIBED_METRICS
    ]
    if shown:
        folds = int(version_tags.get("labelrec.tuning_folds", "1"))
        where = f"out of fold ({folds} tuning folds)" if folds > 1 else "valid"
        text += f"; {where} " + ", ".join(shown)
    return text


# ----------------------------------------------------------------------- describing


def _parse_models_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of ``models:/name/version`` or ``models:/name@alias``; the
    version of ``models:/name/latest`` is ``"latest"``."""
    expected = (
        "expected models:/<name>/<version>, models:/<name>/latest or models:/<name>@<alias>,"
        f" got {model_uri!r}"
    )
    if not model_uri.startswith("models:/"):
        raise ValueError(expected)
    rest = model_uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        return name, None, alias
    name, sep, version = rest.rpartition("/")
    if not sep or not (version.isdigit() or version == "latest"):
        raise ValueError(expected)
    return name, version, None


def _alias_version(client: Any, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at, or None when no version has it. Any other failure (the
    registry unreachable, an HTTP 503) raises ``RegistryError``: a champion that cannot be read
    is not a missing champion, which would let any first model through the gate."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryError(
            f"@{alias} of {name!r} cannot be read ({err.error_code}): {err.message}"
        ) from None


def _last_promoted(client: Any, name: str, other_than: str) -> ModelVersion | None:
    """The newest version of ``name`` (not ``other_than``) that a promotion moved the champion
    alias to: the champion to beat when the alias itself is gone (its version was deleted,
    which drops the alias)."""
    try:
        versions = model_versions(client, name)
    except MlflowException as err:
        raise RegistryError(f"{name!r}: versions cannot be listed ({err.message})") from None
    promoted = [
        v
        for v in versions
        if str(v.version) != str(other_than)
        and (v.tags or {}).get(PROMOTION_TAG_PREFIX + "decision") == "promoted"
    ]
    return max(promoted, key=lambda v: int(v.version), default=None)


def _get_version(client: Any, name: str, version: str | None, alias: str | None) -> ModelVersion:
    """The version an alias, a number or ``latest`` (the highest number) names."""
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version == "latest":
            found = model_versions(client, name)
            if not found:
                raise RegistryError(f"registered model {name!r} has no version")
            return max(found, key=lambda mv: int(mv.version))
        return client.get_model_version(name, version)
    except MlflowException as err:
        what = f"@{alias}" if alias is not None else f"version {version}"
        raise RegistryError(f"registered model {name!r} has no {what}: {err.message}") from None


def _version_metrics(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                out[key[len(METRIC_TAG_PREFIX) :].replace("_at_", "@")] = float(value)
            except ValueError:
                continue
    return out


def _model_id_of(source: str | None) -> str | None:
    """The logged model id of a ``models:/m-...`` source (MLflow 3), else None."""
    if source and source.startswith("models:/m-"):
        return source[len("models:/") :]
    return None


def model_version_info(model_uri: str) -> dict[str, Any]:
    """Name, version, aliases, run, source, tags and valid metrics of a registered version."""
    name, version, alias = _parse_models_uri(model_uri)
    mv = _get_version(mlflow.MlflowClient(), name, version, alias)
    tags = dict(mv.tags or {})
    return {
        "uri": model_uri,
        "name": mv.name,
        "version": int(mv.version),
        "aliases": list(mv.aliases or []),
        "run_id": mv.run_id,
        "model_id": getattr(mv, "model_id", None) or _model_id_of(mv.source),
        "source": mv.source,
        "created": mv.creation_timestamp,
        "description": mv.description or "",
        "tags": tags,
        "metrics": _version_metrics(tags),
    }


# ----------------------------------------------------------------------- the decision


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def decide(
    challenger_values: Any,
    champion_values: Any | None,
    challenger_bands: dict[str, float] | None = None,
    champion_bands: dict[str, float] | None = None,
    metric: str = "nDCG@3",
    margin: float = 0.0,
    min_metric: float = 0.0,
    max_band_drop: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
) -> PromotionDecision:
    """The promotion rule on per-product metric values (same products, same order).

    Without a champion: promote iff the challenger's mean >= ``min_metric``. Otherwise promote
    iff mean difference > ``margin``, the 95% paired bootstrap interval's low end > 0, and no
    band (``{"head": recall@5, ...}``, the same tags on both sides) drops by more than
    ``max_band_drop``; a band measured on one side only refuses.
    """
    a = np.asarray(challenger_values, dtype=np.float64)
    if a.size == 0 or np.isnan(a).all():
        raise ValueError(f"no product has a {metric} value: the evaluation data has no gold tags")
    score = float(np.nanmean(a))
    if champion_values is None:
        ok = score >= min_metric
        sign = ">=" if ok else "<"
        return PromotionDecision(
            promoted=ok,
            reason=f"first model: {metric} {score:.4f} {sign} min_metric {min_metric:g}",
            challenger_score=score,
            metric=metric,
        )
    b = np.asarray(champion_values, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{a.shape[0]} challenger values for {b.shape[0]} champion values")
    champion_score = float(np.nanmean(b))
    boot = metrics.paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed, ci=0.95)
    diff = score - champion_score
    drops = {}
    problems: list[str] = []
    for band in BANDS:
        new = (challenger_bands or {}).get(band)
        old = (champion_bands or {}).get(band)
        if _finite(new) and _finite(old):
            drops[band] = float(old - new)
        elif _finite(new) != _finite(old):  # cannot be compared: nothing says it held
            problems.append(f"{band} tags measured for one side only")
    if not diff > margin:
        problems.append(f"not better: {metric} difference {diff:+.4f} <= margin {margin:g}")
    paired = int(np.sum(~(np.isnan(a) | np.isnan(b))))
    if paired < 2:  # a single difference is its own interval: no evidence of a real gain
        problems.append(f"not significant: {paired} product with {metric} values on both sides")
    elif not boot["low"] > 0:
        problems.append(
            f"not significant: 95% interval of the difference [{boot['low']:+.4f},"
            f" {boot['high']:+.4f}] does not lie above 0"
        )
    for band, drop in drops.items():
        if drop > max_band_drop:
            problems.append(
                f"{band} tags lose {drop:.4f} recall@5 (> max_band_drop {max_band_drop:g})"
            )
    if problems:
        reason = "; ".join(problems)
    else:
        reason = (
            f"better: {metric} {score:.4f} vs {champion_score:.4f} ({diff:+.4f}, 95% interval"
            f" [{boot['low']:+.4f}, {boot['high']:+.4f}]), no band drops more than"
            f" {max_band_drop:g}"
        )
    return PromotionDecision(
        promoted=not problems,
        reason=reason,
        challenger_score=score,
        champion_score=champion_score,
        diff=diff,
        ci_low=boot["low"],
        ci_high=boot["high"],
        band_drops=drops,
        metric=metric,
    )


# ----------------------------------------------------------------------- promotion


def _evaluation_frame(data: str | Path, data_cfg: DataConfig | None) -> pd.DataFrame:
    catalog = read_catalog(data, data_cfg)
    if not catalog.products:
        raise ValueError(f"{data}: no labelled products to evaluate on")
    return pd.DataFrame(
        {
            "title": [p.title for p in catalog.products],
            "description": [p.description for p in catalog.products],
            "tags": [list(p.tags) for p in catalog.products],
        }
    )


def _load_version(mv: ModelVersion, role: str) -> Any:
    """The pyfunc model of one version (a `RegistryError` naming it when it does not load)."""
    try:
        uri = f"models:/{mv.name}/{mv.version}"
        return mlflow.pyfunc.load_model(uri, dst_path=destination_for(uri))
    except Exception as err:  # noqa: BLE001 - any load failure means a broken version
        raise RegistryError(
            f"{_label(mv, role)} cannot be loaded from {mv.source}: {type(err).__name__}: {err}"
        ) from err


def _label(mv: ModelVersion, role: str) -> str:
    return f"{mv.name} version {mv.version} (@{role})"


def _saved_info(model: Any) -> dict[str, Any] | None:
    """The ``labelrec.json`` of a loaded labelrec pyfunc model (None for another kind)."""
    try:
        return model.unwrap_python_model().recommender.info
    except Exception:  # noqa: BLE001 - not labelrec's python model
        return None


def _training_counts(mv: ModelVersion) -> dict[str, Any] | None:
    """The training counts of a registered labelrec tagger's tags (the evaluator's
    ``tag_counts`` and ``n_train_products``), read from its ``tags.json`` without loading the
    model; None for a version that has no such file (another kind of model)."""
    import tempfile

    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    repo = ModelsArtifactRepository(f"models:/{mv.name}/{mv.version}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = repo.download_artifacts(f"artifacts/{MODEL_SUBPATH}/{VOCAB_FILE}", tmp)
            vocab = TagVocab.load(path)
        except (MlflowException, OSError, ValueError):
            return None
    return {
        "tag_counts": dict(zip(vocab.tags, (int(c) for c in vocab.counts), strict=True)),
        "n_train_products": vocab.n_products,
    }


def _evaluate_version(
    model: Any,
    mv: ModelVersion,
    role: str,
    frame: pd.DataFrame,
    metric: str,
    counts: dict[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    """(per-product values of ``metric``, band recalls, metrics) of one version on ``frame``;
    ``counts`` (``_training_counts``) band the tags, else the version's own counts."""
    label = _label(mv, role)
    prefix = f"{role}_"
    register_evaluator()
    try:
        result = mlflow.models.evaluate(
            model,
            data=frame,
            targets="tags",
            model_type="labelrec",
            evaluators="labelrec",
            evaluator_config={"metric_prefix": prefix, "log_plots": False, **(counts or {})},
        )
    except Exception as err:  # noqa: BLE001 - a model that loads but cannot predict is broken too
        raise RegistryError(f"{label} failed on the evaluation data: {err}") from err
    per_product = result.artifacts[prefix + PER_PRODUCT].content
    values = per_product[metric].to_numpy(dtype=np.float64)
    bands = {
        band: result.metrics[key]
        for band in BANDS
        if (key := f"{prefix}recall_at_5_{band}") in result.metrics
    }
    return values, bands, result.metrics


def _write_decision(client: Any, mv: ModelVersion, decision: PromotionDecision, data: str) -> None:
    values = {
        "decision": "promoted" if decision.promoted else "rejected",
        "reason": decision.reason,
        "metric": decision.metric,
        "data": data,
        "challenger_score": decision.challenger_score,
        "champion_score": decision.champion_score,
        "champion_version": decision.champion_version,
        "diff": decision.diff,
        "ci_low": decision.ci_low,
        "ci_high": decision.ci_high,
        "band_drops": json.dumps(decision.band_drops) if decision.band_drops else None,
    }
    for key, value in values.items():
        text = "none" if value is None else repr(value) if isinstance(value, float) else str(value)
        client.set_model_version_tag(mv.name, mv.version, PROMOTION_TAG_PREFIX + key, text[:5000])


def promote(
    name: str,
    data: str | Path,
    data_cfg: DataConfig | None = None,
    metric: str = "nDCG@3",
    margin: float = 0.0,
    min_metric: float = 0.0,
    max_band_drop: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
    challenger_alias: str = "challenger",
    champion_alias: str = "champion",
    data_overrides: list[str] | None = None,
) -> PromotionDecision:
    """Move ``@champion`` to the ``@challenger`` version of ``name`` if it is better on ``data``.

    ``data`` is read with ``data_cfg``, else with the challenger's own data settings and
    ``data_overrides`` (``data.key=value``) on top. Evaluations are logged to the active run (one
    named ``promote <name>`` is started if none). A version that cannot be loaded or evaluated
    raises `RegistryError` and moves no alias.
    """
    metric = _canonical(metric)
    check_catalog_file(data)  # also where the challenger already is the champion
    client = mlflow.MlflowClient()
    challenger = _get_version(client, name, None, challenger_alias)
    if (challenger.tags or {}).get(KIND_TAG) == DESCRIBER_KIND:
        raise RegistryError(
            f"{name} version {challenger.version} (@{challenger_alias}) is a describer: the"
            " promotion gate compares tagging metrics. Compare describers by their valid ROUGE-L"
            " (each version's valid.rougeL_f1 tag) and set the alias by hand"
            " (MlflowClient().set_registered_model_alias)"
        )
    champion = _alias_version(client, name, champion_alias)
    if champion is not None and champion.version == challenger.version:
        return PromotionDecision(
            promoted=False,
            reason=f"version {challenger.version} already is @{champion_alias}",
            challenger_version=int(challenger.version),
            champion_version=int(champion.version),
            metric=metric,
        )
    aliased = champion.version if champion is not None else None
    if champion is None:  # no alias, but a champion before: beat it, not the first-model rule
        champion = _last_promoted(client, name, challenger.version)
    model = _load_version(challenger, challenger_alias)
    if data_cfg is None:  # the catalog is read as the challenger reads its catalogs
        data_cfg = model_data_config(_saved_info(model), data_overrides)
    frame = _evaluation_frame(data, data_cfg)
    with _run_context(f"promote {name}"):
        # the champion's training counts band the tags (head, torso, tail) of both
        # evaluations, so a band holds the same tags on both sides
        counts = _training_counts(champion) if champion is not None else None
        ch_values, ch_bands, _ = _evaluate_version(
            model, challenger, challenger_alias, frame, metric, counts
        )
        del model  # one model in memory at a time
        cp_values = cp_bands = None
        if champion is not None:
            cp_values, cp_bands, _ = _evaluate_version(
                _load_version(champion, champion_alias),
                champion,
                champion_alias,
                frame,
                metric,
                counts,
            )
        decision = decide(
            ch_values,
            cp_values,
            ch_bands,
            cp_bands,
            metric=metric,
            margin=margin,
            min_metric=min_metric,
            max_band_drop=max_band_drop,
            n_resamples=n_resamples,
            seed=seed,
        )
        decision.challenger_version = int(challenger.version)
        decision.champion_version = int(champion.version) if champion is not None else None
        if champion is not None and aliased is None:
            decision.reason = (
                f"no @{champion_alias}; compared with version {champion.version}, the last"
                f" promoted: {decision.reason}"
            )
        _write_decision(client, challenger, decision, str(data))
        mlflow.set_tags(
            {
                "promotion.decision": "promoted" if decision.promoted else "rejected",
                "promotion.challenger_version": str(challenger.version),
                "promotion.champion_version": str(decision.champion_version),
            }
        )
        if decision.promoted:
            now = _alias_version(client, name, champion_alias)
            moved_to = now.version if now is not None else None
            if moved_to == challenger.version:  # a promotion of the same version beside this one
                return decision
            if moved_to != aliased:  # someone else moved it: this version was not promoted
                client.set_model_version_tag(
                    name, challenger.version, PROMOTION_TAG_PREFIX + "decision", "superseded"
                )
                mlflow.set_tags({"promotion.decision": "superseded"})
                raise RegistryError(
                    f"@{champion_alias} of {name!r} moved to version {moved_to} while"
                    f" version {challenger.version} was evaluated against"
                    f" {champion and champion.version}; promote again"
                )
            client.set_registered_model_alias(name, champion_alias, challenger.version)
        return decision
