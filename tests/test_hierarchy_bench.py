"""benchmarks/hierarchy.py: ancestor consistency timed on a catalog's category paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hierarchy  # noqa: E402


def test_times_every_matrix_size_with_and_without_the_kept_plan(tmp_path: Path, capsys) -> None:
    rows = [
        {"id": "1", "title": "hornby train", "tags": ["Hobbies", "Hobbies > Trains"]},
        {
            "id": "2",
            "title": "farm jigsaw",
            "tags": ["Toys", "Toys > Puzzles", "brand:Ravensburger"],
        },
        {"id": "3", "title": "jigsaw", "tags": ["Toys > Puzzles > Jigsaw", "Toys > Puzzles"]},
    ]
    data, report = tmp_path / "train.jsonl", tmp_path / "report.json"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    assert hierarchy.main(["--data", str(data), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert (
        "train.jsonl: 6 tags, 3 with a parent, 3 levels; kept between calls: ancestor_plan" in out
    )
    payload = json.loads(report.read_text())
    assert [r["rows"] for r in payload["rows"]] == list(hierarchy.ROWS)
    assert all(r["kept_us"] > 0 and r["built_us"] > 0 for r in payload["rows"])
