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


def test_p_at_1_is_binned_by_the_training_count_of_the_deepest_category() -> None:
    train = [Product(str(i), "x", tags=["Toys", "Toys > Cars"]) for i in range(5)]
    train += [
        Product("5", "x", tags=["Toys", "Toys > Dolls"]),
        Product("6", "x", tags=["brand:Lego"]),
    ]
    vocab = TagVocab.from_products(train)
    products = [
        Product("a", "x", tags=["Toys", "Toys > Cars"]),  # 5 training products: right
        Product("b", "x", tags=["Toys", "Toys > Dolls"]),  # 1: wrong
        Product("c", "x", tags=["Games", "Games > Chess"]),  # never seen: wrong
        Product("d", "x", tags=["brand:Lego"]),  # no category path: right
    ]
    assert errors.deepest_category(products[0]) == "Toys > Cars"
    assert errors.deepest_category(products[3]) is None
    first = [("Toys", True), ("Games", True), ("Toys", True), ("brand:Lego", True)]
    counts = errors.by_category_count(first, products, vocab)
    assert counts == {
        ("5 or more", True): 1,
        ("1", False): 1,
        ("0", False): 1,
        ("no category path", True): 1,
    }


def test_cv_dir_sums_the_folds(trained_model_dir: Path, toy_data_dir: Path, tmp_path, capsys):
    valid = (toy_data_dir / "valid.jsonl").read_text("utf-8")
    for fold in ("fold1", "fold2"):
        (tmp_path / fold).mkdir()
        (tmp_path / fold / "labelrec").symlink_to(trained_model_dir)
        (tmp_path / fold / "test.jsonl").write_text(valid, "utf-8")
    assert errors.main(["--cv-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"first tag wrong for \d+ of (\d+) products", out).group(1))
    assert total == 2 * len(valid.splitlines())
    binned = [line for line in out.splitlines() if line.count("|") == 5 and "---" not in line]
    assert sum(int(r.split("|")[2]) for r in binned[1:]) == total  # every product in one bin
