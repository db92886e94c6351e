"""Domain-adaptive pretraining: held-out MLM loss goes down, the output is a backbone for train."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import tiny_config, write_jsonl

from labelrec.cli import main
from labelrec.config import load_config
from labelrec.pretrain import collect_texts, pretrain
from labelrec.train import train

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "lego city police station building brick set",
    "lego city fire engine truck with figure",
    "hornby model railway train set with engine",
    "hornby engine carriage smoke and sound",
    "wooden jigsaw puzzle 1000 pieces animal farm",
    "remote control car red with battery",
    "remote control drone blue outdoor",
    "plush bear soft baby toy",
    "乐高 城市 警察局 积木 玩具",
    "dinosaur figure action hero kids toy",
]


def _unlabeled(tmp_path: Path, copies: int = 8) -> Path:
    rows = [{"title": t, "description": f"{t} for kids {i}"} for i in range(copies) for t in TEXTS]
    return write_jsonl(rows, tmp_path / "texts.jsonl")


def _cfg(backbone: Path, texts: Path, out: Path, *extra: str):
    return load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            f"model.backbone={backbone}",
            f"data.unlabeled={texts}",
            f"output={out}",
            "pretrain.epochs=4",
            "pretrain.lr=3e-3",
            "pretrain.mlm_probability=0.3",
            "pretrain.heldout_fraction=0.2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def pretrained(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pretrain")
    return pretrain(_cfg(tiny_backbone, _unlabeled(tmp), tmp / "dapt"), progress=False)


def test_heldout_mlm_loss_goes_down(pretrained) -> None:
    losses = [row["heldout_mlm_loss"] for row in pretrained.history]
    assert [row["epoch"] for row in pretrained.history] == [0, 1, 2, 3, 4]
    assert losses[-1] < losses[0] - 0.5, losses
    assert losses[-1] == min(losses), losses


def test_output_is_a_backbone_train_accepts(
    pretrained, tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    out = pretrained.output
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "bert"
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("adapter_*"))
    cfg = tiny_config(out, toy_data_dir, tmp_path / "tagger", "train.epochs=1")
    result = train(cfg, progress=False)
    assert result.n_tags > 0 and result.metrics["n_products"] == 10
    info = json.loads((tmp_path / "tagger" / "labelrec.json").read_text(encoding="utf-8"))
    assert info["backbone"] == str(out)
    # the model records what the backbone was pretrained from, and its card names it
    record = json.loads((out / "pretrain.json").read_text(encoding="utf-8"))
    assert info["base_model"] == record["base_model"] == str(tiny_backbone)
    assert record["history"] == pretrained.history
    card = (tmp_path / "tagger" / "README.md").read_text(encoding="utf-8")
    # a local base model by its folder's name: a card says which, not where it was
    assert f"`{Path(record['base_model']).name}` after masked-LM pretraining" in card
    assert str(tiny_backbone) not in card


def test_a_chain_of_pretrainings_names_the_first_backbone(tmp_path: Path) -> None:
    from labelrec.model import base_model_of

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, base in ((first, "sentence-transformers/all-MiniLM-L6-v2"), (second, first)):
        folder.mkdir()
        (folder / "pretrain.json").write_text(json.dumps({"base_model": str(base)}))
    assert base_model_of(str(second)) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_of(str(first)) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_of("sentence-transformers/all-MiniLM-L6-v2") is None
    assert base_model_of(str(tmp_path)) is None  # a folder pretrain did not write


def test_short_held_out_texts_have_a_finite_loss(tiny_backbone: Path, tmp_path: Path) -> None:
    """One-word texts: a held-out batch may draw no mask (a loss of nothing, NaN); it is drawn
    again, and the loss is the mean per masked token."""
    import math

    words = tmp_path / "words.txt"
    words.write_text("kite\nball\ndoll\ntrain\npuzzle\nbear\n", encoding="utf-8")
    extra = ("pretrain.epochs=2", "pretrain.mlm_probability=0.15", "pretrain.heldout_fraction=0.5")
    result = pretrain(_cfg(tiny_backbone, words, tmp_path / "out", *extra), progress=False)
    losses = [h["heldout_mlm_loss"] for h in result.history]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    json.loads((tmp_path / "out" / "pretrain.json").read_text(), parse_constant=pytest.fail)


def test_a_local_backbone_given_relative_is_recorded_by_its_whole_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models/tiny`` means a folder only where it was given: recorded whole, a card written
    from another folder (``labelrec push``) does not take it for a Hub id."""
    from labelrec.model import recorded_backbone
    from labelrec.modelcard import tagger_card

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    recorded = recorded_backbone("models/tiny")
    assert recorded == str(tmp_path.resolve() / "models" / "tiny")
    assert recorded_backbone("acme/tiny") == "acme/tiny"  # no such folder: a Hub id
    (tmp_path / "google" / "gemma-3-270m").mkdir(parents=True)  # a clone of a name labelrec knows
    assert recorded_backbone("google/gemma-3-270m") == "google/gemma-3-270m"  # its licence by name
    monkeypatch.chdir(tmp_path.parent)
    card = tagger_card({"backbone": recorded, "base_model": recorded, "n_tags": 3}, "acme/shop")
    assert card.data.base_model is None and "`tiny` after masked-LM pretraining" in str(card)


