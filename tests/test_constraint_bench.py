"""benchmarks/constraint.py: both constraint processors timed on the same steps, masks equal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import toy_catalog, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import constraint as bench  # noqa: E402


def test_both_processors_are_timed_and_mask_alike(tiny_decoder: Path, tmp_path: Path, capsys):
    folder = tmp_path / "toy"
    folder.mkdir()
    write_jsonl(toy_catalog(4), folder / "train.jsonl")
    write_jsonl(toy_catalog(1), folder / "valid.jsonl")
    out = tmp_path / "constraint.json"
    argv = ["--catalog", "toy", "--data-root", str(tmp_path), "--backbone", str(tiny_decoder)]
    argv += ["--products", "3", "--beams", "2", "--repeats", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["same_masks"] is True
    assert result["products"] == 3 and result["beams"] == 2 and result["steps"] > 1
    assert set(result["seconds"]) == {"prefix_allowed_tokens_fn", "labelrec _TrieConstraint"}
    assert all(s > 0 for s in result["seconds"].values())
    assert "| labelrec _TrieConstraint |" in capsys.readouterr().out


def test_a_missing_catalog_is_named(tmp_path: Path, capsys):
    assert bench.main(["--catalog", "nowhere", "--data-root", str(tmp_path)]) == 2
    assert "nowhere/train.jsonl not found" in capsys.readouterr().err
