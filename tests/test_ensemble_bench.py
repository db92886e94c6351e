"""benchmarks/ensemble.py: two models' scores mixed with a weight tuned on the other half."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ensemble  # noqa: E402


def test_aligned_moves_columns_by_tag_name() -> None:
    scores = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=np.float32)
    out = ensemble.aligned(scores, ["a", "b", "c"], ["c", "x", "a"])
    np.testing.assert_allclose(out, [[0.3, 0.0, 0.1], [0.6, 0.0, 0.4]], rtol=1e-6)


def test_the_weight_goes_to_the_model_that_ranks_right() -> None:
    y = sp.csr_matrix(np.eye(4, dtype=np.int8))  # product i has tag i
    right = np.eye(4, dtype=np.float32)
    wrong = np.roll(np.eye(4, dtype=np.float32), 1, axis=1)
    # above 0.5 the second model's ranking wins; of equal weights the smallest is kept
    assert ensemble.choose_weight(y, wrong, right) == 0.55
    assert ensemble.choose_weight(y, right, wrong) == 0.0


def test_a_model_mixed_with_itself_scores_as_it_does_alone(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "ensemble.json"
    valid = toy_data_dir / "valid.jsonl"
    argv = ["--models", str(trained_model_dir), str(trained_model_dir), "--data", str(valid)]
    assert ensemble.main([*argv, "--json", str(out)]) == 0
    assert "| mixed (weight of the second tuned on the other half) |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    alone, mixed = (
        result["rows"][k]
        for k in (str(trained_model_dir), "mixed (weight of the second tuned on the other half)")
    )
    assert mixed == pytest.approx(alone, abs=1e-6)
    assert all(abs(b["mean_diff"]) < 1e-9 for b in result["paired"].values())
    info = json.loads((trained_model_dir / "labelrec.json").read_text())
    recorded = result["models"][str(trained_model_dir)]  # what the model was, beside its row
    assert recorded["backbone"] == info["backbone"] and "train_source" in recorded
    assert recorded["valid_metrics"]["P@1"] == info["valid_metrics"]["P@1"]


def test_a_refit_model_is_refused(trained_model_dir: Path, toy_data_dir: Path, tmp_path) -> None:
    refit = tmp_path / "refit"
    shutil.copytree(trained_model_dir, refit, ignore=shutil.ignore_patterns("checkpoints"))
    info = json.loads((refit / "labelrec.json").read_text())
    (refit / "labelrec.json").write_text(json.dumps({**info, "refit": True}))
    valid = str(toy_data_dir / "valid.jsonl")
    with pytest.raises(SystemExit, match="train.refit=false"):
        ensemble.main(["--models", str(trained_model_dir), str(refit), "--data", valid])
