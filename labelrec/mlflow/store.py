"""Where runs and models live: ``MLFLOW_TRACKING_URI``, else an embedded store under the project.

Without configuration labelrec uses a SQLite database and an artifact folder in the working
directory (``sqlite:///mlruns.db`` and ``./mlartifacts``), so the Model Registry works on a fresh
clone with no server. ``MLFLOW_TRACKING_URI`` points it anywhere else (an MLflow server,
Databricks, another database). For a local SQLite store the ``labelrec`` experiment keeps its
artifacts in ``mlartifacts/`` next to the database file.

``python -m labelrec.mlflow.store`` prepares the store and prints the URI and the command that opens
the MLflow UI on it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

DEFAULT_DB = "mlruns.db"
DEFAULT_ARTIFACTS = "mlartifacts"
DEFAULT_EXPERIMENT = "labelrec"


def default_tracking_uri(root: str | Path | None = None) -> str:
    """``sqlite:///<root>/mlruns.db`` (absolute; ``root`` defaults to the working directory).
    A ``%`` or ``?`` in the path is escaped: SQLAlchemy reads a URL, where they are syntax.
    (MLflow 3.17 also makes an empty folder named as the escaped path's parent.)"""
    base = Path(root) if root is not None else Path.cwd()
    path = (base / DEFAULT_DB).resolve().as_posix()
    return "sqlite:///" + path.replace("%", "%25").replace("?", "%3F")


# What this process last put into MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID itself (and the
# store of that experiment): not a user's choice, so a later call in another working directory
# finds the store there.
_OWN: dict[str, str] = {}


def point_at(uri: str) -> None:
    """Set ``MLFLOW_TRACKING_URI`` (for MLflow and child processes) to labelrec's resolved URI.
    An experiment id labelrec set for the store it left is dropped with it."""
    if uri != _OWN.get("MLFLOW_TRACKING_URI") and _own("MLFLOW_EXPERIMENT_ID"):
        del os.environ["MLFLOW_EXPERIMENT_ID"]
    os.environ["MLFLOW_TRACKING_URI"] = _OWN["MLFLOW_TRACKING_URI"] = uri


def _own(name: str) -> bool:
    """Whether the environment variable ``name`` holds what labelrec set it to."""
    value = os.environ.get(name)
    return value is not None and value == _OWN.get(name)


def user_given() -> bool:
    """Whether the user chose the store: ``mlflow.set_tracking_uri``, or a
    ``MLFLOW_TRACKING_URI`` that labelrec did not set itself."""
    from mlflow.tracking._tracking_service import utils

    if getattr(utils, "_tracking_uri", None) is not None:
        return True
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) and not _own("MLFLOW_TRACKING_URI")


