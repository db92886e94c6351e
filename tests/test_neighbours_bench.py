"""benchmarks/neighbours.py: the TF-IDF neighbour voter over a grid of k and power."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import neighbours


def _catalog(root: Path) -> Path:
    """Three ball products and one car in train; valid: the car product's own title."""
    folder = root / "toy"
    folder.mkdir()
    rows = [{"id": "c", "title": "red car toy", "tags": ["car"]}]
    rows += [
        {"id": f"b{i}", "title": f"{colour} ball toy", "tags": ["ball"]}
        for i, colour in enumerate(["blue", "green", "pink"])
    ]
    write_jsonl(rows, folder / "train.jsonl")
    write_jsonl([{"id": "v", "title": "red car toy", "tags": ["car"]}], folder / "valid.jsonl")
    return folder


def test_the_nearest_product_or_the_many(tmp_path: Path, capsys) -> None:
    folder = _catalog(tmp_path)
    got = neighbours.grid_scores(folder, [1, 4], [1e-6])
    # k = 1: the identical title's tag first; k = 4 with near-equal weights: three balls to one
    # car, so the car second (nDCG@3 1 / log2(3))
    assert got[(1, 1e-6)] == pytest.approx((1.0, 1.0))
    assert got[(4, 1e-6)] == pytest.approx((0.0, 1 / math.log2(3)))
    # a steep power lets the identical title outvote the three others again
    assert neighbours.grid_scores(folder, [4], [8.0])[(4, 8.0)] == pytest.approx((1.0, 1.0))

    argv = ["--catalogs", "toy", "--data-root", str(tmp_path), "--k", "1", "4", "--power", "8"]
    assert neighbours.main(["lexical.k=4", "lexical.power=8", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| toy: k | power 8 |"
    # both rank the car first: the best is the smaller k; the configuration's setting starred
    assert lines[2:] == ["| 1 | **1.000 / 1.000** |", "| 4 | 1.000 / 1.000 * |"]
    assert neighbours.main(["--catalogs", "gone", "--data-root", str(tmp_path)]) == 2
    assert "no train.jsonl and valid.jsonl" in capsys.readouterr().err
