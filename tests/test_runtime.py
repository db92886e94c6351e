"""ONNX Runtime inference (labelrec/runtime.py): same scores as torch, and when it is used."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401  (required: its absence fails the tests)
import pytest

from labelrec import runtime
from labelrec.model import ModelError
from labelrec.predict import TagRecommender

PRODUCTS = [
    {"title": "LEGO City Police Station", "description": ""},
    {"title": "wooden jigsaw puzzle 1000 pieces", "description": "a long " * 40},
    {"title": "乐高 城市 警察局 积木"},
    {"title": "red"},
    {"title": "Hornby model railway train set with engine carriage smoke and sound 3 years"},
]


def test_onnx_scores_and_embeddings_equal_torch(trained_model_dir: Path) -> None:
    onnx = TagRecommender.load(trained_model_dir, backend="onnx")
    torch_ = TagRecommender.load(trained_model_dir, backend="torch")
    assert (onnx.backend, torch_.backend) == ("onnx", "torch")
    # Different lengths in one padded batch, then one product at a time.
    for batch_size in (64, 1):
        onnx.batch_size = torch_.batch_size = batch_size
        s1, e1 = onnx.predict_scores(PRODUCTS, with_embeddings=True)
        s2, e2 = torch_.predict_scores(PRODUCTS, with_embeddings=True)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
        np.testing.assert_allclose(e1, e2, atol=1e-5)
    for a, b in zip(onnx.suggest(PRODUCTS, 5), torch_.suggest(PRODUCTS, 5), strict=True):
        assert [s.tag for s in a] == [s.tag for s in b]
        np.testing.assert_allclose([s.score for s in a], [s.score for s in b], atol=1e-5)


def test_the_onnx_export_hides_its_own_warnings_only(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export's tracer and exporter notes are not shown; a warning of other code while it
    runs (another thread's: the filters are the process's) still is."""
    import warnings

    import torch

    export = torch.onnx.export

    def export_beside_other_code(*args, **kwargs):
        warnings.warn("a host's warning", UserWarning, stacklevel=1)
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export_beside_other_code)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        TagRecommender.load(trained_model_dir, backend="onnx")
    import torch.jit

    assert "a host's warning" in [str(w.message) for w in seen]
    assert not [w for w in seen if issubclass(w.category, torch.jit.TracerWarning)]
    assert not [w for w in seen if "torch/onnx" in w.filename.replace("\\", "/")]
    assert not [w for w in seen if "legacy TorchScript" in str(w.message)]


def test_auto_picks_onnx_on_cpu_and_torch_when_it_cannot(trained_model_dir: Path) -> None:
    assert TagRecommender.load(trained_model_dir).backend == "onnx"
    assert TagRecommender.load(trained_model_dir, quantize=True).backend == "torch"
    with pytest.raises(ModelError, match="int8"):
        TagRecommender.load(trained_model_dir, quantize=True, backend="onnx")
    with pytest.raises(ModelError, match="unknown backend 'tensorrt'"):
        TagRecommender.load(trained_model_dir, backend="tensorrt")
    model = TagRecommender.load(trained_model_dir, backend="torch").model
    assert "cuda" in runtime.onnx_unsupported(model, "cuda", False)  # GPUs stay on torch
    assert runtime.choose_backend(model, "auto", "cuda", False) is None


def test_decoder_models_stay_on_torch(tiny_decoder: Path) -> None:
    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import build_model

    model, _ = build_model(ModelConfig(backbone=str(tiny_decoder)), LoraSettings(), ["a", "b"])
    assert runtime.onnx_unsupported(model, "cpu", False) == "decoder models run on torch"
    assert runtime.choose_backend(model, "auto", "cpu", False) is None
    with pytest.raises(ModelError, match="decoder"):
        runtime.choose_backend(model, "onnx", "cpu", False)
    # saved and loaded, a decoder tagger's config names LlamaForSequenceClassification
    model.hf_model.config.architectures = ["LlamaForSequenceClassification"]
    assert runtime.onnx_unsupported(model, "cpu", False) == "decoder models run on torch"


