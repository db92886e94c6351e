"""Explanations whose evidence shares add up to the score: the ridge classifier beside the span
tagger, and a new tag's title span beside the generator."""

from pathlib import Path

import pytest

from labelrec.predict import EVIDENCE_PARTS, TagRecommender


def test_evidence_adds_up_with_ridge_and_title_spans_together(trained_model_dir: Path) -> None:
    rec = TagRecommender.load(trained_model_dir, rerank=False)
    assert rec.fusion.span is not None and rec.fusion.tfidf.fit_ridge(0.3)
    f = rec.fusion
    f.weight, f.embedding_weight, f.ridge_mix, f.span_weight = 0.3, 0.2, 0.5, 0.4
    checked = 0
    for row in rec.explain(["plush bear", "LEGO city police station"], limit=6, threshold=0):
        for tag in row:
            ev = tag["evidence"]
            if tag.get("known", True) and "raised_by" not in ev:
                assert sum(v for k, v in ev.items() if k in EVIDENCE_PARTS) == pytest.approx(
                    tag["score"], abs=1e-3
                ), tag
                checked += ev["tfidf_ridge"] > 0
    assert checked


from test_generator import generator_model  # noqa: E402,F401  (the fixture)


def test_new_tag_evidence_adds_up_with_the_generator(generator_model) -> None:  # noqa: F811
    out, _ = generator_model
    rec = TagRecommender.load(out, rerank=False)
    assert rec.uses_generator and rec.fusion.span is not None
    rec.fusion.span_weight = max(rec.fusion.span_weight, 0.3)
    checked = 0
    for row in rec.explain(["Zorblax city police station", "Hornby Quixo train set"], 30, 0.0):
        for tag in row:
            if not tag.get("known", True):
                ev = tag["evidence"]
                assert ev["title_span"] + ev["generator"] == pytest.approx(tag["score"], abs=1e-3)
                checked += ev["title_span"] > 0
    assert checked
