"""The serving core, apart from HTTP: the model holder that loads a model reference and swaps in
new versions atomically, the snapshots requests pin, the probe a version must pass, the product
index built per version, and the micro-batcher through which concurrent requests share forward
passes. Plain dataclasses and threads; the BentoML service (``labelrec.service``) maps its
``ServiceError`` to HTTP answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labelrec.config import ConfigError, DataConfig, model_data_config
from labelrec.errors import ServiceError
from labelrec.model import ModelError
from labelrec.modeldir import jsonable, manifest
from labelrec.opener import is_model_uri, open_tagger, registry_version, resolve
from labelrec.predict import TagRecommender
from labelrec.recommend import ProductSearch, build_index_from_file
from labelrec.runtime import BACKENDS

logger = logging.getLogger("labelrec.serving")

DEFAULT_MODEL_URI = "models:/labelrec@champion"
REGISTRY_POLL_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0  # the longest a refused version waits before a poll tries it again


@dataclasses.dataclass(frozen=True)
class Reload:
    """What a reload did: ``status`` is "reloaded", "unchanged" or "refused"."""

    status: str
    model_version: str | None
    previous_version: str | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Snapshot:
    """One loaded model and what goes with it; never changed after it starts serving."""

    recommender: TagRecommender
    version: str
    info: dict[str, Any]
    generation: int
    loaded_at: float
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: extensions that failed on the first version loaded, which then serves without them
    extra_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the state of the files the extensions were built from (``ModelHolder.sources``)
    sources: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def file_state(path: str | Path | None) -> tuple | None:
    """What changes when a file, or a folder's files, is written again (inode, size and
    modification time of each); None without a path or for a missing one."""
    if not path:
        return None
    root = Path(path)
    try:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        return tuple(
            (str(f.relative_to(root)) if f != root else "", s.st_ino, s.st_size, s.st_mtime_ns)
            for f in files
            for s in [f.stat()]
        )
    except OSError:  # missing, or replaced while it was read: the next check sees it
        return None


def index_extension(
    index_dir: str | None = None,
    catalog: str | None = None,
    interactions: str | None = None,
    half_life_days: float | None = None,
) -> Callable[[Snapshot], ProductSearch | None]:
    """Build the product search of each model version as it loads (``holder.extensions``).

    ``index_dir``: a fixed index (it must come from the model being loaded); ``catalog``:
    indexed anew with each version; neither: the index logged with a registered version, if
    any (None: the product endpoints answer 503). ``build.sources()`` is the state of these
    files: written again (an index rebuilt, a catalog or interactions file changed), the next
    reload builds the search again for the model serving; when only the interactions changed,
    the index built last is kept and reads them anew (no catalog tagged again).
    ``half_life_days``: time decay of the interactions' weights (``UserSignals``)."""
    last: dict[str, Any] = {}  # the search built last, and what it was built from

    def build(snap: Snapshot) -> ProductSearch | None:
        rec = snap.recommender
        reads = (file_state(index_dir), file_state(catalog))
        if last.get("recommender") is not rec:
            last.clear()  # another model: nothing to keep (nor to hold in memory)
        if last.get("reads") == reads:
            engine = copy.copy(last["engine"])  # requests on the old one keep its interactions
            engine.signals, engine.interactions_error = None, None
        elif catalog:
            cfg = dataclasses.replace(data_config_for(rec, {}), on_error="skip")
            index = build_index_from_file(rec, catalog, cfg, model_source=snap.info.get("path"))
            engine = ProductSearch(index, rec)
        else:
            path: Path | None = Path(index_dir) if index_dir else None
            download: str | None = None  # read into memory, then deleted
            if path is None and snap.info.get("kind") == "registry" and snap.info.get("name"):
                from labelrec.mlflow.index import download_index

                download = tempfile.mkdtemp(prefix="labelrec-index-")
                try:
                    path = download_index(f"models:/{snap.info['name']}/{snap.version}", download)
                except BaseException:
                    shutil.rmtree(download, ignore_errors=True)
                    raise
            try:
                if path is None:
                    return None
                try:  # refused unless built with this very model (labelrec.recommend.engine)
                    engine = ProductSearch.load(path, rec)
                except ValueError as err:
                    raise ValueError(f"{path}: {err} (or set LABELREC_CATALOG)") from None
            finally:
                if download is not None:
                    shutil.rmtree(download, ignore_errors=True)
        last.update(recommender=rec, reads=reads, engine=engine)
        if interactions:  # a bad file costs the users' histories, not the product index
            try:
                engine.set_interactions(interactions, half_life_days=half_life_days)
            except (ValueError, OSError) as err:
                engine.interactions_error = f"{type(err).__name__}: {err}"
                logger.error("interactions not loaded: %s", engine.interactions_error)
        return engine

    def sources() -> tuple:
        return file_state(index_dir), file_state(catalog), file_state(interactions)

    build.sources = sources  # type: ignore[attr-defined]
    return build


