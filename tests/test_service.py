"""The BentoML service in process: the class called directly, and its ASGI app over HTTP
(Starlette's TestClient, adaptive batching included) without a server process."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bentoml  # noqa: F401  (required: its absence fails the tests)
import pytest
from bentoml.exceptions import BadInput  # noqa: E402
from conftest import toy_catalog  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from labelrec import service  # noqa: E402
from labelrec.opener import is_model_uri  # noqa: E402
from labelrec.predict import TagRecommender  # noqa: E402
from labelrec.service import ItemIn, ProductIn  # noqa: E402
from labelrec.serving import ModelHolder, ServiceError, public_uri  # noqa: E402

# --------------------------------------------------------------------------- model variants


def copy_model(
    src: Path,
    dst: Path,
    threshold: float | None = None,
    garbage_weights: bool = False,
    nan_head: bool = False,
) -> Path:
    """A copy of a model directory, optionally with new thresholds or broken weights."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    if threshold is not None:
        n = len(json.loads((dst / "thresholds.json").read_text())["per_tag"])
        payload = {"global": threshold, "per_tag": [threshold] * n}
        (dst / "thresholds.json").write_text(json.dumps(payload))
    if garbage_weights:
        (dst / "model.safetensors").write_bytes(b"not a safetensors file")
    if nan_head:
        import torch
        from safetensors.torch import load_file, save_file

        state = load_file(dst / "model.safetensors")
        state["classifier.weight"] = torch.full_like(state["classifier.weight"], float("nan"))
        save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def point(link: Path, target: Path) -> None:
    """Atomically make symlink ``link`` point at ``target``."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


@pytest.fixture(scope="module")
def models(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v1 (the trained tagger), v2 (same weights, thresholds 0), and two broken versions."""
    root = tmp_path_factory.mktemp("served")
    return {
        "v1": copy_model(trained_model_dir, root / "v1"),
        "v2": copy_model(trained_model_dir, root / "v2", threshold=0.0),
        "garbage": copy_model(trained_model_dir, root / "garbage", garbage_weights=True),
        "nan": copy_model(trained_model_dir, root / "nan", nan_head=True),
        "root": root,
    }


@pytest.fixture
def current(models: dict[str, Path], tmp_path: Path) -> Path:
    """A symlink ``current -> v1``: the model URI of one test."""
    link = tmp_path / "current"
    point(link, models["v1"])
    return link


@pytest.fixture(scope="module")
def client(service_client: TestClient) -> TestClient:
    """The service's ASGI app serving a copy of the trained tagger (see conftest)."""
    return service_client


def run(coro):
    return asyncio.run(coro)


def as_pairs(tags: list[dict]) -> list[tuple[str, float]]:
    return [(t["tag"], round(t["score"], 4)) for t in tags]


# --------------------------------------------------------------------------- in process


def test_registry_uris_are_told_from_paths() -> None:
    assert is_model_uri("models:/labelrec@champion")
    assert is_model_uri("runs:/abc/model")
    assert not is_model_uri("runs/uk")
    assert not is_model_uri("/abs/path")
    assert not is_model_uri("file:///abs/path")
    assert not is_model_uri("C:/models/uk")


def test_class_called_directly_matches_the_library(make_service, current: Path) -> None:
    svc = make_service(current)
    assert svc.__is_ready__()
    rec = TagRecommender.load(current)
    product = {"title": "LEGO city police station", "description": "bricks"}
    expected = [(s.tag, round(s.score, 4)) for s in rec.suggest([product], 3, 0.0)[0]]
    one = run(svc.suggest(product=ProductIn(**product), limit=3, threshold=0.0))
    assert [(t.tag, round(t.score, 4)) for t in one.tags] == expected
    assert len(expected) == 3 and one.model_version == svc.holder.current.version

    batch = run(
        svc.suggest_batch(
            products=[ProductIn(title="hornby train set", id=7), ProductIn(**product)],
            limit=3,
            threshold=0.0,
        )
    )
    assert [r.id for r in batch.results] == ["7", None]
    assert [(t.tag, round(t.score, 4)) for t in batch.results[1].tags] == expected
    assert run(svc.suggest_batch(products=[], limit=3, threshold=None)).results == []

    tags = svc.tags()
    assert tags.tags == rec.tags and tags.count == len(rec.tags)
    info = svc.model()
    assert info["ready"] and info["kind"] == "local" and info["n_tags"] == len(rec.tags)
    assert info["version"] == info["model_version"] == svc.holder.current.version
    assert "P@1" in info["metrics"]


def test_thresholds_default_to_the_tuned_ones(make_service, current: Path) -> None:
    svc = make_service(current)
    rec = svc.holder.current.recommender
    product = ProductIn(title="remote control car red")
    tuned = run(svc.suggest(product=product, limit=20, threshold=None)).tags
    for t in tuned:
        assert t.score >= rec.tag_thresholds[rec.vocab.index[t.tag]]
    assert run(svc.suggest(product=product, limit=20, threshold=1.0)).tags == []
    all_tags = run(svc.suggest(product=product, limit=20, threshold=0.0)).tags
    assert len(all_tags) == len(rec.tags)  # limit above the tag count gives every tag
    assert [t.score for t in all_tags] == sorted((t.score for t in all_tags), reverse=True)


def test_reload_switches_atomically_and_refuses_broken_versions(
    make_service, current: Path, models: dict[str, Path]
) -> None:
    svc = make_service(current)
    v1 = svc.holder.current
    assert run(svc.reload()).status == "unchanged"

    pinned = svc.holder.get(None)  # a request in flight holds the snapshot it started with
    point(current, models["v2"])
    result = run(svc.reload())
    assert result.status == "reloaded" and result.previous_version == v1.version
    v2 = svc.holder.current
    assert v2.version != v1.version and v2.generation == v1.generation + 1

    # The pinned request finishes on v1 (tuned thresholds); new requests get v2 (thresholds 0).
    item = {"title": "plush bear soft baby", "limit": 12}
    old = svc.suggest_items([ItemIn(**item, pin=pinned.generation)])[0]
    new = run(svc.suggest(product=ProductIn(title=item["title"]), limit=12))
    assert old.model_version == v1.version and new.model_version == v2.version
    assert len(new.tags) == len(v2.recommender.tags) > len(old.tags)
    del pinned, v1
    gc.collect()
    assert svc.holder.get(1) is v2  # the old model is freed once no request holds it

    for broken in ("garbage", "nan"):
        point(current, models[broken])
        refused = run(svc.reload())
        assert refused.status_code == 409
        body = json.loads(refused.body)
        assert body["status"] == "refused" and body["model_version"] == v2.version
        assert svc.holder.current is v2
        assert run(svc.suggest(product=ProductIn(title="lego"))).model_version == v2.version
    assert "non-finite" in svc.model()["last_error"]
    assert svc.model()["refused"] == 2
    # A refused version is not tried again by polls until it changes or a wait ends; force does.
    assert svc.holder.reload().status == "refused" and svc.holder.refused == 2
    assert svc.holder.reload(force=True).status == "refused" and svc.holder.refused == 3

    point(current, models["v1"])
    assert svc.holder.reload().status == "reloaded"
    assert svc.model()["last_error"] is None and svc.model()["reloads"] == 2


