"""Product index, similar products, tag search and user recommendations (labelrec.recommend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, toy_catalog, write_jsonl

from labelrec.data import Product, TagVocab
from labelrec.predict import as_product
from labelrec.recommend import (
    ExactBackend,
    IndexFileError,
    Interactions,
    ProductIndex,
    ProductSearch,
    build_index,
)

TAGS = ["Toys", "Toys > Trains", "Toys > Puzzles", "brand:Hornby", "brand:Lego", "color:Red"]
# id, title, predicted scores per tag, embedding (4-d, before normalisation)
PRODUCTS = [
    ("p0", "Hornby express train", [0.9, 0.9, 0.0, 0.9, 0.0, 0.0], [1, 0, 0, 0.2]),
    ("p1", "Hornby goods train", [0.9, 0.8, 0.0, 0.8, 0.0, 0.0], [0.9, 0.1, 0, 0.1]),
    ("p2", "Lego city train", [0.9, 0.7, 0.0, 0.0, 0.9, 0.0], [0.6, 0.4, 0, 0]),
    ("p3", "jigsaw puzzle 1000", [0.9, 0.0, 0.9, 0.0, 0.0, 0.0], [0, 0, 1, 0]),
    ("p4", "red jigsaw puzzle", [0.9, 0.0, 0.8, 0.0, 0.0, 0.9], [0, 0.1, 0.9, 0.1]),
    ("p5", "Lego bricks", [0.9, 0.0, 0.0, 0.0, 0.9, 0.0], [0.1, 1, 0, 0]),
]


def make_index(**kwargs) -> ProductIndex:
    return ProductIndex(
        [p[0] for p in PRODUCTS],
        TAGS,
        np.asarray([p[2] for p in PRODUCTS], dtype=np.float32),
        embeddings=np.asarray([p[3] for p in PRODUCTS], dtype=np.float32),
        titles=[p[1] for p in PRODUCTS],
        thresholds=np.full(len(TAGS), 0.5),
        tag_counts=np.array([100, 30, 30, 10, 10, 5]),
        n_train_products=100,
        **kwargs,
    )


class FakeTagger:
    """A stand-in for TagRecommender: a tag scores 0.9 when one of its words is in the text;
    the embedding counts a few key words."""

    WORDS = {"Toys > Trains": "train", "Toys > Puzzles": "puzzle", "brand:Hornby": "hornby"}
    KEYS = ("train", "lego", "puzzle", "red")

    def __init__(self) -> None:
        self.vocab = TagVocab(TAGS, [100, 30, 30, 10, 10, 5], 100)
        self.tag_thresholds = np.full(len(TAGS), 0.5, dtype=np.float32)
        self.calls = 0

    def predict_scores(self, products, with_embeddings=False):
        self.calls += 1
        texts = [as_product(p, i).title.lower() for i, p in enumerate(products)]
        scores = np.zeros((len(texts), len(TAGS)), dtype=np.float32)
        emb = np.zeros((len(texts), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            scores[i, 0] = 0.9
            for j, tag in enumerate(TAGS):
                word = self.WORDS.get(tag, tag.split(":")[-1].lower())
                if word in text:
                    scores[i, j] = 0.9
            emb[i] = [float(k in text) for k in self.KEYS]
        return scores, (emb if with_embeddings else None)


# ------------------------------------------------------------------ similar products


def test_similar_finds_the_known_neighbours_and_explains_them():
    engine = ProductSearch(make_index())
    result = engine.similar(id="p0", limit=3)
    ids = [r["id"] for r in result["results"]]
    assert ids[0] == "p1" and "p0" not in ids
    assert ids.index("p2") < (ids.index("p3") if "p3" in ids else 99)
    first = result["results"][0]
    assert first["shared_tags"][:2] == ["brand:Hornby", "Toys > Trains"]  # specific tags first
    assert "Toys" in first["shared_tags"]
    assert result["query"]["id"] == "p0"
    assert result["query"]["tags"][0] == {"tag": "Toys", "score": 0.9, "gold": False}
    json.dumps(result)  # plain data


def test_tag_weight_switches_between_tags_and_embeddings():
    engine = ProductSearch(make_index())
    by_tags = engine.similar(id="p2", limit=1, tag_weight=1.0)["results"][0]["id"]
    by_embedding = engine.similar(id="p2", limit=1, tag_weight=0.0)["results"][0]["id"]
    assert by_tags == "p5"  # the other Lego product
    assert by_embedding == "p1"  # the closest train by embedding
    scores = [r["score"] for r in engine.similar(id="p2", limit=5)["results"]]
    assert scores == sorted(scores, reverse=True)


def test_tag_filters_keep_only_products_with_every_tag():
    engine = ProductSearch(make_index())
    results = engine.similar(id="p0", tags=["brand:Lego"], limit=10)["results"]
    assert {r["id"] for r in results} == {"p2", "p5"}
    results = engine.similar(id="p3", tags=["Toys > Puzzles", "color:Red"], limit=10)["results"]
    assert [r["id"] for r in results] == ["p4"]
    assert engine.similar(id="p3", tags=["brand:Hornby", "color:Red"])["results"] == []
    wide = engine.similar(id="p3", tags=["Ｔｏｙｓ ＞ Ｐｕｚｚｌｅｓ", "color：Red"], limit=10)
    assert wide["results"] == results  # a filter is read as tags are, in either width


def test_a_predicted_path_is_carried_only_under_its_carried_parent():
    """With the model's path separator in the manifest, a product carries a predicted path only
    where it carries the parent too, as the model decides its suggestions."""
    thresholds = np.full(len(TAGS), 0.5)
    thresholds[TAGS.index("Toys")] = 0.95  # above every product's 0.9: no product carries Toys
    whole = make_index(manifest={"path_separator": " > "})
    whole.thresholds = thresholds.astype(np.float32)
    apart = make_index()
    apart.thresholds = thresholds.astype(np.float32)
    assert "Toys > Trains" in apart.carried_tags(0)
    assert whole.carried_tags(0) == ["brand:Hornby"]
    assert apart.filter_mask(["Toys > Trains"]).tolist() == [1, 1, 1, 0, 0, 0]
    assert not whole.filter_mask(["Toys > Trains"]).any()
    assert whole.filter_mask(["brand:Lego"]).tolist() == [0, 0, 1, 0, 0, 1]
    gold = np.zeros((len(PRODUCTS), len(TAGS)), dtype=np.float32)
    gold[1, TAGS.index("Toys > Trains")] = 1  # a gold path is carried whatever the scores
    golden = make_index(manifest={"path_separator": " > "}, gold=gold)
    golden.thresholds = thresholds.astype(np.float32)
    assert golden.filter_mask(["Toys > Trains"]).tolist() == [0, 1, 0, 0, 0, 0]


def test_a_free_text_querys_tags_keep_category_paths_whole():
    index = make_index(manifest={"path_separator": " > "})
    index.thresholds[TAGS.index("Toys")] = 0.95  # the tagger gives Toys 0.9: never carried
    engine = ProductSearch(index, FakeTagger())
    tags = [t["tag"] for t in engine.search("Hornby train", limit=2)["query"]["tags"]]
    assert "brand:Hornby" in tags and "Toys > Trains" not in tags
    product = {"title": "Hornby train"}
    tags = [t["tag"] for t in engine.similar(product=product, limit=2)["query"]["tags"]]
    assert "brand:Hornby" in tags and "Toys > Trains" not in tags


def test_a_gold_tag_the_model_does_not_know_is_no_parent_in_the_index():
    """The index's tags are the model's, then catalog tags it does not know (never carried by
    prediction): such a tag is no parent of the model's paths, which the model decides alone."""
    tags = ["Toys > Trains", "brand:Hornby", "Toys"]
    index = ProductIndex(
        ["a"],
        tags,
        np.array([[0.9, 0.9, 0.0]], dtype=np.float32),
        thresholds=np.array([0.5, 0.5, 2.0]),
        n_model_tags=2,
        manifest={"path_separator": " > "},
    )
    assert index.parents.tolist() == [-1, -1, -1]
    assert index.carried_tags(0) == ["Toys > Trains", "brand:Hornby"]


