"""Two-process DDP on CPU (gloo) through ``accelerate launch``.

accelerate 1.15 starts several CPU processes only through its multi-GPU launcher (torchrun):
``accelerate launch --num_processes 2 --cpu`` (and a MULTI_CPU config file) runs a single process
unless MPI is set up. labelrec asks Accelerate for the CPU when there is no CUDA, so
``accelerate launch --multi_gpu --num_processes 2`` on a CPU machine gives two gloo processes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from labelrec.data import read_catalog
from labelrec.evaluate import evaluate_scores_on
from labelrec.predict import TagRecommender
from labelrec.train import STATE_FILE

ROOT = Path(__file__).resolve().parents[1]
LR = 5e-3  # configs/tiny.yaml


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    # torchelastic's folders go into a temporary folder of the launch's, removed after it
    scratch = tempfile.mkdtemp(prefix="labelrec-ddp-")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TMPDIR": scratch}
    env.pop("ACCELERATE_USE_CPU", None)  # labelrec must choose the CPU itself
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    cmd += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    try:
        return subprocess.run(
            [*cmd, "-m", "labelrec.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=ROOT,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.slow
def test_two_processes_with_the_refit_train_as_one_group(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """``train.refit: true`` (the default): the tuning run and the refit are each one gloo
    group of two processes, not two single-process runs writing the same folder."""
    out = tmp_path / "ddp"
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--no-progress"]
    args += [f"model.backbone={tiny_backbone}", f"output={out}", "train.refit=true"]
    args += [f"data.train={toy_data_dir / 'train.jsonl'}"]
    args += [f"data.valid={toy_data_dir / 'valid.jsonl'}", "train.epochs=2"]
    proc = _launch(args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert proc.stdout.count("model saved to") == 1, proc.stdout
    for folder in (out, out / "tuning"):
        info = json.loads((folder / "labelrec.json").read_text(encoding="utf-8"))
        assert info["num_processes"] == 2, folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lora", "kind"), [("true", "encoder"), ("false", "encoder"), ("true", "decoder")]
)
def test_two_process_training_gathers_every_valid_product(
    lora: str,
    kind: str,
    tiny_backbone: Path,
    tiny_decoder: Path,
    toy_data_dir: Path,
    tmp_path: Path,
) -> None:
    """A decoder also merges its LoRA weights and rounds them to bfloat16 before the last
    valid pass, as saved (``model.save_dtype``)."""
    out = tmp_path / "ddp"
    backbone = tiny_backbone if kind == "encoder" else tiny_decoder
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--no-progress"]
    args += [f"model.backbone={backbone}", f"output={out}"]
    args += [f"data.train={toy_data_dir / 'train.jsonl'}"]
    args += [f"data.valid={toy_data_dir / 'valid.jsonl'}"]
    # 10 valid products in batches of 3 -> 3,3,3,1: uneven batches across the two processes.
    args += ["train.epochs=3", "train.eval_batch_size=3", f"lora.enabled={lora}"]
    proc = _launch(args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    # One summary (main process only) and one model directory.
    assert proc.stdout.count("model saved to") == 1, proc.stdout
    # the model and the output's lock, which the main process held for both
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ddp.lock", "ddp"]
    info = json.loads((out / "labelrec.json").read_text(encoding="utf-8"))
    assert info["num_processes"] == 2

    # Each process ran 4 of the 7 batches per epoch (the odd one repeated to even out).
    ckpt = out / "checkpoints" / "epoch-3"
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    assert state["global_step"] == 3 * 4
    assert {p.name for p in ckpt.glob("random_states_*")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }
    # The learning rate follows the schedule of the whole run (not twice as fast).
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[0]["lr"] == pytest.approx(LR * 2 / 3, rel=1e-6)
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)

    # Valid metrics were computed on every valid product exactly once: a single-process
    # evaluation of the saved model gives the same numbers.
    valid = read_catalog(toy_data_dir / "valid.jsonl").products
    rec = TagRecommender.load(out)
    scores, _ = rec.predict_scores(valid)
    assert np.all(scores.max(axis=1) > 0)
    local = evaluate_scores_on(scores, valid, rec.vocab, rec.tag_thresholds).metrics
    gathered = info["valid_metrics"]
    assert gathered["n_products"] == len(valid)
    for key in ("P@1", "P@3", "nDCG@3", "PSP@5", "micro_f1", "macro_f1"):
        assert gathered[key] == pytest.approx(local[key], abs=1e-4), key


@pytest.mark.slow
def test_a_describer_trained_on_two_processes_is_saved_and_reported_once(
    tiny_decoder: Path, tmp_path: Path
) -> None:
    from conftest import toy_catalog, write_jsonl

    rows = [dict(r, description=f"a great {r['title']} for kids.") for r in toy_catalog(2)]
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    out = tmp_path / "describer"
    args = ["train", "--config", str(ROOT / "configs" / "describe.yaml"), "--no-progress"]
    args += [f"describe.backbone={tiny_decoder}", f"data.train={train}", f"output={out}"]
    args += ["describe.max_steps=2", "describe.batch_size=4", "describe.eval_products=0"]
    args += ["describe.max_target_tokens=12", "describe.max_new_tokens=12"]
    proc = _launch(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("describer saved to") == 1, proc.stdout
    # each epoch logged once (the main process's), one folder, nothing left beside it
    assert proc.stderr.count("epoch 1: loss") == 1, proc.stderr[-3000:]
    assert (out / "causal.json").is_file()
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == [".describer.lock"]  # the output's lock, no temporary folder
