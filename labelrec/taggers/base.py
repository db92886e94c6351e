"""The interface every tagger of the fusion implements: fit, score, save, load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from labelrec.data import Product, TagVocab
from labelrec.errors import ModelError


@dataclass
class Evidence:
    """A tagger's scores for a list of products."""

    known: np.ndarray  # scores in [0, 1] of the vocabulary's tags, (n_products, n_tags)
    new: list[dict[str, float]]  # per product: tags outside the vocabulary -> score in [0, 1]

    @classmethod
    def empty(cls, n_products: int, n_tags: int) -> Evidence:
        """No evidence: zero scores, no new tags."""
        zeros = np.zeros((n_products, n_tags), dtype=np.float32)
        return cls(zeros, [{} for _ in range(n_products)])


@dataclass
class TrainingSet:
    """What a tagger is fitted on."""

    products: list[Product]
    labels: sp.csr_matrix  # (n_products, n_tags) 0/1 over ``vocab``
    vocab: TagVocab
    # the trained neural tagger's pooled text vectors of ``products`` (embedding neighbours)
    embeddings: np.ndarray | None = None
    seed: int = 42
    progress: bool = False


@runtime_checkable
class Tagger(Protocol):
    """One voter of the fusion (``labelrec.fusion``).

    ``fit`` returns None when the configuration leaves the tagger out. ``score`` gets the
    products and, for taggers with ``needs_embeddings``, the neural tagger's pooled vectors of
    them. ``save`` writes the files that ``labelrec.modeldir.COMPONENTS[name]`` lists, and
    ``load`` returns None for a directory without them.
    """

    name: ClassVar[str]  # its key in labelrec.modeldir.COMPONENTS and in explanations
    needs_embeddings: ClassVar[bool]

    @classmethod
    def fit(cls, train: TrainingSet, cfg: Any) -> Tagger | None: ...

    def score(self, products: list[Product], embeddings: np.ndarray | None = None) -> Evidence: ...

    def save(self, model_dir: Path) -> None: ...

    @classmethod
    def load(cls, model_dir: Path, vocab: TagVocab) -> Tagger | None: ...


# ----------------------------------------------------------------------------- persistence
# A tagger's state is a JSON meta file (with its format version) and an .npz of arrays: no
# pickle, nothing executable.


def csr_arrays(name: str, m: sp.spmatrix, with_data: bool = True) -> dict[str, np.ndarray]:
    """The arrays of CSR matrix ``m`` under ``name_*`` keys (0/1 matrices: ``with_data=False``)."""
    m = sp.csr_matrix(m)
    out = {
        f"{name}_indices": m.indices.astype(np.int32),
        f"{name}_indptr": m.indptr.astype(np.int64),
        f"{name}_shape": np.asarray(m.shape, dtype=np.int64),
    }
    if with_data:
        out[f"{name}_data"] = m.data.astype(np.float32)
    return out


def csr_from(name: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """The matrix ``csr_arrays`` stored (ones where it stored no data)."""
    indices = arrays[f"{name}_indices"]
    data = arrays.get(f"{name}_data")
    if data is None:
        data = np.ones(len(indices), dtype=np.float32)
    shape = tuple(int(v) for v in arrays[f"{name}_shape"])
    return sp.csr_matrix((data, indices, arrays[f"{name}_indptr"]), shape=shape)


def write_state(
    model_dir: str | Path,
    meta_name: str,
    arrays_name: str,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    version: int,
) -> None:
    """``meta`` (with ``format_version``) as JSON and ``arrays`` as a compressed .npz."""
    import json

    model_dir = Path(model_dir)
    text = json.dumps({**meta, "format_version": version}, ensure_ascii=False)
    (model_dir / meta_name).write_text(text, "utf-8")
    np.savez_compressed(model_dir / arrays_name, **arrays)


def read_meta(
    model_dir: str | Path, meta_name: str, version: int, what: str
) -> dict[str, Any] | None:
    """A component's meta file (JSON); None when the directory has none, an error when its
    format is newer than ``version``."""
    from labelrec.modeldir import read_json

    meta_path = Path(model_dir) / meta_name
    if not meta_path.is_file():
        return None
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: not a JSON object; the model directory is damaged")
    if meta.get("format_version", 0) > version:
        raise ValueError(f"{meta_path}: {what} format is newer than this labelrec")
    return meta


def read_state(
    model_dir: str | Path, meta_name: str, arrays_name: str, version: int, what: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(meta, arrays) written by ``write_state``; None when the directory has none, an error
    when its format is newer than ``version``."""
    meta = read_meta(model_dir, meta_name, version, what)
    if meta is None:
        return None
    with np.load(Path(model_dir) / arrays_name, allow_pickle=False) as data:
        return meta, {name: data[name] for name in data.files}
