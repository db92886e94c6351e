"""Training: end to end against the tag prior, checkpoints and --resume, early stopping, gradient
accumulation and its schedule, length-bucketed batches, hard texts."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config, toy_catalog, write_jsonl

from labelrec.data import bucketed_batches, read_catalog
from labelrec.evaluate import evaluate_scores_on
from labelrec.model import encode_products, load_tokenizer
from labelrec.predict import TagRecommender
from labelrec.train import STATE_FILE, TagTrainer, train

N_TRAIN_BATCHES = 7  # 50 toy train products in batches of 8 (configs/tiny.yaml)


def _history(output: Path) -> list[dict]:
    return json.loads((output / "history.json").read_text(encoding="utf-8"))


def _state(output: Path) -> dict:
    (ckpt,) = sorted((output / "checkpoints").glob("epoch-*"))
    return json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))


# ------------------------------------------------------------------ end to end


def test_trained_model_beats_the_tag_prior(trained_model_dir: Path, toy_data_dir: Path) -> None:
    rec = TagRecommender.load(trained_model_dir)
    train_products = read_catalog(toy_data_dir / "train.jsonl").products
    valid = read_catalog(toy_data_dir / "valid.jsonl").products
    scores, _ = rec.predict_scores(valid)
    model = evaluate_scores_on(scores, valid, rec.vocab, rec.tag_thresholds).metrics

    # Baseline: every product gets the most frequent training tags.
    freq = np.zeros(len(rec.vocab))
    for p in train_products:
        for t in p.tags:
            freq[rec.vocab.index[t]] += 1
    prior = np.tile(freq / len(train_products), (len(valid), 1)).astype(np.float32)
    base = evaluate_scores_on(prior, valid, rec.vocab, 0.5).metrics

    assert model["n_products"] == len(valid)
    assert model["nDCG@3"] > base["nDCG@3"] + 0.15, (model["nDCG@3"], base["nDCG@3"])
    assert model["P@1"] >= base["P@1"]
    assert model["micro_f1"] > base["micro_f1"]
    # What train() stored in the model directory is what evaluation finds.
    info = json.loads((trained_model_dir / "labelrec.json").read_text(encoding="utf-8"))
    assert info["valid_metrics"]["nDCG@3"] == pytest.approx(model["nDCG@3"], abs=1e-4)
    assert info["num_processes"] == 1

    # The signal is the title: a LEGO title gets LEGO tags first.
    (top,) = rec.suggest(["LEGO city police station"], limit=3, threshold=0)
    assert {"brand:Lego", "Toys > Building"} & {s.tag for s in top}


def test_a_decoder_is_tuned_on_the_weights_it_saves(
    tiny_decoder: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """A decoder's weights are stored in bfloat16 (``model.save_dtype`` auto), and training
    measures and tunes the model rounded so: the saved model scores exactly as recorded."""
    from safetensors import safe_open

    out = tmp_path / "decoder"
    cfg = tiny_config(tiny_decoder, toy_data_dir, out, "train.epochs=3", "train.refit=false")
    result = train(cfg, progress=False)
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}
    rec = TagRecommender.load(out)
    valid = read_catalog(toy_data_dir / "valid.jsonl").products
    scores, _ = rec.predict_scores(valid)
    assert np.abs(scores - result.valid_scores).max() < 1e-5  # float32 weights differ by ~1e-3
    found = evaluate_scores_on(scores, valid, rec.vocab, rec.tag_thresholds).metrics
    info = json.loads((out / "labelrec.json").read_text(encoding="utf-8"))
    recorded = info["valid_metrics"]
    for name in ("P@1", "nDCG@3", "micro_f1", "macro_f1"):
        assert recorded[name] == pytest.approx(found[name], abs=1e-6), name
    # trained as LoRA adapters, merged before the tuning to score as stored: still adapters
    assert info["lora_adapters"] is True
    # the card's code for transformers alone gives the tagger's scores (its bias added)
    import re

    card = (out / "README.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(import json.*?)```", card, flags=re.S)
    found: dict = {}
    cwd = os.getcwd()
    os.chdir(out.parent)  # the card names the model by its folder
    try:
        exec(code, found)  # noqa: S102 - the card's own snippet
    finally:
        os.chdir(cwd)
    product = {"title": "Wooden railway set", "description": "50 pieces, ages 3+"}
    expected = TagRecommender.load(out, backend="torch").votes([product]).neural
    # transformers loads the stored bfloat16 (config.json's dtype) and computes in it
    assert np.abs(found["scores"].numpy() - expected).max() < 1e-2


def test_model_directory_contents(trained_model_dir: Path) -> None:
    names = {p.name for p in trained_model_dir.iterdir()}
    expected = {"config.json", "model.safetensors", "labelrec.json", "tags.json"}
    assert expected | {"thresholds.json", "history.json", "checkpoints"} <= names
    assert "tokenizer.json" in names or "vocab.txt" in names
    history = _history(trained_model_dir)
    assert [r["epoch"] for r in history] == list(range(1, 9))
    for key in ("train_loss", "lr", "products_per_s", "valid_nDCG@3", "valid_P@1"):
        assert all(np.isfinite(r[key]) for r in history), key
    assert all(r["train_flops_per_s"] > 0 for r in history)  # counted by torch (labelrec.flops)
    assert "peak_gpu_mem_gb" not in history[0]  # reported on CUDA only
    # The loss goes down and the linear schedule ends at zero.
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)
    # One checkpoint is kept: the last epoch's, plus the best weights.
    ckpts = sorted(p.name for p in (trained_model_dir / "checkpoints").iterdir())
    # tags: the run's vocabulary; run.json: its settings, which --resume checks
    assert ckpts == ["best_trainable.pt", "epoch-8", "run.json", "tags.json"]
    state = _state(trained_model_dir)
    assert state["epoch"] == 8 and state["global_step"] == 8 * N_TRAIN_BATCHES


def test_the_model_directory_lists_its_components(trained_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from labelrec.modeldir import manifest

    info = json.loads((trained_model_dir / "labelrec.json").read_text(encoding="utf-8"))
    found = manifest(trained_model_dir)
    assert info["components"] == found  # written by training, as the directory is
    assert found["tagger"]["format_version"] == info["format_version"] == 1
    assert found["tagger"]["files"][:3] == ["labelrec.json", "tags.json", "thresholds.json"]
    assert found["fusion"] == {"files": ["fusion.json"], "format_version": 2}
    assert found["tfidf"] == {"files": ["tfidf.json", "tfidf.npz"], "format_version": 1}
    assert "generator" not in found and "rules" not in found and "lexical" not in found
    copy = tmp_path / "m"
    shutil.copytree(trained_model_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "rules.yaml").write_text("deny: [Baby]\n", encoding="utf-8")
    (copy / "tfidf.json").write_text("{not json", encoding="utf-8")
    again = manifest(copy)
    assert again["rules"] == {"files": ["rules.yaml"], "format_version": None}
    assert again["tfidf"]["format_version"] is None  # unreadable: shown, not raised


# ------------------------------------------------------------------ resume


class _Kill(RuntimeError):
    pass


class _KillAtEpoch:
    """A tracker that fails like a killed process while logging epoch ``epoch``, before its
    checkpoint is written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def log_params(self, params: dict) -> None:
        pass

    def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if step == self.epoch:
            raise _Kill(f"killed during epoch {step}")


