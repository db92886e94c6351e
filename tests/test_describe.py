"""Product descriptions: config, prompts, training a tiny decoder, CLI, service, MLflow pyfunc."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import toy_catalog, write_jsonl

from labelrec.config import ConfigError, load_config
from labelrec.data import Product
from labelrec.describe import (
    DescribeCodec,
    Describer,
    fallback_description,
    fit_describer,
    is_describer_dir,
    prompt_text,
    rouge_l_f1,
    split_tags,
    trim_to_sentence,
)
from labelrec.model import ModelError

FAST = ["describe.max_steps=4", "describe.batch_size=4", "describe.lr=5e-3"]
SHORT = ["describe.max_target_tokens=12", "describe.max_new_tokens=12", "describe.min_new_tokens=2"]


def products_with_descriptions(n_copies: int = 2) -> list[Product]:
    rows = toy_catalog(n_copies)
    return [
        Product(r["id"], r["title"], f"a great {r['title']} for kids.", r["tags"]) for r in rows
    ]


@pytest.fixture(scope="module")
def describer_dir(tiny_decoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A describer trained a few steps on the toy catalog and saved (module-wide, read-only)."""
    cfg = load_config(None, [f"describe.backbone={tiny_decoder}", *FAST, *SHORT])
    describer, history = fit_describer(cfg.describe, products_with_descriptions(), progress=False)
    assert history and history[-1]["loss"] > 0
    return describer.save(tmp_path_factory.mktemp("describer") / "d")


# ---------------------------------------------------------------------- config and prompts


def test_config_checks() -> None:
    cfg = load_config(None, ["task=describe", "describe.num_beams=2"])
    assert cfg.task == "describe" and cfg.describe.num_beams == 2
    with pytest.raises(ConfigError, match="task"):
        load_config(None, ["task=summarize"])
    with pytest.raises(ConfigError, match="describe.min_new_tokens"):
        load_config(None, ["describe.min_new_tokens=200", "describe.max_new_tokens=10"])
    with pytest.raises(ConfigError, match="describe.repetition_penalty"):
        load_config(None, ["describe.repetition_penalty=0.5"])
    with pytest.raises(ConfigError, match="describe.eval_products"):
        load_config(None, ["describe.eval_products=-1"])


def test_prompt_has_title_attributes_and_most_specific_categories() -> None:
    product = Product("1", "  Remote  control car ", "", ["Toys", "Toys > RC", "color:Red"])
    assert split_tags(product.tags, " > ") == ({"color": ["Red"]}, ["Toys > RC"])
    assert prompt_text(product) == (
        "Product: Remote control car\ncolor: Red\nCategory: Toys > RC\nDescription:"
    )
    assert prompt_text(Product("2", "Kite")) == "Product: Kite\nDescription:"
    text = fallback_description(product)
    assert text == "Remote control car. Color: Red. Category: RC."


def test_long_prompts_keep_the_title_and_the_cue(tiny_decoder: Path) -> None:
    from labelrec.model import load_tokenizer

    tok = load_tokenizer(str(tiny_decoder))
    meta = {"max_prompt_tokens": 26, "max_target_tokens": 5, "max_tags": 12}
    codec = DescribeCodec.from_meta(tok, meta)
    long = Product("1", "lego city police station " * 10, "", ["Toys"])
    ids = codec.prompt_ids(long)
    assert len(ids) == 26
    assert tok.decode(ids).startswith("product : lego city")
    assert tok.decode(ids).endswith("description :")
    target = codec.target_ids("red blue green " * 10)
    assert len(target) == 5 and codec.end_id not in target  # cut: no end token
    assert codec.target_ids("red car")[-1] == codec.end_id


def test_trim_and_rouge() -> None:
    assert trim_to_sentence("A red car. It is fast. And") == "A red car. It is fast."
    assert trim_to_sentence("Short. and then a long unfinished tail") == (
        "Short. and then a long unfinished tail"
    )
    pytest.importorskip("rouge_score")
    assert rouge_l_f1(["The red car"], ["the red car"]) == pytest.approx(1.0)
    assert rouge_l_f1(["the red car"], ["the red car is fast"]) == pytest.approx(0.75)
    words = " ".join(f"w{i}" for i in range(100))
    # only the first 60 words count
    assert rouge_l_f1([words], [" ".join(words.split()[:60])]) == pytest.approx(1.0)
    assert rouge_l_f1(["乐高城市"], ["乐高城市系列"]) > 0.5  # CJK characters are words
    assert rouge_l_f1([], []) == 0.0


# ---------------------------------------------------------------------- training and describing


def test_describer_writes_non_empty_texts(describer_dir: Path) -> None:
    assert is_describer_dir(describer_dir)
    info = json.loads((describer_dir / "causal.json").read_text())
    assert info["kind"] == "describer" and info["n_skipped_no_description"] == 0
    describer = Describer.load(describer_dir, device="cpu")
    products = [
        {"title": "lego city police station", "tags": ["Toys", "color:Blue"]},
        Product("x", "plush bear"),
        {"title": "jigsaw puzzle 1000 pieces"},
    ]
    texts = describer.describe(products)
    assert len(texts) == 3 and all(t.strip() for t in texts)
    describer.batch_products = 1  # batching and left padding do not change greedy outputs
    assert describer.describe(products) == texts
    with pytest.raises(ValueError, match="product 1, field 'title'"):
        describer.describe([{"title": "ok"}, {"title": ""}])


