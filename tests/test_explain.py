"""Explanations: what each part of the fusion gave a suggested tag."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from labelrec.cli import main
from labelrec.predict import EVIDENCE_PARTS, TagRecommender

PARTS = EVIDENCE_PARTS
TITLES = ["plush bear", "LEGO city police station", "wooden jigsaw puzzle"]


def test_evidence_adds_up_to_the_score(trained_model_dir: Path) -> None:
    rec = TagRecommender.load(trained_model_dir)
    plain = rec.suggest(TITLES, limit=6, threshold=0)
    explained = rec.explain(TITLES, limit=6, threshold=0)
    assert [[s.tag for s in row] for row in plain] == [[t["tag"] for t in r] for r in explained]
    checked = 0
    for row in explained:
        for tag in row:
            evidence = tag["evidence"]
            assert set(PARTS) <= set(evidence) or not tag.get("known", True)
            if "raised_by" in evidence:  # a category raised to its best child's score
                assert evidence["raised_by"].startswith(tag["tag"])
                continue
            total = sum(v for k, v in evidence.items() if k in PARTS)
            assert total == pytest.approx(tag["score"], abs=1e-3), tag
            checked += 1
    assert checked > 0
    assert any(row[0]["evidence"]["neural"] > 0 for row in explained)


def test_evidence_adds_up_with_brands_absent_from_the_title_scaled(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    models = []
    for factor in (0.5, 1.0):
        model = shutil.copytree(
            trained_model_dir, tmp_path / str(factor), ignore=shutil.ignore_patterns("checkpoints")
        )
        meta = json.loads((model / "fusion.json").read_text(encoding="utf-8"))
        meta["absent_factor"] = factor
        (model / "fusion.json").write_text(json.dumps(meta), encoding="utf-8")
        models.append(TagRecommender.load(model))
    rec, before = models
    assert rec.fusion.span is not None and rec.fusion.uses_absent
    title = "plush bear"  # names no brand: every known brand is absent from it
    scores, old = rec.suggest([title], limit=50, threshold=0), before.suggest([title], 50, 0)
    old_scores = {s.tag: s.score for s in old[0]}
    brands = [s for s in scores[0] if s.tag.startswith("brand:") and s.known]
    assert brands and all(s.score == pytest.approx(old_scores[s.tag] / 2) for s in brands)
    for tag in rec.explain([title], limit=50, threshold=0)[0]:
        if tag.get("known", True) and "raised_by" not in tag["evidence"]:
            total = sum(v for k, v in tag["evidence"].items() if k in PARTS)
            assert total == pytest.approx(tag["score"], abs=1e-3), tag


def test_evidence_names_the_nearest_training_products_with_the_tag(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    train = {
        r["id"]: r
        for r in map(json.loads, (toy_data_dir / "train.jsonl").read_text("utf-8").splitlines())
    }
    rec = TagRecommender.load(trained_model_dir)
    row = rec.explain(["LEGO city police station"], limit=5, threshold=0)[0]
    lego = next(t for t in row if t["tag"] == "brand:Lego")
    nearest = lego["evidence"]["nearest"]
    assert 1 <= len(nearest) <= 3
    sims = [n["similarity"] for n in nearest]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0
    for n in nearest:  # real training products that carry the tag, with their titles
        assert "brand:Lego" in train[n["id"]]["tags"] and n["title"] == train[n["id"]]["title"]
    assert "police" in nearest[0]["title"].lower()
    json.dumps(row)  # JSON-ready

    # a model saved without training ids explains without neighbours
    model = shutil.copytree(
        trained_model_dir, tmp_path / "old", ignore=shutil.ignore_patterns("checkpoints")
    )
    meta = json.loads((model / "tfidf.json").read_text(encoding="utf-8"))
    del meta["train_ids"], meta["train_titles"]
    (model / "tfidf.json").write_text(json.dumps(meta), encoding="utf-8")
    old = TagRecommender.load(model).explain(["LEGO city police station"], limit=5, threshold=0)
    assert all("nearest" not in t["evidence"] for t in old[0])


def test_a_renamed_tag_names_its_rule(trained_model_dir: Path, tmp_path: Path) -> None:
    model = shutil.copytree(
        trained_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("checkpoints")
    )
    top = TagRecommender.load(model).suggest(["plush bear"], limit=1, threshold=0)[0][0].tag
    (model / "rules.yaml").write_text(f"rename: {{{top!r}: 'merged'}}\n", encoding="utf-8")
    row = TagRecommender.load(model).explain(["plush bear"], limit=3, threshold=0)[0]
    merged = [t for t in row if t["tag"] == "merged"]  # ties with the top score may lead
    assert len(merged) == 1 and top not in [t["tag"] for t in row]
    assert merged[0]["evidence"]["renamed_from"] == top
    assert merged[0]["evidence"]["rule"] == f"rename {top} -> merged"


def test_a_rename_is_explained_by_the_variant_whose_score_it_shows(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """The best scored variant may miss its threshold: the suggestion then shows the score of
    one that passed, and its evidence is that one's."""
    model = shutil.copytree(
        trained_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("checkpoints")
    )
    title = "LEGO city police station"
    ranked = TagRecommender.load(model).suggest([title], limit=10, threshold=0)[0]
    first = ranked[0]
    # a tag outside the best one's paths: held back with its parent, one under it would not
    # pass either (a path is decided only under a decided parent)
    second = next(t for t in ranked[1:] if not t.tag.startswith(first.tag + " > "))
    assert first.known and second.known and first.score > second.score
    tags = json.loads((model / "tags.json").read_text(encoding="utf-8"))["tags"]
    cut = [2.0 if tag == first.tag else 0.0 for tag in tags]  # the best never passes
    (model / "thresholds.json").write_text(json.dumps({"global": 0.0, "per_tag": cut}))
    (model / "rules.yaml").write_text(
        f"rename: {{{second.tag!r}: {first.tag!r}}}\n", encoding="utf-8"
    )
    row = TagRecommender.load(model).explain([title], limit=5)[0]
    (shown,) = [t for t in row if t["tag"] == first.tag]
    assert shown["score"] == pytest.approx(second.score, abs=1e-6)
    assert shown["evidence"]["renamed_from"] == second.tag
    if "raised_by" not in shown["evidence"]:
        total = sum(v for k, v in shown["evidence"].items() if k in PARTS)
        assert total == pytest.approx(shown["score"], abs=1e-3), shown


