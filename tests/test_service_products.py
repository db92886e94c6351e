"""The service's product endpoints (/similar, /search, /recommend, /ui) over its ASGI app, with
an index given as a directory, built from a catalog, or logged in MLflow with the champion."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import bentoml  # noqa: F401  (required: its absence fails the tests)
import pytest
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from labelrec.predict import TagRecommender  # noqa: E402
from labelrec.recommend import ProductSearch  # noqa: E402
from labelrec.service import ProductIn  # noqa: E402


@pytest.fixture(scope="module")
def client(service_client: TestClient) -> TestClient:
    """The ASGI app with LABELREC_INDEX and LABELREC_INTERACTIONS set (see conftest)."""
    return service_client


def call(coro):
    """Run a service method; (status, JSON body)."""
    result = asyncio.run(coro)
    if isinstance(result, JSONResponse):
        return result.status_code, json.loads(result.body)
    assert isinstance(result, BaseModel), result  # a typed answer BentoML encodes
    return 200, result.model_dump()


def test_similar_by_id_matches_the_library(
    client: TestClient, trained_model_dir: Path, service_index: Path
) -> None:
    r = client.post("/similar", json={"id": "p0-0", "limit": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    engine = ProductSearch.load(service_index, TagRecommender.load(trained_model_dir))
    expected = engine.similar("p0-0", limit=5)
    assert [x["id"] for x in body["results"]] == [x["id"] for x in expected["results"]]
    assert body["query"]["id"] == "p0-0" and "p0-0" not in [x["id"] for x in body["results"]]
    assert body["model_version"] == client.get("/model").json()["version"]
    # the neighbours of a Lego set are the other Lego sets, and they say why
    top = body["results"][0]
    assert top["id"].startswith(("p1-0", "p2-0", "p3-0", "p4-0", "p0-1", "p0-8"))
    assert "brand:Lego" in top["shared_tags"]


def test_a_numeric_id_is_read_as_its_text(client: TestClient) -> None:
    r = client.post("/similar", json={"id": 12345})  # as a CSV's ids are read: "12345"
    assert r.status_code == 404 and "unknown product id '12345'" in r.text
    r = client.post("/recommend", json={"history": ["p0-0", 12345]})  # likewise in a history
    assert r.status_code == 404 and "unknown product id '12345'" in r.text


def test_similar_for_a_new_product_and_tag_filters(client: TestClient) -> None:
    r = client.post(
        "/similar",
        json={"product": {"title": "Hornby railway engine"}, "limit": 4, "tags": ["Hobbies"]},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results and all("Hobbies" in x["tags"] for x in results)
    assert r.json()["query"]["tags"], "the new product is tagged by the model"
    for path, body in (("/similar", {"id": "p0-0"}), ("/search", {"query": "jigsaw"})):
        for weight in (None, 0, 1):  # null: the index's default
            answer = client.post(path, json={**body, "tag_weight": weight})
            assert answer.status_code == 200, (path, weight, answer.text)


def test_search_ranks_products_for_a_query(client: TestClient) -> None:
    r = client.post("/search", json={"query": "jigsaw puzzle", "limit": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["text"] == "jigsaw puzzle"
    assert len(body["results"]) == 3
    assert all("puzzle" in x["title"] for x in body["results"])
    r = client.post("/search", json={"query": "jigsaw 拼图", "limit": 1})
    assert r.status_code == 200 and '"jigsaw 拼图"' in r.text  # UTF-8, not \u escapes


def test_recommend_from_interactions_and_history(client: TestClient) -> None:
    r = client.post("/recommend", json={"user": "u1", "limit": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["history"]) == ["p0-0", "p1-1"]
    ids = [x["id"] for x in body["results"]]
    assert ids and not {"p0-0", "p1-1"} & set(ids)
    cold = client.post("/recommend", json={"user": "nobody", "limit": 3}).json()
    assert cold["strategy"] == "popular" and len(cold["results"]) == 3
    given = client.post("/recommend", json={"history": ["p0-2"], "limit": 3}).json()
    assert given["history"] == ["p0-2"] and given["results"]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/similar", {"id": "no-such-product"}, 404, "unknown product id"),
        ("/similar", {"id": "p0-0", "product": {"title": "x"}}, 400, "either"),
        ("/similar", {"limit": 3}, 400, "give an indexed product"),
        ("/similar", {"id": "p0-0", "tags": ["no such tag"]}, 400, "no such tag"),
        ("/search", {"query": "   "}, 400, "empty query"),
        ("/search", {"query": "!!! ，。"}, 400, "no letters or digits"),
        ("/search", {"query": "puzzle", "limit": 0}, 400, "limit"),
        ("/recommend", {"limit": 3}, 400, "user"),
        ("/recommend", {"history": ["nope"]}, 404, "nope"),
    ],
)
def test_bad_product_requests_are_a_clear_4xx(
    client: TestClient, path: str, body: dict, status: int, message: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str)  # {"error": ...}, the shape of every error answer
    assert message in r.text
    assert client.post("/search", json={"query": "lego"}).status_code == 200


def test_ui_page_and_model_info(client: TestClient) -> None:
    r = client.get("/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="suggest-btn"' in r.text
    info = client.get("/model").json()
    assert info["index"]["n_products"] == 50 and info["index"]["users"] == 4


def test_without_an_index_the_product_endpoints_say_how_to_get_one(
    make_service, trained_model_dir: Path
) -> None:
    svc = make_service(trained_model_dir)
    status, body = call(svc.search(query="lego"))
    assert status == 503 and "LABELREC_INDEX" in body["error"]
    assert svc.holder.describe().get("index") is None


def test_product_answers_encode_for_a_service_that_depends_on_this_one(
    make_service, trained_model_dir: Path, toy_data_dir: Path
) -> None:
    """``bentoml.depends`` asks for BentoML's pickle format, a browser for JSON: the answers of
    /similar, /search and /recommend are typed values that BentoML encodes either way."""
    import pickle

    from _bentoml_impl.serde import JSONSerde, PickleSerde

    from labelrec.service import LabelRec

    svc = make_service(trained_model_dir, LABELREC_CATALOG=str(toy_data_dir / "valid.jsonl"))
    answers = {
        "similar": asyncio.run(svc.similar(id="p5-0", limit=2)),
        "search": asyncio.run(svc.search(query="lego", limit=2)),
        "recommend": asyncio.run(svc.recommend(history=["p5-0"], limit=2)),
    }
    for name, answer in answers.items():
        assert isinstance(answer, BaseModel), (name, answer)
        spec = LabelRec.apis[name].output_spec
        pickled, as_json = (
            b"".join(
                bytes(part)
                for part in asyncio.run(spec.to_http_response(answer, serde())).body_iterator
            )
            for serde in (PickleSerde, JSONSerde)
        )
        assert pickle.loads(pickled) == json.loads(as_json) == answer.model_dump()
    assert answers["recommend"].history == ["p5-0"] and answers["similar"].results


def test_index_built_from_a_catalog_for_each_version(
    make_service, trained_model_dir: Path, toy_data_dir: Path
) -> None:
    svc = make_service(trained_model_dir, LABELREC_CATALOG=str(toy_data_dir / "valid.jsonl"))
    assert svc.holder.describe()["index"]["n_products"] == 10
    status, body = call(svc.similar(id="p5-0", limit=2))
    assert status == 200 and body["results"][0]["id"] == "p5-1"
    assert call(svc.similar(id="p0-0"))[0] == 404  # only the catalog's products


def test_a_bad_interactions_file_costs_the_users_histories_only(
    make_service, trained_model_dir: Path, service_index: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.csv"
    events.write_text("user_id,product_id,weight\nu1,p0-0,1\n\nu1,p0-1,lots\n", "utf-8")
    svc = make_service(
        trained_model_dir, LABELREC_INDEX=str(service_index), LABELREC_INTERACTIONS=str(events)
    )
    assert call(svc.similar(id="p0-0", limit=2))[0] == 200  # the index serves
    assert call(svc.recommend(history=["p0-0"], limit=2))[0] == 200  # a given history too
    status, body = call(svc.recommend(user="u1", limit=2))
    assert status == 503 and "events.csv, line 4, field 'weight'" in body["error"]
    error = svc.holder.describe()["index"]["interactions_error"]  # GET /model says it too
    assert "events.csv, line 4, field 'weight'" in error


def test_interaction_weights_decay_with_the_half_life_setting(
    make_service, trained_model_dir: Path, service_index: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,product_id,timestamp\nu1,p0-0,2024-01-01\nu1,p1-1,2024-01-03\n", "utf-8"
    )
    weights = {}
    for half_life in ("", "1"):  # empty: unset, no decay
        svc = make_service(
            trained_model_dir,
            LABELREC_INDEX=str(service_index),
            LABELREC_INTERACTIONS=str(events),
            LABELREC_HALF_LIFE_DAYS=half_life,
        )
        signals = svc.holder.current.extras["index"].signals
        rows, values = signals.history("u1")
        weights[half_life] = dict(zip(rows.tolist(), values.tolist(), strict=True))
    assert sorted(weights[""].values()) == [1.0, 1.0]
    assert sorted(weights["1"].values()) == [0.25, 1.0]  # two days old: a quarter
    with pytest.raises(ValueError, match="LABELREC_HALF_LIFE_DAYS=.0.: Input should be greater"):
        make_service(trained_model_dir, LABELREC_HALF_LIFE_DAYS="0")


def test_a_rebuilt_index_is_served_at_the_next_reload(
    trained_model_dir: Path, service_index: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """`labelrec product-index` run again into the served folder: a reload builds the search
    again for the model serving, which is not loaded again."""
    from labelrec.recommend import build_index_from_file
    from labelrec.serving import ModelHolder, index_extension

    index = shutil.copytree(service_index, tmp_path / "index")
    holder = ModelHolder(str(trained_model_dir))
    holder.extensions["index"] = index_extension(str(index))
    assert holder.reload().status == "reloaded"
    first = holder.current
    assert holder.reload().status == "unchanged"
    catalog = toy_data_dir / "valid.jsonl"
    build_index_from_file(first.recommender, catalog).save(index)
    result = holder.reload()
    assert result.status == "reloaded" and result.model_version == first.version
    assert holder.current.recommender is first.recommender
    assert len(holder.current.extras["index"].index.ids) == 10  # valid.jsonl's products
    assert len(first.extras["index"].index.ids) > 10  # requests in flight keep the old one
    assert holder.reload().status == "unchanged"


def test_new_interactions_are_read_without_loading_the_index_again(
    trained_model_dir: Path, service_index: Path, tmp_path: Path
) -> None:
    from labelrec.serving import ModelHolder, index_extension

    events = tmp_path / "events.csv"
    events.write_text("user_id,product_id\nu1,p0-0\n", "utf-8")
    holder = ModelHolder(str(trained_model_dir))
    holder.extensions["index"] = index_extension(str(service_index), interactions=str(events))
    assert holder.reload().status == "reloaded"
    first = holder.current.extras["index"]
    events.write_text("user_id,product_id\nu1,p0-0\nu2,p1-0\n", "utf-8")
    assert holder.reload().status == "reloaded"
    again = holder.current.extras["index"]
    assert again.index is first.index  # the same index, not read again
    assert len(again.signals.user_index) == 2 and len(first.signals.user_index) == 1
    events.write_text("user_id,product_id\nu1,p0-0\n\nu2,p1-0,lots\n", "utf-8")
    assert holder.reload().status == "reloaded"  # a bad file costs the histories alone
    broken = holder.current.extras["index"]
    assert broken.signals is None and "line 4" in broken.interactions_error


def _reload_with(model_dir: Path, good: Path, bad: Path):
    """Load a model with the index ``good``, then reload it with the index ``bad``."""
    from labelrec.serving import ModelHolder, index_extension

    holder = ModelHolder(str(model_dir))
    holder.extensions["index"] = index_extension(str(good))
    assert holder.reload(force=True).status == "reloaded"
    holder.extensions["index"] = index_extension(str(bad))
    return holder.reload(force=True)


def test_an_index_from_another_model_is_refused(
    trained_model_dir: Path, service_index: Path, tmp_path: Path
) -> None:
    other = shutil.copytree(service_index, tmp_path / "other")
    tags = json.loads((other / "tags.json").read_text())
    tags["n_model_tags"] += 1
    (other / "tags.json").write_text(json.dumps(tags))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["n_model_tags"] += 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = _reload_with(trained_model_dir, service_index, other)
    assert result.status == "refused" and "rebuild it" in result.error

    # The same number of tags, two of them swapped: another model's index all the same.
    swapped = shutil.copytree(service_index, tmp_path / "swapped")
    tags = json.loads((swapped / "tags.json").read_text())
    names = tags["tags"]
    names[0], names[1] = names[1], names[0]
    (swapped / "tags.json").write_text(json.dumps(tags))
    result = _reload_with(trained_model_dir, service_index, swapped)
    assert result.status == "refused" and "other tags or another order" in result.error


def test_an_index_from_the_same_tags_trained_again_is_refused(
    trained_model_dir: Path, service_index: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """Same tags, another save: the index's embeddings come from another backbone."""
    manifest = json.loads((service_index / "manifest.json").read_text())
    info = json.loads((trained_model_dir / "labelrec.json").read_text())
    assert manifest["save_id"] and manifest["save_id"] == info["save_id"]
    again = shutil.copytree(
        trained_model_dir, tmp_path / "again", ignore=shutil.ignore_patterns("checkpoints")
    )
    (again / "labelrec.json").write_text(json.dumps({**info, "save_id": "0" * 32}))
    with pytest.raises(ValueError, match="rebuild it with `labelrec product-index`"):
        ProductSearch.load(service_index, TagRecommender.load(again))
    good = tmp_path / "good"  # an index of the model trained again
    from labelrec.recommend import build_index_from_file

    build_index_from_file(TagRecommender.load(again), toy_data_dir / "train.jsonl").save(good)
    result = _reload_with(again, good, service_index)
    assert result.status == "refused" and "0" * 32 in result.error


