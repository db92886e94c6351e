"""The pyfunc of a labelrec model, logged as MLflow models-from-code (no pickled Python objects).

MLflow copies this file into the model and runs it at load time; ``load_context`` reads the model
directory saved as the artifact ``model_dir`` (merged safetensors, tokenizer, tags, thresholds).

Input: a DataFrame with ``title`` (string) and optional ``description`` (string). Params: ``limit``
(tags per product, default 10) and ``threshold`` (a global score cut-off; null or absent = the
per-tag thresholds tuned in training; 0 = the top ``limit`` tags whatever their scores). Output: a
DataFrame with one column ``tags``: per product a list of ``{"tag", "score", "known"}``, best
first (``known`` false: a tag outside the vocabulary, from the span tagger or the generator); a
product with neither title nor description text gets an empty list. A bad param value (``limit``
< 1, ``threshold`` outside [0, 1]) raises an ``MlflowException`` that names it (400 over REST).

A describer (``kind: describer``) reads ``title`` and optional ``tags`` (a list of strings per
product, or one string with ``|`` between tags; NaN or null: none) and returns one column
``description``. Params: its decoding settings ``num_beams``,
``max_new_tokens``, ``min_new_tokens``, ``length_penalty``, ``repetition_penalty``,
``no_repeat_ngram_size`` (null or absent = those it was trained with).
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from labelrec.data import is_missing, split_tag_string

MODEL_ARTIFACT = "model_dir"


def _listlike(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray, pd.Series))


def _text(value: Any, row: int = 0, column: str = "title") -> str:
    if is_missing(value):  # None, NaN, or pandas' NA in a nullable string column
        return ""
    if _listlike(value):
        raise _invalid(f"row {row}: {column} is a list, not a string")
    if isinstance(value, bool) or not isinstance(value, (str, int, float, np.number)):
        kind = type(value).__name__  # a JSON object or true/false in a cell is no text
        raise _invalid(f"row {row}: {column} is a {kind}, not a string")
    return str(value)  # a number as a title (a model number) is its text


def _invalid(message: str) -> MlflowException:
    """What a bad input or param raises: the scoring server answers it 400 with ``message``."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _frame(model_input: Any) -> pd.DataFrame:
    """A DataFrame from a DataFrame, one product dict, a dict of columns, or a list of products.

    MLflow's schema enforcement turns a dict of columns (``{"title": [...], ...}``) into one row
    whose cells are the lists; such a row is spread back into one row per product.
    """
    if isinstance(model_input, dict):
        one = isinstance(model_input.get("title"), str)
        model_input = pd.DataFrame([model_input] if one else model_input)
    elif isinstance(model_input, (list, tuple)):
        model_input = pd.DataFrame([{"title": x} if isinstance(x, str) else x for x in model_input])
    if not isinstance(model_input, pd.DataFrame):
        kind = type(model_input).__name__
        raise TypeError(f"expected a DataFrame with a 'title' column, got {kind}")
    frame = model_input
    if len(frame) == 1 and "title" in frame.columns and _listlike(frame["title"].iloc[0]):
        columns = {c: frame[c].iloc[0] for c in frame.columns}
        n = len(columns["title"])  # 0: a batch of no products ({"inputs": {"title": []}})
        for c, cells in columns.items():
            if c != "title" and _listlike(cells) and len(cells) != n:
                raise _invalid(f"column {c!r} has {len(cells)} values for {n} titles")
        frame = pd.DataFrame({c: list(v) if _listlike(v) else [v] * n for c, v in columns.items()})
    return frame


def _records(frame: pd.DataFrame) -> list[dict[str, str]]:
    """Products of ``_frame``'s frame as ``{"title", "description"}`` dicts; missing
    descriptions are empty."""
    if "title" not in frame.columns:
        raise ValueError(f"input has no 'title' column (columns: {list(frame.columns)})")
    titles = frame["title"].tolist()
    if "description" in frame.columns:
        descriptions = frame["description"].tolist()
    else:
        descriptions = [""] * len(titles)
    return [
        {"title": _text(t, i), "description": _text(d, i, "description")}
        for i, (t, d) in enumerate(zip(titles, descriptions, strict=True))
    ]


