"""Prediction: ``TagRecommender.load(dir).suggest(products, limit, threshold)``."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelrec.data import (
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    Product,
    TagVocab,
    clean_text,
    is_missing,
    unicode_problem,
)
from labelrec.metrics import top_k
from labelrec.model import (
    ModelError,
    TagModel,
    encode_products,
    load_model,
    load_saved_tokenizer,
    load_thresholds,
    no_hf_bars,
    read_info,
    score_token_ids,
)
from labelrec.modeldir import (
    LABELREC_FILE,
    RULES_FILE,
    THRESHOLDS_FILE,
    VOCAB_FILE,
    load_whole,
)
from labelrec.runtime import OnnxTagModel, choose_backend, graph_digest, graph_key
from labelrec.taxonomy import consistent_decisions

logger = logging.getLogger(__name__)

# Products that `score`, `suggest` and `explain` score at once: a long list's evidence (a
# products x tags matrix a voter) is held one chunk at a time (docs/architecture.md).
SCORE_CHUNK = 1000
# Products per forward pass. Titles vary in length and each batch is padded to its longest: on
# the CPU, small length-sorted batches tag the most products/s (docs/serving.md: `python
# benchmarks/latency.py --model M --products 640 --throughput`); a GPU wants larger batches.
CPU_BATCH_SIZE = 8
GPU_BATCH_SIZE = 64
# the parts of a score that ``explain`` gives each suggested tag (its ``evidence``)
EVIDENCE_PARTS = (
    "neural",
    "tfidf_neighbours",
    "tfidf_ridge",
    "embedding_neighbours",
    "title_span",
    "generator",
)


@dataclass(frozen=True)
class Suggestion:
    """One recommended tag."""

    tag: str
    score: float
    known: bool = True  # False: a new tag (a span of the title) outside the vocabulary

    def to_dict(self) -> dict[str, Any]:
        """``{"tag", "score", "known"}``, as every output shows a suggestion."""
        return {"tag": self.tag, "score": round(float(self.score), 6), "known": bool(self.known)}


@functools.cache
def _thread_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@functools.cache
def _text_worker() -> ThreadPoolExecutor:
    """One thread for the lexical fusion's text-only part (TF-IDF neighbours, span tagger): it
    runs while the model's forward pass (which releases the GIL) runs (``benchmarks/latency.py``
    compares it with running it after the forward pass)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelrec-text")


# A forked child has no copy of the worker thread: it makes its own on first use.
os.register_at_fork(after_in_child=_text_worker.cache_clear)


class _SharedLimit:
    """One thread for a threadpoolctl API whose count is the process's (OpenBLAS) while any
    holder is inside: the first holder sets it, the last one puts back the count from before,
    so threads that overlap do not put back each other's limit."""

    def __init__(self, user_api: str) -> None:
        self.user_api = user_api
        self._lock = threading.Lock()
        self._holders = 0
        self._limiter: Any = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._limiter = _thread_controller().limit(limits=1, user_api=self.user_api)
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:  # (a forked child leaving a block it forked in: nothing held)
                self._holders = max(self._holders - 1, 0)
                if self._holders == 0 and self._limiter is not None:
                    self._limiter.restore_original_limits()
                    self._limiter = None

    def after_fork(self) -> None:
        """In a forked child, which has none of the parent's threads: the count from before."""
        self._lock = threading.Lock()
        if self._holders:
            self._limiter.restore_original_limits()
        self._holders, self._limiter = 0, None


_one_blas = _SharedLimit("blas")
os.register_at_fork(after_in_child=_one_blas.after_fork)


def one_blas_thread() -> contextlib.AbstractContextManager:
    """numpy's BLAS on one thread for a while. Right after a torch forward pass, torch's OpenMP
    threads still hold the cores; BLAS threads fighting them slow one product's scoring (measured
    in docs/serving.md), and the matrices fused here are small. Overlapping calls from several
    threads share the limit (``_SharedLimit``)."""
    return _one_blas()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """BLAS and OpenMP on one thread for a while (``one_blas_thread`` and more). The reranker's
    gradient-boosted trees (scikit-learn) open an OpenMP region per tree on a few rows per
    product: while other work holds the cores (the forward passes of other requests) OpenMP's
    threads wait for each other (``benchmarks/latency.py --busy 2``; docs/results.md). OpenMP's
    count is the calling thread's own, so its limit is this call's."""
    with _one_blas(), _thread_controller().limit(limits=1, user_api="openmp"):
        yield


