"""benchmarks/quality.py: peers and labelrec scored by the same metric code, one table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_catalog

from labelrec.data import Product, TagVocab, grouped_folds, near_duplicate_key
from labelrec.evaluate import evaluate_scores_on

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality


def split() -> tuple[list[Product], list[Product]]:
    rows = [Product(**r) for r in toy_catalog(8)]
    return [p for p in rows if not p.id.startswith("p7-")], [
        p for p in rows if p.id.startswith("p7-")
    ]


def test_score_system_tunes_thresholds_and_matches_evaluate() -> None:
    train, valid = split()
    vocab = TagVocab.from_products(train)
    scores = vocab.encode(valid).toarray().astype(np.float32) * 0.8 + 0.1
    row = quality.score_system("toy", "oracle", scores, valid, vocab, None, 1.0, 2.0)
    assert row.metrics["P@1"] == 1.0 and row.metrics["micro_f1"] == 1.0
    plain = evaluate_scores_on(scores, valid, vocab, 0.5).metrics
    for key in ("P@1", "P@3", "nDCG@3", "PSP@5"):
        assert row.metrics[key] == pytest.approx(plain[key])
    assert 0 < row.metrics["hP@3"] <= 1
    table = quality.format_table([row])
    assert table.splitlines()[0].startswith("| catalog | system | P@1")
    assert "| toy | oracle | 1.000 |" in table


def test_peers_are_trained_and_scored_on_the_vocabulary() -> None:
    pytest.importorskip("omikuji")
    pytest.importorskip("fasttext")
    train, valid = split()
    vocab = TagVocab.from_products(train)
    rows = quality.run_peers("toy", train, valid, vocab, threads=1)
    assert [r.system.split(" (")[0] for r in rows] == ["Omikuji", "fastText"]
    omikuji = rows[0]
    assert omikuji.metrics["P@1"] > 0.5  # titles carry the tags: a lexical model finds them
    assert omikuji.train_seconds > 0 and omikuji.products_per_s > 0


def test_labelrec_rows_include_parts(trained_model_dir: Path, toy_data_dir: Path) -> None:
    from labelrec.data import read_catalog

    valid = read_catalog(toy_data_dir / "valid.jsonl").products
    rows, vocab = quality.eval_labelrec("toy", trained_model_dir, valid, 12.0, parts=True)
    names = [r.system.strip() for r in rows]
    assert names[0] == "labelrec" and "neural (LoRA) only" in names
    assert any(n.startswith("neural+kNNs") for n in names) and "TF-IDF kNN only" in names
    assert rows[0].train_seconds == 12.0 and rows[0].products_per_s > 0
    assert len(vocab) > 0


def test_new_tags_of_a_model_without_a_span_tagger_count(
    trained_model_dir: Path, toy_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New tags from the generator alone count as `labelrec eval` counts them."""
    from labelrec.data import read_catalog
    from labelrec.predict import TagRecommender

    load, score = TagRecommender.load, TagRecommender.score

    def load_without_span(*args, **kwargs):
        rec = load(*args, **kwargs)
        rec.fusion.span = None  # as a model whose only new tags come from its generator
        return rec

    def score_with_a_new_tag(self, products, *args, **kwargs):
        known, new = score(self, products, *args, **kwargs)
        return known, [{"brand:Brandnew": 1.0} for _ in new]  # first, and never gold

    monkeypatch.setattr(TagRecommender, "load", staticmethod(load_without_span))
    monkeypatch.setattr(TagRecommender, "score", score_with_a_new_tag)
    valid = read_catalog(toy_data_dir / "valid.jsonl").products
    rows, _ = quality.eval_labelrec("toy", trained_model_dir, valid, 1.0, parts=False)
    assert rows[0].metrics["P@1"] == 0.0  # the new tag ranks first in every product


