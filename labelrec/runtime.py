"""ONNX Runtime inference on the CPU: the same tag scores as torch, in a fraction of the time.

``TagRecommender.load(..., backend="auto")`` exports a loaded encoder ``TagModel`` to ONNX in
memory (torch's exporter, no file written) and runs it with ONNX Runtime, faster than eager
torch with the same outputs to float32 rounding (``benchmarks/latency.py`` prints both; the
figures are in docs/serving.md). Decoders, GPUs, int8 and models over the 2 GB protobuf limit
stay on torch.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from labelrec.model import ModelError, TagModel

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
MAX_ONNX_BYTES = 1_800_000_000  # an ONNX model is one protobuf message: under 2 GB


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


def onnx_unsupported(model: TagModel, device: str, quantize: bool) -> str | None:
    """Why ``model`` cannot run on ONNX Runtime here, or None when it can."""
    if not onnx_installed():
        return "onnxruntime and onnx are not installed"
    if device != "cpu":
        return f"the model runs on {device} (ONNX Runtime is used on the CPU only)"
    if quantize:
        return "dynamic int8 runs on torch"
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

    def __init__(self, session: Any) -> None:
        self.session = session

    @classmethod
    def export(cls, model: TagModel, num_threads: int | None = None) -> OnnxTagModel:
        """Export ``model`` (eval mode, float32, CPU) in memory and open a session on it."""
        import onnxruntime as ort

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
                opset_version=17,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning: the lexical fusion, the HTTP server and
        # its clients use the same cores between forward passes (docs/serving.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )
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


def choose_backend(
    model: TagModel, backend: str, device: str, quantize: bool, num_threads: int | None = None
) -> OnnxTagModel | None:
    """The ONNX Runtime model for ``backend`` "onnx" or "auto" (when it can run), else None."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return None
    reason = onnx_unsupported(model, device, quantize)
    if reason is not None:
        if backend == "onnx":
            raise ModelError(f"cannot run on ONNX Runtime: {reason}")
        logger.info("inference on torch: %s", reason)
        return None
    try:
        return OnnxTagModel.export(model, num_threads)
    except Exception as err:  # an architecture the exporter does not handle
        if backend == "onnx":
            raise ModelError(f"ONNX export failed: {err}") from err
        logger.warning("ONNX export failed (%s); inference on torch", err)
        return None