def test_an_index_is_queried_with_the_tag_generator_as_it_was_built(
    trained_model_dir: Path, service_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Query tags are scored as the products' were: the manifest's model is loaded without
    its generator where the index was built without it, and a model loaded otherwise than
    the index was built is refused."""
    import labelrec.recommend.engine as engine

    manifest = json.loads((service_index / "manifest.json").read_text())
    assert manifest["generator"] is False  # the tiny model has none
    loads: list[dict] = []

    def load_tagger(source, **kwargs):
        loads.append(kwargs)
        return TagRecommender.load(source, **kwargs)

    monkeypatch.setattr(engine, "load_tagger", load_tagger)
    assert ProductSearch.load(service_index).tagger.uses_generator is False
    assert loads == [{"generate": False}]
    built_with = shutil.copytree(service_index, tmp_path / "with_generator")
    (built_with / "manifest.json").write_text(json.dumps({**manifest, "generator": True}))
    with pytest.raises(ValueError, match="built with the model's tag generator and this model"):
        ProductSearch.load(built_with, TagRecommender.load(trained_model_dir))


def test_a_service_starting_with_a_stale_index_tags_and_says_why_products_are_down(
    make_service, trained_model_dir: Path, service_index: Path, tmp_path: Path
) -> None:
    """No version was serving: the model serves without its index, tagging is up and the
    product endpoints answer 503 with the reason."""
    info = json.loads((trained_model_dir / "labelrec.json").read_text())
    again = shutil.copytree(
        trained_model_dir, tmp_path / "again", ignore=shutil.ignore_patterns("checkpoints")
    )
    (again / "labelrec.json").write_text(json.dumps({**info, "save_id": "0" * 32}))
    svc = make_service(again, LABELREC_INDEX=str(service_index))
    status, body = call(svc.suggest(product=ProductIn(title="plush bear"), limit=3))
    assert status == 200 and body["tags"]
    status, body = call(svc.similar(id="p0-0"))
    assert status == 503 and "rebuild it with `labelrec product-index`" in body["error"]
    assert "rebuild it" in svc.holder.describe()["extension_errors"]["index"]


def test_index_logged_with_the_champion_is_served(
    registry: Path,
    make_service,
    trained_model_dir: Path,
    service_index: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tempfile

    import mlflow

    from labelrec.mlflow.index import download_index, log_index
    from labelrec.mlflow.registry import register_challenger

    version = register_challenger(trained_model_dir)
    mlflow.MlflowClient().set_registered_model_alias("labelrec", "champion", version.version)
    assert download_index("models:/labelrec@champion") is None
    logged = log_index(service_index, "models:/labelrec@champion")
    assert logged["model_version"] == int(version.version) and logged["n_products"] == 50
    local = download_index(f"models:/labelrec/{version.version}")
    assert (local / "manifest.json").is_file()
    # logged again, an index of other files: the version's index is that one's files alone
    smaller = tmp_path / "smaller"
    shutil.copytree(service_index, smaller)
    (smaller / "extra.txt").write_text("only here", "utf-8")
    gone = next(p.name for p in sorted(service_index.iterdir()) if p.name != "manifest.json")
    (smaller / gone).unlink()  # a file the first index has and this one lacks
    log_index(smaller, "models:/labelrec@champion")
    again = download_index(f"models:/labelrec/{version.version}", tmp_path / "again")
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in smaller.iterdir())
    assert (
        log_index(service_index, "models:/labelrec@champion")["artifact_uri"]
        == logged["artifact_uri"]
    )  # the first index again: its own folder, served below
    # a logged model that is not registered (models:/m-<id>): the run that logged it
    from labelrec.mlflow import log_model
    from labelrec.mlflow.index import index_uri

    with mlflow.start_run() as run:
        unregistered = log_model(trained_model_dir, name="tagger").model_uri
    assert unregistered.startswith("models:/m-") and index_uri(unregistered) is None
    logged = log_index(service_index, unregistered)
    assert (logged["run_id"], logged["model_version"]) == (run.info.run_id, None)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    svc = make_service("models:/labelrec@champion")
    assert svc.holder.describe()["index"]["n_products"] == 50
    status, body = call(svc.similar(id="p0-0", limit=3))
    assert status == 200 and body["model_version"] == str(version.version)
    svc.holder.reload(True, False)  # the version again, its index downloaded again
    assert call(svc.similar(id="p0-0", limit=3))[0] == 200
    # the index is read into memory, then deleted; the model stays downloaded while it serves
    left = [p.name for p in temp.iterdir() if not p.name.startswith("labelrec-models-")]
    assert left == []


def test_product_index_logs_the_index_with_the_registered_version(
    registry: Path, trained_model_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys
) -> None:
    import mlflow

    from labelrec import cli
    from labelrec.mlflow.index import INDEX_TAG, download_index
    from labelrec.mlflow.registry import register_challenger

    version = register_challenger(trained_model_dir)
    uri = f"models:/labelrec/{version.version}"
    args = ["product-index", uri, "--catalog", str(toy_data_dir / "valid.jsonl")]
    assert cli.main([*args, "--output", str(tmp_path / "ix"), "--log-mlflow", "--no-progress"]) == 0
    assert f"model version {version.version}" in capsys.readouterr().out
    tags = mlflow.MlflowClient().get_model_version("labelrec", version.version).tags
    assert re.search(r"/index/[0-9a-f]{16}$", tags[INDEX_TAG])
    assert tags[f"{INDEX_TAG}.products"] == "10"
    local = download_index(uri, tmp_path / "down")
    assert json.loads((local / "manifest.json").read_text())["n_products"] == 10
    # a local model directory: the index goes to a run of its own (under the verb's former name)
    out = tmp_path / "ix2"
    assert (
        cli.main(
            [
                "index-build",
                str(trained_model_dir),
                *args[2:],
                "--output",
                str(out),
                "--log-mlflow",
                "--no-progress",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "(run)" in out and "`index-build` is an alias of `product-index`" in err
