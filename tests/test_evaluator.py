"""The ``labelrec`` evaluator plugin of ``mlflow.models.evaluate``."""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd  # noqa: E402
import pytest
from conftest import toy_catalog, write_jsonl  # noqa: E402
from test_mlflow_flavor import open_store  # noqa: E402

import labelrec.mlflow as lrm  # noqa: E402
from labelrec import cli, metrics  # noqa: E402
from labelrec.data import Product, TagVocab, tag_key  # noqa: E402
from labelrec.evaluate import evaluate_scores_on  # noqa: E402
from labelrec.mlflow.evaluator import (  # noqa: E402
    LabelrecEvaluator,
    evaluate_ranked,
    gold_lists,
    metric_key,
    parse_ranked,
    unmatched_gold_warning,
)

PEER_CODE = '''
import json

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MostFrequentTags(PythonModel):
    """The same tags for every product: the most frequent training tags."""

    def load_context(self, context):
        with open(context.artifacts["ranking"]) as fh:
            self.ranking = json.load(fh)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        row = [{"tag": t, "score": s} for t, s in self.ranking]
        return pd.DataFrame({"tags": [row] * len(model_input)})


mlflow.models.set_model(MostFrequentTags())
'''


@pytest.fixture
def mlflow_store(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    yield from open_store(tmp_path, tmp_path_factory, monkeypatch)


def toy_frame() -> pd.DataFrame:
    return pd.DataFrame(toy_catalog())[["title", "description", "tags"]]


def same(value: float, got: float | None) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return got is None
    return got is not None and got == pytest.approx(value, abs=1e-9)


def test_entry_point_is_registered() -> None:
    names = {
        ep.name: ep.value for ep in importlib.metadata.entry_points(group="mlflow.model_evaluator")
    }
    assert names.get("labelrec") == "labelrec.mlflow.evaluator:LabelrecEvaluator"
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry

    assert "labelrec" in mlflow.models.list_evaluators()
    assert isinstance(_model_evaluation_registry.get_evaluator("labelrec"), LabelrecEvaluator)
    assert LabelrecEvaluator.can_evaluate(model_type="labelrec", evaluator_config={})
    assert LabelrecEvaluator.can_evaluate(model_type="multilabel", evaluator_config={})
    assert not LabelrecEvaluator.can_evaluate(model_type="classifier", evaluator_config={})
    assert not LabelrecEvaluator.can_evaluate(model_type=None, evaluator_config={})


def test_the_evaluator_is_known_without_the_installed_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MLflow Project runs labelrec from its directory, where no entry point is installed:
    the promotion gate registers the evaluator itself."""
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry

    from labelrec.mlflow.evaluator import register_evaluator

    others = {k: v for k, v in _model_evaluation_registry._registry.items() if k != "labelrec"}
    monkeypatch.setattr(_model_evaluation_registry, "_registry", others)
    assert not _model_evaluation_registry.is_registered("labelrec")
    register_evaluator()
    assert isinstance(_model_evaluation_registry.get_evaluator("labelrec"), LabelrecEvaluator)


def test_evaluator_equals_labelrec_eval(
    trained_model_dir: Path, mlflow_store: Path, tmp_path: Path
) -> None:
    data = write_jsonl(toy_catalog(), tmp_path / "all.jsonl")
    metrics_file = tmp_path / "metrics.json"
    assert cli.main(["eval", str(trained_model_dir), "--data", str(data),
                     "--metrics-file", str(metrics_file)]) == 0  # fmt: skip
    want = json.loads(metrics_file.read_text())

    with mlflow.start_run() as run:
        info = lrm.log_model(trained_model_dir)
        result = mlflow.models.evaluate(
            info.model_uri,
            data=toy_frame(),
            targets="tags",
            model_type="labelrec",
            evaluators="labelrec",
        )
    for key in ("P@1", "P@3", "nDCG@3"):
        assert result.metrics[metric_key(key)] == pytest.approx(want[key], abs=1e-9), key
    differing = [k for k, v in want.items() if not same(v, result.metrics.get(metric_key(k)))]
    assert not differing, {k: (want[k], result.metrics.get(metric_key(k))) for k in differing}

    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["P_at_1"] == pytest.approx(want["P@1"])
    assert logged["micro_f1"] == pytest.approx(want["micro_f1"])
    per_tag = result.artifacts["per_tag_results"].content
    vocab = TagVocab.load(trained_model_dir / "tags.json")
    assert list(per_tag["tag"]) == vocab.tags
    assert list(per_tag["train_count"]) == [int(c) for c in vocab.counts]
    per_product = result.artifacts["per_product_results"].content
    assert len(per_product) == len(toy_catalog())
    assert per_product["nDCG@3"].mean() == pytest.approx(want["nDCG@3"])
    files = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"per_tag_results.csv", "ranking_metrics.png", "f1_vs_tag_frequency.png"} <= files


def test_new_tags_count_alike_in_eval_the_evaluate_step_and_the_evaluator(
    trained_model_dir: Path, mlflow_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new tag the model proposes (``known: false``) that is a gold tag is a hit for
    ``labelrec eval``, the MLflow evaluate step and the evaluator the promotion gate runs;
    the first two score and evaluate seven products at a time, the last ranks lists."""
    import labelrec.predict as predict
    from labelrec.data import read_catalog
    from labelrec.evaluate import EvaluationStream, gold_matrix
    from labelrec.mlflow import tracking
    from labelrec.mlflow.steps import run_evaluate
    from labelrec.predict import TagRecommender

    def title(p: object) -> str:
        return p["title"] if isinstance(p, dict) else p.title  # type: ignore[index,attr-defined]

    score = TagRecommender._score
    parts = []

    def with_zorg(self, products, with_embeddings):  # a span tagger that reads brand:Zorg
        parts.append(len(products))
        scores, embeddings, new = score(self, products, with_embeddings)
        new = [dict(n, **{"brand:Zorg": 0.99}) if "zorg" in title(p) else n
               for p, n in zip(products, new, strict=True)]  # fmt: skip
        return scores, embeddings, new

    monkeypatch.setattr(TagRecommender, "_score", with_zorg)
    monkeypatch.setattr(predict, "SCORE_CHUNK", 7)
    rows = toy_catalog(1) + [
        {"id": f"z{i}", "title": f"zorg tower {i}", "description": "", "tags": ["brand:Zorg"]}
        for i in range(3)
    ]
    data = write_jsonl(rows, tmp_path / "zorg.jsonl")

    def eval_cli(*extra: str) -> dict[str, float]:
        out = tmp_path / "m.json"
        assert cli.main(["eval", str(trained_model_dir), "--data", str(data),
                         "--metrics-file", str(out), "--no-progress", *extra]) == 0  # fmt: skip
        return json.loads(out.read_text())

    want, closed = eval_cli(), eval_cli("--known-only")
    n = len(rows)
    assert want["P@1"] == pytest.approx(closed["P@1"] + 3 / n)  # the three zorg products
    assert want["new_tag_share_of_top1"] == pytest.approx(3 / n)
    assert "new_tag_share_of_top1" not in closed
    with mlflow.start_run():
        info = lrm.log_model(trained_model_dir)
        result = mlflow.models.evaluate(
            info.model_uri,
            data=pd.DataFrame(rows)[["title", "description", "tags"]],
            targets="tags",
            model_type="labelrec",
            evaluators="labelrec",
        )
    parts.clear()
    added: list[tuple[str, int]] = []
    for cls, name in ((EvaluationStream, "add"), (tracking.PrecisionRecallCurve, "add")):
        method = getattr(cls, name)

        def counted(self, a, b=None, method=method, cls=cls):
            added.append((cls.__name__, len(a) if cls is EvaluationStream else a.shape[0]))
            return method(self, a, b)

        monkeypatch.setattr(cls, name, counted)
    summary = run_evaluate(info.model_uri, str(data))
    step = summary["metrics"]
    assert len(parts) == math.ceil(n / 7) and max(parts) == 7
    # each part evaluated and counted in the curve as it comes
    assert added == [
        (c, size) for size in parts for c in ("EvaluationStream", "PrecisionRecallCurve")
    ]
    for key in ("P@1", "P@3", "R@5", "nDCG@3", "nDCG@5", "PSP@3", "micro_f1", "macro_f1"):
        assert result.metrics[metric_key(key)] == pytest.approx(want[key], abs=1e-9), key
        assert step[key] == pytest.approx(want[key], abs=1e-9), key
    # its precision-recall curve counts every product's scores against its own gold tags
    rec = TagRecommender.load(trained_model_dir)
    products = read_catalog(data).products
    scores, _ = rec.score(products)  # seven at a time, as the step scored them
    t, precision, recall = tracking.precision_recall_curve(
        gold_matrix(products, rec.vocab)[0], scores
    )
    logged = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=summary["run_id"],
                artifact_path="evaluation/precision_recall_threshold.json",
                dst_path=str(tmp_path / "curve"),
            )
        ).read_text()
    )
    assert [row["recall"] for row in logged] == recall.tolist()
    assert [row["precision"] for row in logged] == pytest.approx(precision.tolist(), nan_ok=True)


