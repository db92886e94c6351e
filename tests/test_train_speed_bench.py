"""benchmarks/train_speed.py: training products/s and FLOP/s per backbone, and their share."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_speed  # noqa: E402


def test_rows_for_a_tagger_and_a_generator(
    tiny_backbone: Path, tiny_decoder: Path, toy_data_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import tempfile

    scratch = tmp_path / "tmp"  # the trainings' temporary outputs, and all they leave
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "speed.json"
    args = ["--data", str(toy_data_dir.parent), "--catalog", toy_data_dir.name, "--steps", "2"]
    args += ["--taggers", str(tiny_backbone), "--generators", str(tiny_decoder), "--json", str(out)]
    assert train_speed.main(args) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    peaks = result["peak_flops_per_s"]  # one per dtype the rows compute in
    assert peaks and all(v > 0 for v in peaks.values())
    assert [r["part"] for r in result["rows"]] == ["tagger", "generator"]
    for row in result["rows"]:
        assert row["products/s"] > 0 and row["flops/s"] > 0
        assert row["computes in"] in ("float32", "bfloat16")
        assert row["share"] == row["flops/s"] / peaks[row["computes in"]]
    assert result["rows"][1]["loss over"] == "tag tokens"  # generate.narrow_training's default
    table = capsys.readouterr().out
    assert "| tagger |" in table and "| generator |" in table and "share of matmul peak" in table
    assert not [p.name for p in scratch.iterdir()]  # an output's lock file goes with it


def test_whole_vocabulary_trains_the_generator_over_every_token(
    tiny_decoder: Path, toy_data_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "speed.json"
    args = ["--data", str(toy_data_dir.parent), "--catalog", toy_data_dir.name, "--steps", "1"]
    args += ["--taggers", "--generators", str(tiny_decoder), "--whole-vocabulary"]
    assert train_speed.main(args + ["--json", str(out)]) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert [(r["part"], r["loss over"]) for r in rows] == [("generator", "vocabulary")]
    assert "| vocabulary |" in capsys.readouterr().out


def test_a_missing_catalog_is_named(tmp_path: Path, capsys) -> None:
    assert train_speed.main(["--data", str(tmp_path), "--catalog", "nowhere"]) == 2
    assert "nowhere/train.jsonl not found" in capsys.readouterr().err
