"""benchmarks/lengths.py: products' lengths in model tokens."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from conftest import write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lengths


def test_counts_and_table_on_a_hand_made_catalog(
    tiny_backbone: Path, tmp_path: Path, capsys
) -> None:
    from labelrec.model import load_tokenizer

    folder = tmp_path / "toy"
    folder.mkdir()
    long = " ".join(["toy"] * 40)
    write_jsonl([{"id": "a", "title": "red toy", "tags": ["t"]}], folder / "train.jsonl")
    write_jsonl(
        [{"id": "b", "title": "toy", "description": long, "tags": ["t"]}], folder / "valid.jsonl"
    )
    tokenizer = load_tokenizer(str(tiny_backbone))
    counts = lengths.token_counts(tokenizer, folder)
    single = len(tokenizer("red toy")["input_ids"])
    pair = len(tokenizer("toy", long)["input_ids"])
    assert counts.tolist() == [single, pair] and pair > 40  # nothing cut
    argv = ["--catalogs", "toy", "--data-root", str(tmp_path), "--backbone", str(tiny_backbone)]
    assert lengths.main([*argv, "--limits", str(single), str(pair)]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    median = np.median([single, pair])
    assert row == f"| toy | 2 | {median:.0f} | {np.percentile([single, pair], 90):.0f} | 50% | 0% |"
    assert lengths.main(["--catalogs", "gone", "--data-root", str(tmp_path)]) == 2
    assert "gone: no such catalog folder" in capsys.readouterr().err