def test_pretrained_weights_differ_from_the_start(pretrained, tiny_backbone: Path) -> None:
    from safetensors.torch import load_file

    before = load_file(tiny_backbone / "model.safetensors")
    after = load_file(pretrained.output / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    (key_before,) = [k for k in before if k.endswith(name)]
    (key_after,) = [k for k in after if k.endswith(name)]
    assert not (before[key_before] == after[key_after]).all()


def test_lora_pretraining_merges_into_a_plain_backbone(tiny_backbone: Path, tmp_path: Path) -> None:
    texts = _unlabeled(tmp_path)
    result = pretrain(
        _cfg(tiny_backbone, texts, tmp_path / "lora", "pretrain.lora=true", "pretrain.lr=1e-2"),
        progress=False,
    )
    losses = [row["heldout_mlm_loss"] for row in result.history]
    # The adapters learn (with the MLM head trainable, even when the backbone came without one).
    assert losses[-1] < losses[0] - 0.1, losses
    from safetensors.torch import load_file

    weights = load_file(result.output / "model.safetensors")
    assert not any("lora" in k for k in weights)


def test_max_steps_and_texts(tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    texts = _unlabeled(tmp_path, copies=2)
    cfg = _cfg(
        tiny_backbone, texts, tmp_path / "short", f"data.train={toy_data_dir / 'train.jsonl'}"
    )
    collected = collect_texts(cfg)
    # Labelled titles join the unlabelled texts; duplicates are dropped.
    assert any("LEGO City Police Station" in t for t in collected)
    assert len(collected) == len(set(collected))
    cfg = _cfg(tiny_backbone, texts, tmp_path / "short", "pretrain.max_steps=2")
    result = pretrain(cfg, progress=False)
    assert len(result.history) == 2  # before, and the one (cut short) epoch


def test_a_stopped_save_leaves_the_earlier_backbone_whole(
    tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock_elsewhere
) -> None:
    import labelrec.pretrain as pretrain_mod
    from labelrec.modeldir import OutputBusy

    texts = _unlabeled(tmp_path, copies=2)
    out = tmp_path / "dapt"
    cfg = _cfg(tiny_backbone, texts, out, "pretrain.max_steps=1")
    pretrain(cfg, progress=False)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # as a plain mkdir makes it
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    save = pretrain_mod._save_backbone

    def stopped(model, tokenizer, stage, *args):  # Ctrl-C with the weights written, no more
        model.base_model.save_pretrained(stage, safe_serialization=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_mod, "_save_backbone", stopped)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dapt.lock", "dapt", "texts.jsonl"]
    monkeypatch.setattr(pretrain_mod, "_save_backbone", save)
    with lock_elsewhere(out), pytest.raises(OutputBusy, match="another"):
        pretrain(cfg, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="holds other files"):
        pretrain(_cfg(tiny_backbone, texts, other), progress=False)
    monkeypatch.chdir(out)
    with pytest.raises(ValueError, match="the current folder"):
        pretrain(_cfg(tiny_backbone, texts, Path(".")), progress=False)


def test_pretrain_cli(
    tiny_backbone: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    texts = _unlabeled(tmp_path, copies=2)
    args = ["pretrain", "--config", str(ROOT / "configs" / "tiny.yaml"), "--no-progress"]
    args += [f"model.backbone={tiny_backbone}", f"data.unlabeled={texts}"]
    args += [f"output={tmp_path / 'cli'}", "pretrain.max_steps=2"]
    # a tagger's settings: said to be unused
    tagger_settings = ["train.max_steps=1", "model.dtype=bfloat16", "lora.enabled=true"]
    assert main([*args, *tagger_settings, "model.max_length=64"]) == 0
    assert "train.max_steps: not used by pretrain" in caplog.text
    assert "model.dtype: not used by pretrain" in caplog.text
    assert "lora.enabled: not used by pretrain (pretrain.lora adds LoRA adapters)" in caplog.text
    assert "model.max_length: not used" not in caplog.text
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"backbone saved to {tmp_path / 'cli'}"
    assert "heldout_mlm_loss" in json.loads(out[1])
    missing = [f"output={tmp_path / 'cli2'}", f"data.unlabeled={tmp_path / 'missing.jsonl'}"]
    assert main([*args[:-3], *missing]) == 2
    assert "data.unlabeled: " in capsys.readouterr().err
    assert not list(tmp_path.glob("*cli2*"))  # stopped before it locked its output
    # a folder that holds a trained model is not overwritten by a bare encoder
    model = tmp_path / "model"
    model.mkdir()
    (model / "labelrec.json").write_text("{}", encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"weights")
    assert main([*args[:-2], f"output={model}", "pretrain.max_steps=2"]) == 2
    assert "holds a trained labelrec model" in capsys.readouterr().err
    assert (model / "model.safetensors").read_bytes() == b"weights"


def test_a_data_file_without_texts_is_an_error_not_the_demo_catalog(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"data.train={empty}"])
    with pytest.raises(ValueError, match="no texts to pretrain on"):
        collect_texts(cfg)
    # no file at all: the demo catalog's texts, said in the log
    assert collect_texts(load_config(ROOT / "configs" / "tiny.yaml", ["data.demo_products=40"]))


def test_a_file_of_descriptions_alone_is_texts_enough(tmp_path: Path) -> None:
    rows = [{"description": f"{t} with a long story {i}"} for i, t in enumerate(TEXTS)]
    descriptions = write_jsonl(rows, tmp_path / "descriptions.jsonl")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"data.unlabeled={descriptions}"])
    assert collect_texts(cfg) == [r["description"] for r in rows]
    other = write_jsonl([{"text": t} for t in TEXTS], tmp_path / "other.jsonl")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"data.unlabeled={other}"])
    with pytest.raises(ValueError, match="no texts to pretrain on .*'title' and 'description'"):
        collect_texts(cfg)


