"""The tagging model: LoRA merge and save/load keep the logits, self-contained directories."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from labelrec.config import ConfigError, LoraSettings, ModelConfig, load_config
from labelrec.model import (
    ModelInfo,
    build_model,
    count_parameters,
    encode_products,
    load_model,
    lora_settings_unused,
    pad_batch,
    read_info,
    resolve_mixed_precision,
    save_model,
)

TAGS = ["Toys", "Toys > Building", "brand:Lego", "Hobbies", "color:Red"]
PRIOR = np.array([0.7, 0.3, 0.25, 0.2, 0.01])
TITLES = ["lego city police station", "hornby model railway", "红 乐高 积木", "remote control car"]


def _build(backbone: Path, lora: bool = True, **lora_kw):
    cfg = ModelConfig(backbone=str(backbone), max_length=32, dropout=0.0)
    return build_model(cfg, LoraSettings(enabled=lora, r=4, alpha=8, dropout=0.0, **lora_kw), TAGS)


def _batch(tokenizer, titles=TITLES) -> dict[str, torch.Tensor]:
    ids = encode_products(tokenizer, titles, [""] * len(titles), 32)
    return pad_batch(ids, tokenizer.pad_token_id, getattr(tokenizer, "padding_side", "right"))


def _perturb_lora(model) -> int:
    """LoRA B starts at zero (adapters are a no-op): make them matter."""
    gen = torch.Generator().manual_seed(1)
    n = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
                n += 1
    return n


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_logits_same_before_merge_after_merge_and_after_reload(
    kind: str, tiny_backbone: Path, tiny_decoder: Path, tmp_path: Path
) -> None:
    backbone = tiny_backbone if kind == "encoder" else tiny_decoder
    model, tok = _build(backbone)
    assert model.pooling == ("mean" if kind == "encoder" else "last")
    assert _perturb_lora(model) > 0
    model.eval()
    batch = _batch(tok)
    with torch.no_grad():
        before = model(**batch)
        model.seq.disable_adapter_layers()
        without = model(**batch)
        model.seq.enable_adapter_layers()
    assert not torch.allclose(before, without, atol=1e-3), "LoRA adapters do not change the logits"
    info = ModelInfo(backbone=str(backbone), pooling=model.pooling, max_length=32, n_tags=len(TAGS))
    out = save_model(model, tok, tmp_path / "model", info, dtype="float32")  # merges in place
    assert not any("lora" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        merged = model(**batch)
    torch.testing.assert_close(merged, before, atol=1e-5, rtol=0)
    loaded, tok2, read = load_model(out)
    assert read["pooling"] == model.pooling
    with torch.no_grad():
        reloaded = loaded(**_batch(tok2))
    torch.testing.assert_close(reloaded, before, atol=1e-5, rtol=0)


def test_saved_directory_is_self_contained(tiny_backbone: Path, tmp_path: Path) -> None:
    backbone = Path(shutil.copytree(tiny_backbone, tmp_path / "backbone"))
    model, tok = _build(backbone)
    _perturb_lora(model)
    model.eval()
    with torch.no_grad():
        expected = model(**_batch(tok)).numpy()
    info = ModelInfo(str(backbone), model.pooling, 32, len(TAGS), extra={"note": "x"})
    out = save_model(model, tok, tmp_path / "model", info)
    shutil.rmtree(backbone)

    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["problem_type"] == "multi_label_classification"
    assert [config["id2label"][str(i)] for i in range(len(TAGS))] == TAGS
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("adapter_*")), "LoRA must be merged, not saved as an adapter"
    assert read_info(out)["note"] == "x"

    # The test session runs offline (conftest sets HF_HUB_OFFLINE before any import), and the
    # backbone folder is gone: everything must come from the model directory.
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE
    loaded, tok2, _ = load_model(out)
    with torch.no_grad():
        got = loaded(**_batch(tok2)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_head_bias_starts_at_tag_log_odds(tiny_backbone: Path) -> None:
    cfg = ModelConfig(backbone=str(tiny_backbone), max_length=32)
    model, _ = build_model(cfg, LoraSettings(), TAGS, tag_prior=PRIOR)
    bias = model.head.bias.detach().numpy()
    np.testing.assert_allclose(bias, np.log(PRIOR / (1 - PRIOR)), rtol=1e-5)
    # With tiny head weights, the untrained model scores each tag at its prior.
    assert float(model.head.weight.detach().abs().max()) < 0.2
    model_no_prior, _ = build_model(cfg, LoraSettings(), TAGS)
    assert float(model_no_prior.head.bias.detach().abs().max()) == 0.0


def test_trainable_parameters(tiny_backbone: Path) -> None:
    model, _ = _build(tiny_backbone, lora=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    head = {f"seq.base_model.model.classifier.{k}" for k in ("weight", "bias")}
    assert head <= trainable
    others = trainable - head
    assert others and all("lora_" in n for n in others), sorted(others)
    assert count_parameters(model)[0] == sum(
        p.numel() for n, p in model.named_parameters() if n in trainable
    )

    full, _ = _build(tiny_backbone, lora=False)
    frozen = [n for n, p in full.named_parameters() if not p.requires_grad]
    # Everything trains except the backbone's own pooler, which labelrec never uses
    # (trainable weights without gradients break DDP).
    assert frozen and all(".pooler." in n for n in frozen), frozen
    trained, total = count_parameters(full)
    assert trained < total and trained > 0.9 * total


def test_lora_auto_trains_encoders_whole_and_decoders_with_adapters(
    tiny_backbone: Path, tiny_decoder: Path
) -> None:
    from labelrec.train import body_lr

    encoder, _ = _build(tiny_backbone, lora="auto")
    assert not encoder.lora and not any("lora_" in n for n, _ in encoder.named_parameters())
    assert count_parameters(encoder)[0] > 0.9 * count_parameters(encoder)[1]
    decoder, _ = _build(tiny_decoder, lora="auto")
    assert decoder.lora and any("lora_" in n for n, _ in decoder.named_parameters())
    assert _build(tiny_backbone, lora=True)[0].lora and not _build(tiny_decoder, lora=False)[0].lora
    # train.lr null: the learning rate follows what trains; a given one is kept
    assert body_lr(None, encoder.lora) == 1e-4 and body_lr(None, decoder.lora) == 3e-4
    assert body_lr(5e-3, encoder.lora) == 5e-3


def test_adapters_attach_without_peft_reading_a_deprecated_transformers_property(
    tiny_decoder: Path,
) -> None:
    """peft reads ``is_gradient_checkpointing``, which transformers 5 deprecates: no warning
    reaches the user for a call that is peft's."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder, _ = _build(tiny_decoder, lora=True)
    assert decoder.lora
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_adapter_settings_without_adapters_are_named_in_a_warning(
    tiny_backbone: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``lora.target_modules`` (or r, alpha, dropout) with an encoder under ``lora.enabled: auto``
    trains no adapters: the run says which settings it does not use."""
    cfg = ModelConfig(backbone=str(tiny_backbone), max_length=32, dropout=0.0)
    with caplog.at_level(logging.WARNING, logger="labelrec.model"):
        build_model(cfg, LoraSettings(enabled="auto", target_modules=["query"]), TAGS)
    assert "lora.target_modules set, but no LoRA adapters: lora.enabled is auto" in caplog.text
    assert "whole encoder" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labelrec.model"):
        build_model(cfg, LoraSettings(enabled=False), TAGS)  # the defaults: nothing to say
        build_model(cfg, LoraSettings(enabled=True, r=4), TAGS)  # adapters use them
    assert "no LoRA adapters" not in caplog.text
    assert lora_settings_unused(LoraSettings(enabled=False, r=8, alpha=16)) == ["r", "alpha"]


def test_every_trainable_parameter_gets_a_gradient(tiny_backbone: Path, tiny_decoder: Path) -> None:
    """What DDP needs: no trainable weight is left out of the loss."""
    for backbone in (tiny_backbone, tiny_decoder):
        for lora in (True, False):
            model, tok = _build(backbone, lora=lora)
            _perturb_lora(model)
            model(**_batch(tok)).sum().backward()
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, (backbone.name, lora, missing)


def _lora_targets(model) -> set[str]:
    """Names of the modules that carry LoRA adapters (last name part)."""
    return {
        n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_modules() if ".lora_A" in n
    }


def test_lora_targets_per_architecture_and_override(
    tiny_backbone: Path, tiny_decoder: Path
) -> None:
    bert, _ = _build(tiny_backbone)
    assert _lora_targets(bert) == {"query", "value"}
    llama, _ = _build(tiny_decoder)
    assert _lora_targets(llama) == {"q_proj", "v_proj"}
    custom, _ = _build(tiny_backbone, target_modules=["key", "dense"])
    targets = _lora_targets(custom)
    assert targets == {"key", "dense"}
    # "dense" also matches BERT's pooler, which is frozen with its adapters.
    assert not any(p.requires_grad for n, p in custom.named_parameters() if ".pooler." in n)
    # a decoder's names on an encoder: an error naming the setting, not peft's alone
    with pytest.raises(ConfigError, match=r"lora.target_modules=.*'q_proj'.*: not modules of"):
        _build(tiny_backbone, target_modules=["q_proj", "v_proj"])
    every, _ = _build(tiny_decoder, target_modules=["all-linear"])  # peft's shorthand
    assert _lora_targets(every) == {"q_proj", "k_proj", "v_proj", "o_proj"} | {
        "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    assert load_config(None, ["lora.target_modules=all-linear"]).lora.target_modules == [
        "all-linear"
    ]
    with pytest.raises(ConfigError, match="lora.target_modules: an empty list adapts nothing"):
        load_config(None, ["lora.target_modules=[]"])


def test_lora_rank_and_alpha_are_applied(tiny_backbone: Path) -> None:
    model, _ = _build(tiny_backbone)
    lora_a = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert lora_a and all(p.shape[0] == 4 for p in lora_a)
    assert model.seq.peft_config["default"].lora_alpha == 8


def test_embed_matches_forward(tiny_backbone: Path) -> None:
    model, tok = _build(tiny_backbone)
    model.eval()
    batch = _batch(tok)
    with torch.no_grad():
        pooled = model.embed(**batch)
        logits = model(**batch)
    assert pooled.shape == (len(TITLES), 32)
    torch.testing.assert_close(model.head(pooled), logits)


def test_padding_does_not_change_logits(tiny_backbone: Path, tiny_decoder: Path) -> None:
    """Dynamic padding: an item scores the same alone and in a batch with longer items."""
    for backbone in (tiny_backbone, tiny_decoder):
        model, tok = _build(backbone)
        _perturb_lora(model)
        model.eval()
        with torch.no_grad():
            together = model(**_batch(tok))
            alone = torch.cat([model(**_batch(tok, [t])) for t in TITLES])
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_bad_backbone_and_model_dir(tmp_path: Path) -> None:
    from labelrec.model import ModelError

    with pytest.raises(ModelError, match=r"not a labelrec model directory \(no labelrec.json\)$"):
        load_model(tmp_path)
    (tmp_path / "checkpoints" / "epoch-1").mkdir(parents=True)  # a training stopped before saving
    with pytest.raises(ModelError, match="stopped before saving: .* `--resume` continues it"):
        load_model(tmp_path)
    (tmp_path / "labelrec.json").write_text('{"format_version": 99}', encoding="utf-8")
    with pytest.raises(ModelError, match="newer"):
        read_info(tmp_path)
    with pytest.raises(OSError):
        _build(tmp_path / "no-such-backbone")


def test_decoder_head_gets_a_prior_bias_that_survives_saving(tiny_decoder: Path, tmp_path: Path):
    """Llama/Gemma classification heads have no bias: labelrec adds one (set at the tag prior),
    records it in labelrec.json and restores it when loading."""
    import numpy as np
    import torch

    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import ModelInfo, build_model, load_model, save_model

    prior = np.array([0.5, 0.1, 0.01])
    model, tok = build_model(
        ModelConfig(backbone=str(tiny_decoder)), LoraSettings(), ["a", "b", "c"], prior
    )
    head = model.head
    assert head.bias is not None and head.bias.requires_grad
    assert head.bias.detach().numpy() == pytest.approx(np.log(prior / (1 - prior)), abs=1e-5)
    with torch.no_grad():
        head.bias.add_(0.25)
    ids = torch.tensor([[5, 6, 7]])
    mask = torch.ones_like(ids)
    model.eval()
    before = model(ids, mask)
    info = ModelInfo(str(tiny_decoder), "last", 32, 3)
    save_model(model, tok, tmp_path / "m", info, dtype="float32")
    loaded, _, info = load_model(tmp_path / "m")
    assert "head_bias" in info
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        assert "score.weight" in f.keys() and "score.bias" not in f.keys()  # a key no class loads
    assert loaded(ids, mask).detach().numpy() == pytest.approx(before.detach().numpy(), abs=1e-5)


def _stored_dtypes(model_dir: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}


def test_decoders_are_saved_in_bf16_and_encoders_in_float32(
    tiny_backbone: Path, tiny_decoder: Path, tmp_path: Path
) -> None:
    """``model.save_dtype`` auto halves a decoder's weights on disk; they load in float32 with
    the logits of the model in memory up to bf16 rounding, and saving does not cast that model."""
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    for backbone, pooling, stored in (
        (tiny_decoder, "last", "BF16"),
        (tiny_backbone, "mean", "F32"),
    ):
        model, tok = _build(backbone)
        _perturb_lora(model)
        model.eval()
        out = tmp_path / backbone.name
        save_model(model, tok, out, ModelInfo(str(backbone), pooling, 32, len(TAGS)))
        assert next(model.hf_model.parameters()).dtype == torch.float32
        assert _stored_dtypes(out) == {stored}
        # config.json says so (what dtype="auto" loads); the tokenizer truncates as trained
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        assert config["dtype"] == {"BF16": "bfloat16", "F32": "float32"}[stored]
        assert AutoTokenizer.from_pretrained(out).model_max_length == 32
        assert tok.model_max_length != 32  # the tokenizer in memory as it was
        mask_now = os.umask(0)
        os.umask(mask_now)
        assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask_now
        loaded, _, _ = load_model(out)
        assert next(loaded.hf_model.parameters()).dtype == torch.float32
        before, after = model(ids, mask).detach().numpy(), loaded(ids, mask).detach().numpy()
        tol = 5e-2 if stored == "BF16" else 1e-5
        assert after == pytest.approx(before, abs=tol)
    model, tok = _build(tiny_decoder)
    save_model(
        model,
        tok,
        tmp_path / "f32",
        ModelInfo(str(tiny_decoder), "last", 32, 5),
        "labelrec.json",
        "float32",
    )
    assert _stored_dtypes(tmp_path / "f32") == {"F32"}


def test_auto_mixed_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, expected in [
        (True, False, "bf16"),
        (False, True, "bf16"),
        (False, False, "no"),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_mixed_precision("auto") == expected
        for explicit in ("no", "bf16", "fp16"):  # an explicit setting is kept as it is
            assert resolve_mixed_precision(explicit) == explicit
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the probes
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert resolve_mixed_precision("auto") == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "no"


def test_trainings_of_another_mixed_precision_follow_in_one_process() -> None:
    """Pretrain then train, or a tagger then its generator, in one process: Accelerate alone
    refuses a second Accelerator with another mixed_precision."""
    from labelrec.model import make_accelerator

    assert make_accelerator("no").mixed_precision == "no"
    assert make_accelerator("bf16").mixed_precision == "bf16"
    assert make_accelerator("no").mixed_precision == "no"


def test_a_tokenizer_that_separates_no_pair_gets_a_separator(tiny_backbone: Path) -> None:
    """SmolLM2's pair template puts title and description side by side ("StationBuild"): a
    newline goes between them; BERT's [SEP] needs nothing."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from labelrec.model import load_tokenizer, pair_separator

    words = ["[UNK]", "[PAD]", "a", "b", "lego", "city", "big", "set", "|"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split("|", "isolated")]
    )  # no post-processor: a pair is its two texts side by side
    glued = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
    assert pair_separator(glued) == "\n"
    assert pair_separator(load_tokenizer(str(tiny_backbone))) is None
    ids = encode_products(glued, ["lego city"], ["big set"], 32, separator="|")
    assert glued.convert_ids_to_tokens(ids[0])[-4:] == ["city", "|", "big", "set"]
    assert encode_products(glued, ["lego"], [""], 32, separator="|") == [glued("lego")["input_ids"]]


