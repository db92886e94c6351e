"""labelrec as an MLflow plugin: the ``labelrec`` flavor, the evaluator, the registry gate.

The one package of labelrec that imports mlflow. ``save_model``, ``log_model`` and ``load_model``
(the flavor, like ``mlflow.sentence_transformers``) load lazily, so the lighter submodules
(``store``, ``tracking``) do not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model", "log_model", "save_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from labelrec.mlflow import flavor

        return getattr(flavor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
