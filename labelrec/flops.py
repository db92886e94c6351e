"""Training compute: FLOPs counted by torch, and the machine's matmul peak to compare them with.

The training loops count the FLOPs of their first batch (forward and backward, with
``torch.utils.flop_counter.FlopCounterMode``: matrix products and attention, as torch dispatches
them) and scale them by each epoch's tokens. Counting every batch would slow training (the mode
sees every operator in Python); for titles of tens of tokens the work per token hardly depends
on the batch, since the matrix products grow with the tokens and attention's share is small.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch


class StepFlops:
    """FLOPs of the first counted step, per token; ``count()`` wraps that step."""

    def __init__(self) -> None:
        self.flops_per_token: float | None = None

    @contextlib.contextmanager
    def count(self, tokens: int) -> Iterator[None]:
        """Count the FLOPs of the enclosed forward and backward pass, the first time only."""
        if self.flops_per_token is not None or tokens <= 0:
            yield
            return
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False)
        with mode:
            yield
        self.flops_per_token = mode.get_total_flops() / tokens

    def per_s(self, tokens: int, seconds: float) -> float | None:
        """Estimated training FLOP/s over ``tokens`` processed in ``seconds``."""
        if self.flops_per_token is None or seconds <= 0:
            return None
        return self.flops_per_token * tokens / seconds


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
