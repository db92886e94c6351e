"""One opener for model references: directories and MLflow URIs, for every front end."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from labelrec.cli import main
from labelrec.model import ModelError
from labelrec.opener import (
    fingerprint,
    is_model_uri,
    open_describer,
    open_tagger,
    registry_version,
    resolve,
)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("models:/labelrec@champion", True),
        ("models:/labelrec/3", True),
        ("runs:/0123abcd/model", True),
        ("mlflow-artifacts:/1/abc/artifacts/model", True),
        ("s3://bucket/model", True),
        ("runs/uk", False),
        ("/abs/path", False),
        ("file:///abs/path", False),
        ("C:/models/uk", False),
        ("~/models/uk", False),
    ],
)
def test_uris_are_told_from_paths(reference: str, expected: bool) -> None:
    assert is_model_uri(reference) is expected


def test_a_directory_resolves_to_itself_with_a_content_fingerprint(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(trained_model_dir, tmp_path / "m")
    resolved = resolve(f"file://{copy}")
    assert resolved.path == copy and resolved.kind == "tagger"
    assert resolved.info["kind"] == "local" and resolved.info["name"] == "m"
    assert resolved.version == fingerprint(copy) == registry_version(str(copy))
    before = resolved.version
    (copy / "thresholds.json").write_text(
        (copy / "thresholds.json").read_text(encoding="utf-8") + "\n", encoding="utf-8"
    )
    assert fingerprint(copy) != before  # a rewritten file is a new version
    rec = open_tagger(copy, batch_size=3)
    assert rec.batch_size == 3 and len(rec.vocab) > 0


def test_bad_references_name_what_is_wrong(trained_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing does not exist .*models:/labelrec@champion"):
        resolve(tmp_path / "missing")
    with pytest.raises(ModelError, match="is a tagging model, not a describer"):
        open_describer(trained_model_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty is not a describer directory .*describe\.yaml"):
        open_describer(tmp_path / "empty")
    (tmp_path / "products.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(ModelError, match="products.jsonl is a file, not a model directory"):
        open_describer(tmp_path / "products.jsonl")


def test_every_verb_takes_a_registry_uri(
    registry: Path,
    trained_model_dir: Path,
    toy_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import mlflow

    from labelrec.mlflow.registry import register_challenger

    version = register_challenger(trained_model_dir)
    mlflow.MlflowClient().set_registered_model_alias("labelrec", "champion", version.version)
    resolved = resolve("models:/labelrec@champion")
    assert resolved.version == str(version.version) == registry_version("models:/labelrec@champion")
    assert resolved.info["alias"] == "champion" and resolved.info["name"] == "labelrec"
    assert (resolved.path / "labelrec.json").is_file()

    def suggest(reference: str) -> str:
        monkeypatch.setattr(sys, "stdin", io.StringIO("LEGO city\nplush bear\n"))
        assert main(["suggest", reference, "--limit", "3", "--threshold", "0"]) == 0
        return capsys.readouterr().out

    local = suggest(str(trained_model_dir))
    from labelrec.mlflow import flavor

    download, destinations = flavor._download_artifact_from_uri, []

    def recorded(artifact_uri: str, output_path: str | None = None) -> str:
        destinations.append(output_path)
        return download(artifact_uri=artifact_uri, output_path=output_path)

    with monkeypatch.context() as patch:
        patch.setattr(flavor, "_download_artifact_from_uri", recorded)
        assert suggest("models:/labelrec@champion") == local
        assert suggest(f"runs:/{version.run_id}/model") == local
    # a registered model in the local store is read in place; what MLflow copies (runs:/, a
    # remote store) is copied for the command only, not left in the temporary folder
    assert destinations[0] is None and destinations[1] is not None
    assert not Path(destinations[1]).exists()
    assert suggest(f"models:/labelrec/{version.version}") == local
    assert suggest(f"runs:/{version.run_id}/model") == local
    from labelrec.mlflow import log_model

    with mlflow.start_run():  # MLflow 3: the logged model's own URI, as log_model returns it
        logged = log_model(trained_model_dir).model_uri
    assert logged.startswith("models:/m-") and suggest(logged) == local
    assert registry_version(logged) == logged

    metrics = registry / "metrics.json"
    args = ["eval", "models:/labelrec@champion", "--data", str(toy_data_dir / "valid.jsonl")]
    assert main([*args, "--metrics-file", str(metrics)]) == 0
    assert 0.0 <= json.loads(metrics.read_text(encoding="utf-8"))["P@1"] <= 1.0
    output = registry / "tagged.jsonl"
    args = ["index", "models:/labelrec@champion", "--data", str(toy_data_dir / "valid.jsonl")]
    assert main([*args, "--output", str(output), "--no-progress"]) == 0
    assert output.read_text(encoding="utf-8").count("\n") > 0
    capsys.readouterr()

    assert main(["suggest", "models:/labelrec@nobody"]) == 2
    err = capsys.readouterr().err
    assert "labelrec suggest: error:" in err and "Traceback" not in err


def test_model_data_outside_the_logged_model_is_refused(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    from labelrec.mlflow import flavor

    out = tmp_path / "logged"
    flavor.save_model(trained_model_dir, out)
    mlmodel = out / "MLmodel"
    text = mlmodel.read_text(encoding="utf-8")
    assert "model_data: artifacts/" in text
    mlmodel.write_text(text.replace("model_data: artifacts/", "model_data: ../"), "utf-8")
    with pytest.raises(ModelError, match="is not a folder of the model"):
        flavor.download_model(str(out))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ModuleNotFoundError("No module named 'botocore'", name="botocore"),
         "s3://bucket/x cannot be downloaded: botocore is not installed (pip install boto3)"),
        (ModuleNotFoundError("No module named 'google.cloud'", name="google.cloud"),
         "cannot be downloaded: google.cloud is not installed (pip install google-cloud-storage)"),
        (ImportError("cannot import name 'x' from 'y'"),
         "s3://bucket/x cannot be downloaded: cannot import name 'x' from 'y'"),
    ],
)  # fmt: skip
def test_an_artifact_store_without_its_client_is_a_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: ImportError, message: str
) -> None:
    from labelrec.mlflow import flavor

    def download(**_: object) -> str:
        raise error

    monkeypatch.setattr(flavor, "_download_artifact_from_uri", download)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    with pytest.raises(ModelError, match=re.escape(message)):
        resolve("s3://bucket/x")


def test_a_file_uri_with_a_windows_drive_keeps_the_drive() -> None:
    from labelrec.opener import local_path

    assert str(local_path("file:///C:/models/uk")).startswith("C:")
    assert local_path("file:///srv/models/uk") == Path("/srv/models/uk")
    # as Path.as_uri() and MLflow write them: escapes read, this machine by name
    assert local_path(Path("/srv/my models/uk").as_uri()) == Path("/srv/my models/uk")
    assert local_path("file://localhost/srv/models/uk") == Path("/srv/models/uk")
    assert local_path("file://LOCALHOST/srv/models/uk") == Path("/srv/models/uk")
    assert str(local_path("file://C:/models/uk")).startswith("C:")
    assert local_path("file://~/models/uk") == Path("~/models/uk").expanduser()
    with pytest.raises(ModelError, match="a file:// URI of another machine \\(server\\)"):
        local_path("file://server/share/uk")


def test_a_model_published_while_it_loads_is_read_whole(
    trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training that replaces the model's files while a reader loads them (``labelrec.json``
    first gone, the new one last): the reader reads again and gets the new model, not the old
    ``labelrec.json`` with the new thresholds and weights."""
    import labelrec.predict as predict_mod
    from labelrec.modeldir import LABELREC_FILE, publish_staged
    from labelrec.predict import TagRecommender

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    new = tmp_path / "new"
    shutil.copytree(trained_model_dir, new)
    info = json.loads((new / LABELREC_FILE).read_text(encoding="utf-8"))
    info["save_id"] = "the-new-one"
    (new / LABELREC_FILE).unlink()
    (new / f"{LABELREC_FILE}.pending").write_text(json.dumps(info), encoding="utf-8")
    thresholds = json.loads((new / "thresholds.json").read_text(encoding="utf-8"))
    thresholds["global"] = 0.123
    (new / "thresholds.json").write_text(json.dumps(thresholds), encoding="utf-8")

    real, calls = predict_mod.load_thresholds, []

    def published_meanwhile(path, n_tags):
        calls.append(path)
        if len(calls) == 1:  # the old labelrec.json and weights are read by now
            publish_staged(new, model, info_file=f"{LABELREC_FILE}.pending")
        return real(path, n_tags)

    monkeypatch.setattr(predict_mod, "load_thresholds", published_meanwhile)
    monkeypatch.setattr("labelrec.modeldir.time.sleep", lambda seconds: None)
    rec = TagRecommender.load(model, backend="torch")
    assert len(calls) == 2
    assert (rec.info["save_id"], rec.global_threshold) == ("the-new-one", 0.123)


