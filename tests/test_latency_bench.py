"""benchmarks/latency.py: the per-stage table of tagging one product."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import latency  # noqa: E402


def test_latency_table_has_every_stage(trained_model_dir: Path, toy_data_dir: Path, capsys) -> None:
    args = ["--model", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
    assert latency.main([*args, "--products", "4"]) == 0
    out = capsys.readouterr().out
    stages = [line.split(" | ")[0].strip("| ") for line in out.splitlines()[3:]]
    assert stages[:3] == [
        "tokenise",
        "model forward pass, ONNX Runtime",
        "model forward pass, torch",
    ]
    assert "recommend (all of it)" in stages
    assert all(float(line.split(" | ")[1].strip(" |")) >= 0 for line in out.splitlines()[3:])
