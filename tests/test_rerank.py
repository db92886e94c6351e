"""The reranker (labelrec.rerank): features, fitting with its out-of-fold gate, persistence,
and a trained model that carries one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from labelrec.data import Product, TagVocab
from labelrec.rerank import FEATURES, Reranker, Votes, candidates, features, tag_kind, tag_value

NOUNS = ["puzzle", "kite", "robot", "drum", "train", "boat", "doll", "ball", "truck", "yoyo"]


def nested_catalog(n: int, seed: int) -> tuple[list[Product], TagVocab, Votes]:
    """Products whose title holds a short span inside a longer one ("puzzle" in "puzzle box");
    the gold tag is the short one, but the fused score puts the long one first."""
    rng = np.random.default_rng(seed)
    tags = [f"type:{w}" for w in NOUNS] + [f"type:{w} box" for w in NOUNS]
    vocab = TagVocab(tags, [10] * len(tags), 100)
    products, final = [], np.zeros((n, len(tags)), dtype=np.float32)
    for i in range(n):
        k = int(rng.integers(len(NOUNS)))
        w = NOUNS[k]
        products.append(Product(id=str(i), title=f"big {w} box for kids", tags=[f"type:{w}"]))
        final[i, len(NOUNS) + k] = rng.uniform(0.7, 0.9)  # "w box": wrong, ranked first
        final[i, k] = rng.uniform(0.4, 0.65)  # "w": right, second
        final[i, (k + 1) % len(NOUNS)] = rng.uniform(0.0, 0.3)  # noise
    votes = Votes(final=final, final_new=[{} for _ in products], neural=final, fused=final)
    return products, vocab, votes


def test_tag_kind_and_value_read_paths_and_facets() -> None:
    assert tag_kind("Toys > Puzzles > Jigsaw", " > ") == "path:2"
    assert tag_kind("Toys", " > ") == "path:0"
    assert tag_kind("brand:Lego", " > ") == "key:brand"
    assert tag_value("Toys > Puzzles > Jigsaw", " > ") == "jigsaw"
    assert tag_value("品牌:华为", None) == "华为"
    # a facet whose value holds the separator is no path; a colon in a plain tag makes no facet
    assert tag_kind("brand:Anagram > MD", " > ") == "key:brand"
    assert tag_value("brand:Anagram > MD", " > ") == "anagram > md"
    assert tag_kind("Star Wars: Rebels", " > ") == "path:0"
    assert tag_value("Star Wars: Rebels", " > ") == "star wars: rebels"
    assert tag_kind("Computers/Laptops:Gaming", "/") == "path:1"


def test_features_see_nested_values_and_the_title() -> None:
    products, vocab, votes = nested_catalog(1, 0)
    cands = candidates(votes.final, votes.final_new, vocab, 3)
    assert [c[0] for c in cands[0]][:2] == [
        f"type:{products[0].title.split()[1]} box",
        f"type:{products[0].title.split()[1]}",
    ]
    x = features(products, votes, vocab, cands, None, {"key:type": 1})
    assert x.shape == (3, len(FEATURES))
    col = {name: i for i, name in enumerate(FEATURES)}
    long, short = x[0], x[1]
    assert short[col["inside_others"]] == 1 and long[col["holds_others"]] == 1
    assert long[col["rank"]] == 0 and short[col["rank"]] == 1
    assert short[col["title_position"]] == pytest.approx(4 / len(products[0].title))
    assert short[col["kind"]] == 1 and short[col["known"]] == 1


def test_candidates_keep_a_new_tag_the_vocabulary_holds_as_new() -> None:
    # pooled out-of-fold evidence: "brand:Acme" is a column (another fold's tag) that this
    # product's voters never knew (score 0), and its span tagger proposed it as new
    vocab = TagVocab(["Toys", "brand:Acme", "brand:Zeta"], [5, 1, 3], 10)
    final = np.array([[0.9, 0.0, 0.2], [0.9, 0.6, 0.2]], dtype=np.float32)
    new = [{"brand:Acme": 0.5, "brand:Nova": 0.1}, {"brand:Acme": 0.3}]
    first, second = candidates(final, new, vocab, 3)
    assert first == [
        ("Toys", 0, pytest.approx(0.9)),
        ("brand:Acme", None, 0.5),
        ("brand:Zeta", 2, pytest.approx(0.2)),
    ]
    # a tag both known and new keeps its higher score, once
    assert [(t, j) for t, j, _ in second] == [("Toys", 0), ("brand:Acme", 1), ("brand:Zeta", 2)]
    assert candidates(final, new, vocab, 5)[0][-1] == ("brand:Nova", None, 0.1)
    # spelt otherwise (one tag_key), the new one is that tag too; two known spellings stay two
    vocab = TagVocab(["Toys", "brand:Acme", "brand:ACME"], [5, 1, 1], 10)
    final = np.array([[0.9, 0.0, 0.05]], dtype=np.float32)
    (row,) = candidates(final, [{"brand:acme": 0.5}], vocab, 3)
    assert [(t, j) for t, j, _ in row] == [("Toys", 0), ("brand:acme", None)]
    (row,) = candidates(final, [{"brand:acme": 0.01}], vocab, 4)
    assert [(t, j) for t, j, _ in row] == [("Toys", 0), ("brand:ACME", 2), ("brand:Acme", 1)]


def test_candidates_rank_a_part_of_the_products_at_a_time(monkeypatch) -> None:
    """``candidates`` ranks ``CANDIDATE_CELLS`` scores at a time (rows of at least one product):
    each product's candidates are those of every score ranked at once, ties included."""
    from labelrec import rerank

    rng = np.random.default_rng(5)
    tags = [f"t{j}" for j in range(12)]
    vocab = TagVocab(tags, [3] * 12, 20)
    final = rng.choice([0.0, 0.1, 0.5, 0.7], (9, 12)).astype(np.float32)  # many ties
    new = [{"x": 0.5} if i % 3 else {} for i in range(9)]
    whole = [
        [(vocab.tags[j], int(j), float(final[i, j])) for j in cols]
        for i, cols in enumerate(np.argpartition(-final, 3, axis=1)[:, :4])
    ]
    for cells in (1, 12, 30, 10_000):
        monkeypatch.setattr(rerank, "CANDIDATE_CELLS", cells)
        for row, ref, proposed in zip(candidates(final, new, vocab, 4), whole, new, strict=True):
            expected = sorted(
                ref + [(t, None, s) for t, s in proposed.items()], key=lambda c: -c[2]
            )
            assert row == expected[:4]
    assert candidates(final[:, :0], new, TagVocab([], [], 20), 4)[1] == [("x", None, 0.5)]


