"""Rules: deny, rename, allow, facet cardinality; per request include / exclude."""

from __future__ import annotations

import asyncio
import io
import logging
import random
import shutil
import sys
from pathlib import Path

import pytest

from labelrec.cli import main
from labelrec.modeldir import RULES_FILE
from labelrec.predict import Suggestion, TagRecommender
from labelrec.rules import Rules, RulesError

RULES = """\
deny: ["Books", "brand:Generic*"]
rename: {"brand:LEGO": "brand:Lego"}
max_per_facet: {"brand:": 1}
"""


def s(tag: str, score: float, known: bool = True) -> Suggestion:
    return Suggestion(tag, score, known)


def test_apply_on_hand_made_suggestions() -> None:
    rules = Rules(
        deny=["Books", "brand:Generic*"],
        rename={"brand:LEGO": "brand:Lego"},
        max_per_facet={"brand:": 1, "color:": 2},
    )
    ranked = [
        s("Books", 0.99),
        s("brand:LEGO", 0.9),
        s("brand:Lego", 0.5),
        s("brand:GenericCo", 0.8),
        s("color:Red", 0.7),
        s("brand:Other", 0.6),
        s("color:Blue", 0.4),
        s("color:Green", 0.3),
        s("Toys", 0.2, known=False),
    ]
    out = rules.apply(ranked)
    assert [(x.tag, x.score) for x in out] == [
        ("brand:Lego", 0.9),  # renamed and merged: the best score stays
        ("color:Red", 0.7),
        ("color:Blue", 0.4),
        ("Toys", 0.2),
    ]
    assert out[-1].known is False
    narrowed = rules.apply(ranked, include=["color:*", "Toys"], exclude=["color:Red"])
    assert [x.tag for x in narrowed] == ["color:Blue", "color:Green", "Toys"]
    only = Rules(allow=["Toys*"]).apply(ranked)
    assert [x.tag for x in only] == ["Toys"]
    # * and ? are the wildcards; brackets and other characters are themselves
    marked = [s("[Sale]", 0.9), s("S", 0.8), s("a.b", 0.7), s("axb", 0.6), s("Size 1", 0.5)]
    kept = Rules(deny=["[Sale]", "a.b", "Size ?"]).apply(marked)
    assert [x.tag for x in kept] == ["S", "axb"]
    # a request's patterns apply to each of its products: compiled once, not once a product
    from labelrec.rules import _compiled

    _compiled.cache_clear()
    for _ in range(50):
        assert rules.apply(ranked, include=["color:*", "Toys"], exclude=["color:Red"]) == narrowed
    assert (_compiled.cache_info().misses, _compiled.cache_info().hits) == (2, 98)
    # a renamed tag is known when the vocabulary has it, whatever the tag it renames was
    renames = Rules(rename={"brand:Zorg": "brand:Lego", "brand:Lego Set": "brand:LegoSet"})
    out = renames.apply(
        [s("brand:Zorg", 0.9, known=False), s("brand:Lego Set", 0.5)], vocab={"brand:Lego"}
    )
    assert [(x.tag, x.known) for x in out] == [("brand:Lego", True), ("brand:LegoSet", False)]