def test_peer_pyfunc_most_frequent_tags(mlflow_store: Path, tmp_path: Path) -> None:
    rows = toy_catalog()
    counts: dict[str, int] = {}
    for row in rows:
        for tag in row["tags"]:
            counts[tag] = counts.get(tag, 0) + 1
    ranking = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
    (tmp_path / "ranking.json").write_text(json.dumps(ranking))
    (tmp_path / "peer.py").write_text(PEER_CODE)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="peer",
            python_model=str(tmp_path / "peer.py"),
            artifacts={"ranking": str(tmp_path / "ranking.json")},
            pip_requirements=["pandas"],
        )
        result = mlflow.models.evaluate(
            info.model_uri,
            data=toy_frame(),
            targets="tags",
            model_type="multilabel",
            evaluators=["labelrec"],
            evaluator_config={"labelrec": {"tag_counts": counts, "n_train_products": len(rows)}},
        )

    # the same numbers from labelrec's own evaluation of the equivalent score matrix
    vocab = TagVocab(list(counts), list(counts.values()), len(rows))
    scores = np.zeros((len(rows), len(vocab)), dtype=np.float32)
    for rank, (tag, _) in enumerate(ranking):
        scores[:, vocab.index[tag]] = len(ranking) - rank
    products = [Product(id=r["id"], title=r["title"], tags=r["tags"]) for r in rows]
    want = evaluate_scores_on(scores, products, vocab, 0.5).metrics
    differing = [k for k, v in want.items() if not same(v, result.metrics.get(metric_key(k)))]
    assert not differing, {k: (want[k], result.metrics.get(metric_key(k))) for k in differing}
    assert result.metrics["P_at_1"] == pytest.approx(counts["Toys"] / len(rows))


