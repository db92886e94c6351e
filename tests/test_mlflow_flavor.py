"""The ``labelrec`` MLflow flavor: MLmodel layout, models-from-code pyfunc, registry round trip."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd  # noqa: E402
import pytest
import yaml  # noqa: E402
from conftest import toy_catalog  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

import labelrec.mlflow as lrm  # noqa: E402
from labelrec import cli  # noqa: E402
from labelrec.model import ModelError  # noqa: E402
from labelrec.predict import TagRecommender  # noqa: E402

ITEMS = [
    {"title": "LEGO City Police Station", "description": "police station with minifigures"},
    {"title": "Hornby model railway train set", "description": ""},
    {"title": "plush bear soft baby", "description": "a soft toy"},
    {"title": "remote control drone blue", "description": ""},
]


_TEMPLATE: dict[str, Path] = {}


def _template_db(factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database, created once (its schema migrations take seconds)."""
    if "db" not in _TEMPLATE:
        db = factory.mktemp("mlflow-template") / "mlruns.db"
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
        _TEMPLATE["db"] = db
    return _TEMPLATE["db"]


def open_store(
    tmp_path: Path, factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A fresh SQLite tracking store and registry with artifacts under tmp_path (undone after)."""
    from mlflow.tracking import fluent

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored after the test
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    db = tmp_path / "mlruns.db"
    shutil.copyfile(_template_db(factory), db)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    experiment_id = mlflow.MlflowClient().create_experiment(
        "labelrec-tests", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    yield tmp_path
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def mlflow_store(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    yield from open_store(tmp_path, tmp_path_factory, monkeypatch)


def as_lists(frame: pd.DataFrame) -> list[list[tuple[str, float]]]:
    return [[(d["tag"], d["score"]) for d in row] for row in frame["tags"]]


def test_save_model_layout(trained_model_dir: Path, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "saved"
    lrm.save_model(trained_model_dir, out)
    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    info = json.loads((trained_model_dir / "labelrec.json").read_text())
    flavor = mlmodel["flavors"]["labelrec"]
    assert flavor["n_tags"] == info["n_tags"] and flavor["backbone"] == info["backbone"]
    assert flavor["pooling"] == info["pooling"] and flavor["format_version"] == 1
    assert flavor["labelrec_version"]
    pyfunc = mlmodel["flavors"]["python_function"]
    # models-from-code: the pyfunc is a source file, nothing is pickled
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert not list(out.rglob("*.pkl"))
    model_files = out / flavor["model_data"]
    for name in ("model.safetensors", "tags.json", "thresholds.json", "labelrec.json"):
        assert (model_files / name).is_file(), name
    assert not (model_files / "checkpoints").exists()
    assert (out / "code" / "labelrec" / "predict.py").is_file()  # labelrec's code goes along
    # signature and input example
    signature = mlmodel["signature"]
    inputs = {c["name"]: c for c in json.loads(signature["inputs"])}
    assert inputs["title"]["required"] and not inputs["description"]["required"]
    params = {p["name"]: p for p in json.loads(signature["params"])}
    assert params["limit"]["default"] == 10 and params["threshold"]["default"] is None
    assert json.loads(signature["outputs"])[0]["name"] == "tags"
    example = json.loads((out / "input_example.json").read_text())
    assert len(example["data"]) == 2
    # pip requirements pinned to what is installed, torch without a local version label (its CPU
    # builds' index named when torch here is one), platform markers kept, no serving stack
    lines = (out / "requirements.txt").read_text().splitlines()
    reqs = [line.split(";")[0].strip() for line in lines]
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs
    cpu_index = "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert (cpu_index in lines) == torch.__version__.endswith("+cpu")
    assert any(r.startswith("transformers==") for r in reqs)
    assert not any(r.startswith(("bentoml", "labelrec", "pytest", "uv", "httptools")) for r in reqs)
    # extra requirements join labelrec's own; a conda environment replaces them, as in MLflow
    lrm.save_model(trained_model_dir, tmp_path / "extra", extra_pip_requirements=["requests>=2"])
    extra = (tmp_path / "extra" / "requirements.txt").read_text().splitlines()
    assert extra[-1] == "requests>=2" and extra[:-1] == lines
    env = {"name": "x", "dependencies": ["python=3.11", {"pip": ["labelrec", "requests"]}]}
    lrm.save_model(trained_model_dir, tmp_path / "conda", conda_env=env)
    conda_reqs = (tmp_path / "conda" / "requirements.txt").read_text().split()
    assert [r for r in conda_reqs if not r.startswith("mlflow")] == ["labelrec", "requests"]
    with pytest.raises(ValueError, match="not both"):
        lrm.save_model(trained_model_dir, tmp_path / "x", pip_requirements=["a"],
                       extra_pip_requirements=["b"])  # fmt: skip


def test_register_load_by_alias_matches_suggest(
    trained_model_dir: Path,
    mlflow_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    example = pd.DataFrame(toy_catalog()[:2])  # id and gold tags too: only the inputs are kept
    example["description"] = float("nan")  # as a CSV's empty column reads: text all the same
    with mlflow.start_run():
        info = lrm.log_model(
            trained_model_dir,
            name="tagger",
            registered_model_name="labelrec",
            input_example=example,
        )
    assert info.registered_model_version == 1
    assert info.saved_input_example_info["type"] == "dataframe"
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("labelrec", "champion", "1")

    model = mlflow.pyfunc.load_model("models:/labelrec@champion")
    assert list(model.input_example.columns) == ["title", "description"]
    frame = pd.DataFrame(ITEMS)
    got = as_lists(model.predict(frame))

    rec = TagRecommender.load(trained_model_dir)
    want = [[(s.tag, s.score) for s in row] for row in rec.suggest(ITEMS)]
    assert [[t for t, _ in row] for row in got] == [[t for t, _ in row] for row in want]
    for g, w in zip(got, want, strict=True):
        assert [s for _, s in g] == pytest.approx([s for _, s in w], abs=1e-6)

    # `labelrec suggest` on the same model gives the same tags
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(i) + "\n" for i in ITEMS)))
    assert cli.main(["suggest", str(trained_model_dir), "--format", "jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [[d["tag"] for d in row["tags"]] for row in lines] == [[t for t, _ in r] for r in got]

    # params: a global threshold of 0 returns exactly `limit` tags, best first
    top = as_lists(model.predict(frame, params={"limit": 3, "threshold": 0.0}))
    assert all(len(row) == 3 for row in top)
    assert all([s for _, s in row] == sorted((s for _, s in row), reverse=True) for row in top)
    # the optional description may be left out
    titles_only = as_lists(model.predict(pd.DataFrame({"title": [i["title"] for i in ITEMS]})))
    assert len(titles_only) == len(ITEMS)

    # a dict of columns: one product per element (MLflow hands the model one row of lists)
    columns = {key: [i[key] for i in ITEMS] for key in ("title", "description")}
    assert as_lists(model.predict(columns)) == got
    with pytest.raises(MlflowException, match="'description' has 1 values for 4 titles"):
        model.predict({"title": columns["title"], "description": ["one"]})
    # a product without text gets no tags; the others are scored as before
    blank = pd.DataFrame([ITEMS[0], {"title": "", "description": None}, ITEMS[1]])
    assert as_lists(model.predict(blank)) == [got[0], [], got[1]]
    # bad params name themselves (a 400 over REST)
    for params, word in (({"limit": 0}, "limit"), ({"threshold": 1.5}, "threshold")):
        with pytest.raises(MlflowException, match=f"param {word} must be") as err:
            model.predict(frame, params=params)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"

    native = lrm.load_model("models:/labelrec@champion")
    assert isinstance(native, TagRecommender)
    assert native.tags == rec.tags
    assert [[s.tag for s in r] for r in native.suggest(ITEMS)] == [[t for t, _ in r] for r in got]


def test_a_model_tuned_by_folds_says_its_figures_are_out_of_fold(
    trained_model_dir: Path, mlflow_store: Path, tmp_path: Path
) -> None:
    from labelrec.mlflow.registry import register_challenger

    model = Path(shutil.copytree(trained_model_dir, tmp_path / "model"))
    info = json.loads((model / "labelrec.json").read_text(encoding="utf-8"))
    info["valid_metrics"]["tuning_folds"] = 2.0  # as train.tuning_folds records it
    (model / "labelrec.json").write_text(json.dumps(info), encoding="utf-8")
    version = register_challenger(model)
    assert "valid.nDCG_at_3" in version.tags  # the out-of-fold figures are metrics
    assert version.tags["labelrec.tuning_folds"] == "2"
    assert not any(key.startswith("valid.tuning") for key in version.tags)
    assert "; out of fold (2 tuning folds) P@1 " in version.description


def test_register_challenger_tags_and_version_info(
    trained_model_dir: Path, mlflow_store: Path
) -> None:
    from labelrec.mlflow.flavor import labelrec_version
    from labelrec.mlflow.registry import model_version_info, register_challenger

    version = register_challenger(trained_model_dir, tags={"data_digest": "abc123"})
    assert mlflow.active_run() is None  # the run it started is closed
    assert version.aliases == ["challenger"] or "challenger" in version.aliases
    info = json.loads((trained_model_dir / "labelrec.json").read_text())
    want = info["valid_metrics"]["nDCG@3"]
    assert float(version.tags["valid.nDCG_at_3"]) == pytest.approx(want)
    assert version.tags["data_digest"] == "abc123"
    assert version.tags["code_version"].startswith(labelrec_version())
    # timings and the tuning's chosen settings are not tagged as metrics; a one-line description
    assert not any(k.endswith(("_seconds", "_weight", "_settings")) for k in version.tags)
    assert "valid.n_products" not in version.tags
    assert version.tags["labelrec.valid_products"] == str(int(info["valid_metrics"]["n_products"]))
    assert version.description.startswith("labelrec tagger on ")
    assert f"nDCG@3 {want:.4f}" in version.description

    described = model_version_info("models:/labelrec@challenger")
    assert described["name"] == "labelrec" and described["version"] == int(version.version)
    assert described["aliases"] == ["challenger"]
    assert described["run_id"] == version.run_id
    assert described["metrics"]["nDCG@3"] == pytest.approx(want)
    assert model_version_info(f"models:/labelrec/{version.version}")["version"] == 1
    with pytest.raises(ModelError, match="@champion"):
        model_version_info("models:/labelrec@champion")
    with pytest.raises(ValueError, match="models:/"):
        model_version_info("runs:/abc/model")

    # inside an active run, the model is logged there and the run stays open
    with mlflow.start_run() as run:
        second = register_challenger(trained_model_dir)
        assert second.run_id == run.info.run_id
        assert mlflow.active_run() is not None
    assert model_version_info("models:/labelrec@challenger")["version"] == 2
    # latest: the highest version, as MLflow's own loaders read it
    from labelrec.opener import registry_version

    assert model_version_info("models:/labelrec/latest")["version"] == 2
    assert registry_version("models:/labelrec/latest") == "2"
    with pytest.raises(ModelError, match="'nobody'"):
        model_version_info("models:/nobody/latest")
    client = mlflow.MlflowClient()  # a quote in the name: the registry's filter quotes it
    client.create_registered_model("o'brien")
    for _ in range(2):
        client.create_model_version("o'brien", version.source, run_id=version.run_id)
    assert model_version_info("models:/o'brien/latest")["version"] == 2
    with pytest.raises(ValueError, match="cannot name a model with both"):
        model_version_info('models:/o\'brien "2"/latest')


@pytest.mark.filterwarnings("ignore:Add type hints:UserWarning")
def test_load_model_refuses_other_models(mlflow_store: Path, tmp_path: Path) -> None:
    code = tmp_path / "echo_model.py"
    code.write_text(
        "import mlflow\n"
        "from mlflow.pyfunc import PythonModel\n"
        "class Echo(PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return model_input\n"
        "mlflow.models.set_model(Echo())\n"
    )
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="echo", python_model=str(code), pip_requirements=[])
    with pytest.raises(ModelError, match="not a labelrec model"):
        lrm.load_model(info.model_uri)
    with pytest.raises(ModelError, match="does not exist"):
        lrm.save_model(tmp_path / "missing", tmp_path / "out")


def test_a_model_with_a_bad_rules_file_is_refused_when_saved(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """Said when the model is logged, not when the registered version is served."""
    import shutil

    from labelrec.rules import RulesError

    model = shutil.copytree(
        trained_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("checkpoints")
    )
    (model / "rules.yaml").write_text("rename:\n  a: b\n  b: a\n", encoding="utf-8")
    with pytest.raises(RulesError, match=r"rules.yaml, line 2: rename: 'a' -> 'b' -> 'a'"):
        lrm.save_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pyfunc_reads_pandas_na_as_a_missing_cell() -> None:
    """A nullable string column (``convert_dtypes``) leaves ``pd.NA``, not None or NaN."""
    from labelrec.mlflow.pyfunc_model import _describe_records, _records

    frame = pd.DataFrame({"title": ["Lego set", "Train"], "description": [None, "wooden"]})
    assert _records(frame.convert_dtypes()) == [
        {"title": "Lego set", "description": ""},
        {"title": "Train", "description": "wooden"},
    ]
    tagged = pd.DataFrame({"title": ["a", "b"], "tags": pd.array(["x|y", None], dtype="string")})
    assert [r["tags"] for r in _describe_records(tagged)] == [["x", "y"], []]
    with pytest.raises(MlflowException, match="product 0, field 'tags'"):
        _describe_records(pd.DataFrame({"title": ["a"], "tags": [3.0]}))  # a number is no tag


def test_evaluator_reads_pandas_na_as_no_tags() -> None:
    from labelrec.mlflow.evaluator import parse_ranked

    output = pd.DataFrame({"tags": ["a", None]}).convert_dtypes()
    assert parse_ranked(output) == [[("a", None)], []]


class _StubTagger:
    def suggest(self, items, limit, threshold):
        from labelrec.predict import Suggestion

        return [[Suggestion("Toys", 0.9)] if item["title"] else [] for item in items]


def _stub_pyfunc():
    from labelrec.mlflow.pyfunc_model import LabelrecPyfunc

    model = LabelrecPyfunc()
    model.describer, model.recommender = None, _StubTagger()
    return model


def test_pyfunc_answers_with_the_inputs_index_and_a_stable_column() -> None:
    model = _stub_pyfunc()
    frame = pd.DataFrame({"title": ["a", "b", "c"]}, index=[10, 20, 30]).iloc[1:]
    out = model.predict(None, frame)
    assert list(out.index) == [20, 30]
    frame["tags"] = out["tags"]  # assigned back to a filtered input
    assert frame["tags"].notna().all()
    empty = model.predict(None, pd.DataFrame({"title": pd.Series([], dtype=object)}))
    assert len(empty) == 0 and empty["tags"].dtype == object
    # a dict of columns of no products reaches the model as one row of empty lists
    columns = pd.DataFrame({"title": pd.Series([[]], dtype=object)})
    assert len(model.predict(None, columns)) == 0


@pytest.mark.parametrize(
    "title, kind",
    [({"k": "v"}, "dict"), (True, "bool")],
)
def test_pyfunc_refuses_a_title_that_is_no_text(title, kind) -> None:
    frame = pd.DataFrame({"title": pd.Series([title], dtype=object)})
    with pytest.raises(MlflowException, match=f"row 0: title is (a )?{kind}"):
        _stub_pyfunc().predict(None, frame)


def test_pyfunc_reads_a_number_as_a_title_and_a_describer_refuses_a_mapping_of_tags() -> None:
    from labelrec.mlflow.pyfunc_model import _describe_records

    out = _stub_pyfunc().predict(None, pd.DataFrame({"title": pd.Series([123], dtype=object)}))
    assert out["tags"][0][0]["tag"] == "Toys"
    frame = pd.DataFrame({"title": ["a"], "tags": pd.Series([{"a": "b"}], dtype=object)})
    with pytest.raises(MlflowException, match="product 0, field 'tags'"):
        _describe_records(frame)


def test_input_columns_are_text_where_a_csv_left_a_column_empty() -> None:
    from labelrec.mlflow.flavor import text_inputs

    read = pd.read_csv(io.StringIO("title,description\nLEGO police,\nHornby train,\n"))
    assert read["description"].dtype == float
    for frame in (read, read.convert_dtypes()):
        features = text_inputs(frame)
        assert features["description"].tolist() == [None, None]
        assert features["title"].tolist() == ["LEGO police", "Hornby train"]


def test_a_describers_signature_reads_a_csv_request() -> None:
    """`mlflow models serve` parses a text/csv body by the signature; `Any` fails there."""
    from mlflow.pyfunc.scoring_server import parse_csv_input

    from labelrec.mlflow.flavor import describer_signature
    from labelrec.mlflow.pyfunc_model import _describe_records

    body = io.StringIO("title,tags\nHornby train,Toys|brand:Hornby\nPlush bear,\n")
    frame = parse_csv_input(body, schema=describer_signature().inputs)
    assert [r["tags"] for r in _describe_records(frame)] == [["Toys", "brand:Hornby"], []]


def test_each_download_of_a_registered_model_runs_the_cached_graph(
    trained_model_dir: Path, mlflow_store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Downloaded into new folders, the model runs the graph exported when it was first loaded
    (logging it checks its input example): it is found by the weights, not the folder."""
    monkeypatch.setenv("LABELREC_ONNX_CACHE", str(tmp_path / "onnx"))
    with mlflow.start_run():
        lrm.log_model(trained_model_dir, name="tagger", registered_model_name="cached")
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    want = TagRecommender.load(trained_model_dir, backend="torch").suggest(ITEMS)
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        rec = lrm.load_model("models:/cached/1", dst_path=str(folder))
        assert rec.path.is_relative_to(folder)
        assert (rec.backend, rec.runner.cached) == ("onnx", True)
        got = rec.suggest(ITEMS)
        assert [[s.tag for s in row] for row in got] == [[s.tag for s in row] for row in want]
        for g, w in zip(got, want, strict=True):
            assert [s.score for s in g] == pytest.approx([s.score for s in w], abs=1e-5)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
