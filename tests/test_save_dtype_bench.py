"""benchmarks/save_dtype.py: a model written again in bfloat16, scored beside the original."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import save_dtype  # noqa: E402


def test_bf16_copy_halves_the_weights_and_keeps_the_scores(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys
) -> None:
    out, report = tmp_path / "bf16", tmp_path / "report.json"
    args = ["--model", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
    assert save_dtype.main([*args, "--output", str(out), "--json", str(report)]) == 0
    assert "| weights | weights MB | load s | P@1 |" in capsys.readouterr().out
    assert not (out / "labelrec.resave.json").exists()
    assert (out / "labelrec.json").read_text() == (trained_model_dir / "labelrec.json").read_text()
    payload = json.loads(report.read_text())
    original, copy = payload["rows"].values()
    size = (trained_model_dir / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size == pytest.approx(size / 2, rel=0.05)
    assert 0 < payload["max_score_difference"] < 0.05
    assert copy["P@1"] == pytest.approx(original["P@1"], abs=0.1)
