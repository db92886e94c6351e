"""Batch scoring through the registered pyfunc: the `batch` step (chunks, formats) and Spark."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import toy_catalog, write_jsonl  # noqa: E402
from mlflow_fixtures import use_store  # noqa: E402

from labelrec.mlflow import steps  # noqa: E402
from labelrec.predict import TagRecommender  # noqa: E402

LIMIT = 3
CHAMPION = "models:/labelrec@champion"


@pytest.fixture(scope="module")
def registered(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The session's tiny model registered as labelrec@champion in a module-wide store."""
    from labelrec.mlflow.registry import register_challenger

    folder = tmp_path_factory.mktemp("batch-store")
    with pytest.MonkeyPatch.context() as mp:
        use_store(folder, mp, tmp_path_factory)
        version = register_challenger(trained_model_dir, name="labelrec")
        mlflow.MlflowClient().set_registered_model_alias("labelrec", "champion", version.version)
        yield {"folder": folder, "uri": CHAMPION, "version": str(version.version)}
        while mlflow.active_run() is not None:
            mlflow.end_run()


@pytest.fixture(scope="module")
def expected(trained_model_dir: Path) -> dict[str, list[tuple[str, float]]]:
    """What labelrec itself suggests for every toy product (id -> ranked tags)."""
    rows = toy_catalog()
    rec = TagRecommender.load(trained_model_dir)
    ranked = rec.suggest(rows, limit=LIMIT)
    return {r["id"]: [(s.tag, s.score) for s in row] for r, row in zip(rows, ranked, strict=True)}


def write_input(kind: str, folder: Path) -> Path:
    rows = toy_catalog()
    if kind == "jsonl":
        return write_jsonl(rows, folder / "in.jsonl")
    frame = pd.DataFrame(rows)
    if kind == "csv":
        frame["tags"] = frame["tags"].map("|".join)
        frame.to_csv(folder / "in.csv", index=False)
        return folder / "in.csv"
    frame.to_parquet(folder / "in.parquet")
    return folder / "in.parquet"


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if path.suffix == ".csv":
        with path.open(encoding="utf-8") as fh:
            return [
                {
                    "id": r["id"],
                    "tags": [
                        {"tag": t, "score": float(s), "known": {"true": True, "false": False}[k]}
                        for t, s, k in zip(
                            r["tags"].split("|") if r["tags"] else [],
                            r["scores"].split("|") if r["scores"] else [],
                            r["known"].split("|") if r["known"] else [],
                            strict=True,
                        )
                    ],
                }
                for r in csv.DictReader(fh)
            ]
    return pd.read_parquet(path).to_dict("records")


@pytest.mark.parametrize(
    ("source", "target", "model"),
    [
        ("jsonl", "parquet", "registered"),
        ("csv", "csv", "registered"),
        ("parquet", "jsonl", "registered"),
        ("jsonl", "jsonl", "directory"),  # a `labelrec train` directory, as the MLproject says
    ],
)
def test_batch_step_scores_every_product_like_labelrec(
    registered,
    expected,
    trained_model_dir: Path,
    tmp_path: Path,
    source: str,
    target: str,
    model: str,
) -> None:
    in_path = write_input(source, tmp_path)
    out_path = tmp_path / f"out.{target}"
    uri = registered["uri"] if model == "registered" else str(trained_model_dir)
    summary = steps.run_batch(
        uri, str(in_path), str(out_path), chunk_size=7, limit=LIMIT, progress=False
    )
    assert summary["n_products"] == len(expected)
    rows = read_output(out_path)
    assert [r["id"] for r in rows] == [r["id"] for r in toy_catalog()]
    for row in rows:
        got = [(t["tag"], float(t["score"])) for t in row["tags"]]
        want = expected[row["id"]]
        assert [t for t, _ in got] == [t for t, _ in want], row["id"]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
        assert all(t["known"] is True or t["known"] is False for t in row["tags"])  # every tag
    run = mlflow.get_run(summary["run_id"])
    assert run.data.tags["labelrec.step"] == "batch"
    assert run.data.metrics["n_products"] == len(expected)
    assert run.data.params["model_uri"] == uri