Loader = Callable[[str], tuple[TagRecommender, str, dict[str, Any]]]
Extension = Callable[[Snapshot], Any]


def threads_per_pass(passes: int, workers: int = 1) -> int | None:
    """Inference threads for each of ``passes`` passes side by side in each of ``workers``
    processes: the cores shared among them all; None (the library's default, all cores) for one
    pass in one process."""
    share = passes * workers
    return max(1, (os.cpu_count() or 1) // share) if share > 1 else None


class ModelHolder:
    """Loads the model named by ``uri`` and swaps in new versions atomically.

    ``current`` is the snapshot new requests use; ``get(generation)`` returns an older one as long
    as some request still holds it. ``extensions`` build extras per snapshot (e.g. a similarity
    index over the catalog) before it goes live: ``holder.extensions["index"] = build`` and
    ``snapshot.extras["index"]``; a failing extension refuses a new version like a failing
    model (the version serving keeps its extras). The first version loaded has nothing to fall
    back to: it serves without the extension, whose error is kept in ``snapshot.extra_errors``
    (what needs it answers 503 with it), so that tagging does not wait on, say, a stale index.
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
        rules: str | None = None,
        passes: int = 1,
        workers: int = 1,
    ) -> None:
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.uri = uri
        self.rules = rules  # a rules file replacing the model's own (LABELREC_RULES)
        self.poll_seconds = poll_seconds
        self.quantize = quantize
        # workers: the service's processes, each holding its own copy (their cores are shared too)
        self.workers = workers
        self.num_threads = threads_per_pass(passes, workers) if num_threads is None else num_threads
        self.backend = backend
        self.generate = generate  # False: leave out a saved tag generator (slow on a CPU)
        self.loader = loader or self._load
        self.extensions: dict[str, Extension] = {}
        self.current: Snapshot | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self.reloads = 0
        self.refused = 0
        # the last refusal: (version, None) where the model itself failed, (version, extension
        # sources) where what its extensions read failed (an index another model's), tried again
        # when that changes (the index rebuilt); either also once its back-off is over
        # (``_retry_at``), as a failure may not come again (an I/O error, a download cut short);
        # ``_refusals`` in a row of the same one double the wait
        self._refused: tuple | None = None
        self._refusals = 0
        self._retry_at = 0.0
        # model computations at a time (they share the cores): the /suggest passes, explanations,
        # file scoring and descriptions all take a slot
        self.passes = passes
        self.busy = threading.BoundedSemaphore(passes)
        self._generation = 0
        self._alive: weakref.WeakValueDictionary[int, Snapshot] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        # registry versions are downloaded into a folder of their own under this one; the
        # folders of versions no longer served are removed (the loaded model lives in memory)
        self._downloads: Path | None = None
        self._attempts = 0
        self._attempt_dir: Path | None = None
        self._served_dir: Path | None = None

    @classmethod
    def configured(
        cls,
        uri: str = DEFAULT_MODEL_URI,
        poll_seconds: float | None = None,
        quantize: bool = False,
        num_threads: int | None = None,
        backend: str = "auto",
        generate: bool = True,
        rules: str | None = None,
        passes: int = 1,
        workers: int = 1,
    ) -> ModelHolder:
        """A holder for the service's settings: ``poll_seconds`` None polls a registry URI every
        ``REGISTRY_POLL_SECONDS``, and a directory only with several ``workers`` (a reload asked
        of one process reaches no other); a rules file that does not parse stops here, naming its
        line."""
        if poll_seconds is None:
            polled = is_model_uri(uri) or workers > 1
            poll_seconds = REGISTRY_POLL_SECONDS if polled else 0.0
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if rules is not None:
            from labelrec.rules import Rules

            Rules.load(rules)
        return cls(
            uri,
            poll_seconds,
            quantize,
            num_threads,
            backend=backend,
            generate=generate,
            rules=rules,
            passes=passes,
            workers=workers,
        )

    # -- loading

    def _load_kwargs(self) -> dict[str, Any]:
        return {
            "quantize": self.quantize,
            "num_threads": self.num_threads,
            "backend": self.backend,
            "generate": self.generate,
            "rules": self.rules,
        }

    def _load(self, uri: str) -> tuple[TagRecommender, str, dict[str, Any]]:
        """(recommender, version, info) for ``uri``."""
        dst = None
        if is_model_uri(uri):
            if self._downloads is None:
                self._downloads = Path(tempfile.mkdtemp(prefix="labelrec-models-"))
            self._attempts += 1
            dst = self._attempt_dir = self._downloads / str(self._attempts)
            dst.mkdir()
        resolved = resolve(uri, dst_path=dst)
        rec = open_tagger(resolved, **self._load_kwargs())
        info = dict(resolved.info)
        info["components"] = manifest(resolved.path)  # as loaded (rules.yaml may be added later)
        if info.get("kind") == "local":
            info["metrics"] = dict(rec.info.get("valid_metrics") or {})
        return rec, resolved.version, info

    def sources(self) -> dict[str, Any]:
        """The state of the files each extension reads (its ``build.sources()``, if it has one)."""
        builds = self.extensions.items()
        return {name: build.sources() for name, build in builds if hasattr(build, "sources")}

    def latest_version(self) -> str:
        """The version the URI names now, without loading it."""
        if is_model_uri(self.uri) and not self.uri.startswith("models:/"):
            return self.current.version if self.current else self.uri
        return registry_version(self.uri)

    def retry_seconds(self, refusals: int) -> float:
        """How long a refused version waits before a poll tries it again, after ``refusals``
        refusals in a row: the polling interval (a minute without polling), doubled with each
        one, at most ``RETRY_MAX_SECONDS`` or one polling interval where that is longer."""
        base = self.poll_seconds if self.poll_seconds > 0 else 60.0
        return min(base * 2.0 ** min(refusals - 1, 30), max(base, RETRY_MAX_SECONDS))

    def reload(self, force: bool = False, wait: bool = True) -> Reload:
        """Load the version the URI names now when it differs from the current one (or always
        with ``force``), probe it and swap it in; on failure keep the current one.

        A refused version is tried again when it changes, when the files its extensions read
        change where those failed (a product index rebuilt for it), with ``force``, or once
        ``retry_seconds`` have passed. ``wait=False``: while another reload runs, return at
        once with status "busy"."""
        if not self._lock.acquire(blocking=wait):
            current = self.current.version if self.current else None
            return Reload(status="busy", model_version=current, error="a reload is running")
        try:
            return self._reload(force)
        finally:
            self._lock.release()

    def _reload(self, force: bool) -> Reload:
        self.last_check = time.time()
        old = self.current
        old_version = old.version if old else None
        latest = None
        same_model = building = False
        sources = self.sources()
        try:
            latest = self.latest_version()
            same_model = not force and old is not None and latest == old.version
            if same_model and sources == old.sources:
                return Reload(status="unchanged", model_version=old_version)
            waits = time.monotonic() < self._retry_at
            if not force and self._refused in ((latest, None), (latest, sources)) and waits:
                return Reload(
                    status="refused", model_version=old_version, error=public_text(self.last_error)
                )
            if same_model:  # only what the extensions read changed: built again for this model
                rec, version, info = old.recommender, old.version, old.info
            else:
                rec, version, info = self.loader(self.uri)
                local = self.loader == self._load and not is_model_uri(self.uri)
                if local and registry_version(self.uri) != version:
                    raise ModelError(
                        "the model directory changed while it was loading (a retrain writing"
                        " into it?); it is tried again at the next check"
                    )
                probe(rec)
            snap = Snapshot(rec, version, info, self._generation + 1, time.time(), sources=sources)
            building = True  # the model is good: what fails now is what an extension reads
            for name, build in self.extensions.items():
                try:
                    snap.extras[name] = build(snap)
                except Exception as err:
                    if self.current is not None:
                        raise
                    snap.extra_errors[name] = public_text(f"{type(err).__name__}: {err}")
                    logger.error("model %s serves without its %s: %s", self.uri, name, err)
        except Exception as err:  # any failure refuses the version, the old one serves on
            self._drop_download(self._attempt_dir)
            self.refused += 1
            refusal = (latest, sources if building else None)
            self._refusals = self._refusals + 1 if self._refused == refusal else 1
            self._refused = refusal
            self._retry_at = time.monotonic() + self.retry_seconds(self._refusals)
            self.last_error = f"{type(err).__name__}: {err}"
            what = "the files beside model" if building else "model"  # an index, a catalog
            logger.error("%s %s refused: %s", what, self.uri, self.last_error)
            error = public_text(self.last_error)
            return Reload(status="refused", model_version=old_version, error=error)
        self._generation = snap.generation
        self._alive[snap.generation] = snap
        self.current = snap  # one reference assignment: atomic for readers
        if self._attempt_dir is not None:  # the version served before is no longer needed
            before, self._served_dir, self._attempt_dir = self._served_dir, self._attempt_dir, None
            if before is not None:
                shutil.rmtree(before, ignore_errors=True)
        self.last_error = None
        self._refused, self._refusals = None, 0
        self.reloads += old is not None
        logger.info("serving %s version %s (was %s)", self.uri, version, old_version)
        return Reload(status="reloaded", model_version=version, previous_version=old_version)

    def _drop_download(self, folder: Path | None) -> None:
        """Remove the download of a version that was refused (never the one served)."""
        if folder is not None and folder != self._served_dir:
            shutil.rmtree(folder, ignore_errors=True)
        self._attempt_dir = None

    def get(self, generation: int | None) -> Snapshot:
        """The snapshot of ``generation`` while a request holds it, else the current one."""
        snap = self._alive.get(generation) if generation is not None else None
        snap = snap or self.current
        if snap is None:
            # polling: the next look for a loadable version is when to ask again
            retry = {"retry-after": str(math.ceil(self.poll_seconds))} if self.poll_seconds else {}
            raise ServiceError(
                503, f"no model loaded yet from {public_uri(self.uri)}; see GET /model", retry
            )
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
        if self._downloads is not None:
            shutil.rmtree(self._downloads, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        snap = self.current
        out: dict[str, Any] = {
            "uri": public_uri(self.uri),
            "ready": snap is not None,
            # the key every other answer has; `version` (below) too, null until a model loads
            "model_version": snap.version if snap is not None else None,
            "version": None,
            "poll_seconds": self.poll_seconds,
            "last_check": self.last_check,
            "last_error": public_text(self.last_error),
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
                    "backbone": public_uri(rec.info.get("backbone")),
                    "max_length": rec.max_length,
                    "quantized": self.quantize,
                    "backend": rec.backend,
                    "rules": public_uri(rec.rules.source) if rec.rules is not None else None,
                    "components": rec.info.get("components"),  # as trained; a load's below
                    "generator": (
                        {
                            "backbone": public_uri(rec.generator.meta.get("backbone")),
                            "weight": rec.generator.weight,
                            "new_weight": rec.generator.new_weight,
                            "num_beams": rec.generator.num_beams,
                            "in_use": rec.uses_generator,
                        }
                        if rec.generator is not None
                        # the model has one, left out by the generate setting (not loaded)
                        else {"in_use": False, "left_out": True}
                        if "generator" in (rec.info.get("components") or {})
                        else None
                    ),
                    # the registry's version tags name the files it was trained and
                    # promoted on: their paths are cut too
                    **{
                        k: public_values(v)
                        for k, v in snap.info.items()
                        if k not in ("uri", "path")
                    },
                    "version": snap.version,  # as a string, also for registry versions
                }
            )
            if snap.extra_errors:
                out["extension_errors"] = dict(snap.extra_errors)
            engine = snap.extras.get("index")
            if engine is not None:
                out["index"] = {
                    "n_products": len(engine.index),
                    "n_tags": len(engine.index.tags),
                    "embeddings": engine.index.has_embeddings,
                    "catalog": public_uri(engine.index.manifest.get("catalog")),
                    "users": None if engine.signals is None else len(engine.signals.user_index),
                }
                if engine.interactions_error is not None:  # the users' histories are down
                    out["index"]["interactions_error"] = public_text(engine.interactions_error)
        return jsonable(out)


# an absolute path of two or more parts; folders may hold spaces ("/srv/my  models/uk"), the
# last part may not, since the sentence goes on after it
_PART = r"[^\s'\"/:,()]+"
_PATH = re.compile(rf"(?<![\w:/.])/(?:{_PART}(?: +{_PART})*/)+({_PART})")


def public_text(text: str | None) -> str | None:
    """``text`` with local paths cut to their last part (``/srv/models/uk`` -> ``…/uk``): what a
    public answer may show; logs keep the whole text."""
    return None if text is None else _PATH.sub(lambda m: "…/" + m.group(1), text)


_ABSOLUTE = re.compile(r"^(?:[/\\]|[A-Za-z]:[/\\])")  # /srv, \\host, C:\\ or C:/


def public_uri(uri: str | None) -> str | None:
    """A model reference as a public answer shows it: a registry URI whole, an absolute path
    (also a ``file:`` URI's, a Windows one, one with spaces) cut to its last part."""
    if uri is None or is_model_uri(uri):
        return uri
    if uri.startswith("file:"):
        return "file://" + (public_uri("/" + uri[5:].lstrip("/")) or "")
    parts = [part for part in re.split(r"[/\\]+", uri) if part]
    if _ABSOLUTE.match(uri) and len(parts) >= 2:
        return "…/" + parts[-1]
    return public_text(uri)


def public_values(value: Any) -> Any:
    """``value`` with every string in it as ``public_uri`` shows it (dicts and lists too)."""
    if isinstance(value, str):
        return public_uri(value)
    if isinstance(value, dict):
        return {k: public_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_values(v) for v in value]
    return value


def data_config_for(rec: TagRecommender, columns: dict[str, str | None]) -> DataConfig:
    """Column mapping for uploads: the model's training columns, then the request's (a 400
    for a mapping the reader refuses)."""
    try:
        data = model_data_config(rec.info, values={k: v for k, v in columns.items() if v})
    except ConfigError as err:
        raise ServiceError(400, str(err)) from None
    return dataclasses.replace(data, on_error="raise")


@dataclasses.dataclass
class _Pending:
    snap: Snapshot
    products: list[dict[str, str]]
    future: asyncio.Future[tuple[np.ndarray, list[dict[str, float]]]]


class MicroBatcher:
    """Concurrent requests share forward passes.

    A request's products join a queue; a worker task scores everything queued (at most
    ``max_batch`` products a pass, grouped by the snapshot each request pinned) in a thread and
    hands each request its own rows, to which it applies its own limit and threshold. Nothing
    waits for a batch to fill: a lone request is scored at once, and under load requests gather
    while the running passes finish. Up to ``passes`` workers run passes side by side (each
    holding a slot of ``busy``). Written for one event loop (a BentoML worker's); a new loop
    starts a new queue.
    """

    def __init__(
        self,
        busy: contextlib.AbstractContextManager[Any] | None = None,
        max_batch: int = 64,
        passes: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        self.busy = busy
        self.max_batch = max_batch
        self.max_passes = passes
        self.passes = 0  # passes run to the end
        self.products = 0  # products scored in them
        self._queue: list[_Pending] = []
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def score(
        self, snap: Snapshot, products: list[dict[str, str]]
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Known-tag scores and new tags of ``products`` on ``snap``'s model."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._queue, self._workers = loop, [], []
        future: asyncio.Future[tuple[np.ndarray, list[dict[str, float]]]] = loop.create_future()
        self._queue.append(_Pending(snap, products, future))
        self._workers = [w for w in self._workers if not w.done()]
        if len(self._workers) < self.max_passes:
            self._workers.append(loop.create_task(self._run()))
        return await future

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        n = 0
        while self._queue and (not batch or n + len(self._queue[0].products) <= self.max_batch):
            item = self._queue.pop(0)
            if item.future.done():  # the client went away
                continue
            batch.append(item)
            n += len(item.products)
        return batch

    async def _run(self) -> None:
        while self._queue:
            groups: dict[int, list[_Pending]] = {}
            for item in self._take():
                groups.setdefault(item.snap.generation, []).append(item)
            for items in groups.values():
                texts = [p for item in items for p in item.products]
                try:
                    scores, new = await asyncio.to_thread(self._score, items[0].snap, texts)
                except Exception as err:  # every request of the pass gets the error
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(err)
                    continue
                self.passes += 1  # counted here, in the event loop, not in the passes' threads
                self.products += len(texts)
                start = 0
                for item in items:
                    end = start + len(item.products)
                    if not item.future.done():
                        item.future.set_result((scores[start:end], new[start:end]))
                    start = end

    def _score(
        self, snap: Snapshot, texts: list[dict[str, str]]
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        with self.busy if self.busy is not None else contextlib.nullcontext():
            return snap.recommender.score(texts)  # with open-vocabulary tags, as rank() expects


class FileJobs:
    """The file jobs (``/suggest_file`` uploads) being handled, at most ``cap`` at once: each
    keeps its upload, a decoded copy and its output on disk until its answer has streamed."""

    def __init__(self, cap: int, setting: str = "the cap", retry_s: int = 5) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.cap = cap
        self.setting = setting
        self.retry_s = retry_s  # the Retry-After of a refused job
        self.running = 0
        self._lock = threading.Lock()

    def take(self) -> Callable[[], None]:
        """A slot, or a ``ServiceError`` 429 (with Retry-After) when all ``cap`` are taken.
        Returns the release, which may be called more than once (it frees the slot once)."""
        with self._lock:
            if self.running >= self.cap:
                raise ServiceError(
                    429,
                    f"at most {self.cap} file jobs run at once ({self.setting}); try again when"
                    " one has finished",
                    {"retry-after": str(self.retry_s)},
                )
            self.running += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self.running -= 1

        return release


MIN_TOKEN_CHARS = 16  # a reviewer's token: long enough not to be guessed


def load_reviewers(path: str | Path) -> dict[str, str]:
    """Reviewers' bearer tokens from a YAML file of ``name: token`` lines: token -> name.

    A name is at most 256 characters (what a review keeps); a token is visible ASCII without
    spaces, at least 16 characters, and no two reviewers share one. A ValueError names the file
    and the reviewer, never a token."""
    import yaml

    from labelrec.config import load_yaml

    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: cannot read it ({err.strerror or err})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        # a reviewer named twice (its first token would be dropped): the name, never a token
        twice = isinstance(err, yaml.constructor.ConstructorError) and "given twice" in str(err)
        problem = f" ({err.problem})" if twice else ""
        raise ValueError(f"{path}{where}: not a YAML mapping of reviewer: token{problem}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a YAML mapping of reviewer: token, one or more")
    tokens: dict[str, str] = {}
    for name, token in data.items():
        shown = str(name).strip()
        if not isinstance(name, str) or not shown or len(shown) > 256:
            raise ValueError(f"{path}: reviewer {name!r}: a name of 1 to 256 characters")
        if not isinstance(token, str) or not re.fullmatch(r"[!-~]+", token):
            raise ValueError(f"{path}: reviewer {shown!r}: the token must be visible ASCII")
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"{path}: reviewer {shown!r}: the token is shorter than {MIN_TOKEN_CHARS}"
                " characters"
            )
        if token in tokens:
            raise ValueError(f"{path}: reviewers {tokens[token]!r} and {shown!r} share a token")
        tokens[token] = shown
    return tokens
