"""benchmarks/load_time.py: a tagger's load with its ONNX graph exported or cached."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import load_time


@pytest.mark.slow
def test_three_ways_in_new_processes(trained_model_dir: Path, capsys) -> None:
    # measure() checks in each child that the graph was exported or read as its row says
    assert load_time.main(["--model", str(trained_model_dir), "--runs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in out[2:5]] == [
        f"| {name}" for name, _ in load_time.WAYS
    ]
    assert all(float(cell) > 0 for line in out[2:5] for cell in line.strip("| ").split(" | ")[1:])
    assert out[5].endswith("the same suggestions in every run: True")


def test_refuses_a_folder_that_is_not_a_model(tmp_path: Path, capsys) -> None:
    assert load_time.main(["--model", str(tmp_path)]) == 2
    assert "is not a model directory" in capsys.readouterr().err