def test_batch_predicts_one_chunk_at_a_time(
    registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    load = mlflow.pyfunc.load_model

    class Recording:
        def __init__(self, model):
            self.model = model

        def unwrap_python_model(self):
            return self.model.unwrap_python_model()

        def predict(self, frame, params=None):
            sizes.append(len(frame))
            return self.model.predict(frame, params=params)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda uri, **kw: Recording(load(uri, **kw)))
    in_path = write_input("jsonl", tmp_path)
    n = steps.run_batch(
        registered["uri"], str(in_path), str(tmp_path / "o.jsonl"), chunk_size=16, progress=False
    )["n_products"]
    assert sizes == [16, 16, 16, 12] and n == 60


def test_batch_cli_reports_bad_input(registered, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "title": "ok"}\n{"id": "2", "title": 5}\n', encoding="utf-8")
    argv = ["batch", "--model-uri", registered["uri"], "--output", str(tmp_path / "o.csv")]
    assert steps.main([*argv, "--input", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "line 2" in err and "title" in err
    assert steps.main([*argv, "--input", str(tmp_path / "missing.csv"), "--no-progress"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    # a bad output name fails before the model loads: here even with no model at all
    argv = ["batch", "--model-uri", "models:/nope@champion", "--input", str(bad)]
    assert steps.main([*argv, "--output", str(tmp_path / "o.txt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "o.txt" in err and ".csv or .parquet" in err and "nope" not in err


def test_batch_cli_rejects_unknown_model(registered, tmp_path: Path, capsys) -> None:
    in_path = write_input("jsonl", tmp_path)
    argv = ["batch", "--model-uri", "models:/nope@champion", "--input", str(in_path)]
    assert steps.main([*argv, "--output", str(tmp_path / "o.jsonl"), "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_step_logs_metrics_files_and_model(
    registered, trained_model_dir: Path, toy_data_dir: Path
) -> None:
    """The `evaluate` entry point on the registered model (same fixture as batch)."""
    from labelrec.data import read_catalog
    from labelrec.evaluate import evaluate_scores_on

    valid = toy_data_dir / "valid.jsonl"
    summary = steps.run_evaluate(registered["uri"], str(valid))
    rec = TagRecommender.load(trained_model_dir)
    products = read_catalog(valid).products
    scores, _ = rec.predict_scores(products)
    want = evaluate_scores_on(scores, products, rec.vocab, rec.tag_thresholds).metrics
    assert summary["metrics"]["nDCG@3"] == pytest.approx(want["nDCG@3"], abs=1e-6)
    # a `labelrec train` directory is read as it is
    direct = steps.run_evaluate(str(trained_model_dir), str(valid))["metrics"]
    assert direct["nDCG@3"] == pytest.approx(want["nDCG@3"], abs=1e-6)
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.data.metrics["nDCG_at_3"] == pytest.approx(want["nDCG@3"], abs=1e-6)
    assert run.data.tags["labelrec.model.version"] == registered["version"]
    assert run.data.tags["labelrec.step"] == "evaluate"
    (dataset,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "evaluation"
    files = {a.path for a in client.list_artifacts(summary["run_id"], "evaluation")}
    assert "evaluation/per_tag.csv" in files and "evaluation/metrics_at_k.png" in files


@pytest.mark.slow
def test_spark_udf_scores_like_the_pyfunc(
    registered, expected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow.pyfunc.spark_udf` on a local Spark session, as README shows it."""
    import pyspark  # noqa: F401  (required: its absence fails the tests)

    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (java not on PATH)")
    from pyspark.sql import SparkSession

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.chdir(tmp_path)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("labelrec-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        # the JVM's temporary files (Spark's folders, native libraries) in the test's folder
        .config("spark.local.dir", str(tmp_path))
        .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={tmp_path}")
        .getOrCreate()
    )
    try:
        tag_udf = mlflow.pyfunc.spark_udf(
            spark,
            registered["uri"],
            result_type=steps.SPARK_RESULT_TYPE,
            env_manager="local",
            params={"limit": LIMIT},
        )
        frame = pd.DataFrame(toy_catalog())[["id", "title", "description"]]
        products = spark.createDataFrame(frame).repartition(2)
        scored = products.withColumn("pred", tag_udf("title", "description"))
        rows = scored.select("id", "pred.tags").collect()
    finally:
        spark.stop()
    assert len(rows) == len(expected)
    for row in rows:
        got = [(t["tag"], t["score"]) for t in row["tags"]]
        want = expected[row["id"]]
        assert [t for t, _ in got] == [t for t, _ in want], row["id"]
        assert all(t["known"] in (True, False) for t in row["tags"])
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
