"""benchmarks/load_time.py: a tagger's load with its ONNX graph exported or cached."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import load_time


@pytest.mark.slow
def test_three_ways_in_new_processes(trained_model_dir: Path, tmp_path: Path) -> None:
    """Each way's new process finds the cache as its row says (``measure`` checks the backend
    and whether the graph was cached, and raises otherwise); the CLI column is left out here
    (``labelrec suggest`` is tested in test_runtime.py with the cache on)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    rows, same = load_time.measure(trained_model_dir, 1, cache, kinds=("load",))
    assert [row[0] for row in rows] == [name for name, _ in load_time.WAYS] and same
    assert all(row[1] > 0 and math.isnan(row[2]) for row in rows)
    assert len(list(cache.glob("*.onnx"))) == 1
    table = load_time.format_table([("a way", 1.234, 5.678)], 3).splitlines()
    assert table[0].startswith("| load of the tagger, median of 3 new processes |")
    assert table[2] == "| a way | 1.23 | 5.68 |"


def test_refuses_a_folder_that_is_not_a_model(tmp_path: Path, capsys) -> None:
    assert load_time.main(["--model", str(tmp_path)]) == 2
    assert "is not a model directory" in capsys.readouterr().err


def test_key_seconds(trained_model_dir: Path) -> None:
    assert 0 < load_time.key_seconds(trained_model_dir, 2) < 10