def _describe_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Products of ``_frame``'s frame as ``{"title", "tags"}`` dicts; missing tags are empty
    lists."""
    if "title" not in frame.columns:
        raise ValueError(f"input has no 'title' column (columns: {list(frame.columns)})")
    tags = frame["tags"].tolist() if "tags" in frame.columns else [None] * len(frame)
    records = []
    for i, (title, given) in enumerate(zip(frame["title"].tolist(), tags, strict=True)):
        if is_missing(given):  # absent, or NaN / NA where other rows have tags
            given = []
        elif isinstance(given, str):  # "Toys > Trains|color:Red", as catalogs write tags
            given = split_tag_string(given)
        elif (
            isinstance(given, (dict, set))  # a mapping's keys or a set's order are no tag list
            or not hasattr(given, "__iter__")
            or not all(isinstance(t, str) for t in given)
        ):
            raise _invalid(
                f"product {i}, field 'tags': expected a list of strings or one string with '|'"
                " between tags"
            )
        records.append({"title": _text(title, i), "tags": list(given)})
    return records


def _limit(params: dict[str, Any]) -> int:
    value = params.get("limit")
    limit = 10 if value is None else int(value)
    if limit < 1:
        raise _invalid(f"param limit must be >= 1, got {value!r}")
    return limit


def _threshold(params: dict[str, Any]) -> float | None:
    value = params.get("threshold")
    if value is None:
        return None
    threshold = float(value)
    if math.isnan(threshold):
        return None
    if not 0.0 <= threshold <= 1.0:
        raise _invalid(f"param threshold must be between 0 and 1 (or null), got {value!r}")
    return threshold


class LabelrecPyfunc(PythonModel):
    """Ranked tags with scores for each product of a DataFrame."""

    def load_context(self, context: Any) -> None:
        from labelrec.describe import Describer, is_describer_dir
        from labelrec.predict import TagRecommender

        path = context.artifacts[MODEL_ARTIFACT]
        self.describer = Describer.load(path) if is_describer_dir(path) else None
        if self.describer is None:
            self.recommender = TagRecommender.load(path)

    # model_input is typed pd.DataFrame, a hint MLflow leaves alone: the signature is explicit
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """A DataFrame with a ``tags`` column: lists of ``{"tag", "score", "known"}``, best
        first (a describer: a ``description`` column)."""
        params = params or {}
        if self.describer is not None:
            from labelrec.describe import DECODING, named_as
            from labelrec.errors import ModelError

            decoding = {k: None if _text(v) == "" else v for k, v in params.items()}
            try:
                describer = self.describer.with_decoding(
                    **{k: v for k, v in decoding.items() if k in DECODING}
                )
            except (ValueError, ModelError) as err:  # a bad value; lengths past the context
                raise _invalid(f"param {named_as(err, str)}") from None
            frame = _frame(model_input)
            try:
                texts = describer.describe(_describe_records(frame))
            except ValueError as err:  # a product's field, named (a 400 over REST)
                raise _invalid(str(err)) from None
            # the input's index, so that the answer can be assigned back to the input
            return pd.DataFrame({"description": pd.Series(texts, dtype=object, index=frame.index)})
        limit, threshold = _limit(params), _threshold(params)
        frame = _frame(model_input)
        # a product without text gets no tags (TagRecommender.suggest)
        ranked = self.recommender.suggest(_records(frame), limit=limit, threshold=threshold)
        rows = [
            [{"tag": s.tag, "score": float(s.score), "known": bool(s.known)} for s in row]
            for row in ranked
        ]  # object dtype also without rows
        return pd.DataFrame({"tags": pd.Series(rows, dtype=object, index=frame.index)})


mlflow.models.set_model(LabelrecPyfunc())