def test_resume_continues_a_killed_run_exactly(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    extra = ("train.epochs=3",)
    whole = train(tiny_config(tiny_backbone, toy_data_dir, tmp_path / "whole", *extra), False)

    cfg = tiny_config(tiny_backbone, toy_data_dir, tmp_path / "killed", *extra)
    with pytest.raises(_Kill):
        train(cfg, tracker=_KillAtEpoch(2), progress=False)
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").glob("epoch-*")] == ["epoch-1"]
    assert not (tmp_path / "killed" / "labelrec.json").exists()
    # What kill -9 during a checkpoint save leaves: a temporary folder, or a folder without its
    # state file. --resume takes the newest complete checkpoint.
    ckpts = tmp_path / "killed" / "checkpoints"
    (ckpts / "epoch-2.tmp").mkdir()
    (ckpts / "epoch-2").mkdir()
    (ckpts / "epoch-2" / "model.safetensors").write_bytes(b"cut short")

    resumed = train(cfg, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert _state(tmp_path / "killed")["global_step"] == 3 * N_TRAIN_BATCHES
    # Same data order, RNG, optimizer and schedule: the same run as without the kill.
    for a, b in zip(whole.history, resumed.history, strict=True):
        for key in ("train_loss", "lr", "valid_nDCG@3", "valid_P@1"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), (a["epoch"], key)
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.metrics["nDCG@3"] == pytest.approx(whole.metrics["nDCG@3"], abs=1e-5)


def test_a_resumed_decoder_run_is_the_uninterrupted_one_to_the_last_bit(
    tiny_decoder: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """The resumed run takes the FLOP count over from its checkpoint: counting its own first
    step would change that step's gradients in their last bits (a decoder's attention under
    torch's FLOP counter)."""
    extra = ("train.epochs=3", "train.refit=false")
    whole = train(tiny_config(tiny_decoder, toy_data_dir, tmp_path / "whole", *extra), False)
    cfg = tiny_config(tiny_decoder, toy_data_dir, tmp_path / "killed", *extra)
    with pytest.raises(_Kill):
        train(cfg, tracker=_KillAtEpoch(2), progress=False)
    resumed = train(cfg, resume=True, progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert resumed.history[-1].get("train_flops_per_s") is not None  # still measured


def test_resume_with_more_epochs_continues(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = train(tiny_config(tiny_backbone, toy_data_dir, out, "train.epochs=1"), progress=False)
    assert len(first.history) == 1
    assert _state(out)["global_step"] == N_TRAIN_BATCHES
    tags_before = (out / "tags.json").read_text(encoding="utf-8")
    # the separator in effect is recorded: a run of a labelrec before the null default (which
    # recorded " > " as given) goes on
    run_file = out / "checkpoints" / "run.json"
    recorded = json.loads(run_file.read_text(encoding="utf-8"))
    assert recorded["lexical.path_separator"] == " > "

    more = train(
        tiny_config(tiny_backbone, toy_data_dir, out, "train.epochs=3"), resume=True, progress=False
    )
    assert [r["epoch"] for r in more.history] == [1, 2, 3]
    # Epoch 1 was not run again (json: NaN metrics compare equal as text).
    assert json.dumps(more.history[0]) == json.dumps(first.history[0])
    assert _state(out)["global_step"] == 3 * N_TRAIN_BATCHES
    assert (out / "tags.json").read_text(encoding="utf-8") == tags_before
    assert more.train_seconds > first.train_seconds


def test_resume_refuses_checkpoints_of_other_settings(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    cfg = tiny_config(tiny_backbone, toy_data_dir, out, "train.epochs=3")
    with pytest.raises(_Kill):
        train(cfg, tracker=_KillAtEpoch(2), progress=False)
    other = tiny_config(tiny_backbone, toy_data_dir, out, "train.epochs=3", "train.lr=0.05")
    lr_differs = r"--resume: the checkpoints in .*\(train\.lr: 0\.005 there, 0\.05 now\)"
    with pytest.raises(ValueError, match=lr_differs):
        train(other, resume=True, progress=False)
    # more epochs are a resume of the same run; so are the same files named otherwise (the
    # products' digest compares them) and settings that do not change what is trained
    import os

    longer = tiny_config(
        f"{tiny_backbone}/",  # type: ignore[arg-type]  # a trailing slash
        toy_data_dir,
        out,
        "train.epochs=4",
        f"data.train={os.path.relpath(toy_data_dir / 'train.jsonl')}",
        "train.eval_batch_size=7",
        "train.log_every=3",
    )
    assert [r["epoch"] for r in train(longer, resume=True, progress=False).history] == [1, 2, 3, 4]


def test_resume_refuses_other_products_and_fewer_epochs_than_done(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """Checkpoints of a catalog since edited (or reviews since added) belong to another run; a
    resume to fewer epochs than the checkpoints hold would save a model its config misdescribes."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_data_dir, data)
    out = tmp_path / "killed"
    with pytest.raises(_Kill):
        train(tiny_config(tiny_backbone, data, out, "train.epochs=3"), False, _KillAtEpoch(3))
    fewer = tiny_config(tiny_backbone, data, out, "train.epochs=1")
    with pytest.raises(ValueError, match="hold 2 epochs, more than train.epochs=1"):
        train(fewer, resume=True, progress=False)
    with (data / "train.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "new", "title": "robot dino", "tags": ["Toys > Robots"]}) + "\n")
    edited = tiny_config(tiny_backbone, data, out, "train.epochs=3")
    with pytest.raises(
        ValueError, match=r"the products \(catalog files or reviews changed, or read otherwise"
    ):
        train(edited, resume=True, progress=False)


def test_a_new_refit_run_does_not_resume_an_earlier_runs_choices(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    from labelrec.modeldir import CHECKPOINTS_DIR, TUNED_FILE, TUNING_DIR

    out = tmp_path / "model"
    first = tiny_config(tiny_backbone, toy_data_dir, out, "train.refit=true", "train.epochs=1")
    train(first, progress=False)
    assert (out / TUNING_DIR / TUNED_FILE).is_file() and (out / CHECKPOINTS_DIR).is_dir()
    (out / TUNING_DIR / "fold-0").mkdir()  # as a run tuned by folds leaves one
    (out / TUNING_DIR / "fold-0" / "labelrec.json").write_text("{}", encoding="utf-8")
    # another run into the same output, killed in its tuning run: the earlier run's tuning
    # (choices, runs) and refit checkpoints are gone, its model stays
    second = tiny_config(
        tiny_backbone, toy_data_dir, out, "train.refit=true", "train.epochs=1", "seed=1"
    )
    with pytest.raises(_Kill):
        train(second, tracker=_KillAtEpoch(1), progress=False)
    assert not (out / TUNING_DIR / TUNED_FILE).exists() and not (out / CHECKPOINTS_DIR).exists()
    assert not (out / TUNING_DIR / "fold-0").exists()
    assert not (out / TUNING_DIR / "labelrec.json").exists()  # the earlier tuning run's model
    assert TagRecommender.load(out).tags
    # --resume finishes the second run: its own tuning run, then its refit
    resumed = train(second, resume=True, progress=False)
    assert resumed.refit is not None
    assert json.loads((out / TUNING_DIR / "run.json").read_text(encoding="utf-8"))["seed"] == 1
    # its choices are not another run's to resume
    third = tiny_config(
        tiny_backbone, toy_data_dir, out, "train.refit=true", "train.epochs=1", "seed=2"
    )
    seed_differs = r"--resume: the tuning run's choices .*\(seed: 1 there, 2 now\)"
    with pytest.raises(ValueError, match=seed_differs):
        train(third, resume=True, progress=False)


def test_a_refit_resumed_with_more_epochs_tunes_on_and_refits_again(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    from labelrec.modeldir import TUNED_FILE, TUNING_DIR

    out = tmp_path / "model"
    # early stopping off, so that the best epoch follows the epochs asked for
    common = ("train.refit=true", "train.early_stopping_patience=0", "train.lr=0.05")
    train(tiny_config(tiny_backbone, toy_data_dir, out, *common, "train.epochs=1"), False)
    tuned = json.loads((out / TUNING_DIR / TUNED_FILE).read_text(encoding="utf-8"))
    assert tuned["planned_epochs"] == 1
    more = tiny_config(tiny_backbone, toy_data_dir, out, *common, "train.epochs=3")
    result = train(more, resume=True, progress=False)
    history = json.loads((out / TUNING_DIR / "history.json").read_text(encoding="utf-8"))
    assert [r["epoch"] for r in history] == [1, 2, 3]  # the tuning run went on from epoch 1
    tuned = json.loads((out / TUNING_DIR / TUNED_FILE).read_text(encoding="utf-8"))
    assert tuned["planned_epochs"] == 3
    assert result.refit is not None
    assert result.refit["epochs"] == tuned["epochs"] == result.best_epoch
    # resumed again with the same count: the tuning run's choices stand, nothing is tuned again
    again = train(more, resume=True, progress=False)
    assert json.loads((out / TUNING_DIR / TUNED_FILE).read_text(encoding="utf-8")) == tuned
    assert again.best_epoch == tuned["epochs"]
    # fewer epochs than the tuning run holds: refused, and the refit's checkpoints stay
    refit_checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    fewer = tiny_config(tiny_backbone, toy_data_dir, out, *common, "train.epochs=2")
    with pytest.raises(ValueError, match="hold 3 epochs, more than train.epochs=2"):
        train(fewer, resume=True, progress=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == refit_checkpoints


def test_an_output_whose_contents_the_run_would_destroy_is_refused(
    tiny_backbone: Path, tiny_decoder: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from labelrec.config import load_config
    from labelrec.train import check_output

    def cfg(output: Path, *describer: str):
        if describer:
            return load_config(None, [*describer, f"output={output}"])
        return tiny_config(tiny_backbone, toy_data_dir, output)

    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_backbone, backbone)
    with pytest.raises(ValueError, match="the folder of the backbone"):
        train(tiny_config(backbone, toy_data_dir, backbone), progress=False)
    describer = ("task=describe", f"describe.backbone={tiny_decoder}")
    kept = tmp_path / "notes"
    kept.mkdir()
    (kept / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="holds files that are not a describer's"):
        check_output(cfg(kept, *describer))
    tagger = tmp_path / "tagger"
    tagger.mkdir()
    (tagger / "labelrec.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="holds a tagging model"):
        check_output(cfg(tagger, *describer))
    written = tmp_path / "describer"
    written.mkdir()
    (written / "causal.json").write_text('{"kind": "describer"}', encoding="utf-8")
    check_output(cfg(written, *describer))  # a describer's own folder: trained again
    generator = tmp_path / "model" / "generator"  # a tagger's tag generator: not a describer
    generator.mkdir(parents=True)
    (generator / "causal.json").write_text('{"kind": "generator"}', encoding="utf-8")
    with pytest.raises(ValueError, match="holds files that are not a describer's"):
        check_output(cfg(generator, *describer))
    check_output(cfg(tmp_path / "new", *describer))
    with pytest.raises(ValueError, match="holds a describer; train the tagger into another"):
        check_output(cfg(written))
    check_output(cfg(kept))  # a tagger adds its files and leaves others alone
    assert (kept / "keep.txt").read_text(encoding="utf-8") == "mine"
    for task in ((), describer):  # a file named as the output stays the file
        with pytest.raises(ValueError, match="keep.txt: is a file; give a directory"):
            check_output(cfg(kept / "keep.txt", *task))


def _copy_of_model(model_dir: Path, output: Path) -> tuple[Path, bytes]:
    """A copy of a trained model (without its checkpoints) and its ``labelrec.json`` bytes."""
    import shutil

    shutil.copytree(model_dir, output, ignore=shutil.ignore_patterns("checkpoints"))
    return output, (output / "labelrec.json").read_bytes()


def test_a_save_cut_short_leaves_the_model_that_was_there(
    trained_model_dir: Path,
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import labelrec.modelcard

    output, before = _copy_of_model(trained_model_dir, tmp_path / "model")

    def killed(*args: object, **kwargs: object) -> None:
        raise _Kill("killed while saving")

    cfg = tiny_config(tiny_backbone, toy_data_dir, output, "train.epochs=1")
    monkeypatch.setattr(labelrec.modelcard, "write_tagger_card", killed)  # the save's last step
    with pytest.raises(_Kill):
        train(cfg, progress=False)
    assert (output / "labelrec.json").read_bytes() == before
    assert TagRecommender.load(output).tags == TagRecommender.load(trained_model_dir).tags
    monkeypatch.undo()
    # --resume saves the model of the run that was cut short; nothing of the save is left over
    resumed = train(cfg, resume=True, progress=False)
    assert TagRecommender.load(output).tags == resumed.vocab.tags
    assert not (output / ".saving").exists()


def test_resume_without_checkpoint_starts_fresh(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_backbone, toy_data_dir, tmp_path / "new", "train.max_steps=2")
    result = train(cfg, resume=True, progress=False)
    assert len(result.history) == 1
    assert _state(tmp_path / "new")["global_step"] == 2
    assert (tmp_path / "new" / "labelrec.json").is_file()


# ------------------------------------------------------------------ loop options


def test_early_stopping(tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    # Learning rates so small that valid nDCG@3 cannot improve after the first epoch.
    cfg = tiny_config(
        tiny_backbone,
        toy_data_dir,
        tmp_path / "es",
        "train.epochs=6",
        "train.lr=1e-12",
        "train.head_lr=1e-12",
        "train.early_stopping_patience=2",
    )
    result = train(cfg, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.best_epoch == 1
    # resumed (a crash after training, in its save): it had stopped, and stays stopped
    resumed = train(cfg, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.best_epoch == 1


def test_a_refit_trains_the_epochs_tuned_without_early_stopping(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    from labelrec.runs import load_splits, refit_products
    from labelrec.train import TunedSettings

    cfg = tiny_config(
        tiny_backbone,
        toy_data_dir,
        tmp_path / "refit",
        "lexical.enabled=false",
        "train.epochs=4",
        "train.early_stopping_patience=1",
    )
    splits = load_splits(cfg)
    merged = dataclasses.replace(splits, train=refit_products(splits), valid=[])
    tuned = TunedSettings(epochs=4, global_threshold=0.5, tag_thresholds={})
    trainer = TagTrainer(cfg, splits=merged, tuned=tuned, progress=False)

    def no_gain(record: dict) -> bool:  # a loss that does not fall: early stopping's case
        trainer.state["bad_epochs"] += 1
        return False

    trainer._track_best = no_gain  # type: ignore[method-assign]
    result = trainer.run()
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.refit["epochs"] == 4


def test_without_valid_products_a_falling_loss_above_one_improves(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """Epochs are ranked by -train_loss there: the first one is the best so far, whatever its
    loss."""
    from labelrec.runs import load_splits

    cfg = tiny_config(
        tiny_backbone,
        toy_data_dir,
        tmp_path / "novalid",
        "lexical.enabled=false",
        "train.epochs=2",
        "train.lr=0.05",
        "train.head_lr=2",  # losses far above 1
    )
    splits = dataclasses.replace(load_splits(cfg), valid=[])
    trainer = TagTrainer(cfg, splits=splits, progress=False)
    trainer.setup()
    trainer.train()
    losses = [h["train_loss"] for h in trainer.state["history"]]
    assert min(losses) > 1, losses
    assert trainer.state["best_epoch"] == 1 + int(losses[1] < losses[0])


def test_gradient_accumulation_and_schedule(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    lr = 5e-3
    cfg = tiny_config(
        tiny_backbone,
        toy_data_dir,
        tmp_path / "acc",
        "train.epochs=2",
        "train.grad_accum=3",
        f"train.lr={lr}",
    )
    result = train(cfg, progress=False)
    updates_per_epoch = -(-N_TRAIN_BATCHES // 3)  # the short last group still updates
    assert _state(tmp_path / "acc")["global_step"] == 2 * updates_per_epoch
    # The scheduler moves once per update, not per batch: halfway after epoch 1 of 2.
    assert result.history[0]["lr"] == pytest.approx(lr / 2, rel=1e-6)
    assert result.history[1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(result.history[-1]["train_loss"])


def test_the_refit_trains_the_median_of_the_folds_best_epochs() -> None:
    from labelrec.train import median_epochs

    assert [median_epochs(e) for e in ([2, 3], [3, 4], [1, 2], [2, 2, 5], [0, 0])] == [
        3,
        4,
        2,
        2,
        1,
    ]


def test_a_last_shorter_accumulation_group_updates_by_a_mean_gradient() -> None:
    from labelrec.train import group_weights

    assert group_weights(7, 3) == [1.0] * 6 + [3.0]  # Accelerate divides each loss by 3
    assert group_weights(8, 3) == [1.0] * 6 + [1.5, 1.5]
    assert group_weights(6, 3) == [1.0] * 6
    assert group_weights(2, 3) == [1.5, 1.5]
    assert group_weights(5, 1) == [1.0] * 5


def test_accumulated_updates_are_mean_gradients(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """Every update, the last shorter group's too, applies the mean gradient of its batches."""
    cfg = tiny_config(
        tiny_backbone,
        toy_data_dir,
        tmp_path / "acc",
        "lexical.enabled=false",
        "train.epochs=1",
        "train.grad_accum=3",
        "train.max_grad_norm=0",
        "train.fused_adamw=false",
        "train.mixed_precision=no",  # float32 gradients, compared to 1e-4
    )
    trainer = TagTrainer(cfg, progress=False)
    trainer.setup()
    head = trainer.accelerator.unwrap_model(trainer.model).head.weight
    per_batch: list[torch.Tensor] = []
    applied: list[tuple[int, torch.Tensor]] = []
    forward_backward = trainer._forward_backward

    def recording(batch: dict, weight: float) -> torch.Tensor:
        rng = torch.get_rng_state()  # the same dropout in both passes
        per_batch.append(torch.autograd.grad(trainer._loss(batch), head)[0].clone())
        torch.set_rng_state(rng)
        return forward_backward(batch, weight)

    trainer._forward_backward = recording  # type: ignore[method-assign]
    inner = trainer.optimizer.optimizer
    step = inner.step

    def recording_step(*args, **kwargs):
        applied.append((len(per_batch), head.grad.clone()))
        return step(*args, **kwargs)

    inner.step = recording_step
    trainer.train()
    assert [n for n, _ in applied] == [3, 6, 7]  # 7 batches: groups of 3, 3 and 1
    done = 0
    for n, grad in applied:
        expected = torch.stack(per_batch[done:n]).mean(0)
        assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7), (done, n)
        done = n


def test_max_steps_and_warmup(tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        tiny_backbone,
        toy_data_dir,
        tmp_path / "steps",
        "train.max_steps=4",
        "train.warmup_ratio=0.5",
        "train.scheduler=constant",
    )
    result = train(cfg, progress=False)
    assert len(result.history) == 1
    assert _state(tmp_path / "steps")["global_step"] == 4
    # constant after 2 warmup updates: the full learning rate at the end.
    assert result.history[0]["lr"] == pytest.approx(cfg.train.lr)


def test_training_goes_on_where_torch_cannot_count_its_flops(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, refusing_flop_counter: None
) -> None:
    """A FLOP counter that raises (torch 2.11 on some attention calls) costs the first step one
    uncounted retry: every update happens once and no FLOP rate is reported."""
    cfg = tiny_config(tiny_backbone, toy_data_dir, tmp_path / "m", "train.max_steps=3")
    result = train(cfg, progress=False)
    assert _state(tmp_path / "m")["global_step"] == 3
    assert "train_flops_per_s" not in result.history[0]
    assert np.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize("decoder", [False, True])
def test_gradient_checkpointing_gives_the_same_training(
    decoder: bool, tiny_backbone: Path, tiny_decoder: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """Recomputing activations in the backward pass saves memory, not results (dropout is 0)."""
    backbone = tiny_decoder if decoder else tiny_backbone
    losses = []
    for flag in ("false", "true"):
        cfg = tiny_config(
            backbone,
            toy_data_dir,
            tmp_path / f"gc-{flag}",
            "train.epochs=2",
            "lora.dropout=0",
            f"train.gradient_checkpointing={flag}",
        )
        trainer = TagTrainer(cfg, progress=False)
        trainer.setup()
        hf = trainer.accelerator.unwrap_model(trainer.model).hf_model
        # transformers' newer name, where a release has it
        on = getattr(hf, "is_activation_checkpointing", None)
        assert (hf.is_gradient_checkpointing if on is None else on) == (flag == "true")
        trainer.train()
        losses.append([r["train_loss"] for r in trainer.state["history"]])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_fused_adamw_is_the_same_update_computed_another_way(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """``train.fused_adamw`` picks torch's fused kernel or its default implementation: the
    training follows the same path up to rounding."""
    losses = []
    for flag in ("true", "false"):
        cfg = tiny_config(
            tiny_backbone, toy_data_dir, tmp_path / f"f-{flag}", f"train.fused_adamw={flag}"
        )
        trainer = TagTrainer(cfg, progress=False)
        trainer.setup()
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        assert {bool(g["fused"]) for g in optimizer.param_groups} == {flag == "true"}
        trainer.train()
        losses.append([r["train_loss"] for r in trainer.state["history"]])
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)  # the same path, up to rounding


def test_adamw_kernel_follows_the_setting_not_the_checkpoint() -> None:
    """A resumed run steps with its own kernel choice: loading a checkpoint's optimizer state
    brings the saving run's, and the fused kernel keeps step counts on the weight's device;
    fp16's gradient scaler and devices without the kernel get torch's default."""
    from labelrec.train import make_adamw, set_adamw_kernel, use_fused_adamw

    assert use_fused_adamw(True, "bf16", "cpu") and use_fused_adamw(True, "no", "cuda")
    assert not use_fused_adamw(True, "fp16", "cuda") and not use_fused_adamw(False, "no", "cpu")
    assert not use_fused_adamw(True, "no", "a-device-without-it")
    for saved_fused, fused in [(False, True), (True, False)]:
        param = torch.nn.Parameter(torch.ones(3))
        param.grad = torch.ones(3)
        saved = make_adamw([{"params": [param], "lr": 0.1}], fused=saved_fused)
        saved.step()
        resumed = make_adamw([{"params": [param], "lr": 0.1}], fused=fused)
        resumed.load_state_dict(saved.state_dict())
        assert bool(resumed.param_groups[0]["fused"]) == saved_fused  # the checkpoint's
        set_adamw_kernel(resumed, fused)
        assert bool(resumed.param_groups[0]["fused"]) == fused
        resumed.step()  # each kernel takes the state as it left it
        assert float(resumed.state[param]["step"]) == 2.0


def test_demo_catalog_when_no_data_given(tiny_backbone: Path, tmp_path: Path) -> None:
    from labelrec.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(
        root / "configs" / "tiny.yaml",
        [
            f"model.backbone={tiny_backbone}",
            f"output={tmp_path / 'demo'}",
            "data.demo_products=60",
            "train.max_steps=2",
        ],
    )
    result = train(cfg, progress=False)
    info = json.loads((tmp_path / "demo" / "labelrec.json").read_text(encoding="utf-8"))
    assert info["train_source"].startswith("labelrec-demo")
    assert result.n_tags > 5 and result.metrics["n_products"] > 0


def test_catalog_with_no_usable_tag_is_an_error(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_backbone, toy_data_dir, tmp_path / "x", "data.min_tag_count=1000")
    with pytest.raises(ValueError, match="min_tag_count"):
        train(cfg, progress=False)


# ------------------------------------------------------------------ batches and texts


def test_bucketed_batches_cover_every_index_once() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 200) for _ in range(1003)]
    batches = bucketed_batches(lengths, batch_size=16, bucket_size=10, seed=5)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= 16 for b in batches)
    assert sum(len(b) < 16 for b in batches) <= -(-len(lengths) // 160)  # one short per bucket
    for b in batches:
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)


def test_bucketed_batches_group_similar_lengths() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(3, 200) for _ in range(960)]

    def mean_padding(batches: list[list[int]]) -> float:
        return float(
            np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
        )

    bucketed = bucketed_batches(lengths, 16, bucket_size=20, seed=0)
    unbucketed = bucketed_batches(lengths, 16, bucket_size=1, seed=0)
    assert mean_padding(bucketed) < 0.3 * mean_padding(unbucketed)
    # One bucket over everything: consecutive slices of the length order.
    whole = bucketed_batches(lengths, 16, bucket_size=1000, seed=0)
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in whole)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_bucketed_batches_deterministic_by_seed() -> None:
    lengths = list(range(300))
    a = bucketed_batches(lengths, 8, 4, seed=3)
    assert a == bucketed_batches(lengths, 8, 4, seed=3)
    assert a != bucketed_batches(lengths, 8, 4, seed=4)


def test_bucketed_batches_small_inputs() -> None:
    assert bucketed_batches([], 8, 4, seed=0) == []
    assert bucketed_batches([5], 8, 4, seed=0) == [[0]]


def test_chinese_emoji_and_huge_description_truncated_by_tokens(tiny_backbone: Path) -> None:
    tok = load_tokenizer(str(tiny_backbone))
    huge = "lego brick set " * 70_000  # ~1 MB
    assert len(huge) > 1_000_000
    titles = ["乐高 城市 警察局 积木", "🚂 hornby train 🎉🎉", "LEGO city police station", ""]
    descs = [huge, "🎁" * 5000, "", "红 蓝"]
    t0 = time.perf_counter()
    ids = encode_products(tok, titles, descs, max_length=32)
    assert time.perf_counter() - t0 < 2.0
    assert all(2 <= len(row) <= 32 for row in ids)
    assert len(ids[0]) == 32
    # The title comes first and is kept whole.
    first = tok.convert_ids_to_tokens(ids[0])
    assert first[1:5] == ["乐", "高", "城", "市"]
    assert tok.convert_ids_to_tokens(ids[2])[1:4] == ["lego", "city", "police"]


def test_training_on_hard_texts(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = toy_catalog(3)
    rows[0]["description"] = "wooden toy " * 100_000  # ~1.1 MB
    rows[1]["title"] = "🚒🚒 乐高 消防车 🔥"
    rows[2]["description"] = "😀" * 10_000
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(rows[:24], data / "train.jsonl")
    write_jsonl(rows[24:], data / "valid.jsonl")
    t0 = time.perf_counter()
    result = train(
        tiny_config(tiny_backbone, data, tmp_path / "out", "train.epochs=1"), progress=False
    )
    assert time.perf_counter() - t0 < 60
    assert np.isfinite(result.history[0]["train_loss"])
    rec = TagRecommender.load(tmp_path / "out")
    out = rec.suggest([{"title": rows[1]["title"], "description": rows[0]["description"]}], 3, 0)
    assert len(out[0]) == 3


def test_a_retrain_in_place_leaves_the_model_whole_until_it_saves_its_own(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "served"
    cfg = tiny_config(tiny_backbone, toy_data_dir, out, "train.epochs=1")
    train(cfg, progress=False)
    before = (out / "labelrec.json").read_bytes()
    with pytest.raises(_Kill):  # a retrain into the same folder, killed before it ends
        train(cfg, tracker=_KillAtEpoch(1), progress=False)
    # The model there is untouched (the run's vocabulary waits with its checkpoints); the save
    # removes labelrec.json first and writes it last, so a polling service never loads a mix.
    assert (out / "labelrec.json").read_bytes() == before
    train(cfg, progress=False)
    assert (out / "labelrec.json").is_file()
    assert not list(out.glob("*.pending"))


# ------------------------------------------------------------------ refit on train + valid


class _Recorder:
    """A tracker that keeps what it was given."""

    def __init__(self) -> None:
        self.params: dict = {}
        self.metrics: list[tuple[dict, int | None]] = []
        self.datasets: list[tuple[str, int]] = []

    def log_params(self, params: dict) -> None:
        assert not set(params) & set(self.params), "a parameter logged twice"
        self.params.update(params)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.append((metrics, step))

    def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None:
        self.datasets.append((name, len(products)))


def test_checkpoints_can_go_once_the_model_is_saved(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    from labelrec.modeldir import CHECKPOINTS_DIR, TUNING_DIR
    from labelrec.predict import TagRecommender

    out = tmp_path / "model"
    cfg = tiny_config(
        tiny_backbone,
        toy_data_dir,
        out,
        "train.refit=true",
        "train.epochs=1",
        "train.keep_checkpoints=false",
    )
    other = out / "other_model" / CHECKPOINTS_DIR  # another run's, inside OUTPUT: not this run's
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("resumable", encoding="utf-8")
    train(cfg, progress=False)
    assert list(out.rglob(CHECKPOINTS_DIR)) == [other]  # neither the refit's nor the tuning run's
    assert (other / "keep.txt").is_file()
    assert (out / TUNING_DIR / "labelrec.json").is_file()  # the tuning run's model stays
    assert TagRecommender.load(out).suggest(["plush bear"], limit=2, threshold=0)[0]


def test_refit_trains_the_final_model_on_train_and_valid(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    from labelrec.modeldir import TUNED_FILE, TUNING_DIR
    from labelrec.train import TunedSettings

    rows = toy_catalog()
    train_rows = [r for r in rows if not r["id"].startswith("p5-")]
    # two valid products carry a tag that train does not have: the refit's vocabulary has it
    kites = [
        {"id": f"k{i}", "title": f"kite {i} outdoor", "description": "", "tags": ["Toys > Kites"]}
        for i in range(2)
    ]
    valid_rows = [r for r in rows if r["id"].startswith("p5-")] + kites
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(train_rows, data / "train.jsonl")
    write_jsonl(valid_rows, data / "valid.jsonl")
    out = tmp_path / "model"
    cfg = tiny_config(
        tiny_backbone,
        data,
        out,
        "train.refit=true",
        "train.epochs=4",
        "train.early_stopping_patience=1",
    )
    tracker = _Recorder()
    result = train(cfg, tracker=tracker, progress=False)

    tuned = TunedSettings.load(out / TUNING_DIR / TUNED_FILE)
    tuning_info = json.loads((out / TUNING_DIR / "labelrec.json").read_text(encoding="utf-8"))
    info = json.loads((out / "labelrec.json").read_text(encoding="utf-8"))
    # the tuning run chose on valid; the final model trained that many epochs on train + valid
    assert tuned.epochs == tuning_info["best_epoch"] >= 1
    assert info["refit"]["train_products"] == len(train_rows) + len(valid_rows)
    assert info["refit"]["epochs"] == tuned.epochs == result.best_epoch
    assert len(result.history) == tuned.epochs
    assert all("valid_nDCG@3" not in r for r in result.history)
    # the recorded valid metrics are the tuning run's (valid is training data of the refit)
    assert info["valid_metrics"] == pytest.approx(tuning_info["valid_metrics"], nan_ok=True)
    assert result.metrics["nDCG@3"] == pytest.approx(tuning_info["valid_metrics"]["nDCG@3"])
    assert result.valid_scores is not None and len(result.valid_products) == len(valid_rows)

    rec = TagRecommender.load(out)
    tuning_rec = TagRecommender.load(out / TUNING_DIR)
    assert "Toys > Kites" in rec.vocab.tags and "Toys > Kites" not in tuning_rec.vocab.tags
    # fusion weights and thresholds carried over; a new tag gets the global threshold
    assert rec.fusion.weight == pytest.approx(tuning_rec.fusion.weight)
    assert rec.fusion.embedding_weight == pytest.approx(tuning_rec.fusion.embedding_weight)
    for tag in tuning_rec.vocab.tags:
        i, j = rec.vocab.index[tag], tuning_rec.vocab.index[tag]
        assert rec.tag_thresholds[i] == pytest.approx(tuning_rec.tag_thresholds[j])
    kite = rec.vocab.index["Toys > Kites"]
    assert rec.tag_thresholds[kite] == pytest.approx(tuned.global_threshold)
    # the refit learned the valid products: a kite title now gets the kite tag first
    scores, _ = rec.score([{"title": "kite 0 outdoor"}])
    assert scores[0, kite] == pytest.approx(scores[0].max())  # tied with its parent "Toys"

    # one parameter set for the tuning run, the refit's own under refit.*, metrics apart
    assert tracker.params["refit.n_train"] == len(train_rows) + len(valid_rows)
    assert tracker.params["train.epochs"] == 4
    assert tracker.params["refit.train.epochs"] == tuned.epochs
    assert tracker.params["output"] == str(out)  # the model's folder, not the tuning run's
    # the model keeps the configuration as given: training it again is the same run
    assert info["config"]["train"]["epochs"] == 4 and info["config"]["output"] == str(out)
    names = {k for m, _ in tracker.metrics for k in m}
    assert "final_nDCG@3" in names and "refit_train_loss" in names
    assert not any(k.startswith("refit_final_") for k in names)
    assert ("refit", len(train_rows) + len(valid_rows)) in tracker.datasets

    # benchmarks/tuning.py rebuilds the tuning run's evidence on valid: the same weights
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import tuning

    report = tmp_path / "tuning.json"
    assert tuning.main(["--model", str(out), "--json", str(report)]) == 0
    row = json.loads(report.read_text())
    assert row["chosen"] == row["recorded"] and row["products"] == len(valid_rows)
    # too few tags for candidates (fusion.CandidateTags): the grid scores every tag
    assert (row["grid_slots"], row["grid_full_rows"]) == (row["tags"], row["products"])

    # --resume after the tuning run: the tuning run is not trained again
    (out / "labelrec.json").unlink()
    stamp = (out / TUNING_DIR / "labelrec.json").stat().st_mtime_ns
    again = train(cfg, resume=True, progress=False)
    assert (out / TUNING_DIR / "labelrec.json").stat().st_mtime_ns == stamp
    assert (out / "labelrec.json").is_file() and again.refit is not None


def test_a_resume_compares_the_tuning_folds_in_effect(tmp_path: Path) -> None:
    """A run tuned on valid resumes as one with train.tuning_folds: auto where auto is one run
    too (no refit), and is refused where auto means two folds."""
    from labelrec.config import load_config
    from labelrec.train import check_same_run, run_settings, write_run_settings

    auto = ["train.tuning_folds=auto"]
    assert run_settings(load_config(None, auto))["train.tuning_folds"] == 2
    saved = tmp_path / "run.json"
    write_run_settings(saved, load_config(None, ["train.refit=false"]))
    check_same_run(saved, load_config(None, ["train.refit=false", *auto]), "the run")
    write_run_settings(saved, load_config(None, ["train.tuning_folds=1"]))
    with pytest.raises(ValueError, match=r"train.tuning_folds: 1 there, 2 now"):
        check_same_run(saved, load_config(None, auto), "the run")


def test_auto_folds_tune_on_valid_past_the_cell_limit(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto tunes by two folds up to AUTO_FOLDS_MAX_CELLS labelled products x tags, on valid
    past it; a number given is kept."""
    import labelrec.train as train_mod
    from labelrec.data import TagVocab
    from labelrec.runs import load_splits, refit_products

    cfg = tiny_config(
        tiny_backbone, toy_data_dir, tmp_path / "m", "train.refit=true", "train.tuning_folds=auto"
    )
    assert cfg.tuning_fold_count == 2
    splits = load_splits(cfg)
    pool = refit_products(splits)
    cells = len(pool) * len(TagVocab.from_products(pool, cfg.data.min_tag_count))
    monkeypatch.setattr(train_mod, "AUTO_FOLDS_MAX_CELLS", cells)
    assert train_mod.settle_auto_folds(cfg, splits) is cfg  # at the limit: two folds
    monkeypatch.setattr(train_mod, "AUTO_FOLDS_MAX_CELLS", cells - 1)
    settled = train_mod.settle_auto_folds(cfg, splits)
    assert settled.train.tuning_folds == 1 and settled.tuning_fold_count == 1
    assert dataclasses.replace(settled, train=cfg.train) == cfg  # nothing else changes
    for given in (2, 3):
        two = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tuning_folds=given))
        assert train_mod.settle_auto_folds(two, splits) is two


def test_tuning_folds_choose_on_every_product_out_of_fold(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelrec.config import ConfigError
    from labelrec.modeldir import TUNED_FILE, TUNING_DIR
    from labelrec.rerank import Reranker
    from labelrec.train import TunedSettings

    fitted: list[tuple] = []
    fit = Reranker.fit.__func__

    def spy(cls, products, vocab, *args, row_counts=None, **kwargs):
        fitted.append((products, vocab, row_counts))
        return fit(cls, products, vocab, *args, row_counts=row_counts, **kwargs)

    class Recording:
        def __init__(self) -> None:
            self.metrics: dict[str, float] = {}
            self.params: dict = {}
            self.datasets: dict[str, int] = {}

        def log_params(self, params: dict) -> None:
            self.params.update(params)

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.metrics.update(metrics)

        def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None:
            self.datasets[name] = len(products)

    import labelrec.train as train_mod
    from labelrec.data import TagVocab, tag_key
    from labelrec.modeldir import VOCAB_FILE

    evaluated: list = []  # the row vocabularies of each evaluation in training

    def evaluation_spy(*args, **kwargs):
        evaluated.append(kwargs.get("row_keys"))
        return evaluate_scores_on(*args, **kwargs)

    from labelrec import metrics

    masks: list = []  # the cells each per-tag threshold tuning counted
    tune_tags, tune_global = metrics.tune_tag_thresholds, metrics.tune_global_threshold

    def thresholds_spy(*args, **kwargs):
        masks.append(kwargs.get("counted"))
        return tune_tags(*args, **kwargs)

    def global_spy(*args, **kwargs):  # every cell counts for the global threshold
        assert kwargs.get("counted") is None
        return tune_global(*args, **kwargs)

    monkeypatch.setattr(Reranker, "fit", classmethod(spy))
    monkeypatch.setattr(train_mod, "evaluate_scores_on", evaluation_spy)
    monkeypatch.setattr(metrics, "tune_tag_thresholds", thresholds_spy)
    monkeypatch.setattr(metrics, "tune_global_threshold", global_spy)
    out = tmp_path / "model"
    # auto: two folds with a refit
    cfg = tiny_config(
        tiny_backbone, toy_data_dir, out, "train.refit=true", "train.tuning_folds=auto"
    )
    tracker = Recording()
    result = train(cfg, tracker=tracker, progress=False)
    # one reranker, fitted on the pooled out-of-fold evidence: the fold runs fit none, and the
    # refit carries it; its tag counts of a product never count the product itself
    assert len(fitted) == 1
    products, vocab, row_counts = fitted[-1]
    assert row_counts is not None and len(row_counts) == len(products)
    for product, counts in zip(products, row_counts, strict=True):
        for tag in product.tags:
            assert counts[vocab.index[tag]] <= vocab.counts[vocab.index[tag]] - 1, tag
    n = sum(1 for _ in (toy_data_dir / "train.jsonl").open()) + sum(
        1 for _ in (toy_data_dir / "valid.jsonl").open()
    )
    tuned = TunedSettings.load(out / TUNING_DIR / TUNED_FILE)
    folds = [
        json.loads((out / TUNING_DIR / f"fold-{i}" / "labelrec.json").read_text()) for i in (0, 1)
    ]
    # each fold's run trained on the other fold and was scored on its own
    assert [f["config"]["train"]["tuning_folds"] for f in folds] == ["auto", "auto"]
    assert len(result.valid_products) == n  # every labelled product, scored out of fold
    assert {p.id for p in result.valid_products} == {
        json.loads(line)["id"]
        for name in ("train.jsonl", "valid.jsonl")
        for line in (toy_data_dir / name).open()
    }
    assert tuned.valid_metrics["tuning_folds"] == 2
    # the out-of-fold evaluation counts a tag new to a product's fold as new: each product's
    # own vocabulary is its fold's
    row_keys = [keys for keys in evaluated if keys is not None]
    assert len(row_keys) == 1 and len(row_keys[0]) == n
    fold_vocabs = [
        frozenset(tag_key(t) for t in TagVocab.load(folder / VOCAB_FILE).tags)
        for folder in (out / TUNING_DIR / "fold-0", out / TUNING_DIR / "fold-1")
    ]
    assert set(row_keys[0]) == set(fold_vocabs) and fold_vocabs[0] != fold_vocabs[1]
    # the pooled thresholds count a cell only where the product's fold knew the tag
    counted = masks[-1]
    assert counted is not None and counted.shape == (n, len(result.vocab))
    folders = [out / TUNING_DIR / f"fold-{i}" for i in (0, 1)]
    fold_tags = [set(TagVocab.load(folder / VOCAB_FILE).tags) for folder in folders]
    which = [fold_vocabs.index(keys) for keys in row_keys[0]]  # the fold that scored each row
    known = np.array([[t in fold_tags[i] for t in result.vocab.tags] for i in which])
    assert np.array_equal(counted, known) and not counted.all()
    assert result.metrics["nDCG@3"] == pytest.approx(tuned.valid_metrics["nDCG@3"])
    # the run's final metrics are the out-of-fold ones; the first fold's own are kept apart
    assert tracker.metrics["final_nDCG@3"] == pytest.approx(tuned.valid_metrics["nDCG@3"])
    assert tracker.metrics["final_tuning_folds"] == 2
    assert tracker.metrics["fold1_final_nDCG@3"] == pytest.approx(
        folds[0]["valid_metrics"]["nDCG@3"]
    )
    # the run's datasets and counts are the catalogs, the first fold's counts kept apart
    n_valid = sum(1 for _ in (toy_data_dir / "valid.jsonl").open())
    assert tracker.datasets["train"] == tracker.params["n_train"] == n - n_valid
    assert tracker.datasets["valid"] == tracker.params["n_valid"] == n_valid
    assert tracker.params["fold1.n_train"] + tracker.params["fold1.n_valid"] == n
    best = sorted(f["best_epoch"] for f in folds)
    assert tuned.epochs == max(1, round((best[0] + best[1]) / 2))
    info = json.loads((out / "labelrec.json").read_text(encoding="utf-8"))
    assert info["refit"]["train_products"] == n and info["refit"]["epochs"] == tuned.epochs
    # each fold's own card names the fold it was trained without and measured on
    card = (out / TUNING_DIR / "fold-1" / "README.md").read_text(encoding="utf-8")
    assert "Training data: `train.jsonl + valid.jsonl (fold 2 of 2 out)`" in card
    assert "## Measured on `train.jsonl + valid.jsonl (fold 2 of 2)`" in card
    # the saved model's figures are the folds' out-of-fold ones, over train + valid
    info = json.loads((out / "labelrec.json").read_text(encoding="utf-8"))
    assert info["valid_source"] == info["train_source"]
    assert info["valid_source"].endswith("train.jsonl + " + str(toy_data_dir / "valid.jsonl"))
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Measured on `train.jsonl + valid.jsonl` out of fold" in card
    rec = TagRecommender.load(out)
    assert rec.fusion.weight == pytest.approx(tuned.lexical["weight"])
    assert rec.suggest(["LEGO city police station"], 3, 0)[0]
    with pytest.raises(ConfigError, match="train.tuning_folds"):
        tiny_config(tiny_backbone, toy_data_dir, out, "train.refit=false", "train.tuning_folds=2")


def test_ridge_share_tuned_on_the_pooled_out_of_fold_votes(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """configs/thorough.yaml's pair: each fold's ridge votes join the pooled evidence, its share
    of the TF-IDF voter is chosen there, and the refit model scores with that share."""
    from labelrec.fusion import RIDGE_GRID
    from labelrec.modeldir import TUNED_FILE, TUNING_DIR
    from labelrec.train import TunedSettings

    out = tmp_path / "model"
    extra = ("train.refit=true", "train.tuning_folds=2", "lexical.ridge=0.3")
    train(tiny_config(tiny_backbone, toy_data_dir, out, *extra), progress=False)
    tuned = TunedSettings.load(out / TUNING_DIR / TUNED_FILE)
    assert tuned.lexical is not None and tuned.lexical["ridge_mix"] in RIDGE_GRID
    assert "ridge_objective" in tuned.valid_metrics  # every fold's ridge votes were pooled
    rec = TagRecommender.load(out)
    assert rec.fusion.ridge_mix == tuned.lexical["ridge_mix"]
    assert rec.fusion.tfidf is not None and rec.fusion.tfidf.ridge_lambda == 0.3
    assert rec.suggest(["LEGO city police station"], 3, 0)[0]
    # benchmarks/tuning.py rebuilds that pooled evidence from the saved runs: the same weights
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import tuning

    report = tmp_path / "tuning.json"
    assert tuning.main(["--model", str(out), "--json", str(report)]) == 0
    row = json.loads(report.read_text())
    assert row["chosen"] == row["recorded"] and row["chosen"]["ridge_mix"] in RIDGE_GRID
    pool = [read_catalog(toy_data_dir / f"{s}.jsonl").products for s in ("train", "valid")]
    assert row["products"] == sum(len(p) for p in pool)  # every product, scored out of fold


UNEXPECTED_POS = "[enforce fail at inline_container.cc:672] . unexpected pos 24192 vs 24084"


@pytest.mark.parametrize("step", ["best", "state", "save"])
def test_a_full_disk_is_named_and_the_model_that_was_there_stays(
    step: str,
    trained_model_dir: Path,
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """torch reports a full disk as its own RuntimeError: `labelrec train` says what it could
    not write and why, without a traceback; the model in OUTPUT stays, and what was half
    written goes."""
    import accelerate

    import labelrec.modeldir
    import labelrec.train
    from labelrec.cli import main
    from labelrec.modeldir import CHECKPOINTS_DIR, SAVING_DIR

    output, before = _copy_of_model(trained_model_dir, tmp_path / "model")
    ckpt = output / CHECKPOINTS_DIR

    def half_written() -> bool:
        return (output / SAVING_DIR).exists() or any(ckpt.glob("*.tmp"))

    def full(*args: object, **kwargs: object) -> None:  # a file begun, then the disk full
        if step == "best":
            Path(args[1]).write_bytes(b"begun")
        elif step == "state":
            Path(args[1]).mkdir(parents=True)
            (Path(args[1]) / "model.safetensors").write_bytes(b"begun")
        else:
            (output / SAVING_DIR / "model.safetensors").write_bytes(b"begun")
        raise RuntimeError(UNEXPECTED_POS)

    if step == "best":  # the first write of the run: the best weights of epoch 1
        monkeypatch.setattr(labelrec.train.torch, "save", full)
        what = f"the best weights {ckpt / labelrec.train.BEST_FILE}.tmp"
    elif step == "state":  # the checkpoint of epoch 1
        monkeypatch.setattr(accelerate.Accelerator, "save_state", full)
        what = f"the checkpoint {ckpt / 'epoch-1.tmp'}"
    else:  # the model's weights, written into the stage
        monkeypatch.setattr(labelrec.train, "save_model", full)
        what = f"the model {output}"
    # the room is measured before what was half written goes
    monkeypatch.setattr(
        labelrec.modeldir, "free_bytes", lambda p: 2**20 if half_written() else 2**40
    )
    argv = ["train", "--config", str(Path(__file__).parents[1] / "configs" / "tiny.yaml")]
    argv += [f"model.backbone={tiny_backbone}", f"output={output}", "train.epochs=1"]
    argv += [f"data.train={toy_data_dir / 'train.jsonl'}", "--no-progress"]
    argv += [f"data.valid={toy_data_dir / 'valid.jsonl'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"labelrec train: error: could not write {what}: its disk is full (1.0 MB free;"
        f" RuntimeError: {UNEXPECTED_POS})"
    ) in err, err
    assert "Traceback" not in err
    assert (output / "labelrec.json").read_bytes() == before
    assert TagRecommender.load(output).tags == TagRecommender.load(trained_model_dir).tags
    assert not half_written()
    # with room on the disk, the same error is torch's own
    monkeypatch.setattr(labelrec.modeldir, "free_bytes", lambda path: 2**40)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        main(argv)


def test_a_model_in_the_output_stays_loadable_until_the_new_one_is_saved(
    trained_model_dir: Path,
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    output, before = _copy_of_model(trained_model_dir, tmp_path / "model")
    # a run killed in its first epoch: the model that was there is still whole
    with caplog.at_level("WARNING", logger="labelrec.train"):
        with pytest.raises(_Kill):
            cfg = tiny_config(tiny_backbone, toy_data_dir, output, "train.epochs=1")
            train(cfg, tracker=_KillAtEpoch(1), progress=False)
    assert f"{output} holds a model: it stays loadable while this run trains" in caplog.text
    assert (output / "labelrec.json").read_bytes() == before
    assert TagRecommender.load(output).tags == TagRecommender.load(trained_model_dir).tags
    # --resume has no checkpoint of this run: it starts again, and its model replaces the old
    resumed = train(cfg, resume=True, progress=False)
    assert (output / "labelrec.json").read_bytes() != before
    assert TagRecommender.load(output).tags == resumed.vocab.tags


def test_a_valid_split_without_a_known_tag_is_refused_by_name(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    valid = write_jsonl(
        [{"id": "v1", "title": "garden hose 20 m", "tags": ["Garden > Hoses"]}],
        tmp_path / "other_valid.jsonl",
    )
    cfg = tiny_config(tiny_backbone, toy_data_dir, tmp_path / "m", f"data.valid={valid}")
    with pytest.raises(ValueError, match=r"other_valid\.jsonl: none of its 1 products has a tag"):
        train(cfg, progress=False)
    assert not (tmp_path / "m" / "labelrec.json").exists()


def test_a_strong_threshold_prior_gives_every_tag_the_global_threshold(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """``train.threshold_prior`` reaches the tuning: shrunk that hard, no tag keeps its own."""
    out = tmp_path / "prior"
    cfg = tiny_config(
        tiny_backbone, toy_data_dir, out, "train.epochs=2", "train.threshold_prior=1e9"
    )
    result = train(cfg, progress=False)
    rec = TagRecommender.load(out)
    global_t = result.metrics["global_threshold"]
    np.testing.assert_allclose(rec.tag_thresholds, global_t, atol=1e-6)
    free = train(tiny_config(tiny_backbone, toy_data_dir, tmp_path / "free", "train.epochs=2"),
                 progress=False)  # fmt: skip
    assert free.metrics["global_threshold"] == global_t  # the same model and global threshold
    assert not np.allclose(TagRecommender.load(tmp_path / "free").tag_thresholds, global_t)


def test_the_same_seed_trains_the_same_model(
    tiny_backbone: Path, toy_data_dir: Path, trained_model_dir: Path, tmp_path: Path
) -> None:
    """Training is reproducible on one machine: the session's model (tests/conftest.py) trained
    again gives the same valid metrics, fusion weights, thresholds and suggestions."""
    again = tmp_path / "again"
    train(tiny_config(tiny_backbone, toy_data_dir, again), progress=False)
    for name in ("fusion.json", "thresholds.json"):
        assert (again / name).read_bytes() == (trained_model_dir / name).read_bytes(), name
    first, second = (
        json.loads((d / "labelrec.json").read_text(encoding="utf-8"))["valid_metrics"]
        for d in (trained_model_dir, again)
    )
    timings = {k for k in first if "seconds" in k or k.endswith("_per_s")}
    assert {k: v for k, v in first.items() if k not in timings} == {
        k: v for k, v in second.items() if k not in timings
    }
    products = [p.title for p in read_catalog(toy_data_dir / "valid.jsonl").products]
    first_rows, second_rows = (
        TagRecommender.load(d).suggest(products, threshold=0) for d in (trained_model_dir, again)
    )
    assert first_rows == second_rows


def test_category_paths_of_a_chinese_catalog_and_tokens_the_backbone_cannot_read(
    tiny_backbone: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`data.hierarchy_separator: ＞` makes its paths the fusion's (a parent at least as high as
    its child); characters outside the backbone's vocabulary, and tags spelt in two cases, are
    warned about."""
    kinds = ["玩具＞积木", "玩具＞拼图", "数码＞手机"]
    brands = ["brand:LEGO", "brand:Lego"]  # one brand, spelt two ways
    rows = [
        {"id": str(i), "title": f"未知字 lego {i}", "tags": [kinds[i % 3], brands[i % 2]]}
        for i in range(24)
    ]
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(rows[:18], data / "train.jsonl")
    write_jsonl(rows[18:], data / "valid.jsonl")
    cfg = tiny_config(
        tiny_backbone,
        data,
        tmp_path / "m",
        "train.max_steps=1",
        "data.hierarchy_separator=＞",
        "train.refit=true",  # a tuning run and a refit: the case variants are warned of once
    )
    with caplog.at_level(logging.WARNING, logger="labelrec.train"):
        train(cfg, progress=False)
    fusion = json.loads((tmp_path / "m" / "fusion.json").read_text(encoding="utf-8"))
    assert fusion["separator"] == ">"
    warned = re.search(r"(\d+)% of the training texts' tokens are unknown", caplog.text)
    assert warned and int(warned.group(1)) >= 60  # 未, 知, 字 and more of each title
    assert caplog.text.count("differ only in case, in 1 group(s) (brand:LEGO / brand:Lego)") == 1


def test_the_collate_pickles_for_spawned_loader_workers() -> None:
    """macOS and Windows start DataLoader workers by spawn: the collate goes by pickle."""
    import pickle

    import numpy as np

    from labelrec.train import make_collate

    collate = pickle.loads(pickle.dumps(make_collate(0, "right")))
    batch = collate([(0, [5, 6, 7], np.array([1.0, 0.0])), (1, [5], np.array([0.0, 1.0]))])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["index"].tolist() == [0, 1] and batch["labels"].shape == (2, 2)


@pytest.mark.parametrize("refit", ["true", "false"])
def test_a_run_without_valid_products_says_nothing_was_tuned(
    tiny_backbone: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, refit: str
) -> None:
    from labelrec.config import load_config
    from labelrec.train import train

    write_jsonl(toy_catalog(1)[:1], tmp_path / "one.jsonl")
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(
        root / "configs" / "tiny.yaml",
        [
            f"model.backbone={tiny_backbone}",
            f"data.train={tmp_path / 'one.jsonl'}",
            f"output={tmp_path / 'm'}",
            "train.epochs=1",
            f"train.refit={refit}",
            "data.valid_fraction=0.01",  # the one product stays in train
        ],
    )
    with caplog.at_level(logging.WARNING, logger="labelrec.train"):
        train(cfg, progress=False)
    warned = [r.getMessage() for r in caplog.records if "no valid products" in r.getMessage()]
    assert len(warned) == 1, warned


def test_scorable_cells_are_the_columns_of_each_rows_fold_by_exact_name() -> None:
    """A fold that knows ``brand:Lego`` scores 0 in the pooled column ``brand:LEGO`` (another
    tag of the catalog's, trained apart): that cell is not scorable."""
    from labelrec.train import scorable_cells

    tags = ["brand:LEGO", "brand:Lego", "Toys"]
    cells = scorable_cells(tags, [["brand:Lego", "Toys"], ["brand:LEGO", "brand:Lego"]], [1, 2])
    assert cells.tolist() == [[False, True, True], [True, True, False], [True, True, False]]
    assert scorable_cells(tags, [], []).shape == (0, 3)


def test_fold_counts_never_count_the_product_scored() -> None:
    """The reranker's tag counts for out-of-fold evidence are its fold's training products'."""
    from labelrec.data import Product
    from labelrec.train import fold_counts, tuning_folds

    words = ["apple", "brick", "crane", "doll", "eagle", "flute", "globe", "harp", "igloo"]
    pool = [
        Product(id=str(i), title=w, tags=["a", "rare"] if i == 0 else ["a"])
        for i, w in enumerate(words)
    ]
    folds = tuning_folds(pool, 3, 0)
    fold_of = {p.id: i for i, (_, held) in enumerate(folds) for p in held}
    held_size = {p.id: len(folds[fold_of[p.id]][1]) for p in pool}
    scored = [p for _, held in folds for p in held]  # pooled fold by fold
    sizes = [len(held) for _, held in folds]
    for product, counts in zip(scored, fold_counts(folds, ["a", "rare"], sizes), strict=True):
        assert counts[0] == len(pool) - held_size[product.id]
        # the rare tag's one product, and those held out with it, never see it counted
        assert counts[1] == (0 if fold_of[product.id] == fold_of["0"] else 1)


def test_recorded_valid_metrics_are_what_eval_measures_with_new_tags(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    """Brands the training products never name are proposed as new tags on valid: the valid
    metrics a run records count them as `labelrec eval` does (not the vocabulary alone)."""
    from labelrec.cli import main
    from labelrec.config import load_config
    from labelrec.train import train

    brands = ["Lego", "Brio", "Hape", "Djeco", "Haba", "Tomy", "Vtech", "Zapf", "Goki", "Janod"]
    things = ["wooden train set", "toy car red", "puzzle 100 pieces", "plush bear", "kite blue"]
    train_rows, valid_rows = [], []
    for i, brand in enumerate(brands * 3):
        row = {
            "id": f"t{i}",
            "title": f"{brand} {things[i % 5]}",
            "tags": ["Toys", f"brand:{brand}"],
        }
        train_rows.append(row)
    for i, brand in enumerate(["Zorblax", "Quimbo", "Frezzle", "Lego", "Brio", "Wumpa"]):
        row = {
            "id": f"v{i}",
            "title": f"{brand} {things[i % 5]}",
            "tags": ["Toys", f"brand:{brand}"],
        }
        valid_rows.append(row)
    write_jsonl(train_rows, tmp_path / "train.jsonl")
    write_jsonl(valid_rows, tmp_path / "valid.jsonl")
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "m"
    cfg = load_config(
        root / "configs" / "tiny.yaml",
        [
            f"model.backbone={tiny_backbone}",
            f"data.train={tmp_path / 'train.jsonl'}",
            f"data.valid={tmp_path / 'valid.jsonl'}",
            f"output={out}",
            "train.epochs=2",
        ],
    )
    recorded = train(cfg, progress=False).metrics
    assert recorded.get("new_tag_share_of_top1", 0) > 0 or recorded.get("new_tag_recall", 0) > 0
    metrics_file = tmp_path / "eval.json"
    args = ["eval", str(out), "--data", str(tmp_path / "valid.jsonl"), "--no-progress"]
    assert main([*args, "--metrics-file", str(metrics_file)]) == 0
    measured = json.loads(metrics_file.read_text(encoding="utf-8"))
    for key in ("P@1", "nDCG@3", "PSP@5", "micro_f1", "new_tag_recall"):
        assert recorded[key] == pytest.approx(measured[key], abs=1e-6), key


def test_training_bars_in_a_log_file_are_a_few_lines(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """stderr that is not a terminal gets a bar's first and last frames, not one for every
    loss reading (set_postfix would redraw at once)."""
    cfg = tiny_config(
        tiny_backbone, toy_data_dir, tmp_path / "m", "train.batch_size=2", "train.log_every=1"
    )
    train(cfg, progress=True)
    err = capsys.readouterr().err
    frames = err.count("\r") + err.count("\n")
    steps = cfg.train.epochs * 30  # more than 30 batches an epoch at batch size 2
    assert "epoch 1/" in err and frames < steps / 3, frames


def test_variants_of_one_title_are_tuned_on_valid_not_split_into_folds(
    tiny_backbone: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Products whose titles differ only by digits (models, sizes) make one group, which no
    two folds can split: auto tunes on valid, a number of folds is refused by name."""
    from conftest import tiny_config

    from labelrec.config import ConfigError
    from labelrec.train import train

    data = tmp_path / "data"
    data.mkdir()
    for name, numbers in (("train", range(20)), ("valid", range(100, 104))):
        rows = [
            {"id": f"{name}{i}", "title": f"Phone case model {i}", "tags": ["Cases", f"b{i % 2}"]}
            for i in numbers
        ]
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = ("train.refit=true", "train.epochs=1")
    with pytest.raises(ConfigError, match=r"train.tuning_folds=2: the 24 products .* have 1 title"):
        train(tiny_config(tiny_backbone, data, tmp_path / "m2", *extra, "train.tuning_folds=2"))
    with caplog.at_level("WARNING", logger="labelrec.train"):
        result = train(
            tiny_config(tiny_backbone, data, tmp_path / "m", *extra, "train.tuning_folds=auto"),
            progress=False,
        )
    assert "too few for two folds: tuning on valid" in caplog.text
    info = json.loads((result.output / "labelrec.json").read_text(encoding="utf-8"))
    assert info["valid_source"].endswith("valid.jsonl")  # tuned on valid, not out of fold


def test_without_lexical_voters_the_folds_tune_on_the_scores_the_model_serves(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """A model without the lexical voters has no fusion: it serves its neural scores as they
    are, a child above its parent at times, and the tuning by folds takes them as they are."""
    from conftest import tiny_config

    from labelrec.taxonomy import ancestor_consistent, parent_index
    from labelrec.train import train

    extra = ("lexical.enabled=false", "train.refit=true", "train.tuning_folds=2")
    result = train(tiny_config(tiny_backbone, toy_data_dir, tmp_path / "m", *extra), progress=False)
    scores = result.valid_scores  # the out-of-fold scores the thresholds were tuned on
    raised = ancestor_consistent(scores, parent_index(result.vocab.tags, " > "))
    assert (raised > scores + 1e-6).any()  # not raised to their children's


def test_a_fold_without_a_known_tag_says_how_to_tune_instead(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    """Products too few for folds: a fold whose held-out products share no tag with its
    training half is no user's valid split; the error says to tune on valid instead."""
    from conftest import tiny_config

    from labelrec.train import train

    data = tmp_path / "data"
    data.mkdir()
    rows = {
        "train": [("alpha kite", "Kites"), ("beta ball", "Balls")],
        "valid": [("gamma doll", "Dolls")],
    }
    for name, items in rows.items():
        lines = [json.dumps({"id": t, "title": t, "tags": [tag]}) + "\n" for t, tag in items]
        (data / f"{name}.jsonl").write_text("".join(lines))
    extra = ("train.refit=true", "train.tuning_folds=2", "train.epochs=1")
    with pytest.raises(
        ValueError, match=r"\(fold \d of 2\): .*train.tuning_folds=1 tunes on valid"
    ):
        train(tiny_config(tiny_backbone, data, tmp_path / "m", *extra), progress=False)
