"""``labelrec push``: what a model directory uploads to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects

from labelrec.cli import main
from labelrec.errors import ModelError
from labelrec.hub import ignored, push


class FakeHub:
    """``HfApi`` as far as ``push`` calls it: the calls are recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id: str, **kwargs) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id: str, **kwargs) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, **kwargs) -> object:
        self.calls.append(("create_commit", kwargs))
        return type("Commit", (), {"commit_url": f"https://hf.co/{kwargs['repo_id']}/commit/1"})()


def model_folder(root: Path) -> Path:
    files = [
        "labelrec.json", "config.json", "model.safetensors", "tokenizer.json", "tags.json",
        "README.md", "generator/causal.json", "checkpoints/epoch-3/optimizer.bin",
        "checkpoints/run.json", "tuning/labelrec.json", ".saving/model.safetensors",
        "index/manifest.json", "index/products.parquet", ".DS_Store",
        "indexes/v1/manifest.json", "indexes/v1/products.parquet",  # an index deeper down
    ]  # fmt: skip
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}", encoding="utf-8")
    return root


def test_push_uploads_the_model_and_leaves_training_state_and_the_catalog(tmp_path: Path):
    model = model_folder(tmp_path / "shop-tagger")
    hub = FakeHub()
    url = push(model, "acme/shop-tagger", private=True, revision="v2", api=hub)
    assert url == "https://hf.co/acme/shop-tagger/commit/1"
    (create, repo_kw), (branch, branch_kw), (commit, kw) = hub.calls
    assert (create, repo_kw) == (
        "create_repo",
        {"repo_id": "acme/shop-tagger", "private": True, "exist_ok": True},
    )
    assert branch == "create_branch" and branch_kw["branch"] == "v2"
    assert commit == "create_commit" and kw["repo_id"] == "acme/shop-tagger"
    assert kw["revision"] == "v2" and kw["commit_message"] == "labelrec model shop-tagger"
    sent = {op.path_in_repo: op for op in kw["operations"]}
    assert sorted(sent) == [
        "README.md", "config.json", "generator/causal.json", "labelrec.json",
        "model.safetensors", "tags.json", "tokenizer.json",
    ]  # fmt: skip
    every = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    assert sorted(filter_repo_objects(every, ignore_patterns=ignored(model))) == sorted(sent)
    # the card is written for the repository: its code loads acme/shop-tagger
    card = sent["README.md"].path_or_fileobj.decode("utf-8")
    assert 'from_pretrained("acme/shop-tagger")' in card
    assert "hf download acme/shop-tagger --local-dir shop-tagger" in card


def test_push_writes_a_describers_card(tmp_path: Path) -> None:
    import json

    from huggingface_hub import ModelCard

    model = tmp_path / "shop-writer"
    model.mkdir()
    meta = {
        "kind": "describer",
        "backbone": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "reference": True,
        "n_train": 300,
        "valid_metrics": {"valid_rougeL_f1": 0.31234, "valid_n_products": 50.0},
    }
    (model / "causal.json").write_text(json.dumps(meta), encoding="utf-8")
    for name in ("model.safetensors", "neighbours.jsonl", "README.md"):
        (model / name).write_text("{}", encoding="utf-8")
    hub = FakeHub()
    push(model, "acme/shop-writer", api=hub)
    sent = {op.path_in_repo: op for op in hub.calls[-1][1]["operations"]}
    assert sorted(sent) == ["README.md", "causal.json", "model.safetensors", "neighbours.jsonl"]
    card = ModelCard(sent["README.md"].path_or_fileobj.decode("utf-8"))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.license == "apache-2.0" and card.data.library_name == "labelrec"
    assert card.data.eval_results[0].metric_value == 0.3123
    assert "labelrec describe shop-writer < products.jsonl" in card.text
    assert "`neighbours.jsonl` holds the training titles and descriptions" in card.text


def test_push_refuses_what_it_cannot_upload(tmp_path: Path, capsys, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no request leaves this test
    with pytest.raises(ModelError, match="not a labelrec model directory"):
        push(tmp_path, "acme/x", api=FakeHub())
    model = model_folder(tmp_path / "m")
    with pytest.raises(ValueError, match="give it as owner/name"):
        push(model, "just-a-name", api=FakeHub())
    # offline, the real client is refused before any request
    assert main(["push", str(model), "acme/m"]) == 2
    assert "HF_HUB_OFFLINE is set: uploading needs the Hub" in capsys.readouterr().err
    # a Hub that cannot be reached is one line, not the HTTP client's traceback
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a port nothing listens on
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert main(["push", str(model), "acme/m"]) == 2
    err = capsys.readouterr().err
    assert "acme/m: cannot reach the Hub" in err and "Traceback" not in err, err
