"""ONNX Runtime inference on the CPU: the same tag scores as torch, in a fraction of the time.

``TagRecommender.load(..., backend="auto")`` exports a loaded encoder ``TagModel`` to ONNX
(torch's exporter) and runs it with ONNX Runtime, faster than eager torch with the same outputs
to float32 rounding (``benchmarks/latency.py`` prints both; the figures are in docs/serving.md).
``quantize=True`` runs the same graph with the weights' matrix products (the linear layers and
the tag head) in dynamic int8 (``quantize_graph``, ONNX Runtime's quantizer). Decoders, GPUs
and models over the 2 GB protobuf limit stay on torch.

The exported graph is kept in a cache folder (``$LABELREC_ONNX_CACHE``, else
``$LABELREC_CACHE_DIR/onnx``; ``LABELREC_ONNX_CACHE=off`` exports on every load), under a key
that hashes what the graph is made of (``graph_digest``): the weights, the configuration files
transformers reads with them, the pooling and head bias, and the versions of torch,
transformers, onnx and of this module and labelrec.model; its int8 form beside it under a key
of its own (``int8_key``). A later load of the same model, from any folder, reads it instead of
exporting again (``benchmarks/load_time.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from labelrec.backbones import cache_dir
from labelrec.model import HEAD_BIAS, ModelError, TagModel, is_decoder_tagger
from labelrec.modeldir import shared_mode

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
MAX_ONNX_BYTES = 1_800_000_000  # an ONNX model is one protobuf message: under 2 GB
OPSET = 17
ONNX_CACHE_ENV = "LABELREC_ONNX_CACHE"  # a folder, or off / 0 / false / no
CACHE_OFF = ("off", "0", "false", "no")
CACHE_FORMAT = 1  # bump when what a key covers changes
CACHE_KEEP_FILES = 8  # the cache keeps the most recently used graphs, at most this many
CACHE_KEEP_BYTES = 2 * 1024**3  # and at most this many bytes (the newest graph is always kept)
STALE_WRITE_SECONDS = 3600  # a temporary file this old is a killed process's unfinished write
# files of a model folder besides its weights that transformers reads into the model
GRAPH_FILES = ("config.json", "adapter_config.json", "model.safetensors.index.json")
VERSIONED = ("torch", "transformers", "onnx")  # what exports a graph (torch's with its build)
# what dynamic int8 quantizes: the matrix products of the encoder's linear layers and of the tag
# head (their weights per output channel); the embedding tables stay float32
INT8_OPS = ("MatMul",)


class _ScoresAndPooled(nn.Module):
    """What inference needs from a TagModel: sigmoid tag scores and the pooled vector."""

    def __init__(self, model: TagModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.embed(input_ids, attention_mask)
        return torch.sigmoid(self.model.head(pooled)), pooled


def onnx_installed() -> bool:
    """onnxruntime (to run) and onnx (torch's exporter writes with it) are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def onnx_unsupported(model: TagModel, device: str) -> str | None:
    """Why ``model`` cannot run on ONNX Runtime here, or None when it can."""
    if not onnx_installed():
        return "onnxruntime and onnx are not installed"
    if device != "cpu":
        return f"the model runs on {device} (ONNX Runtime is used on the CPU only)"
    if model.is_decoder:
        return "decoder models run on torch"
    params = list(model.parameters())
    if any(p.dtype != torch.float32 for p in params):
        return "the weights are not float32"
    if sum(p.numel() * p.element_size() for p in params) > MAX_ONNX_BYTES:
        return "the model is over ONNX's 2 GB limit"
    return None


class OnnxTagModel:
    """A TagModel exported to ONNX and run by ONNX Runtime (CPU)."""

    def __init__(self, session: Any, cached: bool = False) -> None:
        self.session = session
        self.cached = cached  # the graph came from the cache (no export in this process)

    @classmethod
    def from_cache(
        cls, key: str | None, num_threads: int | None = None, quantize: bool = False
    ) -> OnnxTagModel | None:
        """A session on the cached graph of ``key`` (``graph_key``), or None when there is none.
        With ``quantize``, on its int8 form: cached, or made from the cached float graph (and
        cached) without exporting it again."""
        folder = onnx_cache_dir()
        if key is None or folder is None:
            return None
        if not quantize:
            return cls._open_cached(folder / f"{key}.onnx", num_threads)
        path = folder / f"{int8_key(key)}.onnx"
        runner = cls._open_cached(path, num_threads)
        if runner is not None:
            return runner
        try:
            data = (folder / f"{key}.onnx").read_bytes()
        except OSError:
            return None
        try:
            data = quantize_graph(data)
            session = open_session(data, num_threads)
        except Exception as err:  # a damaged float graph: the export that follows replaces it
            logger.warning("cannot quantize the cached ONNX graph of %s (%s)", key, err)
            return None
        store_graph(path, data)
        return cls(session, cached=True)

    @classmethod
    def _open_cached(cls, path: Path, num_threads: int | None) -> OnnxTagModel | None:
        """A session on the cached graph ``path``, or None when there is none."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            session = open_session(data, num_threads)
        except Exception as err:  # a damaged file: the export that follows replaces it
            logger.warning("ignoring the cached ONNX graph %s (%s)", path, err)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # the cache removes the least recently used graphs first
        return cls(session, cached=True)

    @classmethod
    def export(
        cls,
        model: TagModel,
        num_threads: int | None = None,
        key: str | None = None,
        quantize: bool = False,
    ) -> OnnxTagModel:
        """Export ``model`` (eval mode, float32, CPU) and open a session on it (with
        ``quantize``, on its int8 form: ``quantize_graph``); the graph, once ONNX Runtime has
        opened it, is cached under ``key`` (``graph_key`` of the folder ``model`` was loaded
        from), the int8 one under ``int8_key(key)`` too."""
        float_graph = export_graph(model)
        data = quantize_graph(float_graph) if quantize else float_graph
        session = open_session(data, num_threads)
        folder = onnx_cache_dir()
        if key is not None and folder is not None:
            store_graph(folder / f"{key}.onnx", float_graph)
            if quantize:
                store_graph(folder / f"{int8_key(key)}.onnx", data)
        return cls(session)

    @property
    def n_tags(self) -> int:
        return int(self.session.get_outputs()[0].shape[1])

    def score_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sigmoid tag scores and pooled vectors of one padded batch (float32)."""
        scores, pooled = self.session.run(
            None,
            {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()},
        )
        return scores, pooled


def onnx_cache_dir() -> Path | None:
    """Where exported graphs are cached: ``$LABELREC_ONNX_CACHE``, else
    ``$LABELREC_CACHE_DIR/onnx``; None when ``LABELREC_ONNX_CACHE`` is off."""
    value = os.environ.get(ONNX_CACHE_ENV, "").strip()
    if value.lower() in CACHE_OFF:
        return None
    try:
        return Path(value).expanduser() if value else cache_dir() / "onnx"
    except RuntimeError as err:  # no home folder to put ~/.cache in: no cache, the load goes on
        logger.info("no ONNX graph cache (%s); set %s", err, ONNX_CACHE_ENV)
        return None


def graph_key(model_dir: str | Path, info: dict[str, Any]) -> str | None:
    """The cache key of the model saved in ``model_dir`` (``graph_digest``), or None where the
    cache is off."""
    return None if onnx_cache_dir() is None else graph_digest(model_dir, info)


def graph_digest(model_dir: str | Path, info: dict[str, Any]) -> str | None:
    """A hex digest of what the exported graph of the model saved in ``model_dir`` is made of
    (equal digests, equal graphs): its weights and the files of ``GRAPH_FILES`` there, the
    pooling and head bias of ``info``, and the versions of torch, transformers, onnx and of the
    code that exports it. None where no graph is exported (no safetensors weights, a decoder,
    weights over ONNX's limit in float32, no onnx) or a part cannot be read: then nothing is
    cached."""
    model_dir = Path(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights or not onnx_installed():
        return None
    try:
        if loaded_bytes(weights) > MAX_ONNX_BYTES:  # runs on torch: not worth hashing
            return None
        files = {}
        for name in GRAPH_FILES:
            if (model_dir / name).is_file():
                files[name] = json.loads((model_dir / name).read_text(encoding="utf-8"))
        config = files.get("config.json")
        if not isinstance(config, dict) or is_decoder_tagger(
            SimpleNamespace(**config), info.get("pooling")
        ):
            return None  # decoders run on torch
        config.pop("_name_or_path", None)  # where it was saved from
        header = {
            "format": CACHE_FORMAT,
            "opset": OPSET,
            "versions": {name: importlib.metadata.version(name) for name in VERSIONED},
            "sources": [_source_digest(name) for name in (__name__, TagModel.__module__)],
            "pooling": info.get("pooling"),
            HEAD_BIAS: info.get(HEAD_BIAS),
            "files": files,
        }
        digest = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
        for path in weights:
            digest.update(f"\0{path.name}\0".encode())
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    except Exception as err:  # an unreadable part: loading the model says what is wrong
        logger.info("no ONNX graph cache for %s (%s: %s)", model_dir, type(err).__name__, err)
        return None
    return digest.hexdigest()


def loaded_bytes(weights: list[Path]) -> int:
    """The size of safetensors ``weights`` loaded in float32, as a tagger loads them (a model
    saved in bfloat16 takes twice its files' size), from the files' headers."""
    from safetensors import safe_open

    total = 0
    for path in weights:
        with safe_open(str(path), framework="pt") as fh:
            total += sum(4 * math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    return total


def _source_digest(module_name: str) -> str:
    """SHA-256 of a module's source, read through its loader (a file, or a zip archive)."""
    spec = sys.modules[module_name].__spec__
    data = spec.loader.get_data(spec.origin)  # type: ignore[union-attr]
    return hashlib.sha256(data).hexdigest()


def export_graph(model: TagModel) -> bytes:
    """The ONNX graph of ``model``'s scores and pooled vectors, serialized."""
    wrapper = _ScoresAndPooled(model).eval()
    # Two rows of different lengths, so padding is part of the traced graph.
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the tracer's notes on transformers' Python checks and the exporter's own, no more
        # (the filters are the process's: other code's warnings still show meanwhile)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", module=r"torch\.onnx")
        torch.onnx.export(
            wrapper,
            (ids, mask),
            buffer,
            input_names=["input_ids", "attention_mask"],
            output_names=["scores", "pooled"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "scores": {0: "batch"},
                "pooled": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def int8_key(key: str) -> str:
    """The cache key of the int8 form of the graph cached under ``key``: it covers the
    quantizer's settings and ONNX Runtime's version."""
    import onnxruntime

    settings = f"{key}\0int8 {INT8_OPS} per channel\0{onnxruntime.__version__}"
    return hashlib.sha256(settings.encode()).hexdigest()


def quantize_graph(data: bytes) -> bytes:
    """A serialized float32 graph with the weights of its matrix products (``INT8_OPS``: the
    linear layers and the tag head; not the attention's products of two activations) in int8,
    one scale per output channel, and their inputs quantized as they come (dynamic int8:
    ``onnxruntime.quantization.quantize_dynamic``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="labelrec-int8-") as tmp, _quiet_quantizer():
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            onnx.load_from_string(data),
            out,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(INT8_OPS),
        )
        return out.read_bytes()


@contextlib.contextmanager
def _quiet_quantizer() -> Any:
    """Without the quantizer's own log lines (tensors it leaves alone, advice to pre-process the
    graph, whose symbolic shape inference does not complete on a transformers encoder), which
    it writes through the root logger. Where the program set no handler there, the root logger
    gets Python's last-resort handler meanwhile, which prints what would print anyway (other
    loggers' warnings): a root logger without one would have ``logging.warning`` set up a
    handler of its own (``basicConfig``) for good."""

    def not_onnxruntime(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in Path(record.pathname).parts

    root = logging.getLogger()
    stand_in = None
    if not root.handlers:
        stand_in = logging.lastResort or logging.NullHandler()
        root.addHandler(stand_in)
    root.addFilter(not_onnxruntime)
    try:
        yield
    finally:
        root.removeFilter(not_onnxruntime)
        if stand_in is not None:
            root.removeHandler(stand_in)


def open_session(data: bytes, num_threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on a serialized graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning: the lexical fusion, the HTTP server and
    # its clients use the same cores between forward passes (docs/serving.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def store_graph(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole (a reader sees the old file or the new one), then trim
    the cache. A cache that cannot be written costs the next load an export, nothing more."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            shared_mode(tmp)  # as readable as a file written in place: a cache users share
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as err:
        logger.warning("cannot cache the ONNX graph in %s (%s)", path.parent, err)
        return
    trim_cache(path.parent, keep=path)


def trim_cache(
    folder: Path,
    keep: Path | None = None,
    max_files: int = CACHE_KEEP_FILES,
    max_bytes: int = CACHE_KEEP_BYTES,
) -> list[Path]:
    """Remove the least recently used graphs of ``folder`` beyond ``max_files`` files or
    ``max_bytes`` bytes (never ``keep``), and unfinished writes of processes killed long ago.
    Returns the files removed."""
    removed = []
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > STALE_WRITE_SECONDS:
                path.unlink()
                removed.append(path)
    entries = []
    for path in folder.glob("*.onnx"):
        with contextlib.suppress(OSError):
            stat = path.stat()
            entries.append((stat.st_mtime, stat.st_size, path))
    entries.sort(key=lambda entry: (entry[2] != keep, -entry[0]))
    files = total = 0
    for _, size, path in entries:
        files += 1
        total += size
        if path != keep and (files > max_files or total > max_bytes):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def choose_backend(
    model: TagModel,
    backend: str,
    device: str,
    quantize: bool,
    num_threads: int | None = None,
    key: str | None = None,
) -> OnnxTagModel | None:
    """The ONNX Runtime model for ``backend`` "onnx" or "auto" (when it can run), else None;
    its graph is cached under ``key`` when one is given (``graph_key``)."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return None
    reason = onnx_unsupported(model, device)
    if reason is not None:
        if backend == "onnx":
            raise ModelError(f"cannot run on ONNX Runtime: {reason}")
        logger.info("inference on torch: %s", reason)
        return None
    try:
        return OnnxTagModel.export(model, num_threads, key, quantize)
    except Exception as err:  # an architecture the exporter (or the quantizer) does not handle
        what = "ONNX export or int8 quantization" if quantize else "ONNX export"
        if backend == "onnx":
            raise ModelError(f"{what} failed: {err}") from err
        logger.warning("%s failed (%s); inference on torch", what, err)
        return None
