"""Edges of the describer's request (tags, decoding settings), the service's tokens and caps,
Parquet uploads, public paths, reviews of held-out products and the front ends' product lines."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from labelrec.config import ConfigError
from labelrec.predict import TagRecommender


@pytest.fixture(scope="module")
def rec(trained_model_dir: Path) -> TagRecommender:
    return TagRecommender.load(trained_model_dir)


class FakeDescriber:
    """Writes "<label> <title>"; ``with_decoding`` refuses a minimum over the maximum."""

    def __init__(self, label: str = "own") -> None:
        self.label = label
        self.written: list[bool] = []  # whether the service's busy slot was held, a call
        self.holder = None

    def with_decoding(self, **settings: int | float) -> FakeDescriber:
        if settings.get("min_new_tokens", 0) > settings.get("max_new_tokens", 64):
            raise ConfigError("describe.min_new_tokens: must be <= describe.max_new_tokens")
        other = FakeDescriber(f"beams{settings.get('num_beams', 1)}")
        other.holder, other.written = self.holder, self.written  # one record for the copies
        return other

    def describe(self, products: list[dict]) -> list[str]:
        if self.holder is not None:
            self.written.append(self.holder.busy.held)
        return [f"{self.label} {p['title']}" for p in products]


class Slot:
    """A stand-in for the service's busy slot that says whether it is held."""

    def __init__(self) -> None:
        self.held = False

    def __enter__(self) -> Slot:
        self.held = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.held = False


@pytest.fixture
def describing(make_service, trained_model_dir: Path, tmp_path: Path):
    """The service with a fake describer (no decoder to train) and a busy slot that tells."""
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    svc = make_service(model)
    svc.holder.busy = Slot()
    fake = FakeDescriber()
    fake.holder = svc.holder
    svc.describer = fake
    return svc


# ---------------------------------------------------------------------- /describe's request


def test_describe_takes_null_tags_as_none() -> None:
    """`"tags": null` (as a front end sends a product without tags) is a product without tags,
    not a 400."""
    from labelrec.service import DescribeIn

    assert DescribeIn.model_validate({"title": "kite", "tags": None}).tags == []


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"max_new_tokens": 513}, "max_new_tokens"),  # over MAX_DESCRIBE_TOKENS
        ({"min_new_tokens": 513}, "min_new_tokens"),
        ({"num_beams": "2"}, "num_beams"),  # a number as a string: not a number
        ({"num_beams": 2.0}, "num_beams"),
    ],
)
def test_describe_decoding_settings_are_capped_and_strict(settings: dict, field: str) -> None:
    """A request's decoding settings are refused past their caps (beams and length multiply
    its cost) and when not integers, before any describer sees them."""
    from pydantic import ValidationError

    from labelrec.service import MAX_DESCRIBE_TOKENS, DecodingIn

    assert MAX_DESCRIBE_TOKENS == 512
    with pytest.raises(ValidationError, match=field):
        DecodingIn.model_validate(settings)
    ok = DecodingIn.model_validate({"max_new_tokens": 512, "min_new_tokens": 512})
    assert (ok.max_new_tokens, ok.min_new_tokens) == (512, 512)


def test_empty_decoding_settings_keep_the_describer() -> None:
    """`"decoding": {}` is the describer's own settings: the request joins the shared batches."""
    from labelrec.service import DecodingIn, with_request_decoding

    fake = FakeDescriber()
    assert with_request_decoding(fake, None) is fake
    assert with_request_decoding(fake, DecodingIn()) is fake
    assert with_request_decoding(fake, DecodingIn(num_beams=2)) is not fake


def test_bad_decoding_settings_are_a_400_even_without_products(describing) -> None:
    """The decoding settings are checked before anything else: an empty list does not hide
    a bad setting."""
    from labelrec.service import DecodingIn

    bad = DecodingIn(max_new_tokens=2, min_new_tokens=5)
    answer = asyncio.run(describing.describe(products=[], decoding=bad))
    assert answer.status_code == 400 and b"decoding.min_new_tokens" in answer.body
    assert asyncio.run(describing.describe(products=[])) == []