def test_a_model_encodes_with_the_separator_it_was_trained_with(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from labelrec.predict import TagRecommender

    product = {"title": "lego city", "description": "big set"}
    plain = TagRecommender.load(trained_model_dir).encode([product])[0]
    model = shutil.copytree(
        trained_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("checkpoints")
    )
    info = json.loads((model / "labelrec.json").read_text(encoding="utf-8"))
    assert "pair_separator" not in info  # BERT's tokenizer separates the two itself
    (model / "labelrec.json").write_text(json.dumps({**info, "pair_separator": "|"}), "utf-8")
    rec = TagRecommender.load(model)
    marked = rec.encode([product])[0]
    assert marked[:4] == plain[:4] and marked[4] == rec.tokenizer.unk_token_id  # "|" (unknown)
    assert marked[5:] == plain[4:]  # then the description, as before


def test_fsdp_without_cuda_is_refused_before_the_backbone_loads(monkeypatch) -> None:
    from labelrec.model import ModelError, cpu_processes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert cpu_processes() is True
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ModelError, match="cpu2.yaml"):
        cpu_processes()
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: nothing is sharded, nothing refused
    assert cpu_processes() is False


def test_products_are_encoded_a_chunk_at_a_time_as_one_by_one(tiny_backbone: Path) -> None:
    from labelrec.model import ENCODE_CHUNK, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_backbone))
    n = ENCODE_CHUNK + 7  # more than a chunk of each kind, singles and pairs mixed
    titles = [f"{TITLES[i % 4]} {i}" for i in range(2 * n)]
    long = "red kit with engine carriage smoke " * 9
    descriptions = ["" if i % 2 else long for i in range(2 * n)]
    ids = encode_products(tokenizer, titles, descriptions, 32)
    pairs = zip(titles, descriptions, strict=True)
    alone = [encode_products(tokenizer, [t], [d], 32)[0] for t, d in pairs]
    assert ids == alone and max(map(len, ids)) == 32