def test_load_whole_gives_up_on_a_model_that_keeps_changing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelrec.modeldir import load_whole

    monkeypatch.setattr("labelrec.modeldir.time.sleep", lambda seconds: None)
    info = tmp_path / "labelrec.json"
    info.write_text("{}", encoding="utf-8")

    written: list[int] = []

    def rewritten() -> str:
        written.append(1)
        replacement = tmp_path / "next.json"
        replacement.write_text("{}" + " " * len(written), encoding="utf-8")
        replacement.replace(info)  # another file under the name each time, as a publish does
        return "read"

    with pytest.raises(ModelError, match="changed while it was loading, 3 times"):
        load_whole(tmp_path, "labelrec.json", rewritten, attempts=3)

    def broken() -> str:
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):  # not changing: fails at once
        load_whole(tmp_path, "labelrec.json", broken)
    assert load_whole(tmp_path, "labelrec.json", lambda: "read") == "read"


def test_a_publish_killed_halfway_is_finished_by_the_next_reader(
    trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training killed while its new model's files replace the old ones (labelrec.json gone,
    some files moved): the next load finishes the move and reads the new model."""
    import os

    from labelrec import modeldir
    from labelrec.modeldir import LABELREC_FILE, SAVING_DIR, publish_staged
    from labelrec.predict import TagRecommender

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    stage = model / SAVING_DIR
    shutil.copytree(trained_model_dir, stage)
    info = json.loads((stage / LABELREC_FILE).read_text(encoding="utf-8"))
    info["save_id"] = "the-new-one"
    (stage / LABELREC_FILE).unlink()
    (stage / f"{LABELREC_FILE}.pending").write_text(json.dumps(info), encoding="utf-8")
    real, moves = os.replace, []

    def killed_after_three(src, dst):
        moves.append(dst)
        if len(moves) > 4:  # the marker's own rename, then three files of the model
            raise SystemExit("killed")
        return real(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(modeldir.os, "replace", killed_after_three)
        with pytest.raises(SystemExit):
            publish_staged(stage, model, info_file=f"{LABELREC_FILE}.pending")
    assert not (model / LABELREC_FILE).exists() and any(stage.iterdir())
    with monkeypatch.context() as patch:  # another process of a distributed launch: not its job
        patch.setenv("RANK", "1")
        assert modeldir.finish_publish(model) is False and any(stage.iterdir())
    rec = TagRecommender.load(model, backend="torch")
    assert rec.info["save_id"] == "the-new-one"
    assert not stage.exists()
