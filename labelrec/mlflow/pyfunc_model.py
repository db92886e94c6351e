"""The pyfunc of a labelrec model, logged as MLflow models-from-code (no pickled Python objects).

MLflow copies this file into the model and runs it at load time; ``load_context`` reads the model
directory saved as the artifact ``model_dir`` (merged safetensors, tokenizer, tags, thresholds).

Input: a DataFrame with ``title`` (string) and optional ``description`` (string). Params: ``limit``
(tags per product, default 10) and ``threshold`` (a global score cut-off; null or absent = the
per-tag thresholds tuned on valid; 0 = the top ``limit`` tags whatever their scores). Output: a
DataFrame with one column ``tags``: per product a list of ``{"tag", "score", "known"}``, best
first (``known`` false: a tag outside the vocabulary, from the span tagger or the generator).

A describer (``kind: describer``) reads ``title`` and optional ``tags`` (a list of strings per
product) and returns one column ``description``. Params: its decoding settings ``num_beams``,
``max_new_tokens``, ``min_new_tokens``, ``length_penalty``, ``repetition_penalty``,
``no_repeat_ngram_size`` (null or absent = those it was trained with).
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

MODEL_ARTIFACT = "model_dir"


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _frame(model_input: Any) -> pd.DataFrame:
    """A DataFrame from a DataFrame, one product dict, a dict of columns, or a list of products."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        one = isinstance(model_input.get("title"), str)
        return pd.DataFrame([model_input] if one else model_input)
    if isinstance(model_input, (list, tuple)):
        return pd.DataFrame([{"title": x} if isinstance(x, str) else x for x in model_input])
    raise TypeError(f"expected a DataFrame with a 'title' column, got {type(model_input).__name__}")


def _records(model_input: Any) -> list[dict[str, str]]:
    """Products as ``{"title", "description"}`` dicts; missing descriptions are empty."""
    frame = _frame(model_input)
    if "title" not in frame.columns:
        raise ValueError(f"input has no 'title' column (columns: {list(frame.columns)})")
    titles = frame["title"].tolist()
    if "description" in frame.columns:
        descriptions = frame["description"].tolist()
    else:
        descriptions = [""] * len(titles)
    return [
        {"title": _text(t), "description": _text(d)}
        for t, d in zip(titles, descriptions, strict=True)
    ]


def _describe_records(model_input: Any) -> list[dict[str, Any]]:
    """Products as ``{"title", "tags"}`` dicts; missing tags are empty lists."""
    frame = _frame(model_input)
    if "title" not in frame.columns:
        raise ValueError(f"input has no 'title' column (columns: {list(frame.columns)})")
    tags = frame["tags"].tolist() if "tags" in frame.columns else [None] * len(frame)
    return [
        {"title": _text(t), "tags": [] if g is None or isinstance(g, float) else list(g)}
        for t, g in zip(frame["title"].tolist(), tags, strict=True)
    ]


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
            from labelrec.describe import DECODING

            decoding = {k: None if _text(v) == "" else v for k, v in params.items()}
            describer = self.describer.with_decoding(
                **{k: v for k, v in decoding.items() if k in DECODING}
            )
            texts = describer.describe(_describe_records(model_input))
            return pd.DataFrame({"description": texts})
        limit = params.get("limit")
        limit = 10 if limit is None else int(limit)
        threshold = params.get("threshold")
        threshold = None if threshold is None else float(threshold)
        if threshold is not None and math.isnan(threshold):
            threshold = None
        items = _records(model_input)
        ranked = self.recommender.suggest(items, limit=limit, threshold=threshold)
        return pd.DataFrame(
            {
                "tags": [
                    [{"tag": s.tag, "score": float(s.score), "known": bool(s.known)} for s in row]
                    for row in ranked
                ]
            }
        )


mlflow.models.set_model(LabelrecPyfunc())
