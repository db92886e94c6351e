"""ONNX Runtime inference (labelrec/runtime.py): same scores as torch, and when it is used."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime  # required: its absence fails the tests
import pytest
import torch

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
    assert_same_scores(onnx, torch_)


def assert_same_scores(rec: TagRecommender, reference: TagRecommender) -> None:
    """The same scores, embeddings and suggestions to float32 rounding: for products of
    different lengths in one padded batch, then one product at a time."""
    for batch_size in (64, 1):
        rec.batch_size = reference.batch_size = batch_size
        s1, e1 = rec.predict_scores(PRODUCTS, with_embeddings=True)
        s2, e2 = reference.predict_scores(PRODUCTS, with_embeddings=True)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
        np.testing.assert_allclose(e1, e2, atol=1e-5)
    for a, b in zip(rec.suggest(PRODUCTS, 5), reference.suggest(PRODUCTS, 5), strict=True):
        assert [s.tag for s in a] == [s.tag for s in b]
        np.testing.assert_allclose([s.score for s in a], [s.score for s in b], atol=1e-5)


def test_the_onnx_export_hides_its_own_warnings_only(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export's tracer and exporter notes are not shown; a warning of other code while it
    runs (another thread's: the filters are the process's) still is."""
    import warnings

    import torch

    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, "off")  # the load exports
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
    assert TagRecommender.load(trained_model_dir, quantize=True).backend == "onnx"  # int8 there
    with pytest.raises(ModelError, match="unknown backend 'tensorrt'"):
        TagRecommender.load(trained_model_dir, backend="tensorrt")
    model = TagRecommender.load(trained_model_dir, backend="torch").model
    assert "cuda" in runtime.onnx_unsupported(model, "cuda")  # GPUs stay on torch
    assert runtime.choose_backend(model, "auto", "cuda", False) is None


def test_decoder_models_stay_on_torch(tiny_decoder: Path) -> None:
    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import build_model

    model, _ = build_model(ModelConfig(backbone=str(tiny_decoder)), LoraSettings(), ["a", "b"])
    assert runtime.onnx_unsupported(model, "cpu") == "decoder models run on torch"
    assert runtime.choose_backend(model, "auto", "cpu", False) is None
    with pytest.raises(ModelError, match="decoder"):
        runtime.choose_backend(model, "onnx", "cpu", False)
    # saved and loaded, a decoder tagger's config names LlamaForSequenceClassification
    model.hf_model.config.architectures = ["LlamaForSequenceClassification"]
    assert runtime.onnx_unsupported(model, "cpu") == "decoder models run on torch"


def test_auto_falls_back_to_torch_when_export_fails_or_onnx_is_missing(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, "off")  # each load exports
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


_FORKED: dict[str, TagRecommender] = {}  # inherited by a forked child (ONNX Runtime's
# session cannot be pickled)


def _threads_and_tags(products: list) -> tuple[int, list]:
    return torch.get_num_threads(), _FORKED["rec"].recommend(products, 3)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_recommend_in_a_forked_child(trained_model_dir: Path, backend: str) -> None:
    """Neither the text worker thread nor torch's OpenMP threads survive a fork: the child makes
    its own worker and computes on one torch thread (no hang), after a parent that computed on
    two."""
    import multiprocessing

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rec = TagRecommender.load(trained_model_dir, backend=backend, num_threads=2)
        assert rec.backend == backend
        expected = rec.suggest(PRODUCTS[:2], limit=3)
        # a parallel region, as the forward pass of a real model's batch opens
        torch.nn.functional.layer_norm(torch.randn(64, 128, 384), (384,))
        _FORKED["rec"] = rec
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            got = pool.apply_async(_threads_and_tags, (PRODUCTS[:2],)).get(timeout=60)
        assert got == (1, expected)
        assert torch.get_num_threads() == 2  # the parent's own count stays
    finally:
        _FORKED.clear()
        torch.set_num_threads(before)


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


# --- the cache of exported graphs ---


