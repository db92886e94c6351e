"""Paths users reach rarely: every config check, CLI signals and odd options, damaged files,
product-search options, MLflow evaluator and registry edges, service edge answers."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import toy_catalog, write_jsonl

from labelrec.cli import main

# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override",
    [
        "describe.dtype=int8",
        "describe.epochs=0",
        "describe.length_penalty=0",
        "describe.lora_alpha=0",
        "describe.lora_r=0",
        "describe.max_tags=-1",
        "describe.no_repeat_ngram_size=-1",
        "describe.reference_chars=0",
        "generate.batch_products=0",
        "generate.batch_size=0",
        "generate.dtype=int8",
        "generate.lora_alpha=0",
        "generate.lora_r=0",
        "generate.lr=0",
        "lexical.embedding_k=-1",
        "lexical.embedding_power=0",
        "lexical.path_separator=",
        "lexical.power=0",
        "lexical.rerank_candidates=0",
        "lexical.span_max_chars=0",
        "lexical.word_ngram_max=0",
        "lora.alpha=0",
        "model.dropout=1",
        "train.bucket_size=0",
        "train.log_every=0",
        "train.max_grad_norm=-1",
        "train.num_workers=-1",
    ],
)
def test_every_section_check_names_its_field(override: str) -> None:
    """config.py's __post_init__ checks that no test sees fail (each line runs, never raises)."""
    from labelrec.config import ConfigError, load_config

    field = override.split("=", 1)[0]
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(f"{field}:"), str(err.value)


def test_promotion_gate_refuses_a_negative_min_metric() -> None:
    from labelrec.config import ConfigError, PromotionConfig

    with pytest.raises(ConfigError, match="min_metric: must be >= 0"):
        PromotionConfig(min_metric=-0.1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochs: null\n", "train.epochs: may not be null"),
        ("data:\n  tag_columns: 5\n", "data.tag_columns: expected a list, got 5"),
        ("train:\n  epochs: true\n", "train.epochs: expected a number, got True"),
    ],
)
def test_yaml_values_of_the_wrong_type_name_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    from labelrec.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"


def test_an_override_below_a_plain_value_is_not_a_section() -> None:
    from labelrec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"^output\.x: output is not a section"):
        load_config(None, ["output=runs/a", "output.x=1"])


# --------------------------------------------------------------------------- CLI


def test_integer_options_refuse_non_integers_at_the_parser(
    capsys: pytest.CaptureFixture,
) -> None:
    for args, message in (
        (["suggest", "nowhere", "--limit", "abc"], "expected an integer, got 'abc'"),
        (["demo", "--products", "2.5"], "expected an integer, got '2.5'"),
        (
            ["promote", "--data", "d.jsonl", "--n-resamples", "many"],
            "argument --n-resamples: invalid int value: 'many'",
        ),
    ):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2, args
        assert message in capsys.readouterr().err, args