def test_an_index_records_the_path_separator_its_model_decides_by(trained_model_dir: Path):
    from labelrec.predict import TagRecommender

    rec = TagRecommender.load(trained_model_dir)
    index = build_index(rec, [{"id": "a", "title": "LEGO City Police Station"}], embeddings=False)
    assert index.manifest["path_separator"] == " > " and index.parents is not None
    assert build_index(FakeTagger(), [{"id": "a", "title": "x"}]).manifest["path_separator"] is None


class PathTagger(FakeTagger):
    """Category paths kept whole, a child listed before its parent, and scores where the parent
    ties with its child (as ancestor consistency makes them) below two other tags."""

    PATH_TAGS = ["Toys > Trains", "brand:Hornby", "Toys", "color:Red"]

    def __init__(self) -> None:
        from labelrec.taxonomy import ancestor_plan, parent_index

        super().__init__()
        self.vocab = TagVocab(self.PATH_TAGS, [10, 10, 10, 10], 100)
        self.tag_thresholds = np.full(4, 0.5, dtype=np.float32)
        parents = parent_index(self.PATH_TAGS, " > ")
        self.hierarchy = (parents, ancestor_plan(parents))
        self.fusion = SimpleNamespace(separator=" > ")

    def predict_scores(self, products, with_embeddings=False):
        scores = np.array([[0.9, 0.95, 0.9, 0.95]] * len(products), dtype=np.float32)
        return scores, None


def test_a_parent_tied_with_its_child_at_the_top_k_cut_is_kept() -> None:
    """Where a parent path and its child tie at the index's cut, the parent is kept, so the
    child it carries is carried too."""
    rows = [{"id": "a", "title": "Hornby train"}]
    index = build_index(PathTagger(), rows, top_k=3, embeddings=False)
    assert index.carried_tags(0) == ["brand:Hornby", "color:Red", "Toys"]
    index = build_index(PathTagger(), rows, top_k=4, embeddings=False)
    assert index.carried_tags(0) == ["brand:Hornby", "color:Red", "Toys > Trains", "Toys"]
    # a free-text query's tags: the best three, the parent before the child it ties with
    engine = ProductSearch(index, PathTagger(), query_top_k=3)
    tags = [t["tag"] for t in engine.search("Hornby train", limit=1)["query"]["tags"]]
    assert tags == ["brand:Hornby", "color:Red", "Toys"]


def test_gold_tags_count_in_filters():
    gold = np.zeros((len(PRODUCTS), len(TAGS)), dtype=np.float32)
    gold[3, TAGS.index("brand:Lego")] = 1  # a known tag the model did not predict
    engine = ProductSearch(make_index(gold=gold))
    results = engine.similar(id="p0", tags=["brand:Lego"], limit=10)["results"]
    assert {r["id"] for r in results} == {"p2", "p3", "p5"}


def test_a_tag_filter_in_another_case_is_the_same_tag():
    engine = ProductSearch(make_index(), FakeTagger())
    exact = engine.similar(id="p0", tags=["brand:Hornby"], limit=10)["results"]
    assert exact and engine.similar(id="p0", tags=["BRAND:hornby"], limit=10)["results"] == exact
    twice = make_index()
    twice.tags[TAGS.index("brand:Lego")] = "brand:HORNBY"  # two spellings of one brand
    twice.tag_index = {t: j for j, t in enumerate(twice.tags)}
    assert twice.tag_column("brand:HORNBY") == TAGS.index("brand:Lego")  # exact spelling first
    with pytest.raises(
        ValueError, match="'brand:hornby' is ambiguous: .*'brand:Hornby', 'brand:HORNBY'"
    ):
        twice.tag_column("brand:hornby")