@pytest.fixture
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "onnx-cache"
    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, str(folder))
    return folder


def _forbid(*_: object, **__: object) -> None:
    raise AssertionError("called on a cached load")


def test_a_later_load_runs_the_cached_graph_without_building_torchs_model(
    trained_model_dir: Path, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import labelrec.predict

    reference = TagRecommender.load(trained_model_dir, backend="torch")
    first = TagRecommender.load(trained_model_dir)
    assert first.backend == "onnx" and not first.runner.cached
    assert [p.suffix for p in onnx_cache.iterdir()] == [".onnx"]
    copy = tmp_path / "copy"  # the same files elsewhere (an MLflow download): the same graph
    shutil.copytree(trained_model_dir, copy)
    load_model = labelrec.predict.load_model
    monkeypatch.setattr(runtime, "export_graph", _forbid)
    monkeypatch.setattr(labelrec.predict, "load_model", _forbid)
    cached = TagRecommender.load(copy)
    assert cached.backend == "onnx" and cached.runner.cached and cached._model is None
    assert_same_scores(cached, reference)
    # torch's model is built on first use, from the same files
    monkeypatch.setattr(labelrec.predict, "load_model", load_model)
    model = cached.model
    assert model is cached.model and model.n_tags == len(cached.vocab)
    assert TagRecommender.load(copy, backend="torch").backend == "torch"
    assert TagRecommender.load(copy, backend="onnx").runner.cached


def test_a_folder_replaced_after_a_cached_load_is_not_mixed_in(
    trained_model_dir: Path, onnx_cache: Path, tmp_path: Path
) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(trained_model_dir, copy)
    TagRecommender.load(copy)
    cached = TagRecommender.load(copy)
    assert cached.runner.cached
    weights = copy / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelError, match="has changed since its model was loaded"):
        cached.model  # noqa: B018  (the property loads it)
    assert not TagRecommender.load(copy).runner.cached  # other weights: another graph


def test_weights_replaced_while_they_load_are_not_cached_under_the_old_key(
    trained_model_dir: Path, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training publishing into the folder between the key's reading and the weights'
    loading: the graph of the new weights must not be cached under the old weights' key."""
    import shutil

    from safetensors.torch import load_file, save_file

    import labelrec.predict

    copy = tmp_path / "copy"
    shutil.copytree(trained_model_dir, copy)
    old_key = runtime.graph_key(copy, labelrec.predict.read_info(copy))
    load_model = labelrec.predict.load_model

    def publish_meanwhile(model_dir, *args, **kwargs):
        weights = Path(model_dir) / "model.safetensors"
        tensors = load_file(weights)
        name = next(iter(tensors))
        tensors[name] = tensors[name] + 1.0
        save_file(tensors, weights, metadata={"format": "pt"})
        monkeypatch.setattr(labelrec.predict, "load_model", load_model)
        return load_model(model_dir, *args, **kwargs)

    monkeypatch.setattr(labelrec.predict, "load_model", publish_meanwhile)
    TagRecommender.load(copy)
    assert runtime.OnnxTagModel.from_cache(old_key, None, False) is None
    # the old weights, loaded from their own folder, export their own graph again
    assert not TagRecommender.load(trained_model_dir).runner.cached


def test_the_key_covers_what_makes_the_graph(
    trained_model_dir: Path, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from labelrec.model import HEAD_BIAS, read_info

    info = read_info(trained_model_dir)
    key = runtime.graph_key(trained_model_dir, info)
    assert key is not None and len(key) == 64
    copy = tmp_path / "copy"
    shutil.copytree(trained_model_dir, copy)
    assert runtime.graph_key(copy, info) == key
    other_pooling = "cls" if info["pooling"] != "cls" else "mean"
    assert runtime.graph_key(copy, {**info, "pooling": other_pooling}) != key
    assert runtime.graph_key(copy, {**info, HEAD_BIAS: [0.5] * info["n_tags"]}) != key
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-5}))
    assert runtime.graph_key(copy, info) != key
    (copy / "config.json").write_text(json.dumps(config))
    assert runtime.graph_key(copy, info) == key
    tensors = load_file(copy / "model.safetensors")
    name = sorted(tensors)[-1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    assert runtime.graph_key(copy, info) != key
    # a LoRA adapter's settings, which transformers applies with the weights
    shutil.copy2(trained_model_dir / "model.safetensors", copy / "model.safetensors")
    assert runtime.graph_key(copy, info) == key
    (copy / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 8}))
    with_adapter = runtime.graph_key(copy, info)
    (copy / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 64}))
    assert len({key, with_adapter, runtime.graph_key(copy, info)}) == 3
    # the versions of what exports it, and the code that does
    real_version = runtime.importlib.metadata.version
    monkeypatch.setattr(
        runtime.importlib.metadata,
        "version",
        lambda name: "2.13.0+cu128" if name == "torch" else real_version(name),
    )
    assert runtime.graph_key(trained_model_dir, info) != key
    monkeypatch.undo()
    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, str(onnx_cache))
    monkeypatch.setattr(runtime, "_source_digest", lambda name: name)
    assert runtime.graph_key(trained_model_dir, info) != key
    monkeypatch.undo()
    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, str(onnx_cache))
    # no cache for decoders (they run on torch), nor where the cache is off
    assert runtime.graph_key(trained_model_dir, {**info, "pooling": "last"}) is None
    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, "off")
    assert runtime.graph_key(trained_model_dir, info) is None
    TagRecommender.load(trained_model_dir)
    assert not onnx_cache.exists()