def test_goal_table_compares_with_the_best_peer_per_metric(tmp_path: Path, capsys) -> None:
    def row(catalog: str, system: str, p1: float, ndcg: float, psp: float, secs: float = 60.0):
        metrics = {"P@1": p1, "nDCG@3": ndcg, "PSP@5": psp}
        return quality.Row(catalog, system, metrics, secs, 1.0)

    rows = [
        row("a", "labelrec", 0.90, 0.80, 0.50),
        row("a", "  neural only", 0.99, 0.99, 0.99),  # a part, not a peer
        row("a", "Omikuji (x)", 0.85, 0.70, 0.40),
        row("a", "  Omikuji (y)", 0.95, 0.95, 0.95),  # a setting not chosen on valid
        row("a", "fastText (z)", 0.80, 0.79, 0.52),
        row("zh_taobao", "labelrec", 0.69, 0.60, 0.50),
        row("zh_taobao", "Omikuji (x)", 0.50, 0.40, 0.20),
        row("b", "labelrec", 0.90, 0.80, 0.50, secs=16 * 60),
        row("b", "fastText (z)", 0.10, 0.10, 0.10),
    ]
    lines = quality.format_goal(rows).splitlines()
    assert lines[2] == "| a | +5.0 | +1.0 | -2.0 | 1.0 | no |"  # nDCG +1 and PSP lost
    assert lines[3].endswith("| no |")  # zh_taobao under P@1 0.70
    assert lines[4].endswith("| 16.0 | no |")  # too slow to train
    rows[0].metrics.update({"nDCG@3": 0.82, "PSP@5": 0.52})
    assert quality.format_goal(rows).splitlines()[2].endswith("| yes |")
    saved = tmp_path / "rows.json"
    saved.write_text(__import__("json").dumps([r.__dict__ for r in rows]))
    assert quality.main(["--report", str(saved)]) == 0
    assert "| a | +5.0 | +3.0 | +0.0 | 1.0 | yes |" in capsys.readouterr().out


# ------------------------------------------------------------------ cross-validation (--cv K)


def test_cv_folds_cover_every_product_once_and_keep_near_duplicates_together() -> None:
    rows = [Product(**r) for r in toy_catalog(6)]  # each title in 6 variants: "<title> <copy>"
    folds = grouped_folds(rows, 3, seed=0)
    assert len(folds) == 3
    every = np.sort(np.concatenate(folds))
    assert every.tolist() == list(range(len(rows)))
    fold_of = {int(i): f for f, idx in enumerate(folds) for i in idx}
    by_key: dict[str, set[int]] = {}
    for i, p in enumerate(rows):
        by_key.setdefault(near_duplicate_key(p.title), set()).add(fold_of[i])
    assert len(by_key) == 10 and all(len(f) == 1 for f in by_key.values())
    assert near_duplicate_key("LEGO City, 60141 (Police)") == "lego city police"
    # another seed: another assignment, still a partition
    other = grouped_folds(rows, 3, seed=1)
    assert sorted(np.concatenate(other).tolist()) == list(range(len(rows)))


def test_inner_split_keeps_near_duplicates_on_one_side() -> None:
    rows = [Product(**r) for r in toy_catalog(6)]
    train, valid = quality.inner_split(rows, 0.3, seed=0)
    assert len(train) + len(valid) == len(rows) and valid and train
    keys = {near_duplicate_key(p.title) for p in valid}
    assert keys.isdisjoint(near_duplicate_key(p.title) for p in train)


def _row(system: str, fold: int, p1: float, ndcg: float) -> object:
    values = {"P@1": p1, "nDCG@3": ndcg, "PSP@5": 0.5, "micro_f1": 0.5}
    return quality.Row("toy", system, values, 10.0, 1.0, {"fold": fold})