def test_bad_input_gets_clear_value_errors():
    engine = ProductSearch(make_index(), FakeTagger())
    with pytest.raises(ValueError, match="unknown product id 'nope'"):
        engine.similar(id="nope")
    with pytest.raises(ValueError, match="unknown tag filter 'brand:hornbi'.*brand:Hornby"):
        engine.similar(id="p0", tags=["brand:hornbi"])  # close matches whatever the case
    with pytest.raises(ValueError, match="unknown tag filter 'brand:Hornbi'.*brand:Hornby"):
        engine.similar(id="p0", tags=["brand:Hornbi"])
    with pytest.raises(ValueError, match="empty query"):
        engine.search("   ")
    with pytest.raises(ValueError, match="empty query"):
        engine.search(None)
    with pytest.raises(ValueError, match="empty query"):
        engine.search("\u200b \u200b")  # zero-width spaces only
    long = engine.search("lego " * 1000)  # the answer repeats the start of a long query
    assert len(long["query"]["text"]) == 301 and long["query"]["text"].endswith("…")
    with pytest.raises(ValueError, match="limit must be between 1"):
        engine.similar(id="p0", limit=0)
    with pytest.raises(ValueError, match="tag_weight must be in"):
        engine.similar(id="p0", tag_weight=1.5)
    with pytest.raises(ValueError, match="or a new 'product', not both"):
        engine.similar(id="p0", product={"title": "x"})
    with pytest.raises(ValueError, match=r"^give an indexed product 'id' or a new 'product'$"):
        engine.similar()
    with pytest.raises(ValueError, match="'title' must be a non-empty string"):
        engine.similar(product={"description": "no title"})
    with pytest.raises(ValueError, match="'title' must be a non-empty string"):
        engine.similar(product={"title": "\u200b\u3000"})  # nothing that shows
    with pytest.raises(ValueError, match="empty product"):
        engine.similar(product="\u200b")
    with pytest.raises(ValueError, match="unknown product id 'zzz'"):
        engine.recommend(history=["p0", "zzz"])


def test_similar_to_a_new_product_uses_the_tagger():
    tagger = FakeTagger()
    engine = ProductSearch(make_index(), tagger)
    result = engine.similar(product={"title": "Hornby train"}, limit=2)
    assert tagger.calls == 1
    assert {r["id"] for r in result["results"]} == {"p0", "p1"}
    assert {t["tag"] for t in result["query"]["tags"]} >= {"brand:Hornby", "Toys > Trains"}
    assert "brand:Hornby" in result["results"][0]["shared_tags"]


def test_index_without_embeddings_uses_tags_only():
    index = make_index()
    index.embeddings = None
    result = ProductSearch(index).similar(id="p2", limit=1)
    assert result["results"][0]["id"] == "p5"
    assert result["results"][0]["embedding_similarity"] == 0.0
    assert ProductSearch(index).similar(id="p2", limit=1, tag_weight=1.0) == result
    with pytest.raises(ValueError, match="tag_weight 0.0: this index has no embeddings"):
        ProductSearch(index).similar(id="p2", limit=1, tag_weight=0.0)  # not silently 1


# ------------------------------------------------------------------ tag search


def test_search_ranks_products_with_the_query_tag_first():
    engine = ProductSearch(make_index(), FakeTagger())
    result = engine.search("puzzle", limit=3)
    top = [r["id"] for r in result["results"]]
    assert set(top[:2]) == {"p3", "p4"}
    assert "Toys > Puzzles" in [t["tag"] for t in result["query"]["tags"]]
    assert all("Toys > Puzzles" in r["shared_tags"] for r in result["results"][:2])
    hornby = engine.search("hornby", limit=2, tag_weight=1.0)["results"]
    assert {r["id"] for r in hornby} == {"p0", "p1"}
    filtered = engine.search("puzzle", tags=["color:Red"])["results"]
    assert [r["id"] for r in filtered] == ["p4"]


# ------------------------------------------------------------------ backends and files


def random_index(n: int = 600, seed: int = 0) -> ProductIndex:
    """Clustered products: tag vectors and embeddings both follow the cluster."""
    rng = np.random.default_rng(seed)
    n_tags, dim, n_clusters = 40, 16, 12
    cluster = rng.integers(0, n_clusters, n)
    centres = rng.normal(size=(n_clusters, dim))
    emb = centres[cluster] + 0.6 * rng.normal(size=(n, dim))
    scores = rng.uniform(0, 0.3, size=(n, n_tags)) * (rng.uniform(size=(n, n_tags)) < 0.1)
    scores[np.arange(n), cluster] = 0.9
    scores[np.arange(n), n_clusters + cluster % 7] = rng.uniform(0.5, 1.0, n)
    return ProductIndex(
        [f"r{i}" for i in range(n)],
        [f"tag{j}" for j in range(n_tags)],
        scores.astype(np.float32),
        embeddings=emb.astype(np.float32),
        titles=[f"product {i}" for i in range(n)],
        manifest={"top_k": 32},
    )


def test_exact_search_in_blocks_matches_one_block():
    engine = ProductSearch(random_index())
    q_tags = np.asarray(engine.tag_vectors[:25].todense())
    q_emb = engine.index.embeddings[:25]
    exclude = [np.asarray([i]) for i in range(25)]
    mask = np.arange(len(engine.index)) % 3 != 0
    whole = engine.exact.search(q_tags, q_emb, 10, 0.5, mask, exclude)
    blocked = ExactBackend(engine.scorer, block_size=37).search(
        q_tags, q_emb, 10, 0.5, mask, exclude
    )
    for a, b in zip(whole, blocked, strict=True):
        assert np.array_equal(a.rows, b.rows)
        assert np.allclose(a.scores, b.scores)
        assert not set(a.rows) & {int(r) for r in np.flatnonzero(~mask)}
    # brute force for one query
    full = 0.5 * (engine.tag_vectors @ q_tags[3]) + 0.5 * (engine.index.embeddings @ q_emb[3])
    full[3] = -np.inf
    full[~mask] = -np.inf
    assert np.array_equal(whole[3].rows, np.argsort(-full, kind="stable")[:10])


def test_approximate_backend_agrees_with_exact(tmp_path: Path):
    pytest.importorskip("faiss", reason="faiss-cpu not installed (pip install labelrec[ann])")
    index = random_index(n=1500, seed=1)
    exact = ProductSearch(index, backend="exact")
    approx = ProductSearch(index, backend="faiss")
    assert approx.backend.name == "faiss"
    overlaps = []
    for pid in index.ids[:40]:
        a = [r["id"] for r in exact.similar(id=pid, limit=10)["results"]]
        b = [r["id"] for r in approx.similar(id=pid, limit=10)["results"]]
        overlaps.append(len(set(a) & set(b)) / 10)
    assert np.mean(overlaps) >= 0.9
    # a selective filter falls back to the exact search over the products passing it
    a = exact.similar(id="r0", tags=["tag5", "tag13"], limit=10)["results"]
    b = approx.similar(id="r0", tags=["tag5", "tag13"], limit=10)["results"]
    assert [r["id"] for r in a] == [r["id"] for r in b]
    # the graph saved beside the index is loaded back, not rebuilt
    index.save(tmp_path / "idx")
    approx.backend.save(tmp_path / "idx")
    reloaded = ProductSearch.load(tmp_path / "idx", backend="faiss")
    assert reloaded.backend.ann.ntotal == len(index)
    a = [r["id"] for r in approx.similar(id="r3", limit=10)["results"]]
    b = [r["id"] for r in reloaded.similar(id="r3", limit=10)["results"]]
    assert len(set(a) & set(b)) >= 8


