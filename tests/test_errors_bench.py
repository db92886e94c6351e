"""benchmarks/errors.py: wrong first tags by kind, and the confusions behind them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import errors  # noqa: E402

from labelrec.data import Product, TagVocab  # noqa: E402


def test_wrong_first_tags_are_counted_by_kind_and_confusion() -> None:
    products = [
        Product("a", "x", tags=["Toys", "Toys > Cars", "brand:Lego"]),
        Product("b", "x", tags=["Games", "brand:Brio"]),
        Product("c", "x", tags=["Games", "Hobbies"]),
        Product("d", "x", tags=["品类:手机", "品牌:华为"]),
        Product("e", "x", tags=["Toys"]),
    ]
    first = [
        ("Toys", True),  # right
        ("Toys", True),  # a wrong top level
        ("Toys > Cars", True),  # a wrong deeper level
        ("品牌:小米", False),  # a new tag
        ("brand:Lego", True),  # a wrong facet
    ]
    kinds, pairs = errors.first_tag_errors(first, products)
    assert kinds == {"top level": 1, "deeper level": 1, "new": 1, "brand": 1}
    assert pairs[("Toys", "Games")] == 1
    assert pairs[("Toys > Cars", "Games, Hobbies")] == 1
    assert pairs[("品牌:小米", "-")] == 1  # no top-level category among its tags
    assert errors.tag_kind("品牌:华为") == "品牌" and errors.tag_kind("wooden") == "other"
    assert errors.tag_kind("Star Wars: Rebels") == "top level"


def test_first_tags_take_a_new_tag_only_above_every_known_one() -> None:
    products = [Product("a", "x", tags=["Toys"]), Product("b", "x", tags=["Games"])]
    vocab = TagVocab.from_products(products)
    scores = np.zeros((2, len(vocab)), dtype=np.float32)
    for i, row in enumerate([{"Toys": 0.2, "Games": 0.7}, {"Toys": 0.9, "Games": 0.1}]):
        for tag, s in row.items():
            scores[i, vocab.index[tag]] = s
    new = [{"brand:Zorb": 0.8}, {"brand:Zorb": 0.5}]
    assert errors.first_tags(scores, new, products, vocab) == [
        ("brand:Zorb", False),
        ("Toys", True),
    ]


def test_the_tables_print_for_a_trained_model(trained_model_dir: Path, toy_data_dir: Path, capsys):
    args = ["--model", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
    assert errors.main(args) == 0
    out = capsys.readouterr().out
    found = re.search(r"first tag wrong for (\d+) of (\d+) products", out)
    wrong, total = int(found.group(1)), int(found.group(2))
    assert 0 <= wrong <= total and total > 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    by_kind = [r for r in rows[1:] if r.count("|") == 3 and not r.startswith("| wrong")]
    assert sum(int(r.split("|")[2]) for r in by_kind) == wrong
