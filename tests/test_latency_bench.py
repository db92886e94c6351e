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
    stage_part, text_part = out.split("the fusion's text-only part")
    rows = [line.strip("| ").split(" | ") for line in stage_part.splitlines() if line[:2] == "| "]
    rows = [row for row in rows if row[0] not in ("stage", "forward batch")]  # not the headers
    text_rows = [line.strip("| ").split(" | ") for line in text_part.splitlines()[3:]]
    assert [row[0] for row in text_rows] == [
        "dense block over the queries' terms (labelrec)",
        "scipy's sparse product",
    ]
    assert all(float(ms) > 0 for row in text_rows for cell in row[1:] for ms in cell.split(" / "))
    stages = [row[0].strip() for row in rows]
    assert stages[:3] == [
        "tokenise",
        "model forward pass, ONNX Runtime",
        "model forward pass, torch",
    ]
    assert "suggest (all of it)" in stages
    assert "suggest, fusion's text part after the forward pass, not beside it" in stages
    assert stages[-5:] == [str(b) for b in latency.THROUGHPUT_BATCHES]
    times = {row[0].strip(): float(row[1]) for row in rows[:-5]}
    assert times["suggest (all of it)"] > 0 and all(t >= 0 for t in times.values())
    assert all(float(rate) > 0 for row in rows[-5:] for rate in row[1:])  # products/s
    assert all(len(row) == 3 for row in rows[-5:])  # lists of 16 and of 64
    diff = float(out.split("largest difference ONNX Runtime - torch (scores, embeddings): ")[1][:7])
    assert diff < 1e-4


def test_busy_processes_spin_while_it_measures_and_stop_after(
    trained_model_dir: Path, toy_data_dir: Path, capsys
) -> None:
    import multiprocessing

    args = ["--model", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
    assert latency.main([*args, "--products", "4", "--busy", "1"]) == 0
    assert "1 other processes spinning" in capsys.readouterr().out
    for child in multiprocessing.active_children():  # joins the terminated ones
        child.join(timeout=5)
    assert not multiprocessing.active_children()