def bounded(product: Product) -> Product:
    """``product`` with its title and description as catalogs are read (``clean_text``: no
    zero-width characters, single spaces) and cut to ``MAX_TITLE_CHARS`` and
    ``MAX_DESCRIPTION_CHARS`` (the same object when nothing changes)."""
    title = clean_text(product.title[: 2 * MAX_TITLE_CHARS])[:MAX_TITLE_CHARS]
    description = clean_text(product.description[: 2 * MAX_DESCRIPTION_CHARS])
    description = description[:MAX_DESCRIPTION_CHARS]
    if title == product.title and description == product.description:
        return product
    return dataclasses.replace(product, title=title, description=description)


def product_list(products: Any) -> list[Any]:
    """The products of one call as a list: a list, tuple or other iterable of products, or a
    pandas DataFrame with a ``title`` column (one product per row; ``description`` and ``id``
    where it has them). One string or one dict is refused: it is one product, not a list."""
    if isinstance(products, (str, bytes, dict, Product)):
        kind = "string" if isinstance(products, (str, bytes)) else type(products).__name__
        raise TypeError(
            f"products must be a list of products (titles, dicts or Products), not one {kind}:"
            " pass [product] for one"
        )
    columns = getattr(products, "columns", None)
    if columns is not None and hasattr(products, "to_dict"):  # a pandas DataFrame
        if "title" not in columns:
            raise ValueError(
                f"a DataFrame of products needs a 'title' column (columns: {list(columns)})"
            )
        keep = [c for c in ("id", "title", "description") if c in columns]
        return products[keep].to_dict("records")
    return list(products)


def as_product(item: Any, position: int = 0) -> Product:
    """A ``Product`` from a Product, a dict (or a pandas row) with title/description, or a plain
    title string. A missing description (None, NaN, pandas' NA) is an empty one."""
    if isinstance(item, Product):
        if not isinstance(item.title, str):
            raise ValueError(f"product {position}: 'title' must be a string, got {item.title!r}")
        if is_missing(item.description):
            return dataclasses.replace(item, description="")
        if not isinstance(item.description, str):
            raise ValueError(f"product {position}: 'description' must be a string")
        return item
    if isinstance(item, str):
        return Product(id=str(position), title=item)
    if not isinstance(item, dict) and hasattr(item, "to_dict") and hasattr(item, "index"):
        item = item.to_dict()  # a pandas Series: a row of a DataFrame
    if isinstance(item, dict):
        title = item.get("title")
        if not isinstance(title, str):
            raise ValueError(f"product {position}: 'title' must be a string, got {title!r}")
        desc = item.get("description")
        desc = "" if is_missing(desc) else desc
        if not isinstance(desc, str):
            raise ValueError(f"product {position}: 'description' must be a string")
        pid = item.get("id")
        return Product(id=str(position if is_missing(pid) else pid), title=title, description=desc)
    raise ValueError(f"product {position}: expected a dict with a title or a string")


@dataclass
class _Evidence:
    """One scoring pass with every part kept: the neural scores, the text-only evidence, the
    fusion of the two (``fused``, ``new``), the generator's votes and the final scores."""

    items: list[Product]
    neural: np.ndarray
    embeddings: np.ndarray | None
    text: Any  # labelrec.fusion.TextEvidence, or None without a fusion
    fused: np.ndarray
    new: list[dict[str, float]]
    final: np.ndarray
    final_new: list[dict[str, float]]
    gen_known: np.ndarray | None = None
    gen_new: list[dict[str, float]] | None = None
    # the final scores before the reranker re-scored them (None without one)
    unranked: np.ndarray | None = None
    unranked_new: list[dict[str, float]] | None = None


_MODEL_LOCK = threading.Lock()  # one build of a torch model at a time (``TagRecommender.model``)


def _new_model_lock() -> None:
    global _MODEL_LOCK
    _MODEL_LOCK = threading.Lock()  # a forked child's copy may be held by a thread it lacks


os.register_at_fork(after_in_child=_new_model_lock)


def _one_torch_thread() -> None:
    """Every forked child computes on one torch thread. Once the parent has computed on several,
    the child has none of its OpenMP threads, and its first parallel region in torch waits for
    them for ever (GNU OpenMP is not fork-safe); torch's DataLoader sets its workers so too. A
    count raised in the child again brings the wait back (docs/serving.md)."""
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=_one_torch_thread)


def torch_model_of(model_dir: Path, key: str | None) -> TagModel:
    """The torch model of ``model_dir`` (CPU) whose exported graph ``key`` names
    (``runtime.graph_digest``); a ``ModelError`` when the folder now holds other files."""
    with no_hf_bars():
        model, _, info = load_model(model_dir)
    if graph_digest(model_dir, info) != key:
        raise ModelError(
            f"{model_dir} has changed since its model was loaded: load it again"
            " (TagRecommender.load)"
        )
    return model


