"""benchmarks/overlap.py: how close held-out products come to training ones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import overlap


def test_nearest_titles_on_hand_made_titles() -> None:
    cos, best = overlap.nearest_titles(
        ["red plush bear", "wooden train"], ["blue plush bear", "jigsaw puzzle"], cjk=False
    )
    assert best[0] == 0
    assert cos[0] > 0.5 and cos[1] < 0.3  # a colour variant, and nothing like it
    same, _ = overlap.nearest_titles(["乐高城市"], ["乐高城市", "毛绒熊"], cjk=True)
    assert same[0] == pytest.approx(1.0)


def test_colour_variants_split_across_folds_are_counted(tmp_path: Path) -> None:
    """Variants that differ by a word (not by digits or case) have other near-duplicate keys, so
    folds may split them: each is then a held-out product whose twin trained."""
    colours = ["red", "blue", "green", "black", "white", "pink", "grey", "brown"]
    rows = [
        {"id": f"{c}{i}", "title": f"{item}, {c}", "tags": [tag]}
        for i, (item, tag) in enumerate(
            [
                ("Cuddly plush teddy bear with a satin ribbon and stitched nose", "Soft toys"),
                ("Wooden toy train set with magnetic couplings and a coal tender", "Trains"),
            ]
        )
        for c in colours
    ]
    folder = tmp_path / "toy"
    folder.mkdir()
    write_jsonl(rows[::2], folder / "train.jsonl")
    write_jsonl(rows[1::2], folder / "valid.jsonl")
    out = overlap.cv_overlap("toy", tmp_path, k=2)
    assert out["products"] == len(rows)
    assert out["test_title_cos_ge_0.8"] == 1.0 >= out["test_title_cos_ge_0.9"]
    assert out["nearest_has_same_tags"] == pytest.approx(1.0)
    assert np.isfinite(list(out.values())).all()
