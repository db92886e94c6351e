"""Edges of reading product text, ranking, output files, the promotion rule, config values,
public paths, interaction ids, CPU processes, and the quality benchmark's reuse and peers."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from labelrec.data import MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS
from labelrec.predict import TagRecommender


@pytest.fixture(scope="module")
def rec(trained_model_dir: Path) -> TagRecommender:
    return TagRecommender.load(trained_model_dir)


def _edited(trained_model_dir: Path, tmp_path: Path, change) -> TagRecommender:
    model = Path(shutil.copytree(trained_model_dir, tmp_path / "model"))
    info = json.loads((model / "labelrec.json").read_text(encoding="utf-8"))
    change(info)
    (model / "labelrec.json").write_text(json.dumps(info), encoding="utf-8")
    return TagRecommender.load(model)


def test_texts_are_cut_to_exactly_their_caps(rec) -> None:
    (item,) = rec.items([{"title": "a" * MAX_TITLE_CHARS, "description": "ab " * 10_000}])
    assert item.title == "a" * MAX_TITLE_CHARS
    assert len(item.description) == MAX_DESCRIPTION_CHARS


def test_a_title_behind_many_invisible_characters_is_still_read(rec) -> None:
    padded = "\u200b" * (MAX_TITLE_CHARS + 100) + "Brickton police station"
    assert rec.items([padded])[0].title == "Brickton police station"
    assert rec.suggest([padded], threshold=0) == rec.suggest(
        ["Brickton police station"], threshold=0
    )


def test_a_config_without_description_column_reads_descriptions(trained_model_dir, tmp_path):
    rec = _edited(
        trained_model_dir, tmp_path, lambda i: i["config"]["data"].pop("description_column")
    )
    assert rec.uses_descriptions
    assert rec.items([{"title": "kite", "description": "red kit"}])[0].description == "red kit"


def test_a_model_without_a_recorded_config_reads_descriptions(trained_model_dir, tmp_path):
    rec = _edited(trained_model_dir, tmp_path, lambda info: info.pop("config"))
    assert rec.uses_descriptions
    assert len(rec.suggest(["Brickton police station"], threshold=0)[0]) == 10


def test_a_product_with_a_description_and_no_title_is_tagged(rec) -> None:
    product = {"title": "", "description": "Brickton police station"}
    rows, alone = rec.suggest([product, "kite"], threshold=0), rec.suggest([product], threshold=0)
    assert len(rows[0]) == 10 and [s.tag for s in rows[0]] == [s.tag for s in alone[0]]
    assert [s.score for s in rows[0]] == pytest.approx([s.score for s in alone[0]], abs=1e-5)


def test_include_and_exclude_apply_when_a_batch_holds_a_blank_product(rec) -> None:
    title = "Brickton police station"
    best = rec.suggest([title], limit=1, threshold=0)[0][0].tag
    blank, row = rec.suggest(["", title], threshold=0, exclude=[best])
    assert blank == [] and row and best not in [s.tag for s in row]
    assert row == rec.suggest([title], threshold=0, exclude=[best])[0]
    assert [s.tag for s in rec.suggest(["", title], threshold=0, include=[best])[1]] == [best]


def test_an_exclude_pattern_applies_to_a_model_without_rules(rec) -> None:
    assert rec.rules is None
    scores = np.linspace(1.0, 0.5, len(rec.tags), dtype=np.float32)[None]
    out = rec.rank(scores, limit=3, threshold=0.0, exclude=[rec.tags[0]])[0]
    assert [s.tag for s in out] == rec.tags[1:4]


def test_new_tags_at_the_threshold_and_past_the_vocabulary_size(rec) -> None:
    n = len(rec.tags)
    out = rec.rank(np.zeros((1, n), np.float32), threshold=0.25, new_tags=[{"N": 0.25}])[0]
    assert [(s.tag, s.known) for s in out] == [("N", False)]
    out = rec.rank(np.full((1, n), 0.5, np.float32), n + 5, 0.0, [{"N": 0.1}])[0]
    assert len(out) == n + 1 and out[-1].tag == "N"


def test_clean_text_and_fold_width_cover_every_character() -> None:
    from labelrec.data import clean_text, fold_width

    assert clean_text("\ufeffLEGO\u200c city\u2060 set\u200d") == "LEGO city set"
    full = "".join(chr(c) for c in range(0xFF01, 0xFF5F))
    assert fold_width(full + "\u3000\uff5f") == "".join(map(chr, range(0x21, 0x7F))) + " \uff5f"


@pytest.mark.parametrize("raw, expected", [(3.0, "3"), (True, "bool"), (1.5, "float")])
def test_catalog_ids_from_json_values(tmp_path, raw, expected) -> None:
    from conftest import write_jsonl

    from labelrec.data import CatalogError, read_catalog

    path = write_jsonl([{"id": raw, "title": "kite", "tags": ["Toys"]}], tmp_path / "c.jsonl")
    if expected in ("bool", "float"):
        with pytest.raises(CatalogError, match=f"field 'id': .* an integer, got {expected}"):
            read_catalog(path)
    else:
        assert read_catalog(path).products[0].id == expected


def _catalog(path: Path, n: int) -> Path:
    rows = (json.dumps({"id": f"p{i}", "title": f"toy {i}"}) + "\n" for i in range(n))
    path.write_text("".join(rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_tags_outside_the_vocabulary_are_marked_in_every_format(tmp_path, suffix) -> None:
    import pyarrow.parquet as pq

    from labelrec.batch import score_file
    from labelrec.config import DataConfig

    tags = [{"tag": "Toys", "score": 0.9}, {"tag": "brand:Zorg", "score": 0.6, "known": False}]
    out = tmp_path / f"o{suffix}"
    score_file(_catalog(tmp_path / "in.jsonl", 1), out, DataConfig(), lambda c: [tags for _ in c])
    if suffix == ".csv":
        line = out.read_text(encoding="utf-8").splitlines()[1]
        assert line == "p0,toy 0,Toys|brand:Zorg,0.9000|0.6000,true|false"
        return
    got = (
        json.loads(out.read_text())["tags"]
        if suffix == ".jsonl"
        else pq.read_table(out).to_pylist()[0]["tags"]
    )
    assert [t["known"] for t in got] == [True, False]


def _failing(at_call: int, error: BaseException):
    calls = []

    def scorer(chunk):
        calls.append(1)
        if len(calls) == at_call:
            raise error
        return [[{"tag": "Toys", "score": 0.5}] for _ in chunk]

    return scorer


def test_interrupted_and_failed_runs_leave_the_right_partial_file(tmp_path) -> None:
    import pyarrow.parquet as pq

    from labelrec.batch import partial_path, score_file
    from labelrec.config import DataConfig

    src, out = _catalog(tmp_path / "in.jsonl", 4), tmp_path / "tags.parquet"
    with pytest.raises(KeyboardInterrupt):
        score_file(src, out, DataConfig(), _failing(2, KeyboardInterrupt()), chunk_size=2)
    assert not out.exists() and pq.read_table(partial_path(out)).num_rows == 2
    out = tmp_path / "tags.jsonl"
    partial_path(out).write_text('{"id": "old"}\n', encoding="utf-8")
    with pytest.raises(RuntimeError):
        score_file(src, out, DataConfig(), _failing(1, RuntimeError("down")))
    assert not partial_path(out).exists() and not out.exists()


def test_two_writers_of_one_output_and_a_ctrl_c_during_a_folder_swap(
    tmp_path, monkeypatch: pytest.MonkeyPatch, lock_elsewhere
) -> None:
    import os
    import signal

    from labelrec import modeldir
    from labelrec.batch import score_file
    from labelrec.config import DataConfig

    src, out = _catalog(tmp_path / "in.jsonl", 4), tmp_path / "tags.jsonl"
    with lock_elsewhere(out):
        with pytest.raises(
            modeldir.OutputBusy, match="tags.jsonl: another labelrec is writing it now"
        ):
            score_file(src, out, DataConfig(), _failing(99, RuntimeError()))
        monkeypatch.setenv("RANK", "1")  # a second process of one launch: the first holds it
        with modeldir.output_lock(out):
            pass
    monkeypatch.delenv("RANK")
    with modeldir.output_lock(out), modeldir.output_lock(out):  # the holder takes it again
        pass
    assert not out.exists() and not (tmp_path / "tags.partial.jsonl").exists()
    from labelrec.config import load_config
    from labelrec.train import train

    model = tmp_path / "model"
    with lock_elsewhere(model), pytest.raises(modeldir.OutputBusy, match="model: another"):
        train(load_config(None, [f"output={model}"]), progress=False)  # before the data loads

    # a Ctrl-C between the two renames of a swap arrives once both names are in place
    old, new = tmp_path / "index", tmp_path / ".index.new"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "f").write_text(text, encoding="utf-8")
    replace = os.replace

    def ctrl_c_after(src, dst):
        replace(src, dst)
        if Path(dst).name.endswith(".old"):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", ctrl_c_after)
    with pytest.raises(KeyboardInterrupt):
        modeldir.replace_dir(new, old)
    assert (old / "f").read_text(encoding="utf-8") == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "index" in p.name) == ["index"]

    def refused(src, dst):  # the second rename fails: the old folder goes back
        if Path(src).name == ".index.new2":
            raise OSError(13, "Permission denied")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    (tmp_path / ".index.new2").mkdir()
    with pytest.raises(OSError, match="Permission denied"):
        modeldir.replace_dir(tmp_path / ".index.new2", old)
    assert (old / "f").read_text(encoding="utf-8") == "new"

    # a folder replaced whole is never the current one or one above it
    from labelrec.recommend.index import IndexFileError, check_index_destination

    monkeypatch.chdir(old)
    for folder in (".", ".."):
        with pytest.raises(IndexFileError, match="the current folder or one above it"):
            check_index_destination(folder)
    check_index_destination("sub")  # a folder inside it is fine


def test_decide_edges() -> None:
    from labelrec.mlflow.registry import decide

    assert "1 product with nDCG@3 values" in decide([1.0, 0.6], [0.5, np.nan]).reason
    old = np.full(20, 0.5)
    new = old + 0.25
    assert decide(new, old, margin=0.2).promoted and not decide(new, old, margin=0.25).promoted
    d = decide(new, old, {"tail": 0.25}, {"tail": 0.5}, max_band_drop=0.25)
    assert d.promoted and d.band_drops == {"tail": 0.25}
    d = decide(new, old, {"tail": np.nan, "head": 0.9}, {"tail": 0.3, "head": 0.9})
    assert not d.promoted and d.band_drops == {"head": 0.0}
    assert d.reason == "tail tags measured for one side only"  # nothing says it held


def test_coerce_lists_bools_and_nulls(tmp_path) -> None:
    from labelrec.config import ConfigError, load_config

    for value in ("brand, category", " [brand, category]"):
        assert load_config(None, [f"data.tag_columns={value}"]).data.tag_columns == [
            "brand",
            "category",
        ]
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  tag_columns: [2, 3]\n", encoding="utf-8")
    assert load_config(path).data.tag_columns == ["2", "3"]
    for yaml, message in [
        ("data:\n  tag_columns: [tags, null]\n", "data.tag_columns: may not be null"),
        ("train:\n  head_lr: true\n", "train.head_lr: expected a number"),
        ("train:\n  weight_decay: null\n", "train.weight_decay: may not be null"),
    ]:
        path.write_text(yaml, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_public_text_cuts_every_path_and_leaves_relative_ones() -> None:
    from labelrec.serving import public_text

    assert public_text("copy /srv/a/uk to /srv/b/de") == "copy …/uk to …/de"
    # folders with spaces are cut whole too (the last part ends at a space)
    text = "ModelError: /tmp/srv dir/acme secret/v1 is not a labelrec model directory"
    assert public_text(text) == "ModelError: …/v1 is not a labelrec model directory"
    assert public_text("see ./models/uk and ../x/y") == "see ./models/uk and ../x/y"


def test_interaction_ids_are_stripped_and_blank_or_missing_ids_refused() -> None:
    from labelrec.recommend import Interactions

    read = Interactions.from_records([{"user_id": " u1 ", "product_id": "p1\t"}])
    assert read.user_ids.tolist() == ["u1"] and read.product_ids.tolist() == ["p1"]
    good = {"user_id": "u1", "product_id": "p1"}
    for bad in ("  ", None):
        with pytest.raises(ValueError, match="interaction 1, field 'user_id': empty id"):
            Interactions.from_records([good, {"user_id": bad, "product_id": "p2"}])
    two_bad = [good, {"user_id": "u2", "product_id": ""}, {"user_id": "u3", "product_id": ""}]
    with pytest.raises(ValueError, match="interaction 1, field 'product_id': empty id"):
        Interactions.from_records(two_bad)


def test_cpu_processes_only_without_cuda_and_fsdp_refused_in_every_spelling(monkeypatch):
    import torch

    from labelrec.model import ModelError, cpu_processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_processes() is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for spelling in ("1", "TRUE"):
        monkeypatch.setenv("ACCELERATE_USE_FSDP", spelling)
        with pytest.raises(ModelError, match="cpu2.yaml"):
            cpu_processes()


def test_name_backbone_renames_the_tuning_runs_backbone_too(trained_model_dir, tmp_path):
    from labelrec.modelcard import name_backbone

    model = Path(shutil.copytree(trained_model_dir, tmp_path / "model"))
    tuning = [model / "tuning", model / "tuning" / "fold-0", model / "tuning" / "fold-1"]
    for folder in tuning:  # a tuning run on valid, or one a fold (train.tuning_folds)
        folder.mkdir()
        for name in ("labelrec.json", "README.md"):
            shutil.copy2(model / name, folder / name)
    name_backbone(model, "runs:/abc/backbone")
    for folder in (model, *tuning):
        info = json.loads((folder / "labelrec.json").read_text(encoding="utf-8"))
        assert info["backbone"] == info["config"]["model"]["backbone"] == "runs:/abc/backbone"
        assert "runs:/abc/backbone" in (folder / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def quality():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality as module

    return module


def test_reuse_ignores_auto_unset_retired_settings_and_paths(tmp_path, quality) -> None:
    from labelrec.config import config_to_dict, load_config

    cfg = load_config(None, ["data.valid=/a/valid.jsonl"])
    saved = config_to_dict(cfg)
    saved["model"]["pooling"] = "mean"  # training's choice for `auto`
    saved["data"]["tag_prefixes"] = ["brand:"]  # unset now
    saved["train"]["retired_setting"] = 3  # a setting of an older labelrec
    saved["data"]["valid"] = "/b/valid.jsonl"
    (tmp_path / "labelrec.json").write_text(json.dumps({"config": saved}), encoding="utf-8")
    assert quality.reuse_mismatch(tmp_path, cfg) is None


def test_reuse_compares_tuning_folds_as_resolved(tmp_path, quality) -> None:
    """auto is two folds with a refit: a model tuned on valid does not pass for it, nor one saved
    before the setting existed; with train.refit=false auto is the one run that was saved."""
    from labelrec.config import config_to_dict, load_config

    def saved_with(**train) -> Path:
        saved = config_to_dict(load_config(None))
        saved["train"].update(train)
        if train.get("tuning_folds") is None:
            del saved["train"]["tuning_folds"]
        (tmp_path / "labelrec.json").write_text(json.dumps({"config": saved}), encoding="utf-8")
        return tmp_path

    auto = load_config(None, ["train.tuning_folds=auto"])
    assert "train.tuning_folds: 1 saved, 2 now" in quality.reuse_mismatch(
        saved_with(tuning_folds=1), auto
    )
    assert "1 saved, 2 now" in quality.reuse_mismatch(saved_with(tuning_folds=None), auto)
    assert quality.reuse_mismatch(saved_with(tuning_folds=2), auto) is None
    assert quality.reuse_mismatch(saved_with(tuning_folds="auto"), auto) is None
    one_run = load_config(None, ["train.refit=false"])
    assert quality.reuse_mismatch(saved_with(tuning_folds=1, refit=False), one_run) is None


def test_reuse_settles_auto_on_the_catalog(tmp_path, quality, monkeypatch) -> None:
    """A catalog over the limit of auto trained tuned on valid and saved 1: that run passes
    for auto, as training would do it again (the demo catalog, the limit lowered)."""
    import labelrec.train as train_mod
    from labelrec.config import config_to_dict, load_config

    saved = config_to_dict(load_config(None, ["train.tuning_folds=1", "data.demo_products=300"]))
    (tmp_path / "labelrec.json").write_text(json.dumps({"config": saved}), encoding="utf-8")
    auto = load_config(None, ["data.demo_products=300"])
    assert "1 saved, 2 now" in quality.reuse_mismatch(tmp_path, auto)
    monkeypatch.setattr(train_mod, "AUTO_FOLDS_MAX_CELLS", 0)
    assert quality.reuse_mismatch(tmp_path, auto) is None


def test_recorded_train_seconds_add_every_tuning_run(tmp_path, quality) -> None:
    def run(folder: Path, seconds: float, **info) -> None:
        folder.mkdir(parents=True)
        (folder / "labelrec.json").write_text(json.dumps(info), encoding="utf-8")
        history = [{"epoch_seconds": seconds}]
        (folder / "history.json").write_text(json.dumps(history), encoding="utf-8")

    run(tmp_path / "m", 10.0, refit={"tuning_dir": "tuning"})
    for i, seconds in enumerate((3.0, 4.0)):  # two tuning folds, no run in tuning/ itself
        run(tmp_path / "m" / "tuning" / f"fold-{i}", seconds, valid_metrics={"lexical_seconds": 1})
    assert quality.recorded_train_seconds(tmp_path / "m") == 10.0 + 4.0 + 5.0


class _FakePeer:
    """Perfect valid scores for setting "good" (fastText: 100 epochs), inverted otherwise."""

    fits: list = []
    vocab = None

    def __init__(self, n_threads=1, features="good", epoch=None, split_cjk=False, seed=None):
        self.setting = features if epoch is None else f"{epoch} epochs"
        self.good = features == "good" if epoch is None else epoch == 100
        self.seed = seed

    def fit(self, products, y):
        _FakePeer.fits.append((self.setting, self.seed, len(products)))
        return self

    def predict_scores(self, products):
        y = _FakePeer.vocab.encode(products).toarray().astype(np.float32)
        return y * 0.8 + 0.1 if self.good else 0.9 - y * 0.8


@pytest.fixture
def fake_split(monkeypatch, quality):
    import peers
    from conftest import toy_catalog

    from labelrec.data import Product, TagVocab

    rows = [Product(**r) for r in toy_catalog(4)]
    train, valid, test = (
        [p for p in rows if p.id.startswith(k)] for k in (("p0-", "p1-"), "p2-", "p3-")
    )
    _FakePeer.fits, _FakePeer.vocab = [], TagVocab.from_products(train + valid)
    monkeypatch.setattr(peers, "FEATURE_SETS", ("bad", "good"))
    monkeypatch.setattr(peers, "OmikujiPeer", _FakePeer)
    monkeypatch.setattr(peers, "FastTextPeer", _FakePeer)
    return train, valid, test, _FakePeer.vocab


def test_refit_peers_keeps_the_best_setting_and_seeds_each_run(fake_split, quality) -> None:
    train, valid, test, vocab = fake_split
    rows = quality.refit_peers("toy", train, valid, test, vocab, threads=1, runs=2)
    assert [r.system for r in rows] == ["Omikuji (good)", "fastText (100 epochs)"]
    fits = [(s, seed) for s, seed, n in _FakePeer.fits if n == len(train) + len(valid)]
    assert fits == [("good", None), ("good", None), ("100 epochs", 42), ("100 epochs", 43)]
    assert [seed for s, seed, n in _FakePeer.fits if n == len(train) and "epochs" in s] == [
        42,
        43,
    ] * 2
    (one,) = quality.refit_peers("toy", train, valid, test, vocab, 1, ("Omikuji",), runs=1)
    assert "runs" not in one.notes and "P@1 by run" not in one.notes


def test_refit_peers_rows_give_the_mean_rate_of_the_runs(fake_split, quality, monkeypatch):
    rates, real = iter([100.0, 300.0]), quality.score_system

    def score(*args, **kwargs):
        row = real(*args, **kwargs)
        row.products_per_s = next(rates)
        return row

    monkeypatch.setattr(quality, "score_system", score)
    (row,) = quality.refit_peers("toy", *fake_split, 1, ("Omikuji",), runs=2)
    assert row.products_per_s == pytest.approx(200.0)


def test_an_output_in_a_folder_it_cannot_write_says_why(tmp_path: Path, monkeypatch) -> None:
    """The lock (and the copy written before a swap) sit beside the output: a read-only
    folder is named with what to do."""
    import filelock

    from labelrec import modeldir

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(filelock.FileLock, "acquire", refused)
    with pytest.raises(PermissionError, match="cannot write in its folder .*choose an output"):
        with modeldir.output_lock(tmp_path / "ro" / "model"):
            pass


def test_the_umask_is_read_as_the_process_has_it() -> None:
    import os

    from labelrec.modeldir import _umask

    before = os.umask(0o027)
    try:
        assert _umask() == 0o027
    finally:
        os.umask(before)


def test_a_write_on_a_full_disk_says_so_and_the_staged_folder_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import shutil

    from labelrec import modeldir

    # a path not yet made is measured on the folder that will hold it
    assert modeldir.free_bytes(tmp_path / "a" / "b") == shutil.disk_usage(tmp_path).free

    def room(free: int | None) -> None:
        monkeypatch.setattr(modeldir, "free_bytes", lambda path: free)

    def raised(err: BaseException, what: str = "the weights") -> BaseException:
        with pytest.raises(BaseException) as caught:
            with modeldir.disk_room(tmp_path / "x.pt", what):
                raise err
        return caught.value

    room(5 * 2**20)
    got = raised(RuntimeError("unexpected pos 8 vs 4"))
    assert isinstance(got, modeldir.DiskFull) and got.errno == errno.ENOSPC
    assert isinstance(got.__cause__, RuntimeError)
    assert str(got) == (
        f"could not write the weights {tmp_path / 'x.pt'}: its disk is full (5.0 MB free;"
        " RuntimeError: unexpected pos 8 vs 4)"
    )
    # a refusal, memory, an interrupt, an inner write's own report: as they are
    for err in (
        PermissionError(errno.EACCES, "Permission denied"),
        MemoryError(),
        KeyboardInterrupt(),
        modeldir.DiskFull(errno.ENOSPC, "could not write the inner file"),
    ):
        assert raised(err) is err
    # the system's own "no space" whatever the room it reports (quotas, inodes)
    for free, text in ((2**40, "1048576.0 MB free; "), (None, "")):
        room(free)
        got = raised(OSError(errno.EDQUOT, "Disk quota exceeded"), "the index")
        assert isinstance(got, modeldir.DiskFull)
        assert str(got).endswith(
            f"its disk is full ({text}OSError: [Errno 122] Disk quota exceeded)"
        )
    # with room (or no answer from the system), a writer's error is its own
    for free in (modeldir.FULL_DISK_BYTES, None):
        room(free)
        err = RuntimeError("unexpected pos 8 vs 4")
        assert raised(err) is err
    # a folder written whole: the one there stays; the room is measured before its stage goes
    target = tmp_path / "index"
    target.mkdir()
    (target / "f").write_text("old", encoding="utf-8")
    monkeypatch.setattr(
        modeldir, "free_bytes", lambda path: 2**20 if any(tmp_path.glob(".index.*")) else 2**40
    )
    with pytest.raises(modeldir.DiskFull, match=r"could not write the folder .*index: its disk"):
        with modeldir.staged_dir(target) as stage:
            (stage / "f").write_text("new", encoding="utf-8")
            raise RuntimeError("unexpected pos 8 vs 4")
    assert (target / "f").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