def test_short_lists_earn_nothing_beyond_their_end() -> None:
    counts = {"a": 5, "b": 5, "c": 5, "d": 5}
    gold = [["a", "b"], ["c"]]
    ranked = [[("a", 0.9)], [("d", 0.8), ("c", 0.7), ("a", 0.1)]]
    result = evaluate_ranked(ranked, gold, tag_counts=counts, n_train=10, ks=(1, 3))
    assert result.metrics["P@1"] == pytest.approx(0.5)
    # product 0 lists one tag: "b" is not credited at rank 2 or 3
    assert result.metrics["P@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert result.metrics["R@3"] == pytest.approx((0.5 + 1.0) / 2)
    assert list(result.per_product["P@1"]) == [1.0, 0.0]
    # decisions default to the ranked lists: 1 + 1 hits of 4 predictions, 3 gold
    assert result.metrics["micro_precision"] == pytest.approx(2 / 4)
    assert result.metrics["micro_recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 products"):
        evaluate_ranked(ranked[:1], gold)


def _dense_evaluation(ranked, gold, decided, tag_counts, n_train, ks):  # noqa: ANN001, ANN202, C901
    """`evaluate_ranked` by its definition: a column for every tag named anywhere (the
    vocabulary's first), then ``max(ks)`` never-gold columns that rank just below every
    product's list; the tags' spellings and counts read here too."""
    n, depth, known = len(gold), max(ks), tag_counts is not None
    decided = ranked if decided is None else decided
    # one spelling per tag, the model's first: another case, width or form of a tag is that tag
    spelt: dict[str, str] = {}
    for tag in tag_counts or ():
        spelt.setdefault(tag_key(tag), tag)
    for rows in (gold, [[t for t, _ in r] for r in ranked], [[t for t, _ in r] for r in decided]):
        for tags in rows:
            for tag in tags:
                spelt.setdefault(tag_key(tag), tag)

    def one(tag: str) -> str:
        return tag if tag_counts is not None and tag in tag_counts else spelt[tag_key(tag)]

    gold = [list(dict.fromkeys(one(t) for t in row)) for row in gold]
    ranked = [[(one(t), s) for t, s in row] for row in ranked]
    decided = [[(one(t), s) for t, s in row] for row in decided]
    if tag_counts is None:
        counted: dict[str, int] = {}
        for tags in gold:
            for tag in dict.fromkeys(tags):
                counted[tag] = counted.get(tag, 0) + 1
        tag_counts, n_train = counted, n
    index = {tag: j for j, tag in enumerate(tag_counts)}
    n_known = len(index)
    for rows in (gold, [[t for t, _ in r] for r in ranked], [[t for t, _ in r] for r in decided]):
        for tags in rows:
            for tag in tags:
                index.setdefault(tag, len(index))
    names = list(index)
    m = len(names)
    counts = np.zeros(m, dtype=np.int64)
    counts[:n_known] = [int(c) for c in tag_counts.values()]
    n_train = int(n_train or counts.max(initial=1) or 1)

    # `depth` never-gold columns rank just below each product's list, so a short list earns
    # nothing beyond its end (instead of unlisted tags filling the top k).
    y = np.zeros((n, m + depth), dtype=bool)
    scores = np.zeros((n, m + depth), dtype=np.float32)
    scores[:, m:] = 1.0
    pred = np.zeros((n, m), dtype=bool)
    for i in range(n):
        y[i, [index[t] for t in gold[i]]] = True
        seen: set[int] = set()
        for tag, _score in ranked[i]:
            j = index[tag]
            if j not in seen:
                scores[i, j] = 2.0 + len(ranked[i]) - len(seen)
                seen.add(j)
        pred[i, [index[t] for t, _ in decided[i]]] = True

    inv_p = np.ones(m + depth)
    inv_p[:m] = 1.0 / metrics.propensities(counts, n_train)
    result = metrics.evaluate_scores(y, scores, np.inf, inv_propensity=inv_p, ks=ks)
    result.update(metrics.f1_scores(y[:, :m], pred))
    bands = metrics.frequency_bands(np.concatenate([counts, np.zeros(depth, dtype=np.int64)]))
    result.update(metrics.band_metrics(y, scores, bands, k=min(5, depth)))
    if known:
        result["unknown_gold_share"] = float(y[:, n_known:m].sum() / max(y.sum(), 1))
    per_tag = metrics.per_tag_results(y[:, :m], pred, names, train_counts=counts)
    per_product = metrics.per_product_metrics(y, scores, ks)
    return result, per_tag, per_product


def test_ranked_lists_are_evaluated_as_the_matrix_of_every_tag_without_building_it() -> None:
    rng = np.random.default_rng(7)
    for trial in range(300):
        n_known = int(rng.integers(0, 9))
        vocab = [f"t{j}" for j in range(n_known)]
        if n_known > 1 and trial % 2:  # the vocabulary spells one tag twice
            vocab[1] = "T0"
        outside = ["x1", "x2", "X1", "T0", "ｔ0", "y"]  # other cases and widths of tags
        names = vocab + outside
        counts = {t: int(c) for t, c in zip(vocab, rng.integers(0, 80, n_known), strict=True)}
        n = int(rng.integers(1, 7))

        def draw(most: int, scored: bool, names: list[str] = names) -> list:
            picks = rng.choice(names, size=int(rng.integers(0, most + 1)))  # repeats too
            return [(str(t), float(rng.random())) for t in picks] if scored else list(picks)

        gold = [[str(t) for t in draw(4, False)] for _ in range(n)]
        ranked = [draw(12, True) for _ in range(n)]
        decided = None if trial % 3 == 0 else [draw(5, True) for _ in range(n)]
        given = None if trial % 4 == 0 else counts
        n_train = None if trial % 5 == 0 else int(rng.integers(1, 200))
        ks = tuple(sorted({int(k) for k in rng.choice([1, 2, 3, 5, 7], int(rng.integers(1, 4)))}))
        got = evaluate_ranked(ranked, gold, decided, given, n_train, ks)
        want, per_tag, per_product = _dense_evaluation(ranked, gold, decided, given, n_train, ks)
        assert list(got.metrics) == list(want), trial
        for key, value in want.items():
            assert got.metrics[key] == value or (
                math.isnan(value) and math.isnan(got.metrics[key])
            ), (trial, key, got.metrics[key], value)
        assert got.per_tag == per_tag, trial
        assert list(got.per_product) == list(per_product), trial
        for key, values in per_product.items():
            np.testing.assert_array_equal(got.per_product[key], values, err_msg=f"{trial} {key}")


def test_gold_tags_in_another_case_or_form_are_the_models_tags() -> None:
    counts = {"brand:Lego": 5, "Café": 5, "Toys > Puzzles": 5}
    ranked = [[("brand:Lego", 0.9)], [("Café", 0.8)], [("Toys > Puzzles", 0.7)]]
    nfd = "Cafe\u0301"  # an e and a combining accent: Café, spelt otherwise
    gold = [["brand:LEGO"], [nfd], ["toys > puzzles", "Toys > Puzzles"]]
    result = evaluate_ranked(ranked, gold, tag_counts=counts, n_train=10, ks=(1,))
    assert result.metrics["P@1"] == pytest.approx(1.0)
    assert result.metrics["unknown_gold_share"] == pytest.approx(0.0)
    vocab = TagVocab(list(counts), list(counts.values()), 10)
    scores = np.eye(3, dtype=np.float32)
    products = [Product(id=str(i), title="t", tags=g) for i, g in enumerate(gold)]
    offline = evaluate_scores_on(scores, products, vocab, 0.5, ks=(1,)).metrics
    assert offline["P@1"] == pytest.approx(1.0) and offline["micro_f1"] == pytest.approx(1.0)
    # a new tag the model proposes, spelt as a gold tag it does not know, is that gold tag
    new = evaluate_scores_on(
        np.zeros((1, 3), dtype=np.float32),
        [Product(id="n", title="t", tags=["brand:Duplo"])],
        vocab,
        0.5,
        ks=(1,),
        new_tags=[{"brand:DUPLO": 0.9}],
    ).metrics
    assert new["P@1"] == pytest.approx(1.0)
    # the same from ranked lists: a new tag, and a gold tag given in two cases
    ranked_new = [[("brand:DUPLO", 0.9)], [("brand:Duplo", 0.9)]]
    gold_new = [["brand:Duplo"], ["brand:Duplo", "brand:DUPLO"]]
    lists = evaluate_ranked(ranked_new, gold_new, tag_counts=counts, n_train=10, ks=(1, 5))
    assert lists.metrics["P@1"] == pytest.approx(1.0) and lists.metrics["R@5"] == pytest.approx(1.0)


def test_unmatched_gold_warning_names_the_delimiter() -> None:
    ranked = [[("a", 0.9), ("b", 0.5)], [("c", 0.7)]]
    # gold joined by ";" while the delimiter is "|": one unknown tag a product, nothing matches
    gold = gold_lists(["a;b", "c;a"], "|")
    warning = unmatched_gold_warning(gold, ranked, "|")
    assert warning is not None and "'a;b'" in warning and "tag_delimiter" in warning
    assert unmatched_gold_warning(gold_lists(["a;b", "c;a"], ";"), ranked, ";") is None
    assert unmatched_gold_warning([[], []], ranked, "|") is None  # nothing to match


def test_parse_ranked_accepts_common_shapes() -> None:
    want = [[("x", 0.9), ("y", 0.5)]]
    assert parse_ranked(pd.DataFrame({"tags": [[{"tag": "x", "score": 0.9},
                                                {"tag": "y", "score": 0.5}]]})) == want  # fmt: skip
    assert parse_ranked([[("x", 0.9), ("y", 0.5)]]) == want
    assert parse_ranked([{"y": 0.5, "x": 0.9}]) == want
    assert parse_ranked(['[{"tag": "x", "score": 0.9}, {"tag": "y", "score": 0.5}]']) == want
    assert parse_ranked(pd.Series([["x", "y"]])) == [[("x", None), ("y", None)]]
    with pytest.raises(ValueError, match="row 0"):
        parse_ranked([[42]])
    with pytest.raises(ValueError, match="columns"):
        parse_ranked(pd.DataFrame({"a": [1], "b": [2]}))


class FakeModel:
    """A pyfunc stand-in: ranked tags by a fixed score table, params as a labelrec model has."""

    def __init__(self, params: tuple[str, ...]) -> None:
        from mlflow.types.schema import ParamSchema, ParamSpec

        specs = {
            "limit": ParamSpec("limit", "long", 10),
            "threshold": ParamSpec("threshold", "double", None),
        }
        schema = ParamSchema([specs[p] for p in params]) if params else None
        self.metadata = type("Meta", (), {"get_params_schema": lambda _self: schema})()
        self.calls: list[dict | None] = []

    def unwrap_python_model(self) -> None:
        raise ValueError("not a PythonModel")

    def predict(self, data: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        self.calls.append(params)
        scores = {"a": 0.9, "b": 0.6, "c": 0.3, "d": 0.1}
        cut = 0.5 if not params or params.get("threshold") is None else params["threshold"]
        limit = (params or {}).get("limit") or 10
        row = [{"tag": t, "score": s} for t, s in scores.items() if s >= cut][:limit]
        return pd.DataFrame({"tags": [row] * len(data)})


def test_predict_ranked_asks_for_ranking_and_decisions() -> None:
    from labelrec.mlflow.evaluator import predict_ranked

    data = pd.DataFrame({"title": ["x", "y"], "id": ["1", "2"]})
    model = FakeModel(("limit", "threshold"))
    ranked, decided, rec = predict_ranked(model, data, limit=3)
    assert rec is None
    assert model.calls == [{"threshold": 0.0, "limit": 3}, None]
    assert [t for t, _ in ranked[0]] == ["a", "b", "c"]
    assert [t for t, _ in decided[0]] == ["a", "b"]
    model = FakeModel(())
    ranked, decided, _ = predict_ranked(model, data, limit=3)
    assert model.calls == [None] and ranked == decided


def test_a_labelrec_models_decisions_keep_category_paths_whole() -> None:
    """A path decided at its own threshold under a parent that missed its own is no decision:
    the model's suggestions leave it out too (``TagRecommender.decisions``)."""
    from labelrec.data import TagVocab
    from labelrec.mlflow.evaluator import predict_ranked
    from labelrec.predict import TagRecommender
    from labelrec.taxonomy import ancestor_plan, parent_index

    tags = ["a", "a > b", "a > b > c", "d"]
    parents = parent_index(tags, " > ")
    rec = type(
        "Rec",
        (),
        {
            "vocab": TagVocab(tags, [4, 3, 2, 1]),
            "tag_thresholds": np.array([0.95, 0.5, 0.2, 0.05]),  # a's above a > b's
            "new_tag_threshold": 1.0,
            "hierarchy": (parents, ancestor_plan(parents)),
            "decisions": TagRecommender.decisions,  # the model's rule, as a loaded model has it
        },
    )()

    class Labelrec(FakeModel):
        def unwrap_python_model(self):
            return type("Py", (), {"recommender": rec})()

        def predict(self, data, params=None):
            row = [{"tag": t, "score": s} for t, s in zip(tags, [0.9, 0.6, 0.3, 0.1], strict=True)]
            return pd.DataFrame({"tags": [row] * len(data)})

    data = pd.DataFrame({"title": ["x"]})
    _, decided, _ = predict_ranked(Labelrec(("limit", "threshold")), data, limit=4)
    assert [t for t, _ in decided[0]] == ["d"]  # a missed 0.95: a > b and a > b > c go too
    rec.tag_thresholds = np.array([0.5, 0.7, 0.2, 0.05])
    _, decided, _ = predict_ranked(Labelrec(("limit", "threshold")), data, limit=4)
    assert [t for t, _ in decided[0]] == ["a", "d"]  # a > b missed 0.7: its child goes too