def test_rules_files_and_their_errors(tmp_path: Path) -> None:
    good = tmp_path / "rules.yaml"
    good.write_text(RULES, encoding="utf-8")
    rules = Rules.load(good)
    assert rules.deny == ["Books", "brand:Generic*"] and rules.source == str(good)
    bad = tmp_path / "bad.yaml"
    cases = [
        ("deny: [Books\nrename: {}\n", r"bad.yaml, line 2: not valid YAML"),
        ("deny: [a]\ndenied: [Books]\n", "bad.yaml, line 2: unknown key 'denied'"),
        ("deny: Books\n", "bad.yaml, line 1: deny: expected a list of tag patterns"),
        ("rename: {a: 3}\n", "rename: 'a': 3: expected a tag -> a tag"),
        # a bad value names the line of its entry
        ("deny:\n  - Books\n  - 7\n", "bad.yaml, line 3: deny: expected a tag pattern, got 7"),
        ("allow: [a]\nrename:\n  x: y\n  b: ''\n", "bad.yaml, line 4: rename: 'b': ''"),
        ("max_per_facet:\n  'brand:': 1\n  'color:': -2\n", r"bad.yaml, line 3: max_per"),
        ("rename: [a]\n", "rename: expected a mapping of tag -> tag"),
        # a pattern or tag of blanks or invisible characters is nothing once read as tags are
        ("deny: [a]\nallow:\n  - '\u200b'\n", r"line 3: allow: '\\u200b' is no tag once read"),
        ("deny: ['  ']\n", "line 1: deny: '  ' is no tag once read as tags are"),
        ("rename: {' ': a}\n", "rename: ' ': 'a': expected a tag -> a tag"),
        ("max_per_facet: {' ': 1}\n", "max_per_facet: ' ': 1: expected a prefix"),
        ("max_per_facet: {'\u200b': 1}\n", "max_per_facet: '.u200b': 1: expected a prefix"),
        ("max_per_facet: {'brand:': -1}\n", "max_per_facet: 'brand:': -1: a count must be >= 0"),
        ("max_per_facet: {'brand:': one}\n", "max_per_facet: 'brand:': 'one': expected a prefix"),
        ("max_per_facet: 3\n", "max_per_facet: expected a mapping"),
        ("- a list\n", "expected a mapping with deny"),
        ("deny: [a]\nallow: []\n", "bad.yaml, line 2: allow: an empty list would allow no tag"),
        ("rename:\n  a: b\n  b: c\n  c: a\n", "bad.yaml, line 2: rename: 'a' -> 'b' -> 'c' -> 'a'"),
        # a key given twice would silently drop the first
        ("deny: [Books]\nrename: {a: b}\ndeny: [Toys]\n", "line 3: .* 'deny' is given twice"),
        ("rename:\n  x: a\n  x: b\n", "line 3: .* 'x' is given twice"),
        (
            "rename:\n  '品牌:华为': a\n  '品牌：华为': b\n",
            "line 3: rename: '品牌：华为' is '品牌:华为'",
        ),
    ]
    for text, message in cases:
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(RulesError, match=message):
            Rules.load(bad)
    with pytest.raises(RulesError, match="missing.yaml"):
        Rules.load(tmp_path / "missing.yaml")
    bad.write_bytes("deny:\n  - 品牌:杂牌\n".encode("gbk"))  # a Chinese editor's default
    with pytest.raises(RulesError, match="bad.yaml, line 2: not valid UTF-8"):
        Rules.load(bad)


def test_full_width_rules_are_the_ascii_rules() -> None:
    rules = Rules(
        deny=["品类：手机*"],
        rename={"品牌：ＨＵＡＷＥＩ": "品牌：华为"},
        max_per_facet={"品牌：": 1},
    )
    assert rules.deny == ["品类:手机*"] and rules.rename == {"品牌:HUAWEI": "品牌:华为"}
    assert not rules.allows("品类:手机壳") and rules.allows("品类:耳机")
    assert rules.max_per_facet == {"品牌:": 1}
    assert rules.unmatched(["品类:手机壳", "品牌:HUAWEI", "品牌:华为"]) == []
    # a request's own patterns are read the same way
    ranked = [s("品牌:华为", 0.9), s("品类:耳机", 0.5)]
    assert [x.tag for x in Rules().apply(ranked, exclude=["品牌：*"])] == ["品类:耳机"]
    assert [x.tag for x in Rules().apply(ranked, include=["品牌：*"])] == ["品牌:华为"]


def test_rules_name_tags_as_catalogs_spell_them() -> None:
    rules = Rules(
        deny=["Toys\u00a0>\u00a0Building", "brand:Lego "],
        rename={"brand:Duplo\u200b": "brand:LEGO  Duplo "},
    )
    assert rules.deny == ["Toys > Building", "brand:Lego"]
    assert rules.rename == {"brand:Duplo": "brand:LEGO Duplo"}
    ranked = [s("Toys > Building", 0.9), s("brand:Lego", 0.8), s("brand:Duplo", 0.7)]
    assert [x.tag for x in rules.apply(ranked)] == ["brand:LEGO Duplo"]
    assert [x.tag for x in Rules().apply(ranked, include=["brand:Lego "])] == ["brand:Lego"]


def test_rename_chains_are_followed() -> None:
    rules = Rules(rename={"Toys": "Toy", "Toy": "Toys & Games", "same": "same"})
    assert rules.rename == {"Toys": "Toys & Games", "Toy": "Toys & Games"}
    out = rules.apply([s("Toys", 0.9), s("Toys & Games", 0.5)])
    assert [(x.tag, x.score) for x in out] == [("Toys & Games", 0.9)]
    assert rules.violations([x.tag for x in out]) == []


