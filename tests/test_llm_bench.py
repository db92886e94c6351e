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
    table = capsys.readouterr().out
    assert "| fused (generator weights" in table
    # the reranker, fitted on each tuning half, beside the rows it re-scores
    assert "| base model, reranked (" in table and "| fused, reranked (" in table
    # the base's factor on brands absent from the title, tuned on each half like the rest
    assert "| base model (absent factor " in table
    rows = json.loads(first.read_text())["rows"]
    assert sum(name.startswith("fused, reranked (") for name in rows) == 1
    assert json.loads(first.read_text())["speed"]["beams"] == 2
    assert pickle.loads((out / "bench_votes.pkl").read_bytes())["num_beams"] == 2

    capsys.readouterr()
    overrides = ["generate.num_beams=3", "lexical.absent_factor=1.0"]  # the factor fixed
    assert llm.main([*common, "--reuse", "--json", str(second), *overrides]) == 0
    assert json.loads(second.read_text())["speed"]["beams"] == 3
    assert "| base model |" in capsys.readouterr().out
    # the cached votes of 2 beams were not taken for 3: decoded again, and cached anew
    assert pickle.loads((out / "bench_votes.pkl").read_bytes())["num_beams"] == 3


def test_new_facet_reach_counts_new_gold_values_in_titles_and_proposals() -> None:
    from labelrec.data import Product, TagVocab

    vocab = TagVocab(["brand:Lego", "toy"], [5, 5], 10)
    products = [
        Product(id="1", title="Lego city", tags=["brand:Lego"]),  # known brand: not counted
        Product(id="2", title="Brio train set", tags=["brand:Brio", "toy"]),
        Product(id="3", title="wooden train", tags=["brand:Brio"]),
        Product(id="4", title="HABA blocks", tags=["brand:Haba"]),
    ]
    proposals = [{}, {"brand:Brio": 0.9}, {"brand:Brio": 0.2}, {"brand:HABA": 0.8}]
    reach = llm.new_facet_reach(products, vocab, "brand:", proposals)
    assert reach == {"products": 3, "in title": 2, "proposed": 2}


def test_rows_decide_a_category_path_only_under_a_decided_parent() -> None:
    import numpy as np

    from labelrec.data import Product, TagVocab
    from labelrec.taxonomy import ancestor_plan, parent_index

    tags = ["Toys", "Toys > Trains"]
    vocab = TagVocab(tags, [5, 5], 10)
    products = [Product(id="1", title="train", tags=["Toys", "Toys > Trains"])]
    known = np.array([[0.4, 0.6]], dtype=np.float32)  # the child passes, its parent does not
    cut = np.array([0.5, 0.5], dtype=np.float32)
    parents = parent_index(tags, " > ")
    alone = llm.evaluate(known, [{}], products, vocab, cut, 0.5, [])
    whole = llm.evaluate(
        known, [{}], products, vocab, cut, 0.5, [], (parents, ancestor_plan(parents))
    )
    assert alone["micro_f1"] > 0 and whole["micro_f1"] == 0