def test_save_load_round_trip(tmp_path: Path):
    gold = np.zeros((len(PRODUCTS), len(TAGS)), dtype=np.float32)
    gold[0, 3] = 1
    index = make_index(gold=gold, manifest={"model": "somewhere", "top_k": 32})
    index.save(tmp_path / "idx")
    for name in ("manifest.json", "products.parquet", "tags.json", "tag_scores.npz"):
        assert (tmp_path / "idx" / name).is_file()
    loaded = ProductIndex.load(tmp_path / "idx")
    assert loaded.ids == index.ids and loaded.tags == index.tags
    assert loaded.titles == index.titles
    assert np.allclose(loaded.tag_scores.toarray(), index.tag_scores.toarray(), atol=1e-3)
    assert np.allclose(loaded.embeddings, index.embeddings, atol=1e-3)
    assert (loaded.gold != index.gold).nnz == 0
    assert loaded.manifest["model"] == "somewhere"
    assert loaded.manifest["n_products"] == len(PRODUCTS)
    table = pd.read_parquet(tmp_path / "idx" / "products.parquet")
    assert list(table.loc[0, "gold_tags"]) == ["brand:Hornby"]
    a = ProductSearch(index).similar(id="p0")["results"]
    b = ProductSearch(loaded).similar(id="p0")["results"]
    assert [r["id"] for r in a] == [r["id"] for r in b]


def test_loading_needs_no_torch(tmp_path: Path):
    make_index().save(tmp_path / "idx")
    code = (
        "import sys; from labelrec.recommend import ProductSearch;"
        f"e = ProductSearch.load({str(tmp_path / 'idx')!r});"
        "print(e.similar(id='p0', limit=1)['results'][0]['id'], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["p1", "False"]


def test_load_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(IndexFileError, match="not a product index"):
        ProductIndex.load(tmp_path)
    make_index().save(tmp_path / "idx")
    manifest = tmp_path / "idx" / "manifest.json"
    manifest.write_text(json.dumps({"format_version": 99}), "utf-8")
    with pytest.raises(ValueError, match="index format 99"):
        ProductIndex.load(tmp_path / "idx")


def test_tile_repeats_products_with_new_ids():
    big = make_index().tile(15)
    assert len(big) == 15 and big.ids[6] == "p0#1" and big.ids[0] == "p0"
    assert np.allclose(big.embeddings[6], big.embeddings[0])


def test_an_index_names_its_model_by_an_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tagger = FakeTagger()
    tagger.path = Path("models/m1")  # as loaded from a relative folder
    index = build_index(tagger, [{"id": "a", "title": "Hornby train"}])
    assert index.manifest["model"] == str(tmp_path.resolve() / "models" / "m1")


def test_similar_takes_a_product_object() -> None:
    engine = ProductSearch(make_index(), FakeTagger())
    by_dict = engine.similar(product={"title": "hornby train"}, limit=3)["results"]
    assert engine.similar(product=Product(id="x", title="hornby train"), limit=3)["results"] == (
        by_dict
    )
    import pandas as pd

    for empty in (float("nan"), pd.NA):  # a table's empty description
        answer = engine.similar(product={"title": "hornby train", "description": empty}, limit=3)
        assert answer["results"] == by_dict


def test_build_index_keeps_top_k_and_gold_apart():
    tagger = FakeTagger()
    rows = [
        {"id": "a", "title": "Hornby train", "tags": ["brand:Hornby", "Made up"]},
        {"id": "b", "title": "puzzle", "tags": []},
    ]
    index = build_index(tagger, rows, top_k=2)
    assert index.tags[: len(TAGS)] == TAGS and index.tags[-1] == "Made up"
    assert index.n_model_tags == len(TAGS)
    assert np.diff(index.tag_scores.indptr).max() <= 2
    assert index.carried_tags(0)[:2] == ["brand:Hornby", "Made up"]
    assert index.gold[1].nnz == 0
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0)
    with pytest.raises(ValueError, match="appears twice"):
        build_index(tagger, rows + rows[:1])
    # a catalog tag in another case or width is the model's tag, or one new tag, as in eval
    rows = [
        {"id": "a", "title": "Hornby train", "tags": ["brand:HORNBY", "Made up"]},
        {"id": "b", "title": "puzzle", "tags": ["brand：hornby", "made UP"]},
    ]
    index = build_index(tagger, rows, top_k=2)
    assert index.tags[len(TAGS) :] == ["Made up"]
    assert index.gold[0].indices.tolist() == index.gold[1].indices.tolist()
    assert index.tags[index.gold[0].indices[0]] == "brand:Hornby"


def test_a_saved_index_carries_the_tags_it_carried_in_memory(tmp_path: Path) -> None:
    """A score just above its threshold stays above it once saved and loaded (float16 would
    store 0.44002 as 0.43994)."""
    tagger = FakeTagger()
    tagger.tag_thresholds[1] = np.float32(0.44)
    wrapped = tagger.predict_scores

    def predict_scores(products, with_embeddings=False):
        scores, emb = wrapped(products, with_embeddings)
        scores[:, 1] = np.float32(0.44002)
        return scores, emb

    tagger.predict_scores = predict_scores
    index = build_index(tagger, [{"id": "a", "title": "Hornby train"}])
    assert TAGS[1] in index.carried_tags(0)
    index.save(tmp_path / "index")
    assert ProductIndex.load(tmp_path / "index").carried_tags(0) == index.carried_tags(0)


