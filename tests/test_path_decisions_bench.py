"""benchmarks/path_decisions.py: three rules for a path under a parent that missed its own
threshold, on a trained model and held-out products."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import path_decisions  # noqa: E402

from labelrec.data import TagVocab  # noqa: E402
from labelrec.modeldir import THRESHOLDS_FILE  # noqa: E402


def test_the_three_rules_on_a_parent_held_back(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys
) -> None:
    model = shutil.copytree(trained_model_dir, tmp_path / "model")
    vocab = TagVocab.load(model / "tags.json")
    thresholds = json.loads((model / THRESHOLDS_FILE).read_text())
    per_tag = np.zeros(len(vocab))
    per_tag[vocab.index["Toys"]] = 2.0  # no product passes Toys: its paths would pass alone
    thresholds["per_tag"] = per_tag.tolist()
    (model / THRESHOLDS_FILE).write_text(json.dumps(thresholds))
    report = tmp_path / "rows.json"
    args = [str(model), str(toy_data_dir / "valid.jsonl"), "--json", str(report)]
    assert path_decisions.main(args) == 0
    alone, whole, added = json.loads(report.read_text())
    assert alone["paths without their parent"] > 0
    assert whole["paths without their parent"] == added["paths without their parent"] == 0
    assert whole["decisions"] < alone["decisions"] < added["decisions"]
    assert "| a path only under a decided parent (labelrec) |" in capsys.readouterr().out