def test_the_share_of_unknown_tokens_counts_text_tokens_only(tiny_backbone: Path) -> None:
    """What a training run warns about: characters outside the backbone's vocabulary (Chinese
    for an English model) reach it as the unknown token."""
    from labelrec.model import load_tokenizer, unknown_share

    tokenizer = load_tokenizer(str(tiny_backbone))
    known = encode_products(tokenizer, ["lego city", "乐高 积木"], ["", "police station"], 32)
    assert unknown_share(tokenizer, known) == 0.0  # [CLS] and [SEP] are not counted
    foreign = encode_products(tokenizer, ["lego 未知字"], [""], 32)  # lego + 3 unknown
    assert unknown_share(tokenizer, foreign) == pytest.approx(3 / 4)
    assert unknown_share(tokenizer, []) == 0.0
    tokenizer.unk_token = None  # a byte-level tokenizer reads every character
    assert unknown_share(tokenizer, foreign) == 0.0


def test_a_max_length_past_the_backbones_positions_is_refused_before_training(
    tiny_backbone: Path,
) -> None:
    from labelrec.model import ModelError

    cfg = ModelConfig(backbone=str(tiny_backbone), max_length=257)  # it has 256 positions
    with pytest.raises(ModelError, match=r"model.max_length 257: .* at most 256 tokens"):
        build_model(cfg, LoraSettings(enabled=False), TAGS)
    cfg = ModelConfig(backbone=str(tiny_backbone), max_length=256)
    assert build_model(cfg, LoraSettings(enabled=False), TAGS)[0] is not None


