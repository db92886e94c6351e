"""The MLflow Project entry points: ``python -m labelrec.mlflow.steps <step> [options]``.

Steps: ``main`` (demo data when none is given -> train -> evaluate -> promote, as child runs of
one parent run), ``pretrain``, ``train``, ``evaluate``, ``promote``, ``batch``. Run them through
``mlflow run . -e <step> --env-manager local -P ...`` (see ``MLproject``) or directly. Inside
``mlflow run`` a step logs to the run ``mlflow run`` created; otherwise it starts its own run in
the store ``labelrec.mlflow.store`` resolves (``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db``).
Each function returns a dict summary; only ``main()`` prints.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from labelrec.config import (
    NOT_PROMOTED,
    ConfigError,
    PromotionConfig,
    add_arguments,
    catalog_data_config,
    from_arguments,
    load_config,
    reading_data_config,
    score_argument,
)
from labelrec.mlflow import store, tracking
from labelrec.mlflow.flavor import FLAVOR_NAME, destination_for, log_model, save_model
from labelrec.modeldir import DiskFull, free_bytes, output_lock
from labelrec.opener import downloads_in

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logger = logging.getLogger(__name__)

STEPS = ("main", "pretrain", "train", "evaluate", "promote", "batch")
# `mlflow.pyfunc.spark_udf(..., result_type=SPARK_RESULT_TYPE)`: a struct column whose ``tags``
# field holds the ranked ``{tag, score, known}`` list of the pyfunc's ``tags`` output column.
SPARK_RESULT_TYPE = "tags array<struct<tag: string, score: double, known: boolean>>"
MODEL_URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "dbfs:/", "s3://", "gs://")


# ---------------------------------------------------------------------- helpers
def _where_full(err: OSError, where: store.StoreInfo | None) -> str:
    """``err`` as the step reports it. A full disk that names no file (MLflow's copy of an
    artifact raises ENOSPC without a path) is told with the places MLflow writes a run's files
    to, and the room left on each: the experiment's artifact store, where it is a local folder,
    and the temporary folder models are staged in before they are copied there."""
    if isinstance(err, DiskFull) or err.filename or err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return str(err)
    places: list[tuple[str, Path]] = []
    location = where.artifact_location if where else None
    if location and urllib.parse.urlparse(location).scheme in ("", "file"):
        places.append(("the artifact store", Path(local_file_uri_to_path(location))))
    places.append(("the temporary folder", Path(tempfile.gettempdir())))
    told = []
    for label, path in places:
        free = free_bytes(path)
        told.append(f"{label} {path}" + ("" if free is None else f" ({free / 2**20:.1f} MB free)"))
    return f"{err}: a disk MLflow writes the run's files to is full: {'; '.join(told)}"


def _opt(value: str | None) -> str | None:
    """MLproject passes empty strings for unset optional parameters."""
    if value is None or value.strip() in ("", "None", "none", "null"):
        return None
    return value


def split_overrides(overrides: str | list[str] | None) -> list[str]:
    """``"a.b=1 c='x y'"`` -> ``["a.b=1", "c=x y"]`` (one MLproject string parameter); a list
    is overrides already split, one an item (``["c=x y"]``), and comes back as it is."""
    if not overrides:
        return []
    if isinstance(overrides, list):
        return list(overrides)
    return shlex.split(overrides)


@contextmanager
def step_run(step: str) -> Iterator[Any]:
    """The MLflow run of a step: the ``mlflow run`` run, a child of the active run, or a new run."""
    if mlflow.active_run() is not None:
        ctx = mlflow.start_run(run_name=step, nested=True)
    elif os.environ.get("MLFLOW_RUN_ID"):
        ctx = mlflow.start_run()  # the run `mlflow run` created for this entry point
    else:
        ctx = mlflow.start_run(run_name=step)
    with ctx as run:
        mlflow.set_tag("labelrec.step", step)
        yield run


def _download_if_uri(value: str, dst_path: str | None = None) -> str:
    """Local path of an MLflow artifact URI (``runs:/.../backbone``, downloaded into
    ``dst_path`` when given); other values unchanged."""
    if value.startswith(MODEL_URI_SCHEMES):
        return mlflow.artifacts.download_artifacts(artifact_uri=value, dst_path=dst_path)
    return value


def _check_tagger(model: Any, model_uri: str, step: str) -> None:
    """``ModelError`` unless the loaded ``model`` is a tag recommender: a describer (refused
    before loading by ``_refuse_describer``) writes text, and another MLflow model is not
    labelrec's."""
    from labelrec.model import ModelError

    if model is None or not hasattr(model, "vocab"):
        raise ModelError(
            f"{model_uri} is not a labelrec tagging model: the {step} step scores tags with one"
            " (logged by the train step or labelrec.mlflow.log_model)"
        )


