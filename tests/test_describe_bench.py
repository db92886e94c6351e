"""benchmarks/describe.py: describer against copying the nearest, with an interval; reuse with
other decoding settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import toy_catalog, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import describe as bench  # noqa: E402


def test_rows_with_an_interval_and_reuse_with_other_decoding(
    tiny_decoder: Path, tmp_path: Path, capsys
) -> None:
    rows = [{**r, "description": f"a fine {r['title']} to play with."} for r in toy_catalog(2)]
    folder = tmp_path / "data" / "amazon_in_sales"
    folder.mkdir(parents=True)
    write_jsonl(rows[: len(rows) - 6], folder / "train.jsonl")
    write_jsonl(rows[len(rows) - 6 :], folder / "valid.jsonl")
    common = ["--catalogs", "amazon_in_sales", "--data-root", str(tmp_path / "data")]
    common += ["--output", str(tmp_path / "out"), "--latency-products", "1", "--show", "0"]
    first = tmp_path / "first.json"
    train = ["--backbone", str(tiny_decoder), "--max-train-products", "8", "--batch-size", "4"]
    train += ["--max-target-tokens", "8", "--max-new-tokens", "12", "--eval-products", "4"]
    assert bench.main([*common, *train, "--json", str(first)]) == 0
    row = json.loads(first.read_text(encoding="utf-8"))[0]
    assert row["eval_products"] == 4 and row["empty"] <= 4
    assert row["gain"] == row["rougeL_describer"] - row["rougeL_baseline"]
    assert row["gain_low"] <= row["gain"] <= row["gain_high"]
    assert "gain 95% interval" in capsys.readouterr().out

    again = tmp_path / "again.json"
    reuse = ["--reuse", "--eval-products", "all", "--num-beams", "2", "--max-new-tokens", "8"]
    assert bench.main([*common, *reuse, "--json", str(again)]) == 0
    row2 = json.loads(again.read_text(encoding="utf-8"))[0]
    assert row2["eval_products"] == 6  # every valid product with a description
    assert row2["train_products"] == row["train_products"]  # the same describer, not retrained
    saved = json.loads((tmp_path / "out" / "amazon_in_sales" / "causal.json").read_text())
    assert (saved["num_beams"], saved["max_new_tokens"]) == (1, 12)  # decoding changed in memory
