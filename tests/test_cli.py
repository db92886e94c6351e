"""The ``labelrec`` command: through its installed entry point and through ``cli.main``."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import toy_catalog, write_jsonl

from labelrec.cli import main
from labelrec.data import TagVocab

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
METRIC_KEYS = {"P@1", "P@3", "P@5", "nDCG@1", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5"}
METRIC_KEYS |= {"R@1", "R@3", "R@5", "micro_f1", "macro_f1", "n_products"}


def _entry_point() -> str:
    script = Path(sys.executable).parent / "labelrec"
    found = str(script) if script.is_file() else shutil.which("labelrec")
    if not found:
        pytest.skip("the labelrec console script is not installed (pip install -e .)")
    return found


def _run(args: list[str], stdin: str = "", timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUTF8": "1"}
    return subprocess.run(
        [_entry_point(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=timeout,
    )


def _train_args(backbone: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        TINY,
        f"model.backbone={backbone}",
        f"data.train={data / 'train.jsonl'}",
        f"data.valid={data / 'valid.jsonl'}",
        f"output={out}",
        "--no-progress",
        *extra,
    ]


# ------------------------------------------------------------------ entry point


def test_entry_point_suggest_from_stdin(trained_model_dir: Path) -> None:
    stdin = (
        "LEGO City Police Station\n"
        "\n"
        '{"title": "Hornby model railway train set", "description": "engine"}\n'
        "乐高 城市 警察局 积木 🚓\n"
    )
    proc = _run(["suggest", str(trained_model_dir), "--limit", "3", "--threshold", "0",
                 "--format", "jsonl"], stdin)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["title"] for r in rows] == [
        "LEGO City Police Station",
        "Hornby model railway train set",
        "乐高 城市 警察局 积木 🚓",
    ]
    for row in rows:
        assert len(row["tags"]) == 3
        scores = [t["score"] for t in row["tags"]]
        assert scores == sorted(scores, reverse=True)


def test_entry_point_bad_input_exit_code_2_without_traceback(tmp_path: Path) -> None:
    proc = _run(["train", "--config", TINY, "train.epoch=3"])
    assert proc.returncode == 2
    assert "train.epoch: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["train", "-v", "train.epochs=2"], True),
        (["-v", "train", "train.epochs=2"], True),
        (["train", "train.epochs=2"], False),
        (["feedback", "stats", "--verbose"], True),
    ],
)
def test_verbose_before_or_after_the_verb(argv: list[str], verbose: bool) -> None:
    from labelrec.cli import build_parser

    args, extra = build_parser().parse_known_args(argv)
    assert args.verbose is verbose and not extra
    if args.command == "train":
        assert args.overrides == ["train.epochs=2"]


# ------------------------------------------------------------------ main([...])


def test_train_prints_a_concise_summary(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "model"
    assert main(_train_args(tiny_backbone, toy_data_dir, out, "train.epochs=2")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) <= 3, lines
    assert lines[0].startswith(f"model saved to {out}")
    assert "best epoch" in lines[0] and "of 2" in lines[0]
    assert "nDCG@3" in lines[1] and "P@1" in lines[1] and "10 products" in lines[1]
    assert (out / "labelrec.json").is_file()

    # --resume through the CLI continues the run.
    assert main([*_train_args(tiny_backbone, toy_data_dir, out, "train.epochs=3"), "--resume"]) == 0
    assert "of 3" in capsys.readouterr().out
    assert len(json.loads((out / "history.json").read_text(encoding="utf-8"))) == 3

    # with the refit: where the tuning run is, and whose valid metrics these are
    refit = tmp_path / "refit"
    args = _train_args(tiny_backbone, toy_data_dir, refit, "train.epochs=2", "train.refit=true")
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        lines[0].startswith(f"model saved to {refit}") and "refit on 60 train + valid" in lines[0]
    )
    assert str(refit / "tuning") in lines[0]
    assert lines[1].startswith("valid, tuning run (10 products): ")


def test_eval_writes_metrics_and_results(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    metrics_file, results_file = tmp_path / "m.json", tmp_path / "per_tag.csv"
    code = main(
        [
            "eval",
            str(trained_model_dir),
            "--data",
            str(toy_data_dir / "valid.jsonl"),
            "--metrics-file",
            str(metrics_file),
            "--results-file",
            str(results_file),
        ]
    )
    assert code == 0

    def not_json(constant: str) -> None:
        raise AssertionError(f"{constant} in the metrics file: not JSON")

    metrics = json.loads(metrics_file.read_text(encoding="utf-8"), parse_constant=not_json)
    assert METRIC_KEYS <= set(metrics)
    assert metrics["recall@5_head"] is None  # the toy catalog has no tag of 50 products
    assert metrics["n_products"] == 10
    # eval on the valid split reproduces what training reported with the tuned thresholds.
    text = (trained_model_dir / "labelrec.json").read_text(encoding="utf-8")
    info = json.loads(text, parse_constant=not_json)
    assert info["valid_metrics"]["recall@5_head"] is None
    for key in ("P@1", "nDCG@3", "PSP@5", "micro_f1"):
        assert metrics[key] == pytest.approx(info["valid_metrics"][key], abs=1e-4), key
    printed = capsys.readouterr().out
    assert "nDCG@3" in printed and "micro_f1" in printed
    assert re.search(r"^n_products +10$", printed, re.M)  # a count, not 10.0000
    with results_file.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    tags = TagVocab.load(trained_model_dir / "tags.json").tags
    assert {r["tag"] for r in rows} >= set(tags)
    assert {"tag", "precision", "recall", "f1"} <= set(rows[0])


def test_eval_refuses_a_dash_for_its_files(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for option in ("--metrics-file", "--results-file"):
        args = ["eval", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
        assert main([*args, option, "-"]) == 2
        assert f"{option} -: give a file name" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_results_are_utf8_whatever_the_locale(monkeypatch) -> None:
    """A pipe or file under a cp1252 or ASCII locale is written in UTF-8, as stdin is read."""
    import io

    from labelrec.cli import _utf8_stdout

    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="cp1252")
    monkeypatch.setattr(sys, "stdout", stdout)
    _utf8_stdout()
    print("品牌:乐高\t0.9")
    stdout.flush()
    assert raw.getvalue().decode("utf-8") == "品牌:乐高\t0.9\n"


def test_eval_threshold_changes_f1_not_ranking(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    files = []
    for threshold in ("0.0", "0.99"):
        path = tmp_path / f"m{threshold}.json"
        args = ["eval", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
        assert main([*args, "--threshold", threshold, "--metrics-file", str(path)]) == 0
        files.append(json.loads(path.read_text(encoding="utf-8")))
    low, high = files
    assert low["nDCG@3"] == high["nDCG@3"] and low["P@1"] == high["P@1"]
    assert low["micro_recall"] == 1.0 and high["micro_f1"] < low["micro_f1"] + 1.0
    assert high["micro_recall"] < low["micro_recall"]


def test_eval_limit_caps_the_decisions_not_the_ranking(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    files = []
    for limit in ([], ["--limit", "1"]):
        path = tmp_path / f"m{len(limit)}.json"
        args = ["eval", str(trained_model_dir), "--data", str(toy_data_dir / "valid.jsonl")]
        assert main([*args, "--threshold", "0", *limit, "--metrics-file", str(path)]) == 0
        files.append(json.loads(path.read_text(encoding="utf-8")))
    every, one = files
    assert every["P@1"] == one["P@1"] and every["nDCG@3"] == one["nDCG@3"]
    assert every["micro_recall"] == 1.0  # every tag is a decision at threshold 0
    # one decision a product: its precision is P@1, its recall is that of the first tag
    assert one["micro_precision"] == pytest.approx(one["P@1"])
    assert one["micro_recall"] < every["micro_recall"]


def test_eval_limit_decides_what_suggest_limit_returns(
    trained_model_dir: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """With per-tag thresholds, F1 at --limit is that of suggest's answers: the best of the
    tags that pass their thresholds, not the best tags, then thresholded."""
    from labelrec.data import read_catalog

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    tags = json.loads((model / "tags.json").read_text(encoding="utf-8"))["tags"]
    cut = [2.0 if tag == "Toys" else 0.0 for tag in tags]  # the top tag of most products: never
    (model / "thresholds.json").write_text(json.dumps({"global": 0.0, "per_tag": cut}))
    valid = toy_data_dir / "valid.jsonl"
    metrics_file = tmp_path / "m.json"
    args = ["eval", str(model), "--data", str(valid), "--limit", "1"]
    assert main([*args, "--metrics-file", str(metrics_file), "--no-progress"]) == 0
    measured = json.loads(metrics_file.read_text(encoding="utf-8"))
    products = read_catalog(valid).products
    stdin = "".join(
        json.dumps({"title": p.title, "description": p.description}) + "\n" for p in products
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    assert main(["suggest", str(model), "--limit", "1", "--format", "jsonl"]) == 0
    answers = [json.loads(line)["tags"] for line in capsys.readouterr().out.splitlines()]
    assert all(len(tags) == 1 and tags[0]["tag"] != "Toys" for tags in answers)
    hits = sum(t["tag"] in p.tags for p, tags in zip(products, answers, strict=True) for t in tags)
    decided = sum(len(tags) for tags in answers)
    assert decided > 0
    assert measured["micro_precision"] == pytest.approx(hits / decided)
    assert measured["micro_recall"] == pytest.approx(hits / sum(len(p.tags) for p in products))


def test_suggest_via_main(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("LEGO city\nplush bear\n"))
    assert main(["suggest", str(trained_model_dir), "--limit", "2", "--threshold", "0"]) == 0
    blocks = capsys.readouterr().out.strip().split("\n\n")
    assert len(blocks) == 2
    for block in blocks:
        lines = block.splitlines()
        assert len(lines) == 2
        tag, score = lines[0].split("\t")
        assert tag and 0.0 <= float(score) <= 1.0


def test_suggest_reads_a_byte_order_mark_crlf_and_ids(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    args = ["suggest", str(trained_model_dir), "--format", "jsonl", "--limit", "2"]
    stdin = '\ufeff{"id": 7, "title": "LEGO city"}\r\n \r\nplush bear\r\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # the id comes back to join the rows on, a string as the service and `index` give it
    assert [r.get("id") for r in rows] == ["7", None]
    assert [r["line"] for r in rows] == [1, 3]  # the stdin line each row answers (2: blank)
    assert [r["title"] for r in rows] == ["LEGO city", "plush bear"]
    # the same products without the mark and CR: the same tags
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"title": "LEGO city"}\nplush bear\n'))
    assert main(args) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tags"] for r in again] == [r["tags"] for r in rows]


def test_data_overrides_apply_on_the_models_own_columns(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    info = json.loads((model / "labelrec.json").read_text(encoding="utf-8"))
    info["config"]["data"].update(id_column="sku", title_column="name")
    (model / "labelrec.json").write_text(json.dumps(info), encoding="utf-8")
    source = tmp_path / "named.csv"
    source.write_text("sku,name\na1,LEGO city\na2,\na3,plush bear\n", encoding="utf-8")
    out = tmp_path / "tags.jsonl"
    args = ["index", str(model), "--data", str(source), "--output", str(out), "--no-progress"]
    assert main(args) == 2  # the empty name on line 3
    assert "line 3, field 'name'" in capsys.readouterr().err
    assert main([*args, "data.on_error=skip"]) == 0  # the override keeps sku and name
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["a1", "a3"]


def test_suggest_bad_json_line(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('ok title\n{"title": 3}\n'))
    assert main(["suggest", str(trained_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "<stdin>, line 2, field 'title'" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("{not json\n"))
    assert main(["suggest", str(trained_model_dir)]) == 2
    assert "<stdin>, line 1: invalid JSON" in capsys.readouterr().err
    # zero-width marks alone are no text: a JSON title of them is empty, a line of them blank
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"title": "\u200b"}\n'))
    assert main(["suggest", str(trained_model_dir)]) == 2
    assert "<stdin>, line 1, field 'title': missing, empty" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("\u200b\nlego\n"))
    assert main(["suggest", str(trained_model_dir), "--format", "jsonl"]) == 0
    assert [json.loads(x)["line"] for x in capsys.readouterr().out.splitlines()] == [2]


def _catalog_inputs(tmp_path: Path) -> dict[str, Path]:
    rows = [
        {"id": f"q{i}", "title": r["title"], "description": r["description"]}
        for i, r in enumerate(toy_catalog(2))
    ]
    paths = {"jsonl": write_jsonl(rows, tmp_path / "in.jsonl")}
    with (tmp_path / "in.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "title", "description"])
        writer.writeheader()
        writer.writerows(rows)
    paths["csv"] = tmp_path / "in.csv"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    paths["parquet"] = tmp_path / "in.parquet"
    return paths


@pytest.mark.parametrize("in_fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("out_fmt", ["jsonl", "csv", "parquet"])
def test_index_one_row_per_product(
    trained_model_dir: Path, tmp_path: Path, in_fmt: str, out_fmt: str, capsys
) -> None:
    source = _catalog_inputs(tmp_path)[in_fmt]
    out = tmp_path / f"tags.{out_fmt}"
    args = ["index", str(trained_model_dir), "--data", str(source), "--output", str(out)]
    assert main([*args, "--limit", "2", "--threshold", "0", "--chunk-size", "7"]) == 0
    # the bar's total where the file's size in products is cheap to know (not a CSV's)
    assert ("20/20" in capsys.readouterr().err) == (in_fmt != "csv")
    if out_fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    elif out_fmt == "csv":
        with out.open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(20)]
    for row in rows:
        tags = row["tags"].split("|") if out_fmt == "csv" else row["tags"]
        assert len(tags) == 2
        if out_fmt == "parquet":  # each tag struct says whether the vocabulary has it
            assert all(isinstance(t["known"], bool) for t in tags)


def test_index_refuses_to_write_over_its_input(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = _catalog_inputs(tmp_path)["jsonl"]
    before = source.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(source)
    for out in (source, link):
        args = ["index", str(trained_model_dir), "--data", str(source), "--output", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "the output is the input" in err and "Traceback" not in err
        assert source.read_bytes() == before  # not truncated
    # the input named as the output's partial file, where rows go until the last one
    partial = tmp_path / "tags.partial.jsonl"
    partial.write_bytes(before)
    args = ["index", str(trained_model_dir), "--data", str(partial)]
    assert main([*args, "--output", str(tmp_path / "tags.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "which is the input" in err and "Traceback" not in err
    assert partial.read_bytes() == before and not (tmp_path / "tags.jsonl").exists()


def test_a_failed_index_leaves_the_old_output_and_the_rows_it_scored(
    trained_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = [{"id": f"q{i}", "title": f"Wooden puzzle {i}"} for i in range(6)]
    source = write_jsonl(rows, tmp_path / "in.jsonl")
    out = tmp_path / "tags.jsonl"
    base = ["index", str(trained_model_dir), "--output", str(out), "--no-progress"]
    assert main([*base, "--data", str(source)]) == 0
    before = out.read_bytes()
    assert before.count(b"\n") == 6
    capsys.readouterr()
    # refused at the start: a missing input, a bad first row
    bad_first = tmp_path / "bad_first.jsonl"
    bad_first.write_text('{"id": "x", "title": \n', encoding="utf-8")
    for data in (tmp_path / "missing.jsonl", bad_first):
        assert main([*base, "--data", str(data)]) == 2
        assert out.read_bytes() == before
        assert not (tmp_path / "tags.partial.jsonl").exists()
    # a bad row after two chunks: the old output stays, the chunks scored are kept beside it
    bad_later = tmp_path / "bad_later.jsonl"
    bad_later.write_text(source.read_text() + '{"id": "x", "title": \n', encoding="utf-8")
    capsys.readouterr()
    assert main([*base, "--data", str(bad_later), "--chunk-size", "3"]) == 2
    err = capsys.readouterr().err
    assert "line 7" in err and "Traceback" not in err
    assert "6 products scored before the error are in" in caplog.text  # logged to stderr
    assert out.read_bytes() == before
    assert (tmp_path / "tags.partial.jsonl").read_bytes().count(b"\n") == 6
    # a bad row inside a chunk: the good rows read before it are scored and kept too
    caplog.clear()
    assert main([*base, "--data", str(bad_later), "--chunk-size", "4"]) == 2
    assert "line 7" in capsys.readouterr().err
    assert "6 products scored before the error are in" in caplog.text
    assert (tmp_path / "tags.partial.jsonl").read_bytes().count(b"\n") == 6


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_an_index_on_a_full_disk_says_so_and_keeps_the_old_output(
    trained_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
) -> None:
    """Rows written to /dev/full (every write: ENOSPC) through the partial file's name."""
    rows = [{"id": f"q{i}", "title": f"Wooden puzzle {i}"} for i in range(6)]
    source = write_jsonl(rows, tmp_path / "in.jsonl")
    out = tmp_path / f"tags{suffix}"
    base = ["index", str(trained_model_dir), "--data", str(source), "--output", str(out)]
    assert main([*base, "--no-progress"]) == 0
    before = out.read_bytes()
    partial = tmp_path / f"tags.partial{suffix}"
    partial.symlink_to("/dev/full")
    capsys.readouterr()
    assert main([*base, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"could not write the scored products {partial}: its disk is full (" in err
    assert "No space left on device" in err and "Traceback" not in err
    assert out.read_bytes() == before and not partial.is_symlink()
    # the file's close (parquet's footer) fails as pyarrow says it, errno alone: the file named,
    # the rows written so far kept in the partial file, which the log says may be cut off
    import errno

    from labelrec import batch

    def no_room(self: batch.TagWriter) -> None:
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space")

    monkeypatch.setattr(batch.TagWriter, "close", no_room)
    caplog.clear()
    assert main([*base, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"could not write the scored products {partial}: its disk is full (" in err
    assert "Error writing bytes to file" in err and "Traceback" not in err
    assert out.read_bytes() == before and partial.is_file()
    assert f"6 products scored before the error are in {partial} (not closed: " in caplog.text
    # nothing scored (an empty input): no partial file is left
    partial.unlink()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert main([*base[:3], str(empty), *base[4:], "--no-progress"]) == 2
    assert "its disk is full" in capsys.readouterr().err
    assert out.read_bytes() == before and not partial.exists()


def test_bad_options_and_paths_are_errors_before_the_work(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = str(trained_model_dir)
    # out-of-range options stop at the parser, before a model loads
    for args in (
        ["suggest", model, "--threshold", "2"],
        ["suggest", model, "--threshold", "nan"],
        ["suggest", model, "--limit", "0"],
        ["index", model, "--data", "x.jsonl", "--output", "y.jsonl", "--chunk-size", "0"],
        ["demo", "--products", "-5"],
    ):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2, args
        assert "must be" in capsys.readouterr().err
    a_file = write_jsonl([], tmp_path / "empty.jsonl")
    valid = str(toy_data_dir / "valid.jsonl")
    cases = [
        (["eval", model, "--data", valid, "--metrics-file", str(tmp_path)], "is a directory"),
        (["eval", model, "--data", str(a_file)], "no products to evaluate"),
        (
            ["eval", model, "--data", valid, "--metrics-file", str(a_file / "m.json")],
            "is a file, not a folder",
        ),
        (["train", "--config", TINY, f"output={a_file}"], "is a file"),
        (["train", "--config", str(tmp_path)], "is a directory"),
        (["demo", "--output", str(a_file)], "is a file"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    # a run that fails leaves no folder of its outputs behind
    unmade = tmp_path / "unmade" / "m.json"
    assert main(["eval", model, "--data", str(a_file), "--metrics-file", str(unmade)]) == 2
    assert not unmade.parent.exists()
    capsys.readouterr()
    # --results-file in a folder that does not exist yet: created, as index creates its own
    out = tmp_path / "new" / "per_tag.csv"
    assert main(["eval", model, "--data", valid, "--results-file", str(out)]) == 0
    assert out.read_text().startswith("tag,")


def test_product_index_and_queries_refuse_bad_options_first(
    trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from labelrec.recommend import FaissBackend

    empty = write_jsonl([], tmp_path / "empty.jsonl")
    out = tmp_path / "ix"
    base = ["product-index", str(trained_model_dir), "--catalog", str(empty), "--output", str(out)]
    monkeypatch.setattr(FaissBackend, "available", staticmethod(lambda: False))
    cases = [
        ([*base, "--ann"], "--ann needs faiss-cpu"),
        ([*base, "--no-embeddings", "--embedding-dim", "8"], "--embedding-dim sets"),
        ([*base, "--no-progress"], "no products to index"),
        ([*base, "--no-progress", "--no-generate"], "no products to index"),
        ([*base[:2], "--data", str(empty), *base[4:]], "no products to index"),  # as eval's
        (["search", str(out), "puzzle \udcff"], "the query: not valid UTF-8"),
        (["similar", str(out)], "give --id of an indexed product or --title"),
        (["similar", str(out), "--id", "a", "--title", "b"], "(one of them)"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert not out.exists()  # nothing was written
    with pytest.raises(SystemExit) as exc:  # checked as the arguments are read, as eval's
        main([*base, "--batch-size", "0"])
    assert exc.value.code == 2 and "--batch-size: must be >= 1" in capsys.readouterr().err
    bad_yaml = tmp_path / "latin1.yaml"
    bad_yaml.write_bytes("train:\n  epochs: 1 # caf\xe9\n".encode("latin-1"))
    assert main(["train", "--config", str(bad_yaml)]) == 2
    assert "latin1.yaml: not valid UTF-8" in capsys.readouterr().err


def test_suggest_names_the_line_of_bad_stdin(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    cases = {
        # bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)
        "lego bricks\npuzzle \udcff\udcfe\n": "line 2: not valid UTF-8",
        '{"title": ""}\n': "line 1, field 'title': missing, empty or not a string",
        '{"title": "lego", "description": 5}\n': "line 1, field 'description'",
        # JSON can spell half of a surrogate pair, which no tokenizer takes
        'lego\n{"title": "bad \\ud800 x"}\n': "line 2, field 'title': holds a lone surrogate",
        "{New} LEGO set\n": "line 1: invalid JSON: Expecting property name enclosed in double",
        # classic Mac line ends: a lone carriage return ends a line, as in catalog files
        'lego\r{"title": ""}\r': "line 2, field 'title': missing, empty or not a string",
    }
    for stdin, message in cases.items():
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        assert main(["suggest", str(trained_model_dir)]) == 2
        err = capsys.readouterr().err
        assert f"<stdin>, {message}" in err and "Traceback" not in err, err


def test_suggest_reads_lone_carriage_returns_as_line_ends(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("lego police\rwooden train\r\nkite\n"))
    assert main(["suggest", str(trained_model_dir), "--format", "jsonl", "--limit", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["line"], r["title"]) for r in rows] == [
        (1, "lego police"),
        (2, "wooden train"),
        (3, "kite"),
    ]


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from labelrec import cli

    def writes_to_a_closed_pipe(args: argparse.Namespace) -> int:
        raise BrokenPipeError

    redirected = []
    monkeypatch.setattr(cli, "cmd_demo", writes_to_a_closed_pipe)
    monkeypatch.setattr(cli.os, "dup2", lambda fd, to: redirected.append(to))
    monkeypatch.setattr(sys, "stdout", open(os.devnull, "w"))  # noqa: SIM115
    assert cli.main(["demo"]) == 141
    assert redirected == [sys.stdout.fileno()]


def test_eval_scores_a_part_at_a_time_as_in_one_pass(
    trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labelrec.predict as predict
    from labelrec.data import read_catalog
    from labelrec.evaluate import EvaluationStream, evaluate_scores_on
    from labelrec.predict import TagRecommender

    rec = TagRecommender.load(trained_model_dir)
    products = read_catalog(toy_data_dir / "valid.jsonl").products
    whole, whole_new = rec.score(products)
    parts = list(rec.score_parts(products, 3))
    assert len(products) > 3 and [len(p) for p, _ in parts][:2] == [3, 3]
    chunked = np.concatenate([p for p, _ in parts])
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert [row for _, new in parts for row in new] == whole_new
    with pytest.raises(ValueError, match="size must be at least 1"):
        next(rec.score_parts(products, 0))
    # the command reads the scores three products at a time: the metrics of them all at once
    monkeypatch.setattr(predict, "SCORE_CHUNK", 3)
    added, add = [], EvaluationStream.add

    def counted(self, known, new_tags=None):
        added.append(len(known))
        return add(self, known, new_tags)

    monkeypatch.setattr(EvaluationStream, "add", counted)
    out = tmp_path / "metrics.json"
    valid = str(toy_data_dir / "valid.jsonl")
    assert main(["eval", str(trained_model_dir), "--data", valid, "--metrics-file", str(out)]) == 0
    assert added == [len(p) for p, _ in parts]
    expected = evaluate_scores_on(
        whole,
        products,
        rec.vocab,
        rec.tag_thresholds,
        new_tags=whole_new,
        new_threshold=rec.new_tag_threshold,
    ).metrics
    got = json.loads(out.read_text())
    assert list(got) == list(expected)
    assert got == pytest.approx({k: None if v != v else v for k, v in expected.items()})


def test_demo_writes_catalog(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--output", str(tmp_path / "d"), "--products", "60", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "valid:" in out and "test:" in out
    rows = [
        (tmp_path / "d" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        for name in ("train", "valid", "test")
    ]
    assert sum(map(len, rows)) == 60 and all(rows)
    # too few products for three splits: refused, nothing written (training refuses an empty valid)
    assert main(["demo", "--output", str(tmp_path / "few"), "--products", "2"]) == 2
    assert "split empty; ask for more products" in capsys.readouterr().err
    assert not (tmp_path / "few" / "train.jsonl").exists()


def test_bad_inputs_exit_2_with_file_line_field(
    tiny_backbone: Path,
    trained_model_dir: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    # A catalog row without a title.
    rows = toy_catalog(1)
    rows[2] = {"id": "bad", "description": "no title here", "tags": ["Toys"]}
    bad = write_jsonl(rows, tmp_path / "bad.jsonl")
    code = main(["eval", str(trained_model_dir), "--data", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}, line 3, field 'title'" in err, err
    assert "Traceback" not in err

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(bad, data / "train.jsonl")
    shutil.copy(toy_data_dir / "valid.jsonl", data / "valid.jsonl")
    assert main(_train_args(tiny_backbone, data, tmp_path / "m")) == 2
    assert "line 3, field 'title'" in capsys.readouterr().err

    # Missing files, a bad config value, a bad override, a missing model.
    cases = [
        (["eval", str(trained_model_dir), "--data", str(tmp_path / "missing.jsonl")], "missing"),
        (["train", "--config", str(tmp_path / "none.yaml")], "does not exist"),
        (["train", "--config", TINY, "train.epochs=zero"], "train.epochs: expected int"),
        (["train", "--config", TINY, "train.epochs"], "key=value"),
        (["suggest", str(tmp_path)], "not a labelrec model directory"),
        (["index", str(trained_model_dir), "--data", str(bad), "--output", "x.txt"], ".jsonl"),
        (["index", str(trained_model_dir), "--data", str(bad), "--output", "tags"], "tags: out"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
        assert f"labelrec {args[0]}: error: " in err, err


def test_a_missing_catalog_stops_training_before_its_output_is_locked(
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """A catalog setting naming no file is said with the setting's name before the output's
    lock (and its folder) is made or the backbone loads."""
    train = f"data.train={toy_data_dir / 'train.jsonl'}"
    out = tmp_path / "runs" / "m"
    for extra, setting in [
        ([f"data.train={tmp_path / 'gone.jsonl'}"], "data.train"),
        ([train, f"data.valid={tmp_path / 'gone.jsonl'}"], "data.valid"),
        ([train, f"data.feedback={toy_data_dir / 'valid.jsonl'}",  # holdout: read with it
          f"data.holdout=[{toy_data_dir / 'valid.jsonl'}, {tmp_path / 'gone.jsonl'}]"],
         "data.holdout"),
        ([train, f"data.feedback={tmp_path}"], "not a file (data.feedback)"),
    ]:  # fmt: skip
        args = ["train", "--config", TINY, f"model.backbone={tiny_backbone}", f"output={out}"]
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert setting in err and "Traceback" not in err, err
        assert not (tmp_path / "runs").exists()
    # without data.feedback, data.holdout is not read: a stale one is no reason to stop
    holdout = f"data.holdout=[{tmp_path / 'gone.jsonl'}]"
    args = ["train", "--config", TINY, f"model.backbone={tiny_backbone}", f"output={out}"]
    assert main([*args, train, holdout, "data.valid=null", "train.max_steps=1"]) == 0


def test_version(capsys: pytest.CaptureFixture) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"labelrec {version('labelrec')}"


def test_unknown_command_is_an_argparse_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", TINY, "--no-progress", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err
    assert err.startswith("usage: labelrec train") and "labelrec train: error" in err  # its own


def test_eval_and_index_check_their_settings_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    catalog = tmp_path / "c.jsonl"
    catalog.write_text('{"id": "1", "title": "a", "tags": ["x"]}\n', encoding="utf-8")
    missing_model = str(tmp_path / "no_model")  # never reached: the settings fail first
    output = str(tmp_path / "o.jsonl")
    for verb in (
        ["eval", missing_model, "--data", str(catalog)],
        ["index", missing_model, "--data", str(catalog), "--output", output],
    ):
        assert main([*verb, "data.on_eror=skip"]) == 2
        assert "data.on_eror: unknown key (did you mean data.on_error?" in capsys.readouterr().err
        assert main([*verb, "--config", str(tmp_path / "none.yaml")]) == 2
        assert "none.yaml does not exist" in capsys.readouterr().err
        assert main([*verb, "data.on_error=skp"]) == 2  # a bad value, not only a bad key
        assert "data.on_error: must be 'raise' or 'skip'" in capsys.readouterr().err
        assert main([*verb, "train.epochs=3"]) == 2  # a setting these verbs would ignore
        assert "takes data.* overrides only" in capsys.readouterr().err


def test_a_configs_product_cap_does_not_cut_the_catalog_read(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """configs/llm.yaml caps training files (data.max_products); `index --config` with it
    still tags every product, and an explicit override caps."""
    source = _catalog_inputs(tmp_path)["jsonl"]
    config = tmp_path / "capped.yaml"
    config.write_text("data:\n  max_products: 5\n", encoding="utf-8")
    out = tmp_path / "tags.jsonl"
    args = ["index", str(trained_model_dir), "--data", str(source), "--output", str(out)]
    assert main([*args, "--config", str(config), "--no-progress"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 20
    assert main([*args, "--config", str(config), "--no-progress", "data.max_products=3"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


def test_a_damaged_model_directory_is_one_line_naming_the_file(
    trained_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def damaged(name: str, change) -> str:
        model = tmp_path / name
        shutil.copytree(trained_model_dir, model)
        change(model)
        return str(model)

    def truncate(model: Path) -> None:
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])

    def another_tokenizer(model: Path) -> None:
        from transformers import BertTokenizerFast

        vocab = model / "vocab.txt"
        vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nkite\n", encoding="utf-8")
        (model / "tokenizer.json").unlink()
        BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(model)

    cases = {
        damaged("weights", truncate): "model.safetensors",
        damaged("vocab", another_tokenizer): "another model's tokenizer",
        damaged("tokenizer", lambda m: (m / "tokenizer.json").unlink()): "no tokenizer",
        damaged("fusion", lambda m: (m / "fusion.json").write_text("{")): "fusion.json: not valid",
        damaged("thresholds", lambda m: (m / "thresholds.json").write_text("{")): (
            "thresholds.json: not valid JSON"
        ),
    }
    for model, named in cases.items():
        monkeypatch.setattr(sys, "stdin", io.StringIO("kite\n"))
        assert main(["suggest", model, "--backend", "torch"]) == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_gpu_check_fails_clearly_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: benchmarks/gpu_check.sh would train")
    script = ROOT / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1
    assert "gpu_check: no CUDA GPU is visible to torch" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_unwinds_as_ctrl_c_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A ``kill`` mid-command runs the command's cleanup (``labelrec index`` keeps the rows it
    scored, as on Ctrl-C) and exits 143; the handler is put back afterwards."""
    import signal
    import time

    import labelrec.cli as cli

    cleaned = []

    def killed(args) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the signal arrives first
        finally:
            cleaned.append(True)
        return 0

    monkeypatch.setattr(cli, "cmd_demo", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["demo", "--output", str(tmp_path / "d")]) == 143
    assert cleaned == [True] and "terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_registry_uri_without_a_store_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Run from the wrong folder, `suggest models:/...` says where it looked and leaves no
    empty registry there."""
    db = tmp_path / "mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setattr(sys, "stdin", io.StringIO("kite\n"))
    assert main(["suggest", "models:/labelrec@champion"]) == 2
    assert f"no MLflow store at {db}" in capsys.readouterr().err
    assert not db.exists()


def test_suggest_answers_chunk_by_chunk_and_keeps_what_came_before_a_bad_line(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """stdin is scored a chunk at a time (bounded memory, answers as they come): the answers
    are those of one pass, and a bad line stops the run after the lines before it."""
    from labelrec import cli

    titles = "LEGO city\nplush bear\n\nwooden jigsaw puzzle\nremote control car\nHornby train\n"
    args = ["suggest", str(trained_model_dir), "--format", "jsonl", "--threshold", "0"]
    outputs = []
    for chunk in (1000, 2):
        monkeypatch.setattr(cli, "SUGGEST_CHUNK", chunk)
        monkeypatch.setattr(sys, "stdin", io.StringIO(titles))
        assert main(args) == 0
        outputs.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert outputs[0] == outputs[1]
    assert [row["line"] for row in outputs[1]] == [1, 2, 4, 5, 6]
    monkeypatch.setattr(sys, "stdin", io.StringIO(titles + '{"title": 3}\n'))
    assert main(args) == 2
    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == outputs[0]
    assert "<stdin>, line 7, field 'title'" in captured.err


def test_suggest_names_the_line_of_bytes_that_are_not_utf8_in_any_locale(
    trained_model_dir: Path,
) -> None:
    """Under a locale whose stdin decoding is strict (en_US.UTF-8), a byte that is not UTF-8
    is named by its line too, not by its place in a read buffer."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8:strict"}
    done = subprocess.run(
        [_entry_point(), "suggest", str(trained_model_dir)],
        input=b"LEGO\r\nHornby\r\ncaf\xe9 toy\r\n",
        capture_output=True,
        env=env,
        timeout=180,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "<stdin>, line 3: not valid UTF-8" in err, err
    assert done.stdout.count(b"\n\n") == 1  # the two lines before it were answered


def test_promote_takes_data_overrides_only_as_eval_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # no MLflow store is made for a refused command
    assert main(["promote", "--data", "test.jsonl", "train.epochs=5"]) == 2
    assert "takes data.* overrides only" in capsys.readouterr().err
    assert not (tmp_path / "mlruns.db").exists()


def test_progress_bars_are_rare_in_a_log_file() -> None:
    """A bar on a file or pipe is redrawn at most every 30 s; on a terminal as tqdm likes."""
    import io

    from labelrec.progress import LOG_INTERVAL_S, progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with (
        progress_bar(total=3, file=io.StringIO()) as logged,
        progress_bar(total=3, file=Terminal()) as live,
    ):
        assert logged.mininterval == logged.maxinterval == LOG_INTERVAL_S
        assert live.mininterval < 1 and live.maxinterval < LOG_INTERVAL_S


def test_quiet_and_verbose_before_or_after_the_verb(capsys) -> None:
    from labelrec.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["-q", "eval", "m", "--data", "d"]).quiet
    assert parser.parse_args(["eval", "m", "--data", "d", "-q"]).quiet
    assert not parser.parse_args(["eval", "m", "--data", "d"]).quiet
    with pytest.raises(SystemExit):
        main(["-q", "eval", "m", "--data", "d", "-v"])
    assert "give one" in capsys.readouterr().err