def test_fusion_votes_of_every_product_are_the_pooled_matrices() -> None:
    """The reranker's votes on every product are the evidence's matrices themselves (the pooled
    out-of-fold evidence is the tuning's largest); on some rows, those rows."""
    from labelrec.fusion import Fusion, FusionInputs
    from labelrec.rerank import fusion_votes

    rng = np.random.default_rng(6)
    products = [Product(str(i), "t", tags=["a"]) for i in range(4)]
    inputs = FusionInputs(
        products,
        ["a", "b"],
        neural=rng.random((4, 2), dtype=np.float32),
        tfidf=rng.random((4, 2), dtype=np.float32),
        span_known=rng.random((4, 2), dtype=np.float32),
        span_new=[{"c": 0.5}, {}, {}, {"d": 0.2}],
    )
    fusion = Fusion(None, 0.3, np.full(2, -1), None, False, span_weight=0.4)
    fused = rng.random((4, 2), dtype=np.float32)
    votes = fusion_votes(inputs, fusion, fused)
    assert votes.final is fused and votes.fused is fused
    assert votes.neural is inputs.neural and votes.span_known is inputs.span_known
    assert np.shares_memory(votes.tfidf, inputs.tfidf)
    assert votes.span_new == inputs.span_new and votes.final_new == [
        {"c": 0.2},
        {},
        {},
        {"d": pytest.approx(0.08)},
    ]
    some = fusion_votes(inputs, fusion, fused, [3, 1])
    np.testing.assert_array_equal(some.neural, inputs.neural[[3, 1]])
    np.testing.assert_array_equal(some.final, fused[[3, 1]])
    assert some.span_new == [{"d": 0.2}, {}] and some.final_new == [{"d": pytest.approx(0.08)}, {}]


