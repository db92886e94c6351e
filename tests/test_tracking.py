"""MLflow tracking: the tracker of labelrec.train, datasets, artifacts, plots, the store default."""

from __future__ import annotations

import csv
import json
import os
import shlex
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import tiny_config  # noqa: E402
from mlflow_fixtures import fresh_db, use_store  # noqa: E402

from labelrec.data import Product, read_catalog  # noqa: E402
from labelrec.mlflow import store, tracking  # noqa: E402


@pytest.fixture
def mlflow_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> store.StoreInfo:
    """A fresh SQLite store under tmp_path, set up through the environment (undone after)."""
    yield use_store(tmp_path, monkeypatch, tmp_path_factory)
    while mlflow.active_run() is not None:
        mlflow.end_run()


def products(n: int = 6) -> list[Product]:
    return [
        Product(id=str(i), title=f"title {i}", description="d", tags=["a", f"t{i % 3}"])
        for i in range(n)
    ]


# ---------------------------------------------------------------------- names and values
def test_metric_keys_are_valid_mlflow_names() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    with pytest.raises(MlflowException):  # why the tracker renames metrics
        _validate_metric_name("valid_nDCG@3")
    names = ["valid_P@1", "nDCG@3", "recall@5_tail", "final_PSP@5", "micro f1", "a=b"]
    keys = [tracking.metric_key(n) for n in names]
    for key in keys:
        _validate_metric_name(key)
    assert keys[:3] == ["valid_P_at_1", "nDCG_at_3", "recall_at_5_tail"]
    assert len(set(keys)) == len(keys)


def test_param_values_fit_mlflow_limits() -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    long = tracking.param_value("x" * (MAX_PARAM_VAL_LENGTH + 500))
    assert len(long) == MAX_PARAM_VAL_LENGTH
    assert long.endswith(f"[{MAX_PARAM_VAL_LENGTH + 500} chars]")
    assert tracking.param_value(["tags", "brand"]) == '["tags", "brand"]'
    assert tracking.param_value(None) == "None"
    assert tracking.param_value(0.5) == "0.5"


# ---------------------------------------------------------------------- the tracker
def test_tracker_logs_params_metrics_and_datasets(mlflow_store, tmp_path: Path) -> None:
    catalog = tmp_path / "cat.jsonl"
    catalog.write_text("{}\n", encoding="utf-8")
    with mlflow.start_run() as run:
        tracker = tracking.MlflowTracker()
        assert tracker.run_id == run.info.run_id
        tracker.log_params({"data.tag_columns": ["tags"], "long": "y" * 7000, "lr": 0.001})
        tracker.log_params({"lr": 0.001, "later": 1})  # same value again: no error
        tracker.log_metrics({"valid_P@1": 0.5, "nan": float("nan"), "label": "x"}, step=1)
        tracker.log_metrics({"valid_P@1": 0.75}, step=2)
        tracker.log_dataset("train", "labelrec-demo(n=6,seed=0)", products(), 4)
        tracker.log_dataset("valid", f"{catalog} (split)", products(4), 4)
    client = mlflow.MlflowClient()
    data = client.get_run(run.info.run_id)
    params = data.data.params
    assert params["data.tag_columns"] == '["tags"]'
    assert len(params["long"]) == 6000 and params["later"] == "1"
    for key in ("system.python", "system.torch", "system.cuda", "system.mlflow"):
        assert params[key]
    history = client.get_metric_history(run.info.run_id, "valid_P_at_1")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert "nan" not in data.data.metrics and "label" not in data.data.metrics

    by_context = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d
        for d in data.inputs.dataset_inputs
    }
    assert set(by_context) == {"training", "validation"}
    train_in = by_context["training"]
    tags = {t.key: t.value for t in train_in.tags}
    assert tags["n_products"] == "6" and tags["n_tags"] == "4" and tags["n_distinct_tags"] == "4"
    assert json.loads(train_in.dataset.profile)["num_rows"] == 6
    assert train_in.dataset.digest == tracking.catalog_digest(products())
    assert "labelrec-demo(n=6,seed=0)" in train_in.dataset.source
    valid_in = by_context["validation"]
    assert valid_in.dataset.source_type == "local"
    assert str(catalog.resolve()) in valid_in.dataset.source
    assert data.data.tags["labelrec.data.train.digest"] == train_in.dataset.digest
    assert tracker.datasets["valid"]["n_products"] == 4


