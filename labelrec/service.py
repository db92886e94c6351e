"""BentoML service: online and batch tag recommendation (``bentoml serve`` from the repo root).

The model named by ``LABELREC_MODEL_URI`` is loaded once at start-up: a registry URI
(``models:/labelrec@champion``, the default, read from the configured MLflow tracking URI through
:mod:`labelrec.mlflow`) or a local model directory written by ``labelrec train``.

Endpoints: ``POST /suggest`` (one product), ``POST /suggest_batch`` (a list), both served by the
adaptive-batching ``POST /suggest_items``; ``POST /suggest_file`` (an uploaded catalog, streamed
back with tags); ``GET /tags``, ``GET /model``, ``POST /reload``; BentoML's own ``/healthz``,
``/livez``, ``/readyz`` (ready once a model is loaded) and ``/metrics`` (Prometheus). The API
page is at ``/`` (``/docs`` redirects there).

Products (with a product index): ``POST /similar``, ``POST /search``, ``POST /recommend`` and the
review page ``GET /ui``. The index comes from ``LABELREC_INDEX`` (a directory written by
``labelrec index-build``), else is built from ``LABELREC_CATALOG`` with each model version as it
loads, else is the index logged in MLflow with the registered version being served
(``labelrec index-build models:/labelrec@champion ... --log-mlflow``). ``LABELREC_INTERACTIONS``
(``user_id,product_id[,weight,timestamp]``) feeds ``/recommend``.

Model updates: :class:`ModelHolder` keeps one immutable :class:`Snapshot` (recommender, registry
info, extras such as a similarity index) and swaps it atomically after the new model has loaded
and passed a probe. A request pins the snapshot it started with, so it finishes on that model even
when a reload lands meanwhile; a new version that fails to load or to score is refused and the
old one keeps serving. ``POST /reload`` checks now; ``LABELREC_POLL_SECONDS`` polls (default 60 s
for registry URIs, off for local directories; 0 turns it off).

Settings (environment): ``LABELREC_MODEL_URI``, ``LABELREC_POLL_SECONDS``,
``LABELREC_MAX_BATCH_PRODUCTS`` (products per ``/suggest_batch`` request, 256),
``LABELREC_MAX_BATCH_SIZE`` (adaptive batch, 64), ``LABELREC_MAX_LATENCY_MS`` (10000),
``LABELREC_QUANTIZE`` (dynamic int8 on CPU), ``LABELREC_NUM_THREADS`` (inference threads),
``LABELREC_BACKEND`` (``auto``: ONNX Runtime on CPU where it can run, else torch; ``torch``;
``onnx``),
``LABELREC_INDEX``, ``LABELREC_CATALOG``, ``LABELREC_INTERACTIONS`` (above),
``LABELREC_MAX_UPLOAD_MB`` (``/suggest_file`` upload cap, 512), ``LABELREC_GENERATE`` (``0``:
leave out a model's tag generator, a decoder LLM that takes seconds per product on a CPU).

Descriptions: ``POST /describe`` (a list of products with ``title`` and optional ``tags``, ``id``;
one ``{id, description}`` each, adaptive batching through ``POST /describe_items``) when
``LABELREC_DESCRIBER`` names a describer directory (``labelrec train --config
configs/describe.yaml``) or an MLflow URI of one; 404 without it, 503 when it failed to load.

This is the only module that imports ``bentoml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from labelrec.config import DataConfig
from labelrec.data import CatalogError, Product, iter_catalog
from labelrec.opener import is_model_uri, open_describer, open_tagger, registry_version, resolve
from labelrec.predict import TagRecommender
from labelrec.recommend import (
    UI_PAGE,
    ProductSearch,
    UnknownProductError,
    build_index_from_file,
)
from labelrec.runtime import BACKENDS

logger = logging.getLogger("labelrec.service")

DEFAULT_MODEL_URI = "models:/labelrec@champion"
REGISTRY_POLL_SECONDS = 60.0
MAX_LIMIT = 100


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer") from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


MAX_BATCH_PRODUCTS = _env_int("LABELREC_MAX_BATCH_PRODUCTS", 256)
MAX_BATCH_SIZE = _env_int("LABELREC_MAX_BATCH_SIZE", 64)
MAX_LATENCY_MS = _env_int("LABELREC_MAX_LATENCY_MS", 10_000)
MAX_UPLOAD_BYTES = _env_int("LABELREC_MAX_UPLOAD_MB", 512) << 20
FILE_CHUNK = 256  # products scored per step of /suggest_file

# --------------------------------------------------------------------------- request/response


def _clean_text(value: str) -> str:
    return " ".join(value.split())


class ProductIn(BaseModel):
    """One product to tag. Long texts are truncated by tokens, never rejected."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"title": "LEGO City Police Station 60316", "description": "Building set"}
        },
    )

    title: Annotated[
        str,
        Field(
            min_length=1,
            description="Product title (required, not blank).",
            json_schema_extra={"example": "LEGO City Police Station 60316"},
        ),
    ]
    description: Annotated[
        str,
        Field(
            description="Optional description.",
            json_schema_extra={"example": "Police station building set, 6+"},
        ),
    ] = ""
    id: Annotated[
        StrictStr | StrictInt | None,
        Field(description="Optional id, echoed back.", json_schema_extra={"example": "B08HVZ8Q1C"}),
    ] = None

    @field_validator("description", mode="before")
    @classmethod
    def _no_description(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        value = _clean_text(value)
        if not value:
            raise ValueError("title must not be empty")
        return value


Limit = Annotated[
    int,
    Field(
        ge=1, le=MAX_LIMIT, description="Most tags per product.", json_schema_extra={"example": 5}
    ),
]
Threshold = Annotated[
    float | None,
    Field(
        ge=0.0,
        le=1.0,
        description="Global score cut-off; null uses the per-tag thresholds tuned on valid, "
        "0 returns the top `limit` whatever their scores.",
    ),
]


class ItemIn(ProductIn):
    """A product with its own options, as batched by ``/suggest_items``."""

    limit: Limit = 10
    threshold: Threshold = None
    pin: Annotated[
        int | None,
        Field(description="Internal: model generation the request started on."),
    ] = None


TagFilter = Annotated[
    list[str] | None,
    Field(
        description="Only products carrying all these tags.",
        json_schema_extra={"example": ["Toys & Games"]},
    ),
]
TagWeight = Annotated[
    float | None,
    Field(
        ge=0.0,
        le=1.0,
        description="Blend of tag similarity (1) and embedding similarity (0); null: the "
        "index default.",
    ),
]


class TagScore(BaseModel):
    tag: str
    score: float
    known: bool = True  # False: a new tag (a span of the title) outside the vocabulary


class Suggestions(BaseModel):
    """Ranked tags for one product."""

    id: str | None = None
    tags: list[TagScore]
    model_version: str


class BatchSuggestions(BaseModel):
    """Ranked tags for each product, in input order."""

    results: list[Suggestions]
    model_version: str


class TagsOut(BaseModel):
    model_version: str
    count: int
    tags: list[str]
    counts: list[int]


class DescribeIn(BaseModel):
    """One product to describe: its title and the tags it has (facets such as color:Blue)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"id": "P1", "title": "Hornby railway train set", "tags": ["color:Red"]}
        },
    )

    title: Annotated[str, Field(min_length=1, description="Product title (required).")]
    tags: Annotated[
        list[StrictStr], Field(description="Its tags: categories and key:value attributes.")
    ] = []
    id: Annotated[
        StrictStr | StrictInt | None,
        Field(description="Optional id, echoed back.", json_schema_extra={"example": "P1"}),
    ] = None

    @field_validator("tags", mode="before")
    @classmethod
    def _no_tags(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        value = _clean_text(value)
        if not value:
            raise ValueError("title must not be empty")
        return value


class DescriptionOut(BaseModel):
    """The written description of one product."""

    id: str | None = None
    description: str


class ReloadOut(BaseModel):
    status: str  # "reloaded", "unchanged" or "refused"
    model_version: str | None
    previous_version: str | None = None
    error: str | None = None


# --------------------------------------------------------------------------- model holder


class ServiceError(Exception):
    """A request the service answers with ``status`` and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True, eq=False)