def test_fit_learns_to_put_the_nested_span_first_and_keeps_it() -> None:
    products, vocab, votes = nested_catalog(120, 0)
    reranker, known, new, report = Reranker.fit(products, vocab, votes, None, None, 5, seed=0)
    assert reranker is not None and report["rerank_kept"] == 1.0
    assert report["rerank_objective_after"] > report["rerank_objective_before"] + 0.2
    # out-of-fold scores on the products it was fitted on: the gold tag first
    top = [vocab.tags[int(np.argmax(row))] for row in known]
    hits = [t in p.tags for t, p in zip(top, products, strict=True)]
    assert np.mean(hits) > 0.95
    test, _, test_votes = nested_catalog(40, 1)
    scores, _ = reranker.apply(test, vocab, test_votes)
    hits = [vocab.tags[int(np.argmax(row))] in p.tags for row, p in zip(scores, test, strict=True)]
    assert np.mean(hits) > 0.95
    # the tags it did not re-score stay below the candidates, in their order
    assert (scores.max(axis=1) > 0.5).all()


def test_apply_keeps_paths_consistent_with_or_without_a_kept_plan() -> None:
    from labelrec.taxonomy import ancestor_plan

    products, vocab, votes = nested_catalog(120, 0)
    reranker = Reranker.fit(products, vocab, votes, None, None, 5, seed=0)[0]
    parents = np.full(len(vocab), -1)
    parents[len(NOUNS) :] = np.arange(len(NOUNS))  # "type:w box" under "type:w", as a path
    test, _, test_votes = nested_catalog(40, 1)
    a, _ = reranker.apply(test, vocab, test_votes, parents)
    b, _ = reranker.apply(test, vocab, test_votes, parents, ancestor_plan(parents))
    np.testing.assert_array_equal(a, b)
    assert (a[:, : len(NOUNS)] >= a[:, len(NOUNS) :]).all()  # a parent never below its child


def test_fit_keeps_no_reranker_that_does_not_beat_the_fusion() -> None:
    products, vocab, votes = nested_catalog(60, 0)
    for p in products:  # now the first-ranked long span is right: nothing to gain
        p.tags[:] = [f"type:{p.title.split()[1]} box"]
    reranker, known, new, report = Reranker.fit(products, vocab, votes, None, None, 5, seed=0)
    assert reranker is None and report["rerank_kept"] == 0.0
    assert known is votes.final


def test_too_few_products_fit_nothing() -> None:
    products, vocab, votes = nested_catalog(10, 0)
    assert Reranker.fit(products, vocab, votes, None, None)[0] is None