def test_load_pretrained_warns_of_missing_backbone_weights_only(
    tiny_backbone: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The head labelrec adds is new by design: transformers' load report on it is dropped;
    backbone weights the checkpoint lacks are named in labelrec's own warning."""
    import logging

    from transformers import AutoModel, AutoModelForSequenceClassification

    from labelrec.model import load_pretrained

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    hf_logger = logging.getLogger("transformers.modeling_utils")
    hf_logger.addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="labelrec.model"):
            load_pretrained(AutoModelForSequenceClassification, str(tiny_backbone), num_labels=3)
            assert not any("LOAD REPORT" in m for m in seen) and "start random" not in caplog.text
            # a backbone without its pooler (as `labelrec pretrain` saves one): nothing to say
            body = AutoModel.from_pretrained(tiny_backbone)
            bare = {k: v for k, v in body.state_dict().items() if "pooler" not in k}
            body.save_pretrained(tmp_path / "bare", state_dict=bare)
            load_pretrained(
                AutoModelForSequenceClassification, str(tmp_path / "bare"), num_labels=3
            )
            assert "start random" not in caplog.text
            kept = {k: v for k, v in body.state_dict().items() if "layer.1." not in k}
            body.save_pretrained(tmp_path / "cut", state_dict=kept)
            load_pretrained(AutoModelForSequenceClassification, str(tmp_path / "cut"), num_labels=3)
    finally:
        hf_logger.removeHandler(handler)
    assert "weights of the backbone are not in its checkpoint" in caplog.text
    assert "bert.encoder.layer.1." in caplog.text