def _trained_dir(model_uri: str) -> Path | None:
    """The folder ``model_uri`` names when it is a model directory written by ``labelrec
    train`` (no MLmodel file); None for an MLflow URI or an MLflow model's folder."""
    from labelrec.opener import is_model_uri, local_path

    if is_model_uri(model_uri):
        return None
    path = local_path(model_uri)
    return path if path.is_dir() and not (path / "MLmodel").is_file() else None


@contextmanager
def _as_mlflow_model(model_uri: str) -> Iterator[str]:
    """``model_uri`` as MLflow loads it: a ``labelrec train`` directory is saved as an MLflow
    model in a temporary folder for the block (``flavor.save_model``: what logging it would
    write)."""
    trained = _trained_dir(model_uri)
    if trained is None:
        yield model_uri
        return
    with tempfile.TemporaryDirectory(prefix="labelrec-step-") as tmp:
        staged = Path(tmp) / "model"
        save_model(trained, staged)
        yield str(staged)


def _refuse_describer(model_uri: str, step: str) -> None:
    """``_check_tagger`` from the logged model's MLmodel file, before its weights are
    downloaded and loaded (a URI without one is left to the loading, which names the problem),
    or from a ``labelrec train`` directory's own files."""
    trained = _trained_dir(model_uri)
    if trained is not None:
        from labelrec.describe import is_describer_dir

        if is_describer_dir(trained):
            raise _describer_error(model_uri, step)
        return
    try:
        flavor = mlflow.models.get_model_info(model_uri).flavors.get(FLAVOR_NAME, {})
    except Exception as err:
        logger.debug("no MLmodel file for %s: %s", model_uri, err)
        return
    if flavor.get("kind") == "describer":
        raise _describer_error(model_uri, step)


def _describer_error(model_uri: str, step: str) -> Exception:
    from labelrec.model import ModelError

    return ModelError(
        f"{model_uri} is a describer, not a tagging model: the {step} step scores tags"
        " (descriptions: `labelrec describe` or POST /describe)"
    )


def _registry() -> Any:
    from labelrec.mlflow import registry

    return registry


def _git_commit() -> str | None:
    run = mlflow.active_run()
    if run is None:
        return None
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    return tags.get("mlflow.source.git.commit")