def test_save_load_round_trip(tmp_path: Path) -> None:
    products, vocab, votes = nested_catalog(80, 0)
    reranker = Reranker.fit(products, vocab, votes, None, None, 5, seed=0)[0]
    assert reranker is not None
    reranker.save(tmp_path)
    loaded = Reranker.load(tmp_path)
    assert loaded is not None and loaded.kinds == reranker.kinds
    assert not loaded.generator  # fitted without the generator's votes
    reranker.generator = True
    reranker.save(tmp_path)
    assert Reranker.load(tmp_path).generator
    test, _, test_votes = nested_catalog(20, 2)
    a, _ = reranker.apply(test, vocab, test_votes)
    b, _ = loaded.apply(test, vocab, test_votes)
    np.testing.assert_allclose(a, b)
    meta = json.loads((tmp_path / "rerank.json").read_text())
    meta["features"] = meta["features"][:-1] + ["a feature of another labelrec"]
    (tmp_path / "rerank.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="a feature of another labelrec"):
        Reranker.load(tmp_path)
    assert Reranker.load(tmp_path / "none") is None


def test_a_reranker_fitted_on_fewer_features_reads_its_own_columns(tmp_path: Path) -> None:
    from labelrec.rerank import KIND, _classifier

    products, vocab, votes = nested_catalog(80, 0)
    reranker = Reranker.fit(products, vocab, votes, None, None, 5, seed=0)[0]
    assert reranker is not None and reranker.features == FEATURES
    older = FEATURES[: KIND + 1] + ("children",)  # a labelrec that computed fewer
    cands = candidates(votes.final, votes.final_new, vocab, 5)
    x = features(products, votes, vocab, cands, None, reranker.kinds)
    gold = np.asarray(
        [t in p.tags for p, row in zip(products, cands, strict=True) for t, _, _ in row]
    )
    columns = [FEATURES.index(name) for name in older]
    reranker.model = _classifier(0, {"max_iter": 50, "max_depth": 3}).fit(x[:, columns], gold)
    reranker.features = older
    reranker.save(tmp_path)
    loaded = Reranker.load(tmp_path)
    assert loaded is not None and loaded.features == older
    test, _, test_votes = nested_catalog(20, 2)
    scores, _ = loaded.apply(test, vocab, test_votes)
    test_cands = candidates(test_votes.final, test_votes.final_new, vocab, 5)
    probs = reranker.model.predict_proba(
        features(test, test_votes, vocab, test_cands, None, reranker.kinds)[:, columns]
    )[:, 1]
    first = [row[int(np.argmax(probs[5 * i : 5 * i + 5]))][1] for i, row in enumerate(test_cands)]
    assert [int(np.argmax(row)) for row in scores] == first


def test_a_damaged_or_foreign_reranker_is_one_error_naming_its_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from labelrec.errors import ModelError

    products, vocab, votes = nested_catalog(80, 0)
    (tmp_path / "good").mkdir()
    Reranker.fit(products, vocab, votes, None, None, 5, seed=0)[0].save(tmp_path / "good")

    def damaged(name: str, change) -> Path:
        folder = shutil.copytree(tmp_path / "good", tmp_path / name)
        change(folder)
        return folder

    def edit_meta(folder: Path, change) -> None:
        meta = json.loads((folder / "rerank.json").read_text())
        change(meta)
        (folder / "rerank.json").write_text(json.dumps(meta))

    def cut(folder: Path) -> None:
        pickle = folder / "rerank.joblib"
        pickle.write_bytes(pickle.read_bytes()[:300])

    cases = {
        damaged("cut", cut): r"rerank.joblib: the reranker cannot be read \(",
        damaged("empty", lambda f: (f / "rerank.joblib").write_bytes(b"")): "rerank.joblib: the",
        damaged("kinds", lambda f: edit_meta(f, lambda m: m.pop("kinds"))): (
            r"rerank.json: a setting is wrong \(no 'kinds'\); the model directory is damaged"
        ),
        damaged("sep", lambda f: edit_meta(f, lambda m: m.update(separator=3))): (
            r"rerank.json: a setting is wrong \(separator 3 is not a string\)"
        ),
        damaged("list", lambda f: (f / "rerank.json").write_text("[]")): (
            "rerank.json: not a JSON object; the model directory is damaged"
        ),
        damaged("fewer", lambda f: edit_meta(f, lambda m: m.update(features=m["features"][:-1]))): (
            rf"rerank.json: {len(FEATURES) - 1} features named for a classifier of {len(FEATURES)}"
        ),
    }
    for folder, message in cases.items():
        with pytest.raises(ModelError, match=message):
            Reranker.load(folder)
    newer = damaged("newer", lambda f: edit_meta(f, lambda m: m.update(sklearn_version="99.0")))
    with caplog.at_level("WARNING", logger="labelrec.rerank"):
        assert Reranker.load(newer) is not None
    assert "saved by scikit-learn 99.0, read by" in caplog.text


def keep_any_reranker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fit a reranker on a handful of valid products and keep it whatever it scores."""
    from labelrec import rerank

    fit = rerank.Reranker.fit.__func__
    monkeypatch.setattr(rerank, "MIN_PRODUCTS", 5)
    monkeypatch.setattr(
        rerank.Reranker,
        "fit",
        classmethod(lambda cls, *a, **k: fit(cls, *a, **{**k, "min_gain": -1.0})),
    )


@pytest.mark.parametrize("force", [False, True], ids=["gated", "kept"])
def test_a_trained_model_tunes_and_serves_its_reranker(
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    force: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Trained with lexical.rerank, the model either keeps a reranker (its files, the refit
    carrying the tuning run's, suggest and explain using it) or records why not. The toy
    catalog's 10 valid products are too few and too easy to keep one; ``force`` lowers the bar
    so the kept path runs end to end."""
    from conftest import tiny_config

    from labelrec.modeldir import manifest
    from labelrec.predict import EVIDENCE_PARTS, TagRecommender
    from labelrec.train import train

    if force:
        keep_any_reranker(monkeypatch)
    cfg = tiny_config(
        tiny_backbone, toy_data_dir, tmp_path / "m", "lexical.rerank=true", "train.refit=true"
    )
    with caplog.at_level("INFO", logger="labelrec.train"):
        result = train(cfg, progress=False)
    assert "rerank_kept" in result.metrics
    kept = result.metrics["rerank_kept"] == 1.0
    assert kept == force
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reranker:")]
    if not force:  # 10 valid products: why there is none, not a NaN
        assert said == ["reranker: not fitted on 10 valid products (it needs 30, with right and"
                        " wrong candidates among them)"]  # fmt: skip
    out = tmp_path / "m"
    assert (out / "rerank.json").is_file() == kept == (out / "tuning" / "rerank.json").is_file()
    assert ("rerank" in manifest(out)) == kept
    rec = TagRecommender.load(out)
    plain = TagRecommender.load(out, rerank=False)
    assert (rec.reranker is not None) == kept and plain.reranker is None
    items = [{"title": "乐高 城市 警察局 积木"}, {"title": "plush bear soft baby"}]
    ranked = rec.suggest(items, limit=3, threshold=0)
    assert all(len(r) == 3 for r in ranked)
    explained = rec.explain(items, limit=2, threshold=0)
    assert all(("fused_score" in s["evidence"]) == kept for row in explained for s in row)
    shares = EVIDENCE_PARTS
    for s in (s for row in explained for s in row if kept and s.get("known", True)):
        ev = s["evidence"]
        if "raised_by" not in ev:
            assert sum(ev[k] for k in shares) == pytest.approx(ev["fused_score"], abs=1e-4)
    # a category at its child's score after the reranker was raised to it, and says by which
    deep = rec.explain(items + [{"title": "LEGO city police station"}], limit=50, threshold=0)
    raised = 0
    for row in deep:
        score = {t["tag"]: t["score"] for t in row}
        for t in row:
            children = [c for c in score if c.startswith(t["tag"] + " > ") and " > " not in
                        c[len(t["tag"]) + 3:]]  # fmt: skip
            if kept and children and max(score[c] for c in children) >= t["score"]:
                assert t["evidence"]["raised_by"] in children, t
                raised += 1
    assert raised > 0 or not kept
    # votes(): what the reranker reads, the scores before it, with or without one loaded
    fused, fused_new = plain.score(items)
    for model in (rec, plain):
        votes = model.votes(items)
        np.testing.assert_allclose(votes.final, fused)
        assert votes.final_new == fused_new and votes.tfidf is not None
        one = votes.take([1])
        assert one.final.shape == (1, fused.shape[1]) and one.final_new == [fused_new[1]]
    if kept:
        scores, _ = rec.score(items)
        assert not np.allclose(scores, fused)
        # its trees run on one OpenMP thread (predict.one_thread) where OpenMP has more
        from threadpoolctl import threadpool_info, threadpool_limits

        openmp: list[set[int]] = []
        apply = rec.reranker.apply

        def spy(*args):
            info = threadpool_info()
            openmp.append({i["num_threads"] for i in info if i["user_api"] == "openmp"})
            return apply(*args)

        monkeypatch.setattr(rec.reranker, "apply", spy)
        with threadpool_limits(limits=2, user_api="openmp"):  # the tests' environment sets 1
            rec.suggest(items[:1])
        assert openmp == [{1}]
    # a later run without the reranker removes the one left in the directory
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "rerank.json").write_text("{}")
    from labelrec.rerank import save_reranker

    save_reranker(None, copy)
    assert not (copy / "rerank.json").exists() and not (copy / "rerank.joblib").exists()