def test_interval_and_cv_table_on_hand_made_rows() -> None:
    mean, half = quality.interval(np.array([1.0, 2.0, 3.0]))
    # t(0.975, 2) = 4.303, sd = 1, n = 3
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.3027 / np.sqrt(3), rel=1e-4)
    # Nadeau and Bengio, 3 folds (held out : training = 1 : 2): variance 1/3 + 1/2, not 1/3
    _, wide = quality.interval(np.array([1.0, 2.0, 3.0]), 0.5)
    assert wide == pytest.approx(4.3027 * np.sqrt(1 / 3 + 1 / 2), rel=1e-4)
    rows = [
        _row("labelrec", 0, 0.90, 0.80),
        _row("labelrec", 1, 0.92, 0.84),
        _row("Omikuji (char1-2)", 0, 0.85, 0.78),
        _row("Omikuji (word+char1-2)", 1, 0.89, 0.79),
        # a labelrec variant far behind is compared too, but is no peer for the goal
        _row("labelrec without refit", 0, 0.50, 0.50),
        _row("labelrec without refit", 1, 0.50, 0.50),
    ]
    text = quality.format_cv(rows)
    assert "| labelrec | 0.910 ± " in text and "| Omikuji | 0.870 ± " in text
    # paired: +5 and +3 points of P@1 -> +4.0; nDCG@3 +2 and +5 -> +3.5
    assert "| Omikuji | +4.0 ± " in text and " | +3.5 ± " in text
    assert "| labelrec without refit | +41.0 ± " in text
    assert "| system | 1 | 2 |" in text and "| labelrec | 0.900 | 0.920 |" in text
    assert "| Omikuji | 0.850 | 0.890 |" in text
    assert "goal (+3 P@1 and nDCG@3 over the best peer): met on 2 folds (the goal counts 5)" in text
    rows[2].metrics["P@1"] = 0.89  # Omikuji fold 0 now +1 point behind: +2.0 on average
    assert "goal (+3 P@1 and nDCG@3 over the best peer): not met" in quality.format_cv(rows)
    # another row as the one the others are subtracted from: no goal line for it
    # two folds: held out : training = 1 : 1, variance 1/2 + 1 against 1/2: sqrt(3) wider
    plain, corrected = quality.format_cv(rows), quality.format_cv(rows, corrected=True)
    assert "(points ± corrected 95% interval)" in corrected
    half = float(plain.split("| Omikuji | +2.0 ± ")[1].split(" ")[0])
    wide = float(corrected.split("| Omikuji | +2.0 ± ")[1].split(" ")[0])
    assert wide == pytest.approx(half * np.sqrt(3), abs=0.1)
    for row in rows:  # rows that record their run's 5 folds: two of them shown
        row.notes["folds"] = 5
    recorded = quality.format_cv(rows, corrected=True)  # 1/4 + 1/2 against 1/2: sqrt(1.5)
    assert float(recorded.split("| Omikuji | +2.0 ± ")[1].split(" ")[0]) == pytest.approx(
        half * np.sqrt(1.5), abs=0.1
    )
    versus = quality.format_cv(rows, "labelrec without refit")
    assert "labelrec without refit minus each other row" in versus
    assert "| labelrec | -41.0 ± " in versus and "goal" not in versus


def test_peers_refit_on_train_and_valid_with_thresholds_from_valid() -> None:
    pytest.importorskip("omikuji")
    pytest.importorskip("fasttext")
    rows = [Product(**r) for r in toy_catalog(8)]
    test = [p for p in rows if p.id.startswith("p7-")]
    rest = [p for p in rows if not p.id.startswith("p7-")]
    train, valid = quality.inner_split(rest, 0.3, seed=0)
    vocab = TagVocab.from_products(rest)
    out = quality.refit_peers("toy", train, valid, test, vocab, threads=1)
    assert [quality.family(r.system) for r in out] == ["Omikuji", "fastText"]
    assert out[0].metrics["P@1"] > 0.5 and out[0].train_seconds > 0
    # several runs a peer: the row is their mean, each run's P@1 noted
    runs = quality.refit_peers("toy", train, valid, test, vocab, threads=1, runs=2)
    for row in runs:
        by_run = row.notes["P@1 by run"]
        assert row.notes["runs"] == 2 and len(by_run) == 2
        assert row.metrics["P@1"] == pytest.approx(np.mean(by_run))
    assert runs[0].train_seconds > out[0].train_seconds  # every fit counts