def test_auto_falls_back_to_torch_when_export_fails_or_onnx_is_missing(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reference = TagRecommender.load(trained_model_dir, backend="torch").suggest(PRODUCTS)

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(runtime.OnnxTagModel, "export", broken)
    with caplog.at_level(logging.WARNING, logger="labelrec.runtime"):
        rec = TagRecommender.load(trained_model_dir)
    assert rec.backend == "torch" and rec.suggest(PRODUCTS) == reference
    assert "ONNX export failed (unsupported operator); inference on torch" in caplog.text
    with pytest.raises(ModelError, match="ONNX export failed: unsupported operator"):
        TagRecommender.load(trained_model_dir, backend="onnx")

    monkeypatch.setattr(runtime, "onnx_installed", lambda: False)
    assert TagRecommender.load(trained_model_dir).backend == "torch"
    with pytest.raises(ModelError, match="not installed"):
        TagRecommender.load(trained_model_dir, backend="onnx")


def test_text_evidence_computed_apart_gives_the_same_fusion(trained_model_dir: Path) -> None:
    from labelrec.predict import as_product

    rec = TagRecommender.load(trained_model_dir)
    assert rec.fusion is not None
    items = [as_product(p, i) for i, p in enumerate(PRODUCTS)]
    neural, emb = rec.runner.score_batch(**_padded(rec, items))
    evidence = rec.fusion.text_evidence(items)
    together = rec.fusion.fuse_with_new(items, neural, emb)
    apart = rec.fusion.fuse_with_new(items, neural, emb, evidence)
    np.testing.assert_array_equal(together[0], apart[0])
    assert together[1] == apart[1]


def test_recommend_from_many_threads_matches_one_thread(trained_model_dir: Path) -> None:
    """The text evidence runs on a shared worker thread: concurrent callers get their own."""
    rec = TagRecommender.load(trained_model_dir)
    expected = [rec.suggest([p], limit=3) for p in PRODUCTS]
    got: dict[int, list] = {}

    def run(i: int) -> None:
        for _ in range(5):
            got[i] = rec.suggest([PRODUCTS[i]], limit=3)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PRODUCTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(PRODUCTS))] == expected


def _padded(rec: TagRecommender, items: list) -> dict:
    from labelrec.model import pad_batch

    return pad_batch(rec.encode(items), rec.tokenizer.pad_token_id)


def test_recommend_in_a_forked_child(trained_model_dir: Path) -> None:
    """The text worker thread does not survive a fork: the child makes its own (no hang)."""
    import multiprocessing

    rec = TagRecommender.load(trained_model_dir, backend="torch")
    expected = rec.suggest(PRODUCTS[:2], limit=3)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(rec.recommend, (PRODUCTS[:2], 3)).get(timeout=60)
    assert got == expected


_OVERLAP = """
import threading
import numpy
from threadpoolctl import threadpool_info
from labelrec.predict import one_blas_thread, one_thread

def count(api):
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == api})

seen = {"before": count("blas"), "openmp before": count("openmp")}
a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

def first():
    with one_thread():
        a_in.set()
        b_in.wait(10)
    seen["openmp of the first, gone"] = count("openmp")
    a_out.set()

def second():
    a_in.wait(10)
    with one_thread():
        b_in.set()
        a_out.wait(10)
        seen["inside"] = count("blas")
        seen["openmp inside"] = count("openmp")
        threads[0].join(10)

threads = [threading.Thread(target=first), threading.Thread(target=second)]
for t in threads:
    t.start()
for t in threads:
    t.join(20)
seen["after"] = count("blas")
with one_blas_thread():
    pass
seen["after one more"] = count("blas")
print(seen)
"""


def test_one_blas_thread_overlapping_threads_put_the_count_back() -> None:
    """Two threads inside ``one_thread`` at once, the first leaving first: BLAS (one count for
    the process) stays on one thread until the last leaves, then the count before the first
    comes back; OpenMP (a count per thread) is limited in each thread while it is inside. In a
    child process with two threads each, as a service starts (the tests' environment sets
    one)."""
    import ast
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", _OVERLAP], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    seen = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    if seen["before"] != [2]:
        pytest.skip(f"numpy's BLAS does not take two threads here ({seen['before']})")
    assert seen["inside"] == [1]
    assert seen["after"] == seen["after one more"] == [2]
    if seen["openmp before"] == [2]:  # OpenMP's count is each thread's: limited per call
        assert seen["openmp inside"] == [1]
        assert seen["openmp of the first, gone"] == [2]