def test_the_reranker_reads_the_generators_votes(
    tiny_backbone: Path,
    tiny_decoder: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a tag generator (tuned on a subset of valid), the reranker is fitted on that subset
    and reads the generator's votes as a feature."""
    from conftest import tiny_config

    from labelrec.predict import TagRecommender
    from labelrec.train import train

    keep_any_reranker(monkeypatch)
    gen = [
        "lexical.rerank=true",
        "generate.enabled=true",
        f"generate.backbone={tiny_decoder}",
        "generate.epochs=1",
        "generate.num_beams=2",
        "generate.weight=0.4",
        "generate.tune_products=8",
    ]
    result = train(tiny_config(tiny_backbone, toy_data_dir, tmp_path / "m", *gen), progress=False)
    assert result.metrics["rerank_kept"] == 1.0 and result.metrics["n_products"] == 8
    rec = TagRecommender.load(tmp_path / "m")
    assert rec.uses_generator and rec.reranker is not None
    items = [{"title": "plush bear soft baby"}]
    seen = {}
    apply = rec.reranker.apply

    def spy(products, vocab, votes, parents=None, depth=None):
        seen["votes"] = votes
        return apply(products, vocab, votes, parents, depth)

    monkeypatch.setattr(rec.reranker, "apply", spy)
    assert rec.suggest(items, limit=2, threshold=0)[0]
    assert seen["votes"].gen_known is not None and seen["votes"].gen_known.any()
    assert rec.new_tag_threshold == rec.reranker.new_threshold
    # without the generator, a reranker fitted on its votes would read zeros where it learned
    # votes: it is left out with it
    assert rec.reranker.generator
    assert TagRecommender.load(tmp_path / "m", generate=False).reranker is None


def test_tuning_folds_fit_the_reranker_on_every_product_out_of_fold(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import tiny_config

    from labelrec.predict import TagRecommender
    from labelrec.train import train

    keep_any_reranker(monkeypatch)
    out = tmp_path / "m"
    extra = ("lexical.rerank=true", "train.refit=true", "train.tuning_folds=2")
    result = train(tiny_config(tiny_backbone, toy_data_dir, out, *extra), progress=False)
    n = sum(1 for f in ("train.jsonl", "valid.jsonl") for _ in (toy_data_dir / f).open())
    assert len(result.valid_products) == n and result.metrics["rerank_kept"] == 1.0
    carried, tuned = Reranker.load(out), Reranker.load(out / "tuning")
    assert carried is not None and tuned is not None  # the refit carries the tuning's
    assert json.loads((out / "rerank.json").read_text()) == json.loads(
        (out / "tuning" / "rerank.json").read_text()
    )
    x = np.random.default_rng(0).uniform(0, 1, (50, len(FEATURES)))
    x[:, FEATURES.index("kind")] = 1
    np.testing.assert_array_equal(carried.model.predict_proba(x), tuned.model.predict_proba(x))
    assert TagRecommender.load(out).reranker is not None


def test_fit_gives_its_best_settings_scores_and_leaves_the_evidence_as_it_was() -> None:
    """The out-of-fold scores ``fit`` returns are those of the setting it reports (scattered
    again from that setting's probabilities), and the evidence its votes share is not written."""
    import sys

    from labelrec.evaluate import JointLayout
    from labelrec.fusion import Fusion
    from labelrec.rerank import fusion_votes

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import tuning_memory

    for seed in range(3):
        inputs, vocab = tuning_memory._evidence(90, 70, 3, 2, seed)
        fused = (0.5 * inputs.neural + 0.5 * inputs.tfidf).astype(np.float32)
        fusion = Fusion(None, 0.5, np.full(len(vocab), -1), None, False, span_weight=0.3)
        kept = [m.copy() for m in (inputs.neural, inputs.tfidf, inputs.span_known, fused)]
        votes = fusion_votes(inputs, fusion, fused)
        reranker, known, new, report = Reranker.fit(inputs.products, vocab, votes, None, None)
        assert reranker is not None
        value = JointLayout.of(new, inputs.products, vocab).objective(known, new)
        assert value == report["rerank_objective_after"]
        after = (inputs.neural, inputs.tfidf, inputs.span_known, fused)
        assert all(np.array_equal(a, b) for a, b in zip(kept, after, strict=True))