def test_describe_with_its_own_settings_holds_the_busy_slot(describing) -> None:
    """A request with its own decoding settings writes while holding a pass's slot, as every
    other request does (the decoder does not run beside the slots' passes)."""
    from labelrec.service import DecodingIn, DescribeIn

    out = asyncio.run(
        describing.describe(products=[DescribeIn(title="kite")], decoding=DecodingIn(num_beams=2))
    )
    assert [o.description for o in out] == ["beams2 kite"]  # the copy wrote
    plain = asyncio.run(describing.describe(products=[DescribeIn(title="kite")]))
    assert [o.description for o in plain] == ["own kite"]
    assert describing.describer.written == [True, True]


def test_typed_values_names_an_unknown_key() -> None:
    """An unknown setting is a ConfigError naming it, not a KeyError."""
    from labelrec.config import DescribeConfig, typed_values

    assert typed_values(DescribeConfig, {"num_beams": "2"}, "describe") == {"num_beams": 2}
    with pytest.raises(ConfigError, match="describe.beams: unknown key"):
        typed_values(DescribeConfig, {"beams": 2}, "describe")


# ---------------------------------------------------------------------- tokens


def test_review_token_guards_posts_only() -> None:
    """Only a POST to /feedback needs the token: a browser's preflight (OPTIONS, which never
    carries the Authorization header) and other methods reach the app."""
    from pydantic import SecretStr
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from labelrec.service import NeedsToken

    async def answer(request) -> JSONResponse:
        return JSONResponse({"method": request.method})

    inner = Starlette(routes=[Route("/feedback", answer, methods=["GET", "OPTIONS", "POST"])])
    client = TestClient(NeedsToken(inner, ("/feedback",), SecretStr("s3cret"), "TOKEN"))
    assert client.options("/feedback").json() == {"method": "OPTIONS"}
    assert client.get("/feedback").json() == {"method": "GET"}
    assert client.post("/feedback", json={}).status_code == 401


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LABELREC_REVIEW_TOKEN", "two words"),
        ("LABELREC_ADMIN_TOKEN", "pässwort"),
        ("LABELREC_ADMIN_TOKEN", "tab\there"),
    ],
)
def test_each_token_is_visible_ascii_and_its_value_is_not_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    """Both tokens travel in an Authorization header: one with a space or a non-ASCII letter is
    refused at start-up, named without showing its value (logs keep the error)."""
    from labelrec.service import ServiceSettings, load_settings

    for field in ServiceSettings.model_fields:
        monkeypatch.delenv(ServiceSettings.env_name(field), raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}: a token is visible ASCII") as err:
        load_settings()
    assert value not in str(err.value) and value not in capsys.readouterr().err


# ---------------------------------------------------------------------- request caps


def test_more_tag_patterns_than_the_cap_are_a_400(service_client) -> None:
    """A request's include / exclude patterns are at most MAX_LIMIT (each is a regular
    expression tried on every tag)."""
    from labelrec.service import MAX_LIMIT

    product = {"title": "lego police"}
    for key in ("include", "exclude"):
        many = service_client.post("/suggest", json={"product": product, key: ["a"] * MAX_LIMIT})
        assert many.status_code == 200, many.text
        over = {"product": product, key: ["a"] * (MAX_LIMIT + 1)}
        answer = service_client.post("/suggest", json=over)
        assert answer.status_code == 400 and key in answer.text, answer.text


# ---------------------------------------------------------------------- Parquet uploads


