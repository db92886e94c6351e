"""benchmarks/llm.py: the generator's table on a catalog folder, and --reuse with other beams."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import llm  # noqa: E402


def test_reuse_decodes_the_trained_generator_with_other_beams(
    trained_model_dir: Path, tiny_decoder: Path, toy_data_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "gen"
    common = ["--catalog", toy_data_dir.name, "--data", str(toy_data_dir.parent)]
    common += ["--base", str(trained_model_dir), "--output", str(out)]
    common += ["--backbone", str(tiny_decoder), "--config", str(ROOT / "configs" / "tiny.yaml")]
    common += ["--latency-products", "1"]
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert llm.main([*common, "--json", str(first), "generate.num_beams=2"]) == 0
    assert "| fused (generator weights" in capsys.readouterr().out
    assert json.loads(first.read_text())["speed"]["beams"] == 2
    assert pickle.loads((out / "bench_votes.pkl").read_bytes())["num_beams"] == 2

    assert llm.main([*common, "--reuse", "--json", str(second), "generate.num_beams=3"]) == 0
    assert json.loads(second.read_text())["speed"]["beams"] == 3
    # the cached votes of 2 beams were not taken for 3: decoded again, and cached anew
    assert pickle.loads((out / "bench_votes.pkl").read_bytes())["num_beams"] == 3