class Snapshot:
    """One loaded model and what goes with it; never changed after it starts serving."""

    recommender: TagRecommender
    version: str
    info: dict[str, Any]
    generation: int
    loaded_at: float
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


PROBE = [
    {"title": "LEGO City Police Station 60316", "description": ""},
    {"title": "wooden jigsaw puzzle 1000 pieces", "description": "animals " * 400},
]


def probe(recommender: TagRecommender) -> None:
    """Raise unless the model scores a few products with finite values of the right shape."""
    scores, _ = recommender.predict_scores(PROBE)
    if scores.shape != (len(PROBE), len(recommender.vocab)):
        raise ValueError(f"probe: scores of shape {scores.shape}, {len(recommender.vocab)} tags")
    if not np.isfinite(scores).all():
        raise ValueError("probe: the model returns non-finite scores")
    recommender.rank(scores, limit=5)


def index_extension(
    index_dir: str | None = None,
    catalog: str | None = None,
    interactions: str | None = None,
) -> Callable[[Snapshot], ProductSearch | None]:
    """Build the product search of each model version as it loads (``holder.extensions``).

    ``index_dir``: a fixed index (it must come from a model with the same tags); ``catalog``:
    indexed anew with each version; neither: the index logged with a registered version, if
    any (None: the product endpoints answer 503)."""

    def build(snap: Snapshot) -> ProductSearch | None:
        rec = snap.recommender
        if catalog:
            cfg = dataclasses.replace(data_config_for(rec, {}), on_error="skip")
            index = build_index_from_file(rec, catalog, cfg, model_source=snap.info.get("path"))
            engine, source = ProductSearch(index, rec), catalog
        else:
            path: Path | None = Path(index_dir) if index_dir else None
            if path is None and snap.info.get("kind") == "registry" and snap.info.get("name"):
                from labelrec.mlflow.index import download_index

                path = download_index(f"models:/{snap.info['name']}/{snap.version}")
            if path is None:
                return None
            engine, source = ProductSearch.load(path, rec), str(path)
        if engine.index.n_model_tags != len(rec.vocab):
            raise ValueError(
                f"product index {source} was built with a model of "
                f"{engine.index.n_model_tags} tags, model version {snap.version} has "
                f"{len(rec.vocab)}: rebuild it (labelrec index-build) or set LABELREC_CATALOG"
            )
        if interactions:
            engine.set_interactions(interactions)
        return engine

    return build