def test_peer_runs_note_each_runs_own_p1(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("omikuji")
    rows = [Product(**r) for r in toy_catalog(8)]
    test = [p for p in rows if p.id.startswith("p7-")]
    train, valid = quality.inner_split([p for p in rows if not p.id.startswith("p7-")], 0.3, seed=0)
    scored = iter([0.5, 0.8])  # the test P@1 of run 1, then of run 2
    real = quality.score_system

    def score(*args: object, **kwargs: object) -> quality.Row:
        row = real(*args, **kwargs)
        row.metrics["P@1"] = next(scored)
        return row

    monkeypatch.setattr(quality, "score_system", score)
    vocab = TagVocab.from_products(train + valid)
    (row,) = quality.refit_peers(
        "toy", train, valid, test, vocab, threads=1, families=("Omikuji",), runs=2
    )
    assert row.notes["P@1 by run"] == [0.5, 0.8]
    assert row.metrics["P@1"] == pytest.approx(0.65)


def test_saved_runs_merge_without_repeating_a_row(tmp_path: Path) -> None:
    import json

    first = [_row("labelrec", 0, 0.9, 0.8), _row("Omikuji (a)", 0, 0.8, 0.7)]
    first.append(quality.Row("toy", "  Omikuji (b)", {"P@1": 0.7}, 1.0, 1.0, {"fold": 0}))
    first.append(quality.Row("toy", "  Omikuji (c)", {"P@1": 0.6}, 1.0, 1.0, {"fold": 0}))
    second = [_row("labelrec", 0, 0.1, 0.1), _row("labelrec without refit", 0, 0.85, 0.75)]
    paths = []
    for name, rows in (("a.json", first), ("b.json", second)):
        path = tmp_path / name
        path.write_text(json.dumps([r.__dict__ for r in rows]), encoding="utf-8")
        paths.append(path)
    merged = quality.merge_saved(paths)
    assert [r.system for r in merged] == [
        "labelrec",
        "Omikuji (a)",
        "  Omikuji (b)",
        "  Omikuji (c)",
        "labelrec without refit",
    ]
    assert merged[0].metrics["P@1"] == 0.9


def test_saved_runs_of_another_split_are_not_paired(tmp_path: Path) -> None:
    """Folds are paired by number: runs of another --cv or --seed are refused by name; a run
    saved before the fold count and seed were recorded pairs when its test size agrees."""
    import json

    def saved(name: str, **notes: int) -> Path:
        row = _row("labelrec" if name != "peer.json" else "Omikuji", 0, 0.9, 0.8)
        row.notes.update(notes)
        path = tmp_path / name
        path.write_text(json.dumps([row.__dict__]), encoding="utf-8")
        return path

    peer = saved("peer.json", n_test=100, folds=5, seed=0)
    assert len(quality.merge_saved([peer, saved("same.json", n_test=100, folds=5, seed=0)])) == 2
    assert len(quality.merge_saved([peer, saved("old.json", n_test=100)])) == 2
    for name, notes, said in [
        ("seed.json", {"n_test": 100, "folds": 5, "seed": 1}, "seed 0 against 1"),
        ("k.json", {"n_test": 120, "folds": 4, "seed": 0}, "n_test 100 against 120, folds 5"),
        ("old_other.json", {"n_test": 90}, "n_test 100 against 90"),
    ]:
        with pytest.raises(quality.ReportError, match=f"{name}: fold 1 of toy is not .*{said}"):
            quality.merge_saved([peer, saved(name, **notes)])


def test_cv_runs_only_the_folds_asked_for(tmp_path: Path) -> None:
    pytest.importorskip("omikuji")
    from conftest import write_jsonl

    rows = toy_catalog(8)
    (tmp_path / "data" / "toy").mkdir(parents=True)
    write_jsonl(rows[:60], tmp_path / "data" / "toy" / "train.jsonl")
    write_jsonl(rows[60:], tmp_path / "data" / "toy" / "valid.jsonl")
    config = tmp_path / "cv.yaml"  # ten distinct titles: a larger inner valid split
    config.write_text("data:\n  valid_fraction: 0.3\n", encoding="utf-8")
    done = quality.run_cv(
        "toy", tmp_path / "data", config, tmp_path / "out", [], 3, 0, 1,
        skip_labelrec=True, peers=("Omikuji",), folds={2},
    )  # fmt: skip
    assert done and {r.notes["fold"] for r in done} == {1}
    assert {(r.notes["folds"], r.notes["seed"]) for r in done} == {(3, 0)}
    assert not (tmp_path / "out" / "toy-cv3" / "fold1").exists()
    fold = tmp_path / "out" / "toy-cv3" / "fold2"  # its products, the test ones for errors.py
    parts = [
        (fold / f"{name}.jsonl").read_text().splitlines() for name in ("train", "valid", "test")
    ]
    assert len(parts[2]) == done[0].notes["n_test"] and sum(map(len, parts)) == len(rows)


def test_cv_splits_with_the_overrides(tmp_path: Path) -> None:
    """The inner split (and the vocabulary everyone is scored over) follow the command line's
    overrides, as labelrec's own training does."""
    pytest.importorskip("omikuji")
    from conftest import write_jsonl

    rows = toy_catalog(8)
    (tmp_path / "data" / "toy").mkdir(parents=True)
    write_jsonl(rows[:60], tmp_path / "data" / "toy" / "train.jsonl")
    write_jsonl(rows[60:], tmp_path / "data" / "toy" / "valid.jsonl")
    config = tmp_path / "cv.yaml"
    config.write_text("data:\n  valid_fraction: 0.1\n", encoding="utf-8")
    sizes = {}
    for fraction in ("0.1", "0.5"):
        out = tmp_path / f"out{fraction}"
        quality.run_cv(
            "toy", tmp_path / "data", config, out, [f"data.valid_fraction={fraction}"], 3, 0, 1,
            skip_labelrec=True, peers=("Omikuji",), folds={1},
        )  # fmt: skip
        fold = out / "toy-cv3" / "fold1"
        sizes[fraction] = [
            len((fold / f"{name}.jsonl").read_text().splitlines()) for name in ("train", "valid")
        ]
    assert sizes["0.5"][1] > sizes["0.1"][1]
    assert sum(sizes["0.5"]) == sum(sizes["0.1"])


def test_a_missing_peer_package_stops_the_run_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import peers

    monkeypatch.setitem(peers.PACKAGES, "Omikuji", "labelrec_no_such_package")
    assert peers.missing_packages(("Omikuji",)) == ["labelrec_no_such_package"]
    assert peers.missing_packages(()) == []  # scikit-learn: a labelrec dependency
    argv = ["--catalog", "amazon_uk_toys", "--cv", "3", "--peers", "Omikuji"]
    with pytest.raises(SystemExit) as stop:
        quality.main([*argv, "--data-root", str(tmp_path), "--output-root", str(tmp_path / "o")])
    assert stop.value.code == 2
    assert "labelrec_no_such_package" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_fold_keeps_labelrec_rows_when_its_peers_fail(
    trained_model_dir: Path,
    tiny_backbone: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from conftest import write_jsonl

    rows = toy_catalog(8)
    (tmp_path / "data" / "toy").mkdir(parents=True)
    write_jsonl(rows[:60], tmp_path / "data" / "toy" / "train.jsonl")
    write_jsonl(rows[60:], tmp_path / "data" / "toy" / "valid.jsonl")
    fold_model = tmp_path / "out" / "toy-cv2" / "fold1" / "labelrec"
    shutil.copytree(trained_model_dir, fold_model)
    # a model tuned by folds: fold runs, no single tuning run to score "without refit"
    (fold_model / "tuning" / "fold-0").mkdir(parents=True)
    shutil.copy2(fold_model / "labelrec.json", fold_model / "tuning" / "fold-0")

    def peers_fail(*args: object, **kwargs: object) -> list:
        raise RuntimeError("a peer crashed")

    monkeypatch.setattr(quality, "refit_peers", peers_fail)
    saved: list[list] = []
    # the settings the fold model was trained with (tests/conftest.py tiny_config)
    settings = [f"model.backbone={tiny_backbone}", "train.epochs=8"]
    with pytest.raises(quality.ReuseError, match=r"train.epochs: 8 saved, 5 now"):
        quality.run_cv(
            "toy", tmp_path / "data", Path("configs/tiny.yaml"), tmp_path / "out",
            [*settings, "train.epochs=5"], 2, 0, 1, reuse=True, folds={1},
        )  # fmt: skip
    with pytest.raises(RuntimeError, match="a peer crashed"):
        quality.run_cv(
            "toy", tmp_path / "data", Path("configs/tiny.yaml"), tmp_path / "out", settings, 2, 0,
            1, reuse=True, on_fold=lambda done: saved.append(list(done)), folds={1},
        )  # fmt: skip
    # trained with lexical.rerank (the default) on 10 valid products: no reranker was kept, so
    # "without reranker" is the model itself, paired by fold; its fusion has a span tagger, so
    # the fusion without the factor on tags absent from the title is scored too
    systems = [r.system for r in saved[0]]
    assert len(saved) == 1 and systems == [
        "labelrec",
        "labelrec without reranker",
        "labelrec without reranker or absent factor",
    ]
    assert saved[0][2].notes["absent_factor"] == 1.0
    assert saved[0][0].notes["fold"] == 0 and 0 < saved[0][0].metrics["P@1"] <= 1
    assert saved[0][1].metrics == saved[0][0].metrics
    assert saved[0][1].notes == {**saved[0][0].notes, "reranker": "not kept"}
    assert "toy fold 1/2: no row 'labelrec without refit'" in capsys.readouterr().err


def test_report_reads_only_the_folds_asked_for(tmp_path: Path, capsys) -> None:
    import json

    # a five-fold run beside a run of its first two folds only: pairing needs the same folds
    full = [_row("labelrec, other", f, 0.80 + 0.01 * f, 0.7) for f in range(5)]
    part = [_row("labelrec", f, 0.90 + 0.01 * f, 0.8) for f in range(2)]
    paths = []
    for name, rows in (("full.json", full), ("part.json", part)):
        path = tmp_path / name
        path.write_text(json.dumps([r.__dict__ for r in rows]), encoding="utf-8")
        paths.append(str(path))
    assert quality.main(["--report", *paths]) == 0
    out = capsys.readouterr().out
    assert "| labelrec, other | +" not in out  # 5 folds against 2: unpaired
    assert "toy, 5 folds" in out and "| labelrec (2 folds) | 0.905 ± " in out
    assert quality.main(["--report", *paths, "--folds", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "toy, 2 folds" in out and "| system | 1 | 2 |" in out
    assert "| labelrec, other | 0.805 ± " in out  # the mean of folds 1 and 2 only
    assert "| labelrec, other | +10.0 ± 0.0 |" in out
    # the corrected interval of folds 1 to 3 of a five-fold run saved without its fold count:
    # held out : training = 1 : 4 (k = 5, the run's), not 1 : 2 (the three folds shown)
    full[1].metrics["P@1"] += 0.02  # fold differences of 10, 8 and 10 points
    paths[0] = str(tmp_path / "full.json")
    Path(paths[0]).write_text(json.dumps([r.__dict__ for r in full]), encoding="utf-8")
    assert quality.main(["--report", paths[0], str(tmp_path / "part.json")]) == 0
    capsys.readouterr()
    three = [r for r in full if r.notes["fold"] < 3] + [
        _row("labelrec", f, 0.90 + 0.01 * f, 0.8) for f in range(3)
    ]
    spread = float(quality.format_cv(three).split("| labelrec, other | +")[1].split("± ")[1][:3])
    Path(paths[1]).write_text(json.dumps([r.__dict__ for r in three[3:]]), encoding="utf-8")
    assert quality.main(["--report", *paths, "--folds", "1,2,3", "--corrected"]) == 0
    out = capsys.readouterr().out
    shown = float(out.split("| labelrec, other | +")[1].split("± ")[1][:3])
    assert shown == pytest.approx(spread * np.sqrt((1 / 3 + 1 / 4) / (1 / 3)), abs=0.1)
    with pytest.raises(SystemExit):
        quality.main(["--report", *paths, "--folds", "0"])
    with pytest.raises(SystemExit):  # no saved fold 9: an error, not an empty table
        quality.main(["--report", *paths, "--folds", "9"])
    assert "no rows of those --folds" in capsys.readouterr().err
    # as many folds, but not the same ones: not paired
    shifted = [_row("labelrec, other", f, 0.8, 0.7) for f in (1, 2)] + part
    assert "| labelrec, other | +" not in quality.format_cv(shifted)


def test_report_names_a_saved_run_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "cv_gone.json"
    not_rows = tmp_path / "other.json"
    not_rows.write_text('{"P@1": 0.9}', encoding="utf-8")
    for path, reason in ((missing, "cannot read it"), (not_rows, "not the --json of")):
        with pytest.raises(SystemExit) as exc:
            quality.main(["--report", str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"--report: {path}: {reason}" in err
        assert "Traceback" not in err


def test_cv_discards_a_fold_model_once_scored(
    trained_model_dir: Path, tiny_backbone: Path, tmp_path: Path
) -> None:
    """``--discard-models``: the fold's model goes once its rows are saved; its products stay."""
    import json
    import shutil

    from conftest import write_jsonl

    rows = toy_catalog(8)
    data = tmp_path / "data" / "amazon_uk_toys"
    data.mkdir(parents=True)
    write_jsonl(rows[:60], data / "train.jsonl")
    write_jsonl(rows[60:], data / "valid.jsonl")
    fold = tmp_path / "out" / "amazon_uk_toys-cv2" / "fold1"
    shutil.copytree(trained_model_dir, fold / "labelrec")
    out = tmp_path / "cv.json"
    argv = ["--catalog", "amazon_uk_toys", "--cv", "2", "--folds", "1", "--skip-peers"]
    argv += ["--reuse", "--data-root", str(tmp_path / "data"), "--config", "configs/tiny.yaml"]
    argv += ["--output-root", str(tmp_path / "out"), "--json", str(out)]
    settings = [f"model.backbone={tiny_backbone}", "train.epochs=8"]
    assert quality.main([*argv, "--discard-models", *settings]) == 0
    saved = json.loads(out.read_text())
    assert saved[0]["system"] == "labelrec" and 0 < saved[0]["metrics"]["P@1"] <= 1
    assert not (fold / "labelrec").exists()
    assert sorted(p.name for p in fold.iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    import errors  # benchmarks/errors.py: the folds' models are gone, and it says why

    with pytest.raises(SystemExit, match=r"no labelrec model in fold1 \(quality.py --discard"):
        errors.main(["--cv-dir", str(fold.parent)])
    # the rows are kept before a model goes: not without --json (or on_fold)
    with pytest.raises(SystemExit):
        quality.main([*argv[:-2], "--discard-models", *settings])
    with pytest.raises(ValueError, match="discard_models needs on_fold"):
        quality.run_cv(
            "amazon_uk_toys", tmp_path / "data", Path("configs/tiny.yaml"), tmp_path / "out",
            settings, 2, 0, 1, skip_peers=True, folds={1}, discard_models=True,
        )  # fmt: skip
    shutil.copytree(trained_model_dir, fold / "labelrec")  # without it, the model stays
    assert quality.main([*argv, *settings]) == 0
    assert json.loads(out.read_text())[0]["metrics"] == saved[0]["metrics"]
    assert (fold / "labelrec" / "labelrec.json").is_file()
    # a run that does not score labelrec leaves its model alone
    assert quality.main([*argv, "--skip-labelrec", "--discard-models", *settings]) == 0
    assert (fold / "labelrec" / "labelrec.json").is_file()


def test_the_peers_read_the_catalog_with_the_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --cv too, the peers' products and vocabulary are those labelrec's training reads
    with the command line's overrides."""
    from conftest import write_jsonl

    rows = toy_catalog(8)
    (tmp_path / "amazon_uk_toys").mkdir()
    write_jsonl(rows[:60], tmp_path / "amazon_uk_toys" / "train.jsonl")
    write_jsonl(rows[60:], tmp_path / "amazon_uk_toys" / "valid.jsonl")
    seen = []
    import peers

    monkeypatch.setattr(peers, "missing_packages", lambda families: [])
    monkeypatch.setattr(
        quality, "run_peers", lambda catalog, train, valid, vocab, *a: seen.append(len(train)) or []
    )
    monkeypatch.setattr(quality, "print_report", lambda rows: None)
    argv = ["--catalog", "amazon_uk_toys", "--data-root", str(tmp_path), "--skip-labelrec"]
    assert quality.main([*argv, "data.max_products=20"]) == 0
    assert quality.main(argv) == 0
    assert seen == [20, 60]


def test_a_refit_model_is_not_measured_on_the_valid_split_it_was_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    model = tmp_path / "model"
    (model / "tuning").mkdir(parents=True)
    (model / "labelrec.json").write_text(json.dumps({"refit": {"tuning_dir": "tuning"}}))
    argv = ["--catalog", "amazon_uk_toys", "--data-root", str(tmp_path), "--skip-peers"]
    with pytest.raises(SystemExit) as stop:
        quality.main([*argv, "--labelrec-model", str(model)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "was refit on train + valid (train.refit), so valid cannot measure it" in err
    assert "give a model trained with train.refit=false" in err
    (model / "tuning" / "labelrec.json").write_text("{}")  # a tuning run on train alone
    assert "give its tuning run" in quality.trained_on_valid(model)
    assert quality.trained_on_valid(model / "tuning") is None
    fold = model / "tuning" / "fold-0"  # a tuning fold's run: trained on part of valid too
    fold.mkdir()
    (fold / "labelrec.json").write_text(json.dumps({"train_source": "t + v (fold 1 of 2 out)"}))
    assert "is a tuning fold's run, trained on t + v (fold 1 of 2 out)" in (
        quality.trained_on_valid(fold)
    )
