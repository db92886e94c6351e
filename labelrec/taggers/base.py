"""The interface every tagger of the fusion implements: fit, score, save, load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from labelrec.data import Product, TagVocab


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