def test_cli_explain(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    args = ["suggest", str(trained_model_dir), "--limit", "2", "--threshold", "0", "--explain"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("plush bear\n"))
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("neural=" in line for line in lines)
    nearest = [part for part in lines[0].split() if part.startswith("nearest=")]
    assert nearest, lines[0]  # ids with their similarity, not a Python list of dicts
    assert re.fullmatch(r"nearest=([^,:]+:\d\.\d{3},?)+", nearest[0]), nearest[0]
    assert "{'" not in lines[0]
    monkeypatch.setattr(sys, "stdin", io.StringIO("plush bear\n"))
    assert main([*args, "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(PARTS) <= set(row["tags"][0]["evidence"])


def test_service_explain(make_service, trained_model_dir: Path) -> None:
    from labelrec.service import ProductIn

    svc = make_service(trained_model_dir)
    product = ProductIn(title="plush bear", id="b1")
    out = asyncio.run(svc.suggest(product=product, limit=3, threshold=0, explain=True))
    assert out.id == "b1" and len(out.tags) == 3
    assert all(set(PARTS) <= set(t.evidence) for t in out.tags)
    nearest = [n for t in out.tags for n in t.evidence.get("nearest", [])]
    assert nearest and all("bear" in n.title for n in nearest[:1])
    plain = asyncio.run(svc.suggest(product=product, limit=3, threshold=0))
    assert [t.tag for t in plain.tags] == [t.tag for t in out.tags]
    assert "evidence" not in plain.model_dump()["tags"][0]  # only when asked for


def test_the_ridge_classifier_has_its_own_share(trained_model_dir: Path) -> None:
    """With a ridge share in the TF-IDF voter, its part is ``tfidf_ridge`` and the parts still
    add up to the score."""
    rec = TagRecommender.load(trained_model_dir, rerank=False)
    assert rec.fusion.tfidf.fit_ridge(0.3)
    rec.fusion.weight, rec.fusion.embedding_weight, rec.fusion.ridge_mix = 0.3, 0.2, 0.5
    explained = rec.explain(TITLES, limit=6, threshold=0)
    ridge_shares = []
    for tag in (t for row in explained for t in row if t.get("known", True)):
        evidence = tag["evidence"]
        ridge_shares.append(evidence["tfidf_ridge"])
        if "raised_by" not in evidence:
            total = sum(v for k, v in evidence.items() if k in PARTS)
            assert total == pytest.approx(tag["score"], abs=1e-3), tag
    assert max(ridge_shares) > 0
