"""One opener for model references, shared by every front end (CLI, service, product index,
MLflow steps), the way Annif's registry resolves a project for its CLI and REST API alike.

A reference is a model directory written by ``labelrec train`` (also ``file://...`` or ``~/...``)
or an MLflow URI: ``models:/name@alias`` and ``models:/name/3`` (registry), ``runs:/<run>/<path>``,
``mlflow-artifacts:/...``, ``s3://...``. A registry alias is resolved to one version before
anything is downloaded, so the version loaded is the version reported. MLflow URIs are read from
``MLFLOW_TRACKING_URI``, else the project's embedded store; mlflow itself is only imported (through
``labelrec.mlflow``) when a reference is a URI.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelrec.errors import ModelError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
# MLflow 3's logged model (``models:/m-<id>``, what ``log_model`` returns): no registry name
_LOGGED_MODEL = re.compile(r"^models:/m-[0-9a-f]+/?$")


def in_registry(reference: str) -> bool:
    """A Model Registry reference (``models:/name/3``, ``models:/name@alias``), not a logged
    model's own ``models:/m-<id>``."""
    return reference.startswith("models:/") and not _LOGGED_MODEL.match(reference)


def is_model_uri(reference: str | Path) -> bool:
    """True for MLflow URIs (``models:/``, ``runs:/``, ``s3://``...); False for local paths,
    ``file://`` paths and Windows drives (``C:/``)."""
    text = str(reference)
    if text.startswith("file:"):
        return False
    return bool(_SCHEME.match(text))


def local_path(reference: str | Path) -> Path:
    """The local path of a directory reference (``file://`` URIs of this machine, their escapes
    read, and ``~`` expanded)."""
    text = str(reference)
    if text.startswith("file://"):
        host, slash, path = text[len("file://") :].partition("/")
        if host.lower() in ("", "localhost"):  # file:///srv/m, file://localhost/srv/m
            text = urllib.parse.unquote(slash + path)  # as Path.as_uri() and MLflow write it: %20
        elif re.fullmatch(r"[A-Za-z]:|~", host):  # file://C:/models/m, file://~/models/m
            text = urllib.parse.unquote(host + slash + path)
        else:
            raise ModelError(
                f"{reference}: a file:// URI of another machine ({host}); mount its folder and"
                " give the path"
            )
        if re.match(r"/[A-Za-z]:[/\\]", text):  # file:///C:/models/m: a Windows drive
            text = text[1:]
    return Path(text).expanduser()


_DOWNLOAD_ROOTS: list[list[Path]] = []  # innermost last: [its folder] once one is made


@contextlib.contextmanager
def downloads_in(folder: str | Path | None = None) -> Iterator[None]:
    """Models downloaded from an MLflow store meanwhile without a destination of their own go
    into ``folder`` (each in a folder of its own), which the caller removes with its work, or,
    without ``folder``, into a temporary folder made at the first download and removed at the
    end: MLflow would leave each copy in a new temporary folder that no one removes. Process
    wide: one command, step or service start at a time."""
    root: list[Path] = [Path(folder)] if folder is not None else []
    _DOWNLOAD_ROOTS.append(root)
    try:
        yield
    finally:
        _DOWNLOAD_ROOTS.remove(root)
        if folder is None and root:
            shutil.rmtree(root[0], ignore_errors=True)


def download_destination() -> str | None:
    """A new folder for one download under ``downloads_in``'s folder; None outside one."""
    if not _DOWNLOAD_ROOTS:
        return None
    root = _DOWNLOAD_ROOTS[-1]
    if not root:
        root.append(Path(tempfile.mkdtemp(prefix="labelrec-downloads-")))
    root[0].mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="model-", dir=root[0])