class TagRecommender:
    """A trained tagger loaded from a model directory written by ``labelrec train``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        vocab: TagVocab,
        info: dict[str, Any],
        global_threshold: float,
        tag_thresholds: np.ndarray,
        batch_size: int = 64,
        device: str = "cpu",
        path: Path | None = None,
    ) -> None:
        self._model = model
        # (folder, graph key) to load the torch model from on first use, when a cached graph
        # runs it instead (``load``)
        self._model_source: tuple[Path, str | None] | None = None
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.info = info
        self.global_threshold = global_threshold
        self.tag_thresholds = tag_thresholds
        self.batch_size = batch_size
        self.device = device
        self.path = path
        self.max_length = int(info["max_length"])
        self.fusion: Any = None  # labelrec.fusion.Fusion of the other taggers, if saved
        self.runner: OnnxTagModel | None = None  # runs the model instead of torch when set
        self.generator: Any = None  # labelrec.taggers.generator.TagGenerator, if saved
        self.rules: Any = None  # labelrec.rules.Rules applied when ranking, if any
        self.reranker: Any = None  # labelrec.rerank.Reranker of the final scores, if saved

    @property
    def model(self) -> Any:
        """The torch ``TagModel`` (float, also where ONNX Runtime runs the model in int8).
        Where ``load`` found the model's ONNX graph in the cache it is built on first use, from
        the same files (a folder replaced since is an error)."""
        if self._model is None and self._model_source is not None:
            with _MODEL_LOCK:
                if self._model is None:
                    self._model = torch_model_of(*self._model_source)
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = value

    @property
    def backend(self) -> str:
        """What runs the model: "onnx" (ONNX Runtime) or "torch"."""
        return "torch" if self.runner is None else "onnx"

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: str | None = None,
        quantize: bool = False,
        batch_size: int | None = None,
        num_threads: int | None = None,
        backend: str = "auto",
        generate: bool = True,
        rules: str | Path | Any = None,
        rerank: bool = True,
    ) -> TagRecommender:
        """Load a model directory.

        ``rules``: a rules file (``labelrec.rules``), or ``Rules`` already loaded, for
        ranking; None: the directory's own ``rules.yaml`` when it has one.

        ``generate=False`` leaves out a saved tag generator (a decoder LLM: seconds per product on
        a CPU); the other voters' fusion is unchanged, and a reranker fitted on the generator's
        votes is left out with it. ``rerank=False`` leaves out a saved reranker
        (``labelrec.rerank``): the fused scores are final.

        ``quantize`` runs the encoder's linear layers in dynamic int8 (CPU): on ONNX Runtime
        (``runtime.quantize_graph``), or with torch's dynamic quantization where the model runs
        on torch (a decoder, ``backend="torch"``).
        ``backend``: "torch", "onnx" (ONNX Runtime, CPU encoders; same scores, a forward pass in
        about half the time) or "auto" (ONNX Runtime where it can run, else torch).
        ``num_threads`` sets torch's thread count, which is one for the whole process.

        A training that replaces the directory's files meanwhile is waited for: the files read
        are those of one model (``modeldir.load_whole``).
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(f"model directory {model_dir} does not exist")
        settings = (device, quantize, batch_size, num_threads, backend, generate, rules, rerank)
        read = functools.partial(cls._read, model_dir, *settings)
        return load_whole(model_dir, LABELREC_FILE, read)

    @classmethod
    def _read(
        cls,
        model_dir: Path,
        device: str | None,
        quantize: bool,
        batch_size: int | None,
        num_threads: int | None,
        backend: str,
        generate: bool,
        rules: str | Path | Any,
        rerank: bool,
    ) -> TagRecommender:
        """``load``'s reading of the files, once."""
        if num_threads:
            torch.set_num_threads(num_threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = runner = None
        if quantize and device != "cpu":
            raise ModelError("dynamic int8 quantization runs on the CPU only")
        if backend in ("auto", "onnx") and device == "cpu":
            # a graph exported by an earlier load of the same files: torch's model is not built
            info = read_info(model_dir)
            key = graph_key(model_dir, info)
            runner = OnnxTagModel.from_cache(key, num_threads, quantize)
            if runner is not None and runner.n_tags != info["n_tags"]:
                logger.warning(
                    "the cached ONNX graph of %s scores %d tags, not %d: exported again",
                    model_dir,
                    runner.n_tags,
                    info["n_tags"],
                )
                runner = None
        if runner is not None:
            tokenizer = load_saved_tokenizer(model_dir)
            model = None
        else:
            with no_hf_bars():  # no weight-loading bar on each load
                model, tokenizer, info = load_model(model_dir)
            if key is not None and graph_digest(model_dir, info) != key:
                key = None  # the folder changed as it loaded: no graph cached under its old key
        vocab = TagVocab.load(model_dir / VOCAB_FILE)
        if len(vocab) != info["n_tags"]:
            raise ModelError(
                f"{model_dir}: {len(vocab)} tags in {VOCAB_FILE}, {info['n_tags']} in model"
            )
        global_t, per_tag = load_thresholds(model_dir / THRESHOLDS_FILE, len(vocab))
        if model is not None:
            model.to(device)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        batch_size = batch_size or (CPU_BATCH_SIZE if device == "cpu" else GPU_BATCH_SIZE)
        rec = cls(model, tokenizer, vocab, info, global_t, per_tag, batch_size, device, model_dir)
        if runner is None:
            rec.runner = choose_backend(model, backend, device, quantize, num_threads, key)
            if quantize and rec.runner is None:  # on torch (a decoder, or backend "torch")
                # The encoder's linear layers in int8; the tag head stays a float nn.Linear
                # (scoring reads its weight dtype, and it is a small share of the compute).
                torch.ao.quantization.quantize_dynamic(
                    model.hf_model.base_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
                )
        else:
            rec.runner = runner
            rec._model_source = (model_dir.resolve(), key)
        from labelrec.fusion import Fusion

        rec.fusion = Fusion.load(model_dir, vocab)
        if generate:
            from labelrec.taggers.generator import TagGenerator

            rec.generator = TagGenerator.load(model_dir, vocab, device)
        if rerank and rec.fusion is not None:
            from labelrec.rerank import Reranker

            rec.reranker = Reranker.load(model_dir)
            if rec.reranker is not None and rec.reranker.generator and not rec.uses_generator:
                rec.reranker = None  # fitted on the generator's votes, which are left out
        from labelrec.rules import Rules

        if rules is not None:
            rec.rules = rules if isinstance(rules, Rules) else Rules.load(rules)
        elif (model_dir / RULES_FILE).is_file():
            rec.rules = Rules.load(model_dir / RULES_FILE)
        if rec.rules is not None:
            for problem in rec.rules.unmatched(vocab.tags):
                logger.warning("%s: %s", rec.rules.source, problem)
        return rec

    @property
    def uses_generator(self) -> bool:
        """True when the tag generator votes in the fusion."""
        return (
            self.generator is not None and max(self.generator.weight, self.generator.new_weight) > 0
        )

    @property
    def tags(self) -> list[str]:
        return self.vocab.tags

    @property
    def uses_descriptions(self) -> bool:
        """False for a model trained without descriptions (``data.description_column: null``):
        it scores titles alone, as it was trained, whatever the input holds."""
        data = (self.info.get("config") or {}).get("data") or {}
        return "description_column" not in data or data["description_column"] is not None

    def items(self, products: list[Any]) -> list[Product]:
        """``products`` as the model reads them: ``as_product``, ``bounded``, and without
        descriptions when it was trained without them."""
        items = [bounded(as_product(p, i)) for i, p in enumerate(product_list(products))]
        for i, item in enumerate(items):  # the tokenizer would fail on it with a TypeError
            for field, text in (("title", item.title), ("description", item.description)):
                if (problem := unicode_problem(text)) is not None:
                    raise ValueError(f"product {i}: '{field}' {problem}")
        if not self.uses_descriptions:
            items = [dataclasses.replace(p, description="") if p.description else p for p in items]
        return items

    def encode(self, products: list[Any]) -> list[list[int]]:
        """Token ids per product (truncated by tokens)."""
        return self._token_ids(self.items(products))

    def _token_ids(self, items: list[Product]) -> list[list[int]]:
        """``encode`` of products already read (``items``)."""
        return encode_products(
            self.tokenizer,
            [p.title for p in items],
            [p.description for p in items],
            self.max_length,
            self.info.get("pair_separator"),  # None for models trained without one
        )

    def predict_scores(
        self, products: list[Any], with_embeddings: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Tag scores (n, n_tags), and pooled text embeddings when asked.

        With a fusion in the directory the scores are the fused ones (``labelrec.fusion``).
        """
        scores, embeddings, _ = self._score(products, with_embeddings)
        return scores, embeddings

    def score(self, products: list[Any]) -> tuple[np.ndarray, list[dict[str, float]]]:
        """``predict_scores`` and ``new_tags`` in one pass: (scores, new tags per product).
        ``SCORE_CHUNK`` products at a time: besides the scores returned, memory holds one
        chunk's evidence (a products x tags matrix a voter), however long the list."""
        items = self.items(products)
        if len(items) <= SCORE_CHUNK:
            scores, _, new = self._score(items, False)
            return scores, new
        out: np.ndarray | None = None
        new = []
        for start, (part, proposed) in zip(
            range(0, len(items), SCORE_CHUNK), self._score_parts(items, SCORE_CHUNK), strict=True
        ):
            if out is None:
                out = np.empty((len(items), part.shape[1]), dtype=part.dtype)
            out[start : start + len(part)] = part
            new += proposed
        return out, new

    def score_parts(
        self, products: list[Any], size: int | None = None
    ) -> Iterator[tuple[np.ndarray, list[dict[str, float]]]]:
        """``score`` of ``products`` ``size`` (None: ``SCORE_CHUNK``) at a time, in order: each
        part's scores and new tags, so that a caller that reads them a part at a time (an
        evaluation) never holds the scores of them all. Every product is read (and a bad one
        refused) before the first part is scored."""
        size = SCORE_CHUNK if size is None else size
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        yield from self._score_parts(self.items(products), size)

    def _score_parts(
        self, items: list[Product], size: int
    ) -> Iterator[tuple[np.ndarray, list[dict[str, float]]]]:
        """``score_parts`` of products already read (``items``)."""
        # no product's scores read another's (but for float rounding of a batch's padding)
        for start in range(0, len(items), size):
            scores, _, new = self._score(items[start : start + size], False)
            yield scores, new

    def _score(
        self, products: list[Any], with_embeddings: bool
    ) -> tuple[np.ndarray, np.ndarray | None, list[dict[str, float]]]:
        ev = self._evidence(products, with_embeddings)
        return ev.final, ev.embeddings if with_embeddings else None, ev.final_new

    def _evidence(
        self, products: list[Any], with_embeddings: bool = False, rerank: bool = True
    ) -> _Evidence:
        """The whole scoring of ``products``, every voter's part kept (``_score``, ``explain``);
        ``rerank=False`` stops before the reranker."""
        items = self.items(products)
        empty: list[dict[str, float]] = [{} for _ in items]
        if not items:
            none = np.zeros((0, len(self.vocab)), dtype=np.float32)
            return _Evidence(items, none, None, None, none, empty, none, empty)
        ids = self._token_ids(items)
        text = None
        if self.fusion is not None:  # the text-only evidence, computed while the model runs
            text = _text_worker().submit(self.fusion.text_evidence, items)
        need = self.fusion is not None and self.fusion.needs_embeddings
        neural, embeddings = score_token_ids(
            self.model if self.runner is None else self.runner,
            ids,
            self.tokenizer.pad_token_id,
            batch_size=self.batch_size,
            device=self.device,
            with_embeddings=with_embeddings or need,
        )
        fused, new, evidence = neural, empty, None
        if text is not None:
            evidence = text.result()
            with one_blas_thread():
                fused, new = self.fusion.fuse_with_new(items, neural, embeddings, evidence)
        ev = _Evidence(items, neural, embeddings, evidence, fused, new, fused, new)
        if self.uses_generator:
            from labelrec.fusion import blend

            g = self.generator
            ev.gen_known, ev.gen_new = g.votes(items)
            ev.final, ev.final_new = blend(
                fused, new, ev.gen_known, ev.gen_new, g.weight, g.new_weight
            )
        if rerank and self.reranker is not None and evidence is not None:
            ev.unranked, ev.unranked_new = ev.final, ev.final_new
            ev.final, ev.final_new = self._rerank(ev)
        return ev

    def votes(self, products: list[Any]) -> Any:
        """Every voter's scores on ``products`` before a reranker re-scores them: what the
        reranker reads (``labelrec.rerank.Votes``; voters that do not vote are None)."""
        return self._votes(self._evidence(products, rerank=False))

    def _votes(self, ev: _Evidence) -> Any:
        from labelrec.rerank import Votes

        text = ev.text
        unranked = ev.unranked is not None
        return Votes(
            final=ev.unranked if unranked else ev.final,
            final_new=ev.unranked_new if unranked else ev.final_new,
            neural=ev.neural,
            fused=ev.fused,
            fused_new=ev.new,
            tfidf=text.tfidf if text is not None else None,
            span_known=text.known if text is not None else None,
            span_new=text.new if text is not None and text.known is not None else None,
            gen_known=ev.gen_known,
            gen_new=ev.gen_new,
        )

    @property
    def hierarchy(self) -> tuple[np.ndarray, Any] | None:
        """(parents, plan) of the category paths its scores keep consistent (``Fusion.hierarchy``),
        else None."""
        return self.fusion.hierarchy if self.fusion is not None else None

    def decisions(self, scores: np.ndarray, cut: np.ndarray) -> np.ndarray:
        """Which cells of ``scores`` are decisions at the per-tag thresholds ``cut``: at or
        above their own, a category path only where its parent is one too
        (``taxonomy.consistent_decisions``)."""
        passed = scores >= cut
        if (hierarchy := self.hierarchy) is not None:
            consistent_decisions(passed, *hierarchy)
        return passed

    def _rerank(self, ev: _Evidence) -> tuple[np.ndarray, list[dict[str, float]]]:
        """The reranker over every voter's part of ``ev`` (``labelrec.rerank``)."""
        parents, plan = self.hierarchy or (None, None)
        with one_thread():
            return self.reranker.apply(ev.items, self.vocab, self._votes(ev), parents, plan)

    def explain(
        self,
        products: list[Any],
        limit: int = 10,
        threshold: float | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """``suggest``'s suggestions, each with ``evidence``: how much each part of the fusion
        gave its score (``neural``, ``tfidf_neighbours``, ``tfidf_ridge``,
        ``embedding_neighbours``, ``title_span``, ``generator``: weighted shares that add up to
        the score), and, where they apply, ``nearest`` (up to three of the nearest training
        products by TF-IDF that carry the tag: ``id``, ``title``, ``similarity``), ``raised_by``
        (a category raised to its best child's score), ``renamed_from`` (a variant a rule
        merged in) and ``rule``. With a reranker (``labelrec.rerank``) the shares add up to
        ``fused_score``, the score before it re-scored the tag. A product with no text the model
        reads gets no tags, as in ``suggest``. A long list is explained ``SCORE_CHUNK``
        products at a time."""
        items = self.items(products)  # a bad product named by its place in the whole list
        explained: list[list[dict[str, Any]]] = []
        for start in range(0, len(items), SCORE_CHUNK):
            chunk = items[start : start + SCORE_CHUNK]
            explained += self._explain(chunk, limit, threshold, include, exclude)
        return explained

    def _explain(
        self,
        products: list[Product],
        limit: int,
        threshold: float | None,
        include: list[str] | None,
        exclude: list[str] | None,
    ) -> list[list[dict[str, Any]]]:
        """`explain` of one chunk of products."""
        ev = self._evidence(products)
        lex, neural, text = self.fusion, ev.neural, ev.text
        zeros = np.zeros_like(neural)
        parts = {key: zeros for key in EVIDENCE_PARTS if key != "generator"}
        parts["neural"] = neural
        span_new = ev.new
        if lex is not None and text is not None:
            w = lex.weight
            e = lex.embedding_weight if lex.needs_embeddings else 0.0
            parts["neural"] = w * neural
            if e > 0:
                parts["embedding_neighbours"] = e * lex.embedding.scores(ev.embeddings)
            if lex.uses_tfidf and text.tfidf is not None:
                parts["tfidf_neighbours"] = (1.0 - w - e) * text.tfidf
                r = lex.ridge_mix
                if r > 0 and lex.tfidf.ridge is not None:  # the TF-IDF voter's two halves
                    knn, ridge = lex.tfidf.votes(ev.items)
                    parts["tfidf_neighbours"] = (1.0 - w - e) * (1.0 - r) * knn
                    parts["tfidf_ridge"] = (1.0 - w - e) * r * ridge
            if text.known is not None:
                b = lex.span_weight
                for key in ("neural", "tfidf_neighbours", "tfidf_ridge", "embedding_neighbours"):
                    parts[key] = (1.0 - b) * parts[key]
                parts["title_span"] = b * text.known
            if text.absent is not None:  # a known brand the title does not name, scaled down
                for key, values in parts.items():
                    parts[key] = np.where(text.absent, lex.absent_factor * values, values)
        final, final_new = ev.final, ev.final_new
        shared = ev.unranked if ev.unranked is not None else final  # what the shares add up to
        shared_new = ev.unranked_new if ev.unranked_new is not None else final_new
        gen_known = ev.gen_known if ev.gen_known is not None else zeros
        gen_new = ev.gen_new if ev.gen_new is not None else [{} for _ in ev.items]
        g = g_new = 0.0
        if self.uses_generator:
            g, g_new = self.generator.weight, self.generator.new_weight
            for key in parts:
                parts[key] = (1.0 - g) * parts[key]
        ranked = self.rank(final, limit, threshold, final_new, include, exclude)
        sources: dict[str, list[str]] = {}
        if self.rules is not None:
            for old, target in self.rules.rename.items():
                sources.setdefault(target, []).append(old)
        parents = lex.parents if lex is not None else None

        def source(i: int, sug: Suggestion) -> tuple[str, int | None]:
            """The variant whose score the suggestion shows (itself, or a tag a rule renamed
            onto it: the best of those that passed their thresholds, which need not be the best
            scored) and its vocabulary column (None: a new tag)."""
            candidates = [sug.tag, *sources.get(sug.tag, [])]
            for t in candidates:
                j = self.vocab.index.get(t)
                if j is not None and abs(float(final[i, j]) - sug.score) <= 1e-6:
                    return t, j
            for t in candidates:
                if t in final_new[i] and abs(float(final_new[i][t]) - sug.score) <= 1e-6:
                    return t, None
            known = [t for t in candidates if t in self.vocab.index]
            if known:  # not reached: a suggestion's score is one of its variants'
                tag = max(known, key=lambda t: final[i, self.vocab.index[t]])
                return tag, self.vocab.index[tag]
            return max((t for t in candidates if t in final_new[i]), key=final_new[i].get), None

        def from_vocab(i: int, sug: Suggestion) -> bool:
            """Whether the suggestion's score is a vocabulary tag's (a rename's target may be
            outside the vocabulary, and ``known`` then says so, while its score is known)."""
            return source(i, sug)[1] is not None

        def column(i: int, sug: Suggestion) -> tuple[str, int]:
            """The vocabulary tag behind a known suggestion."""
            tag, j = source(i, sug)
            assert j is not None
            return tag, j

        nearest: list[dict[int, list[dict[str, Any]]]] = [{} for _ in ranked]
        if lex is not None and lex.tfidf is not None:
            wanted = [
                [column(i, s)[1] for s in row if from_vocab(i, s)] for i, row in enumerate(ranked)
            ]
            with one_blas_thread():
                nearest = lex.tfidf.nearest_with_tag(ev.items, wanted)
        out = []
        for i, suggestions in enumerate(ranked):
            row = []
            for sug in suggestions:
                evidence: dict[str, Any] = {}
                if from_vocab(i, sug):
                    tag, j = column(i, sug)
                    for key, values in parts.items():
                        evidence[key] = round(float(values[i, j]), 6)
                    evidence["generator"] = round(float(g * gen_known[i, j]), 6)
                    children = np.flatnonzero(parents == j) if parents is not None else []
                    if len(children):
                        # raised before the reranker (the fused score is above its shares), or
                        # after it (its score is its best child's: the reranker re-scores each
                        # tag alone, then parents are raised again)
                        fused_best = children[int(np.argmax(shared[i, children]))]
                        final_best = children[int(np.argmax(final[i, children]))]
                        if shared[i, j] > sum(evidence.values()) + 1e-4:
                            evidence["raised_by"] = self.vocab.tags[fused_best]
                        elif ev.unranked is not None and final[i, final_best] >= final[i, j]:
                            evidence["raised_by"] = self.vocab.tags[final_best]
                    if ev.unranked is not None:
                        evidence["fused_score"] = round(float(shared[i, j]), 6)
                    if nearest[i].get(j):
                        evidence["nearest"] = nearest[i][j]
                else:
                    tag = source(i, sug)[0]
                    span = span_new[i].get(tag, 0.0) * (1.0 - g)
                    evidence["title_span"] = round(float(span), 6)
                    evidence["generator"] = round(float(g_new * gen_new[i].get(tag, 0.0)), 6)
                    if ev.unranked is not None:
                        evidence["fused_score"] = round(float(shared_new[i].get(tag, 0.0)), 6)
                if tag != sug.tag:
                    evidence["renamed_from"] = tag
                    evidence["rule"] = f"rename {tag} -> {sug.tag}"
                row.append({**sug.to_dict(), "evidence": evidence})
            read = ev.items[i].title or ev.items[i].description
            out.append(row if read else [])  # no text: no tags, as in ``suggest``
        return out

    def new_tags(self, products: list[Any]) -> list[dict[str, float]]:
        """Proposed tags outside the vocabulary (spans of the title) -> score, per product."""
        if self.uses_generator or self.reranker is not None:
            return self.score(products)[1]
        if self.fusion is None:
            return [{} for _ in product_list(products)]
        with one_blas_thread():
            return self.fusion.new_tags(self.items(products))

    def thresholds(self, threshold: float | None) -> np.ndarray:
        """Per-tag thresholds: the tuned ones for None, else the given global value (0 to 1)."""
        if threshold is None:
            return self.tag_thresholds
        if not 0.0 <= float(threshold) <= 1.0:  # NaN too: it would pass no tag
            raise ValueError(f"threshold must be between 0 and 1 (or None), got {threshold!r}")
        return np.full(len(self.vocab), float(threshold), dtype=np.float32)

    def rank(
        self,
        scores: np.ndarray,
        limit: int = 10,
        threshold: float | None = None,
        new_tags: list[dict[str, float]] | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> list[list[Suggestion]]:
        """Top ``limit`` tags per row of ``scores`` that pass the threshold, best first.

        ``new_tags`` (from ``new_tags()``) are ranked with them as ``known=False`` suggestions.
        The model's ``rules`` (``labelrec.rules``) apply, and a request's own ``include`` and
        ``exclude`` tag patterns narrow them.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        cut = self.thresholds(threshold)
        new_cut = float(threshold) if threshold is not None else self.new_tag_threshold
        out: list[list[Suggestion]] = []
        if scores.shape[0] == 0:
            return out
        if self.rules is not None or include or exclude:
            return self._rank_with_rules(scores, limit, cut, new_cut, new_tags, include, exclude)
        total = limit
        limit = min(limit, scores.shape[1])
        # the best `limit` of the tags that pass their thresholds, not the best `limit` filtered;
        # ties go to the lower column, as the metrics rank them (labelrec.metrics.top_k)
        passing = np.where(self.decisions(scores, cut), scores, -np.inf)
        top = top_k(passing, limit)
        for i, (row, cand) in enumerate(zip(passing, top, strict=True)):
            ranked = [
                Suggestion(self.vocab.tags[j], float(row[j])) for j in cand if row[j] > -np.inf
            ]
            if new_tags is not None and new_tags[i]:
                ranked += [
                    Suggestion(t, float(v), False) for t, v in new_tags[i].items() if v >= new_cut
                ]
                ranked = sorted(ranked, key=lambda s: -s.score)[:total]
            out.append(ranked)
        return out

    def _rank_with_rules(
        self,
        scores: np.ndarray,
        limit: int,
        cut: np.ndarray,
        new_cut: float,
        new_tags: list[dict[str, float]] | None,
        include: list[str] | None,
        exclude: list[str] | None,
    ) -> list[list[Suggestion]]:
        """``rank`` when rules or request patterns apply: every tag that passes its threshold is
        a candidate (a denied top tag must not hide the next ones), then the rules decide."""
        from labelrec.rules import Rules

        rules = self.rules or Rules()
        tags = self.vocab.tags
        out = []
        decided = self.decisions(scores, cut)
        for i, row in enumerate(scores):
            passing = np.flatnonzero(decided[i])
            passing = passing[np.argsort(-row[passing], kind="stable")]
            # built lazily, as far as the rules read: thousands of candidates a product would
            # otherwise be made for ten answers
            known = (Suggestion(tags[j], float(row[j])) for j in passing)
            new = []
            if new_tags is not None and new_tags[i]:
                new = [
                    Suggestion(t, float(v), False) for t, v in new_tags[i].items() if v >= new_cut
                ]
                new.sort(key=lambda s: -s.score)
            ranked = heapq.merge(known, new, key=lambda s: -s.score)  # ties: known tags first
            out.append(rules.first(ranked, limit, include, exclude, self.vocab))
        return out

    @property
    def new_tag_threshold(self) -> float:
        """Score a new (open-vocabulary) tag needs by default; tuned on valid."""
        if self.reranker is not None:
            return self.reranker.new_threshold
        if self.uses_generator:
            return self.generator.new_threshold
        return self.fusion.new_threshold if self.fusion is not None else 1.0

    def suggest(
        self,
        products: list[Any],
        limit: int = 10,
        threshold: float | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> list[list[Suggestion]]:
        """Ranked tags with scores for each product.

        ``threshold=None`` uses the per-tag thresholds tuned on valid; a number applies one global
        cut-off (0 returns the top ``limit`` whatever their scores). The model's rules apply;
        ``include`` / ``exclude`` tag patterns (``brand:*``) narrow them for this call. A
        product with no text the model reads gets no tags (scoring it would rank the catalog's
        priors), as in the MLflow model. A long list is scored ``SCORE_CHUNK`` products at a
        time.
        """
        items = self.items(products)
        read = [i for i, p in enumerate(items) if p.title or p.description]
        if not read:  # nothing to rank: `rank` checks the arguments all the same
            self.rank(np.zeros((0, len(self.vocab)), dtype=np.float32), limit, threshold)
        ranked: list[list[Suggestion]] = [[] for _ in items]
        for start in range(0, len(read), SCORE_CHUNK):  # as `score`, a chunk's evidence at a time
            chunk = read[start : start + SCORE_CHUNK]
            scores, new = self.score([items[i] for i in chunk])
            rows = self.rank(scores, limit, threshold, new, include, exclude)
            for i, row in zip(chunk, rows, strict=True):
                ranked[i] = row
        return ranked

    def recommend(self, *args: Any, **kwargs: Any) -> list[list[Suggestion]]:
        """``suggest``, under its former name (tags are suggested; products are recommended,
        ``labelrec.recommend``)."""
        import warnings

        warnings.warn(
            "TagRecommender.recommend is now TagRecommender.suggest", DeprecationWarning, 2
        )
        return self.suggest(*args, **kwargs)
