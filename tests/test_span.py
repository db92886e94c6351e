"""Open-vocabulary span tags: candidates, learning which spans are tags, joint evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelrec.config import load_config
from labelrec.data import Product, TagVocab
from labelrec.evaluate import joint_matrices
from labelrec.taggers import Tagger, TrainingSet
from labelrec.taggers.span import (
    SpanTagger,
    candidates,
    evaluate_with_new_tags,
    kind_precision,
    split_tag,
    units,
)

BRANDS = [
    "Acme", "Brio", "Corgi", "Dala", "Ertl", "Fisko", "Galt", "Hape", "Imex", "Janod",
    "Kidco", "Lundby", "Mebo", "Nuby", "Orchard", "Plantoys", "Quercetti", "Revell", "Schleich",
    "Tomy", "Ubbi", "Vtech", "Wader", "Xeno", "Yookidoo", "Zapf", "Bruder", "Chicco", "Djeco",
]  # fmt: skip
THINGS = ["wooden train set", "toy car red", "puzzle 100 pieces", "plush bear", "kite blue"]


def catalog() -> list[Product]:
    out = []
    for i, brand in enumerate(BRANDS):
        thing = THINGS[i % len(THINGS)]
        tags = ["Toys", f"brand:{brand}"]
        out.append(Product(f"p{i}", f"{brand} {thing}", tags=tags))
        out.append(Product(f"q{i}", f"{brand} {THINGS[(i + 2) % len(THINGS)]}", tags=tags))
    return out


def test_units_and_candidates_cover_mixed_titles() -> None:
    title = "iphone 11 智能手机"
    assert [title[s:e] for s, e in units(title)] == ["iphone", "11", "智", "能", "手", "机"]
    spans = {title[s:e] for s, e, _ in candidates(title, max_units=3, max_chars=11)}
    assert {"iphone", "11", "iphone 11", "手机", "智能手"} <= spans
    assert "iphone 11 智" in spans and "iphone 11 智能" not in spans  # at most 3 units
    assert all(len(t) <= 11 for t in spans)
    assert "iphone 11" not in {title[s:e] for s, e, _ in candidates(title, 3, 8)}
    assert split_tag("brand:Hornby") == ("brand:", "Hornby")
    assert split_tag("品牌:华为") == ("品牌:", "华为")
    assert split_tag("Hobbies > Trains") == ("", "Hobbies > Trains")
    # ideographs of the supplementary planes are characters of their own, as the common ones
    rare = "ABC𠮷𠀀野家"
    assert [rare[s:e] for s, e in units(rare)] == ["ABC", "𠮷", "𠀀", "野", "家"]


def test_span_tagger_proposes_unseen_brands(tmp_path: Path) -> None:
    train = catalog()
    vocab = TagVocab.from_products(train)
    tagger = SpanTagger.build(train, vocab)
    assert tagger is not None and [k.prefix for k in tagger.kinds] == ["brand:"]
    assert not tagger.kinds[0].lowercase  # brands keep the title's casing
    queries = [Product("n1", "Zorblax wooden train set"), Product("n2", "brio plush bear")]
    known, new = tagger.known_and_new(queries)
    best_new = max(new[0], key=new[0].get)
    assert best_new == "brand:Zorblax"
    assert new[0][best_new] > 0.5
    assert all(v < 0.5 for t, v in new[0].items() if t != best_new)  # "wooden", "train set"...
    # a known brand written in lower case maps onto the vocabulary's spelling
    assert known[1, vocab.index["brand:Brio"]] == known[1].max() > 0.5
    assert "brand:brio" not in new[1]
    tagger.save(tmp_path)
    again = SpanTagger.load(tmp_path, vocab)
    known2, new2 = again.known_and_new(queries)
    np.testing.assert_allclose(known, known2, atol=1e-6)
    assert new2[0].keys() == new[0].keys()
    # behind the taggers' interface: fitted from the configuration, scored as evidence
    assert isinstance(again, Tagger)
    cfg = load_config(None, ["lexical.open_vocab=true"])
    fitted = SpanTagger.fit(TrainingSet(train, vocab.encode(train), vocab), cfg)
    np.testing.assert_allclose(fitted.score(queries).known, known, atol=1e-6)
    cfg = load_config(None, ["lexical.open_vocab=false"])
    assert SpanTagger.fit(TrainingSet(train, vocab.encode(train), vocab), cfg) is None


def test_full_width_titles_name_the_same_tags() -> None:
    """CJK keyboards type Ｂｒｉｏ and ｂｒａｎｄ：; spans, tags and absence fold the width."""
    train = catalog()
    vocab = TagVocab.from_products(train)
    tagger = SpanTagger.build(train, vocab)
    queries = [
        Product("w", "Ｂｒｉｏ　plush bear"),
        Product("n", "Ｚｏｒｂｌａｘ wooden train set"),
    ]
    known, new = tagger.known_and_new(queries)
    assert known[0, vocab.index["brand:Brio"]] == known[0].max() > 0.5
    assert not any("Ｂ" in t for t in new[0])
    assert max(new[1], key=new[1].get) == "brand:Zorblax"  # a new brand, written in ASCII
    assert not tagger.absent(queries)[0, vocab.index["brand:Brio"]]
    assert vocab.find("ｂｒａｎｄ：ＢＲＩＯ") == vocab.index["brand:Brio"]
    # a letter whose lower case is two characters (İ) does not shift the spans after it
    title = "İİ Zorblax wooden train set"
    _, new = tagger.known_and_new([Product("i", title)])
    assert new[0] and all(split_tag(t)[1] in title for t in new[0])
    assert "brand:Zorblax" in new[0]


def test_absent_marks_the_kinds_tags_that_the_title_does_not_name() -> None:
    train = catalog()
    vocab = TagVocab.from_products(train)
    tagger = SpanTagger.build(train, vocab)
    absent = tagger.absent([Product("a", "BRIO wooden train set"), Product("b", "plush bear")])
    brio, toys = vocab.index["brand:Brio"], vocab.index["Toys"]
    assert not absent[0, brio] and absent[1, brio]  # case-folded
    assert not absent[:, toys].any()  # not a kind of the span tagger
    assert absent[0].sum() == len(BRANDS) - 1 and absent[1].sum() == len(BRANDS)


def test_a_fusion_scales_known_tags_absent_from_the_title(tmp_path: Path) -> None:
    import json

    from labelrec.fusion import Fusion
    from labelrec.modeldir import FUSION_META
    from labelrec.taxonomy import parent_index

    train = catalog()
    vocab = TagVocab.from_products(train)
    tagger = SpanTagger.build(train, vocab)
    fusion = Fusion(None, 1.0, parent_index(vocab.tags, None), None, False, tagger, 0.3, 0.5)
    queries = [Product("a", "Brio kite blue"), Product("b", "Zorblax plush bear")]
    neural = np.random.default_rng(0).random((2, len(vocab)), dtype=np.float32)
    plain, new = fusion.fuse_with_new(queries, neural)
    assert not fusion.uses_absent and fusion.text_evidence(queries).absent is None
    fusion.absent_factor = 0.5
    scaled, new2 = fusion.fuse_with_new(queries, neural)
    absent = tagger.absent(queries)
    np.testing.assert_allclose(scaled, np.where(absent, 0.5 * plain, plain), atol=1e-6)
    assert new2 == new  # new tags are spans of the title: never absent
    fusion.save(tmp_path)
    loaded = Fusion.load(tmp_path, vocab)
    assert loaded.absent_factor == 0.5
    np.testing.assert_allclose(loaded.fuse(queries, neural), scaled, atol=1e-6)
    meta = json.loads((tmp_path / FUSION_META).read_text(encoding="utf-8"))
    del meta["absent_factor"]  # a model saved before the factor existed: off
    (tmp_path / FUSION_META).write_text(json.dumps(meta), encoding="utf-8")
    np.testing.assert_allclose(Fusion.load(tmp_path, vocab).fuse(queries, neural), plain, atol=1e-6)


def test_a_pass_scores_as_its_products_one_by_one() -> None:
    train = catalog()
    vocab = TagVocab.from_products(train)
    tagger = SpanTagger.build(train, vocab)
    queries = [
        Product("n1", "Zorblax wooden train set"),
        Product("n2", ""),  # no spans: nothing proposed, the others keep their rows
        Product("n3", "brio plush bear"),
        Product("n4", "Lego"),
    ]
    together = tagger.probabilities(queries)
    alone = [tagger.probabilities([q])[0] for q in queries]
    assert together[1] == {} and all(together[i] for i in (0, 2, 3))
    for a, b in zip(together, alone, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[t] for t in a], [b[t] for t in a], rtol=1e-6)
    known, new = tagger.known_and_new(queries)
    for i, q in enumerate(queries):
        k1, n1 = tagger.known_and_new([q])
        np.testing.assert_allclose(known[i], k1[0], rtol=1e-6)
        assert new[i].keys() == n1[0].keys()


def test_no_span_kinds_no_tagger() -> None:
    train = [Product(str(i), f"title {i}", tags=["Toys > Cars"]) for i in range(30)]
    assert SpanTagger.build(train, TagVocab.from_products(train)) is None


def test_joint_evaluation_counts_new_tags_that_match_gold() -> None:
    vocab = TagVocab.from_products([Product("t", "x", tags=["brand:A", "Toys"])])
    products = [
        Product("v1", "B thing", tags=["brand:B", "Toys"]),  # brand:B is unknown to the vocab
        Product("v2", "A thing", tags=["brand:A"]),
    ]
    known = np.zeros((2, len(vocab)), dtype=np.float32)
    known[0, vocab.index["Toys"]] = 0.6
    known[1, vocab.index["brand:A"]] = 0.9
    new = [{"brand:B": 0.8, "brand:thing": 0.7}, {}]
    y, scores, names = joint_matrices(known, new, products, vocab)
    assert names[len(vocab)] == "brand:B" and "brand:thing" in names
    assert y.shape == scores.shape and y.sum() == 3
    ev = evaluate_with_new_tags(known, new, products, vocab, np.full(len(vocab), 0.5), 0.75)
    assert ev.metrics["P@1"] == 1.0  # brand:B (new, right) then brand:A
    assert ev.metrics["P@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert ev.metrics["new_tag_recall"] == 1.0 and ev.metrics["new_tag_precision"] == 1.0
    closed = evaluate_with_new_tags(known, [{}, {}], products, vocab, np.full(len(vocab), 0.5), 1)
    assert closed.metrics["micro_recall"] == pytest.approx(2 / 3)  # brand:B cannot be found
    assert ev.metrics["micro_recall"] == 1.0


def test_facet_precision_compares_tags_in_any_case_and_width() -> None:
    vocab = TagVocab(["brand:Lego", "brand:Hornby", "Toys"], [1, 1, 2])
    products = [
        Product("a", "LEGO bricks", tags=["brand:LEGO", "Toys"]),  # the vocabulary's brand:Lego
        Product("b", "HORNBY engine", tags=["brand:Hornby"]),
        Product("c", "Playmobil castle", tags=["brand：Playmobil"]),  # full-width colon
        Product("d", "a kite", tags=["Toys"]),  # no brand: not counted
    ]
    known = np.array([[0.9, 0.1, 0.5], [0.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 0.9]])
    new_tags = [{}, {"brand:HORNBY": 0.8}, {"brand:PLAYMOBIL": 0.7}, {}]
    got = kind_precision(known, new_tags, products, vocab, "brand:")
    assert got["facet brand P@1"] == 1.0
    assert got["facet brand known P@1"] == 1.0  # a and b: known in another case
    assert got["facet brand new P@1"] == 1.0  # c, proposed in another case and width
    without = kind_precision(known, None, products, vocab, "brand:")
    assert without["facet brand P@1"] == pytest.approx(1 / 3)  # b scored 0, c's best is Lego
