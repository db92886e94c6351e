"""Prediction: TagRecommender limit/threshold semantics, batching order, int8, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelrec import predict
from labelrec.data import Product
from labelrec.model import ModelError
from labelrec.predict import Suggestion, TagRecommender, as_product

ITEMS = [
    "LEGO City Police Station",
    {"title": "Hornby model railway train set", "description": "engine carriage smoke " * 20},
    Product(id="x", title="jigsaw puzzle 1000 pieces", description="wooden"),
    {"title": "remote control car red"},
    "乐高 城市 警察局 积木 🚓",
    {"id": 7, "title": "plush bear soft baby", "description": None},
    "a",
]


@pytest.fixture(scope="module")
def rec(trained_model_dir: Path) -> TagRecommender:
    return TagRecommender.load(trained_model_dir)


def test_load_exposes_vocab_thresholds_and_info(rec: TagRecommender) -> None:
    assert rec.tags == rec.vocab.tags and len(rec.tags) > 5
    assert rec.tag_thresholds.shape == (len(rec.tags),)
    assert 0.0 < rec.global_threshold < 1.0
    assert rec.info["n_tags"] == len(rec.tags)
    assert rec.device == "cpu"


def test_limit_and_threshold_semantics(rec: TagRecommender) -> None:
    scores, emb = rec.predict_scores(ITEMS)
    assert emb is None
    assert scores.shape == (len(ITEMS), len(rec.tags))
    assert np.all((scores >= 0) & (scores <= 1))

    # threshold=0: exactly the top `limit` tags, best first, with their scores.
    top = rec.suggest(ITEMS, limit=3, threshold=0)
    for row, suggestions in zip(scores, top, strict=True):
        assert len(suggestions) == 3
        best = np.argsort(-row, kind="stable")[:3]  # ties: the lower column first
        assert [s.tag for s in suggestions] == [rec.tags[j] for j in best]
        assert [s.score for s in suggestions] == pytest.approx(sorted(row, reverse=True)[:3])

    # A limit above the vocabulary returns every tag once.
    everything = rec.suggest(ITEMS[:1], limit=10_000, threshold=0)[0]
    assert sorted(s.tag for s in everything) == sorted(rec.tags)

    # A global threshold keeps the tags at or above it (within the limit).
    cut = float(np.median(scores))
    for row, suggestions in zip(scores, rec.suggest(ITEMS, limit=5, threshold=cut), strict=True):
        expected = [rec.tags[j] for j in np.argsort(-row, kind="stable")[:5] if row[j] >= cut]
        assert [s.tag for s in suggestions] == expected
    assert rec.suggest(ITEMS, threshold=1.0) == [[] for _ in ITEMS]  # scores stay below 1
    for bad in (1.01, -0.1, float("nan")):  # as the service and the MLflow model refuse them
        with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
            rec.suggest(ITEMS, threshold=bad)

    # threshold=None: the per-tag thresholds tuned on valid; the best 5 of the tags that pass.
    tuned = rec.suggest(ITEMS, limit=5, threshold=None)
    for row, suggestions in zip(scores, tuned, strict=True):
        order = np.argsort(-row, kind="stable")
        expected = [rec.tags[j] for j in order if row[j] >= rec.tag_thresholds[j]][:5]
        assert [s.tag for s in suggestions] == expected
    assert any(tuned), "tuned thresholds reject every tag of every product"

    with pytest.raises(ValueError, match="limit"):
        rec.suggest(ITEMS, limit=0)
    with pytest.warns(DeprecationWarning, match="suggest"):  # the former name still answers
        assert rec.recommend(ITEMS, limit=3, threshold=0) == top


def test_per_tag_thresholds_are_used(trained_model_dir: Path) -> None:
    rec = TagRecommender.load(trained_model_dir)
    scores, _ = rec.predict_scores(ITEMS[:1])
    best = int(np.argmax(scores[0]))
    rec.tag_thresholds = np.full(len(rec.tags), 2.0, dtype=np.float32)
    assert rec.suggest(ITEMS[:1]) == [[]]
    rec.tag_thresholds[best] = 0.0
    assert [s.tag for s in rec.suggest(ITEMS[:1])[0]] == [rec.tags[best]]


def test_a_tag_below_the_best_few_that_passes_its_threshold_is_suggested(
    trained_model_dir: Path,
) -> None:
    """The top ``limit`` of the tags that pass, not the top ``limit`` filtered: with the best two
    tags held back by their thresholds, the fourth-best still comes out at limit 2."""
    rec = TagRecommender.load(trained_model_dir)
    scores, _ = rec.predict_scores(ITEMS[:1])
    order = np.argsort(-scores[0])
    rec.tag_thresholds = np.full(len(rec.tags), 2.0, dtype=np.float32)
    rec.tag_thresholds[order[3]] = 0.0  # only the fourth-best tag passes
    assert [s.tag for s in rec.suggest(ITEMS[:1], limit=2)[0]] == [rec.tags[order[3]]]
    no_op = rec.suggest(ITEMS[:1], limit=2, exclude=["no-such-tag"])  # the rules' path agrees
    assert [s.tag for s in no_op[0]] == [rec.tags[order[3]]]


def test_a_category_path_is_suggested_only_under_its_suggested_parent(
    trained_model_dir: Path, toy_data_dir: Path
) -> None:
    """Per-tag thresholds are tuned tag by tag: a parent's above its child's would let a score
    between them pass the child alone. The child goes with its parent, through the rules'
    path too and in the evaluation of the same decisions."""
    from labelrec.data import read_catalog
    from labelrec.evaluate import evaluate_scores_on

    rec = TagRecommender.load(trained_model_dir)
    assert rec.hierarchy is not None
    item = [{"title": "LEGO City Police Station"}]
    rec.tag_thresholds = np.zeros(len(rec.tags), dtype=np.float32)
    both = {s.tag for s in rec.suggest(item, limit=20)[0]}
    assert {"Toys", "Toys > Building"} <= both
    rec.tag_thresholds[rec.vocab.index["Toys"]] = 2.0  # the parent cannot pass
    for kwargs in ({}, {"exclude": ["no-such-tag"]}):
        got = {s.tag for s in rec.suggest(item, limit=20, **kwargs)[0]}
        assert got == {t for t in both if t != "Toys" and not t.startswith("Toys > ")}, kwargs
    assert {s.tag for s in rec.suggest(item, limit=20, threshold=0.0)[0]} == both
    products = read_catalog(toy_data_dir / "valid.jsonl").products
    scores, _ = rec.score(products)
    apart = evaluate_scores_on(scores, products, rec.vocab, rec.tag_thresholds)
    whole = evaluate_scores_on(
        scores, products, rec.vocab, rec.tag_thresholds, hierarchy=rec.hierarchy
    )
    decided = rec.decisions(scores, rec.tag_thresholds)
    assert not decided[:, rec.vocab.index["Toys > Building"]].any()
    assert whole.metrics["micro_precision"] != apart.metrics["micro_precision"]


def test_consistent_decisions_on_a_hand_made_matrix() -> None:
    from labelrec.taxonomy import consistent_decisions, parent_index

    parents = parent_index(["a", "a > b", "a > b > c", "d", "d > e"], " > ")
    passed = np.array(
        [
            [True, True, True, True, True],
            [False, True, True, True, False],
            [True, False, True, False, True],
        ]
    )
    consistent_decisions(passed, parents)
    assert passed.tolist() == [
        [True, True, True, True, True],
        [False, False, False, True, False],
        [True, False, False, False, False],
    ]
    assert consistent_decisions(passed.copy(), None).tolist() == passed.tolist()


def test_rank_on_hand_made_scores(trained_model_dir: Path, monkeypatch) -> None:
    """A score equal to its threshold passes; an explicit threshold cuts new tags too; new tags
    are ranked among the known ones by score, within the limit."""
    rec = TagRecommender.load(trained_model_dir)
    monkeypatch.setattr(TagRecommender, "new_tag_threshold", property(lambda self: 0.9))
    a = rec.tags[0]
    rec.tag_thresholds = np.full(len(rec.tags), 0.5, dtype=np.float32)
    scores = np.zeros((1, len(rec.tags)), dtype=np.float32)
    scores[0, :2] = 0.5, 0.2
    assert [s.tag for s in rec.rank(scores)[0]] == [a]
    scores[0, :2] = 0.6, 0.1
    out = rec.rank(scores, threshold=0.2, new_tags=[{"N": 0.3}])[0]
    assert [(s.tag, s.known) for s in out] == [(a, True), ("N", False)]
    assert [s.tag for s in rec.rank(scores, new_tags=[{"N": 0.3}])[0]] == [a]  # below 0.9
    scores[0, :2] = 0.6, 0.55
    out = rec.rank(scores, limit=2, threshold=0.0, new_tags=[{"N": 0.95}])[0]
    assert [s.tag for s in out] == ["N", a]
    assert out[0].score == pytest.approx(0.95) and out[1].score == pytest.approx(0.6)


def test_ties_rank_as_the_metrics_rank_them(trained_model_dir: Path) -> None:
    """Equal scores (a parent raised to its best child's) are ordered by column, as
    ``labelrec.metrics`` orders them: ``suggest`` and ``eval`` count the same top tags."""
    from labelrec.metrics import top_k

    rec = TagRecommender.load(trained_model_dir)
    scores = np.zeros((2, len(rec.tags)), dtype=np.float32)
    scores[0, [5, 2, 7]] = 0.9
    scores[0, 1] = 0.95
    scores[1, ::-1] = np.linspace(0, 1, len(rec.tags))  # no ties
    for row, ranked in zip(scores, rec.rank(scores, limit=3, threshold=0), strict=True):
        expected = [rec.tags[j] for j in top_k(row[None], 3)[0]]
        assert [s.tag for s in ranked] == expected
    assert [s.tag for s in rec.rank(scores, limit=3, threshold=0)[0]] == [
        rec.tags[1],
        rec.tags[2],
        rec.tags[5],
    ]


def test_batches_sorted_by_length_return_input_order(trained_model_dir: Path) -> None:
    rec = TagRecommender.load(trained_model_dir, batch_size=3)
    together, emb = rec.predict_scores(ITEMS, with_embeddings=True)
    alone = np.vstack([rec.predict_scores([item])[0] for item in ITEMS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert emb is not None and emb.shape[0] == len(ITEMS)
    _, emb_alone = rec.predict_scores(ITEMS[1:2], with_embeddings=True)
    np.testing.assert_allclose(emb[1:2], emb_alone, atol=1e-5)
    batched = rec.suggest(ITEMS, limit=4, threshold=0)
    single = [rec.suggest([item], limit=4, threshold=0)[0] for item in ITEMS]
    assert [[s.tag for s in r] for r in batched] == [[s.tag for s in r] for r in single]


def test_a_long_list_is_scored_a_chunk_at_a_time(
    rec: TagRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = rec.suggest([*ITEMS, ""], limit=4, threshold=0)
    sizes: list[int] = []
    score = rec.score

    def counted(products: list) -> tuple:
        sizes.append(len(products))
        return score(products)

    monkeypatch.setattr(predict, "SCORE_CHUNK", 3)
    monkeypatch.setattr(rec, "score", counted)
    chunked = rec.suggest(["", *ITEMS, ""], limit=4, threshold=0)
    assert sizes == [3, 3, 1]  # the products with text, three at a time
    assert chunked[0] == chunked[-1] == [] and len(chunked) == len(ITEMS) + 2
    assert [[s.tag for s in r] for r in chunked[1:]] == [[s.tag for s in r] for r in whole]
    explain, sizes = rec._explain, []

    def explained_counted(products: list, *args: object) -> list:
        sizes.append(len(products))
        return explain(products, *args)

    monkeypatch.setattr(rec, "_explain", explained_counted)
    explained = rec.explain(ITEMS, limit=4, threshold=0)  # explained a chunk at a time too
    assert sizes == [3, 3, 1]
    assert [[e["tag"] for e in r] for r in explained] == [[s.tag for s in r] for r in whole[:-1]]
    with pytest.raises(ValueError, match="product 4:"):  # named by its place in the list
        rec.explain([*ITEMS[:4], 42])
    with pytest.raises(ValueError, match="limit"):  # an empty list checks its arguments too
        rec.suggest([], limit=0)
    with pytest.raises(ValueError, match="threshold"):
        rec.suggest([""], threshold=2.0)


def test_scores_of_a_long_list_are_a_chunks_at_a_time(
    rec: TagRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores, new = rec.score(ITEMS)
    sizes: list[int] = []
    one_pass = rec._score

    def counted(products: list, with_embeddings: bool) -> tuple:
        sizes.append(len(products))
        return one_pass(products, with_embeddings)

    monkeypatch.setattr(predict, "SCORE_CHUNK", 3)
    monkeypatch.setattr(rec, "_score", counted)
    chunked, chunked_new = rec.score(ITEMS)
    assert sizes == [3, 3, 1] and chunked.dtype == scores.dtype
    np.testing.assert_allclose(chunked, scores, atol=1e-5)
    assert chunked_new == new


def test_quantized_model_ranks_alike(trained_model_dir: Path, rec: TagRecommender) -> None:
    q = TagRecommender.load(trained_model_dir, quantize=True)
    full, _ = rec.predict_scores(ITEMS)
    quant, _ = q.predict_scores(ITEMS)
    assert not np.array_equal(full, quant), "quantize=True changed nothing"
    assert np.abs(full - quant).max() < 0.05
    agree = np.mean(np.argmax(full, axis=1) == np.argmax(quant, axis=1))
    assert agree >= 0.8
    for a, b in zip(
        rec.suggest(ITEMS, limit=3, threshold=0),
        q.suggest(ITEMS, limit=3, threshold=0),
        strict=True,
    ):
        assert len({s.tag for s in a} & {s.tag for s in b}) >= 2


def test_quantize_needs_cpu(trained_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="CPU"):
        TagRecommender.load(trained_model_dir, device="cuda", quantize=True)


def test_empty_input(rec: TagRecommender) -> None:
    assert rec.suggest([]) == []
    scores, emb = rec.predict_scores([], with_embeddings=True)
    assert scores.shape == (0, len(rec.tags)) and emb is None


@pytest.mark.parametrize(
    "item, message",
    [
        ({"description": "no title"}, "product 1: 'title' must be a string, got None"),
        ({"title": 42}, "product 1: 'title' must be a string, got 42"),
        ({"title": "ok", "description": ["a"]}, "product 1: 'description' must be a string"),
        (42, "product 1: expected a dict with a title or a string"),
        (None, "product 1: expected a dict with a title or a string"),
        (["LEGO"], "product 1: expected a dict with a title or a string"),
    ],
)
def test_bad_input_is_a_clear_value_error(rec: TagRecommender, item: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        rec.suggest(["fine title", item])
    assert str(err.value) == message


def test_as_product_variants() -> None:
    assert as_product("t", 3) == Product(id="3", title="t")
    assert as_product({"title": "t", "id": 9}, 0).id == "9"
    assert as_product({"title": "t", "description": None}).description == ""
    p = Product(id="a", title="b")
    assert as_product(p) is p


def test_a_notebooks_inputs_are_products_or_clear_errors(rec: TagRecommender) -> None:
    """A DataFrame is one product per row; one string or dict is refused, not read as a list
    of its characters or keys; missing descriptions from pandas are empty ones."""
    import pandas as pd

    titles = ["LEGO City police station", "wooden train set", "garden planter"]
    frame = pd.DataFrame({"title": titles, "description": ["bricks", None, float("nan")]})
    frame["description"] = frame["description"].astype("string")  # NaN as pandas' NA
    products = [{"title": titles[0], "description": "bricks"}, titles[1], titles[2]]
    expected = rec.suggest(products, limit=3, threshold=0)
    assert rec.suggest(frame, limit=3, threshold=0) == expected
    assert [[e["tag"] for e in row] for row in rec.explain(frame, limit=3, threshold=0)] == [
        [s.tag for s in row] for row in expected
    ]
    rows = [row for _, row in frame.iterrows()]  # pandas Series, one per row
    assert rec.suggest(rows, limit=3, threshold=0) == expected
    assert rec.suggest(frame.to_dict("records"), limit=3, threshold=0) == expected
    missing = Product(id="p", title=titles[1], description=None)  # type: ignore[arg-type]
    assert rec.suggest([missing], limit=3, threshold=0) == expected[1:2]
    for one in ("LEGO City", {"title": "LEGO City"}, Product(id="1", title="LEGO City")):
        with pytest.raises(TypeError, match="must be a list of products .* pass \\[product\\]"):
            rec.suggest(one)
    with pytest.raises(ValueError, match="needs a 'title' column .*'name'"):
        rec.suggest(pd.DataFrame({"name": titles}))
    # a pattern given as one string is that pattern, not its characters
    everything = rec.suggest(titles[:1], limit=50, threshold=0)[0]
    first = everything[0].tag
    assert [s.tag for s in rec.suggest(titles[:1], limit=50, threshold=0, include=first)[0]] == [
        first
    ]
    kept = rec.suggest(titles[:1], limit=50, threshold=0, exclude=first)[0]
    assert [s.tag for s in kept] == [s.tag for s in everything if s.tag != first]


def test_loading_gives_back_the_callers_progress_bar_setting(trained_model_dir: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    TagRecommender.load(trained_model_dir)
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    TagRecommender.load(trained_model_dir)
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()


def test_suggestion_to_dict() -> None:
    assert Suggestion("Toys", 0.123456789).to_dict() == {
        "tag": "Toys",
        "score": 0.123457,
        "known": True,
    }
    assert Suggestion("brand:Zorg", 0.5, known=False).to_dict()["known"] is False


def test_bad_model_directories(tmp_path: Path, trained_model_dir: Path) -> None:
    import shutil

    with pytest.raises(ModelError, match="does not exist"):
        TagRecommender.load(tmp_path / "nope")
    with pytest.raises(ModelError, match="not a labelrec model directory"):
        TagRecommender.load(tmp_path)
    broken = Path(shutil.copytree(trained_model_dir, tmp_path / "broken"))
    (broken / "thresholds.json").write_text('{"global": 0.5, "per_tag": [0.5]}', encoding="utf-8")
    with pytest.raises(ModelError, match="thresholds"):
        TagRecommender.load(broken)


def test_forward_batch_size_defaults_by_device(trained_model_dir: Path) -> None:
    from labelrec.predict import CPU_BATCH_SIZE

    assert TagRecommender.load(trained_model_dir, device="cpu").batch_size == CPU_BATCH_SIZE == 8
    assert TagRecommender.load(trained_model_dir, batch_size=3).batch_size == 3
    for bad in (0, -1):  # a negative batch size used to give all-zero scores
        with pytest.raises(ValueError, match="batch size must be >= 1"):
            TagRecommender.load(trained_model_dir, batch_size=bad)


def test_long_texts_are_cut_before_scoring(trained_model_dir: Path) -> None:
    from labelrec.predict import MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS

    rec = TagRecommender.load(trained_model_dir)
    title = ("Brickton police station " * 100)[:MAX_TITLE_CHARS]
    desc = ("plush bear " * 2000)[:MAX_DESCRIPTION_CHARS]
    hostile = {"title": title + " cable" * 200_000, "description": desc + " x" * 100_000}
    cut = {"title": title, "description": desc}
    scores, new = rec.score([hostile, cut])
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)  # only the first chars count
    assert new[0] == new[1]
    assert rec.new_tags([hostile]) == rec.new_tags([cut])


def test_every_front_end_reads_the_text_a_catalog_gives(
    rec: TagRecommender, tmp_path: Path
) -> None:
    """Extra spaces, tabs and zero-width characters are read away as the catalog reader reads
    them, so suggest, index (a catalog) and the service rank alike."""
    from conftest import write_jsonl

    from labelrec.data import read_catalog

    raw = {  # full-width letters and digits as a CJK keyboard types them
        "id": "a",
        "title": "  Ｂｒｉｃｋｔｏｎ\u200b  police\tstation　６０ ",
        "description": "red\u00ad  kit，ｒｅｄ",
    }
    clean = {"id": "a", "title": "Brickton police station 60", "description": "red kit，red"}
    (read,) = read_catalog(write_jsonl([{**raw, "tags": ["t"]}], tmp_path / "c.jsonl")).products
    assert (read.title, read.description) == (clean["title"], clean["description"])
    ranked = [rec.suggest([p], limit=5, threshold=0)[0] for p in (raw, clean, read)]
    assert ranked[0] == ranked[1] == ranked[2]
    assert rec.new_tags([raw]) == rec.new_tags([clean])


def test_a_product_with_no_text_gets_no_tags(rec: TagRecommender) -> None:
    blank = [" \u200b ", "Brickton police station", {"title": "", "description": " "}]
    rows = rec.suggest(blank, threshold=0)  # threshold 0: the top `limit`, whatever the scores
    assert rows[0] == [] and rows[2] == [] and len(rows[1]) == 10
    assert rows[1] == rec.suggest(["Brickton police station"], threshold=0)[0]
    explained = rec.explain(blank, threshold=0)  # the same tags, each with its evidence
    assert [[s["tag"] for s in row] for row in explained] == [[s.tag for s in r] for r in rows]


def test_a_model_trained_without_descriptions_scores_titles_alone(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    model = tmp_path / "titles_only"
    shutil.copytree(trained_model_dir, model)
    info = json.loads((model / "labelrec.json").read_text(encoding="utf-8"))
    info["config"]["data"]["description_column"] = None
    (model / "labelrec.json").write_text(json.dumps(info), encoding="utf-8")
    titles_only, both = TagRecommender.load(model), TagRecommender.load(trained_model_dir)
    product = {"title": "wooden toy", "description": "Brickton police station plush bear " * 5}
    assert not titles_only.uses_descriptions and both.uses_descriptions
    assert titles_only.suggest([product], threshold=0) == both.suggest(["wooden toy"], threshold=0)
    assert both.suggest([product], threshold=0) != both.suggest(["wooden toy"], threshold=0)


def test_a_lone_surrogate_is_a_value_error_naming_the_product(rec: TagRecommender) -> None:
    with pytest.raises(ValueError, match="product 1: 'description' holds a lone surrogate"):
        rec.suggest(["kite", {"title": "kite", "description": "red\ud800"}])