def test_public_answers_show_no_local_paths(
    make_service, current: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    svc = make_service(current)
    shown = json.dumps(svc.model(), ensure_ascii=False)
    assert str(current.parent) not in shown and current.name in shown
    assert svc.model()["backbone"].startswith("…/")  # the tiny backbone: a local folder
    monkeypatch.setenv("LABELREC_MODEL_URI", str(tmp_path / "gone"))
    svc.holder.uri = str(tmp_path / "gone")
    refused = svc.holder.reload(force=True)
    assert refused.status == "refused" and "does not exist" in refused.error
    assert str(tmp_path) not in refused.error and "…/gone" in refused.error
    assert str(tmp_path) not in json.dumps(svc.model(), ensure_ascii=False)
    # before a first model loads, the 503 names the URI as /model does; a file: URI is cut too
    svc.holder.current = None
    with pytest.raises(ServiceError) as waiting:
        svc.holder.get(None)
    assert str(tmp_path) not in waiting.value.message and "…/gone" in waiting.value.message
    assert public_uri(f"file://{tmp_path}/models/uk") == "file://…/uk"
    assert public_uri("models:/labelrec@champion") == "models:/labelrec@champion"
    assert public_uri("/srv/my models/uk toys") == "…/uk toys"  # a path with spaces, whole
    assert public_uri("file:///srv/my models/uk") == "file://…/uk"
    assert public_uri(r"C:\Users\me\models\uk") == "…/uk"
    assert public_uri("/uk") == "/uk" and public_uri("runs/uk") == "runs/uk"  # nothing to hide


def test_reload_needs_the_admin_token(
    make_service, current: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = make_service(current)
    assert run(svc.reload()).status == "unchanged"  # no token set: a plain check is open
    assert run(svc.reload(force=True)).status_code == 403  # a forced load is not
    svc = make_service(current, LABELREC_ADMIN_TOKEN="s3cret")
    assert "s3cret" not in repr(svc.settings)  # a secret: not shown
    assert run(svc.reload()).status_code == 401
    refused = run(svc.reload(authorization="Bearer wrong"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert run(svc.reload(authorization="s3cret")).status_code == 401  # no scheme
    forced = run(svc.reload(force=True, authorization="bearer  s3cret"))  # any case (RFC 7235)
    assert forced.status == "reloaded"
    svc.holder._lock.acquire()  # another reload is running: answer at once, do not queue
    try:
        busy = run(svc.reload(authorization="Bearer s3cret"))
    finally:
        svc.holder._lock.release()
    assert busy.status_code == 429 and b"a reload is running" in busy.body


def test_feedback_needs_the_review_token_when_one_is_set() -> None:
    from pydantic import SecretStr
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse as Answer
    from starlette.routing import Route
    from starlette.testclient import TestClient as Client

    from labelrec.service import LabelRec, NeedsToken

    async def stored(request) -> Answer:
        return Answer({"stored": True})

    inner = Starlette(routes=[Route(p, stored, methods=["POST"]) for p in ("/feedback", "/x")])
    guarded = NeedsToken(inner, ("/feedback",), SecretStr("s3cret"), "LABELREC_REVIEW_TOKEN")
    client = Client(guarded)
    review = {"product": {"title": "plush bear"}, "added": ["brand:Evil"]}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
        answer = client.post("/feedback", json=review, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json() == {
            "error": "/feedback needs the header Authorization: Bearer <LABELREC_REVIEW_TOKEN>"
        }
    good = client.post("/feedback", json=review, headers={"authorization": "Bearer s3cret"})
    assert good.json() == {"stored": True}
    assert client.post("/x", json={}).json() == {"stored": True}  # other paths are open
    open_door = Client(NeedsToken(inner, ("/feedback",), None, "LABELREC_REVIEW_TOKEN"))
    assert open_door.post("/feedback", json=review).json() == {"stored": True}  # none set
    assert any(cls is NeedsToken for cls, _ in LabelRec.middlewares)  # the service installs it


def test_extensions_are_built_per_version(current: Path, models: dict[str, Path]) -> None:
    holder = ModelHolder(str(current))
    holder.extensions["n_tags"] = lambda snap: len(snap.recommender.tags)
    holder.start()
    assert holder.current.extras["n_tags"] == len(holder.current.recommender.tags)

    def failing(snap):
        raise RuntimeError("index build failed")

    holder.extensions["index"] = failing
    point(current, models["v2"])
    result = holder.reload()
    assert result.status == "refused" and "index build failed" in result.error
    assert holder.current.generation == 1


def test_backend_setting(make_service, current: Path) -> None:
    """LABELREC_BACKEND picks what runs the model; /model says which; a typo stops start-up."""
    product = ProductIn(title="LEGO city police station")
    answers = {}
    for backend in ("onnx", "torch"):
        svc = make_service(current, LABELREC_BACKEND=backend)
        assert svc.model()["backend"] == backend
        answers[backend] = run(svc.suggest(product=product, limit=3, threshold=0.0)).tags
    assert [t.tag for t in answers["onnx"]] == [t.tag for t in answers["torch"]]
    assert make_service(current, LABELREC_BACKEND="").model()["backend"] == "onnx"  # auto
    with pytest.raises(ValueError, match="LABELREC_BACKEND='gpu'"):
        make_service(current, LABELREC_BACKEND="gpu")


def test_a_built_bento_warns_of_databases_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelrec.service import ServiceSettings, bento_store_warnings

    src = tmp_path / "bentos" / "labelrec" / "abc" / "src"  # where `bentoml serve TAG` runs
    src.mkdir(parents=True)
    for name in ServiceSettings.model_fields:  # the session's in-process service sets some
        monkeypatch.delenv(ServiceSettings.env_name(name), raising=False)
    defaults = ServiceSettings()
    assert bento_store_warnings(defaults, src, {}) == []  # a source tree: not a bento
    (src.parent / "bento.yaml").write_text("service: labelrec.service:LabelRec\n")
    warnings = bento_store_warnings(defaults, src, {})
    assert len(warnings) == 2
    assert "LABELREC_FEEDBACK_URI is not set" in warnings[0] and str(src) in warnings[0]
    assert "MLFLOW_TRACKING_URI is not set" in warnings[1]
    chosen = ServiceSettings(feedback_uri="sqlite:////data/feedback.db")
    assert bento_store_warnings(chosen, src, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == []
    local = ServiceSettings(model_uri="/model", feedback_uri="sqlite:////data/feedback.db")
    assert bento_store_warnings(local, src, {}) == []  # a mounted model needs no registry
    relative = ServiceSettings(
        model_uri="runs/uk",
        index="runs/uk/index",
        rules="~/rules.yaml",  # the opener expands ~: absolute
        feedback_uri="sqlite:////data/feedback.db",
    )
    found = bento_store_warnings(relative, src, {})
    assert [w.split(": ", 1)[1].split("=")[0] for w in found] == [
        "LABELREC_MODEL_URI",
        "LABELREC_INDEX",
    ]
    assert f"({src / 'runs/uk'}, where nothing is); give an absolute path" in found[0]


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from labelrec.service import ServiceSettings, load_settings

    for name in ServiceSettings.model_fields:
        monkeypatch.delenv(ServiceSettings.env_name(name), raising=False)
    assert load_settings() == ServiceSettings()  # the defaults
    monkeypatch.setenv("LABELREC_GENERATE", "off")
    monkeypatch.setenv("LABELREC_BACKEND", " Torch ")
    monkeypatch.setenv("LABELREC_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("LABELREC_INDEX", "")  # empty: unset
    s = load_settings()
    assert (s.generate, s.backend, s.max_batch_size, s.index) == (False, "torch", 8, None)
    monkeypatch.setenv("LABELREC_MAX_BATCH_SIZE", "eight")
    monkeypatch.setenv("LABELREC_POLL_SECONDS", "-1")
    with pytest.raises(ValueError) as err:
        load_settings()
    assert "LABELREC_MAX_BATCH_SIZE='eight'" in str(err.value)
    assert "LABELREC_POLL_SECONDS='-1'" in str(err.value)
    # a built Bento hides the import's error: it is on stderr too
    assert f"labelrec service settings: {err.value}" in capsys.readouterr().err
    for endless in ("inf", "1e10"):  # a timer the poller cannot wait on
        monkeypatch.setenv("LABELREC_POLL_SECONDS", endless)
        with pytest.raises(ValueError, match=f"LABELREC_POLL_SECONDS='{endless}'"):
            load_settings()
    capsys.readouterr()
    # tokens travel in a header: visible ASCII; a bad one is named, its value not shown
    for name in ("LABELREC_MAX_BATCH_SIZE", "LABELREC_POLL_SECONDS"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("LABELREC_REVIEW_TOKEN", "pässwort 1")
    with pytest.raises(ValueError, match="LABELREC_REVIEW_TOKEN: a token is visible ASCII") as err:
        load_settings()
    assert "pässwort" not in str(err.value) and "pässwort" not in capsys.readouterr().err
    monkeypatch.setenv("LABELREC_REVIEW_TOKEN", "s3cret-Token_1")
    assert load_settings().review_token.get_secret_value() == "s3cret-Token_1"


def test_passes_run_side_by_side_with_the_cores_shared(make_service, models) -> None:
    from labelrec.service import ProductIn

    one = make_service(models["v1"])
    two = make_service(models["v1"], LABELREC_PASSES="2")
    assert (one.holder.passes, one.batcher.max_passes, one.holder.num_threads) == (1, 1, None)
    assert (two.holder.passes, two.batcher.max_passes) == (2, 2)
    assert two.holder.num_threads == max(1, (os.cpu_count() or 1) // 2)
    products = [ProductIn(title=t) for t in ("LEGO police station", "Plush bear", "Chess set")]
    answers = [run(svc.suggest_batch(products=products, limit=3)) for svc in (one, two)]
    ranked = [[[(t.tag, round(t.score, 4)) for t in r.tags] for r in a.results] for a in answers]
    assert ranked[0] == ranked[1] and all(ranked[0])
    set_threads = make_service(models["v1"], LABELREC_PASSES="2", LABELREC_NUM_THREADS="1")
    assert set_threads.holder.num_threads == 1
    workers = make_service(
        models["v1"], LABELREC_WORKERS="2", LABELREC_PASSES="1", LABELREC_NUM_THREADS="0"
    )
    assert (workers.holder.workers, workers.batcher.max_passes) == (2, 1)
    assert workers.holder.num_threads == max(1, (os.cpu_count() or 1) // 2)
    assert workers.model()["shared_passes"]["workers"] == 2


def test_workers_setting_reaches_bentoml(tmp_path: Path) -> None:
    """BentoML fixes a service's worker count when the class is declared: LABELREC_WORKERS is
    read as the module loads."""
    code = "from labelrec.service import LabelRec; print(LabelRec.config['workers'])"
    env = {**os.environ, "LABELREC_WORKERS": "3", "BENTOML_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-1] == "3"


def test_every_setting_is_in_the_docs() -> None:
    from labelrec.service import ServiceSettings

    docs = (Path(__file__).parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    for name, field in ServiceSettings.model_fields.items():
        shown = "unset" if field.default is None else f"`{field.default}`"
        row = f"| `{ServiceSettings.env_name(name)}` | {shown} | {field.description} |"
        assert row in docs, row


def test_unloadable_model_at_start(make_service, tmp_path: Path, models: dict[str, Path]) -> None:
    missing = tmp_path / "later"
    with pytest.raises(RuntimeError, match="cannot load model"):
        make_service(missing)
    # With polling the service starts unready, answers 503, and picks the model up when it
    # appears.
    svc = make_service(missing, poll=0.2)
    assert not svc.__is_ready__()
    answer = run(svc.suggest(product=ProductIn(title="lego")))
    assert answer.status_code == 503 and b"no model loaded" in answer.body
    assert answer.headers["retry-after"] == "1"  # the next look, at 0.2 s polling
    assert svc.tags().status_code == 503
    assert svc.model()["ready"] is False and "does not exist" in svc.model()["last_error"]
    assert svc.model()["model_version"] is None and svc.model()["version"] is None
    point(missing, models["v1"])
    deadline = time.monotonic() + 60
    while not svc.__is_ready__() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert svc.__is_ready__()
    assert run(svc.suggest(product=ProductIn(title="lego"))).tags


# --------------------------------------------------------------------------- over ASGI


def test_http_endpoints(client: TestClient, models: dict[str, Path]) -> None:
    rec = TagRecommender.load(models["v1"])
    body = {"product": {"title": "wooden jigsaw puzzle"}, "limit": 4, "threshold": 0}
    one = client.post("/suggest", json=body)
    assert one.status_code == 200, one.text
    expected = [(s.tag, round(s.score, 4)) for s in rec.suggest(["wooden jigsaw puzzle"], 4, 0)[0]]
    assert as_pairs(one.json()["tags"]) == expected

    products = [{"title": r["title"], "id": r["id"]} for r in toy_catalog(2)]
    batch = client.post("/suggest_batch", json={"products": products, "limit": 3, "threshold": 0})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["id"] for r in results] == [p["id"] for p in products]
    for product, result in zip(products, results, strict=True):
        want = rec.suggest([product["title"]], 3, 0)[0]
        assert as_pairs(result["tags"]) == [(s.tag, round(s.score, 4)) for s in want]

    assert client.get("/tags").json()["tags"] == rec.tags
    model = client.get("/model").json()
    assert model["ready"] and model["version"] == one.json()["model_version"]
    assert {"tagger", "fusion", "tfidf"} <= set(model["components"])
    assert model["components"]["tagger"]["format_version"] == 1
    shared = model["shared_passes"]  # this test's /suggest and /suggest_batch went through them
    assert shared["side_by_side"] == 1 and shared["products"] >= shared["passes"] + 1 >= 3
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.post("/reload").json()["status"] == "unchanged"


def test_a_bug_in_a_plain_route_answers_json(client: TestClient, monkeypatch) -> None:
    def broken(self):
        raise RuntimeError("bug")

    monkeypatch.setattr(ModelHolder, "describe", broken)
    answer = client.get("/model")
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "An unexpected error has occurred, please check the server log."
    }


def test_concurrent_requests_share_batches(client: TestClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    titles = [r["title"] for r in toy_catalog(3)]
    alone = {t: client.post("/suggest", json={"product": {"title": t}}).json() for t in titles}
    titles = titles * 5  # over 100 self-calls: BentoML's session renewal must not break them
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda t: client.post("/suggest", json={"product": {"title": t}}), titles)
        )
    assert all(a.status_code == 200 for a in answers)
    for title, answer in zip(titles, answers, strict=True):
        assert as_pairs(answer.json()["tags"]) == as_pairs(alone[title]["tags"])


def test_review_queue_over_http(client: TestClient) -> None:
    first = client.get("/queue", params={"position": 0})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["position"] == 0 and body["total"] > 0 and body["product"]["title"]
    assert body["model_version"] == client.get("/model").json()["model_version"]
    assert client.get("/queue", params={"position": body["total"]}).status_code == 404
    assert client.get("/queue", params={"position": -1}).status_code == 404


def test_feedback_over_http(client: TestClient) -> None:
    body = {
        "product": {"title": "plush bear", "id": 7},
        "accepted": ["Toys"],
        "added": ["brand:Nobody"],
        "reviewer": "ana",
    }
    answer = client.post("/feedback", json=body)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["id"] >= 1 and out["unknown"] == ["brand:Nobody"]
    assert out["model_version"] == client.get("/model").json()["version"]
    for bad, field in [
        ({**body, "rejected": ["Toys"]}, "also accepted"),
        ({**body, "accepted": "Toys"}, "accepted"),
        ({"accepted": ["Toys"]}, "product"),
        ({**body, "accepted": [], "added": []}, "at least one tag"),
        ({**body, "added": ["x" * 513]}, "at most 512 characters"),
        ({**body, "product": {"title": "x" * 2001}}, "product.title: 2,001 characters"),
        ({**body, "product": {"title": "x", "id": "9" * 257}}, "product.id: 257 characters"),
        # a review keeps id, title and description: a misspelt id would become a new product
        ({**body, "product": {"title": "x", "product_id": "p1"}}, "product_id"),
        ({**body, "product": {"title": "x", "desc": "a kite"}}, "desc"),
        ({**body, "model_version": 3}, "model_version"),
    ]:
        answer = client.post("/feedback", json=bad)
        assert answer.status_code == 400 and field in answer.text, (bad, answer.text)
    # the version that made the suggestions, as /suggest answered it, is the review's
    earlier = client.post("/feedback", json={**body, "model_version": "2"})
    assert earlier.status_code == 200 and earlier.json()["model_version"] == "2", earlier.text
    blank = client.post("/feedback", json={**body, "model_version": " "})  # none: the served one
    assert blank.json()["model_version"] == out["model_version"], blank.text
    # a client's retry under its Idempotency-Key is the first review, not a second one
    key = {"Idempotency-Key": "0f8e3b6c-review-1"}
    first = client.post("/feedback", json=body, headers=key)
    again = client.post("/feedback", json=body, headers=key)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] > out["id"]
    assert client.post("/feedback", json=body).json()["id"] == first.json()["id"] + 1
    other = client.post("/feedback", json={**body, "accepted": ["Books"]}, headers=key)
    assert other.status_code == 422 and "other content" in other.text, other.text
    bad_key = client.post("/feedback", json=body, headers={"Idempotency-Key": "two words"})
    assert bad_key.status_code == 400 and "Idempotency-Key" in bad_key.text, bad_key.text


def test_big_answers_are_compressed_for_clients_that_accept_gzip(client: TestClient) -> None:
    zipped = client.get("/docs.json", headers={"accept-encoding": "gzip"})
    plain = client.get("/docs.json", headers={"accept-encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.json() == plain.json()
    assert int(zipped.headers["content-length"]) < int(plain.headers["content-length"]) / 2
    body = {"products": [{"title": f"wooden puzzle {i}"} for i in range(20)], "threshold": 0}
    batch = client.post("/suggest_batch", json=body, headers={"accept-encoding": "gzip"})
    assert batch.status_code == 200 and batch.headers["content-encoding"] == "gzip", batch.headers
    small = client.get("/tags?limit=1", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers  # under 1 KB: as it is


def test_tags_are_found_and_paged(client: TestClient) -> None:
    whole = client.get("/tags").json()
    assert whole["count"] == len(whole["tags"]) > 3 and whole["offset"] == 0
    tag = whole["tags"][-1]
    found = client.get("/tags", params={"q": f" {tag[1:].upper()} "}).json()  # case apart
    assert tag in found["tags"] and found["count"] == len(found["tags"])
    assert all(tag[1:].casefold() in t.casefold() for t in found["tags"])
    assert [whole["counts"][whole["tags"].index(t)] for t in found["tags"]] == found["counts"]
    page = client.get("/tags?offset=1&limit=2").json()
    assert page["tags"] == whole["tags"][1:3] and page["counts"] == whole["counts"][1:3]
    assert page["count"] == whole["count"] and page["offset"] == 1
    assert client.get(f"/tags?offset={whole['count']}").json()["tags"] == []
    assert client.get("/tags?q=no-such-tag-anywhere").json()["count"] == 0
    for bad, word in (("offset=-1", "offset"), ("limit=0", "limit"), ("limit=x", "limit")):
        answer = client.get(f"/tags?{bad}")
        assert answer.status_code == 400 and word in answer.text, (bad, answer.text)


def test_get_routes_answer_head_with_the_headers_alone(client: TestClient) -> None:
    for path in ("/ui", "/tags", "/model", "/queue"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == get.status_code == 200, (path, head.status_code)
        assert (
            head.content == b"" and head.headers["content-length"] == get.headers["content-length"]
        )
        assert head.headers.get("content-encoding") == get.headers.get("content-encoding")
        plain = client.get(path, headers={"accept-encoding": "identity"})
        assert plain.content == get.content and plain.headers["content-length"] == str(
            len(get.content)
        )
    assert client.head("/suggest").status_code == 405  # an API of its own: POST only
    # the API spec lists GET alone: a HEAD operation would repeat its operation id
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns of a duplicate operation id
        spec = client.get("/docs.json").json()
    for path in ("/ui", "/tags", "/model", "/queue"):
        assert list(spec["paths"][path]) == ["get"], spec["paths"][path]


def test_an_unknown_query_field_is_a_400_naming_it(client: TestClient) -> None:
    for method, path, field in [
        ("GET", "/queue?positon=3", "positon"),
        ("GET", "/tags?limt=5", "limt"),
        ("POST", "/reload?forse=true", "forse"),
    ]:
        answer = client.request(method, path)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["detail"][0]["loc"] == ["query", field]
    assert client.get("/queue?position=1").json()["position"] == 1
    assert client.get("/ui?utm_source=mail").status_code == 200  # a page takes a link's own
    assert client.get("/docs?utm_source=mail", follow_redirects=False).status_code in (302, 307)
    assert client.get("/model?_=1733412345").status_code == 200  # a browser's cache buster


def test_a_body_not_sent_as_json_is_refused(client: TestClient) -> None:
    """What a page of another site may post from a reviewer's browser without a CORS preflight
    (plain text, a form, a body without a type) is a 415, and no review is stored."""
    review = {"product": {"title": "plush bear"}, "added": ["brand:Evil"]}
    first = client.post("/feedback", json=review).json()["id"]
    for headers in (
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "text/plain;charset=UTF-8"},
        {},
    ):
        answer = client.post("/feedback", content=json.dumps(review).encode(), headers=headers)
        assert answer.status_code == 415, (headers, answer.text)
        assert "application/json" in answer.json()["error"]
    assert client.post("/feedback", json=review).json()["id"] == first + 1  # none stored between
    ok = client.post(
        "/suggest", content=b'{"product": {"title": "lego"}}',
        headers={"content-type": "application/json; charset=utf-8"},
    )  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert client.post("/reload").status_code == 200  # a POST without a body passes
    page = client.get("/ui")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


BAD_JSON = [
    ("/suggest", {"product": {"title": "x"}, "include": [""]}, "include"),  # matches no tag
    ("/suggest", {"product": {"title": ""}}, "title"),
    ("/suggest", {"product": {"title": "  \t "}}, "title must not be empty"),
    ("/suggest", {"product": {"description": "no title"}}, "Field required"),
    ("/suggest", {"limit": 3}, "product"),
    ("/suggest", {"product": {"title": 42}}, "valid string"),
    ("/suggest", {"product": ["lego"]}, "product"),
    ("/suggest", {"product": {"title": "x", "id": True}}, "id"),
    ("/suggest", {"product": {"title": "x"}, "limit": "many"}, "limit"),
    ("/suggest", {"product": {"title": "x"}, "limit": 0}, "limit"),
    ("/suggest", {"product": {"title": "x"}, "limit": True}, "limit"),
    ("/suggest", {"product": {"title": "x"}, "limit": "3"}, "limit"),
    ("/suggest", {"product": {"title": "\u200b\u200b"}}, "title must not be empty"),
    ("/suggest", {"product": {"title": "x"}, "threshold": 1.5}, "threshold"),
    ("/suggest", [1, 2], "object"),
    ("/suggest", {"product": {"title": "x"}, "limt": 3}, "limt"),
    ("/search", {"query": "lego", "tags": ["Toys"] * 101}, "tags"),
    ("/recommend", {"history": ["p0-0"] * 1001}, "history"),
    ("/recommend", {"user": ""}, "user"),
    ("/recommend", {"history": [True]}, "history"),
    ("/suggest", {"product": {"title": "x"}, "exclude": [" \u3000"]}, "matches no tag"),
    ("/suggest", {"product": {"title": "x"}, "threshold": True}, "valid number"),
    ("/suggest", {"product": {"title": "x"}, "threshold": "0.5"}, "valid number"),
    ("/similar", {"id": "p0-0", "tag_weight": True}, "valid number"),
    ("/search", {"query": "lego", "tag_weight": "0.5"}, "valid number"),
    ("/suggest_batch", {"products": [{"title": "x"}], "threshhold": 0.5}, "threshhold"),
    ("/suggest_items", {"items": [{"title": "x"}], "limit": 3}, "limit"),
    ("/suggest_batch", {"products": {"title": "x"}}, "array"),
    ("/suggest_batch", {"products": [{"title": "ok"}, {"title": ""}]}, "products"),
    ("/suggest_batch", {"products": [{"title": f"t{i}"} for i in range(257)]}, "at most 256"),
    ("/suggest_items", {"items": [{"title": f"t{i}"} for i in range(257)]}, "at most 256"),
    ("/describe_items", {"items": [{"title": f"t{i}"} for i in range(257)]}, "at most 256"),
    ("/suggest_items", {"items": [{"title": "x", "limt": 3}]}, "did you mean 'limit'"),
    ("/suggest_items", {"items": [{"title": "x", "treshold": 0.5}]}, "did you mean 'threshold'"),
    ("/suggest_items", {"items": [{"title": "x", "LIMIT": 3}]}, "did you mean 'limit'"),
    ("/suggest", {"product": {"title": "x"}, "explain": "yes"}, "explain"),
    ("/suggest", {"product": {"title": "x"}, "explain": 1}, "explain"),
]


def test_explicit_nulls_and_whole_numbers_are_taken(client: TestClient) -> None:
    """`"threshold": null` is the tuned thresholds (docs/serving.md); 0 and 1 are numbers."""
    product = {"title": "lego city"}
    for body in ({"threshold": None}, {"threshold": 0}, {"threshold": 1}):
        answer = client.post("/suggest", json={"product": product, **body})
        assert answer.status_code == 200, (body, answer.text)
    answer = client.post("/suggest_batch", json={"products": [product], "threshold": None})
    assert answer.status_code == 200, answer.text
    item = {**product, "threshold": None}
    assert client.post("/suggest_items", json={"items": [item]}).status_code == 200
    # a catalog's own fields are ignored, also those named like an option
    priced = {**product, "price": 9.99, "limited": True, "limits": "none", "thresholds": [1]}
    assert client.post("/suggest_items", json={"items": [priced]}).status_code == 200


@pytest.mark.parametrize(("path", "body", "message"), BAD_JSON)
def test_bad_json_input_is_a_400(client: TestClient, path: str, body, message: str) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.text


def _record(exc: BaseException) -> logging.LogRecord:
    """The record BentoML's log_exception writes while ``exc`` is being handled."""
    try:
        raise exc
    except BaseException:
        return logging.LogRecord(
            service.BENTOML_REQUEST_LOGGER, logging.ERROR, __file__, 1,
            "Exception on %s [%s]", ("/suggest", "POST"), sys.exc_info(),
        )  # fmt: skip


def test_client_errors_are_logged_without_a_traceback() -> None:
    try:
        ProductIn.model_validate({"title": 5})
    except ValidationError as err:
        invalid = err
    log_filter = service.ClientErrorLogFilter()
    messages = []
    for exc in (invalid, BadInput("Invalid JSON")):
        record = _record(exc)
        assert log_filter.filter(record)
        assert (record.levelno, record.exc_info) == (logging.WARNING, None)
        messages.append(record.getMessage())
    assert messages == [
        "Rejected /suggest [POST]: 1 validation error(s) for ProductIn (title: string_type)",
        "Rejected /suggest [POST]: BadInput (400)",
    ]
    too_large = _record(service._BodyTooLarge())  # BodyLimit's 413
    assert log_filter.filter(too_large) and too_large.levelno == logging.WARNING
    assert too_large.getMessage().endswith("request body over its cap (413)")
    server_error = _record(RuntimeError("boom"))
    assert log_filter.filter(server_error)
    assert server_error.levelno == logging.ERROR and server_error.exc_info is not None
    assert server_error.getMessage() == "Exception on /suggest [POST]"


def test_a_rejected_request_logs_no_error(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    bento_logger = logging.getLogger(service.BENTOML_REQUEST_LOGGER)
    bento_logger.addHandler(caplog.handler)  # BentoML's loggers may not propagate to the root
    try:
        with caplog.at_level(logging.DEBUG, logger=service.BENTOML_REQUEST_LOGGER):
            answer = client.post("/suggest", json={"product": {"title": 5}})
    finally:
        bento_logger.removeHandler(caplog.handler)
    assert answer.status_code == 400
    logged = [r for r in caplog.records if r.name == service.BENTOML_REQUEST_LOGGER]
    assert logged and all(r.levelno == logging.WARNING and not r.exc_info for r in logged)
    assert "input_value" not in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"product": {"title": "caf\xe9 \xff"}}', "Invalid JSON"),  # not UTF-8
        (b'{"product": {"title": "x"', "Invalid JSON"),
        (b'{"product": {"title": "\\ud800"}}', "Invalid JSON"),  # lone surrogate
        (b"", "Field required"),
    ],
)
def test_undecodable_bodies_are_a_400(client: TestClient, raw: bytes, message: str) -> None:
    answer = client.post("/suggest", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and message in answer.text
    assert client.post("/suggest", json={"product": {"title": "lego"}}).status_code == 200


def test_long_descriptions_are_truncated_not_rejected(
    client: TestClient, models: dict[str, Path]
) -> None:
    description = "brick " * 200_000  # 1.2 MB
    body = {"product": {"title": "LEGO police station", "description": description}}
    answer = client.post("/suggest", json={**body, "threshold": 0, "limit": 3})
    assert answer.status_code == 200, answer.text[:300]
    rec = TagRecommender.load(models["v1"])
    ids = rec.encode([body["product"]])[0]
    assert len(ids) == rec.max_length
    want = rec.suggest([body["product"]], 3, 0)[0]
    assert as_pairs(answer.json()["tags"]) == [(s.tag, round(s.score, 4)) for s in want]
    assert client.post("/suggest", json={"product": {"title": "x" * 1_000_000}}).status_code == 200
    null = client.post("/suggest", json={"product": {"title": "lego", "description": None}})
    assert null.status_code == 200


def _catalog_bytes(fmt: str, rows: list[dict]) -> bytes:
    import pandas as pd

    frame = pd.DataFrame(rows).assign(tags=lambda f: f["tags"].map("|".join))
    buffer = io.BytesIO()
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer)
    return buffer.getvalue()


def _read_scored(fmt: str, data: bytes) -> list[dict]:
    import pandas as pd

    if fmt == "jsonl":
        return [json.loads(line) for line in data.decode().splitlines()]
    if fmt == "csv":
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        return [
            {"id": r["id"], "tags": [{"tag": t} for t in r["tags"].split("|") if t]}
            for r in frame.to_dict("records")
        ]
    return pd.read_parquet(io.BytesIO(data)).to_dict("records")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_suggest_file_returns_the_catalog_with_tags(
    client: TestClient, models: dict[str, Path], fmt: str
) -> None:
    rows = toy_catalog(31)  # 310 products: more than one chunk
    answer = client.post(
        "/suggest_file",
        files={"file": (f"shop.{fmt}", _catalog_bytes(fmt, rows))},
        data={"limit": "2", "threshold": "0"},
    )
    assert answer.status_code == 200, answer.text[:300]
    assert f'filename="shop.tags.{fmt}"' in answer.headers["content-disposition"]
    scored = _read_scored(fmt, answer.content)
    assert [str(r["id"]) for r in scored] == [r["id"] for r in rows]
    rec = TagRecommender.load(models["v1"])
    want = rec.suggest([r["title"] for r in rows[:10]], 2, 0)
    for got, suggestions in zip(scored[:10], want, strict=True):
        assert [t["tag"] for t in got["tags"]] == [s.tag for s in suggestions]
        if fmt != "csv":  # CSV: tags and scores columns
            assert [t["known"] for t in got["tags"]] == [s.known for s in suggestions]


@pytest.mark.parametrize(
    ("name", "content", "status", "message"),
    [
        ("bad.csv", b"id,title\n1,lego\n2,\n", 400, "bad.csv, line 3, field 'title': empty title"),
        ("bad.csv", b"id,name\n1,lego\n", 400, "missing column 'title'"),
        ("bad.csv", b"id,title\n1,caf\xe9\n", 400, "not valid UTF-8"),
        ("bad.jsonl", b'{"id": 1, "title": "x"}\n{broken\n', 400, "bad.jsonl, line 2"),
        ("bad.parquet", b"garbage", 400, "bad.parquet"),
        ("notes.txt", b"lego", 415, "expected a .jsonl"),
    ],
)
def test_malformed_files_are_a_4xx(
    client: TestClient, name: str, content: bytes, status: int, message: str
) -> None:
    answer = client.post("/suggest_file", files={"file": (name, content)})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_bad_file_requests_are_a_400(client: TestClient) -> None:
    assert client.post("/suggest_file").status_code == 400
    assert (
        client.post("/suggest_file", data={"file": "http://example.com/x.csv"}).status_code == 400
    )
    answer = client.post(
        "/suggest_file", files={"file": ("a.csv", b"id,title\n1,x\n")}, data={"limit": "many"}
    )
    assert answer.status_code == 400 and answer.json()["detail"][0]["loc"] == ["body", "limit"]
    renamed = client.post(
        "/suggest_file",
        files={"file": ("a.csv", b"sku,name\n1,lego police\n")},
        data={"id_column": "sku", "title_column": "name"},
    )
    assert renamed.status_code == 200 and renamed.text.startswith("id,title,tags,scores,known")


def test_upload_names_are_sanitised(client: TestClient) -> None:
    name = '玩具 "catalog"\r\nx-evil: 1.csv'
    answer = client.post("/suggest_file", files={"file": (name, b"id,title\n1,lego\n")})
    assert answer.status_code == 200, answer.text
    assert "x-evil" not in answer.headers
    assert answer.headers["content-disposition"].isascii()
    # a Chinese name comes back whole to clients that read RFC 6266's filename*
    answer = client.post("/suggest_file", files={"file": ("华为目录.csv", b"id,title\n1,lego\n")})
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="catalog.tags.csv"; ')
    assert disposition.endswith("filename*=UTF-8''%E5%8D%8E%E4%B8%BA%E7%9B%AE%E5%BD%95.tags.csv")


def test_suggest_items_without_a_model_is_a_503(make_service, current: Path) -> None:
    """/suggest_items (batched by BentoML) answers as /suggest does while no model is loaded:
    503 naming GET /model, not a 500."""
    from bentoml.exceptions import ServiceUnavailable

    svc = make_service(current)
    svc.holder.current = None
    with pytest.raises(ServiceUnavailable, match="no model loaded yet") as info:
        svc.suggest_items([ItemIn(title="lego")])
    assert info.value.error_code == 503


def test_the_published_examples_work_as_sent(client: TestClient) -> None:
    """A body built from the examples of GET /docs.json, as an API page's "try it out" sends
    it, is answered 200 by every endpoint whatever the model's tags."""
    spec = client.get("/docs.json").json()
    components = spec["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        return components[schema["$ref"].split("/")[-1]] if "$ref" in schema else schema

    def example(prop: dict):
        if "example" in prop:
            return prop["example"]
        if prop.get("examples"):
            return prop["examples"][0]
        for alt in prop.get("anyOf", []) + [prop]:
            if "$ref" in alt and "example" in resolve(alt):
                return resolve(alt)["example"]
        return None

    for path in ("/suggest", "/suggest_batch", "/similar", "/search", "/feedback", "/recommend"):
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        props = resolve(schema["schema"])["properties"]
        body = {k: v for k, v in ((k, example(p)) for k, p in props.items()) if v is not None}
        answer = client.post(path, json=body)
        assert answer.status_code == 200, (path, body, answer.text)
        if path == "/suggest":
            assert answer.json()["tags"], body  # the example's patterns narrow nothing


def test_file_jobs_past_the_cap_wait_until_one_ends(
    make_service, current: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LABELREC_MAX_FILE_JOBS uploads are handled at once; another is a 429 with Retry-After
    until one has streamed, failed or been dropped unread (its folder removed too)."""
    from starlette.datastructures import UploadFile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the jobs' folders go
    svc = make_service(current, LABELREC_MAX_FILE_JOBS="1")
    good, bad = b"id,title\n1,lego police\n2,hornby train\n", b"id,title\n1,\n"

    def upload(data: bytes) -> UploadFile:
        return UploadFile(io.BytesIO(data), filename="shop.csv", size=len(data))

    async def body(answer) -> bytes:
        return b"".join([part async for part in answer.body_iterator])

    def folders() -> list[Path]:
        return list(tmp_path.glob("labelrec-upload-*"))

    async def scenario() -> None:
        first = await svc.suggest_file(file=upload(good))
        assert first.status_code == 200 and len(folders()) == 1
        refused = await svc.suggest_file(file=upload(good))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
        assert "LABELREC_MAX_FILE_JOBS" in json.loads(refused.body)["error"]
        assert len(folders()) == 1  # refused before its file was copied
        assert (await body(first)).startswith(b"id,title,tags")
        assert folders() == [] and svc.file_jobs.running == 0
        failed = await svc.suggest_file(file=upload(bad))
        assert failed.status_code == 400 and svc.file_jobs.running == 0
        dropped = await svc.suggest_file(file=upload(good))
        assert dropped.status_code == 200 and svc.file_jobs.running == 1
        del dropped  # the client left before the first byte: the stream never started
        gc.collect()
        assert folders() == [] and svc.file_jobs.running == 0
        last = await svc.suggest_file(file=upload(good))
        assert (await body(last)).count(b"\n") == 3

    run(scenario())


def test_suggest_file_failing_before_its_first_chunk_is_an_error_answer(
    make_service, current: Path, tmp_path: Path, monkeypatch
) -> None:
    """A failure while the first chunk is scored comes out of the endpoint (logged, answered
    500 at once), not as a stream that never starts; the slot and the files are freed."""
    from starlette.datastructures import UploadFile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    svc = make_service(current, LABELREC_MAX_FILE_JOBS="1")

    def broken(*args, **kwargs):
        def scorer(products):
            raise RuntimeError("scoring failed")

        return scorer

    monkeypatch.setattr(service, "file_scorer", broken)
    data = b"id,title\n1,lego police\n"
    with pytest.raises(RuntimeError, match="scoring failed"):
        run(svc.suggest_file(file=UploadFile(io.BytesIO(data), filename="a.csv", size=len(data))))
    assert svc.file_jobs.running == 0 and list(tmp_path.glob("labelrec-upload-*")) == []


def test_ranking_runs_off_the_event_loop(make_service, current: Path, monkeypatch) -> None:
    """/suggest and /suggest_batch rank in a worker thread: the event loop keeps answering
    other requests while a batch with many patterns is ranked. One call ranks the batch as
    the library does product by product."""
    import threading

    svc = make_service(current)
    threads: list[int] = []
    rank = service.rank_items

    def recorded(*args, **kwargs):
        threads.append(threading.get_ident())
        return rank(*args, **kwargs)

    monkeypatch.setattr(service, "rank_items", recorded)
    products = [ProductIn(title="lego police station", id=1), ProductIn(title="hornby train")]
    got = run(svc.suggest_batch(products=products, limit=5, threshold=0.0, exclude=["*police*"]))
    run(svc.suggest(product=products[0], limit=5, threshold=0.0))
    assert len(threads) == 2 and threading.get_ident() not in threads
    rec = TagRecommender.load(current)
    for product, result in zip(products, got.results, strict=True):
        want = rec.suggest([product.title], 5, 0.0)[0]
        want = [s.tag for s in want if "police" not in s.tag][:5]
        assert [t.tag for t in result.tags][: len(want)] == want
    assert all("police" not in t.tag for r in got.results for t in r.tags)


def test_uploads_over_the_cap_are_a_413(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_UPLOAD_BYTES", 1000)
    rows = b"id,title\n" + b"".join(b"%d,lego police station\n" % i for i in range(100))
    answer = client.post("/suggest_file", files={"file": ("big.csv", rows)})
    assert answer.status_code == 413 and "LABELREC_MAX_UPLOAD_MB" in answer.json()["error"]
    small = client.post("/suggest_file", files={"file": ("ok.csv", rows[:200])})
    assert small.status_code == 200
    # A small .gz that expands over the cap: the cap counts the decompressed bytes.
    import gzip

    bomb = gzip.compress(b"id,title\n" + b"1,lego\n" + b" " * 50_000)
    assert len(bomb) < 1000
    answer = client.post("/suggest_file", files={"file": ("bomb.csv.gz", bomb)})
    assert answer.status_code == 413 and "once decompressed" in answer.json()["error"]
    ok = client.post("/suggest_file", files={"file": ("ok.csv.gz", gzip.compress(rows[:200]))})
    assert ok.status_code == 200 and ok.text.count("\n") >= 2
    broken = client.post("/suggest_file", files={"file": ("bad.csv.gz", b"not gzip at all")})
    assert broken.status_code == 400 and "not a valid gzip file" in broken.json()["error"]


@pytest.mark.parametrize("dictionary", [True, False])
def test_a_small_parquet_that_decodes_over_the_cap_is_a_413(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dictionary: bool
) -> None:
    """A few KB of Parquet can stand for gigabytes: compressed pages, or one long dictionary
    value repeated by index in every row; the cap counts the decoded bytes, told before
    decoding them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(service, "MAX_UPLOAD_BYTES", 200_000)
    bomb = tmp_path / "bomb.parquet"
    titles = ["lego " * 2_000] * 1_000  # 10 MB decoded
    table = pa.table({"id": [str(i) for i in range(1_000)], "title": titles})
    pq.write_table(table, bomb, compression="zstd", use_dictionary=dictionary)
    assert bomb.stat().st_size < 20_000
    answer = client.post("/suggest_file", files={"file": ("bomb.parquet", bomb.read_bytes())})
    assert answer.status_code == 413, answer.text
    assert "once decoded" in answer.json()["error"] and "LABELREC_MAX_UPLOAD_MB" in answer.text
    honest = tmp_path / "ok.parquet"
    rows = {"id": ["1", "2"], "title": ["lego police", "plush bear"], "tags": [["a"], []]}
    table = pa.table(rows)
    pq.write_table(table, honest, use_dictionary=dictionary)
    ok = client.post("/suggest_file", files={"file": ("ok.parquet", honest.read_bytes())})
    assert ok.status_code == 200, ok.text
    broken = client.post("/suggest_file", files={"file": ("bad.parquet", b"PAR1 not parquet")})
    assert broken.status_code == 400 and "bad.parquet" in broken.json()["error"]


def test_request_tag_patterns_are_capped(client: TestClient) -> None:
    """include / exclude patterns become regular expressions on the event loop, at a cost that
    grows with their length: each is capped as tags are."""
    product = {"title": "lego police"}
    for key in ("include", "exclude"):
        long = client.post("/suggest", json={"product": product, key: ["a*" * 257]})
        assert long.status_code == 400 and key in long.text, long.text
        batch = {"products": [product], key: ["a" * 513]}
        assert client.post("/suggest_batch", json=batch).status_code == 400
    ok = client.post("/suggest", json={"product": product, "exclude": ["a" * 512] * 100})
    assert ok.status_code == 200, ok.text


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    spec = client.get("/docs.json").json()
    paths = ("/suggest", "/suggest_batch", "/suggest_file", "/tags", "/model", "/reload")
    for path in (*paths, "/similar", "/search", "/recommend", "/ui"):
        assert path in spec["paths"], path
    text = json.dumps(spec)
    assert "LEGO City Police Station 60316" in text  # examples for the try-it-out form
    assert '"pin"' not in text  # internal to /suggest_items' batching
    schemas = spec["components"]["schemas"]
    search = next(v for k, v in schemas.items() if k.lower().startswith("search"))
    assert search["properties"]["limit"]["description"] == "Most products returned."
    assert client.get("/docs", follow_redirects=False).headers["location"] == "/"


# --------------------------------------------------------------------------- the registry


def test_champion_from_the_registry_and_alias_moves(
    registry: Path, make_service, models: dict[str, Path]
) -> None:
    import mlflow

    from labelrec.mlflow.registry import register_challenger

    client = mlflow.MlflowClient()
    first = register_challenger(models["v1"])
    client.set_registered_model_alias("labelrec", "champion", first.version)
    # version tags name the files it was trained on: public answers cut their paths
    client.set_model_version_tag("labelrec", first.version, "data.train.source", str(models["v1"]))
    svc = make_service("models:/labelrec@champion")
    info = svc.model()
    assert info["kind"] == "registry" and info["version"] == str(first.version)
    assert info["tags"]["data.train.source"] == "…/v1" and str(models["v1"]) not in str(info)
    assert info["name"] == "labelrec" and info["alias"] == "champion"
    assert "champion" in info["aliases"] and info["run_id"] and "P@1" in info["metrics"]
    assert info["backend"] == "onnx"
    # Load settings reach registry models too.
    torch_svc = make_service("models:/labelrec@champion", LABELREC_BACKEND="torch")
    assert torch_svc.model()["backend"] == "torch"
    before = run(svc.suggest(product=ProductIn(title="plush bear"), limit=12))
    assert before.model_version == str(first.version)
    assert svc.holder.reload().status == "unchanged"

    second = register_challenger(models["v2"])  # @challenger only: nothing changes
    assert svc.holder.reload().status == "unchanged"
    client.set_registered_model_alias("labelrec", "champion", second.version)
    result = svc.holder.reload()
    assert result.status == "reloaded" and result.model_version == str(second.version)
    after = run(svc.suggest(product=ProductIn(title="plush bear"), limit=12))
    assert after.model_version == str(second.version) and len(after.tags) > len(before.tags)

    broken = register_challenger(models["nan"])
    client.set_registered_model_alias("labelrec", "champion", broken.version)
    assert svc.holder.reload().status == "refused"
    assert svc.holder.current.version == str(second.version)
    # one download kept: the version served (the first one's and the refused one's removed)
    downloads = svc.holder._downloads
    assert downloads is not None and len(list(downloads.iterdir())) == 1
    after = run(svc.suggest(product=ProductIn(title="plush bear"), limit=12))
    assert after.model_version == str(second.version)
    svc.holder.stop()
    assert not downloads.exists()


def test_service_module_imports_no_mlflow() -> None:
    source = Path(service.__file__).read_text(encoding="utf-8")
    assert "import mlflow" not in source and "from mlflow" not in source


def test_bentofile_packages_match_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    import yaml

    root = Path(__file__).resolve().parents[1]
    bentofile = yaml.safe_load((root / "bentofile.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert bentofile["service"] == "labelrec.service:LabelRec"
    assert bentofile["python"]["lock_packages"] is False
    packages = bentofile["python"]["packages"]
    # torch: the version the Makefile installs (TORCH_SPEC), within pyproject's range
    from packaging.specifiers import SpecifierSet

    (pinned,) = re.findall(
        r"^TORCH_SPEC \?= torch==(\S+)$", (root / "Makefile").read_text(encoding="utf-8"), re.M
    )
    assert f"torch=={pinned}" in packages
    (torch_range,) = [d for d in project["dependencies"] if d.startswith("torch")]
    assert SpecifierSet(torch_range.removeprefix("torch")).contains(pinned)
    missing = [d for d in project["dependencies"] if d not in packages and d != torch_range]
    assert not missing, f"bentofile.yaml lacks pyproject dependencies {missing}"


# --------------------------------------------------------------------------- request body cap


def _echo_app(catch: bool) -> object:
    """A Starlette app that reads the whole body; with ``catch`` it answers 500 to any error
    while reading (as a framework's own error handling would)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request):  # noqa: ANN001, ANN202
        try:
            body = await request.body()
        except Exception:
            if not catch:
                raise
            return JSONResponse({"error": "internal"}, status_code=500)
        return JSONResponse({"bytes": len(body)})

    routes = [Route(p, echo, methods=["POST"]) for p in ("/suggest", "/suggest_file")]
    return Starlette(routes=routes)


@pytest.mark.parametrize("catch", [False, True])
def test_body_limit_413_by_content_length_or_while_streaming(catch: bool) -> None:
    uploads = {"/suggest_file": (8000, "LABELREC_MAX_UPLOAD_MB")}
    app = service.BodyLimit(_echo_app(catch), max_bytes=1000, per_path=uploads)
    with TestClient(app) as client:
        assert client.post("/suggest", content=b"x" * 1000).json() == {"bytes": 1000}
        declared = client.post("/suggest", content=b"x" * 1001)
        assert declared.status_code == 413 and "LABELREC_MAX_BODY_MB" in declared.json()["error"]

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(50):
                yield b"x" * 100

        streamed = client.post("/suggest", content=chunks())
        assert streamed.status_code == 413, streamed.text
        # uploads have their own cap, counted while they stream too
        assert client.post("/suggest_file", content=b"x" * 5000).json() == {"bytes": 5000}
        upload = client.post("/suggest_file", content=(b"x" * 1000 for _ in range(9)))
        assert upload.status_code == 413 and "LABELREC_MAX_UPLOAD_MB" in upload.json()["error"]


@pytest.mark.filterwarnings(  # the output file is closed before its folder goes
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)
def test_a_scored_file_stream_removes_its_folder_when_the_client_leaves(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    import threading
    from types import SimpleNamespace

    from labelrec.batch import stream_scored
    from labelrec.config import DataConfig

    workdir = tmp_path / "upload"
    workdir.mkdir()
    path = workdir / "upload.jsonl"
    rows = [{"id": str(i), "title": f"lego city police {i}"} for i in range(3 * service.FILE_CHUNK)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    snap = SimpleNamespace(recommender=TagRecommender.load(trained_model_dir))

    async def leave_after_the_first_chunk() -> bytes:
        scorer = service.file_scorer(snap, 3, None, threading.Lock())
        stream = stream_scored(path, workdir, DataConfig(), ".jsonl", scorer, service.FILE_CHUNK)
        first = await stream.__anext__()
        await stream.aclose()  # what the server does when the client disconnects
        return first

    first = asyncio.run(leave_after_the_first_chunk())
    assert first.count(b"\n") == service.FILE_CHUNK
    assert not workdir.exists()

    # gone while a chunk is being scored in its thread: the request task is cancelled there
    workdir.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    started, release = threading.Event(), threading.Event()
    score = snap.recommender.score

    def slow_score(products: list) -> tuple:
        started.set()
        release.wait(10)
        return score(products)

    snap.recommender.score = slow_score

    async def cancel_while_scoring() -> None:
        scorer = service.file_scorer(snap, 3, None, threading.Lock())
        stream = stream_scored(path, workdir, DataConfig(), ".jsonl", scorer, service.FILE_CHUNK)
        task = asyncio.ensure_future(stream.__anext__())
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            release.set()

    asyncio.run(cancel_while_scoring())
    assert not workdir.exists()