Loader = Callable[[str], tuple[TagRecommender, str, dict[str, Any]]]
Extension = Callable[[Snapshot], Any]


class ModelHolder:
    """Loads the model named by ``uri`` and swaps in new versions atomically.

    ``current`` is the snapshot new requests use; ``get(generation)`` returns an older one as long
    as some request still holds it. ``extensions`` build extras per snapshot (e.g. a similarity
    index over the catalog) before it goes live: ``holder.extensions["index"] = build`` and
    ``snapshot.extras["index"]``; a failing extension refuses the version like a failing model.
    """

    def __init__(
        self,
        uri: str,
        poll_seconds: float = 0.0,
        quantize: bool = False,
        num_threads: int | None = None,
        loader: Loader | None = None,
        backend: str = "auto",
        generate: bool = True,
    ) -> None:
        self.uri = uri
        self.poll_seconds = poll_seconds
        self.quantize = quantize
        self.num_threads = num_threads
        self.backend = backend
        self.generate = generate  # False: leave out a saved tag generator (slow on a CPU)
        self.loader = loader or self._load
        self.extensions: dict[str, Extension] = {}
        self.current: Snapshot | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self.reloads = 0
        self.refused = 0
        self._refused_version: str | None = None
        self.busy = threading.Lock()  # one model computation at a time (they share the cores)
        self._generation = 0
        self._alive: weakref.WeakValueDictionary[int, Snapshot] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def from_env(cls) -> ModelHolder:
        uri = os.environ.get("LABELREC_MODEL_URI", "").strip() or DEFAULT_MODEL_URI
        poll = os.environ.get("LABELREC_POLL_SECONDS", "").strip()
        default_poll = REGISTRY_POLL_SECONDS if is_model_uri(uri) else 0.0
        try:
            poll_seconds = float(poll) if poll else default_poll
        except ValueError:
            raise ValueError(f"LABELREC_POLL_SECONDS={poll!r}: expected seconds") from None
        threads = _env_int("LABELREC_NUM_THREADS", 0) or None
        backend = os.environ.get("LABELREC_BACKEND", "").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"LABELREC_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
        generate = os.environ.get("LABELREC_GENERATE", "").strip().lower() or "1"
        if generate not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"LABELREC_GENERATE={generate!r}: expected 1/true or 0/false")
        return cls(
            uri,
            poll_seconds,
            _env_flag("LABELREC_QUANTIZE"),
            threads,
            backend=backend,
            generate=generate not in ("0", "false", "no", "off"),
        )

    # -- loading

    def _load_kwargs(self) -> dict[str, Any]:
        return {
            "quantize": self.quantize,
            "num_threads": self.num_threads,
            "backend": self.backend,
            "generate": self.generate,
        }

    def _load(self, uri: str) -> tuple[TagRecommender, str, dict[str, Any]]:
        """(recommender, version, info) for ``uri``."""
        resolved = resolve(uri)
        rec = open_tagger(resolved, **self._load_kwargs())
        info = dict(resolved.info)
        if info.get("kind") == "local":
            info["metrics"] = dict(rec.info.get("valid_metrics") or {})
        return rec, resolved.version, info

    def latest_version(self) -> str:
        """The version the URI names now, without loading it."""
        if is_model_uri(self.uri) and not self.uri.startswith("models:/"):
            return self.current.version if self.current else self.uri
        return registry_version(self.uri)

    def reload(self, force: bool = False) -> ReloadOut:
        """Load the version the URI names now when it differs from the current one (or always
        with ``force``), probe it and swap it in; on failure keep the current one.

        A version once refused is not tried again (by polls) until it changes or ``force``."""
        with self._lock:
            self.last_check = time.time()
            old = self.current
            old_version = old.version if old else None
            latest = None
            try:
                latest = self.latest_version()
                if not force and old is not None and latest == old.version:
                    return ReloadOut(status="unchanged", model_version=old_version)
                if not force and latest == self._refused_version:
                    return ReloadOut(
                        status="refused", model_version=old_version, error=self.last_error
                    )
                rec, version, info = self.loader(self.uri)
                probe(rec)
                snap = Snapshot(rec, version, info, self._generation + 1, time.time())
                for name, build in self.extensions.items():
                    snap.extras[name] = build(snap)
            except Exception as err:  # any failure refuses the version, the old one serves on
                self.refused += 1
                self._refused_version = latest
                self.last_error = f"{type(err).__name__}: {err}"
                logger.error("model %s refused: %s", self.uri, self.last_error)
                return ReloadOut(status="refused", model_version=old_version, error=self.last_error)
            self._generation = snap.generation
            self._alive[snap.generation] = snap
            self.current = snap  # one reference assignment: atomic for readers
            self.last_error = None
            self._refused_version = None
            self.reloads += old is not None
            logger.info("serving %s version %s (was %s)", self.uri, version, old_version)
            return ReloadOut(status="reloaded", model_version=version, previous_version=old_version)

    def get(self, generation: int | None) -> Snapshot:
        """The snapshot of ``generation`` while a request holds it, else the current one."""
        snap = self._alive.get(generation) if generation is not None else None
        snap = snap or self.current
        if snap is None:
            raise ServiceError(503, f"no model loaded yet from {self.uri}; see GET /model")
        return snap

    @property
    def ready(self) -> bool:
        return self.current is not None

    # -- polling

    def start(self) -> None:
        """Load now; start polling when ``poll_seconds`` > 0. Without polling a model that
        cannot load stops the start-up; with it the service starts unready and keeps trying."""
        result = self.reload(force=True)
        if result.status == "refused" and self.poll_seconds <= 0:
            raise RuntimeError(f"cannot load model {self.uri}: {result.error}")
        if self.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="labelrec-poll", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.reload()
            except Exception:  # never let the poller die
                logger.exception("model poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def describe(self) -> dict[str, Any]:
        snap = self.current
        out: dict[str, Any] = {
            "uri": self.uri,
            "ready": snap is not None,
            "poll_seconds": self.poll_seconds,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "reloads": self.reloads,
            "refused": self.refused,
        }
        if snap is not None:
            rec = snap.recommender
            out.update(
                {
                    "generation": snap.generation,
                    "loaded_at": snap.loaded_at,
                    "n_tags": len(rec.vocab),
                    "backbone": rec.info.get("backbone"),
                    "max_length": rec.max_length,
                    "quantized": self.quantize,
                    "backend": rec.backend,
                    "generator": None
                    if rec.generator is None
                    else {
                        "backbone": rec.generator.meta.get("backbone"),
                        "weight": rec.generator.weight,
                        "num_beams": rec.generator.num_beams,
                        "in_use": rec.uses_generator,
                    },
                    **{k: v for k, v in snap.info.items() if k != "uri"},
                    "version": snap.version,  # as a string, also for registry versions
                }
            )
            engine = snap.extras.get("index")
            if engine is not None:
                out["index"] = {
                    "n_products": len(engine.index),
                    "n_tags": len(engine.index.tags),
                    "embeddings": engine.index.has_embeddings,
                    "catalog": engine.index.manifest.get("catalog"),
                    "users": None if engine.signals is None else len(engine.signals.user_index),
                }
        return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@functools.cache
def _ui_page() -> str:
    return UI_PAGE.read_text(encoding="utf-8")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def score_items(
    snap: Snapshot, items: list[ItemIn], busy: threading.Lock | None = None
) -> list[Suggestions]:
    """Rank tags for each item with its own limit and threshold on one model snapshot
    (holding ``busy`` while the model runs)."""
    rec = snap.recommender
    texts = [{"title": i.title, "description": i.description} for i in items]
    with busy or contextlib.nullcontext():
        scores, new_tags = rec.score(texts)  # with open-vocabulary tags, as recommend() ranks
    out = []
    for row, new, item in zip(scores, new_tags, items, strict=True):
        tags = rec.rank(row[None, :], item.limit, item.threshold, [new])[0]
        out.append(
            Suggestions(
                id=None if item.id is None else str(item.id),
                tags=[TagScore(**s.to_dict()) for s in tags],
                model_version=snap.version,
            )
        )
    return out


# --------------------------------------------------------------------------- file scoring

_OUTPUT_SUFFIX = {".parquet": ".parquet", ".pq": ".parquet", ".csv": ".csv", ".tsv": ".csv"}
_MEDIA = {".parquet": "application/vnd.apache.parquet", ".csv": "text/csv"}
_INPUT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet", ".pq")


def _catalog_suffix(filename: str) -> str:
    name = filename.lower()
    gz = name.endswith(".gz")
    suffix = Path(name[:-3] if gz else name).suffix
    if suffix not in _INPUT_SUFFIXES or (gz and suffix in (".parquet", ".pq")):
        raise ServiceError(
            415,
            f"{filename or 'the upload'}: expected a .jsonl, .json, .csv, .tsv or .parquet file "
            "(.gz allowed for text formats)",
        )
    return suffix + (".gz" if gz else "")


def data_config_for(rec: TagRecommender, overrides: dict[str, str | None]) -> DataConfig:
    """Column mapping for uploads: the model's training columns, then the request's."""
    names = {f.name for f in dataclasses.fields(DataConfig)}
    data = dict((rec.info.get("config") or {}).get("data") or {})
    kwargs = {k: v for k, v in data.items() if k in names}
    for key in ("train", "valid", "unlabeled", "max_products"):
        kwargs.pop(key, None)
    kwargs.update({k: v for k, v in overrides.items() if v})
    kwargs["on_error"] = "raise"
    return DataConfig(**kwargs)


def check_catalog(path: Path, cfg: DataConfig, shown: str) -> int:
    """Parse the whole upload once so a bad row is a 400 before any output is sent."""
    n = 0
    try:
        for chunk in iter_catalog(path, cfg, require_tags=False, chunk_size=4096):
            n += len(chunk)
    except (CatalogError, ValueError, UnicodeDecodeError, OSError) as err:
        raise ServiceError(400, str(err).replace(str(path), shown)) from None
    except Exception as err:  # pyarrow and csv raise their own types on garbage
        raise ServiceError(
            400, f"{shown}: unreadable catalog ({type(err).__name__}: {err})"
        ) from None
    return n


async def stream_scored(
    path: Path,
    workdir: Path,
    cfg: DataConfig,
    suffix: str,
    snap: Snapshot,
    limit: int,
    threshold: float | None,
    busy: threading.Lock,
) -> AsyncIterator[bytes]:
    """Score ``path`` chunk by chunk and yield the output file's bytes as they are written."""
    from labelrec.batch import TagWriter, iter_scored

    rec = snap.recommender

    def scorer(products: list[Product]) -> list[list[dict[str, Any]]]:
        with busy:
            scores, new_tags = rec.score(products)
        ranked = rec.rank(scores, limit, threshold, new_tags)
        return [[s.to_dict() for s in row] for row in ranked]

    out_path = workdir / f"scored{suffix}"
    writer = TagWriter(out_path)
    chunks = iter_scored(path, cfg, scorer, chunk_size=FILE_CHUNK)
    done = object()
    reader = None
    try:
        while True:
            rows = await asyncio.to_thread(next, chunks, done)
            if rows is done:
                break
            await asyncio.to_thread(writer.write, rows)
            if reader is None and out_path.exists():
                reader = out_path.open("rb")
            if reader is not None:
                data = reader.read()
                if data:
                    yield data
        writer.close()
        if reader is None:
            reader = out_path.open("rb")
        data = reader.read()
        if data:
            yield data
    finally:  # also when the client goes away mid-stream
        chunks.close()
        if reader is not None:
            reader.close()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- descriptions

NO_DESCRIBER = (
    "no describer: start the service with LABELREC_DESCRIBER set to a describer directory"
    " (labelrec train --config configs/describe.yaml) or its MLflow URI"
)


def load_describer(uri: str) -> Any:
    """The ``Describer`` of a directory or of an MLflow URI (``models:/name@alias``)."""
    return open_describer(uri)


def describe_items(
    describer: Any, items: list[DescribeIn], busy: threading.Lock | None = None
) -> list[DescriptionOut]:
    """Descriptions of ``items`` (holding ``busy`` while the decoder runs)."""
    products = [{"title": i.title, "tags": i.tags} for i in items]
    with busy or contextlib.nullcontext():
        texts = describer.describe(products)
    return [
        DescriptionOut(id=None if i.id is None else str(i.id), description=t)
        for i, t in zip(items, texts, strict=True)
    ]


# --------------------------------------------------------------------------- the service

http_app = FastAPI(
    title="labelrec",
    docs_url=None,  # BentoML's API page at / documents the FastAPI routes too
    redoc_url=None,
    openapi_url=None,
)


@http_app.exception_handler(RequestValidationError)
async def _bad_request(_: Any, exc: RequestValidationError) -> JSONResponse:
    """400 with the same shape as BentoML's validation errors: {"error", "detail"}."""
    detail = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
    return JSONResponse(
        {"error": f"{len(detail)} validation error(s)", "detail": _jsonable(detail)},
        status_code=400,
    )


# traffic.timeout (time to the first byte of an answer; BentoML's default 60 s): BentoML 1.4.40's
# TimeoutMiddleware never cancels its per-request timer, which keeps each request's tracing
# context (~5-20 KB) alive that long, so memory grows for `timeout` seconds, then stays flat.
# runner_connection: BentoML >= 1.4.31 renews the session behind self-calls (/suggest ->
# /suggest_items) every 100 requests and 300 s by closing it under the requests still in flight,
# which fail with 500 "Server disconnected" (bentoml/BentoML#5540); never renew it.
@bentoml.service(
    name="labelrec",
    workers=1,
    traffic={"timeout": 60},
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
@bentoml.asgi_app(http_app, path="/")
class LabelRec:
    """Product tag recommendation (labelrec)."""

    def __init__(self) -> None:
        self.holder = ModelHolder.from_env()
        self.holder.extensions["index"] = index_extension(
            os.environ.get("LABELREC_INDEX", "").strip() or None,
            os.environ.get("LABELREC_CATALOG", "").strip() or None,
            os.environ.get("LABELREC_INTERACTIONS", "").strip() or None,
        )
        self.holder.start()
        self._in_flight = 0  # /suggest and /suggest_batch requests being answered
        self.describer: Any = None
        self.describer_error: str | None = None
        self.describer_uri = os.environ.get("LABELREC_DESCRIBER", "").strip() or None
        if self.describer_uri:  # a describer that cannot load leaves tagging up (503 there)
            try:
                self.describer = load_describer(self.describer_uri)
            except Exception as err:
                self.describer_error = f"{type(err).__name__}: {err}"
                logger.error(
                    "describer %s not loaded: %s", self.describer_uri, self.describer_error
                )
        self._describing = 0  # /describe requests being answered

    def __is_ready__(self) -> bool:
        return self.holder.ready

    @bentoml.on_shutdown
    def _stop_polling(self) -> None:
        self.holder.stop()

    def _pin(self) -> Snapshot:
        return self.holder.get(None)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def suggest_items(self, items: list[ItemIn]) -> list[Suggestions]:
        """Adaptive-batching core of /suggest and /suggest_batch: one entry per product with its
        own `limit` and `threshold`. Concurrent calls are merged into one model batch."""
        out: list[Suggestions | None] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        snaps: dict[int, Snapshot] = {}
        for i, item in enumerate(items):
            snap = self.holder.get(item.pin)
            snaps[snap.generation] = snap
            groups.setdefault(snap.generation, []).append(i)
        for generation, idx in groups.items():
            results = score_items(snaps[generation], [items[i] for i in idx], self.holder.busy)
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return out  # type: ignore[return-value]

    async def _suggest(
        self, products: list[ProductIn], limit: int, threshold: float | None
    ) -> tuple[Snapshot, list[Suggestions]]:
        snap = self._pin()  # held until the answer is back: a reload meanwhile does not touch it
        items = [
            ItemIn(**p.model_dump(), limit=limit, threshold=threshold, pin=snap.generation)
            for p in products
        ]
        if not items:
            return snap, []
        self._in_flight += 1
        try:
            if self._in_flight == 1:  # nothing to batch with: skip the batcher's extra hop
                return snap, await asyncio.to_thread(score_items, snap, items, self.holder.busy)
            return snap, list(await self.to_async.suggest_items(items))
        finally:
            self._in_flight -= 1

    @bentoml.api
    async def suggest(
        self, product: ProductIn, limit: Limit = 10, threshold: Threshold = None
    ) -> Suggestions:
        """Ranked tags with scores for one product."""
        try:
            _, results = await self._suggest([product], limit, threshold)
        except ServiceError as err:
            return _error(err.status, err.message)  # type: ignore[return-value]
        return results[0]

    @bentoml.api
    async def suggest_batch(
        self,
        products: Annotated[
            list[ProductIn],
            Field(
                max_length=MAX_BATCH_PRODUCTS,
                description=f"Up to {MAX_BATCH_PRODUCTS} products.",
                json_schema_extra={
                    "example": [{"title": "Hornby railway train set"}, {"title": "Plush bear"}]
                },
            ),
        ],
        limit: Limit = 10,
        threshold: Threshold = None,
    ) -> BatchSuggestions:
        """Ranked tags for each of a list of products, in input order."""
        try:
            snap, results = await self._suggest(products, limit, threshold)
        except ServiceError as err:
            return _error(err.status, err.message)  # type: ignore[return-value]
        return BatchSuggestions(results=results, model_version=snap.version)

    # -- descriptions (need LABELREC_DESCRIBER)

    def _describer(self) -> Any:
        if self.describer is not None:
            return self.describer
        if self.describer_uri:
            raise ServiceError(
                503, f"describer {self.describer_uri} failed to load: {self.describer_error}"
            )
        raise ServiceError(404, NO_DESCRIBER)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def describe_items(self, items: list[DescribeIn]) -> list[DescriptionOut]:
        """Adaptive-batching core of /describe: concurrent calls share one generation batch."""
        try:
            describer = self._describer()
        except ServiceError as err:
            from bentoml.exceptions import NotFound, ServiceUnavailable

            raise (NotFound if err.status == 404 else ServiceUnavailable)(err.message) from None
        return describe_items(describer, items, self.holder.busy)

    @bentoml.api
    async def describe(
        self,
        products: Annotated[
            list[DescribeIn],
            Field(
                max_length=MAX_BATCH_PRODUCTS,
                description=f"Up to {MAX_BATCH_PRODUCTS} products.",
                json_schema_extra={
                    "example": [
                        {"id": "P1", "title": "Hornby railway train set", "tags": ["Trains"]},
                        {"title": "Plush bear", "tags": ["color:Brown"]},
                    ]
                },
            ),
        ],
    ) -> list[DescriptionOut]:
        """A written description for each product (title and tags), in input order."""
        try:
            describer = self._describer()
        except ServiceError as err:
            return _error(err.status, err.message)  # type: ignore[return-value]
        if not products:
            return []
        self._describing += 1
        try:
            if self._describing == 1:  # nothing to batch with: skip the batcher's extra hop
                return await asyncio.to_thread(
                    describe_items, describer, products, self.holder.busy
                )
            return list(await self.to_async.describe_items(products))
        finally:
            self._describing -= 1

    # -- products: similar, search, recommend (need a product index)

    async def _products(self, call: Callable[[ProductSearch], dict[str, Any]]) -> Any:
        """Run ``call`` on the pinned snapshot's product search; errors become 4xx/503."""
        try:
            snap = self._pin()
            engine = snap.extras.get("index")
            if engine is None:
                raise ServiceError(
                    503,
                    "no product index: start the service with LABELREC_INDEX (a directory "
                    "written by `labelrec index-build`) or LABELREC_CATALOG (a catalog to "
                    "index), or log an index with the registered model (index-build "
                    "--log-mlflow)",
                )

            def run() -> dict[str, Any]:
                with self.holder.busy:
                    return call(engine)

            result = await asyncio.to_thread(run)
        except ServiceError as err:
            return _error(err.status, err.message)
        except UnknownProductError as err:
            return _error(404, str(err))
        except ValueError as err:
            return _error(400, str(err))
        result["model_version"] = snap.version
        return _jsonable(result)

    @bentoml.api
    async def similar(
        self,
        id: Annotated[  # noqa: A002 - the JSON field
            str | None,
            Field(description="An indexed product's id (or give `product`).", examples=["P1"]),
        ] = None,
        product: Annotated[
            ProductIn | None, Field(description="A new product, tagged by the model.")
        ] = None,
        limit: Limit = 10,
        tags: TagFilter = None,
        tag_weight: TagWeight = None,
    ) -> dict[str, Any]:
        """Products similar to an indexed product or to a new one, each with the tags it
        shares with the query."""
        new = None if product is None else product.model_dump(include={"title", "description"})
        return await self._products(
            lambda e: e.similar(id, new, limit=limit, tags=tags, tag_weight=tag_weight)
        )

    @bentoml.api
    async def search(
        self,
        query: Annotated[
            str, Field(description="Free text, tagged by the model.", examples=["wooden train"])
        ],
        limit: Limit = 10,
        tags: TagFilter = None,
        tag_weight: TagWeight = None,
    ) -> dict[str, Any]:
        """Products for a free-text query, ranked by tag and embedding similarity; `tags` are
        exact filters."""
        return await self._products(
            lambda e: e.search(query, limit=limit, tags=tags, tag_weight=tag_weight)
        )

    @bentoml.api
    async def recommend(
        self,
        user: Annotated[
            str | None,
            Field(description="User id in LABELREC_INTERACTIONS.", examples=["U123"]),
        ] = None,
        history: Annotated[
            list[str] | None,
            Field(description="Product ids the user interacted with (added to their history)."),
        ] = None,
        limit: Limit = 10,
        tags: TagFilter = None,
        tag_weight: TagWeight = None,
    ) -> dict[str, Any]:
        """Products for a user from the tags of what they interacted with, blended with
        co-occurrence; users without history get popular products."""
        if user is None and not history:
            return _error(400, "give a `user` or a `history` of product ids")  # type: ignore[return-value]
        return await self._products(
            lambda e: e.recommend(
                user, history=history, limit=limit, tags=tags, tag_weight=tag_weight
            )
        )

    @http_app.get("/ui", response_class=HTMLResponse, tags=["labelrec"])
    def ui(self) -> HTMLResponse:
        """The tag review page: suggested tags, similar products, search."""
        return HTMLResponse(_ui_page())

    # -- plain HTTP routes (FastAPI): GET endpoints, uploads, admin

    @http_app.get("/tags", response_model=TagsOut, tags=["labelrec"])
    def tags(self) -> TagsOut | JSONResponse:
        """The tag vocabulary of the model being served, with training counts."""
        try:
            snap = self._pin()
        except ServiceError as err:
            return _error(err.status, err.message)
        vocab = snap.recommender.vocab
        return TagsOut(
            model_version=snap.version,
            count=len(vocab),
            tags=list(vocab.tags),
            counts=[int(c) for c in vocab.counts],
        )

    @http_app.get("/model", tags=["labelrec"])
    def model(self) -> dict[str, Any]:
        """Model name, version, aliases, run, metrics, and reload status."""
        out = self.holder.describe()
        if self.describer_uri:
            out["describer"] = {"uri": self.describer_uri, "error": self.describer_error}
            if self.describer is not None:
                meta = self.describer.meta
                out["describer"]["backbone"] = meta.get("backbone")
                out["describer"]["valid_metrics"] = _jsonable(meta.get("valid_metrics") or {})
        return out

    @http_app.post("/reload", response_model=ReloadOut, tags=["labelrec"])
    async def reload(self, force: bool = False) -> ReloadOut | JSONResponse:
        """Load the version the model URI names now (registry alias or directory) if it changed.

        409 when the new version fails to load or to score: the old one keeps serving."""
        result = await asyncio.to_thread(self.holder.reload, force)
        if result.status == "refused":
            return JSONResponse(result.model_dump(), status_code=409)
        return result

    @http_app.get("/docs", include_in_schema=False, response_model=None)
    def docs(self) -> RedirectResponse:
        return RedirectResponse("/")

    @http_app.post("/suggest_file", response_model=None, tags=["labelrec"])
    async def suggest_file(
        self,
        file: Annotated[UploadFile, File(description="A .jsonl, .csv, .tsv or .parquet catalog")],
        limit: Annotated[int, Form(ge=1, le=MAX_LIMIT)] = 10,
        threshold: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
        title_column: Annotated[str | None, Form()] = None,
        description_column: Annotated[str | None, Form()] = None,
        id_column: Annotated[str | None, Form()] = None,
    ) -> StreamingResponse | JSONResponse:
        """Tag every product of an uploaded catalog; the answer streams back in the same format
        (.parquet, .csv; JSON Lines otherwise) with columns id, title, tags (and scores)."""
        shown = file.filename or "upload"
        workdir = Path(tempfile.mkdtemp(prefix="labelrec-upload-"))
        try:
            snap = self._pin()
            suffix = _catalog_suffix(shown)
            path = workdir / f"upload{suffix}"
            size = file.size
            if size is None:
                file.file.seek(0, os.SEEK_END)
                size = file.file.tell()
                file.file.seek(0)
            if size > MAX_UPLOAD_BYTES:
                raise ServiceError(
                    413,
                    f"{shown}: {size / 2**20:.0f} MB is over the upload cap of "
                    f"{MAX_UPLOAD_BYTES >> 20} MB (LABELREC_MAX_UPLOAD_MB); split the catalog "
                    "or use `labelrec index` for large files",
                )
            with path.open("wb") as fh:
                await asyncio.to_thread(shutil.copyfileobj, file.file, fh, 1 << 20)
            cfg = data_config_for(
                snap.recommender,
                {
                    "title_column": title_column,
                    "description_column": description_column,
                    "id_column": id_column,
                },
            )
            await asyncio.to_thread(check_catalog, path, cfg, shown)
        except ServiceError as err:
            shutil.rmtree(workdir, ignore_errors=True)
            return _error(err.status, err.message)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        out_suffix = _OUTPUT_SUFFIX.get(suffix.removesuffix(".gz"), ".jsonl")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(shown.removesuffix(".gz")).stem) or "catalog"
        return StreamingResponse(
            stream_scored(path, workdir, cfg, out_suffix, snap, limit, threshold, self.holder.busy),
            media_type=_MEDIA.get(out_suffix, "application/jsonl"),
            headers={
                "content-disposition": f'attachment; filename="{stem}.tags{out_suffix}"',
                "x-labelrec-model-version": snap.version,
            },
        )