def _dictionary_parquet(path: Path, rows: int, text: str, column: str = "title") -> Path:
    """A Parquet file whose ``column`` repeats one long text by index (a small file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([text]))
    if column == "tags":  # a list of one tag a row
        offsets = pa.array(list(range(rows + 1)), pa.int32())
        table = pa.table(
            {"title": ["kite"] * rows, "tags": pa.ListArray.from_arrays(offsets, values)}
        )
    else:
        table = pa.table({"id": [str(i) for i in range(rows)], column: values})
    # no Arrow schema in the file (as other writers make them): read back, it is plain text
    pq.write_table(table, path, use_dictionary=True, store_schema=False)
    return path


def test_a_compressed_parquet_is_refused_from_its_footer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages that decompress past the cap are refused from the sizes in the footer, before any
    row group is read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from labelrec.batch import parquet_capped
    from labelrec.serving import ServiceError

    path = tmp_path / "zipped.parquet"
    table = pa.table({"id": [str(i) for i in range(1_000)], "title": ["lego " * 2_000] * 1_000})
    pq.write_table(table, path, compression="zstd", use_dictionary=False)

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("a row group was decoded before the footer refused the file")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", unread)
    with pytest.raises(ServiceError, match="once decoded") as err:
        parquet_capped(path, "zipped.parquet", 200_000, "LABELREC_MAX_UPLOAD_MB")
    assert err.value.status == 413


@pytest.mark.parametrize("column", ["title", "tags"])
def test_a_dictionary_parquet_is_counted_without_expanding_it(tmp_path: Path, column: str) -> None:
    """One long text repeated by index in every row (a title, or a tag in a list) counts as
    the bytes it decodes to, and counting it does not decode it: its memory stays small."""
    import pyarrow as pa

    from labelrec.batch import parquet_capped
    from labelrec.serving import ServiceError

    rows, text = 2_000, "lego " * 10_000  # 100 MB decoded, a few KB on disk
    path = _dictionary_parquet(tmp_path / "bomb.parquet", rows, text, column)
    parent = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(parent)
    pa.set_memory_pool(pool)
    try:
        total = parquet_capped(path, "bomb.parquet", 1 << 40)
    finally:
        pa.set_memory_pool(parent)
    assert total >= rows * len(text)
    assert pool.max_memory() < 20 * 2**20, pool.max_memory()
    with pytest.raises(ServiceError, match="once decoded"):
        parquet_capped(path, "bomb.parquet", 10 << 20)


# ---------------------------------------------------------------------- public paths


def test_a_path_ends_at_the_end_of_its_line() -> None:
    """A path's folders may hold spaces, one or more in a row, not line breaks: the next line
    of an error is not read as part of the path."""
    from labelrec.serving import public_text

    text = "no file /srv/models/uk\nsee docs/help"
    assert public_text(text) == "no file …/uk\nsee docs/help"
    assert public_text("in /srv/my models/uk now") == "in …/uk now"
    assert public_text("in /srv/my  models/uk now") == "in …/uk now"
    assert public_text("see /a/b  and /c/d now") == "see …/b  and …/d now"


def test_public_values_cut_paths_in_lists_file_uris_and_windows_paths() -> None:
    """GET /model's registry tags may name the training files as a list, a ``file:`` URI or a
    Windows path: each is cut to its last part; a registry URI is kept whole."""
    from labelrec.serving import public_values

    tags = {
        "data.holdout": ["/srv/data/test.jsonl", "/srv/data/more.jsonl"],
        "data.train.source": "file:///srv/data/train.jsonl",
        "data.valid.source": r"C:\data\valid.jsonl",
        "model": "models:/labelrec/3",
        "epochs": 3,
    }
    assert public_values({"tags": tags}) == {
        "tags": {
            "data.holdout": ["…/test.jsonl", "…/more.jsonl"],
            "data.train.source": "file://…/train.jsonl",
            "data.valid.source": "…/valid.jsonl",
            "model": "models:/labelrec/3",
            "epochs": 3,
        }
    }


# ---------------------------------------------------------------------- held-out reviews


def _held_out_splits(tmp_path: Path, holdout: list[dict], *more: list[dict]):
    """merge_feedback of reviews.jsonl over train t1 and valid v1, with held-out catalogs."""
    from conftest import write_jsonl

    from labelrec.data import Product
    from labelrec.runs import Splits, merge_feedback

    rows = [
        {"id": "v1", "title": "plush owl", "tags": ["Plush"]},  # a review of a valid product
        {"id": "n1", "title": "1000", "tags": ["Numbers"]},  # a title of digits only
        {"id": "n2", "title": "wooden kite", "tags": ["Outdoor"]},
    ]
    reviewed = write_jsonl(rows, tmp_path / "reviewed.jsonl")
    catalogs = [
        write_jsonl(rows, tmp_path / f"holdout{i}.jsonl") for i, rows in enumerate((holdout, *more))
    ]
    splits = Splits(
        [Product("t1", "bear", tags=["Toys"])],
        [Product("v1", "plush owl", tags=["Toys"])],
        "train.jsonl",
        "valid.jsonl",
    )
    return merge_feedback(splits, str(reviewed), None, catalogs)


def test_a_review_of_a_held_out_valid_product_waits_for_no_refit(tmp_path: Path) -> None:
    """A review of a valid product that a held-out catalog also has stays out of the refit
    too: the held-out catalog measures the refit model."""
    merged = _held_out_splits(tmp_path, [{"id": "h1", "title": "Plush owl!", "tags": ["Toys"]}])
    assert merged.valid_reviews == {} and merged.held_out == 1
    assert [p.id for p in merged.train] == ["t1", "n1", "n2"]


def test_titles_of_digits_only_do_not_hold_out_every_such_review(tmp_path: Path) -> None:
    """A held-out product titled with digits alone has no near-duplicate key: a review of
    another such product still joins training."""
    merged = _held_out_splits(tmp_path, [{"id": "h1", "title": "2024", "tags": ["Numbers"]}])
    assert merged.held_out == 0 and [p.id for p in merged.train] == ["t1", "n1", "n2"]


def test_every_held_out_catalog_holds_its_reviews_out(tmp_path: Path) -> None:
    """data.holdout may name several catalogs: reviews of the products of each stay out."""
    merged = _held_out_splits(
        tmp_path,
        [{"id": "h1", "title": "rubber duck", "tags": ["Toys"]}],
        [{"id": "n2", "title": "kite", "tags": ["Outdoor"]}],
    )
    assert merged.held_out == 1 and [p.id for p in merged.train] == ["t1", "n1"]


def test_main_adds_the_evaluation_catalog_to_the_holdout(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`labelrec main` with reviews: the catalog it evaluates on (``data``) is the run's
    added to data.holdout; valid is not (its reviews wait for a refit); a config's own holdout
    stays beside it."""
    from conftest import toy_catalog, write_jsonl

    from labelrec.mlflow import steps

    rows = toy_catalog(1)
    files = {n: write_jsonl(rows, tmp_path / f"{n}.jsonl") for n in ("train", "valid", "test")}
    feedback = f"data.feedback={files['train']}"
    trained: list[list[str]] = []

    class Stop(Exception):
        pass

    def train(config, train, valid, items, **kwargs):
        trained.append(list(items))
        raise Stop

    monkeypatch.setattr(steps, "run_train", train)

    def holdouts(data: str | None, *overrides: str) -> list[str]:
        with pytest.raises(Stop):
            steps.run_main(
                None, str(files["train"]), str(files["valid"]), data, [feedback, *overrides]
            )
        return [i for i in trained[-1] if i.startswith("data.holdout")]

    test = str(files["test"])
    assert holdouts(test) == [f'data.holdout=["{test}"]']
    assert holdouts(None) == []  # evaluating on valid
    own = f"data.holdout=[{files['train']}]"
    both = json.dumps([str(files["train"]), test])
    assert holdouts(test, own) == [own, f"data.holdout={both}"]  # the last override wins
    assert holdouts(test, f"data.holdout=[{test}]") == [f"data.holdout=[{test}]"]  # there already


