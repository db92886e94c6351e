"""MLflow store helpers for the tests: a SQLite store under tmp_path, fast.

Creating MLflow's tables (Alembic migrations) takes seconds; ``fresh_db`` copies a database
migrated once per test session instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

_TEMPLATE: dict[str, Path] = {}
MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)


def fresh_db(path: Path, factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite database at ``path``."""
    if "db" not in _TEMPLATE:
        from mlflow.store.model_registry.sqlalchemy_store import (
            SqlAlchemyStore as RegistryStore,
        )
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        folder = factory.mktemp("mlflow-template")
        uri = f"sqlite:///{folder / 'template.db'}"
        SqlAlchemyStore(uri, str(folder / "artifacts"))
        RegistryStore(uri)
        _TEMPLATE["db"] = folder / "template.db"
    shutil.copyfile(_TEMPLATE["db"], path)
    return path


def restore_after(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = MLFLOW_ENV) -> None:
    """``monkeypatch`` puts ``names`` back as they are now when it is undone, also those set
    meanwhile straight in ``os.environ`` (labelrec's store sets them so), which its ``delenv``
    of an absent variable would not record."""
    for name in names:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)


def use_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: pytest.TempPathFactory):
    """Point MLflow (through the environment, undone after the test) at a new store in tmp_path.

    Returns ``labelrec.mlflow.store.configure()``'s StoreInfo (experiment ``labelrec`` with its
    artifacts in ``tmp_path/mlartifacts``).
    """
    from labelrec.mlflow import store

    restore_after(monkeypatch)
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    db = fresh_db(tmp_path / "mlruns.db", factory)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    return store.configure()