def test_catalog_digest_follows_content() -> None:
    base = tracking.catalog_digest(products())
    changed = products()
    changed[2] = Product(id="2", title="title 2", description="d", tags=["a"])
    assert tracking.catalog_digest(products()) == base
    assert tracking.catalog_digest(changed) != base
    assert len(base) == 16


def test_disabled_tracker_touches_nothing(mlflow_store) -> None:
    tracker = tracking.MlflowTracker(enabled=False)
    tracker.log_params({"a": 1})
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_dataset("train", "x", products(), 3)
    tracker.close()
    assert mlflow.active_run() is None
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_tracker_without_active_run_owns_one(mlflow_store) -> None:
    tracker = tracking.MlflowTracker()
    tracker.log_metrics({"loss": 1.0}, step=1)
    run_id = tracker.run_id
    tracker.close()
    assert mlflow.active_run() is None
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["loss"] == 1.0


def test_only_the_main_process_logs(monkeypatch: pytest.MonkeyPatch, mlflow_store) -> None:
    class Worker:
        is_main_process = False
        num_processes = 2

    monkeypatch.setattr(tracking, "accelerate_state", lambda: Worker())
    tracker = tracking.MlflowTracker()
    assert not tracker.enabled
    tracker.log_params({"a": 1})
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


# ---------------------------------------------------------------------- training
def test_training_run_is_tracked(mlflow_store, tiny_backbone, toy_data_dir, tmp_path) -> None:
    from labelrec.train import train

    cfg = tiny_config(tiny_backbone, toy_data_dir, tmp_path / "model", "train.epochs=2")
    with mlflow.start_run() as run:
        result = train(cfg, tracker=tracking.MlflowTracker(), progress=False)
    client = mlflow.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["model.backbone"] == str(tiny_backbone)
    assert data.params["train.epochs"] == "2"
    assert data.params["n_tags"] == str(result.n_tags)
    for name in ("train_loss", "lr", "products_per_s", "valid_nDCG_at_3", "valid_P_at_1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [1, 2], name
    assert data.metrics["final_nDCG_at_3"] == pytest.approx(result.metrics["nDCG@3"])
    contexts = sorted(
        t.value
        for d in client.get_run(run.info.run_id).inputs.dataset_inputs
        for t in d.tags
        if t.key == "mlflow.data.context"
    )
    assert contexts == ["training", "validation"]


def test_refit_run_is_tracked_and_registered_without_its_tuning_run(
    mlflow_store, tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import tempfile

    from labelrec.mlflow.steps import run_train

    root = Path(__file__).resolve().parents[1]
    scratch = tmp_path / "tmp"  # the step's temporary output, and all it leaves
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    trained = run_train(
        str(root / "configs" / "tiny.yaml"),
        str(toy_data_dir / "train.jsonl"),
        str(toy_data_dir / "valid.jsonl"),
        f"model.backbone={tiny_backbone} train.epochs=2 train.refit=true",
        register=True,
        progress=False,
    )
    client = mlflow.MlflowClient()
    run = client.get_run(trained["run_id"])
    n_train = len((toy_data_dir / "train.jsonl").read_text(encoding="utf-8").splitlines())
    n_valid = len((toy_data_dir / "valid.jsonl").read_text(encoding="utf-8").splitlines())
    # the tuning run's parameters and valid metrics; the refit's apart
    assert run.data.params["n_train"] == str(n_train)
    assert run.data.params["refit.n_train"] == str(n_train + n_valid)
    assert "valid_nDCG_at_3" in run.data.metrics and "final_nDCG_at_3" in run.data.metrics
    assert run.data.metrics["refit_train_products"] == n_train + n_valid
    assert [m.step for m in client.get_metric_history(run.info.run_id, "refit_train_loss")]
    contexts = {
        t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"
    }
    assert contexts == {"training", "validation", "refit"}
    files = {a.path for a in client.list_artifacts(run.info.run_id, "model_files/tuning")}
    assert {"model_files/tuning/tuned.json", "model_files/tuning/history.json"} <= files
    assert client.list_artifacts(run.info.run_id, "valid")  # the tuning run's valid evaluation
    # the registered model is the refit one, without the tuning run's files
    local = Path(mlflow.artifacts.download_artifacts(trained["model_uri"]))
    model_dir = next(p.parent for p in local.rglob("labelrec.json"))
    assert (model_dir / "tags.json").is_file() and not (model_dir / "tuning").exists()
    info = json.loads((model_dir / "labelrec.json").read_text(encoding="utf-8"))
    assert info["refit"]["train_products"] == n_train + n_valid
    assert trained["output"] is None
    assert not [p.name for p in scratch.iterdir()]  # the model and its lock file gone with it


# ---------------------------------------------------------------------- evaluation artifacts
def test_precision_recall_curve_matches_direct_count() -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    scores = rng.random((30, 5)).astype(np.float32)
    gold = (rng.random((30, 6)) < 0.3).astype(np.float32)  # one unknown tag column
    t, precision, recall = tracking.precision_recall_curve(sp.csr_matrix(gold), scores, 20)
    for i in (0, 7, 15):
        pred = scores >= t[i]
        tp = (pred & (gold[:, :5] > 0)).sum()
        assert precision[i] == pytest.approx(tp / pred.sum())
        assert recall[i] == pytest.approx(tp / gold.sum())
    assert np.all(np.diff(recall) <= 1e-12)
    # a part of the products at a time: the same counts
    curve = tracking.PrecisionRecallCurve(20)
    for start, stop in ((0, 7), (7, 7), (7, 30)):
        curve.add(sp.csr_matrix(gold[start:stop]), scores[start:stop])
    np.testing.assert_array_equal(np.stack(curve.result()), np.stack((t, precision, recall)))


def test_log_evaluation_writes_csv_json_and_plots(
    mlflow_store, trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    from labelrec.evaluate import evaluate_scores_on, gold_matrix
    from labelrec.predict import TagRecommender

    rec = TagRecommender.load(trained_model_dir)
    valid = read_catalog(toy_data_dir / "valid.jsonl").products
    scores, _ = rec.predict_scores(valid)
    evaluation = evaluate_scores_on(scores, valid, rec.vocab, rec.tag_thresholds)
    curve = tracking.PrecisionRecallCurve()
    curve.add(gold_matrix(valid, rec.vocab)[0], scores)
    with mlflow.start_run() as run:
        logged = tracking.log_evaluation(run.info.run_id, evaluation, curve, rec.global_threshold)
    assert logged["nDCG_at_3"] == pytest.approx(evaluation.metrics["nDCG@3"])
    out = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="evaluation", dst_path=str(tmp_path)
        )
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "metrics.json",
        "per_tag.csv",
        "precision_recall_threshold.png",
        "precision_recall_threshold.json",
        "metrics_at_k.png",
        "f1_by_tag_frequency.png",
    } <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with (out / "per_tag.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["tag"] for r in rows} >= set(rec.tags)
    assert json.loads((out / "metrics.json").read_text())["P@1"] == evaluation.metrics["P@1"]
    # a metric without the data it needs is NaN: null in the file, which stays valid JSON
    evaluation.metrics["PSP@5"] = float("nan")
    with mlflow.start_run() as run:
        tracking.log_evaluation(run.info.run_id, evaluation, curve, metric_prefix=None)
    text = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="evaluation/metrics.json", dst_path=str(tmp_path)
        )
    ).read_text()
    assert "NaN" not in text and json.loads(text)["PSP@5"] is None


