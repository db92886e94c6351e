"""The model card a training run writes: Hub metadata and text from labelrec.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from labelrec.modelcard import CARD_METRICS, tagger_card


def test_training_writes_a_card_with_the_runs_valid_metrics(trained_model_dir: Path) -> None:
    info = json.loads((trained_model_dir / "labelrec.json").read_text(encoding="utf-8"))
    card = ModelCard.load(trained_model_dir / "README.md")
    assert card.data.library_name == "labelrec"
    assert card.data.model_name == trained_model_dir.name
    found = {r.metric_name: r.metric_value for r in card.data.eval_results}
    for key, (_, label) in CARD_METRICS.items():
        assert found[label] == round(info["valid_metrics"][key], 4)
    assert all(r.dataset_split == "validation" for r in card.data.eval_results)
    assert f"labelrec suggest {trained_model_dir.name}" in card.text
    assert f"vocabulary of {info['n_tags']}" in card.text
    assert info["lora_adapters"] is True  # configs/tiny.yaml trains adapters
    assert "LoRA adapters, r=4, merged into the weights" in card.text
    # the tiny backbone is a local folder, not a Hub id
    assert card.data.base_model is None


def test_card_names_a_hub_backbone_its_licence_and_a_refit() -> None:
    info = {
        "backbone": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "pooling": "last",
        "max_length": 64,
        "n_tags": 12,
        "best_epoch": 2,
        "train_source": "/data/shop/train.jsonl + /data/shop/valid.jsonl + feedback /r/rev.jsonl",
        "refit": {"epochs": 2},
        "valid_metrics": {"P@1": 0.5, "nDCG@3": 0.25},
        "config": {"data": {"valid": "/data/shop/valid.jsonl"}, "lora": {"enabled": "auto"}},
        "components": {"tagger": {}, "span": {}, "rerank": {}},
    }
    card = tagger_card(info, "shop")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [
        ("P@1", 0.5),
        ("nDCG@3", 0.25),
    ]
    assert card.data.eval_results[0].dataset_name == "valid.jsonl"
    assert "Backbone licence: Apache-2.0" in card.text
    assert "`train.jsonl + valid.jsonl + feedback rev.jsonl` (the refit: train + valid" in card.text
    assert "/data/shop" not in card.content  # file names, not where they were
    assert "valid cannot measure it" in card.text
    assert "a span tagger" in card.text and "a reranker" in card.text


def test_card_of_a_model_tuned_by_folds_says_its_figures_are_out_of_fold() -> None:
    info = {
        "backbone": "sentence-transformers/all-MiniLM-L6-v2",
        "n_tags": 12,
        "train_source": "/data/shop/train.jsonl + /data/shop/valid.jsonl",
        "refit": {"epochs": 3},
        "valid_metrics": {"P@1": 0.75, "nDCG@3": 0.5, "tuning_folds": 2.0},
        "config": {"data": {"train": "/data/shop/train.jsonl", "valid": "/data/shop/valid.jsonl"}},
    }
    card = tagger_card(info, "shop")
    result = card.data.eval_results[0]
    assert (result.dataset_name, result.dataset_split) == (
        "train.jsonl + valid.jsonl",
        "out-of-fold (2 folds)",
    )
    assert "## Measured on `train.jsonl + valid.jsonl` out of fold" in card.text
    assert "one of 2 tuning folds that did not train on it" in card.text
    assert "valid cannot measure it" not in card.text and "/data/shop" not in card.content
    # without data.valid: the valid split of train, and reviews merged in, as recorded
    source = "/data/shop/train.jsonl + feedback /r/rev.jsonl + /data/shop/train.jsonl (split)"
    card = tagger_card({**info, "valid_source": source, "config": {"data": {}}}, "shop")
    assert card.data.eval_results[0].dataset_name == (
        "train.jsonl + feedback rev.jsonl + train.jsonl (split)"
    )


def test_card_of_a_generator_tuned_on_a_sample_of_valid_says_so() -> None:
    """``generate.tune_products`` below valid's size: the figures are of that sample."""
    info = {
        "backbone": "sentence-transformers/all-MiniLM-L6-v2",
        "n_tags": 12,
        "train_source": "/data/shop/train.jsonl",
        "valid_source": "/data/shop/valid.jsonl",
        "valid_metrics": {"P@1": 0.75, "n_products": 300.0, "valid_products_sampled_from": 534.0},
        "config": {"data": {"valid": "/data/shop/valid.jsonl"}},
    }
    card = tagger_card(info, "shop")
    result = card.data.eval_results[0]
    assert result.dataset_split == "validation, a random 300 of its 534 products"
    assert "## Measured on `valid.jsonl` (a random 300 of its 534 products)" in card.text
    del info["valid_metrics"]["valid_products_sampled_from"]  # all of valid
    card = tagger_card(info, "shop")
    assert card.data.eval_results[0].dataset_split == "validation"
    assert "## Measured on `valid.jsonl`\n" in card.text


