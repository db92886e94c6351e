"""benchmarks/eval_memory.py: the memory of an evaluation, of scores or of ranked lists."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import eval_memory


@pytest.mark.parametrize("mode", [[], ["--ranked"]])
def test_a_row_for_each_size(mode: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    eval_memory.main(["--products", "30", "40", "--tags", "50", "--proposals", "2", *mode])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [30, 40]
    # the vocabulary, a gold tag outside it for every fifth product, two proposals a product
    # (each named in the ranked lists or decisions too)
    assert [int(r[2]) for r in rows] == [50 + 6 + 60, 50 + 8 + 80]
    assert all(float(r[5]) > 0 for r in rows)  # bytes a cell