# ---------------------------------------------------------------------- store default
def test_default_store_is_embedded_under_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    fresh_db(tmp_path / "mlruns.db", tmp_path_factory)  # tables only (created faster)
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    info = store.configure()
    assert info.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlruns.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == info.tracking_uri
    assert info.experiment_name == "labelrec"
    assert info.artifact_location == (tmp_path.resolve() / "mlartifacts" / "labelrec").as_uri()
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert run.info.experiment_id == info.experiment_id
    assert (tmp_path / "mlruns.db").is_file()
    artifacts = tmp_path / "mlartifacts" / "labelrec" / run.info.run_id / "artifacts"
    assert (artifacts / "note.txt").is_file()
    assert not (tmp_path / "mlruns").exists()
    # A second call reuses the experiment.
    assert store.configure().experiment_id == info.experiment_id


def test_the_embedded_store_follows_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A notebook that moves to another folder finds the store there: the URI labelrec set
    for the first folder is its own, not the user's choice; one the user sets stays."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from labelrec.errors import ModelError
    from labelrec.opener import use_tracking_uri

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        fresh_db(folder / "mlruns.db", tmp_path_factory)
    monkeypatch.chdir(first)
    one = store.configure()
    assert one.tracking_uri == f"sqlite:///{(first / 'mlruns.db').resolve()}"
    monkeypatch.chdir(second)
    two = store.configure()
    assert two.tracking_uri == f"sqlite:///{(second / 'mlruns.db').resolve()}"
    assert os.environ["MLFLOW_TRACKING_URI"] == two.tracking_uri == mlflow.get_tracking_uri()
    assert two.artifact_location == (second.resolve() / "mlartifacts" / "labelrec").as_uri()
    monkeypatch.chdir(tmp_path)  # no store here: opening a registry model says so
    with pytest.raises(ModelError, match="no MLflow store at .*mlruns.db"):
        use_tracking_uri("models:/labelrec@champion")
    monkeypatch.chdir(first)
    use_tracking_uri("models:/labelrec@champion")
    assert mlflow.get_tracking_uri() == one.tracking_uri
    mine = f"sqlite:///{fresh_db(tmp_path / 'mine.db', tmp_path_factory)}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)  # the user's own choice
    use_tracking_uri("models:/labelrec@champion")
    assert store.resolve_tracking_uri() == mine == os.environ["MLFLOW_TRACKING_URI"]
    assert store.configure().tracking_uri == mine  # the id labelrec set for `b` is not there
    # an experiment id the user sets is theirs, even where it equals one labelrec set before
    theirs = os.environ["MLFLOW_EXPERIMENT_ID"]
    monkeypatch.chdir(second)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    store.configure()  # labelrec's own again: the store of `b`, its own experiment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", theirs)
    assert store.configure().experiment_id == theirs


