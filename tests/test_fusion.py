"""The neighbour taggers, their fusion with the neural scores, and category-path consistency."""

from __future__ import annotations

import itertools
import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from labelrec.config import ConfigError, load_config
from labelrec.data import Product, TagVocab
from labelrec.fusion import (
    WEIGHT_GRID,
    CandidateTags,
    Fusion,
    fit_fusion,
    save_fusion,
    tune_absent_factor,
    tune_span_weight,
    tune_weights,
)
from labelrec.metrics import objective
from labelrec.modeldir import (
    EMBEDDING_META,
    FUSION_META,
    LEXICAL_ARRAYS,
    LEXICAL_META,
    TFIDF_ARRAYS,
    TFIDF_META,
    manifest,
)
from labelrec.taggers import Tagger, TrainingSet
from labelrec.taggers.neighbours import EmbeddingNeighbours, TfidfNeighbours
from labelrec.taxonomy import (
    ancestor_consistent,
    ancestor_plan,
    hierarchical_precision,
    parent_index,
)

TRAIN = [
    Product("1", "hornby model railway train set", tags=["Hobbies", "Hobbies > Trains"]),
    Product("2", "hornby steam engine carriage", tags=["Hobbies", "Hobbies > Trains"]),
    Product("3", "wooden jigsaw puzzle 1000 pieces", tags=["Toys", "Toys > Puzzles"]),
    Product("4", "jigsaw puzzle animal farm", tags=["Toys", "Toys > Puzzles"]),
    Product("5", "乐高 积木 警察局", tags=["Toys", "Toys > Building"]),
    Product("6", "乐高 城市 积木", tags=["Toys", "Toys > Building"]),
]


def lexical_cfg(**kw):
    values = dict(
        k=3,
        power=2.0,
        word_ngram_max=2,
        char_ngram_min=2,
        char_ngram_max=4,
        max_features=None,
        use_description=True,
        weight=None,
        embedding_k=2,
        embedding_power=4.0,
        embedding_weight=None,
        ancestor_consistency=True,
        path_separator=" > ",
        open_vocab=False,
        span_max_chars=16,
        absent_factor=None,
        ridge=0.0,
        ridge_mix=None,
    )
    values.update(kw)
    return types.SimpleNamespace(lexical=types.SimpleNamespace(**values))


def fit_lexical(cfg, products, y, valid, y_valid, neural, vocab, emb=None, valid_emb=None):
    # y_valid: fit_fusion encodes valid with the vocabulary itself
    """``fit_fusion`` on ``products`` (their embeddings ``emb``)."""
    train = TrainingSet(products, y, vocab, emb)
    return fit_fusion(cfg, train, valid, neural, valid_emb)[:3]


@pytest.fixture
def vocab() -> TagVocab:
    return TagVocab.from_products(TRAIN)


def test_knn_tagger_ranks_the_neighbours_tags_first(vocab: TagVocab) -> None:
    tagger = TfidfNeighbours.build(TRAIN, vocab.encode(TRAIN), k=2)
    queries = [Product("q1", "hornby train"), Product("q2", "积木 乐高"), Product("q3", "jigsaw")]
    scores = tagger.scores(queries)
    assert scores.shape == (3, len(vocab))
    assert vocab.tags[int(np.argmax(scores[0]))] in ("Hobbies", "Hobbies > Trains")
    assert scores[1, vocab.index["Toys > Building"]] == pytest.approx(1.0, abs=1e-5)
    assert scores[2, vocab.index["Toys > Puzzles"]] > scores[2, vocab.index["Hobbies > Trains"]]
    assert np.all((scores >= 0) & (scores <= 1 + 1e-6))
    # a text sharing nothing with the catalog gets no evidence at all
    assert tagger.scores([Product("q4", "qqqq")]).sum() == 0


