"""Training compute: FLOPs counted by torch, and the machine's matmul peak to compare them with.

The training loops count the FLOPs of their first batch (forward and backward, with
``torch.utils.flop_counter.FlopCounterMode``: matrix products, and attention where the counter
has a formula for the kernel torch dispatches, which for scaled-dot-product attention on the CPU
it has not) and scale them by each epoch's tokens. Counting every batch would slow training (the
mode sees every operator in Python); for titles of tens of tokens the work per token hardly
depends on the batch, since the matrix products grow with the tokens and attention's share is
small.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")


class StepFlops:
    """FLOPs of the first counted step, per token; ``run()`` runs each training step."""

    def __init__(self) -> None:
        self.flops_per_token: float | None = None
        self.uncountable: str | None = None  # why torch could not count the first step

    def run(
        self,
        tokens: int,
        step: Callable[..., T],
        *args: Any,
        reset: Callable[[], None] | None = None,
    ) -> T:
        """``step(*args)`` (a forward and backward pass), counting its FLOPs the first time.

        Some torch releases cannot count some operators (torch 2.11's counter asserts on some
        grouped-query attention calls): that step then runs again uncounted, after ``reset()``
        (clearing the gradients of the failed try), and no FLOP rate is reported.
        """
        if self.flops_per_token is not None or self.uncountable is not None or tokens <= 0:
            return step(*args)
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False)
        try:
            with mode:
                out = step(*args)
        except Exception as err:
            if not _raised_by_counter(err):  # the step's own failure
                raise
            self.uncountable = f"{type(err).__name__}: {err}"
            logger.warning("torch cannot count this model's FLOPs (%s)", self.uncountable)
            if reset is not None:
                reset()
            return step(*args)
        self.flops_per_token = mode.get_total_flops() / tokens
        return out

    def per_s(self, tokens: int, seconds: float) -> float | None:
        """Estimated training FLOP/s over ``tokens`` processed in ``seconds``."""
        if self.flops_per_token is None or seconds <= 0:
            return None
        return self.flops_per_token * tokens / seconds


def _raised_by_counter(err: BaseException) -> bool:
    """True when ``err`` was raised inside torch's FLOP counter (not by the step itself)."""
    from torch.utils import flop_counter

    counter_file = flop_counter.__file__
    return any(frame.filename == counter_file for frame in traceback.extract_tb(err.__traceback__))


def matmul_peak(
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    size: int | None = None,
    seconds: float = 1.0,
) -> float:
    """FLOP/s of square matrix products on ``device`` in ``dtype``: the machine's practical FLOP
    limit for that dtype (by default bfloat16 on a GPU, float32 on a CPU)."""
    device = torch.device(device)
    gpu = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if gpu else torch.float32)
    size = size or (8192 if gpu else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize(device)

    torch.mm(a, b)  # warm-up
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        n += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return 2.0 * size**3 * n / elapsed