def test_rules_that_match_no_tag_of_the_model() -> None:
    rules = Rules(
        deny=["books", "brand:Generic*"],
        allow=["Toys*", "brand:*"],
        rename={"brand:LEGO": "brand:Lego", "Toy": "Toys", "Kids": "Toy"},
        max_per_facet={"Brand:": 1, "color:": 1},
    )
    vocab = ["Books", "Toys", "brand:Lego", "brand:Hornby", "color:Red"]
    assert rules.unmatched(vocab) == [
        "deny 'books' matches none of the model's 5 tags (with another case: Books)",
        "deny 'brand:Generic*' matches none of the model's 5 tags",
        "rename 'brand:LEGO' matches none of the model's 5 tags (with another case: brand:Lego)",
        "rename 'Kids' matches none of the model's 5 tags",
        "max_per_facet 'Brand:' matches none of the model's 5 tags (with another case: "
        "brand:Hornby, brand:Lego)",
    ]  # 'Toy' is a step of the chain Kids -> Toy -> Toys: not reported


def test_no_violations_across_10k_suggestions() -> None:
    rng = random.Random(0)
    brands = [f"brand:B{i}" for i in range(30)] + ["brand:LEGO", "brand:Generic X"]
    tags = brands + [f"Cat {i}" for i in range(40)] + ["Books", "color:Red", "color:Blue"]
    rules = Rules(
        deny=["Books", "brand:Generic*", "Cat 1*"],
        rename={"brand:LEGO": "brand:Lego", "brand:B0": "brand:B1"},
        max_per_facet={"brand:": 1, "color:": 1},
    )
    n = 0
    for _ in range(1000):
        ranked = sorted((s(t, rng.random()) for t in rng.sample(tags, 25)), key=lambda x: -x.score)
        out = rules.apply(ranked)
        assert [x.score for x in out] == sorted((x.score for x in out), reverse=True)
        for cut in range(1, 11):
            top = [x.tag for x in out[:cut]]
            assert rules.violations(top) == [], top
            n += len(top)
    assert n >= 10_000


def test_first_reads_only_as_far_as_the_answer_needs() -> None:
    """``Rules.first`` stops at ``limit`` tags: the candidates past them are never built."""
    rules = Rules(deny=["Books"], rename={"brand:LEGO": "brand:Lego"}, max_per_facet={"brand:": 1})
    read: list[str] = []

    def candidates():
        for i, tag in enumerate(["Books", "brand:LEGO", "brand:Lego", "brand:X", "Toys", "Cars"]):
            read.append(tag)
            yield s(tag, 1.0 - i / 10)
        raise AssertionError("read past the answer")

    out = rules.first(candidates(), 2)
    assert [(x.tag, x.score) for x in out] == [("brand:Lego", 0.9), ("Toys", 0.6)]
    assert read == ["Books", "brand:LEGO", "brand:Lego", "brand:X", "Toys"]
    assert [x.tag for x in rules.first(iter([s("Toys", 0.5)]), None)] == ["Toys"]


def test_ranking_with_rules_equals_applying_them_to_every_candidate() -> None:
    """What ``TagRecommender.rank`` gives with rules or patterns (a lazy, merged stream of
    known and new tags) equals ``Rules.apply`` on every candidate, cut to the limit."""
    import numpy as np

    from labelrec.data import TagVocab

    rng = np.random.default_rng(0)
    tags = [f"brand:B{i}" for i in range(20)] + [f"Cat {i}" for i in range(30)] + ["Books"]
    rules = Rules(
        deny=["Books", "Cat 1*"],
        rename={"brand:B0": "brand:B1", "Cat 2": "Cat 3"},
        max_per_facet={"brand:": 2},
    )
    rec = TagRecommender.__new__(TagRecommender)
    rec.vocab, rec.rules, rec.fusion = TagVocab(tags, [1] * len(tags)), rules, None
    scores = rng.random((40, len(tags))).astype(np.float32)
    scores[:, :5] = 1.0  # ties at the top, among known tags and with new ones
    new_tags = [
        {f"brand:New{j}": float(rng.choice([1.0, rng.random()])) for j in range(i % 4)}
        for i in range(40)
    ]
    cut, new_cut = np.full(len(tags), 0.2, dtype=np.float32), 0.3
    for limit in (1, 3, 10, 100):
        for include, exclude in ((None, None), (["brand:*"], None), (None, ["Cat 4*"])):
            got = rec._rank_with_rules(scores, limit, cut, new_cut, new_tags, include, exclude)
            for row, new, ranked in zip(scores, new_tags, got, strict=True):
                every = [s(tags[j], float(row[j])) for j in np.flatnonzero(row >= cut)]
                every += [s(t, v, False) for t, v in new.items() if v >= new_cut]
                want = rules.apply(every, include, exclude, rec.vocab)[:limit]
                assert ranked == want


