"""benchmarks/suggest_memory.py: the memory of suggestions for lists of each size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import toy_catalog, write_jsonl

from labelrec.predict import TagRecommender

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import suggest_memory

pytestmark = pytest.mark.slow


def test_a_row_for_each_size(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(toy_catalog(1), tmp_path / "catalog.jsonl")
    argv = ["--model", str(trained_model_dir), "--data", str(data), "--products", "5", "40"]
    suggest_memory.main([*argv, "--chunk", "7"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [5, 40]
    n_tags = len(TagRecommender.load(trained_model_dir).vocab)
    assert all(int(r[1]) == n_tags for r in rows)
    assert all(int(r[3]) >= int(r[2]) > 0 and float(r[5]) >= 0 for r in rows), rows


def test_eval_rows(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(toy_catalog(1), tmp_path / "catalog.jsonl")
    argv = ["--model", str(trained_model_dir), "--data", str(data), "--products", "5", "40"]
    for way in ([], ["--matrix"]):
        suggest_memory.main([*argv, "--chunk", "7", "--eval", *way])
        lines = capsys.readouterr().out.splitlines()
        assert "load + eval MB" in lines[0]
        rows = [line.split("|")[1:-1] for line in lines[2:]]
        assert [int(r[0]) for r in rows] == [5, 40]
        assert all(int(r[3]) >= int(r[2]) > 0 and float(r[5]) >= 0 for r in rows), rows
    with pytest.raises(SystemExit):
        suggest_memory.main([*argv, "--matrix"])