def test_a_model_without_an_mlmodel_file_is_left_to_loading(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """The evaluate and batch steps refuse a describer from its MLmodel file; a labelrec model
    folder (no MLmodel) or a missing path is left to the loading, which names the problem."""
    from labelrec.mlflow.steps import _refuse_describer

    assert _refuse_describer(str(trained_model_dir), "evaluate") is None
    assert _refuse_describer(str(tmp_path / "missing"), "batch") is None


def test_the_batch_step_names_a_model_that_is_not_labelrecs(
    registry: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """A pyfunc of another library is not called a describer: the step says it is not a
    labelrec tagging model."""
    import mlflow

    from labelrec.mlflow.steps import run_batch
    from labelrec.model import ModelError

    class Echo(mlflow.pyfunc.PythonModel):  # another library's model
        def predict(self, context: object, model_input: object, params: object = None) -> object:
            return model_input

    other = tmp_path / "other"
    mlflow.pyfunc.save_model(other, python_model=Echo())
    with pytest.raises(ModelError, match="is not a labelrec tagging model: the batch step"):
        run_batch(str(other), str(toy_data_dir / "valid.jsonl"), str(tmp_path / "o.jsonl"))


def test_the_describer_model_takes_products_without_tags(tmp_path: Path) -> None:
    """The MLflow describer's signature leaves ``tags`` optional: a frame of titles alone (a
    REST call without tags) is valid input."""
    import pandas as pd
    from mlflow.models.utils import _enforce_schema

    from labelrec.mlflow.flavor import describer_signature

    inputs = describer_signature().inputs
    assert inputs.required_input_names() == ["title"]
    titles = pd.DataFrame({"title": ["kite", "plush bear"]})
    assert list(_enforce_schema(titles, inputs)["title"]) == ["kite", "plush bear"]


def test_explain_tags_a_product_with_only_a_description(rec) -> None:
    """As ``suggest`` does, ``explain`` tags a product whose text is its description alone;
    only a product with no text at all gets no tags."""
    product = {"title": "", "description": "Brickton police station"}
    rows = rec.suggest([product, " "], threshold=0)
    explained = rec.explain([product, " "], threshold=0)
    assert len(rows[0]) == 10 and rows[1] == []
    assert [[s["tag"] for s in row] for row in explained] == [[s.tag for s in r] for r in rows]


def test_suggest_reads_tags_written_as_catalogs_write_them(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A JSON line may give its tags as one string with '|' between them (as catalogs do): the
    line is read, not refused. A row whose line gave no id has no ``id``."""
    import io
    import json
    import sys

    from labelrec.cli import main

    stdin = '{"id": 7, "title": "LEGO city", "tags": "Toys|color:Red"}\nplush bear\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    args = ["suggest", str(trained_model_dir), "--format", "jsonl", "--limit", "2"]
    assert main(args) == 0, capsys.readouterr().err
    row, plain = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["line"], row["id"], row["title"]) == (1, "7", "LEGO city")
    assert "id" not in plain and plain["line"] == 2


def test_peak_rss_is_in_bytes(tmp_path: Path) -> None:
    """benchmarks/memory.py reports bytes: the kernel's VmHWM kB times 1,024, not 1,000."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import memory

    code = (
        "import re; x = bytearray(50 * 2**20); x[::4096] = b'1' * len(x[::4096]);"
        " print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))"
    )
    peak, _ = memory.peak_rss(["-c", code], tmp_path / "run.log")
    seen = int((tmp_path / "run.log").read_text().split()[-1]) * 1024
    assert seen * 0.99 < peak < seen * 1.01  # the kernel updates VmHWM lazily: near


def test_a_training_that_raises_is_a_failed_measurement(tmp_path: Path) -> None:
    """A script that dies of an exception (exit status 1) is reported as failed, with its log's
    tail, not measured."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import memory

    with pytest.raises(RuntimeError, match="(?s)exited 1:.*ValueError: no catalog"):
        memory.peak_rss(["-c", "raise ValueError('no catalog')"], tmp_path / "run.log")


def test_the_table_gives_the_growth_per_1000_trained_products() -> None:
    """The last line: the least-squares intercept in GB and the slope in MB per 1,000 products
    trained on (not per 1,000 demo products)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import memory

    rows = [
        {"products": p, "train_products": t, "peak_rss_gb": gb, "seconds": 9.6, "nDCG@3": 0.5}
        for p, t, gb in ((2_000, 1_400, 1.2), (6_000, 4_200, 2.6))
    ]
    table = memory.format_table(rows)
    assert "| 2,000 | 1,400 | 1.20 GB | 10 | 0.5000 |" in table
    assert table.endswith(
        "peak RSS ~ 0.50 GB + 500 MB per 1,000 trained products (least squares)"
    ), table


# ---------------------------------------------------------------------- reviewers' tokens


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice: short", "reviewer 'alice': the token is shorter than 16"),
        ("alice: 'has a space in it, long'", "reviewer 'alice': the token must be visible"),
        ("alice: sameTokenFor2People\nbob: sameTokenFor2People", "'alice' and 'bob' share"),
        ("- alice\n- bob", "expected a YAML mapping"),
        ("alice: [unclosed", "line 1"),
        ("'': abcdefghijklmnopq", "a name of 1 to 256"),
        # a second line for a reviewer would silently drop the first token
        ("alice: sameTokenFor2People\nalice: otherTokenForAlice", "line 2: .*'alice' is given"),
    ],
)
def test_reviewers_file_errors_name_the_reviewer_not_the_token(tmp_path, text, message) -> None:
    from labelrec.serving import load_reviewers

    path = tmp_path / "reviewers.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_reviewers(path)
    assert "sameTokenFor2People" not in str(info.value) and str(path) in str(info.value)


def test_a_reviewers_token_names_the_reviewer_in_the_request_state() -> None:
    """NeedsToken takes the shared token or a reviewer's; a reviewer's puts their name into
    the request's state, which /feedback stores the review under."""
    import asyncio

    from pydantic import SecretStr

    from labelrec.service import NeedsToken

    seen: list[dict] = []

    async def app(scope, receive, send) -> None:
        seen.append(dict(scope.get("state") or {}))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = NeedsToken(
        app, ("/feedback",), SecretStr("shared-token"), "X", {"alice-0123456789ab": "alice"}
    )

    sent: list[dict] = []

    def post(token: str | None, scheme: str = "Bearer") -> int:
        headers = [(b"authorization", f"{scheme} {token}".encode())] if token else []
        scope = {"type": "http", "method": "POST", "path": "/feedback", "headers": headers}
        sent.clear()

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(guard(scope, None, send))
        return sent[0]["status"]

    assert post("alice-0123456789ab") == 200 and seen[-1] == {"reviewer": "alice"}
    assert post("shared-token", "bearer") == 200 and seen[-1] == {}  # the scheme in any case
    assert post("alice-0123456789ac") == 401 and post(None) == 401 and len(seen) == 2
    assert post("shared-token", "Basic") == 401
    assert (b"www-authenticate", b'Bearer realm="labelrec"') in sent[0]["headers"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be an integer >= 1, got 0"),
        ({"limit": 2.5}, "limit must be an integer >= 1, got 2.5"),
        ({"threshold": 1.5}, "threshold must be between 0 and 1, got 1.5"),
        ({"threshold": float("nan")}, "threshold must be between 0 and 1, got nan"),
    ],
)
def test_the_batch_step_refuses_a_bad_limit_or_threshold_before_the_model_loads(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    from labelrec.mlflow.steps import run_batch

    with pytest.raises(ValueError, match=message):
        run_batch("models:/no-such-model/1", str(tmp_path / "in.jsonl"), "out.jsonl", **kwargs)