def test_tracking_uri_from_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    uri = f"sqlite:///{fresh_db(tmp_path / 'elsewhere.db', tmp_path_factory)}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    monkeypatch.chdir(tmp_path)
    info = store.configure()
    assert info.tracking_uri == uri and info.experiment_name == "mine"
    assert info.artifact_location == (tmp_path / "mlartifacts" / "mine").as_uri()
    assert not (tmp_path / "mlruns.db").exists()
    assert store.artifact_root_for("http://127.0.0.1:5000") is None
    assert store.ui_command(uri).startswith(f"mlflow ui --backend-store-uri {uri}")


# ---------------------------------------------------------------------- pretrain step
@pytest.mark.slow
def test_pretrained_backbone_is_logged_and_trainable_from_its_uri(
    mlflow_store, tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    from labelrec.mlflow.steps import run_pretrain, run_train

    root = Path(__file__).resolve().parents[1]
    pre = run_pretrain(
        str(root / "configs" / "tiny.yaml"),
        train=str(toy_data_dir / "train.jsonl"),
        # the folder from the overrides, as the step's output param is left empty
        overrides=f"model.backbone={tiny_backbone} pretrain.max_steps=2 output={tmp_path / 'b'}",
        progress=False,
    )
    assert pre["output"] == str(tmp_path / "b") and (tmp_path / "b" / "pretrain.json").is_file()
    client = mlflow.MlflowClient()
    files = {Path(a.path).name for a in client.list_artifacts(pre["run_id"], "backbone")}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    losses = client.get_metric_history(pre["run_id"], "heldout_mlm_loss")
    assert [m.step for m in losses] == [0, 1]
    trained = run_train(
        str(root / "configs" / "tiny.yaml"),
        str(toy_data_dir / "train.jsonl"),
        str(toy_data_dir / "valid.jsonl"),
        "train.epochs=1",
        backbone=pre["backbone_uri"],
        register=False,
        progress=False,
    )
    params = client.get_run(trained["run_id"]).data.params
    assert params["model.backbone"] != str(tiny_backbone)  # the downloaded, pretrained one
    assert params["step.backbone"] == pre["backbone_uri"]
    assert not Path(params["model.backbone"]).exists()  # the download is removed after training
    # the model names the URI it was trained from, not the download that is gone
    info_file = mlflow.artifacts.download_artifacts(
        run_id=trained["run_id"], artifact_path="model_files/labelrec.json", dst_path=str(tmp_path)
    )
    info = json.loads(Path(info_file).read_text(encoding="utf-8"))
    assert info["backbone"] == info["config"]["model"]["backbone"] == pre["backbone_uri"]


@pytest.mark.slow
def test_two_accelerate_processes_log_one_run_and_one_version(
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`accelerate launch` (2 gloo processes) of the train step: one run, one model version."""
    import socket
    import subprocess
    import sys

    from mlflow_fixtures import MLFLOW_ENV

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    uri = f"sqlite:///{fresh_db(tmp_path / 'mlruns.db', tmp_path_factory)}"
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV}
    env.update(MLFLOW_TRACKING_URI=uri, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(port),
        "-m", "labelrec.mlflow.steps", "train",
        "--config", str(root / "configs" / "tiny.yaml"),
        "--train", str(toy_data_dir / "train.jsonl"),
        "--valid", str(toy_data_dir / "valid.jsonl"),
        "--overrides", f"model.backbone={tiny_backbone} train.epochs=2",
        "--output", str(tmp_path / "model"), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert done.stdout.count("train: run ") == 1

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["num_processes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert len(run.inputs.dataset_inputs) == 2
    versions = client.search_model_versions("name = 'labelrec'")
    assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == run.info.run_id


# ---------------------------------------------------------------------- the train step's models
def test_train_step_registers_a_describer_apart_from_the_taggers(
    mlflow_store, tiny_decoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import toy_catalog, write_jsonl

    from labelrec.mlflow.registry import KIND_TAG, RegistryError, promote
    from labelrec.mlflow.steps import run_train

    rows = [dict(r, description=f"a great {r['title']} for kids.") for r in toy_catalog(2)]
    train = write_jsonl(rows[:10], tmp_path / "train.jsonl")
    valid = write_jsonl(rows[10:], tmp_path / "valid.jsonl")
    settings = (
        "task=describe describe.max_steps=2"
        " describe.batch_size=4 describe.eval_products=2 describe.max_target_tokens=12"
        " describe.max_new_tokens=12 describe.min_new_tokens=2"
    )
    # the step's backbone is the describer's (describe.backbone), not the tagger's
    trained = run_train(
        None, str(train), str(valid), settings, backbone=str(tiny_decoder), progress=False
    )
    assert trained["model_uri"] == "models:/labelrec-describer/1"
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("labelrec-describer", "challenger")
    assert version.tags[KIND_TAG] == "describer"
    assert "valid.rougeL_f1" in version.tags and "valid.loss" not in version.tags
    metrics = client.get_run(trained["run_id"]).data.metrics
    assert "final_loss" in metrics and "final_final_loss" not in metrics
    params = client.get_run(trained["run_id"]).data.params
    assert params["describe.backbone"] == str(tiny_decoder)
    assert not client.search_model_versions("name='labelrec'")  # the taggers' name untouched
    from labelrec.mlflow import load_model

    assert type(load_model(trained["model_uri"])).__name__ == "Describer"
    with pytest.raises(RegistryError, match="is a describer"):
        promote("labelrec-describer", valid)
    import labelrec.mlflow as lrm
    from labelrec.mlflow.steps import run_batch, run_evaluate
    from labelrec.model import ModelError

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the describer was loaded before it was refused")

    with monkeypatch.context() as patch:  # refused from its MLmodel file, before loading
        patch.setattr(lrm, "load_model", no_load)
        patch.setattr(mlflow.pyfunc, "load_model", no_load)
        with pytest.raises(ModelError, match="is a describer, not a tagging model: the evaluate"):
            run_evaluate(trained["model_uri"], str(valid))
        with pytest.raises(ModelError, match="is a describer, not a tagging model: the batch"):
            run_batch(trained["model_uri"], str(valid), str(tmp_path / "out.jsonl"), progress=False)

    kept = run_train(
        None, str(train), str(valid), f"{settings} describe.backbone={tiny_decoder}",
        register=False, progress=False,
    )  # fmt: skip
    assert kept["model_uri"].startswith("models:/m-") and "version" not in kept
    assert len(client.search_model_versions("name='labelrec-describer'")) == 1


def test_train_step_without_registering_logs_the_model(
    mlflow_store, tiny_backbone: Path, toy_data_dir: Path
) -> None:
    from labelrec.mlflow.steps import run_train

    root = Path(__file__).resolve().parents[1]
    trained = run_train(
        str(root / "configs" / "tiny.yaml"),
        str(toy_data_dir / "train.jsonl"),
        str(toy_data_dir / "valid.jsonl"),
        f"model.backbone={tiny_backbone} train.epochs=1",
        register=False,
        progress=False,
    )
    assert "version" not in trained
    model = mlflow.pyfunc.load_model(trained["model_uri"])
    import pandas as pd

    out = model.predict(pd.DataFrame({"title": ["lego city police station"]}))
    assert len(out) == 1
    assert not mlflow.MlflowClient().search_registered_models()


def test_the_train_step_holds_its_output_until_registered_and_cleans_its_temp_folders(
    mlflow_store, tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """A training into the step's output while the step logs and registers it is refused (it
    would be registered under this run); a step that fails before training leaves no
    temporary folder behind."""
    import tempfile
    import threading

    from labelrec.config import ConfigError
    from labelrec.mlflow import steps, tracking
    from labelrec.modeldir import OutputBusy, output_lock

    out = tmp_path / "model"
    rivals: list[str] = []
    log_files = tracking.log_model_files

    def logged_beside_a_rival(run_id: str, output: Path) -> None:
        def rival() -> None:
            try:
                with output_lock(out):
                    rivals.append("wrote")
            except OutputBusy:
                rivals.append("refused")

        thread = threading.Thread(target=rival)
        thread.start()
        thread.join(10)
        log_files(run_id, output)

    monkeypatch.setattr(tracking, "log_model_files", logged_beside_a_rival)
    root = Path(__file__).resolve().parents[1]
    steps.run_train(
        str(root / "configs" / "tiny.yaml"),
        str(toy_data_dir / "train.jsonl"),
        str(toy_data_dir / "valid.jsonl"),
        f"model.backbone={tiny_backbone} train.epochs=1",
        output=str(out),
        progress=False,
    )
    assert rivals == ["refused"]

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(ConfigError):
        steps.run_train(None, overrides="train.epochs=-1", backbone="runs:/0123abcd/backbone")
    assert list(scratch.iterdir()) == []
    # a catalog that is not there: said before a backbone is downloaded, a run opened or the
    # output locked
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    with pytest.raises(FileNotFoundError, match="data.valid: .*gone.jsonl does not exist"):
        steps.run_train(
            str(root / "configs" / "tiny.yaml"),
            str(toy_data_dir / "train.jsonl"),
            str(tmp_path / "gone.jsonl"),
            backbone="runs:/0123abcd/backbone",
            output=str(tmp_path / "never" / "m"),
        )
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before
    assert not (tmp_path / "never").exists() and list(scratch.iterdir()) == []


def test_a_value_for_an_empty_project_parameter_goes_beside_it(mlflow_store, caplog) -> None:
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        # as `mlflow run` does: empty parameters as '', a path as given
        mlflow.log_params({"output": "''", "threshold": "''", "seed": "3", "data": "cat/t.jsonl"})
        tracking.log_params(
            run.info.run_id,
            {
                "output": "/tmp/m",
                "threshold": None,
                "seed": 4,
                "lr": 0.1,
                "data": os.path.abspath("cat/t.jsonl"),  # the step's absolute path: no warning
            },
        )
        tracking.log_params(run.info.run_id, {"output": "/tmp/m"})  # again: nothing to change
    params = client.get_run(run.info.run_id).data.params
    assert params["output"] == "''" and params["output.resolved"] == "/tmp/m"
    assert "threshold.resolved" not in params  # empty both ways
    assert params["seed"] == "3" and params["lr"] == "0.1"
    assert [r.getMessage() for r in caplog.records if "already logged" in r.getMessage()] == [
        "param seed already logged as '3'; keeping it"
    ]


def test_the_default_store_in_a_folder_named_with_url_syntax(tmp_path: Path) -> None:
    """A % or ? in the working directory's path stays part of it for SQLAlchemy."""
    from sqlalchemy.engine import make_url

    folder = tmp_path / "shop%41 q?x"
    uri = store.default_tracking_uri(folder)
    assert make_url(uri).database == str(folder / "mlruns.db")
    assert store.sqlite_path(uri) == folder / "mlruns.db"
    assert shlex.split(store.ui_command(uri))[3] == uri