class WideTagger(FakeTagger):
    """32-d embeddings: a fixed random direction per key word plus noise from the title."""

    def predict_scores(self, products, with_embeddings=False):
        scores, _ = super().predict_scores(products)
        rng = np.random.default_rng(7)
        basis = rng.normal(size=(len(self.KEYS), 32))
        emb = []
        for i, p in enumerate(products):
            title = as_product(p, i).title.lower()
            keys = np.asarray([float(k in title) for k in self.KEYS])
            noise = np.random.default_rng(sum(map(ord, title))).normal(size=32)
            emb.append(keys @ basis + 0.3 * noise)
        return scores, (np.asarray(emb, dtype=np.float32) if with_embeddings else None)


def test_embeddings_are_reduced_by_pca_and_queries_follow(tmp_path: Path, caplog):
    words = ["train", "lego", "puzzle", "red"]
    rows = [
        {"id": f"w{i}", "title": f"{words[i % 4]} {words[(i // 4) % 4]} item {i}"}
        for i in range(40)
    ]
    tagger = WideTagger()
    index = build_index(tagger, rows, embedding_dim=8)
    assert index.embeddings.shape == (40, 8) and index.projection.shape == (32, 8)
    assert index.manifest["backbone_embedding_dim"] == 32
    index.save(tmp_path / "idx")
    loaded = ProductIndex.load(tmp_path / "idx")
    assert np.allclose(loaded.projection, index.projection)
    engine = ProductSearch(loaded, tagger)
    result = engine.similar(product={"title": rows[5]["title"]}, limit=1, tag_weight=0.0)
    assert result["results"][0]["id"] == "w5"  # the same text lands on the same point
    assert build_index(tagger, rows, embedding_dim=None).embeddings.shape == (40, 32)
    with caplog.at_level("INFO", logger="labelrec.recommend.index"):
        assert build_index(tagger, rows[:10], embedding_dim=8).projection is None  # too few rows
        assert build_index(tagger, rows, embedding_dim=64).projection is None  # not fewer dims
    said = [r.getMessage() for r in caplog.records if "kept whole" in r.getMessage()]
    assert len(said) == 2 and "at least 16 products (10 here)" in said[0]


# ------------------------------------------------------------------ personalised


def events(*rows) -> Interactions:
    return Interactions.from_records(
        [dict(zip(("user_id", "product_id", "weight", "timestamp"), r, strict=False)) for r in rows]
    )


def test_recommend_uses_history_and_excludes_seen_items():
    engine = ProductSearch(make_index(), interactions=events(("u1", "p0"), ("u2", "p4")))
    result = engine.recommend("u1", limit=3)
    ids = [r["id"] for r in result["results"]]
    assert result["strategy"] == "history" and result["history"] == ["p0"]
    assert "p0" not in ids and ids[0] == "p1"
    assert "brand:Hornby" in result["results"][0]["shared_tags"]
    # an explicit history (e.g. a session) adds to the stored one
    more = engine.recommend("u1", history=["p3"], limit=5)
    assert {"p0", "p3"}.isdisjoint(r["id"] for r in more["results"])


def test_recommend_blends_cooccurrence_when_dense_enough():
    rows = [("u1", "p0")] + [(f"u{i}", p) for i in (2, 3, 4) for p in ("p0", "p3")]
    engine = ProductSearch(make_index(), interactions=events(*rows))
    content_only = engine.recommend("u1", limit=1, cooccurrence_weight=0.0)
    assert content_only["results"][0]["id"] == "p1"
    blended = engine.recommend("u1", limit=1, cooccurrence_weight=0.9, min_support=3)
    assert blended["strategy"] == "history+cooccurrence"
    assert blended["results"][0]["id"] == "p3"  # bought together with p0 by three users
    sparse = engine.recommend("u1", limit=1, cooccurrence_weight=0.9, min_support=30)
    assert sparse["cooccurrence_weight"] < blended["cooccurrence_weight"]
    # the weight ramps with the support of the other users (3 of 6 needed): the user's own
    # interactions are no support
    half = engine.recommend("u1", limit=1, cooccurrence_weight=0.9, min_support=6)
    assert half["cooccurrence_weight"] == pytest.approx(0.45)
    # a tag filter holds for co-bought products too (p3 is a puzzle, not a Lego product)
    lego = engine.recommend("u1", limit=6, cooccurrence_weight=0.9, min_support=3,
                            tags=["brand:Lego"])  # fmt: skip
    assert lego["results"] and {r["id"] for r in lego["results"]} <= {"p2", "p5"}


def test_cooccurrence_is_damped_by_the_popularity_of_the_product():
    """p3 and p4 were each bought with p0 by one user; p4 by ten more users besides: its
    co-occurrence score is divided by the square root of its 11 users."""
    rows = [("u1", "p0"), ("u2", "p0"), ("u2", "p3"), ("u3", "p0"), ("u3", "p4")]
    rows += [(f"w{i}", "p4") for i in range(10)]
    engine = ProductSearch(make_index(), interactions=events(*rows))
    result = engine.recommend("u1", limit=6, cooccurrence_weight=0.9, min_support=1)
    cooc = {r["id"]: r["cooccurrence"] for r in result["results"]}
    assert cooc["p3"] == pytest.approx(1.0)
    assert cooc["p4"] == pytest.approx(1 / np.sqrt(11), abs=1e-5)


def test_cold_start_falls_back_to_popular_products():
    engine = ProductSearch(
        make_index(), interactions=events(("u1", "p4"), ("u2", "p4"), ("u3", "p2"))
    )
    result = engine.recommend("stranger", limit=2)
    assert result["strategy"] == "popular"
    assert result["results"][0]["id"] == "p4"
    lego = engine.recommend("stranger", limit=5, tags=["brand:Lego"])["results"]
    assert {r["id"] for r in lego} <= {"p2", "p5"}
    with pytest.raises(ValueError, match="no history and no interactions"):
        ProductSearch(make_index()).recommend("stranger")
    elsewhere = ProductSearch(make_index(), interactions=events(("u1", "zz-9"), ("u2", "zz-8")))
    with pytest.raises(ValueError, match="no loaded interaction names a product of the index"):
        elsewhere.recommend("u1")