def test_card_of_a_pretrained_backbone_names_its_base() -> None:
    info = {
        "backbone": "/runs/dapt",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "pooling": "mean",
        "max_length": 128,
        "n_tags": 3,
    }
    card = tagger_card(info, "m")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.license == "apache-2.0" and "Backbone licence: Apache-2.0." in card.text
    assert (  # a local folder by its name, not where it was
        "fine-tuned from `dapt` (`sentence-transformers/all-MiniLM-L6-v2` after masked-LM "
        "pretraining on catalog texts; mean pooling, 128 tokens;" in card.text
    )
    assert "/runs" not in card.content
    windows = tagger_card({**info, "backbone": "C:/Users/al/dapt"}, "m")
    assert "fine-tuned from `dapt`" in windows.text and "Users" not in windows.content


@pytest.mark.parametrize(
    "backbone, hub_id, licence",
    [
        ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
        ("gemma-3-270m", "google/gemma-3-270m", "gemma"),
        ("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
        ("someone/other-model", "someone/other-model", None),
    ],
)
def test_a_backbone_by_its_short_name_is_its_hub_model(
    backbone: str, hub_id: str, licence: str | None
) -> None:
    info = {"backbone": backbone, "pooling": "last", "head_bias": [0.1], "pair_separator": "\n"}
    card = tagger_card(info, "m")
    assert card.data.base_model == hub_id and card.data.license == licence
    assert '["head_bias"]' in card.text  # a decoder's bias, added to the logits
    assert '["\\n50 pieces, ages 3+"]' in card.text  # as labelrec writes a description


def test_card_without_metrics_has_no_model_index() -> None:
    card = tagger_card({"backbone": "./my-backbone", "valid_metrics": {}}, "m")
    assert card.data.eval_results is None
    assert card.data.base_model is None
    assert "## Measured" not in card.text


def test_name_backbone_renames_a_describers_backbone(tmp_path: Path) -> None:
    from labelrec.modelcard import name_backbone

    (tmp_path / "causal.json").write_text(
        json.dumps({"kind": "describer", "backbone": "/tmp/labelrec-backbone-x", "n_train": 3}),
        encoding="utf-8",
    )
    name_backbone(tmp_path, "runs:/abc/backbone")
    meta = json.loads((tmp_path / "causal.json").read_text(encoding="utf-8"))
    assert meta == {"kind": "describer", "backbone": "runs:/abc/backbone", "n_train": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["causal.json"]  # no temporary left


def test_the_cards_plain_transformers_snippet_gives_the_taggers_scores(
    trained_model_dir: Path, monkeypatch
) -> None:
    """The card's code for transformers alone reproduces the neural tagger's scores (the
    pipeline would not: the head reads mean pooling), and its metadata names no local path."""
    import re

    import numpy as np

    from labelrec.predict import TagRecommender

    card = ModelCard.load(trained_model_dir / "README.md")
    assert 'pipeline("text-classification")` does **not**' in card.text
    (code,) = re.findall(r"```python\n(import json.*?)```", card.text, flags=re.S)
    monkeypatch.chdir(trained_model_dir.parent)  # the card names the model by its folder
    found: dict = {}
    exec(code, found)  # noqa: S102 - the card's own snippet
    rec = TagRecommender.load(trained_model_dir, backend="torch")
    product = {"title": "Wooden railway set", "description": "50 pieces, ages 3+"}
    expected = rec.votes([product]).neural
    assert np.abs(found["scores"].numpy() - expected).max() < 1e-5
    assert str(trained_model_dir.parent) not in card.content


def test_the_cards_code_pools_the_first_token_as_labelrec_does(
    tiny_backbone: Path, tmp_path: Path, monkeypatch
) -> None:
    """``model.pooling: cls``: the card feeds the first token's vector to the head without the
    pooler that BERT's class puts in between."""
    import re

    import numpy as np
    import torch

    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import ModelInfo, build_model, encode_products, save_model

    cfg = ModelConfig(backbone=str(tiny_backbone), max_length=32, dropout=0.0, pooling="cls")
    model, tok = build_model(cfg, LoraSettings(enabled=False), ["a", "b", "c"])
    with torch.no_grad():
        model.head.weight.normal_()  # a head that tells the poolings apart
    model.eval()
    save_model(model, tok, tmp_path / "m", ModelInfo(str(tiny_backbone), "cls", 32, 3))
    info = json.loads((tmp_path / "m" / "labelrec.json").read_text(encoding="utf-8"))
    text = tagger_card(info, "m").text
    (code,) = re.findall(r"```python\n(import json.*?)```", text, flags=re.S)
    monkeypatch.chdir(tmp_path)
    found: dict = {}
    exec(code, found)  # noqa: S102 - the card's own snippet
    (ids,) = encode_products(tok, ["Wooden railway set"], ["50 pieces, ages 3+"], 32)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.tensor([ids]), torch.ones(1, len(ids)))).numpy()
    assert np.abs(found["scores"].numpy() - expected).max() < 1e-5
