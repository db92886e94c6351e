"""Training FLOPs as torch counts them, and the matmul peak they are compared with."""

from __future__ import annotations

import math

import torch

from labelrec.flops import StepFlops, matmul_peak


def test_step_flops_counts_forward_and_backward_of_the_first_step_only() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8)  # 5 "tokens"
    flops = StepFlops()
    with flops.count(tokens=5):
        model(x).sum().backward()
    # forward 2*n*(8*16 + 16*4); backward: both weight gradients (as much again) and the
    # gradient of the hidden layer's input (2*n*16*4); the input needs no gradient
    forward = 2 * 5 * (8 * 16 + 16 * 4)
    expected = forward + forward + 2 * 5 * 16 * 4
    assert flops.flops_per_token == expected / 5
    with flops.count(tokens=50):  # later steps are not counted
        model(torch.randn(50, 8)).sum().backward()
    assert flops.flops_per_token == expected / 5
    assert flops.per_s(tokens=100, seconds=2.0) == expected / 5 * 100 / 2.0


def test_nothing_counted_gives_no_rate() -> None:
    flops = StepFlops()
    assert flops.per_s(tokens=10, seconds=1.0) is None
    with flops.count(tokens=0):  # an empty batch is not a sample
        pass
    assert flops.flops_per_token is None


def test_matmul_peak_is_a_positive_rate() -> None:
    peak = matmul_peak("cpu", size=64, seconds=0.05)
    assert math.isfinite(peak) and peak > 0