def test_time_decay_favours_recent_interactions():
    day = 86400
    rows = [("u", "p3", 1, 0), ("u", "p0", 1, 100 * day)]
    engine = ProductSearch(make_index())
    engine.set_interactions(events(*rows), half_life_days=1)
    assert engine.recommend("u", limit=1)["results"][0]["id"] == "p1"
    rows = [("u", "p3", 1, 100 * day), ("u", "p0", 1, 0)]
    engine.set_interactions(events(*rows), half_life_days=1)
    assert engine.recommend("u", limit=1)["results"][0]["id"] == "p4"


def test_a_history_decayed_over_years_or_of_zero_weight():
    day = 86400
    rows = [("u", "p0", 1, 0), ("u", "p3", 1, 2 * day), ("v", "p4", 1, 3 * 365 * day)]
    engine = ProductSearch(make_index())
    engine.set_interactions(events(*rows), half_life_days=7)  # u's weights: about 1e-47
    old = engine.recommend("u", limit=2)
    assert old["strategy"] == "history" and old["results"][0]["score"] > 0
    engine.set_interactions(events(*rows), half_life_days=10_000)  # hardly decayed
    assert [r["id"] for r in old["results"]] == [
        r["id"] for r in engine.recommend("u", limit=2)["results"]
    ]  # only the relative weights count
    engine.set_interactions(events(*rows), half_life_days=1)  # 0.5**1093: below any float
    gone = engine.recommend("u", limit=2)
    assert gone["strategy"] == "history"
    assert not {"p0", "p3"} & {r["id"] for r in gone["results"]}  # what u has stays out
    engine.set_interactions(events(("u", "p0", 0), ("v", "p4", 1), ("w", "p0", 1)))
    cold = engine.recommend("u", limit=10)
    assert cold["strategy"] == "popular" and cold["history"] == ["p0"]  # weighing nothing
    assert "p0" not in {r["id"] for r in cold["results"]}  # popular, but u has it
    assert {r["id"] for r in cold["results"]} >= {"p4"}


def test_interactions_files_and_their_errors(tmp_path: Path):
    good = tmp_path / "events.csv"
    good.write_text(
        "user_id,product_id,weight,timestamp\nU1,p0,2,2024-01-01\nU1,p9,1,2024-01-02\n", "utf-8"
    )
    inter = Interactions.read(good)
    assert inter.user_ids.tolist() == ["U1", "U1"] and inter.weights.tolist() == [2.0, 1.0]
    assert inter.timestamps[1] - inter.timestamps[0] == 86400
    engine = ProductSearch(make_index())
    assert engine.set_interactions(good) == {"interactions": 2, "ignored": 1, "users": 1}
    pd.DataFrame({"user_id": ["U1"], "product_id": ["p1"]}).to_parquet(tmp_path / "e.parquet")
    assert Interactions.read(tmp_path / "e.parquet").product_ids.tolist() == ["p1"]
    (tmp_path / "e.parquet").rename(tmp_path / "events")  # Parquet by its first bytes
    assert Interactions.read(tmp_path / "events").product_ids.tolist() == ["p1"]
    when = pd.to_datetime(["2023-11-14 22:13:20", "2023-11-15 00:00:00"])  # a date-time column
    frame = pd.DataFrame({"user_id": ["U1", "U1"], "product_id": ["p1", "p2"], "timestamp": when})
    frame.to_parquet(tmp_path / "t.parquet")
    assert Interactions.read(tmp_path / "t.parquet").timestamps.tolist() == [1.7e9, 1700006400.0]

    bad = tmp_path / "bad.csv"
    bad.write_text("user,product_id\nU1,p0\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) user_id; found user"):
        Interactions.read(bad)
    bad.write_text("user_id,product_id,weight\nU1,p0,1\nU2,p1,lots\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, line 3, field 'weight': 'lots'"):
        Interactions.read(bad)
    bad.write_text("user_id,product_id,timestamp\nU1,p0,yesterday\n", "utf-8")
    with pytest.raises(ValueError, match=r"line 2, field 'timestamp'"):
        Interactions.read(bad)
    # the lines of the file, past blank lines and quoted line breaks
    bad.write_text('user_id,product_id,weight\nU1,p0,1\n\n\nU1,"p\n1",x\n', "utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, line 6, field 'weight': 'x'"):
        Interactions.read(bad)
    # an extra field on the first line would shift the columns (pandas' row index)
    bad.write_text("user_id,product_id\nU1,p0,5\nU1,p1,5\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, line 2: 3 fields where the header has 2"):
        Interactions.read(bad)
    # epoch seconds and dates in one column
    bad.write_text("user_id,product_id,timestamp\nU1,p0,1700000000\nU1,p1,2023-11-15\n", "utf-8")
    assert Interactions.read(bad).timestamps.tolist() == [1700000000.0, 1700006400.0]
    # epoch times in ms, us or ns by their size; one date format for the whole column
    bad.write_text(
        "user_id,product_id,timestamp\nU1,p0,1700000000000\nU1,p1,1700000000000000\n"
        "U1,p2,1700000000000000000\n",
        "utf-8",
    )
    assert Interactions.read(bad).timestamps.tolist() == [1.7e9] * 3
    # eight digits, all dates: YYYYMMDD, not epoch seconds of 1970-1973
    bad.write_text("user_id,product_id,timestamp\nU1,p0,20231115\nU1,p1,20231116\n", "utf-8")
    assert Interactions.read(bad).timestamps.tolist() == [1700006400.0, 1700092800.0]
    frame = pd.DataFrame({"user_id": ["U1", "U1"], "product_id": ["p1", "p2"]})
    frame.assign(timestamp=[20231115, 2023111500]).to_parquet(tmp_path / "days.parquet")
    assert Interactions.read(tmp_path / "days.parquet").timestamps.tolist() == [
        20231115.0,  # not every number is an eight-digit date: seconds, as numbers are
        2023111500.0,
    ]
    bad.write_text("user_id,product_id,timestamp\nU1,p0,20231115\nU1,p1,20231341\n", "utf-8")
    assert Interactions.read(bad).timestamps.tolist() == [20231115.0, 20231341.0]
    bad.write_text("user_id,product_id,timestamp\nU1,p0,20231115\nU1,p1,2023-11-16\n", "utf-8")
    assert Interactions.read(bad).timestamps.tolist() == [1700006400.0, 1700092800.0]
    frame.assign(timestamp=[20231115.0, 20231116.0]).to_parquet(tmp_path / "days.parquet")
    assert Interactions.read(tmp_path / "days.parquet").timestamps.tolist() == [
        1700006400.0,
        1700092800.0,
    ]
    bad.write_text("user_id,product_id,timestamp\nU1,p0,02/01/2024\nU1,p1,13/01/2024\n", "utf-8")
    with pytest.raises(ValueError, match=r"line 3, field 'timestamp': '13/01/2024' is neither"):
        Interactions.read(bad)  # read month first from its first date: not read two ways
    bad.write_text("user_id,product_id,timestamp\nU1,p0,2024-01-01\nU1,p1,\n", "utf-8")
    with pytest.raises(ValueError, match=r"line 3, field 'timestamp': no time \(empty\)"):
        Interactions.read(bad)
    when = pd.to_datetime(["2024-01-01", None])  # a null in a date-time column
    frame = pd.DataFrame({"user_id": ["U1", "U2"], "product_id": ["p1", "p2"], "timestamp": when})
    frame.to_parquet(tmp_path / "nat.parquet")
    with pytest.raises(ValueError, match=r"nat.parquet, row 2, field 'timestamp': no time"):
        Interactions.read(tmp_path / "nat.parquet")
    with pytest.raises(FileNotFoundError):
        Interactions.read(tmp_path / "missing.csv")