def test_ctrl_c_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import labelrec.cli as cli

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_demo", interrupted)
    assert cli.main(["demo", "--output", str(tmp_path / "d")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_main_runs_off_the_main_thread(tmp_path: Path) -> None:
    """No SIGTERM handler can be set off the main thread: main() still runs (a notebook, a
    worker thread calling labelrec.cli.main)."""
    out: list[int] = []
    worker = threading.Thread(
        target=lambda: out.append(
            main(["demo", "--output", str(tmp_path / "d"), "--products", "20"])
        )
    )
    worker.start()
    worker.join(120)
    assert out == [0]
    assert (tmp_path / "d" / "train.jsonl").is_file()


def test_tagging_verbs_refuse_a_describer_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from labelrec.describe import DESCRIBER_KIND
    from labelrec.modeldir import CAUSAL_INFO

    describer = tmp_path / "describer"
    describer.mkdir()
    (describer / CAUSAL_INFO).write_text(json.dumps({"kind": DESCRIBER_KIND}), "utf-8")
    assert main(["suggest", str(describer)]) == 2
    err = capsys.readouterr().err
    assert "is a describer, not a tagging model" in err and "Traceback" not in err


def test_describe_refuses_deeply_nested_json_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import io

    line = '{"title": "x", "tags": ' + "[" * 200_000 + "]" * 200_000 + "}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(line))
    assert main(["describe", "nowhere"]) == 2  # stdin is read before the describer loads
    err = capsys.readouterr().err
    assert "<stdin>, line 1: invalid JSON: nested too deeply" in err


def test_eval_reads_the_catalog_with_the_config_file_columns(tmp_path: Path) -> None:
    from labelrec.cli import _data_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  title_column: name\n  tag_columns: [labels]\n", encoding="utf-8")
    args = argparse.Namespace(config=str(cfg), overrides=["data.on_error=skip"])
    data = _data_config(args, model_dir=None)
    assert (data.title_column, data.tag_columns, data.on_error) == ("name", ["labels"], "skip")


def test_promote_prints_the_comparison_with_the_champion(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import labelrec.mlflow.registry as registry
    import labelrec.mlflow.store as store
    from labelrec.mlflow.registry import PromotionDecision

    decision = PromotionDecision(
        promoted=False,
        reason="head tags lose 0.0800 recall@5",
        challenger_version=3,
        champion_version=2,
        challenger_score=0.61,
        champion_score=0.6,
        diff=0.01,
        ci_low=-0.02,
        ci_high=0.04,
        band_drops={"head": 0.08, "tail": -0.01},
    )
    monkeypatch.setattr(store, "configure", lambda *a, **k: None)
    monkeypatch.setattr(registry, "promote", lambda *a, **k: decision)
    assert main(["promote", "--data", "d.jsonl", "--exit-code"]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "labelrec version 3: not promoted: head tags lose 0.0800 recall@5"
    assert out[1] == (
        "nDCG@3: challenger 0.6100, champion (version 2) 0.6000, difference +0.0100,"
        " 95% interval [-0.0200, +0.0400]"
    )
    assert out[2:] == ["recall@5 head: -0.0800", "recall@5 tail: +0.0100"]


def test_feedback_stats_text_reports_overruled_products(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from labelrec.feedback import FeedbackStore, Review

    uri = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(uri)
    store.add(Review(title="plush bear", product_id="p1", accepted=["Toys"], reviewer="a"))
    store.add(Review(title="plush bear", product_id="p1", rejected=["Toys"], reviewer="b"))
    assert main(["feedback", "stats", "--uri", uri]) == 0
    out = capsys.readouterr().out
    assert "overruled       1 products (the last verdict on each tag is exported)" in out


# --------------------------------------------------------------------------- catalogs


def test_a_broken_json_array_file_names_its_line(tmp_path: Path) -> None:
    from labelrec.data import CatalogError, read_catalog

    broken = tmp_path / "a.json"
    broken.write_text('[{"id": "a", "title": "x", "tags": ["t"]},\n {"id": ', "utf-8")
    with pytest.raises(CatalogError, match=r"a\.json, line 2: invalid JSON"):
        read_catalog(broken)
    deep = tmp_path / "b.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, "utf-8")
    with pytest.raises(CatalogError, match="nested too deeply"):
        read_catalog(deep)


def test_parquet_float_ids_integer_tags_and_boolean_ids(tmp_path: Path) -> None:
    from labelrec.config import DataConfig
    from labelrec.data import CatalogError, read_catalog

    # ids through a float column (pandas: integers with a NaN), tag lists of numbers
    frame = pd.DataFrame(
        {"id": [1.0, 2.0, np.nan], "title": ["a b", "c d", "e f"], "tags": [[1, 3], [2], [4]]}
    )
    frame.to_parquet(tmp_path / "c.parquet")
    catalog = read_catalog(tmp_path / "c.parquet", DataConfig(on_error="skip"))
    assert [(p.id, p.tags) for p in catalog.products] == [("1", ["1", "3"]), ("2", ["2"])]
    assert catalog.n_skipped == 1
    pd.DataFrame({"id": ["a"], "title": ["a b"], "tags": [5]}).to_parquet(tmp_path / "d.parquet")
    assert read_catalog(tmp_path / "d.parquet").products[0].tags == ["5"]
    pd.DataFrame({"id": [True], "title": ["a b"], "tags": ["x"]}).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(CatalogError, match="field 'id': expected a string or an integer, got bool"):
        read_catalog(tmp_path / "e.parquet")


def test_index_refuses_a_directory_as_its_output(tmp_path: Path) -> None:
    from labelrec.batch import check_score_paths

    catalog = write_jsonl(toy_catalog(1), tmp_path / "in.jsonl")
    (tmp_path / "out.jsonl").mkdir()
    with pytest.raises(ValueError, match="out.jsonl: is a directory; give the output file's"):
        check_score_paths(catalog, tmp_path / "out.jsonl")


# --------------------------------------------------------------------------- products


def test_interactions_with_an_empty_id_name_the_line(tmp_path: Path) -> None:
    from labelrec.recommend.interactions import Interactions

    events = tmp_path / "events.csv"
    events.write_text("user_id,product_id\nu1,p0\n,p1\n", "utf-8")
    with pytest.raises(ValueError, match=r"events\.csv, line 3, field 'user_id': empty id"):
        Interactions.read(events)


def test_damaged_index_files_are_index_errors(service_index: Path, tmp_path: Path) -> None:
    import shutil

    from labelrec.recommend import ProductIndex
    from labelrec.recommend.index import IndexFileError

    broken = tmp_path / "tags"
    shutil.copytree(service_index, broken)
    (broken / "tags.json").write_text("{not json", "utf-8")
    with pytest.raises(IndexFileError, match="unreadable index metadata"):
        ProductIndex.load(broken)
    broken = tmp_path / "products"
    shutil.copytree(service_index, broken)
    (broken / "products.parquet").write_bytes(b"not parquet")
    with pytest.raises(IndexFileError, match=r"products\.parquet"):
        ProductIndex.load(broken)


def test_recommend_history_entries_with_weights_and_their_errors(service_index: Path) -> None:
    from labelrec.recommend import ProductSearch

    engine = ProductSearch.load(service_index)
    plain = engine.recommend(history=["p0-0"], limit=3)
    weighted = engine.recommend(history=[{"product_id": "p0-0", "weight": 2.0}], limit=3)
    assert [r["id"] for r in weighted["results"]] == [r["id"] for r in plain["results"]]
    for history, message in (
        ("p0-0", "history must be a list"),
        ([{"product_id": "p0-0", "weight": -1}], r"history\[0\]: weight must be a finite number"),
        ([{"product_id": "p0-0", "weight": float("nan")}], r"history\[0\]: weight must be a"),
        ([{"product_id": "p0-0", "weight": float("inf")}], r"history\[0\]: weight must be a"),
        ([{"product_id": "p0-0", "weight": True}], r"history\[0\]: weight must be a"),
        ([{"weight": 1.0}], r"history\[0\]: missing product id"),
    ):
        with pytest.raises(ValueError, match=message):
            engine.recommend(history=history, limit=3)


def test_query_options_are_checked(service_index: Path) -> None:
    from labelrec.recommend import ProductSearch

    engine = ProductSearch.load(service_index)
    one = engine.similar(id="p0-0", limit=3, tags="brand:Lego")  # one tag as a string
    assert one == engine.similar(id="p0-0", limit=3, tags=["brand:Lego"])
    for kwargs, message in (
        ({"limit": 2.5}, "limit must be an integer"),
        ({"limit": True}, "limit must be an integer"),
        ({"tag_weight": "high"}, "tag_weight must be a number in"),
        ({"tags": {"brand:Lego"}}, "tags must be a list of tag strings, got set"),
    ):
        with pytest.raises(ValueError, match=message):
            engine.similar(id="p0-0", **{"limit": 3, **kwargs})
    with pytest.raises(ValueError, match="tag_weighting must be 'idf' or 'none'"):
        ProductSearch.load(service_index, tag_weighting="bm25")
    with pytest.raises(ValueError, match="backend must be auto, exact or faiss"):
        ProductSearch.load(service_index, backend="annoy")


# --------------------------------------------------------------------------- MLflow


def test_evaluator_scores_a_static_predictions_column(registry: Path) -> None:
    import mlflow

    frame = pd.DataFrame(
        {
            "title": ["a", "b"],
            "tags": [["x", "y"], ["z"]],
            "pred": [[{"tag": "x", "score": 0.9}, {"tag": "q", "score": 0.5}], ["z"]],
        }
    )
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            data=frame,
            predictions="pred",
            targets="tags",
            model_type="labelrec",
            evaluators="labelrec",
            evaluator_config={"log_plots": False},
        )
        assert result.metrics["P_at_1"] == pytest.approx(1.0)
        assert result.metrics["micro_f1"] == pytest.approx(2 / 3)  # x, z of x, q, z; gold x, y, z
        with pytest.raises(ValueError, match="needs targets="):
            mlflow.models.evaluate(
                data=frame.drop(columns=["tags"]),
                predictions="pred",
                model_type="labelrec",
                evaluators="labelrec",
            )


def test_gold_lists_read_cells_as_catalogs_do() -> None:
    from labelrec.mlflow.evaluator import gold_lists

    assert gold_lists(['["a", "b"]', None, float("nan"), "c| d"]) == [
        ["a", "b"],
        [],
        [],
        ["c", "d"],
    ]
    # as a catalog's tag column reads a cell: "[Sale]" is one tag, numpy's list repr a list
    assert gold_lists(["[Sale]", "['a' 'b']", 42, ["Ｅ "]]) == [
        ["[Sale]"],
        ["a", "b"],
        ["42"],
        ["E"],
    ]
    with pytest.raises(ValueError, match="targets, row 1: expected a list of tags or a string"):
        gold_lists(["a", {"tag": "b"}])


def test_store_command_lists_the_registered_versions_and_an_unchanged_champion(
    trained_model_dir: Path, registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import mlflow

    from labelrec.mlflow import store
    from labelrec.mlflow.registry import promote, register_challenger

    version = register_challenger(trained_model_dir).version
    mlflow.MlflowClient().set_registered_model_alias("labelrec", "champion", version)
    eval_file = write_jsonl(toy_catalog(1), tmp_path / "eval.jsonl")
    d = promote("labelrec", eval_file)  # @challenger is @champion: nothing to compare
    assert not d.promoted and d.reason == f"version {version} already is @champion"
    with pytest.raises(FileNotFoundError, match="catalog .*nope.jsonl does not exist"):
        promote("labelrec", tmp_path / "nope.jsonl")  # a wrong path is said all the same
    assert store.main(["--model", "labelrec"]) == 0
    out = capsys.readouterr().out
    assert f"model:        labelrec version {version} @challenger @champion (promotion: -)" in out
    assert store.main(["--model", "missing"]) == 0
    assert "model:        missing: not registered" in capsys.readouterr().out


def test_decide_needs_gold_tags_and_paired_values() -> None:
    from labelrec.mlflow.registry import decide

    with pytest.raises(ValueError, match="no product has a nDCG@3 value"):
        decide([np.nan, np.nan], None)
    with pytest.raises(ValueError, match="3 challenger values for 2 champion values"):
        decide([0.5, 0.5, 0.5], [0.5, 0.5])


def test_one_evaluation_product_is_not_significant_evidence() -> None:
    """Two products (one gain, one tie) are 'not significant', and so is the gain alone."""
    from labelrec.mlflow.registry import decide

    assert not decide([1.0, 0.5], [0.5, 0.5]).promoted
    assert not decide([1.0], [0.5]).promoted  # one difference is its own interval


# --------------------------------------------------------------------------- service, runtime


def test_onnx_backend_refuses_non_float32_weights(trained_model_dir: Path) -> None:
    import torch

    from labelrec.errors import ModelError
    from labelrec.predict import TagRecommender
    from labelrec.runtime import choose_backend

    model = TagRecommender.load(trained_model_dir, backend="torch").model.to(torch.bfloat16)
    assert choose_backend(model, "auto", "cpu", False) is None  # falls back to torch
    with pytest.raises(ModelError, match="cannot run on ONNX Runtime: the weights are not float32"):
        choose_backend(model, "onnx", "cpu", False)


def test_describe_items_without_a_describer_is_a_404(
    make_service, trained_model_dir: Path, tmp_path: Path
) -> None:
    from bentoml.exceptions import NotFound, ServiceUnavailable

    from labelrec.service import DescribeIn

    items = [DescribeIn(title="kite")]
    with pytest.raises(NotFound, match="LABELREC_DESCRIBER"):
        make_service(trained_model_dir).describe_items(items)
    broken = make_service(trained_model_dir, LABELREC_DESCRIBER=str(tmp_path / "nope"))
    with pytest.raises(ServiceUnavailable, match="failed to load"):
        broken.describe_items(items)


def test_queue_without_an_index_is_a_503(make_service, trained_model_dir: Path) -> None:
    svc = make_service(trained_model_dir)
    answer = svc.queue(position=0)
    assert answer.status_code == 503 and b"no product index" in answer.body
    assert b"LABELREC_INDEX" in answer.body  # how to add one, as the product endpoints say


def test_a_feedback_database_failure_is_a_503(
    make_service, trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelrec.feedback import FeedbackError, FeedbackStore
    from labelrec.service import ProductIn

    svc = make_service(trained_model_dir, LABELREC_FEEDBACK_URI=f"sqlite:///{tmp_path / 'f.db'}")

    def locked(self, review):
        raise FeedbackError("database is locked")

    monkeypatch.setattr(FeedbackStore, "add", locked)
    answer = asyncio.run(svc.feedback(product=ProductIn(title="kite"), added=["Toys"]))
    assert answer.status_code == 503 and b"database is locked" in answer.body


def test_describe_titles_of_invisible_characters_are_refused() -> None:
    from pydantic import ValidationError

    from labelrec.service import DescribeIn

    with pytest.raises(ValidationError, match="title must not be empty"):
        DescribeIn(title="\u200b\u00ad ")


def test_name_backbone_renames_a_taggers_backbone_and_card(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """The MLproject's train step on a pretrain run's backbone (runs:/...) names the URI, not
    the temporary folder it was downloaded to, in labelrec.json and README.md."""
    import shutil

    from labelrec.modelcard import name_backbone

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    name_backbone(model, "runs:/abc/backbone")
    info = json.loads((model / "labelrec.json").read_text(encoding="utf-8"))
    assert info["backbone"] == "runs:/abc/backbone"
    assert info["config"]["model"]["backbone"] == "runs:/abc/backbone"
    assert "runs:/abc/backbone" in (model / "README.md").read_text(encoding="utf-8")
    assert not list(model.glob("*.tmp"))


def test_mlproject_main_without_train_runs_on_the_demo_catalog(
    tiny_backbone: Path, registry: Path, tmp_path: Path
) -> None:
    """`mlflow run .` with no parameters: the demo catalog is written, trained on, and its
    test split (not valid) evaluates and promotes the model."""
    import mlflow

    from labelrec.mlflow.steps import run_main

    root = Path(__file__).resolve().parents[1]

    def main(output: str, *overrides: str) -> dict:
        return run_main(
            str(root / "configs" / "tiny.yaml"),
            overrides=[
                f"model.backbone={tiny_backbone}",
                f"output={tmp_path / output}",
                "data.demo_products=60",
                "train.epochs=1",
                *overrides,
            ],
            demo_dir=str(tmp_path / "demo"),
            progress=False,
        )

    summary = main("model")
    assert set(summary["demo"]) == {"train", "valid", "test"}
    assert all(Path(p).is_file() for p in summary["demo"].values())
    assert summary["promote"]["promoted"]  # the first model passes min_metric 0
    run = mlflow.get_run(summary["run_id"])
    assert run.data.tags["labelrec.eval_data"] == "data"  # the demo's test split, not valid

    # with reviews, one of them of a test product: the test split is the run's data.holdout
    import json

    from labelrec.data import read_catalog

    test_product = read_catalog(summary["demo"]["test"]).products[0]
    reviewed = tmp_path / "reviewed.jsonl"
    rows = [
        {"id": test_product.id, "title": test_product.title, "tags": ["reviewed:test"]},
        {"id": "new-1", "title": "hand-tagged plush bear", "tags": ["reviewed:new"]},
    ]
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    again = main("model2", f"data.feedback={reviewed}")
    params = mlflow.get_run(again["train"]["run_id"]).data.params
    assert params["feedback_held_out"] == "1"
    assert summary["demo"]["test"] in params["data.holdout"]


def test_comma_separated_list_overrides_strip_their_items() -> None:
    """`lora.target_modules=q_proj, v_proj`: ' v_proj' would match no module in peft, and the
    adapters would go on q_proj alone."""
    from labelrec.config import load_config

    cfg = load_config(None, ["lora.target_modules=q_proj, v_proj", "data.tag_columns=tags, brand"])
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.tag_columns == ["tags", "brand"]


def test_interactions_accept_the_ids_the_catalog_accepts(tmp_path: Path) -> None:
    from labelrec.data import read_catalog
    from labelrec.recommend.interactions import Interactions

    catalog = write_jsonl([{"id": "nan", "title": "kite", "tags": ["Toys"]}], tmp_path / "c.jsonl")
    assert read_catalog(catalog).products[0].id == "nan"  # a product id the index keeps
    events = tmp_path / "events.csv"
    events.write_text("user_id,product_id\nu1,nan\n", "utf-8")
    assert list(Interactions.read(events).product_ids) == ["nan"]


@pytest.mark.parametrize("ks", [[], [0, 3]])
def test_the_evaluator_names_bad_ranks(ks) -> None:
    """``evaluator_config={"ks": []}``: an error naming the setting, not max() of nothing."""
    from labelrec.mlflow.evaluator import LabelrecEvaluator

    with pytest.raises(ValueError, match="evaluator_config ks: one or more ranks k >= 1"):
        LabelrecEvaluator().evaluate(
            model_type="labelrec", dataset=None, run_id="r", evaluator_config={"ks": ks}
        )