def test_tfidf_features_weight_like_scikit_learn() -> None:
    """``TfidfFeatures.transform`` weights the counts itself; it must equal scikit-learn's
    ``TfidfVectorizer.transform`` (sublinear tf, idf, L2 per part), stacked and renormalised."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from labelrec.taggers.neighbours import TfidfFeatures

    texts = [p.title for p in TRAIN] + ["hornby hornby hornby train set", "乐高 积木 积木"]
    features = TfidfFeatures(word_ngram_max=2, char_ngrams=(2, 4))
    features.fit_transform(texts)
    queries = ["Hornby train train", "", "qqqq", "乐高积木 jigsaw", "hornby"]
    kw = {"sublinear_tf": True, "dtype": np.float32}
    word = TfidfVectorizer(ngram_range=(1, 2), **kw).fit(texts)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), **kw).fit(texts)
    parts = sp.hstack([word.transform(queries), char.transform(queries)]).toarray()
    norms = np.linalg.norm(parts, axis=1, keepdims=True)
    expected = parts / np.where(norms == 0, 1.0, norms)
    got = features.transform(queries)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.toarray(), expected, atol=1e-6)
    assert got[1].nnz == 0 and got[2].nnz == 0  # nothing in common: an empty row, no NaN


def test_similarities_equal_the_sparse_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """``similarities`` (the queries made dense over the terms they use) gives scipy's sparse
    product, for short lists, for an empty query and past the dense block (scipy's path)."""
    from labelrec.taggers import neighbours
    from labelrec.taggers.neighbours import TfidfFeatures, similarities

    texts = [p.title for p in TRAIN] + ["hornby hornby hornby train set", "乐高 积木 积木"]
    features = TfidfFeatures(word_ngram_max=2, char_ngrams=(2, 4))
    xt = features.fit_transform(texts).T.tocsr()
    queries = features.transform(["Hornby train train", "", "qqqq", "乐高积木 jigsaw", "lego"])
    expected = (queries @ xt).toarray()
    for rows in (queries, queries[:1], queries[1:3]):
        got = similarities(rows, xt)
        assert got.dtype == np.float32 and got.shape == (rows.shape[0], len(texts))
        np.testing.assert_allclose(got, (rows @ xt).toarray(), atol=1e-6)
    monkeypatch.setattr(neighbours, "DENSE_BLOCK", 1)
    np.testing.assert_allclose(similarities(queries, xt), expected, atol=1e-6)


def test_parent_index_and_ancestor_consistency() -> None:
    tags = ["A", "A > B", "A > B > C", "A > D", "E"]
    parents = parent_index(tags, " > ")
    assert parents.tolist() == [-1, 0, 1, 0, -1]
    assert parent_index(tags, None).tolist() == [-1] * 5
    scores = np.array([[0.1, 0.2, 0.9, 0.3, 0.5], [0.8, 0.1, 0.0, 0.4, 0.0]], dtype=np.float32)
    out = ancestor_consistent(scores, parents)
    assert out[0].tolist() == pytest.approx([0.9, 0.9, 0.9, 0.3, 0.5])
    assert out[1].tolist() == pytest.approx([0.8, 0.1, 0.0, 0.4, 0.0])
    for child, parent in enumerate(parents):
        if parent >= 0:
            assert np.all(out[:, parent] >= out[:, child])
    assert scores[0, 0] == pytest.approx(0.1)  # input untouched


def test_ancestor_consistency_is_the_best_score_in_each_subtree() -> None:
    rng = np.random.default_rng(0)
    parents = np.full(60, -1)
    for j in range(4, 60):  # a random forest of paths, up to 6 levels deep
        parents[j] = rng.integers(-1, j) if j % 7 else -1
    scores = rng.random((9, 60)).astype(np.float32)
    out = ancestor_consistent(scores, parents)
    plan = ancestor_plan(parents)
    np.testing.assert_array_equal(ancestor_consistent(scores, parents, plan), out)
    np.testing.assert_array_equal(ancestor_consistent(scores[:1], parents, plan), out[:1])
    assert ancestor_plan(np.full(5, -1)) == ()  # no paths: nothing to raise

    def subtree(j: int) -> list[int]:
        return [j] + [t for c in np.flatnonzero(parents == j) for t in subtree(int(c))]

    for j in range(60):
        np.testing.assert_array_equal(out[:, j], scores[:, subtree(j)].max(axis=1))


def test_ancestor_consistency_in_place_raises_the_given_matrix() -> None:
    parents = parent_index(["A", "A > B", "A > B > C", "D"], " > ")
    scores = np.array([[0.1, 0.2, 0.9, 0.3]], dtype=np.float32)
    copied = ancestor_consistent(scores, parents)
    assert scores[0, 0] == pytest.approx(0.1)
    out = ancestor_consistent(scores, parents, in_place=True)
    assert out is scores
    np.testing.assert_array_equal(scores, copied)


def _grid_voters(seed: int, n: int = 200, m: int = 1000) -> tuple:
    """Gold, three voters and a forest of category paths. Each product has a few tags that
    every voter backs (its gold ones among them) and scattered weaker votes, as kNN voters and
    a trained model give; votes tie (rounded to 0.05); a few products have votes that
    disagree everywhere."""
    rng = np.random.default_rng(seed)
    parents = np.full(m, -1)
    for j in range(10, m):  # paths up to several levels deep
        parents[j] = rng.integers(0, j) if j % 5 else -1
    gold = rng.random((n, m)) < 0.004
    backed = gold | (rng.random((n, m)) < 0.004)
    backed[np.arange(n)[:, None], rng.integers(0, m, (n, 3))] = True
    voters = []
    for _ in range(3):
        weak = (rng.random((n, m)) < 0.008) * rng.random((n, m)) * 0.6
        v = np.where(backed, 0.4 + 0.6 * rng.random((n, m)), weak)
        v[: n // 40] = rng.random((n // 40, m))  # no tag is out of reach: full rows
        voters.append(np.round(v * 20) / 20)
    return sp.csr_matrix(gold.astype(np.float32)), [v.astype(np.float32) for v in voters], parents


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("paths", [True, False])
@pytest.mark.parametrize("votes", ["float32", "below zero", "a float64 voter"])
def test_the_weight_grid_over_candidate_tags_equals_the_full_grid(
    seed: int, paths: bool, votes: str
) -> None:
    """Tuning over each product's candidate tags gives every grid point the objective of the
    full matrix as `w * neural + c * lexical + e * embedding` computes it, to the last bit, ties
    included: with scores below zero (as a ridge classifier's share gives; a padding slot must
    never rank) and voters of two float types. The voters are left as they were."""
    y, voters, parents = _grid_voters(seed)
    if votes == "below zero":
        voters = [v - np.float32(0.7) for v in voters]
    elif votes == "a float64 voter":
        voters[1] = voters[1].astype(np.float64) + 1e-9
    parents = parents if paths else None
    plan = ancestor_plan(parents) if paths else None
    few = CandidateTags.of(voters, parents, plan)
    assert few is not None and 0 < len(few.full_rows) < len(few.rows)
    assert few.columns.shape[1] < voters[0].shape[1] / 8
    before = [v.copy() for v in voters]
    w, e, results = tune_weights(y, *voters, parents=parents, step=0.1)
    for (a, b), value in results.items():
        fused = a * voters[0] + max(0.0, 1.0 - a - b) * voters[1]
        if b > 0:
            fused = fused + b * voters[2]
        if paths:
            fused = ancestor_consistent(fused, parents)
        assert value == objective(y, fused), (a, b)
    assert results[(w, e)] == max(results.values())
    for v, old in zip(voters, before, strict=True):
        np.testing.assert_array_equal(v, old)
    with pytest.raises(ValueError, match="shape mismatch"):
        few.objective(y[:, :-1], (0.5, 0.25, 0.25))


def test_candidate_tags_leave_the_grid_to_the_full_matrix_where_they_would_not_help() -> None:
    y, voters, parents = _grid_voters(0)
    rng = np.random.default_rng(3)
    noisy = [rng.random(voters[0].shape).astype(np.float32) for _ in range(3)]
    assert CandidateTags.of(noisy, parents, ancestor_plan(parents)) is None  # every tag in reach
    # voters that agree leave the top 3 and the ancestors of its tags as candidates
    same = CandidateTags.of([noisy[0]] * 3, parents, ancestor_plan(parents))
    assert same is not None and not len(same.full_rows)
    assert CandidateTags.of([v[:, :20] for v in voters], None, None) is None  # few tags
    one = [voters[0].copy()]
    assert CandidateTags.of(one, parents, ancestor_plan(parents)) is not None
    np.testing.assert_array_equal(one[0], voters[0])  # its bounds are copies
    voters[1][5, 7] = np.nan
    assert CandidateTags.of(voters, None, None) is None
    with pytest.raises(ValueError, match="NaN"):  # reported by the full matrix's objective
        tune_weights(y, *voters, step=0.5)


def test_hierarchical_precision_gives_credit_for_the_right_parent() -> None:
    vocab = TagVocab.from_products([Product("1", "x", tags=["A", "A > B", "A > C", "D"])])
    products = [Product("v", "x", tags=["A", "A > B"])]
    idx = vocab.index
    scores = np.zeros((1, len(vocab)), dtype=np.float32)
    scores[0, idx["A > C"]] = 0.9  # wrong leaf, right parent: {A, A > C} -> 1 of 2 right
    assert hierarchical_precision(scores, products, vocab, k=1) == pytest.approx(0.5)
    scores[0, idx["D"]] = 0.95  # top-2 {D, A > C} -> closure {D, A, A > C}: 1 of 3
    assert hierarchical_precision(scores, products, vocab, k=2) == pytest.approx(1 / 3)
    new = [{"A > B": 0.99}]
    assert hierarchical_precision(scores, products, vocab, k=1, new_tags=new) == 1.0


def test_a_facet_is_no_category_path_whatever_its_value_holds() -> None:
    tags = ["Toys", "Toys/Puzzles", "brand:Anagram", "brand:Anagram/MD", "型号:a3", "型号:a3/a4"]
    parents = parent_index(tags, "/")
    assert parents.tolist() == [-1, 0, -1, -1, -1, -1]
    # a separator before the colon: a path whose later level holds a colon
    assert parent_index(["Books", "Books/Series:Dune"], "/").tolist() == [-1, 0]
    scores = np.array([[0.2, 0.1, 0.05, 0.7, 0.01, 0.6]], dtype=np.float32)
    raised = ancestor_consistent(scores, parents)
    assert raised[0].tolist() == pytest.approx([0.2, 0.1, 0.05, 0.7, 0.01, 0.6])
    vocab = TagVocab(tags, [1] * len(tags))
    products = [Product("v", "x", tags=["brand:Anagram"])]
    top = np.zeros((1, len(tags)), dtype=np.float32)
    top[0, 3] = 0.9  # brand:Anagram/MD: another brand, no credit for brand:Anagram
    assert hierarchical_precision(top, products, vocab, k=1, separator="/") == 0.0


def test_tune_weights_follows_the_better_source() -> None:
    rng = np.random.default_rng(0)
    y = sp.csr_matrix((rng.random((40, 6)) < 0.3).astype(np.float32))
    truth = y.toarray() + 0.01 * rng.random((40, 6))
    noise = rng.random((40, 6))

    def tune_weight(neural, lexical):  # the neural weight and the objective at each weight
        w, _, results = tune_weights(y, neural, lexical, None)
        return w, {k[0]: v for k, v in results.items()}

    w, curve = tune_weight(truth, noise)
    assert w == 1.0 and curve[1.0] >= max(curve.values()) - 1e-12
    w, curve = tune_weight(noise, truth)
    best = max(curve.values())
    assert curve[0.0] == best and curve[1.0] < best  # lexical alone is perfect, neural is noise
    assert w < 1.0 and curve[w] == best  # ties go to the larger neural weight
    assert all(curve[v] < best for v in curve if v > w)


def test_fit_lexical_save_load_round_trip(tmp_path: Path, vocab: TagVocab) -> None:
    valid = [Product("v1", "hornby train set", tags=["Hobbies", "Hobbies > Trains"])]
    valid += [Product("v2", "jigsaw puzzle farm", tags=["Toys", "Toys > Puzzles"])]
    y_valid = vocab.encode(valid)
    neural = np.full((2, len(vocab)), 0.2, dtype=np.float32)  # an uninformed model
    model, fused, report = fit_lexical(
        lexical_cfg(), TRAIN, vocab.encode(TRAIN), valid, y_valid, neural, vocab
    )
    assert report["fusion_weight"] < 1.0  # the lexical evidence is worth something here
    assert vocab.tags[int(np.argmax(fused[0]))] in ("Hobbies", "Hobbies > Trains")
    model.save(tmp_path)
    meta = json.loads((tmp_path / FUSION_META).read_text(encoding="utf-8"))
    assert meta["weight"] == model.weight and meta["taggers"] == ["tfidf"]
    with np.load(tmp_path / TFIDF_ARRAYS, allow_pickle=False) as data:  # no pickled objects
        assert "x_data" in data.files
    assert {"fusion", "tfidf"} == set(manifest(tmp_path))
    loaded = Fusion.load(tmp_path, vocab)
    np.testing.assert_allclose(loaded.fuse(valid, neural), fused, atol=1e-6)
    assert Fusion.load(tmp_path / "missing", vocab) is None
    (tmp_path / TFIDF_META).unlink()
    with pytest.raises(ValueError, match="tfidf are missing"):
        Fusion.load(tmp_path, vocab)


def test_fixed_weight_one_keeps_the_neural_scores_but_orders_paths(vocab: TagVocab) -> None:
    valid = [Product("v1", "hornby", tags=["Hobbies"])]
    neural = np.zeros((1, len(vocab)), dtype=np.float32)
    neural[0, vocab.index["Hobbies > Trains"]] = 0.7
    cfg = lexical_cfg(weight=1.0)
    y_valid = vocab.encode(valid)
    _, fused, report = fit_lexical(cfg, TRAIN, vocab.encode(TRAIN), valid, y_valid, neural, vocab)
    assert report["fusion_weight"] == 1.0
    assert fused[0, vocab.index["Hobbies"]] == pytest.approx(0.7)  # parent lifted to its child


def test_config_checks_lexical_fields() -> None:
    cfg = load_config(None, ["lexical.weight=0.25", "lexical.k=7"])
    assert cfg.lexical.weight == 0.25 and cfg.lexical.k == 7
    with pytest.raises(ConfigError, match="lexical.weight"):
        load_config(None, ["lexical.weight=1.5"])
    with pytest.raises(ConfigError, match="lexical.char_ngram_max"):
        load_config(None, ["lexical.char_ngram_min=4", "lexical.char_ngram_max=3"])
    with pytest.raises(ConfigError, match="lexical.absent_factor"):
        load_config(None, ["lexical.absent_factor=1.5"])


def test_absent_factor_is_tuned_down_only_when_absent_tags_mislead() -> None:
    products = [
        Product("1", "Acme toy car", tags=["brand:Acme"]),
        Product("2", "Brio toy car", tags=["brand:Brio"]),
    ]
    vocab = TagVocab.from_products(products)
    acme, brio = vocab.index["brand:Acme"], vocab.index["brand:Brio"]
    mixed = np.zeros((2, len(vocab)), dtype=np.float32)
    mixed[0, [acme, brio]] = 0.4, 0.6  # a similar product's brand outranks the one named
    mixed[1, [acme, brio]] = 0.3, 0.5
    absent = np.zeros_like(mixed, dtype=bool)
    absent[0, brio] = absent[1, acme] = True
    no_new = [{}, {}]
    factor, known = tune_absent_factor(absent, products, vocab, mixed, no_new, None)
    assert factor == 0.6  # the largest that puts Acme first: 0.6 * 0.6 < 0.4 < 0.7 * 0.6
    np.testing.assert_allclose(known[0, [acme, brio]], [0.4, 0.36], atol=1e-6)
    np.testing.assert_allclose(known[1, [acme, brio]], [0.18, 0.5], atol=1e-6)
    # where the absent brand is the right one, nothing is scaled (ties keep 1)
    swapped = [Product("1", "Acme toy car", tags=["brand:Brio"]), products[1]]
    factor, known = tune_absent_factor(absent, swapped, vocab, mixed, no_new, None)
    assert factor == 1.0 and np.array_equal(known, mixed)
    assert tune_absent_factor(absent, products, vocab, mixed, no_new, None, [0.25])[0] == 0.25
    factor, known = tune_absent_factor(absent, products, vocab, mixed, no_new, None, [])
    assert factor == 1.0 and known.dtype == np.float32 and np.array_equal(known, mixed)


def test_trained_model_serves_fused_scores(trained_model_dir: Path, tmp_path: Path) -> None:
    from labelrec.predict import TagRecommender

    assert (trained_model_dir / FUSION_META).is_file()
    rec = TagRecommender.load(trained_model_dir)
    assert rec.fusion is not None
    items = ["Hornby model railway train set", "jigsaw puzzle 500 pieces"]
    fused, _ = rec.predict_scores(items)
    plain_dir = tmp_path / "plain"
    shutil.copytree(trained_model_dir, plain_dir)
    save_fusion(None, plain_dir)
    assert set(manifest(plain_dir)) == {"tagger"}
    plain = TagRecommender.load(plain_dir)
    assert plain.fusion is None
    neural, emb = plain.predict_scores(items, with_embeddings=True)
    products = [Product(str(i), t) for i, t in enumerate(items)]
    np.testing.assert_allclose(fused, rec.fusion.fuse(products, neural, emb), atol=1e-5)
    scores, none = rec.predict_scores(items)  # embeddings are used inside, not returned
    assert none is None and np.allclose(scores, fused)
    top = rec.suggest(items, limit=3, threshold=0.0)
    assert [s.tag for s in top[0]][:1] != [] and top[0][0].score >= top[0][-1].score


def test_embedding_neighbours_and_three_way_weights(tmp_path: Path, vocab: TagVocab) -> None:
    y = vocab.encode(TRAIN)
    emb = np.eye(len(TRAIN), 4, dtype=np.float32) + 0.01  # product i points along axis i (< 4)
    emb[4:] = [0.0, 0.0, 1.0, 1.0]  # the two building-block products share a direction
    neighbours = EmbeddingNeighbours(emb, y, k=1, power=1.0)
    out = neighbours.scores(np.array([[0.0, 0.0, 0.9, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    assert out[0, vocab.index["Toys > Building"]] == pytest.approx(1.0)
    assert out[1, vocab.index["Hobbies > Trains"]] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="label rows"):
        EmbeddingNeighbours(emb[:3], y)
    rng = np.random.default_rng(1)
    gold = (rng.random((30, 5)) < 0.3).astype(np.float32)
    noise = rng.random((30, 5)).astype(np.float32)
    w, e, curve = tune_weights(gold, noise, noise * 0.5, gold + 0.01 * noise, step=0.25)
    assert e > 0 and curve[(w, e)] == max(curve.values())
    assert all(a + b <= 1 + 1e-9 for a, b in curve)
    w, e, _ = tune_weights(gold, gold, noise, noise, step=0.25, embedding_weight=0.25)
    assert (w, e) == (0.75, 0.25)  # the fixed weight is kept, the rest goes to the best source
    # fitted with embeddings, saved and loaded, the model needs them to fuse
    valid = [Product("v1", "hornby train", tags=["Hobbies", "Hobbies > Trains"])]
    valid_emb = np.array([[1.0, 0.1, 0.0, 0.0]], dtype=np.float32)
    neural = np.full((1, len(vocab)), 0.1, dtype=np.float32)
    model, fused, report = fit_lexical(
        lexical_cfg(), TRAIN, y, valid, vocab.encode(valid), neural, vocab, emb, valid_emb
    )
    assert "embedding_knn_objective" in report
    model.embedding_weight = 0.5
    model.weight = 0.25
    model.save(tmp_path)
    assert (tmp_path / EMBEDDING_META).is_file()
    loaded = Fusion.load(tmp_path, vocab)
    assert loaded.needs_embeddings
    np.testing.assert_allclose(
        loaded.fuse(valid, neural, valid_emb), model.fuse(valid, neural, valid_emb), atol=1e-3
    )
    with pytest.raises(ValueError, match="embeddings"):
        loaded.fuse(valid, neural)


def test_taggers_share_one_interface(tmp_path: Path, vocab: TagVocab) -> None:
    y = vocab.encode(TRAIN)
    emb = np.random.default_rng(0).random((len(TRAIN), 4)).astype(np.float32)
    train = TrainingSet(TRAIN, y, vocab, emb)
    cfg = lexical_cfg()
    valid = [Product("v1", "hornby train set"), Product("v2", "乐高 积木")]
    for cls in (TfidfNeighbours, EmbeddingNeighbours):
        tagger = cls.fit(train, cfg)
        assert isinstance(tagger, Tagger)
        evidence = tagger.score(valid, emb[:2])
        assert evidence.known.shape == (2, len(vocab)) and evidence.new == [{}, {}]
        tagger.save(tmp_path)
        again = cls.load(tmp_path, vocab)
        np.testing.assert_allclose(again.score(valid, emb[:2]).known, evidence.known, atol=1e-3)
        assert cls.load(tmp_path / "missing", vocab) is None
    assert EmbeddingNeighbours.fit(TrainingSet(TRAIN, y, vocab), cfg) is None  # no embeddings
    assert EmbeddingNeighbours.fit(train, lexical_cfg(embedding_k=0)) is None
    with pytest.raises(ValueError, match="embeddings"):
        EmbeddingNeighbours.fit(train, cfg).score(valid)
    smaller = TagVocab.from_products(TRAIN[:2])
    with pytest.raises(ValueError, match="vocabulary 2"):
        TfidfNeighbours.load(tmp_path, smaller)


def test_a_fusion_saved_in_one_lexical_file_still_loads(tmp_path: Path, vocab: TagVocab) -> None:
    """Format 1 kept the fusion and both neighbour voters in lexical.json and lexical.npz."""
    y = vocab.encode(TRAIN)
    emb = np.random.default_rng(0).random((len(TRAIN), 4)).astype(np.float32)
    valid = [Product("v1", "hornby train set", tags=["Hobbies", "Hobbies > Trains"])]
    neural = np.full((1, len(vocab)), 0.2, dtype=np.float32)
    model, _, _ = fit_lexical(
        lexical_cfg(), TRAIN, y, valid, vocab.encode(valid), neural, vocab, emb, emb[:1]
    )
    model.weight, model.embedding_weight = 0.4, 0.3
    meta, arrays = model.tfidf.state()
    emb_meta, emb_arrays = model.embedding.state()
    old = {
        "format_version": 1,
        "weight": 0.4,
        "embedding_weight": 0.3,
        "separator": " > ",
        "ancestor_consistency": True,
        "span_weight": 0.0,
        "new_threshold": 1.0,
        "tagger": meta,
        "neighbours": emb_meta,
    }
    (tmp_path / LEXICAL_META).write_text(json.dumps(old), encoding="utf-8")
    np.savez_compressed(tmp_path / LEXICAL_ARRAYS, **arrays, **emb_arrays)
    loaded = Fusion.load(tmp_path, vocab)
    assert loaded.weight == 0.4 and loaded.embedding_weight == 0.3
    np.testing.assert_allclose(
        loaded.fuse(valid, neural, emb[:1]), model.fuse(valid, neural, emb[:1]), atol=1e-3
    )
    loaded.save(tmp_path)  # saved again: one file per tagger, the old pair gone
    assert set(manifest(tmp_path)) == {"fusion", "tfidf", "embedding"}


def test_ridge_classifier_equals_scikit_learn_ridge(
    vocab: TagVocab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unpruned, the kernel-form ridge scores what scikit-learn's ``Ridge`` (no intercept) fitted
    on the TF-IDF vectors predicts, clipped to [0, 1]; pruning drops small coefficients only."""
    from sklearn.linear_model import Ridge

    from labelrec.taggers import neighbours

    y = vocab.encode(TRAIN)
    tagger = TfidfNeighbours.build(TRAIN, y, k=2)
    queries = [Product("q1", "hornby train"), Product("q2", "积木 乐高"), Product("q3", "qqqq")]
    monkeypatch.setattr(neighbours, "RIDGE_PRUNE", 0.0)
    monkeypatch.setattr(neighbours, "RIDGE_BLOCK", 2)  # the 5 tags solved for in three blocks
    assert tagger.fit_ridge(0.3) and tagger.ridge_lambda == 0.3
    knn, ridge = tagger.votes(queries)
    np.testing.assert_allclose(knn, tagger.scores(queries), atol=1e-6)  # mix 0: the neighbours
    x = tagger.x_train.toarray()
    expected = (
        Ridge(alpha=0.3, fit_intercept=False)
        .fit(x, y.toarray())
        .predict(tagger.transform(queries).toarray())
    )
    np.testing.assert_allclose(ridge, np.clip(expected, 0.0, 1.0), atol=1e-4)
    assert vocab.tags[int(np.argmax(ridge[0]))] in ("Hobbies", "Hobbies > Trains")
    assert ridge[2].sum() == 0  # nothing in common with the catalog: no evidence
    mixed = tagger.scores(queries, ridge_mix=0.25)
    np.testing.assert_allclose(mixed, 0.75 * knn + 0.25 * ridge, atol=1e-6)
    full = tagger.ridge.toarray()
    monkeypatch.setattr(neighbours, "RIDGE_PRUNE", 0.05)
    tagger.fit_ridge(0.3)
    kept = tagger.ridge.toarray()
    assert tagger.ridge.nnz < np.count_nonzero(full)
    np.testing.assert_allclose(kept, np.where(np.abs(full) >= 0.05, full, 0.0), atol=1e-5)


def test_ridge_saves_loads_and_stays_off_when_too_large(
    tmp_path: Path, vocab: TagVocab, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from labelrec.taggers import neighbours

    tagger = TfidfNeighbours.build(TRAIN, vocab.encode(TRAIN), k=2)
    assert tagger.votes(TRAIN[:1])[1] is None  # no ridge fitted
    tagger.fit_ridge(0.3)
    tagger.save(tmp_path)
    loaded = TfidfNeighbours.load(tmp_path, vocab)
    assert loaded.ridge_lambda == 0.3
    for a, b in zip(loaded.votes(TRAIN), tagger.votes(TRAIN), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    monkeypatch.setattr(neighbours, "RIDGE_MAX_PRODUCTS", len(TRAIN) - 1)
    with caplog.at_level("WARNING"):
        assert not tagger.fit_ridge(0.3)
    assert tagger.ridge is None and "ridge classifier not fitted" in caplog.text
    tagger.save(tmp_path)  # saved without one: its arrays go
    assert TfidfNeighbours.load(tmp_path, vocab).ridge is None


def test_ridge_share_is_tuned_on_valid_and_carried(tmp_path: Path, vocab: TagVocab) -> None:
    """The fusion tries the ridge's shares of the TF-IDF voter and keeps the best on valid
    (ties: the smaller share); a share given in the config stays; it is saved with the fusion."""
    from labelrec.fusion import RIDGE_GRID, FusionInputs, fit_taggers, tune_fusion

    cfg = lexical_cfg(ridge=0.3, embedding_k=0, weight=0.0)
    fusion = fit_taggers(cfg, TrainingSet(TRAIN, vocab.encode(TRAIN), vocab))
    assert fusion.tfidf.ridge is not None and fusion.ridge_mix == 0.5
    valid = [
        Product("v1", "a", tags=["Toys", "Toys > Puzzles"]),
        Product("v2", "b", tags=["Hobbies"]),
    ]
    y = vocab.encode(valid).toarray()
    neural = np.zeros_like(y, dtype=np.float32)
    wrong = np.roll(y, 1, axis=1).astype(np.float32)
    right = y.astype(np.float32)

    def tuned(knn: np.ndarray, ridge: np.ndarray, **kw: float | None) -> float:
        inputs = FusionInputs(valid, vocab.tags, neural, tfidf=knn, ridge=ridge)
        _, report = tune_fusion(fusion, inputs, vocab, lexical_cfg(weight=0.0, **kw))
        assert report["ridge_mix"] == fusion.ridge_mix
        return fusion.ridge_mix

    # the neighbours mislead, the ridge is right: the smallest share that ranks its tags first
    assert tuned(wrong, right) == 0.75 and RIDGE_GRID[-2] == 0.75
    assert tuned(right, wrong) == 0.0
    assert tuned(right, right) == 0.0  # a tie keeps the neighbours alone
    assert tuned(wrong, right, ridge_mix=0.25) == 0.25
    fusion.save(tmp_path)
    assert Fusion.load(tmp_path, vocab).ridge_mix == 0.25
    assert Fusion.load(tmp_path, vocab).tfidf.ridge is not None


class _Constant:
    """A stand-in voter whose scores are a constant matrix (the span tagger's: known scores and
    one new tag per product)."""

    name = "span"

    def __init__(self, value: float, new: dict[str, float] | None = None) -> None:
        self.value, self.new = value, new or {}

    def scores(self, _inputs, *args) -> np.ndarray:
        return np.full((1, 2), self.value)

    def score(self, products: list[Product]) -> types.SimpleNamespace:
        known = np.full((len(products), 2), self.value)
        return types.SimpleNamespace(known=known, new=[dict(self.new) for _ in products])

    def absent(self, products: list[Product]) -> None:
        return None


def test_fusion_formula_on_constant_voters() -> None:
    """Neural, embedding and TF-IDF neighbours weighted w, e and 1 - w - e; the span tagger's
    known scores mixed in by its weight, its new tags scaled by it (as ``new_tags`` gives)."""
    product = [Product("a", "x")]
    neural = np.full((1, 2), 0.2)
    three = Fusion(
        _Constant(1.0), 0.5, np.full(2, -1), None, False,
        embedding=_Constant(0.6), embedding_weight=0.3,
    )  # fmt: skip
    expected = 0.5 * 0.2 + 0.3 * 0.6 + 0.2 * 1.0
    np.testing.assert_allclose(three.fuse(product, neural, np.zeros((1, 4))), expected, rtol=1e-6)
    span = Fusion(
        _Constant(1.0), 0.5, np.full(2, -1), None, False,
        span=_Constant(0.8, {"X": 0.9}), span_weight=0.4,
    )  # fmt: skip
    scores, new = span.fuse_with_new(product, neural)
    np.testing.assert_allclose(scores, 0.6 * (0.5 * 0.2 + 0.5 * 1.0) + 0.4 * 0.8, rtol=1e-6)
    assert new == [{"X": pytest.approx(0.36)}] and new == span.new_tags(product)


def test_top_tags_without_known_tags_takes_the_new_ones() -> None:
    from labelrec.taxonomy import top_tags

    assert top_tags(np.zeros((2, 0)), [], 2, [{"x": 0.5}, {"y": 0.1, "z": 0.3}]) == [
        ["x"],
        ["z", "y"],
    ]


def test_pooled_evidence_places_each_parts_scores_under_its_tags() -> None:
    """``FusionInputs.pool``: each part's rows in turn, each score under its tag's pooled
    column, 0 (False) where the part lacks the tag; a voter one part lacks is left out."""
    from labelrec.fusion import FusionInputs

    rng = np.random.default_rng(0)
    a = FusionInputs(
        [Product("a1", "t"), Product("a2", "t")],
        ["x", "y", "z"],
        rng.random((2, 3)).astype(np.float32),
        tfidf=rng.random((2, 3)),  # float64: pooled as float32
        span_new=[{"n": 0.5}, {}],
        absent=np.array([[True, False, True], [False, False, True]]),
    )
    b = FusionInputs(
        [Product("b1", "t")],
        ["w", "y"],
        rng.random((1, 2)).astype(np.float32),
        tfidf=rng.random((1, 2)),
        embedding=rng.random((1, 2)).astype(np.float32),
        span_new=[{"m": 0.25}],
        absent=np.array([[True, True]]),
    )
    tags = ["w", "x", "y", "z"]
    pooled = FusionInputs.pool([a, b], tags)
    assert [p.id for p in pooled.products] == ["a1", "a2", "b1"] and pooled.tags == tags
    for name in ("neural", "tfidf", "absent"):
        got = getattr(pooled, name)
        assert got.dtype == (bool if name == "absent" else np.float32)
        expected = np.zeros((3, 4), dtype=got.dtype)
        for rows, part in ((slice(0, 2), a), (slice(2, 3), b)):
            for j, tag in enumerate(part.tags):
                expected[rows, tags.index(tag)] = getattr(part, name)[:, j]
        np.testing.assert_array_equal(got, expected)
    assert pooled.embedding is None and pooled.span_known is None  # a lacks them
    assert pooled.span_new == [{"n": 0.5}, {}, {"m": 0.25}]
    only_x = FusionInputs.pool([a], ["x"])  # a tag list without some of a part's tags
    np.testing.assert_array_equal(only_x.neural, a.neural[:, :1])


def test_span_weight_scores_are_the_mix_in_its_own_types() -> None:
    """The span search's scores are ``(1 - b) * fused + b * known_span`` as numpy computes the
    expression, whatever the types of the scores and the grid's weights."""
    rng = np.random.default_rng(3)
    tags = [f"t{j}" for j in range(30)]
    vocab = TagVocab(tags, [5] * 30, 100)
    products = [
        Product(str(i), "x", tags=list(rng.choice(tags, 2, replace=False))) for i in range(40)
    ]
    new_span = [{"n1": 0.5} if i % 2 else {} for i in range(40)]
    fused, span = rng.random((40, 30)), rng.random((40, 30))
    fused[vocab.encode(products).toarray() > 0] += 1.0  # the fused scores know: the least b wins
    grids = [None, [0.3, 0.7], np.array([0.3, 0.7], np.float32), np.array([0.3, 0.7])]
    for d1, d2 in itertools.product((np.float32, np.float64), repeat=2):
        for grid in grids:
            f, s = fused.astype(d1), span.astype(d2)
            b, _, known = tune_span_weight(s, new_span, products, vocab, f, None, grid)
            weights = WEIGHT_GRID if grid is None else grid
            (w,) = [w for w in weights if float(w) == b]
            assert w == weights[0]
            expected = ((1.0 - w) * f + w * s).astype(np.float32)
            np.testing.assert_array_equal(known, expected)