def test_an_interactions_file_that_cannot_be_opened_is_one_error(tmp_path: Path, monkeypatch):
    path = tmp_path / "events.csv"
    path.write_text("user_id,product_id\nU1,p0\n", "utf-8")
    opened = Path.open

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(
        ValueError, match=r"events.csv: cannot read interactions \(Permission denied"
    ):
        Interactions.read(path)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} (shared catalogs) is absent")
def test_amazon_in_sales_interactions_match_catalog_ids():
    folder = SHARED_DATA / "amazon_in_sales"
    ids = [
        json.loads(line)["id"]
        for part in ("train.jsonl", "valid.jsonl")
        for line in (folder / part).read_text("utf-8").splitlines()
    ]
    index = ProductIndex(ids, ["t"], np.zeros((len(ids), 1), dtype=np.float32))
    engine = ProductSearch(index)
    info = engine.set_interactions(folder / "interactions.csv")
    assert info["interactions"] > 1000
    assert info["ignored"] < info["interactions"] / 2  # most name catalog products
    user = engine.signals.interactions.user_ids[0]
    result = engine.recommend(user, limit=5)
    assert set(result["history"]).isdisjoint(r["id"] for r in result["results"])


# ------------------------------------------------------------------ with a trained tiny model


@pytest.fixture(scope="module")
def toy_index_dir(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labelrec.cli import main

    folder = tmp_path_factory.mktemp("rec")
    catalog = write_jsonl(toy_catalog(), folder / "catalog.jsonl")
    out = folder / "index"
    code = main(
        ["product-index", str(trained_model_dir), "--catalog", str(catalog), "--output", str(out),
         "--no-progress", "--top-k", "8"]
    )  # fmt: skip
    assert code == 0
    return out


def test_cli_product_index_similar_search(toy_index_dir: Path, capsys: pytest.CaptureFixture):
    from labelrec.cli import main

    manifest = json.loads((toy_index_dir / "manifest.json").read_text("utf-8"))
    assert manifest["n_products"] == len(toy_catalog()) and manifest["top_k"] == 8
    assert Path(manifest["model"]).is_dir()
    capsys.readouterr()
    args = ["similar", str(toy_index_dir), "--id", "p0-2", "--limit", "3", "--format", "json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["results"]) == 3 and "p0-2" not in [r["id"] for r in result["results"]]
    assert main(["similar", str(toy_index_dir), "--title", "hornby train", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# query tags:") and len(lines) == 3
    assert main(["search", str(toy_index_dir), "lego police", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["results"]) == 10 and result["query"]["text"] == "lego police"
    argv = ["search", str(toy_index_dir), "lego", "--tag", "brand:Hornby", "--format", "json"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert results and all("brand:Hornby" in r["tags"] for r in results)


def test_cli_errors(toy_index_dir: Path, capsys: pytest.CaptureFixture):
    from labelrec.cli import main

    cases = [
        (["similar", str(toy_index_dir), "--id", "missing"], "unknown product id 'missing'"),
        (["search", str(toy_index_dir), "  "], "empty query"),
        (["search", str(toy_index_dir), "car", "--tag", "brand:Nope"], "unknown tag filter"),
        (["similar", str(toy_index_dir)], "give --id"),
        (["search", str(toy_index_dir.parent), "car"], "not a product index"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_cli_recommend(toy_index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from labelrec.cli import main

    events_csv = tmp_path / "events.csv"
    events_csv.write_text("user_id,product_id\nU1,p0-2\nU1,p1-3\nU2,p0-0\n", "utf-8")
    base = ["recommend", str(toy_index_dir), "--interactions", str(events_csv), "--format", "json"]
    assert main([*base, "--user", "U1", "--limit", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["strategy"].startswith("history") and len(result["results"]) == 4
    assert {"p0-2", "p1-3"}.isdisjoint(r["id"] for r in result["results"])
    assert main([*base, "--user", "nobody"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"] == "popular"


def test_saving_an_index_replaces_it_whole(tmp_path: Path) -> None:
    from labelrec.recommend.index import IndexFileError

    first = make_index()
    first.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "embeddings.npy").is_file()
    second = make_index()
    second.embeddings = None
    second.save(tmp_path / "idx")  # over the first: no file of it is left behind
    assert not (tmp_path / "idx" / "embeddings.npy").exists()
    assert ProductIndex.load(tmp_path / "idx").embeddings is None
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary folder left
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "labelrec.json").write_text("{}", encoding="utf-8")
    with pytest.raises(IndexFileError, match="is not a product index"):
        second.save(tmp_path / "model")
    assert (tmp_path / "model" / "labelrec.json").is_file()


def test_no_popular_product_to_fall_back_on_says_why(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("user_id,product_id,weight\nU1,p0,0\nU2,p1,0\n", "utf-8")
    engine = ProductSearch(make_index())
    engine.set_interactions(events)
    with pytest.raises(ValueError, match="those naming its products all weigh 0"):
        engine.recommend("newcomer")
    events.write_text("user_id,product_id\nU1,elsewhere-1\n", "utf-8")
    engine.set_interactions(events)
    with pytest.raises(ValueError, match="each was ignored: are they from another catalog"):
        engine.recommend("newcomer")


def test_a_damaged_index_file_is_an_error_naming_it(tmp_path: Path) -> None:
    import shutil

    from labelrec.recommend.index import IndexFileError

    make_index().save(tmp_path / "idx")

    def damaged(name: str, change) -> Path:
        copy = shutil.copytree(tmp_path / "idx", tmp_path / name)
        change(copy)
        return copy

    def cut(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:90])

    def without_counts(index: Path) -> None:
        info = json.loads((index / "tags.json").read_text("utf-8"))
        del info["counts"]
        (index / "tags.json").write_text(json.dumps(info), "utf-8")

    cases = {
        damaged("emb", lambda d: cut(d / "embeddings.npy")): "embeddings.npy: not an array file",
        damaged("scores", lambda d: cut(d / "tag_scores.npz")): "tag_scores.npz: not a sparse",
        damaged("gold", lambda d: (d / "gold_tags.npz").write_bytes(b"")): "gold_tags.npz: not a",
        damaged("counts", without_counts): "tags.json: damaged product index \\(no 'counts'\\)",
    }
    for index, message in cases.items():
        with pytest.raises(IndexFileError, match=message):
            ProductIndex.load(index)


def test_an_index_built_again_while_it_loads_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that has the old manifest and tags when a rebuild swaps the folder reads it
    again: it gets the new index whole, not the old manifest with the new embeddings."""
    import labelrec.recommend.index as index_mod

    old = make_index(manifest={"model": "old"})
    old.save(tmp_path / "idx")
    new = make_index(manifest={"model": "new"})
    new.embeddings = new.embeddings[:, ::-1].copy()
    real, reads = pd.read_parquet, []

    def rebuilt_meanwhile(path, *args, **kwargs):
        reads.append(path)
        if len(reads) == 1:
            new.save(tmp_path / "idx")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(index_mod.pd, "read_parquet", rebuilt_meanwhile)
    monkeypatch.setattr("labelrec.modeldir.time.sleep", lambda seconds: None)
    loaded = ProductIndex.load(tmp_path / "idx")
    assert len(reads) == 2 and loaded.manifest["model"] == "new"
    assert np.allclose(loaded.embeddings, new.embeddings, atol=1e-3)


def test_files_written_beside_an_index_arrive_with_it(tmp_path: Path) -> None:
    """An ANN file is written into the new folder before the swap: a failure to write it
    leaves the old index as it was, and a reader never sees the new index without it."""
    make_index().save(tmp_path / "idx")
    before = sorted(p.name for p in (tmp_path / "idx").iterdir())

    def fail(directory: Path) -> None:
        (directory / "ann.faiss").write_bytes(b"half")
        raise MemoryError("no memory for the graph")

    with pytest.raises(MemoryError):
        make_index().save(tmp_path / "idx", write_more=fail)
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]

    def write(directory: Path) -> None:
        assert (directory / "manifest.json").is_file()  # after the index's own files
        (directory / "ann.faiss").write_bytes(b"graph")

    make_index().save(tmp_path / "idx", write_more=write)
    assert (tmp_path / "idx" / "ann.faiss").read_bytes() == b"graph"


@pytest.mark.parametrize("half_life", [float("nan"), float("inf"), -1.0, 0.0, "30", True])
def test_half_life_must_be_a_finite_positive_number(half_life: float):
    rows = [("u", "p3", 1, 0), ("u", "p0", 1, 86400)]
    with pytest.raises(ValueError, match=r"half_life_days must be a finite number > 0, got"):
        ProductSearch(make_index()).set_interactions(events(*rows), half_life_days=half_life)


@pytest.mark.parametrize("support", [0, "3", 2.5, True])
def test_min_support_must_be_a_positive_integer(support: object):
    engine = ProductSearch(make_index())
    with pytest.raises(ValueError, match=r"min_support must be an integer >= 1, got"):
        engine.recommend(history=["p0"], min_support=support)
    assert engine.recommend(history=["p0"], min_support=np.int64(2))["results"]


def test_unreadable_interactions_files_name_the_file_and_line(tmp_path: Path):
    import gzip

    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("user_id,product_id\nu1,p0\nu2,产品\n".encode("gbk"))
    with pytest.raises(
        ValueError, match=r"gbk.csv, line 3: not UTF-8 text .*save the file as UTF-8"
    ):
        Interactions.read(gbk)
    gz = tmp_path / "gbk.csv.gz"
    gz.write_bytes(gzip.compress(gbk.read_bytes()))
    with pytest.raises(ValueError, match=r"gbk.csv.gz, line 3: not UTF-8 text"):
        Interactions.read(gz)

    folder = tmp_path / "bad"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"interactions file .*bad is a directory"):
        Interactions.read(folder)

    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"user_id": f"u{i}", "product_id": "p0", "note": "a,b" * i})
            for i in range(6)
        ),
        "utf-8",
    )
    with pytest.raises(
        ValueError,
        match=r"events.jsonl, line 1: this looks like JSON, not a header row; expected a CSV/TSV"
        r" file with a header row user_id,product_id\[,weight,timestamp\]",
    ):
        Interactions.read(jsonl)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("user_id,product_id\nu1,p0\nu2,p1\nu3,p2,5,extra\n", "utf-8")
    with pytest.raises(
        ValueError, match=r"ragged.csv, line 4: 4 fields where the header has 2; expected"
    ):
        Interactions.read(ragged)

    header_only = tmp_path / "header.csv"
    header_only.write_text("user_id,product_id,weight\n", "utf-8")
    with pytest.raises(ValueError, match=r"header.csv: no interactions \(only a header\)"):
        Interactions.read(header_only)
    empty = tmp_path / "empty.csv"
    empty.write_text("", "utf-8")
    with pytest.raises(ValueError, match=r"empty.csv: no interactions \(the file is empty\)"):
        Interactions.read(empty)
    pd.DataFrame({"user_id": [], "product_id": []}).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(ValueError, match=r"none.parquet: no interactions \(no rows\)"):
        Interactions.read(tmp_path / "none.parquet")
