"""Tests for the synthetic demo catalog (labelrec.demo)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from labelrec import demo

CJK = re.compile(r"[\u4e00-\u9fff]")
EMOJI = re.compile("[\u2600-\u27bf\U0001f300-\U0001faff]")


@pytest.fixture(scope="module")
def catalog() -> list[dict]:
    return demo.generate_catalog()


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_deterministic_by_seed(catalog: list[dict]) -> None:
    assert demo.generate_catalog() == catalog
    assert demo.generate_catalog(seed=1) != catalog
    # Products are drawn in order: a smaller catalog is a prefix of a larger one.
    assert demo.generate_catalog(100) == catalog[:100]


def test_default_size_schema_and_ids(catalog: list[dict]) -> None:
    assert len(catalog) >= 2000
    ids = [p["id"] for p in catalog]
    assert len(set(ids)) == len(ids)
    assert ids[123] == "demo-000123"
    for p in catalog:
        assert set(p) == {"id", "title", "description", "tags"}
        assert isinstance(p["title"], str) and p["title"].strip()
        assert isinstance(p["description"], str)
        assert p["tags"] and all(isinstance(t, str) and t for t in p["tags"])
        assert len(set(p["tags"])) == len(p["tags"])


def test_hierarchy_prefixes_present(catalog: list[dict]) -> None:
    leaves = set(demo.LEAVES)
    assert 60 <= len(leaves) <= 100
    assert {leaf.split(" > ")[0] for leaf in leaves} == set(demo.DEPARTMENTS)
    assert {leaf.count(" > ") + 1 for leaf in leaves} == {2, 3, 4}
    for p in catalog:
        tags = set(p["tags"])
        assert len(tags & leaves) == 1
        for tag in tags:
            if " > " in tag:
                parts = tag.split(" > ")
                for i in range(1, len(parts)):
                    assert " > ".join(parts[:i]) in tags, (tag, p["tags"])


def test_text_variety(catalog: list[dict]) -> None:
    n = len(catalog)
    chinese = sum(bool(CJK.search(p["title"])) for p in catalog) / n
    assert 0.08 <= chinese <= 0.25
    emoji = sum(bool(EMOJI.search(p["title"])) for p in catalog)
    assert 0 < emoji < 0.1 * n
    descriptions = [p["description"] for p in catalog]
    assert any(d == "" for d in descriptions)
    assert any(len(d) > 1000 for d in descriptions)
    assert sum(len(d) > 1000 for d in descriptions) < 0.1 * n


def test_long_tail(catalog: list[dict]) -> None:
    counts = Counter(t for p in catalog for t in p["tags"])
    assert sum(c < 5 for c in counts.values()) >= 0.3 * len(counts)
    assert max(counts.values()) > 100
    leaf_counts = [counts[leaf] for leaf in demo.LEAVES]
    assert sum(c < 5 for c in leaf_counts) >= 5
    assert max(leaf_counts) > 100


def test_facets_and_keywords(catalog: list[dict]) -> None:
    tags = Counter(t for p in catalog for t in p["tags"])
    prefixes = {t.split(":", 1)[0] for t in tags if ":" in t}
    assert {"brand", "color", "material", "age", "size", "品牌"} <= prefixes
    for keyword in ("gift", "eco-friendly", "bestseller"):
        assert tags[keyword] >= 20
    with_brand = sum(any(t.startswith("brand:") for t in p["tags"]) for p in catalog)
    assert with_brand >= 0.8 * len(catalog)


def test_brand_signal_in_title(catalog: list[dict]) -> None:
    aliases = demo.brand_aliases()
    hits = total = 0
    for p in catalog:
        for tag in p["tags"]:
            if tag.startswith("brand:"):
                names = aliases.get(tag, (tag.removeprefix("brand:"),))
                total += 1
                hits += any(name in p["title"] for name in names)
    assert hits >= 0.75 * total


def test_keyword_signal(catalog: list[dict]) -> None:
    # "eco-friendly" products mostly mention it; products without the tag rarely do.
    cues = ("Eco-Friendly", "Sustainable", "Plastic-Free", "环保")

    def has_cue(p: dict) -> bool:
        return any(c in p["title"] or c in p["description"] for c in cues)

    eco = [p for p in catalog if "eco-friendly" in p["tags"]]
    rest = [p for p in catalog if "eco-friendly" not in p["tags"]]
    assert sum(map(has_cue, eco)) >= 0.7 * len(eco)
    assert sum(map(has_cue, rest)) <= 0.05 * len(rest)


def test_write_demo_split(tmp_path: Path, catalog: list[dict]) -> None:
    paths = demo.write_demo(tmp_path / "a")
    assert set(paths) == {"train", "valid", "test"}
    assert [paths[k].name for k in ("train", "valid", "test")] == [
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
    ]
    train, valid, test = (_read_jsonl(paths[k]) for k in ("train", "valid", "test"))
    ids = [{p["id"] for p in part} for part in (train, valid, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sorted(train + valid + test, key=lambda p: p["id"]) == catalog
    assert 0.10 <= len(valid) / len(catalog) <= 0.20
    assert 0.10 <= len(test) / len(catalog) <= 0.20
    assert all(demo.split_of(p["id"]) == "valid" for p in valid)
    assert all(demo.split_of(p["id"]) == "test" for p in test)
    with pytest.raises(ValueError, match="sum below 1"):
        demo.write_demo(tmp_path / "c", valid_fraction=0.5, test_fraction=0.5)
    # UTF-8 without escaping.
    assert CJK.search(paths["train"].read_text(encoding="utf-8"))
    # Same inputs -> byte-identical files.
    again = demo.write_demo(tmp_path / "b")
    for name in paths:
        assert again[name].read_bytes() == paths[name].read_bytes()


def test_write_catalog_formats(tmp_path: Path) -> None:
    products = demo.generate_catalog(50, seed=2)
    for name in ("c.jsonl", "c.json"):
        assert _read_jsonl(demo.write_catalog(products, tmp_path / name)) == products

    with demo.write_catalog(products, tmp_path / "c.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [p["id"] for p in products]
    assert [r["tags"].split("|") for r in rows] == [p["tags"] for p in products]
    assert [r["title"] for r in rows] == [p["title"] for p in products]

    import pandas as pd
    import pyarrow  # noqa: F401  (required: its absence fails the tests)

    frame = pd.read_parquet(demo.write_catalog(products, tmp_path / "sub" / "c.parquet"))
    assert list(frame["id"]) == [p["id"] for p in products]
    assert [list(t) for t in frame["tags"]] == [p["tags"] for p in products]

    with pytest.raises(ValueError):
        demo.write_catalog(products, tmp_path / "c.txt")


def test_write_demo_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "mycat"
    out.mkdir()
    mine = out / "valid.jsonl"
    mine.write_text('{"id": "mine"}\n', encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"mycat/valid.jsonl already exists"):
        demo.write_demo(out, n_products=10)
    assert mine.read_text(encoding="utf-8") == '{"id": "mine"}\n'
    assert sorted(p.name for p in out.iterdir()) == ["valid.jsonl"]  # nothing else written
    paths = demo.write_demo(out, n_products=10, force=True)
    assert sum(len(_read_jsonl(p)) for p in paths.values()) == 10
    again = demo.write_demo(out, n_products=20, force=True)  # a pipeline regenerating its data
    assert sum(len(_read_jsonl(p)) for p in again.values()) == 20
    with pytest.raises(FileExistsError, match="train.jsonl already exists"):
        demo.write_demo(out, n_products=10)
    with pytest.raises(SystemExit) as stop:
        demo.main([str(out), "--n-products", "10"])
    assert stop.value.code == 2
    demo.main([str(out), "--n-products", "10", "--force"])


def test_demo_verb_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from labelrec.cli import main

    out = tmp_path / "mycat"
    assert main(["demo", "--output", str(out), "--products", "10"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["demo", "--output", str(out), "--products", "12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labelrec demo: error: ") and "train.jsonl already exists" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["demo", "--output", str(out), "--products", "12", "--force"]) == 0
    assert sum(len(_read_jsonl(out / f"{n}.jsonl")) for n in ("train", "valid", "test")) == 12
