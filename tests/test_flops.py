"""Training FLOPs as torch counts them, and the matmul peak they are compared with."""

from __future__ import annotations

import math

import pytest
import torch

from labelrec.flops import StepFlops, matmul_peak


def test_step_flops_counts_forward_and_backward_of_the_first_step_only() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8)  # 5 "tokens"
    flops = StepFlops()
    flops.run(5, lambda: model(x).sum().backward())
    # forward 2*n*(8*16 + 16*4); backward: both weight gradients (as much again) and the
    # gradient of the hidden layer's input (2*n*16*4); the input needs no gradient
    forward = 2 * 5 * (8 * 16 + 16 * 4)
    expected = forward + forward + 2 * 5 * 16 * 4
    assert flops.flops_per_token == expected / 5
    flops.run(50, lambda: model(torch.randn(50, 8)).sum().backward())  # not counted
    assert flops.flops_per_token == expected / 5
    assert flops.per_s(tokens=100, seconds=2.0) == expected / 5 * 100 / 2.0


def test_nothing_counted_gives_no_rate() -> None:
    flops = StepFlops()
    assert flops.per_s(tokens=10, seconds=1.0) is None
    assert flops.run(0, lambda: 7) == 7  # an empty batch is not a sample
    assert flops.flops_per_token is None


def test_a_step_torch_cannot_count_runs_again_uncounted(refusing_flop_counter, caplog) -> None:
    """torch 2.11's counter asserts on some grouped-query attention calls: the step then runs
    once more without the counter, from cleared gradients, and no rate is reported."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    layer(x).sum().backward()
    expected = layer.weight.grad.clone()
    layer.zero_grad()
    calls = []

    def step() -> torch.Tensor:
        calls.append(1)
        loss = layer(x).sum()
        loss.backward()
        return loss

    flops = StepFlops()
    with caplog.at_level("WARNING", logger="labelrec.flops"):
        loss = flops.run(3, step, reset=layer.zero_grad)
    assert len(calls) == 2 and float(loss.detach()) == float(layer(x).sum().detach())
    assert torch.equal(layer.weight.grad, expected)  # one step's gradients, not two
    assert flops.flops_per_token is None and flops.per_s(10, 1.0) is None
    assert "incompatible" in flops.uncountable and "cannot count" in caplog.text
    flops.run(3, step)  # later steps run once, uncounted
    assert len(calls) == 3


def test_a_step_that_fails_by_itself_raises_at_once() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bad batch")

    flops = StepFlops()
    with pytest.raises(ValueError, match="bad batch"):
        flops.run(3, broken)
    assert len(calls) == 1 and flops.uncountable is None


def test_matmul_peak_is_a_positive_rate() -> None:
    peak = matmul_peak("cpu", size=64, seconds=0.05)
    assert math.isfinite(peak) and peak > 0