def resolve_tracking_uri(root: str | Path | None = None) -> str:
    """The URI the user pointed MLflow at (``MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``),
    else the embedded default (of ``root``, else of the working directory as it is now)."""
    if user_given():
        return mlflow.get_tracking_uri()
    return default_tracking_uri(root)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :])
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def artifact_root_for(uri: str) -> str | None:
    """``file://.../mlartifacts`` next to a local SQLite database; None for other stores."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()


@dataclass
class StoreInfo:
    """The store a process logs to."""

    tracking_uri: str
    registry_uri: str
    experiment_id: str | None
    experiment_name: str | None
    artifact_location: str | None


def ensure_experiment(name: str, tracking_uri: str | None = None) -> tuple[str, str | None]:
    """Id and artifact location of experiment ``name``, created when missing.

    A new experiment in a local SQLite store puts its artifacts in ``mlartifacts/`` beside the
    database (MLflow's own default would be ``./mlruns`` of whatever directory is current).
    """
    uri = tracking_uri or mlflow.get_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_root_for(uri)
        if location is not None:
            folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "experiment"
            location = f"{location}/{folder}"
        try:
            experiment_id = client.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            # Another process created it in between.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id, experiment.artifact_location
        experiment = client.get_experiment(experiment_id)
    return experiment.experiment_id, experiment.artifact_location


def _has_experiment(client: MlflowClient, experiment_id: str) -> bool:
    try:
        client.get_experiment(experiment_id)
    except MlflowException:
        return False
    return True


def configure(experiment: str | None = None, root: str | Path | None = None) -> StoreInfo:
    """Point this process (and its child processes) at the resolved store and experiment.

    Works through environment variables, as ``mlflow run`` does: ``MLFLOW_TRACKING_URI`` is set
    to the embedded default when no URI is configured, ``MLFLOW_EXPERIMENT_ID`` to ``experiment``
    (else ``MLFLOW_EXPERIMENT_NAME``, else ``labelrec``), created if needed. Inside ``mlflow run``
    (``MLFLOW_EXPERIMENT_ID`` already set) the experiment chosen by ``mlflow run`` is kept.
    """
    uri = resolve_tracking_uri(root)
    if mlflow.get_tracking_uri() != uri:
        point_at(uri)
    client = MlflowClient(tracking_uri=uri)
    if (
        _own("MLFLOW_EXPERIMENT_ID")
        and _OWN.get("experiment_store") != uri
        and not _has_experiment(client, os.environ["MLFLOW_EXPERIMENT_ID"])
    ):  # set by labelrec for another store (the user then chose this one), and not here
        del os.environ["MLFLOW_EXPERIMENT_ID"]
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if experiment_id and experiment is None:
        found = client.get_experiment(experiment_id)
        name, location = found.name, found.artifact_location
    else:
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment_id, location = ensure_experiment(name, uri)
        os.environ["MLFLOW_EXPERIMENT_ID"] = _OWN["MLFLOW_EXPERIMENT_ID"] = experiment_id
        _OWN["experiment_store"] = uri
        if os.environ.get("MLFLOW_EXPERIMENT_NAME") not in (None, name):
            del os.environ["MLFLOW_EXPERIMENT_NAME"]  # would contradict the id
    return StoreInfo(uri, mlflow.get_registry_uri(), experiment_id, name, location)


def ui_command(uri: str) -> str:
    """The shell command that opens the MLflow UI on ``uri``."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)} --port 5000"


def model_versions(client: MlflowClient, name: str) -> list:
    """Every version of the registered model ``name`` (none: an empty list); the name is
    quoted for MLflow's filter, a name with ``'`` in double quotes. A name with both quote
    marks, which the filter cannot write, is a ValueError."""
    quote = '"' if "'" in name else "'"
    if quote in name:
        raise ValueError(f"{name!r}: MLflow's search cannot name a model with both ' and \"")
    return list(client.search_model_versions(f"name = {quote}{name}{quote}"))


def registry_state(name: str) -> list[dict[str, object]]:
    """Versions of registered model ``name``, newest first: version, aliases, run, decision."""
    client = MlflowClient()
    versions = model_versions(client, name)
    aliases: dict[str, list[str]] = {}
    try:
        for alias, version in (client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
    except mlflow.exceptions.MlflowException:
        return []
    rows = []
    for mv in sorted(versions, key=lambda v: -int(v.version)):
        tags = mv.tags or {}
        rows.append(
            {
                "version": int(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "run_id": mv.run_id,
                "decision": tags.get("promotion.decision", "-"),
                "reason": tags.get("promotion.reason", ""),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Create the experiment in the resolved store; print the URI and the UI command."""
    parser = argparse.ArgumentParser(
        prog="python -m labelrec.mlflow.store", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--experiment", default=None, help="experiment to create (labelrec)")
    parser.add_argument("--model", default=None, help="also list this registered model")
    args = parser.parse_args(argv)
    info = configure(args.experiment)
    print(f"tracking URI: {info.tracking_uri}")
    print(f"experiment:   {info.experiment_name} (id {info.experiment_id})")
    print(f"artifacts:    {info.artifact_location}")
    if args.model:
        rows = registry_state(args.model)
        if not rows:
            print(f"model:        {args.model}: not registered")
        for row in rows:
            aliases = " ".join(f"@{a}" for a in row["aliases"]) or "-"
            print(
                f"model:        {args.model} version {row['version']} {aliases}"
                f" (promotion: {row['decision']}) {row['reason']}".rstrip()
            )
    print(f"MLflow UI:    {ui_command(info.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
