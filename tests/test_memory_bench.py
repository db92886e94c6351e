"""benchmarks/memory.py: peak memory of `labelrec train` by catalog size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import memory

pytestmark = pytest.mark.slow


def test_peak_rss_of_a_child_is_its_own(tmp_path: Path) -> None:
    """Each run reports its own peak, not this (larger) process's: a small one is small."""
    ballast = bytearray(300 * 2**20)  # this process: over 300 MB
    ballast[::4096] = b"1" * len(ballast[::4096])
    grow = "x = bytearray(400 * 2**20); x[::4096] = b'1' * len(x[::4096])"
    big, _ = memory.peak_rss(["-c", grow], tmp_path / "big.log")
    small, _ = memory.peak_rss(
        ["-c", "import sys; assert sys.argv == ['-c', 'a']", "a"], tmp_path / "small.log"
    )
    assert big > 400 * 2**20 > 300 * 2**20 > 4 * small
    script = tmp_path / "s.py"
    script.write_text("import sys; raise SystemExit(int(sys.argv[1]))\n")
    assert memory.peak_rss([str(script), "0"], tmp_path / "ok.log")[0] < 100 * 2**20
    with pytest.raises(RuntimeError, match="exited 3"):
        memory.peak_rss([str(script), "3"], tmp_path / "bad.log")
    del ballast


def test_table_of_two_tiny_trainings(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rows.json"
    argv = ["--products", "40", "60", "--json", str(out), "--keep", str(tmp_path / "w"), "--"]
    overrides = [f"model.backbone={tiny_backbone}", "train.epochs=1", "lexical.enabled=false"]
    assert memory.main([*argv, *overrides]) == 0
    rows = json.loads(out.read_text())
    assert [r["products"] for r in rows] == [40, 60]
    assert all(0.1 < r["peak_rss_gb"] < 8 and 0 <= r["nDCG@3"] <= 1 for r in rows)
    table = capsys.readouterr().out
    assert "| 40 | 30 |" in table and "per 1,000 trained products" in table
    with pytest.raises(SystemExit):
        memory.main(["--products", "5"])