# ---------------------------------------------------------------------- train
def run_train(
    config: str | None = None,
    train: str | None = None,
    valid: str | None = None,
    overrides: str | list[str] | None = None,
    backbone: str | None = None,
    name: str = "labelrec",
    output: str | None = None,
    register: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train with MLflow tracking, log valid artifacts and register the model as challenger.

    ``register`` False logs the model in the run without registering it. A describer
    (``task: describe``) is registered under ``labelrec-describer`` when ``name`` is the tagger's
    default, ``labelrec``, so that its versions never meet the taggers' promotion gate.
    ``output`` None: a temporary folder (the model lives on in MLflow) unless the overrides set
    one or several processes train (they must share a folder: the config's ``output``).
    """
    from labelrec.evaluate import evaluate_scores_on, gold_matrix
    from labelrec.train import NullTracker, check_inputs
    from labelrec.train import train as train_model

    items = split_overrides(overrides)
    if train:
        items.append(f"data.train={Path(train).expanduser().resolve()}")
    if valid:
        items.append(f"data.valid={Path(valid).expanduser().resolve()}")
    is_main = tracking.is_main_process()
    tmp: str | None = None
    downloaded: str | None = None  # a backbone from an artifact URI, removed after training
    try:
        # a missing catalog stops the step before a backbone is downloaded, a run opened or
        # the output locked
        given = load_config(config, items)
        check_inputs(given)
        if backbone:
            if backbone.startswith(MODEL_URI_SCHEMES):
                downloaded = tempfile.mkdtemp(prefix="labelrec-backbone-")
            # a describer trains describe.backbone; a tagger model.backbone
            key = "describe.backbone" if given.task == "describe" else "model.backbone"
            items.append(f"{key}={_download_if_uri(backbone, downloaded)}")
        if output:
            items.append(f"output={output}")
        elif not any(i.split("=", 1)[0].strip() == "output" for i in items):
            if tracking.accelerate_state().num_processes == 1:
                tmp = tempfile.mkdtemp(prefix="labelrec-train-")
                # inside it, so that the lock file written beside an output goes with it
                items.append(f"output={Path(tmp) / 'model'}")
        cfg = load_config(config, items)
        if not is_main:
            train_model(cfg, tracker=NullTracker(), progress=False)
            return {}
        # the output stays locked until it is logged and registered: a training into it
        # meanwhile would be registered under this run (a private temporary one needs none)
        lock = output_lock(cfg.output) if tmp is None else contextlib.nullcontext()
        with lock, step_run("train") as run:
            run_id = run.info.run_id
            step_params = {"step.config": config or "", "step.name": name}
            if backbone:
                step_params["step.backbone"] = backbone  # model.backbone: where it was read
            tracking.log_params(run_id, step_params)
            tracker = tracking.MlflowTracker(run_id=run_id)
            result = train_model(cfg, tracker=tracker, progress=progress)
            if downloaded is not None:
                from labelrec.modelcard import name_backbone

                name_backbone(result.output, backbone)  # not the download, gone after this step
            if cfg.task == "describe":
                summary = _log_describer(result, name, register, tracker)
                summary["run_id"] = run_id
                summary["output"] = str(result.output) if tmp is None else None
                return summary
            tracking.log_model_files(run_id, result.output)
            summary: dict[str, Any] = {
                "run_id": run_id,
                "metrics": result.metrics,
                "best_epoch": result.best_epoch,
                "n_tags": result.n_tags,
                "train_seconds": result.train_seconds,
                "datasets": tracker.datasets,
            }
            valid_products = result.valid_products
            if result.valid_scores is not None and valid_products and result.vocab is not None:
                # the scores train() tuned its thresholds on and logged as final_* metrics;
                # here the per-tag files and plots of the same evaluation
                evaluation = evaluate_scores_on(
                    result.valid_scores,
                    valid_products,
                    result.vocab,
                    result.tag_thresholds,
                    hierarchy=result.hierarchy,
                )
                curve = tracking.PrecisionRecallCurve()
                curve.add(gold_matrix(valid_products, result.vocab)[0], result.valid_scores)
                tracking.log_evaluation(
                    run_id,
                    evaluation,
                    curve,
                    result.global_threshold,
                    artifact_dir="valid",
                    metric_prefix=None,
                )
            import pandas as pd

            example = pd.DataFrame(
                {
                    "title": [p.title for p in valid_products[:2]],
                    "description": [p.description for p in valid_products[:2]],
                }
            )
            summary.update(
                _publish(result.output, name, register, tracker, example if len(example) else None)
            )
            summary["output"] = str(result.output) if tmp is None else None
        return summary
    finally:
        for folder in (tmp, downloaded):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def _version_tags(tracker: Any) -> dict[str, str]:
    """A registered version's tags: its datasets' digests and sources, the code's commit."""
    tags = {f"data.{k}.digest": v["digest"] for k, v in tracker.datasets.items()}
    tags.update({f"data.{k}.source": v["source"] for k, v in tracker.datasets.items()})
    if commit := _git_commit():
        tags["code.git_commit"] = commit
    return tags


def _publish(
    output: Path, name: str, register: bool, tracker: Any, example: Any = None
) -> dict[str, str]:
    """Log the model trained in the active run; with ``register``, register it under ``name``
    as ``@challenger``. Returns its ``model_uri`` (and ``version``)."""
    if not register:
        return {"model_uri": log_model(output, name="model", input_example=example).model_uri}
    version = _registry().register_challenger(
        output, name=name, tags=_version_tags(tracker), input_example=example
    )
    return {"version": str(version.version), "model_uri": f"models:/{name}/{version.version}"}


def _log_describer(result: Any, name: str, register: bool, tracker: Any) -> dict[str, Any]:
    """Log (and register) a describer trained in the active run: under ``labelrec-describer``
    when ``name`` is the taggers' default."""
    summary: dict[str, Any] = {
        "metrics": result.metrics,
        "train_seconds": result.train_seconds,
        "datasets": tracker.datasets,
    }
    name = "labelrec-describer" if name == "labelrec" else name
    summary.update(_publish(result.output, name, register, tracker))
    return summary


# ---------------------------------------------------------------------- pretrain
PRETRAIN_OUTPUT = "runs/pretrained"  # the pretrain step's folder, unless given


def run_pretrain(
    config: str | None = None,
    unlabeled: str | None = None,
    train: str | None = None,
    overrides: str | list[str] | None = None,
    output: str | None = None,
    log_backbone: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Masked-LM pretraining tracked in MLflow; the backbone is logged as artifact ``backbone``.
    It is written to ``output``, else to the overrides' ``output=``, else to runs/pretrained
    (as the train step's ``output`` wins over its overrides').

    Train on it with ``-P backbone=runs:/<run_id>/backbone`` (or the local ``output`` folder).
    """
    from labelrec.config import config_to_dict, flatten
    from labelrec.pretrain import pretrain

    items = split_overrides(overrides)
    if unlabeled:
        items.append(f"data.unlabeled={Path(unlabeled).expanduser().resolve()}")
    if train:
        items.append(f"data.train={Path(train).expanduser().resolve()}")
    if output or not any(i.split("=", 1)[0].strip() == "output" for i in items):
        items.append(f"output={output or PRETRAIN_OUTPUT}")
    cfg = load_config(config, items)
    if not tracking.is_main_process():
        pretrain(cfg, progress=False)
        return {}
    with step_run("pretrain") as run:
        run_id = run.info.run_id
        tracker = tracking.MlflowTracker(run_id=run_id)
        tracker.log_params(flatten(config_to_dict(cfg)))
        result = pretrain(cfg, progress=progress)
        for row in result.history:
            step = int(row.get("epoch", 0))
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=step)
        if log_backbone:
            tracker.log_artifact(result.output, "backbone")
        tracker.set_tags({"labelrec.backbone_dir": str(Path(result.output).resolve())})
        return {
            "run_id": run_id,
            "output": str(result.output),
            "backbone_uri": f"runs:/{run_id}/backbone" if log_backbone else None,
            "history": result.history,
        }


# ---------------------------------------------------------------------- evaluate
def run_evaluate(
    model_uri: str,
    data: str,
    config: str | None = None,
    overrides: str | list[str] | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Evaluate a logged/registered model on a labelled catalog; log metrics, CSV and plots."""
    from labelrec.data import read_catalog
    from labelrec.evaluate import EvaluationStream
    from labelrec.mlflow import load_model
    from labelrec.opener import open_tagger

    with step_run("evaluate") as run:
        run_id = run.info.run_id
        tracking.log_params(
            run_id,
            {"model_uri": model_uri, "data": data, "threshold": threshold},
        )
        try:
            tracker_tags = {
                f"labelrec.model.{k}": v
                for k, v in (_registry().model_version_info(model_uri) or {}).items()
                if isinstance(v, (str, int, float))
            }
        except Exception as err:  # not a registry URI (runs:/, a path): nothing to add
            logger.debug("no model version info for %s: %s", model_uri, err)
            tracker_tags = {}
        _refuse_describer(model_uri, "evaluate")  # before the weights load
        trained = _trained_dir(model_uri)  # a `labelrec train` directory: read as it is
        recommender = load_model(model_uri) if trained is None else open_tagger(trained)
        _check_tagger(recommender, model_uri, "evaluate")
        data_cfg = reading_data_config(config, split_overrides(overrides), recommender.info)
        catalog = read_catalog(data, data_cfg)
        products = catalog.products
        tracking.log_catalog_input(run_id, "eval", data, products, len(recommender.vocab))
        # a part of the products at a time (the scores of one part in memory at once), new
        # tags ranked with the known ones, as suggested
        stream = EvaluationStream.for_model(recommender, products, threshold)
        curve = tracking.PrecisionRecallCurve()
        seconds, start = 0.0, 0
        t0 = time.perf_counter()
        for scores, new in recommender.score_parts(products):
            seconds += time.perf_counter() - t0  # the scoring alone
            stream.add(scores, new)
            curve.add(stream.gold[start : start + len(scores)], scores)
            start += len(scores)
            t0 = time.perf_counter()
        evaluation = stream.result()
        tracking.log_evaluation(
            run_id, evaluation, curve, recommender.global_threshold, artifact_dir="evaluation"
        )
        tracking.log_metrics(
            run_id,
            {
                "n_skipped": catalog.n_skipped,
                "predict_seconds": seconds,
                "products_per_s": len(products) / max(seconds, 1e-9),
            },
        )
        if tracker_tags:
            mlflow.set_tags({k: tracking.param_value(v) for k, v in tracker_tags.items()})
        return {"run_id": run_id, "metrics": evaluation.metrics, "n_products": len(products)}


# ---------------------------------------------------------------------- promote
def run_promote(
    name: str = "labelrec",
    data: str | None = None,
    config: str | None = None,
    overrides: str | list[str] | None = None,
    gate: PromotionConfig | None = None,
) -> dict[str, Any]:
    """The gated promotion of ``@challenger`` over ``@champion``, recorded as an MLflow run."""
    gate = gate or PromotionConfig()
    if not data:
        raise ValueError("promote: an evaluation catalog is required (-P data=...)")
    items = split_overrides(overrides)
    data_cfg = catalog_data_config(config, items) if config else None
    with step_run("promote") as run:
        run_id = run.info.run_id
        tracking.log_params(run_id, {"name": name, "data": data, **dataclasses.asdict(gate)})
        decision = _registry().promote(
            name, data, data_cfg=data_cfg, data_overrides=items, **dataclasses.asdict(gate)
        )
        fields = (
            dataclasses.asdict(decision)
            if dataclasses.is_dataclass(decision)
            else dict(vars(decision))
        )
        numbers = {
            k: v
            for k, v in fields.items()
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and not k.endswith("_version")  # versions are tags (promotion.*_version)
        }
        for band, drop in (fields.get("band_drops") or {}).items():
            numbers[f"band_drop_{band}"] = drop
        tracking.log_metrics(run_id, {**numbers, "promoted": float(bool(decision.promoted))})
        mlflow.set_tag("promotion.reason", tracking.param_value(decision.reason))
        return {"run_id": run_id, "promoted": bool(decision.promoted), "decision": fields}


# ---------------------------------------------------------------------- batch
def _suggestion(tag: dict[str, Any]) -> dict[str, Any]:
    """A pyfunc's ranked tag as ``labelrec index`` writes it."""
    return {
        "tag": str(tag["tag"]),
        "score": round(float(tag["score"]), 6),
        "known": tag.get("known", True) is not False,
    }


def run_batch(
    model_uri: str,
    input: str,
    output: str,
    chunk_size: int = 1000,
    limit: int = 10,
    threshold: float | None = None,
    config: str | None = None,
    overrides: str | list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a catalog file through the model's pyfunc in chunks, streaming the output file.

    Memory holds one chunk at a time: input is read with ``iter_catalog``, output written by
    ``labelrec.batch.score_file`` (.jsonl, .csv or .parquet by extension).
    """
    import pandas as pd

    from labelrec.batch import check_score_paths, score_file
    from labelrec.progress import progress_bar

    if chunk_size < 1:
        raise ValueError("batch: chunk_size must be >= 1")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"batch: limit must be an integer >= 1, got {limit!r}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:  # NaN too
        raise ValueError(f"batch: threshold must be between 0 and 1, got {threshold!r}")
    check_score_paths(input, output)  # before the model loads
    with step_run("batch") as run, contextlib.ExitStack() as stack:
        run_id = run.info.run_id
        tracking.log_params(
            run_id,
            {
                "model_uri": model_uri,
                "input": input,
                "output": output,
                "chunk_size": chunk_size,
                "limit": limit,
                "threshold": threshold,
            },
        )
        _refuse_describer(model_uri, "batch")  # before the weights load
        uri = stack.enter_context(_as_mlflow_model(model_uri))  # kept while the model scores
        where = None if uri != model_uri else destination_for(uri)  # staged: read in place
        model = mlflow.pyfunc.load_model(uri, dst_path=where)
        _check_tagger(getattr(_unwrap(model), "recommender", None), model_uri, "batch")
        info = getattr(getattr(_unwrap(model), "recommender", None), "info", None)
        data_cfg = reading_data_config(config, split_overrides(overrides), info)
        params: dict[str, Any] = {"limit": int(limit)}
        if threshold is not None:
            params["threshold"] = float(threshold)

        def scorer(products: list) -> list:
            frame = pd.DataFrame(
                {
                    "title": [p.title for p in products],
                    "description": [p.description for p in products],
                }
            )
            out = model.predict(frame, params=params)
            return [[_suggestion(t) for t in row] for row in out["tags"]]

        bar = progress_bar(unit="product", desc="batch", disable=not progress)
        t0 = time.perf_counter()
        try:
            n = score_file(
                input, output, data_cfg, scorer, chunk_size=chunk_size, progress=bar.update
            )
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        tracking.log_metrics(
            run_id,
            {"n_products": n, "seconds": seconds, "products_per_s": n / max(seconds, 1e-9)},
        )
        mlflow.set_tag("labelrec.batch.output", str(Path(output).resolve()))
        return {"run_id": run_id, "n_products": n, "output": output, "seconds": seconds}


def _unwrap(model: Any) -> Any:
    try:
        return model.unwrap_python_model()
    except Exception:  # not a python_model pyfunc
        return None


# ---------------------------------------------------------------------- main
def run_main(
    config: str | None = None,
    train: str | None = None,
    valid: str | None = None,
    data: str | None = None,
    overrides: str | list[str] | None = None,
    name: str = "labelrec",
    gate: PromotionConfig | None = None,
    demo_dir: str = "demo_data",
    progress: bool = True,
) -> dict[str, Any]:
    """Demo data (when no ``train`` is given) -> train -> evaluate -> promote, as child runs.

    ``data`` is the evaluation catalog of evaluate and promote: the demo's test split, else
    ``valid`` when not given (with a warning when the model is refit on train + valid: it then
    measures a model on products it was trained on; the MLflow tag ``labelrec.eval_data`` says
    which). With ``data.feedback``, ``data`` joins the run's ``data.holdout``: reviews of its
    products stay out of training.
    """
    items = split_overrides(overrides)
    cfg = load_config(config, items)
    with step_run("main") as run:
        summary: dict[str, Any] = {"run_id": run.info.run_id}
        if not train:
            from labelrec.demo import write_demo

            # the pipeline's own demo folder: written again on every run
            paths = write_demo(
                demo_dir, n_products=cfg.data.demo_products, seed=cfg.seed, force=True
            )
            train, valid = str(paths["train"]), str(paths["valid"])
            data = data or str(paths["test"])
            summary["demo"] = {k: str(v) for k, v in paths.items()}
        eval_data = "data" if data else "valid"
        data = data or valid
        if not data:
            raise ValueError("main: give valid or data (the evaluation catalog)")
        if eval_data == "valid" and cfg.train.refit:
            eval_data = "valid (trained on by the refit)"
            logger.warning(
                "main: evaluating and promoting on valid, which the refit model was trained on;"
                " give data (a held-out catalog) or train.refit=false"
            )
        mlflow.set_tag("labelrec.eval_data", eval_data)
        held = [str(p) for p in cfg.data.holdout or []]
        if eval_data == "data" and cfg.data.feedback and str(data) not in held:
            # reviews of the evaluation catalog's products stay out of training: it measures
            # the challenger against the champion, which never saw them
            items = [*items, f"data.holdout={json.dumps([*held, str(data)])}"]
        trained = run_train(
            config, train, valid, items, name=name, register=True, progress=progress
        )
        summary["train"] = trained
        summary["evaluate"] = run_evaluate(trained["model_uri"], data, overrides=None)
        summary["promote"] = run_promote(name, data, gate=gate)
        mlflow.set_tags(
            {
                "labelrec.challenger": trained["model_uri"],
                "labelrec.promoted": str(summary["promote"]["promoted"]).lower(),
            }
        )
        headline = ("nDCG@3", "P@1", "P@3", "micro_f1", "macro_f1")
        evaluated = summary["evaluate"]["metrics"]
        tracking.log_metrics(
            run.info.run_id,
            {
                **{f"eval_{k}": evaluated[k] for k in headline if k in evaluated},
                "promoted": float(summary["promote"]["promoted"]),
            },
        )
        return summary


# ---------------------------------------------------------------------- command line
def _int(value: str) -> int:
    """Integers as MLproject ``float`` parameters pass them ("1000" or "1000.0")."""
    number = float(value)
    if number != int(number):
        raise argparse.ArgumentTypeError(f"expected an integer, got {value}")
    return int(number)


def _yes_no(value: str) -> bool:
    """``true``/``false`` (as MLproject parameters are strings)."""
    text = value.strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return text in ("true", "1", "yes")


def _float_or_none(value: str) -> float | None:
    """A score cut-off from 0 to 1, or None for MLproject's empty string."""
    return None if _opt(value) is None else score_argument(value)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m labelrec.mlflow.steps``."""
    parser = argparse.ArgumentParser(
        prog="python -m labelrec.mlflow.steps", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--experiment", default=None, help="experiment outside `mlflow run`")
    sub = parser.add_subparsers(dest="step", required=True)

    def config_args(p: argparse.ArgumentParser, default: str | None) -> None:
        p.add_argument(
            "--config",
            default=default,
            help="YAML config (default: the built-in settings, which configs/default.yaml lists)",
        )
        p.add_argument(
            "--overrides", default="", help='config overrides, e.g. "train.epochs=1 seed=3"'
        )

    def gate_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="labelrec", help="registered model name")
        add_arguments(p, PromotionConfig)

    p = sub.add_parser("main", help="demo data -> train -> evaluate -> promote")
    config_args(p, None)
    p.add_argument("--train", default="", help="training catalog; empty: the demo catalog")
    p.add_argument("--valid", default="", help="validation catalog")
    p.add_argument(
        "--data", default="", help="evaluation catalog; empty: the demo's test split, else valid"
    )
    p.add_argument("--demo-dir", default="demo_data", help="where the demo catalog is written")
    gate_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="train, log, register as @challenger")
    config_args(p, None)
    p.add_argument("--train", default="", help="training catalog; empty: the demo catalog")
    p.add_argument("--valid", default="", help="validation catalog; empty: split off train")
    p.add_argument("--backbone", default="", help="backbone dir, hub id or runs:/ artifact URI")
    p.add_argument(
        "--name",
        default="labelrec",
        help="registered model name (a describer: labelrec-describer unless another is given)",
    )
    p.add_argument("--output", default="", help="keep the model folder here (default: temp)")
    p.add_argument(
        "--no-register", action="store_true", help="log the model in the run, do not register it"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("pretrain", help="masked-LM pretraining, backbone logged as artifact")
    config_args(p, None)
    p.add_argument("--unlabeled", default="", help="unlabelled texts")
    p.add_argument("--train", default="", help="training catalog (its texts are used too)")
    p.add_argument(
        "--output",
        default="",
        help=f"backbone folder (default: the overrides' output=, else {PRETRAIN_OUTPUT})",
    )
    p.add_argument("--no-log-backbone", action="store_true", help="do not log the weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("evaluate", help="evaluate a model URI on a labelled catalog")
    p.add_argument("--model-uri", required=True, help="e.g. models:/labelrec@challenger")
    p.add_argument("--data", required=True, help="labelled catalog")
    p.add_argument("--threshold", type=_float_or_none, default=None, help="global cut-off")
    config_args(p, None)

    p = sub.add_parser("promote", help="move @champion if @challenger is better")
    p.add_argument("--data", required=True, help="evaluation catalog")
    gate_args(p)
    p.add_argument(
        "--exit-code",
        type=_yes_no,
        default=False,
        help=f"true: exit {NOT_PROMOTED} when the challenger is not promoted (a pipeline's gate)",
    )
    config_args(p, None)

    p = sub.add_parser("batch", help="score a catalog file through the pyfunc model")
    p.add_argument("--model-uri", required=True, help="e.g. models:/labelrec@champion")
    p.add_argument("--input", required=True, help="catalog (.jsonl, .csv, .parquet)")
    p.add_argument("--output", required=True, help="output (.jsonl, .csv, .parquet)")
    p.add_argument("--chunk-size", type=_int, default=1000, help="products per chunk")
    p.add_argument("--limit", type=_int, default=10, help="tags per product")
    p.add_argument("--threshold", type=_float_or_none, default=None, help="global cut-off")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    config_args(p, None)
    return parser


def dispatch(args: argparse.Namespace) -> dict[str, Any]:
    """Run the step named by parsed arguments; returns its summary."""
    o = _opt
    if args.step == "main":
        return run_main(
            o(args.config), o(args.train), o(args.valid), o(args.data), args.overrides,
            name=args.name, gate=from_arguments(PromotionConfig, args),
            demo_dir=args.demo_dir, progress=not args.no_progress,
        )  # fmt: skip
    if args.step == "train":
        return run_train(
            o(args.config), o(args.train), o(args.valid), args.overrides,
            backbone=o(args.backbone), name=args.name, output=o(args.output),
            register=not args.no_register, progress=not args.no_progress,
        )  # fmt: skip
    if args.step == "pretrain":
        return run_pretrain(
            o(args.config), o(args.unlabeled), o(args.train), args.overrides,
            output=o(args.output), log_backbone=not args.no_log_backbone,
            progress=not args.no_progress,
        )  # fmt: skip
    if args.step == "evaluate":
        return run_evaluate(
            args.model_uri, args.data, o(args.config), args.overrides, args.threshold
        )
    if args.step == "promote":
        return run_promote(
            args.name, args.data, o(args.config), args.overrides,
            gate=from_arguments(PromotionConfig, args),
        )  # fmt: skip
    return run_batch(
        args.model_uri, args.input, args.output, chunk_size=args.chunk_size, limit=args.limit,
        threshold=args.threshold, config=o(args.config), overrides=args.overrides,
        progress=not args.no_progress,
    )  # fmt: skip


def _report(step: str, summary: dict[str, Any]) -> None:
    if not summary:
        return
    if step == "main":
        for part in ("train", "evaluate", "promote"):
            _report(part, summary.get(part) or {})
        print(f"main: run {summary['run_id']}")
        return
    if step == "train":
        done = "registered" if "version" in summary else "logged (not registered)"
        print(f"train: run {summary['run_id']}, {done} {summary.get('model_uri', '-')}")
        for key in ("nDCG@3", "P@1", "micro_f1"):
            if key in summary.get("metrics", {}):
                print(f"  valid {key:<10}{summary['metrics'][key]:.4f}")
    elif step == "evaluate":
        print(f"evaluate: run {summary['run_id']} on {summary['n_products']} products")
        for key in ("nDCG@3", "P@1", "P@3", "micro_f1", "macro_f1"):
            if key in summary["metrics"]:
                print(f"  {key:<16}{summary['metrics'][key]:.4f}")
    elif step == "promote":
        decision = summary["decision"]
        verdict = "promoted" if summary["promoted"] else "not promoted"
        print(f"promote: run {summary['run_id']}: {verdict}: {decision.get('reason', '')}")
    elif step == "batch":
        print(
            f"batch: run {summary['run_id']}: {summary['n_products']} products ->"
            f" {summary['output']} in {summary['seconds']:.1f} s"
        )
    elif step == "pretrain":
        print(f"pretrain: run {summary['run_id']}: backbone {summary['output']}")
        if summary.get("backbone_uri"):
            print(f"  train on it with -P backbone={summary['backbone_uri']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m labelrec.mlflow.steps``."""
    from labelrec.data import CatalogError
    from labelrec.model import ModelError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "transformers", "accelerate", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    where: store.StoreInfo | None = None
    try:
        if tracking.is_main_process():  # other Accelerate processes never touch MLflow
            where = store.configure(args.experiment)
        # a model read from a remote store is downloaded for this step only
        with downloads_in():
            summary = dispatch(args)
    except (
        ConfigError,
        CatalogError,
        ModelError,
        ValueError,
        FileNotFoundError,
        mlflow.exceptions.MlflowException,
    ) as err:
        message = getattr(err, "message", None) or str(err)
        print(f"labelrec {args.step}: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk (modeldir.DiskFull names what and where), a path the
        # system refuses, a full disk under MLflow's own copy (which names no file)
        print(f"labelrec {args.step}: error: {_where_full(err, where)}", file=sys.stderr)
        return 2
    _report(args.step, summary)
    if args.step == "promote" and args.exit_code and not summary["promoted"]:
        return NOT_PROMOTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