def test_eval_takes_no_rules(capsys) -> None:
    """``labelrec eval`` measures the model's scores, which rules do not change: a --rules
    there would be a setting without effect, so it is refused."""
    with pytest.raises(SystemExit) as info:
        main(["eval", "some/model", "--data", "valid.jsonl", "--rules", "rules.yaml"])
    assert info.value.code == 2 and "--rules" in capsys.readouterr().err


@pytest.fixture
def ruled_model(trained_model_dir: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the trained model and the top tags it gives a plush bear."""
    model = shutil.copytree(
        trained_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("checkpoints")
    )
    rec = TagRecommender.load(model)
    top = [x.tag for x in rec.suggest(["plush bear"], limit=5, threshold=0)[0]]
    return model, top


def test_the_recommender_applies_its_rules(ruled_model, tmp_path: Path) -> None:
    model, top = ruled_model
    rules_file = tmp_path / "deny.yaml"
    rules_file.write_text(f"deny: [{top[0]!r}]\nrename: {{{top[1]!r}: 'renamed'}}\n", "utf-8")
    rec = TagRecommender.load(model, rules=rules_file)
    out = [x.tag for x in rec.suggest(["plush bear"], limit=5, threshold=0)[0]]
    assert top[0] not in out and "renamed" in out and len(out) == 5  # the next tags fill up
    assert out.index("renamed") == 0
    # A rules.yaml saved with the model applies by itself; include / exclude narrow it.
    shutil.copy(rules_file, model / RULES_FILE)
    rec = TagRecommender.load(model)
    assert rec.rules is not None and rec.rules.source == str(model / RULES_FILE)
    kept = [x.tag for x in rec.suggest(["plush bear"], 5, 0, exclude=["renamed"])[0]]
    assert "renamed" not in kept and top[0] not in kept
    only = rec.suggest(["plush bear"], 5, 0, include=[top[2]])[0]
    assert [x.tag for x in only] == [top[2]]


def test_cli_rules(ruled_model, tmp_path: Path, monkeypatch, capsys, caplog) -> None:
    model, top = ruled_model
    rules_file = tmp_path / "deny.yaml"
    rules_file.write_text(f"deny: [{top[0]!r}]\n", "utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO("plush bear\n"))
    args = ["suggest", str(model), "--limit", "3", "--threshold", "0", "--rules", str(rules_file)]
    assert main(args) == 0
    tags = [line.split("\t")[0] for line in capsys.readouterr().out.split("\n") if "\t" in line]
    assert top[0] not in tags and len(tags) == 3
    rules_file.write_text("deny: [Nothing Like It]\n", "utf-8")  # loads, with a warning
    monkeypatch.setattr(sys, "stdin", io.StringIO("plush bear\n"))
    with caplog.at_level(logging.WARNING, logger="labelrec.predict"):
        assert main(args) == 0
    assert "deny 'Nothing Like It' matches none of the model's" in caplog.text
    capsys.readouterr()
    rules_file.write_text("deny: [oops\n", "utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO("plush bear\n"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "deny.yaml, line 2: not valid YAML" in err and "Traceback" not in err
    # before the model loads: a model that cannot load is not what is reported
    args[1] = str(tmp_path / "no-model-here")
    assert main(args) == 2
    assert "deny.yaml, line 2: not valid YAML" in capsys.readouterr().err


def test_service_rules_and_request_patterns(ruled_model, make_service, tmp_path: Path) -> None:
    from labelrec.service import ProductIn

    model, top = ruled_model
    rules_file = tmp_path / "svc.yaml"
    rules_file.write_text(f"deny: [{top[0]!r}]\n", "utf-8")
    svc = make_service(model, LABELREC_RULES=str(rules_file))
    assert svc.model()["rules"] == "…/svc.yaml"  # public answers show no local paths
    out = asyncio.run(svc.suggest(product=ProductIn(title="plush bear"), limit=5, threshold=0))
    assert top[0] not in [t.tag for t in out.tags]
    narrowed = asyncio.run(
        svc.suggest(product=ProductIn(title="plush bear"), limit=5, threshold=0, include=[top[1]])
    )
    assert [t.tag for t in narrowed.tags] == [top[1]]
    rules_file.write_text("max_per_facet: {'brand:': many}\n", "utf-8")
    with pytest.raises(RuntimeError, match=r"LABELREC_RULES: .*svc\.yaml.*max_per_facet"):
        make_service(model, LABELREC_RULES=str(rules_file))