def test_empty_outputs_fall_back_to_title_and_tags(
    describer_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    describer = Describer.load(describer_dir, device="cpu")
    describer.generate = lambda items: [""] * len(items)  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="labelrec.describe"):
        texts = describer.describe([{"title": "kite", "tags": ["color:Red"]}])
    assert texts == ["kite. Color: Red."]
    assert "1 of 1 generated descriptions were empty" in caplog.text


def test_products_without_description_are_skipped(
    tiny_decoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(None, [f"describe.backbone={tiny_decoder}", "describe.max_steps=1"])
    bare = [Product("1", "kite"), Product("2", "ball")]
    with pytest.raises(ValueError, match="none of the 2 training products has a description"):
        fit_describer(cfg.describe, bare, progress=False)


def test_errors_name_the_problem(tiny_decoder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Describer.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="not a describer directory"):
        Describer.load(tiny_decoder)
    cfg = load_config(None, [f"describe.backbone={tmp_path / 'nothing-here'}"])
    with pytest.raises(ModelError, match="describe.backbone"):
        fit_describer(cfg.describe, products_with_descriptions(1), progress=False)
    long = load_config(
        None, [f"describe.backbone={tiny_decoder}", "describe.max_prompt_tokens=200"]
    )  # the tiny decoder has 256 positions
    with pytest.raises(ModelError, match="256 positions"):
        fit_describer(long.describe, products_with_descriptions(1), progress=False)


def test_labelrec_train_with_task_describe(
    tiny_decoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("rouge_score")
    from labelrec.cli import main

    rows = [dict(r, description=f"a great {r['title']}.") for r in toy_catalog(2)]
    rows[0]["description"] = ""
    train = write_jsonl(rows[:16], tmp_path / "train.jsonl")
    valid = write_jsonl(rows[16:], tmp_path / "valid.jsonl")
    out = tmp_path / "describer"
    args = [
        "train", "--config", str(Path(__file__).parents[1] / "configs" / "describe.yaml"),
        f"describe.backbone={tiny_decoder}", f"data.train={train}", f"data.valid={valid}",
        f"output={out}", "describe.eval_products=3", *FAST, *SHORT, "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"describer saved to {out}" in printed and "ROUGE-L F1" in printed
    info = json.loads((out / "causal.json").read_text())
    assert info["n_skipped_no_description"] == 1
    assert info["valid_metrics"]["valid_n_products"] == 3
    assert info["valid_metrics"]["valid_empty_outputs"] >= 0


# ---------------------------------------------------------------------- CLI


def test_describe_verb_reads_json_lines(
    describer_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from labelrec.cli import main

    lines = [
        {"id": "a", "title": "lego city police station", "tags": ["Toys", "color:Red"]},
        {"id": 7, "title": "plush bear", "description": "old text"},
        {"title": "kite"},
    ]
    stdin = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["describe", str(describer_dir), "--batch-size", "2"]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [o["id"] for o in out] == ["a", 7, None]
    assert all(isinstance(o["description"], str) and o["description"].strip() for o in out)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        ('{"tags": ["a"]}', "line 2, field 'title'"),
        ('{"title": "kite", "tags": "Toys"}', "line 2, field 'tags'"),
        ('{"title": "kite", "id": [1]}', "line 2, field 'id'"),
        ('["kite"]', "line 2: expected a JSON object"),
    ],
)
def test_describe_verb_names_the_bad_line(
    describer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    line: str,
    message: str,
) -> None:
    from labelrec.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"title": "ok"}\n' + line + "\n"))
    assert main(["describe", str(describer_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"labelrec describe: error: <stdin>, {message}" in captured.err


# ---------------------------------------------------------------------- service


def test_service_describe_endpoint(
    make_service, trained_model_dir: Path, describer_dir: Path, tmp_path: Path
) -> None:
    from labelrec.service import DescribeIn

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    products = [DescribeIn(title="lego city", tags=["Toys"], id=3), DescribeIn(title="kite")]

    svc = make_service(model)  # no describer configured: 404 naming the setting
    missing = asyncio.run(svc.describe(products=products))
    assert missing.status_code == 404 and b"LABELREC_DESCRIBER" in missing.body

    svc = make_service(model, LABELREC_DESCRIBER=str(tmp_path / "nope"))  # tagging still up
    broken = asyncio.run(svc.describe(products=products))
    assert broken.status_code == 503 and b"failed to load" in broken.body
    assert svc.__is_ready__()

    svc = make_service(model, LABELREC_DESCRIBER=str(describer_dir))
    out = asyncio.run(svc.describe(products=products))
    assert [o.id for o in out] == ["3", None] and all(o.description.strip() for o in out)
    assert svc.describe_items(products) == out  # the adaptive-batching core agrees
    assert asyncio.run(svc.describe(products=[])) == []
    assert svc.model()["describer"]["uri"] == str(describer_dir)


# ---------------------------------------------------------------------- MLflow


def test_describer_as_mlflow_model(describer_dir: Path, registry: Path) -> None:
    import mlflow

    import labelrec.mlflow as lrm

    with mlflow.start_run():
        info = lrm.log_model(describer_dir, registered_model_name="describer")
    assert info.flavors["labelrec"]["kind"] == "describer"
    pyfunc = mlflow.pyfunc.load_model("models:/describer/1")
    import pandas as pd

    frame = pd.DataFrame(
        {"title": ["lego city police", "kite"], "tags": [["Toys", "color:Red"], []]}
    )
    out = pyfunc.predict(frame)
    assert list(out.columns) == ["description"] and len(out) == 2
    assert all(t.strip() for t in out["description"])
    native = lrm.load_model("models:/describer/1", device="cpu")
    assert isinstance(native, Describer)
    assert native.describe(frame.to_dict("records")) == list(out["description"])
