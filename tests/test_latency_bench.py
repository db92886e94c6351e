"""benchmarks/latency.py: the per-stage table of tagging one product."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import latency  # noqa: E402


def test_latency_table_has_every_stage(trained_model_dir: Path, toy_data_dir: Path, capsys) -> None:
    args = ["--model", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
    assert latency.main([*args, "--products", "64", "--throughput"]) == 0
    out = capsys.readouterr().out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    rows = [row for row in rows if row[0] not in ("stage", "forward batch")]  # not the headers
    stages = [row[0].strip() for row in rows]
    assert stages[:3] == [
        "tokenise",
        "model forward pass, ONNX Runtime",
        "model forward pass, torch",
    ]
    assert "suggest (all of it)" in stages
    assert "suggest, fusion's text part after the forward pass, not beside it" in stages
    assert stages[-5:] == [str(b) for b in latency.THROUGHPUT_BATCHES]
    assert all(float(value) >= 0 for row in rows for value in row[1:])
    assert all(len(row) == 3 for row in rows[-5:])  # lists of 16 and of 64
    diff = float(out.split("largest difference ONNX Runtime - torch (scores, embeddings): ")[1][:7])
    assert diff < 1e-4