def test_a_backbone_that_cannot_be_pretrained_is_a_one_line_error(
    tiny_backbone: Path, tiny_decoder: Path, tmp_path: Path
) -> None:
    texts = _unlabeled(tmp_path, copies=1)
    with pytest.raises(ValueError, match=r"a decoder \(LlamaConfig\); masked-LM pretraining is"):
        pretrain(_cfg(tiny_decoder, texts, tmp_path / "out"), progress=False)
    from labelrec.model import ModelError

    with pytest.raises(ModelError, match="nope-model'?: no such directory"):
        pretrain(_cfg(tmp_path / "nope-model", texts, tmp_path / "out"), progress=False)
    one = write_jsonl([{"title": "kite"}], tmp_path / "one.jsonl")
    with pytest.raises(ValueError, match=r"one.jsonl: 1 distinct text; .* at least two"):
        pretrain(_cfg(tiny_backbone, one, tmp_path / "out"), progress=False)
    # pretraining in place would write over the backbone it starts from
    import shutil

    copy = tmp_path / "backbone"
    shutil.copytree(tiny_backbone, copy)
    with pytest.raises(ValueError, match="the folder of the backbone"):
        pretrain(_cfg(copy, texts, copy), progress=False)
    # a file named as the output stays the file
    precious = tmp_path / "precious.txt"
    precious.write_text("kept", encoding="utf-8")
    with pytest.raises(ValueError, match="precious.txt: is a file; give a directory"):
        pretrain(_cfg(tiny_backbone, texts, precious), progress=False)
    assert precious.read_text(encoding="utf-8") == "kept"
    # more tokens than the backbone has positions (the tiny BERT: 256)
    with pytest.raises(ModelError, match="model.max_length 512: .* reads at most 256 tokens"):
        pretrain(_cfg(tiny_backbone, texts, tmp_path / "out", "model.max_length=512"), False)
