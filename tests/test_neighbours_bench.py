"""benchmarks/neighbours.py: the TF-IDF and the embedding neighbour voters over a grid of k and
power."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import neighbours


def _catalog(root: Path) -> Path:
    """Three ball products and one car in train; valid: the car product's own title, and a kite."""
    folder = root / "toy"
    folder.mkdir()
    rows = [{"id": "c", "title": "red car toy", "tags": ["car"]}]
    rows += [
        {"id": f"b{i}", "title": f"{colour} ball toy", "tags": ["ball"]}
        for i, colour in enumerate(["blue", "green", "pink"])
    ]
    write_jsonl(rows, folder / "train.jsonl")
    valid = [{"id": "v", "title": "red car toy", "tags": ["car"]}]
    valid += [{"id": "w", "title": "kite toy", "tags": ["kite"]}]  # a tag train does not have
    write_jsonl(valid, folder / "valid.jsonl")
    return folder


def test_the_nearest_product_or_the_many(tmp_path: Path, capsys) -> None:
    folder = _catalog(tmp_path)
    got = neighbours.grid_scores(folder, [1, 4], [1e-6])
    # k = 1: the identical title's tag first; k = 4 with near-equal weights: three balls to one
    # car, so the car second (nDCG@3 1 / log2(3)). The kite, a tag outside the vocabulary, is a
    # miss for P@1 and left out of nDCG@3
    assert got[(1, 1e-6)] == pytest.approx((0.5, 1.0))
    assert got[(4, 1e-6)] == pytest.approx((0.0, 1 / math.log2(3)))
    # a steep power lets the identical title outvote the three others again
    assert neighbours.grid_scores(folder, [4], [8.0])[(4, 8.0)] == pytest.approx((0.5, 1.0))
    # the configuration reaches the voter: with tags of two products or more, the car is out
    # of the vocabulary too
    fewer = neighbours.grid_scores(folder, [1], [8.0], ["data.min_tag_count=2"])
    assert fewer[(1, 8.0)][0] == 0.0

    argv = ["--catalogs", "toy", "--data-root", str(tmp_path), "--k", "1", "4"]
    argv += ["--power", "8", "1e-6", "--set", "lexical.k=4", "--set", "lexical.power=8"]
    assert neighbours.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| toy: k | power 1e-06 | power 8 |"
    # three settings tie: the best is the smallest k, then the smallest power; the
    # configuration's setting starred
    assert lines[2:] == [
        "| 1 | **0.500 / 1.000** | 0.500 / 1.000 |",
        "| 4 | 0.000 / 0.631 | 0.500 / 1.000 * |",
    ]
    # tables of several catalogs apart (so that each stays a table in Markdown)
    assert neighbours.main([*argv[:2], "toy", *argv[2:]]) == 0
    assert capsys.readouterr().out.splitlines()[4:7] == ["", lines[0], lines[1]]
    # every catalog is looked for before any is scored
    assert neighbours.main(["--catalogs", "toy", "gone", "--data-root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert not out and "gone: no train.jsonl and valid.jsonl" in err


def test_a_models_embedding_voter_over_the_grid(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys
) -> None:
    """``--models``: the grid at the model's own setting is the voter as the model scores, at a
    steep power too; each catalog's table marks its own model's setting."""
    import json
    import shutil

    from labelrec import metrics
    from labelrec.data import read_catalog
    from labelrec.predict import TagRecommender
    from labelrec.taggers.neighbours import EmbeddingNeighbours

    rec = TagRecommender.load(trained_model_dir)
    voter = rec.fusion.embedding
    valid = read_catalog(toy_data_dir / "valid.jsonl").products
    _, embeddings = rec.predict_scores(valid, with_embeddings=True)
    y = rec.vocab.encode(valid)
    own = (voter.k, voter.power)
    got, mark = neighbours.embedding_grid_scores(
        trained_model_dir, toy_data_dir, [1, voter.k], [1.0, voter.power, 100.0], []
    )
    assert mark == own and len(got) == 6
    for power in (voter.power, 100.0):  # 100: norm ** power (3.5 ** 100) overflows float32
        served = EmbeddingNeighbours(voter.train, voter.y_train, voter.k, power).scores(embeddings)
        assert got[(voter.k, power)] == pytest.approx(
            (metrics.precision_at_k(y, served, 1), metrics.ndcg_at_k(y, served, 3)), abs=1e-6
        )
    # k = 1: the nearest training product's tags alone, whatever the power
    assert got[(1, 1.0)] == got[(1, own[1])]

    other = tmp_path / "other"  # the same model with another setting of its voter
    shutil.copytree(trained_model_dir, other)
    (other / "embedding_knn.json").write_text(
        json.dumps({"k": 7, "power": 3.0, "format_version": 1})
    )
    root, name = str(toy_data_dir.parent), toy_data_dir.name
    argv = ["--catalogs", name, name, "--data-root", root, "--k", "7", str(voter.k)]
    argv += ["--power", "3", str(voter.power), "--models", str(trained_model_dir), str(other)]
    assert neighbours.main(argv) == 0
    first, second = capsys.readouterr().out.split("\n\n")
    assert first.splitlines()[0] == f"| {name}: k | power 3 | power {voter.power:g} |"
    # the first model's setting (k 30, its power) starred, the second's (k 7, power 3)
    assert first.splitlines()[3].endswith(" * |") and " * |" not in first.splitlines()[2]
    cells = second.splitlines()[2].split(" | ")
    assert cells[1].endswith(" *") and " *" not in cells[2] and " * |" not in second.splitlines()[3]
    # without --k and --power: the embedding grid
    assert neighbours.main(["--catalogs", name, "--data-root", root, "--models", argv[-2]]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].endswith("| power 1 | power 2 | power 4 | power 8 | power 16 | power 32 |")
    assert [row.split(" | ")[0] for row in table[2:]] == [
        f"| {k}" for k in (5, 10, 20, 30, 50, 100)
    ]

    # refused before anything is scored: one model per catalog; a refit model, whose neighbours
    # are the valid products; a model of another catalog; no model; no embedding voter
    with pytest.raises(SystemExit):
        neighbours.main([*argv[:-1]])
    refit = tmp_path / "refit"
    shutil.copytree(trained_model_dir, refit)
    info = json.loads((refit / "labelrec.json").read_text())
    (refit / "labelrec.json").write_text(json.dumps({**info, "refit": {"epochs": 1}}))
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(trained_model_dir, elsewhere)
    (elsewhere / "labelrec.json").write_text(
        json.dumps({**info, "train_source": "data/amazon_uk_toys/train.jsonl"})
    )
    plain = tmp_path / "plain"
    shutil.copytree(trained_model_dir, plain)
    meta = json.loads((plain / "fusion.json").read_text())
    meta["taggers"] = [t for t in meta["taggers"] if t != "embedding"]
    (plain / "fusion.json").write_text(json.dumps(meta))
    for path in plain.glob("embedding_knn.*"):
        path.unlink()
    for bad, said in (
        (refit, "refit on train + valid"),
        (elsewhere, "was trained on data/amazon_uk_toys/train.jsonl, not on"),
        (tmp_path / "gone", "gone"),
        (plain, "has no embedding voter"),
    ):
        assert neighbours.main([*argv[:-1], str(bad)]) == 2
        out, err = capsys.readouterr()
        assert said in err and (not out or bad == plain), bad