def test_no_key_for_weights_over_onnxs_limit_once_loaded_in_float32(
    trained_model_dir: Path, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights saved in bfloat16 load in float32, twice their files' size: where that is over
    ONNX's limit the model runs on torch, and its weights are not hashed for a graph never
    cached."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from labelrec.model import read_info

    info = read_info(trained_model_dir)
    copy = Path(shutil.copytree(trained_model_dir, tmp_path / "bf16"))
    tensors = load_file(copy / "model.safetensors")
    floats = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(floats, copy / "model.safetensors", metadata={"format": "pt"})
    on_disk = (copy / "model.safetensors").stat().st_size
    loaded = runtime.loaded_bytes([copy / "model.safetensors"])
    assert loaded == sum(4 * v.numel() for v in tensors.values()) > on_disk
    monkeypatch.setattr(runtime, "MAX_ONNX_BYTES", (on_disk + loaded) // 2)
    assert runtime.graph_key(copy, info) is None
    assert runtime.graph_key(trained_model_dir, info) is None  # float32 on disk: the same size
    monkeypatch.setattr(runtime, "MAX_ONNX_BYTES", loaded)
    assert runtime.graph_key(copy, info) is not None


def test_a_damaged_cached_graph_is_exported_again(
    trained_model_dir: Path, onnx_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    TagRecommender.load(trained_model_dir)
    (graph,) = onnx_cache.iterdir()
    graph.write_bytes(graph.read_bytes()[:1000])  # cut short
    with caplog.at_level(logging.WARNING, logger="labelrec.runtime"):
        rec = TagRecommender.load(trained_model_dir)
    assert rec.backend == "onnx" and not rec.runner.cached
    assert f"ignoring the cached ONNX graph {graph}" in caplog.text
    assert TagRecommender.load(trained_model_dir).runner.cached  # replaced by the export


def test_a_cache_that_cannot_be_written_costs_only_the_export(
    trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the cache folder's place is taken (CI runs as root: chmod would not)
    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, str(blocker / "onnx"))
    with caplog.at_level(logging.WARNING, logger="labelrec.runtime"):
        rec = TagRecommender.load(trained_model_dir)
    assert rec.backend == "onnx" and rec.suggest(PRODUCTS[:1])
    assert f"cannot cache the ONNX graph in {blocker / 'onnx'}" in caplog.text


def test_the_cache_keeps_the_most_recently_used_graphs(tmp_path: Path) -> None:
    import os

    paths = [tmp_path / f"{i}.onnx" for i in range(5)]
    for i, path in enumerate(paths):
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / ".3.tmp").write_bytes(b"x")  # another process's unfinished write: not counted
    stale = tmp_path / ".0.abc.tmp"  # a write of a process killed long ago: removed
    stale.write_bytes(b"x")
    os.utime(stale, (1000, 1000))
    assert runtime.trim_cache(tmp_path, max_files=3) == [stale, paths[1], paths[0]]
    assert (tmp_path / ".3.tmp").exists()
    # the graph just written stays, however old its time
    assert runtime.trim_cache(tmp_path, keep=paths[2], max_bytes=250) == [paths[3]]
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["2.onnx", "4.onnx"]
    assert runtime.trim_cache(tmp_path, keep=paths[2], max_bytes=150) == [paths[4]]
    assert [p.name for p in tmp_path.glob("*.onnx")] == ["2.onnx"]


def test_writing_a_graph_trims_the_cache(tmp_path: Path) -> None:
    import os

    old = [tmp_path / f"old{i}.onnx" for i in range(runtime.CACHE_KEEP_FILES)]
    for i, path in enumerate(old):
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    runtime.store_graph(tmp_path / "new.onnx", b"graph")
    assert (tmp_path / "new.onnx").read_bytes() == b"graph"
    assert sorted(tmp_path.iterdir()) == sorted([tmp_path / "new.onnx", *old[1:]])


def test_a_cached_load_uses_and_refreshes_the_graph_and_keeps_the_files_mode(
    trained_model_dir: Path, onnx_cache: Path
) -> None:
    import os

    TagRecommender.load(trained_model_dir)
    (graph,) = onnx_cache.iterdir()
    umask = os.umask(0)
    os.umask(umask)
    assert graph.stat().st_mode & 0o777 == 0o666 & ~umask  # as a file written in place
    os.utime(graph, (1000, 1000))
    assert TagRecommender.load(trained_model_dir).runner.cached
    assert graph.stat().st_mtime > 1000  # used: the last the cache removes


def _query_layer(rec: TagRecommender) -> object:
    return rec.model.hf_model.base_model.encoder.layer[0].attention.self.query


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # torch's int8
def test_int8_runs_on_onnx_runtime_from_a_graph_cached_beside_the_float_one(
    trained_model_dir: Path, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``quantize=True``: the weights' matrix products in int8 (per output channel; the
    embedding tables float) on ONNX Runtime. Exported, both graphs are cached, the int8 one
    under a key of its own; a later int8 load exports nothing, a float load still gets the float
    graph, and an int8 load where only the float graph is cached quantizes it without exporting.
    Torch's model stays float; torch's dynamic int8 where the model runs on torch."""
    import onnx
    import torch

    import labelrec.predict

    floats = TagRecommender.load(trained_model_dir, backend="torch")
    int8 = TagRecommender.load(trained_model_dir, quantize=True)
    assert int8.backend == "onnx" and not int8.runner.cached
    assert isinstance(_query_layer(int8), torch.nn.Linear)  # torch's model: float
    key = runtime.graph_key(trained_model_dir, int8.info)
    assert sorted(p.name for p in onnx_cache.iterdir()) == sorted(
        [f"{key}.onnx", f"{runtime.int8_key(key)}.onnx"]
    )
    graph = onnx.load(str(onnx_cache / f"{runtime.int8_key(key)}.onnx"))
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("MatMulInteger") > 1 and "DynamicQuantizeLinear" in ops
    assert "DequantizeLinear" not in ops  # no table gathered from int8
    scales = [i for i in graph.graph.initializer if i.name.endswith("_scale") and i.dims]
    assert scales and all(i.dims[0] > 1 for i in scales)  # one a channel
    a, _ = floats.predict_scores(PRODUCTS)
    b, _ = int8.predict_scores(PRODUCTS)
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.05
    with monkeypatch.context() as no_export:
        no_export.setattr(runtime, "export_graph", _forbid)
        no_export.setattr(labelrec.predict, "load_model", _forbid)
        again = TagRecommender.load(trained_model_dir, quantize=True)
        assert again.runner.cached
        np.testing.assert_array_equal(again.predict_scores(PRODUCTS)[0], b)
        float_again = TagRecommender.load(trained_model_dir)
        np.testing.assert_allclose(float_again.predict_scores(PRODUCTS)[0], a, atol=1e-5)
        (onnx_cache / f"{runtime.int8_key(key)}.onnx").unlink()  # the float graph alone
        made = TagRecommender.load(trained_model_dir, quantize=True)
        assert made.runner.cached and (onnx_cache / f"{runtime.int8_key(key)}.onnx").is_file()
        np.testing.assert_array_equal(made.predict_scores(PRODUCTS)[0], b)
    on_torch = TagRecommender.load(trained_model_dir, quantize=True, backend="torch")
    assert on_torch.backend == "torch"
    assert isinstance(_query_layer(on_torch), torch.ao.nn.quantized.dynamic.Linear)
    before = runtime.int8_key(key)  # it covers ONNX Runtime's version
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.0")
    assert runtime.int8_key(key) != before


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # torch's int8
def test_an_int8_graph_damaged_or_of_other_tags_is_made_again_and_a_failed_quantizer_said(
    trained_model_dir: Path,
    tiny_backbone: Path,
    onnx_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import torch

    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import build_model, read_info

    key = runtime.graph_key(trained_model_dir, read_info(trained_model_dir))
    int8_path = onnx_cache / f"{runtime.int8_key(key)}.onnx"
    onnx_cache.mkdir()
    other, _ = build_model(ModelConfig(backbone=str(tiny_backbone)), LoraSettings(), ["a", "b"])
    for graph, said in (
        (runtime.quantize_graph(runtime.export_graph(other)), "scores 2 tags, not"),
        (b"not a graph", "ignoring the cached ONNX graph"),
    ):
        int8_path.write_bytes(graph)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rec = TagRecommender.load(trained_model_dir, quantize=True)
        assert rec.backend == "onnx" and not rec.runner.cached and said in caplog.text
        assert TagRecommender.load(trained_model_dir, quantize=True).runner.n_tags == len(rec.vocab)
        for path in onnx_cache.iterdir():
            path.unlink()

    def broken(data: bytes) -> bytes:
        raise RuntimeError("quantizer broke")

    monkeypatch.setattr(runtime, "quantize_graph", broken)
    with pytest.raises(ModelError, match="int8 quantization failed: quantizer broke"):
        TagRecommender.load(trained_model_dir, quantize=True, backend="onnx")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rec = TagRecommender.load(trained_model_dir, quantize=True)
    assert rec.backend == "torch" and "int8 quantization failed" in caplog.text
    assert isinstance(_query_layer(rec), torch.ao.nn.quantized.dynamic.Linear)


def test_the_quantizers_log_lines_neither_show_nor_change_the_root_logger(
    trained_model_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    """ONNX Runtime's quantizer logs through the root logger: its lines are dropped, other
    records pass, and a root logger without handlers keeps none (nor printing less)."""
    graph = runtime.export_graph(TagRecommender.load(trained_model_dir, backend="torch").model)
    root = logging.getLogger()
    filters = list(root.filters)
    with caplog.at_level(logging.INFO):
        runtime.quantize_graph(graph)
        with runtime._quiet_quantizer():
            root.warning("a program's own line")
    assert not [r for r in caplog.records if "onnxruntime" in r.pathname]
    assert "a program's own line" in caplog.text and root.filters == filters
    with pytest.MonkeyPatch.context() as bare:
        bare.setattr(root, "handlers", [])  # a program that set no logging
        runtime.quantize_graph(graph)
        with runtime._quiet_quantizer():
            logging.getLogger("other").warning("another logger's warning")
        assert root.handlers == []
    assert "another logger's warning" in capsys.readouterr().err


def test_a_graph_of_another_number_of_tags_is_not_used(
    trained_model_dir: Path, tiny_backbone: Path, onnx_cache: Path, caplog
) -> None:
    from labelrec.config import LoraSettings, ModelConfig
    from labelrec.model import build_model, read_info

    other, _ = build_model(ModelConfig(backbone=str(tiny_backbone)), LoraSettings(), ["a", "b"])
    key = runtime.graph_key(trained_model_dir, read_info(trained_model_dir))
    onnx_cache.mkdir()
    (onnx_cache / f"{key}.onnx").write_bytes(runtime.export_graph(other))
    with caplog.at_level(logging.WARNING, logger="labelrec.predict"):
        rec = TagRecommender.load(trained_model_dir)
    assert rec.backend == "onnx" and not rec.runner.cached
    assert "scores 2 tags, not" in caplog.text
    assert TagRecommender.load(trained_model_dir).runner.n_tags == len(rec.vocab)


def test_no_cache_where_its_parts_cannot_be_had_and_the_load_goes_on(
    trained_model_dir: Path, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No home folder for ``~/.cache``, labelrec's code in a zip archive, onnx without package
    metadata: the model loads on ONNX Runtime, exported, with nothing cached."""
    import importlib.metadata

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    def unreadable(name: str) -> str:
        raise NotADirectoryError(20, "Not a directory", f"labelrec.zip/{name}")

    def no_metadata(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    for target, broken in (
        ("cache_dir", no_home),
        ("_source_digest", unreadable),
        ("importlib.metadata.version", no_metadata),
    ):
        with monkeypatch.context() as mp:
            if target == "cache_dir":
                mp.delenv(runtime.ONNX_CACHE_ENV)
            mp.setattr(
                runtime if "." not in target else importlib.metadata, target.split(".")[-1], broken
            )
            rec = TagRecommender.load(trained_model_dir)
            assert (rec.backend, rec.runner.cached) == ("onnx", False), target
    assert not onnx_cache.exists()


def test_torchs_model_of_a_cached_load_whatever_happened_since(
    trained_model_dir: Path, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built on first use: after the cache was turned off, and from another working folder
    than the relative path the model was loaded by."""
    import shutil

    shutil.copytree(trained_model_dir, tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    TagRecommender.load("m")
    rec = TagRecommender.load("m")
    assert rec.runner.cached and rec._model is None
    monkeypatch.setenv(runtime.ONNX_CACHE_ENV, "off")
    monkeypatch.chdir(trained_model_dir.parent)
    assert rec.model.n_tags == len(rec.vocab)


def _model_lock_held() -> bool:
    import labelrec.predict

    return labelrec.predict._MODEL_LOCK.locked()


def test_a_forked_child_gets_its_own_model_lock() -> None:
    """A thread of the parent building a torch model holds the lock; the child has no such
    thread, so its lock must be a new one (else its first ``rec.model`` would wait forever)."""
    import multiprocessing

    import labelrec.predict

    with labelrec.predict._MODEL_LOCK:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply_async(_model_lock_held).get(timeout=60) is False


def test_suggest_twice_from_the_command_line(
    trained_model_dir: Path, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import io
    import json

    from labelrec import cli

    outputs = []
    for _ in range(2):
        lines = "".join(json.dumps(p) + "\n" for p in PRODUCTS)
        monkeypatch.setattr("sys.stdin", io.StringIO(lines))
        assert cli.main(["suggest", str(trained_model_dir), "--format", "jsonl"]) == 0
        outputs.append(capsys.readouterr().out)
        monkeypatch.setattr(runtime, "export_graph", _forbid)  # the second: from the cache
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == len(PRODUCTS)


def test_a_graph_onnx_runtime_cannot_open_is_not_cached(
    trained_model_dir: Path, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("invalid graph")

    monkeypatch.setattr(runtime, "open_session", refuse)
    assert TagRecommender.load(trained_model_dir).backend == "torch"  # auto falls back
    assert not list(onnx_cache.glob("*.onnx"))
