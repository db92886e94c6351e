"""Product indexes in MLflow: logged with the model version they were built from.

``log_index(index_dir, "models:/labelrec@champion")`` uploads an index directory written by
``labelrec product-index`` as the artifacts ``index/<digest>/`` of the run that produced that
model version (a folder of its own for each index: artifacts are added, never removed, so an
index logged again must not land among the files of the one before), and tags the version with
``labelrec.index`` (the artifact URI) and ``labelrec.index.products``.
``index_uri(model_uri)`` reads the tag back; ``download_index`` fetches the directory, which is
how the BentoML service finds the index that belongs to the champion it serves.

For a model that is not registered the index goes to the run given by ``run_id``, else to the
run that logged it (a logged model's ``models:/m-<id>``), else to a new run of the ``labelrec``
experiment (a local directory, a run's model).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import mlflow

from labelrec.mlflow.registry import RegistryError, model_version_info
from labelrec.opener import in_registry

INDEX_TAG = "labelrec.index"
INDEX_ARTIFACT_PATH = "index"


def _manifest(index_dir: Path) -> dict[str, Any]:
    path = index_dir / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{index_dir} is not a product index (no manifest.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def index_digest(index_dir: Path) -> str:
    """A short digest of the index's files (names and contents): its artifact folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in index_dir.rglob("*") if p.is_file()):
        digest.update(f"\0{path.relative_to(index_dir).as_posix()}\0".encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def log_index(
    index_dir: str | Path,
    model_uri: str | None = None,
    run_id: str | None = None,
    experiment: str = "labelrec",
) -> dict[str, Any]:
    """Log ``index_dir`` with the model it came from; returns where it went.

    ``model_uri`` ``models:/name/version`` or ``models:/name@alias``: artifacts of that
    version's run and a ``labelrec.index`` tag on the version. Otherwise ``run_id`` (else the
    run that logged the model ``models:/m-<id>``, else a new run) gets the artifacts and the
    model source as a tag.
    """
    index_dir = Path(index_dir)
    manifest = _manifest(index_dir)
    client = mlflow.MlflowClient()
    version = None
    if model_uri and in_registry(model_uri):
        info = model_version_info(model_uri)
        if not info.get("run_id"):
            raise RegistryError(f"{model_uri}: the model version has no run to log the index to")
        run_id, version = info["run_id"], info
    elif model_uri and model_uri.startswith("models:/") and run_id is None:
        run_id = mlflow.get_logged_model(model_uri[len("models:/") :].strip("/")).source_run_id
    if run_id is None:
        experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if not experiment_id:
            experiment_id = mlflow.set_experiment(experiment).experiment_id
        run = client.create_run(experiment_id, run_name="product-index")
        run_id = run.info.run_id
        client.set_terminated(run_id)
    artifact_path = f"{INDEX_ARTIFACT_PATH}/{index_digest(index_dir)}"
    client.log_artifacts(run_id, str(index_dir), artifact_path)
    uri = f"runs:/{run_id}/{artifact_path}"
    n_products = str(manifest.get("n_products", ""))
    client.set_tag(run_id, INDEX_TAG, uri)
    client.set_tag(run_id, f"{INDEX_TAG}.model", str(model_uri or manifest.get("model") or ""))
    client.set_tag(run_id, f"{INDEX_TAG}.products", n_products)
    if version is not None:
        name, number = version["name"], str(version["version"])
        client.set_model_version_tag(name, number, INDEX_TAG, uri)
        client.set_model_version_tag(name, number, f"{INDEX_TAG}.products", n_products)
    return {
        "run_id": run_id,
        "artifact_uri": uri,
        "model_version": None if version is None else int(version["version"]),
        "n_products": manifest.get("n_products"),
    }


def index_uri(model_uri: str) -> str | None:
    """The index logged with a registered model version (``models:/name...``), or None."""
    if not in_registry(model_uri):
        return None
    return (model_version_info(model_uri).get("tags") or {}).get(INDEX_TAG) or None


def download_index(model_uri: str, dst_path: str | Path | None = None) -> Path | None:
    """Download the index logged with a registered model version; None when it has none."""
    uri = index_uri(model_uri)
    if uri is None:
        return None
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=None if dst_path is None else str(dst_path)
    )
    path = Path(local)
    _manifest(path)
    return path