def fingerprint(path: str | Path) -> str:
    """A short id of a model directory's content (resolved path, file names, sizes, mtimes)."""
    real = Path(path).resolve()
    if not real.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    digest = hashlib.sha1(str(real).encode())
    for item in sorted(real.iterdir()):
        if item.is_file():
            st = item.stat()
            digest.update(f"{item.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def use_tracking_uri(reference: str = "") -> None:
    """Point MLflow at ``MLFLOW_TRACKING_URI``, else at the project's embedded store. For a
    ``reference`` read from the store (``models:/``, ``runs:/``), a local SQLite store that
    does not exist is a ``ModelError``: reading a model must not leave an empty registry behind
    (MLflow creates the database when it opens it)."""
    from labelrec.mlflow.store import point_at, resolve_tracking_uri, sqlite_path, user_given

    given = user_given()
    uri = resolve_tracking_uri()
    db = sqlite_path(uri) if reference.startswith(("models:/", "runs:/")) else None
    if db is not None and not db.is_file():
        where = (
            "MLFLOW_TRACKING_URI"
            if given
            else "MLFLOW_TRACKING_URI is unset, so labelrec reads mlruns.db here"
        )
        raise ModelError(
            f"no MLflow store at {db} ({where}); run where the store is or set MLFLOW_TRACKING_URI"
        )
    if not given:
        point_at(uri)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a reference points: the local model directory and which version it is."""

    reference: str
    path: Path  # a local directory holding the model's files
    version: str  # registry version, the URI itself for other URIs, a fingerprint for directories
    info: dict[str, Any] = field(default_factory=dict)  # kind, name, version, alias, metrics...

    @property
    def kind(self) -> str:
        """``describer`` for a description model, ``tagger`` otherwise."""
        from labelrec.describe import is_describer_dir

        return "describer" if is_describer_dir(self.path) else "tagger"


def registry_version(reference: str) -> str:
    """The version a ``models:/`` reference names now (an alias resolved), without downloading;
    for other references the same as :func:`resolve`'s ``version``, cheaply."""
    if in_registry(reference):
        use_tracking_uri(reference)
        from labelrec.mlflow.registry import model_version_info

        return str(model_version_info(reference)["version"])
    if is_model_uri(reference):
        return reference
    return fingerprint(local_path(reference))


def resolve(reference: str | Path, dst_path: str | Path | None = None) -> ResolvedModel:
    """The local directory and version of ``reference`` (MLflow URIs are downloaded, into
    ``dst_path`` when given)."""
    text = str(reference)
    if not is_model_uri(text):
        path = local_path(text)
        if not path.is_dir():
            what = "is a file, not a model directory" if path.exists() else "does not exist"
            raise ModelError(
                f"model directory {text} {what} (give a directory written by"
                " `labelrec train` or an MLflow URI such as models:/labelrec@champion)"
            )
        real = path.resolve()
        return ResolvedModel(
            text, path, fingerprint(path), {"kind": "local", "name": real.name, "path": str(real)}
        )
    use_tracking_uri(text)
    info: dict[str, Any] = {"kind": "registry", "version": text, "uri": text}
    uri = text
    if in_registry(text):
        from labelrec.mlflow.registry import model_version_info

        info.update(model_version_info(text))
        info["alias"] = text.rsplit("@", 1)[1] if "@" in text else None
        uri = f"models:/{info['name']}/{info['version']}"  # the version just resolved
    from labelrec.mlflow.flavor import download_model

    path = download_model(uri, None if dst_path is None else str(dst_path))
    return ResolvedModel(text, path, str(info["version"]), info)


def open_model(reference: str | Path | ResolvedModel, **load_kwargs: Any) -> Any:
    """The model a reference names: a ``TagRecommender``, or a ``Describer`` for a description
    model. ``load_kwargs`` go to its ``load`` (``backend``, ``batch_size``, ``generate``...)."""
    resolved = reference if isinstance(reference, ResolvedModel) else resolve(reference)
    if resolved.kind == "describer":
        from labelrec.describe import Describer

        return Describer.load(resolved.path, **load_kwargs)
    from labelrec.predict import TagRecommender

    return TagRecommender.load(resolved.path, **load_kwargs)


def open_tagger(reference: str | Path | ResolvedModel, **load_kwargs: Any) -> Any:
    """The ``TagRecommender`` a reference names; a describer is refused with a clear error."""
    resolved = reference if isinstance(reference, ResolvedModel) else resolve(reference)
    if resolved.kind == "describer":
        raise ModelError(f"{resolved.reference} is a describer, not a tagging model")
    return open_model(resolved, **load_kwargs)


def open_describer(reference: str | Path | ResolvedModel, **load_kwargs: Any) -> Any:
    """The ``Describer`` a reference names; a tagging model is refused with a clear error."""
    resolved = reference if isinstance(reference, ResolvedModel) else resolve(reference)
    if resolved.kind != "describer":
        from labelrec.modeldir import LABELREC_FILE

        if (resolved.path / LABELREC_FILE).is_file():
            raise ModelError(f"{resolved.reference} is a tagging model, not a describer")
        from labelrec.describe import Describer

        Describer.load(resolved.path)  # says what a describer directory holds and how to train one
    return open_model(resolved, **load_kwargs)
