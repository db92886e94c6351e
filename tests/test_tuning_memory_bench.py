"""benchmarks/tuning_memory.py: the memory of the pooled tuning's weight search and reranker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tuning_memory


def test_a_row_for_each_size(capsys: pytest.CaptureFixture[str]) -> None:
    tuning_memory.main(["--products", "40", "60", "--tags", "2000", "--proposals", "2"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [40, 60]
    # four voters' float32 scores and the absent booleans: 17 bytes a cell
    assert [float(r[2]) for r in rows] == [round(n * 2000 * 17 / 2**20) for n in (40, 60)]
    assert all(float(r[3]) > 0 and float(r[5]) > 0 for r in rows)
    assert {r[7].strip() for r in rows} == {"yes"}  # the synthetic evidence has room to rerank
