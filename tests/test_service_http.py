"""The service over real HTTP: ``bentoml serve`` (bentofile.yaml) in a subprocess on 127.0.0.1,
the tiny trained tagger behind a symlink; probes, metrics, bad input, a reload under load, and
``bentoml build``. Starting the server takes 10-30 s on 2 cores, hence ``slow``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bentoml  # noqa: F401  (required: its absence fails the tests)
import httpx
import pytest
from conftest import is_service_setting  # noqa: E402
from test_service import copy_model, point  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).with_name("bentoml"))
REVIEW_TOKEN = "rev1ew"  # LABELREC_REVIEW_TOKEN of the module's server
ALICE_TOKEN = "alice-0123456789abcdef"  # hers in the server's LABELREC_REVIEWERS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {  # the service's settings are only those given here
        **{k: v for k, v in os.environ.items() if not is_service_setting(k)},
        "BENTOML_HOME": str(tmp / "bentoml_home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LABELREC_POLL_SECONDS": "0",
    }
    env.update(extra)
    return env


@dataclass
class Server:
    url: str
    link: Path
    models: dict[str, Path]
    process: subprocess.Popen
    log: Path
    feedback_uri: str


@pytest.fixture(scope="module")
def http_describer(tiny_decoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A describer trained two steps on the toy catalog (its texts need not be good)."""
    from conftest import toy_catalog

    from labelrec.config import load_config
    from labelrec.data import Product
    from labelrec.describe import fit_describer

    products = [Product(r["id"], r["title"], f"a {r['title']}.", r["tags"]) for r in toy_catalog()]
    settings = ["describe.max_steps=2", "describe.max_target_tokens=12"]
    settings += ["describe.max_new_tokens=8", "describe.min_new_tokens=2"]
    cfg = load_config(None, [f"describe.backbone={tiny_decoder}", *settings])
    describer, _ = fit_describer(cfg.describe, products, progress=False)
    return describer.save(tmp_path_factory.mktemp("describer") / "d")


@pytest.fixture(scope="module")
def server(
    trained_model_dir: Path,
    service_index: Path,
    http_describer: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """``bentoml serve`` from the repo root (bentofile.yaml names the service), with the toy
    product index and a tiny describer."""
    tmp = tmp_path_factory.mktemp("http")
    models = {
        "v1": copy_model(trained_model_dir, tmp / "v1"),
        "v2": copy_model(trained_model_dir, tmp / "v2", threshold=0.0),
        "garbage": copy_model(trained_model_dir, tmp / "garbage", garbage_weights=True),
    }
    link = tmp / "current"
    point(link, models["v1"])
    port = free_port()
    log = tmp / "serve.log"
    feedback_uri = f"sqlite:///{tmp / 'feedback.db'}"
    reviewers = tmp / "reviewers.yaml"
    reviewers.write_text(f"alice: {ALICE_TOKEN}\nbob: bob-0123456789abcdef\n", "utf-8")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [BENTOML, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=service_env(
                tmp,
                LABELREC_MODEL_URI=str(link),
                LABELREC_INDEX=str(service_index),
                LABELREC_DESCRIBER=str(http_describer),
                LABELREC_FEEDBACK_URI=feedback_uri,
                LABELREC_REVIEW_TOKEN=REVIEW_TOKEN,
                LABELREC_REVIEWERS=str(reviewers),
                LABELREC_MAX_BODY_MB="2",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"bentoml serve exited ({process.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bentoml serve not ready after 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, link, models, process, log, feedback_uri)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_probes_endpoints_and_metrics(http: httpx.Client) -> None:
    for probe in ("/healthz", "/livez", "/readyz"):
        assert http.get(probe).status_code == 200, probe
    curl = {"product": {"title": "LEGO City Police Station 60316", "description": ""}, "limit": 5}
    one = http.post("/suggest", json=curl)
    assert one.status_code == 200, one.text
    assert 0 < len(one.json()["tags"]) <= 5
    batch = http.post("/suggest_batch", json={"products": [{"title": "lego"}, {"title": "bear"}]})
    assert [r["model_version"] for r in batch.json()["results"]] == [
        one.json()["model_version"]
    ] * 2
    assert http.get("/tags").json()["count"] == len(http.get("/tags").json()["tags"]) > 0
    assert http.get("/model").json()["version"] == one.json()["model_version"]
    assert "/suggest_file" in http.get("/docs.json").json()["paths"]
    with ThreadPoolExecutor(8) as pool:  # overlapping requests share forward passes
        answers = pool.map(lambda _: http.post("/suggest", json=curl).status_code, range(32))
        assert set(answers) == {200}
    items = [
        {"title": "lego", "limit": 2, "threshold": 0},
        {"title": "bear", "limit": 1, "threshold": 0},
    ]
    with ThreadPoolExecutor(4) as pool:  # products with their own options: adaptive batching
        answers = list(
            pool.map(lambda _: http.post("/suggest_items", json={"items": items}), range(8))
        )
    assert all(a.status_code == 200 for a in answers)
    assert [len(r["tags"]) for r in answers[0].json()] == [2, 1]
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert 'endpoint="/suggest"' in metrics.text  # BentoML's request counters
    assert "bentoml_service_adaptive_batch_size_count" in metrics.text  # through the batcher


def test_bad_input_is_a_4xx_and_the_server_keeps_serving(
    http: httpx.Client, server: Server
) -> None:
    json_headers = {"content-type": "application/json"}
    bad = [
        ("/suggest", b'{"product": {"title": ""}}'),
        ("/suggest", b'{"product": {}}'),
        ("/suggest", b'{"product": {"title": ["a"]}}'),
        ("/suggest", b'{"product": {"title": "caf\xe9 \xff\xfe"}}'),
        ("/suggest", b"\x00\x01garbage"),
        ("/suggest_batch", json.dumps({"products": [{"title": "t"}] * 300}).encode()),
    ]
    for path, body in bad:
        answer = http.post(path, content=body, headers=json_headers)
        assert answer.status_code == 400, (path, body[:40], answer.text)
        assert "error" in answer.json()
    big = {"product": {"title": "lego", "description": "x" * 1_000_000}}
    assert http.post("/suggest", json=big).status_code == 200
    # LABELREC_MAX_BODY_MB=2: a 3 MB body is refused, declared or streamed in chunks
    huge = json.dumps({"products": [{"title": "lego " * 60_000}] * 10}).encode()
    assert http.post("/suggest_batch", content=huge, headers=json_headers).status_code == 413
    chunks = (huge[i : i + 65536] for i in range(0, len(huge), 65536))
    answer = http.post("/suggest_batch", content=chunks, headers=json_headers)
    assert answer.status_code == 413 and "LABELREC_MAX_BODY_MB" in answer.json()["error"]
    upload = http.post("/suggest_file", files={"file": ("c.csv", b"id,title\n1,\n")})
    assert upload.status_code == 400 and "line 2" in upload.json()["error"]
    assert server.process.poll() is None
    assert http.get("/readyz").status_code == 200
    assert http.post("/suggest", json={"product": {"title": "lego"}}).status_code == 200


def test_describe_over_http_with_decoding_settings(
    http: httpx.Client, http_describer: Path
) -> None:
    from labelrec.describe import Describer

    native = Describer.load(http_describer, device="cpu")
    products = [{"id": 7, "title": "lego city", "tags": "Toys|color:Red"}, {"title": "kite"}]
    as_lists = [{"title": "lego city", "tags": ["Toys", "color:Red"]}, {"title": "kite"}]
    plain = http.post("/describe", json={"products": products})
    assert plain.status_code == 200, plain.text
    assert [o["id"] for o in plain.json()] == ["7", None]
    assert [o["description"] for o in plain.json()] == native.describe(as_lists)
    decoding = {"num_beams": 2, "max_new_tokens": 3, "min_new_tokens": 3}
    short = http.post("/describe", json={"products": products, "decoding": decoding})
    assert short.status_code == 200, short.text
    expected = native.with_decoding(**decoding).describe(as_lists)
    assert [o["description"] for o in short.json()] == expected
    for bad, field in (
        ({"num_beams": 50}, "num_beams"),
        ({"max_new_tokens": 2, "min_new_tokens": 5}, "decoding.min_new_tokens"),
        ({"batch_products": 4}, "batch_products"),
    ):
        answer = http.post("/describe", json={"products": products, "decoding": bad})
        assert answer.status_code == 400 and field in answer.text, (bad, answer.text)
    too_long = http.post("/describe", json={"products": [{"title": "kite", "tags": ["x" * 600]}]})
    assert too_long.status_code == 400


def test_feedback_needs_the_review_token(http: httpx.Client, server: Server) -> None:
    from labelrec.feedback import FeedbackStore

    review = {"product": {"title": "plush bear"}, "added": ["brand:Evil"]}
    before = len(list(FeedbackStore(server.feedback_uri).reviews()))
    for headers in ({}, {"authorization": "Bearer wrong"}):
        answer = http.post("/feedback", json=review, headers=headers)
        assert answer.status_code == 401 and "LABELREC_REVIEW_TOKEN" in answer.json()["error"]
    assert len(list(FeedbackStore(server.feedback_uri).reviews())) == before  # none stored
    ok = http.post("/feedback", json=review, headers={"authorization": f"Bearer {REVIEW_TOKEN}"})
    assert ok.status_code == 200, ok.text
    assert len(list(FeedbackStore(server.feedback_uri).reviews())) == before + 1
    # a reviewer's own token (LABELREC_REVIEWERS): the review is stored under their name,
    # whatever name the body gives
    signed = {**review, "reviewer": "mallory"}
    ok = http.post("/feedback", json=signed, headers={"authorization": f"Bearer {ALICE_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["reviewer"] == "alice", ok.text
    stored = list(FeedbackStore(server.feedback_uri).reviews())
    assert len(stored) == before + 2 and stored[-1].reviewer == "alice"
    shared = http.post(
        "/feedback", json=signed, headers={"authorization": f"Bearer {REVIEW_TOKEN}"}
    )
    assert shared.json()["reviewer"] == "mallory"  # the shared token: the name is the body's
    assert "LABELREC_REVIEWERS" in http.post("/feedback", json=review).json()["error"]


def test_suggest_file_streams_the_scored_catalog(http: httpx.Client) -> None:
    rows = "".join(f'{{"id": "p{i}", "title": "wooden puzzle {i}"}}\n' for i in range(600))
    with http.stream(
        "POST", "/suggest_file", files={"file": ("shop.jsonl", rows.encode())}, data={"limit": "2"}
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers.get("transfer-encoding") == "chunked"
        lines = [json.loads(line) for line in answer.iter_lines() if line]
    assert [r["id"] for r in lines] == [f"p{i}" for i in range(600)]


def test_reload_while_requests_run(http: httpx.Client, server: Server) -> None:
    """No request fails while the model switches; each client sees v1 then v2, never back."""
    v1 = http.get("/model").json()["version"]
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]

    def hammer(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                answer = client.post(
                    "/suggest_batch",
                    json={"products": [{"title": f"lego police {i}"}] * (1 + i), "limit": 12},
                )
                versions = {r["model_version"] for r in answer.json().get("results", [])}
                seen[i].append(
                    (answer.status_code, ",".join(sorted(versions)) or answer.text[:300])
                )

    def two_more_answers_each() -> None:
        """Until every client has two answers more than now (the second one asked after now),
        however slow the machine."""
        counts, deadline = [len(a) for a in seen], time.monotonic() + 120
        while not all(len(a) >= c + 2 for a, c in zip(seen, counts, strict=True)):
            assert all(t.is_alive() for t in threads), "a client stopped: " + repr(seen)
            assert time.monotonic() < deadline, [len(a) for a in seen]
            time.sleep(0.05)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        two_more_answers_each()  # v1's answers
        point(server.link, server.models["v2"])
        switched = http.post("/reload")
        assert switched.status_code == 200 and switched.json()["status"] == "reloaded"
        v2 = switched.json()["model_version"]
        two_more_answers_each()  # v2's
        point(server.link, server.models["garbage"])
        refused = http.post("/reload")
        assert refused.status_code == 409 and refused.json()["model_version"] == v2
        two_more_answers_each()  # v2's still
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert v1 != v2
    for answers in seen:
        failed = [a for a in answers if a[0] != 200]
        assert answers and not failed, failed
        versions = [v for _, v in answers]
        assert set(versions) <= {v1, v2}  # one model per answer, never a mix
        assert versions == sorted(versions, key=lambda v: v == v2)  # v1... then v2...
    assert any(v == v1 for a in seen for _, v in a) and any(v == v2 for a in seen for _, v in a)
    model = http.get("/model").json()
    assert model["version"] == v2 and model["last_error"] and model["refused"] >= 1
    point(server.link, server.models["v1"])


def test_bentoml_build_works_offline(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    done = subprocess.run(
        [BENTOML, "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    bentos = list((tmp_path / "bentoml_home" / "bentos" / "labelrec").glob("*/bento.yaml"))
    assert len(bentos) == 1
    bento = bentos[0].parent
    assert (bento / "src" / "labelrec" / "service.py").is_file()
    assert not (bento / "src" / "tests").exists() and not (bento / "src" / "runs").exists()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.40" in requirements and "transformers" in requirements


# --------------------------------------------------------------------------- the review page


def _chrome_paths() -> tuple[str, str]:
    """(browser, driver) of Debian's chromium, or skip saying how to install them."""
    import shutil

    browser = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    debian = Path("/usr/lib/chromium/chromedriver")
    driver = shutil.which("chromedriver") or (str(debian) if debian.exists() else None)
    if browser is None or driver is None:
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium import webdriver

    binary, driver_path = _chrome_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_review_page_in_headless_chromium(browser, server: Server) -> None:
    """The page loads, a suggestion and similar products appear, search works, and the
    browser logs no console error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(f"{server.url}/ui")
    assert "labelrec" in browser.title
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    browser.find_element(By.ID, "title").send_keys("LEGO City Police Station 60316")
    browser.find_element(By.ID, "suggest-btn").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#tags li.tag")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#similar li.product")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    tags = browser.find_elements(By.CSS_SELECTOR, "#tags li.tag")
    assert tags and all(t.get_attribute("data-tag") for t in tags)
    assert all(t.get_attribute("data-known") in ("true", "false", "") for t in tags)
    similar = browser.find_elements(By.CSS_SELECTOR, "#similar li.product")
    assert all(p.get_attribute("data-id") for p in similar)

    # Review: accept the first tag by click, reject the second from the keyboard, add one, save.
    assert tags[0].find_element(By.CSS_SELECTOR, ".why").text.startswith("why: ")
    whys = [t.find_element(By.CSS_SELECTOR, ".why").text for t in tags]
    assert any(" like “" in w for w in whys), whys  # the nearest training products
    tags[0].find_element(By.CSS_SELECTOR, "button.accept").click()
    assert tags[0].get_attribute("data-verdict") == "accepted"
    if len(tags) > 1:
        tags[1].send_keys("r")
        assert tags[1].get_attribute("data-verdict") == "rejected"
    browser.find_element(By.ID, "add-tag").send_keys("brand:Reviewed")
    browser.find_element(By.ID, "add-btn").click()
    added = browser.find_element(By.CSS_SELECTOR, '#tags li.tag[data-verdict="added"]')
    assert added.get_attribute("data-tag") == "brand:Reviewed"
    browser.find_element(By.ID, "reviewer").send_keys("ana")
    browser.find_element(By.ID, "review-token").send_keys(REVIEW_TOKEN)  # the server asks for it
    browser.execute_script(  # what the page sends
        "window.sent = []; const send = window.fetch;"
        " window.fetch = (url, opts) => { window.sent.push(opts && opts.body);"
        " return send(url, opts); };"
    )
    browser.find_element(By.ID, "save-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "review-status"), "saved review #"))
    from labelrec.feedback import FeedbackStore

    (body,) = [json.loads(b) for b in browser.execute_script("return window.sent") if b]
    version = httpx.get(f"{server.url}/model").json()["version"]
    assert body["model_version"] == version  # the /suggest answer's: what made the suggestions
    stored = list(FeedbackStore(server.feedback_uri).reviews())[-1]
    assert stored.title == "LEGO City Police Station 60316" and stored.reviewer == "ana"
    assert stored.accepted == [tags[0].get_attribute("data-tag")]
    assert stored.rejected == ([tags[1].get_attribute("data-tag")] if len(tags) > 1 else [])
    assert stored.added == ["brand:Reviewed"] and "brand:Reviewed" in stored.unknown
    assert re.fullmatch("[0-9a-f]{32}", stored.request_key or ""), stored.request_key
    # saved once: the button waits for a changed verdict, so a second click stores nothing
    saves = len(list(FeedbackStore(server.feedback_uri).reviews()))
    assert not browser.find_element(By.ID, "save-btn").is_enabled()
    tags[0].find_element(By.CSS_SELECTOR, "button.accept").click()  # accepted no more
    assert browser.find_element(By.ID, "save-btn").is_enabled()
    assert len(list(FeedbackStore(server.feedback_uri).reviews())) == saves

    # The queue: the next catalog product of the index, its tags, a review that names its id.
    # The verdict changed since the save is not thrown away on the first press of Next.
    browser.find_element(By.ID, "next-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "review-status"), "are not saved"))
    assert browser.find_element(By.ID, "title").get_attribute("value").startswith("LEGO City")
    browser.find_element(By.ID, "next-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "queue-status"), "product 1 of"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    first = httpx.get(f"{server.url}/queue?position=0").json()["product"]
    assert browser.find_element(By.ID, "title").get_attribute("value") == first["title"]
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#tags li.tag")))
    # its similar products are looked up by its id: it is not its own neighbour
    neighbours = browser.find_elements(By.CSS_SELECTOR, "#similar li.product")
    assert neighbours and first["id"] not in [p.get_attribute("data-id") for p in neighbours]
    browser.find_element(By.CSS_SELECTOR, "#tags li.tag").send_keys("a")
    browser.find_element(By.ID, "save-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "review-status"), "saved review #"))
    queued = list(FeedbackStore(server.feedback_uri).reviews())[-1]
    assert queued.product_id == first["id"]
    assert queued.request_key not in (None, stored.request_key)  # a new review, a new key

    # Past the queue's end: the page says so and starts over, no error.
    total = httpx.get(f"{server.url}/queue?position=0").json()["total"]
    browser.execute_script(f"localStorage.setItem('labelrec-queue', '{total}')")
    browser.find_element(By.ID, "next-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "queue-status"), "end of the queue"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    assert not browser.find_element(By.ID, "error").is_displayed()
    browser.find_element(By.ID, "next-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "queue-status"), "product 1 of"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))

    # Tag filters are separated by "|": a comma is part of a tag, not between two.
    browser.find_element(By.ID, "search-input").send_keys("jigsaw puzzle")
    browser.find_element(By.ID, "search-tags").send_keys("Toys, Building | Toys")
    browser.find_element(By.ID, "search-btn").click()
    wait.until(ec.visibility_of_element_located((By.ID, "error")))
    assert "unknown tag filter 'Toys, Building'" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "search-tags").clear()
    browser.find_element(By.ID, "search-tags").send_keys("Toys | Toys > Puzzles")
    browser.find_element(By.ID, "search-btn").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#search-results li.product")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    assert not browser.find_element(By.ID, "error").is_displayed()
    expected = (f"/queue?position={total} ", "/search ")  # the 404 and 400 asked for above
    errors = [
        e
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE"
        and not (e["source"] == "network" and any(x in e["message"] for x in expected))
    ]
    assert not errors, errors


def test_acknowledged_feedback_survives_kill_9_of_the_server(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """Reviews posted by 8 clients, the server killed with SIGKILL while they post: every review
    answered 2xx is in the database afterwards (SQLite in WAL mode commits before answering)."""
    import contextlib

    psutil = pytest.importorskip("psutil")
    from labelrec.feedback import FeedbackStore

    model = copy_model(trained_model_dir, tmp_path / "model")
    uri = f"sqlite:///{tmp_path / 'feedback.db'}"
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [BENTOML, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=service_env(tmp_path, LABELREC_MODEL_URI=str(model), LABELREC_FEEDBACK_URI=uri),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    acknowledged: list[str] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)

        def client(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                n = 0
                while not stop.is_set():
                    pid = f"w{worker}-{n}"
                    body = {"product": {"id": pid, "title": "lego"}, "accepted": ["Toys"]}
                    try:
                        answer = http.post("/feedback", json=body)
                    except httpx.HTTPError:
                        return  # the server is gone
                    if answer.status_code < 300:
                        acknowledged.append(pid)
                    n += 1

        with ThreadPoolExecutor(8) as pool:
            for worker in range(8):
                pool.submit(client, worker)
            while len(acknowledged) < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            # mid-stream: no shutdown, no flush; the worker runs in a session of its own
            workers = psutil.Process(process.pid).children(recursive=True)
            os.killpg(process.pid, signal.SIGKILL)
            for worker in workers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker.kill()
            process.wait()
            stop.set()
    finally:
        stop.set()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stored = {r.product_id for r in FeedbackStore(uri).reviews()}
    assert len(acknowledged) >= 200
    assert set(acknowledged) <= stored, sorted(set(acknowledged) - stored)[:5]


def test_review_page_keeps_verdicts_with_their_product(browser, server: Server) -> None:
    """A suggestion that fails leaves no earlier verdicts to save under the new product;
    verdicts not saved ask for a second press before they are replaced; a tag added in
    another case is the listed tag; an added tag has its own remove button; a full-width
    separator splits search filters."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from labelrec.feedback import FeedbackStore

    def saved() -> int:
        return len(list(FeedbackStore(server.feedback_uri).reviews()))

    wait = WebDriverWait(browser, 60)
    browser.get(f"{server.url}/ui")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    browser.find_element(By.ID, "title").send_keys("wooden jigsaw puzzle")
    browser.find_element(By.ID, "suggest-btn").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#tags li.tag")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    first = browser.find_element(By.CSS_SELECTOR, "#tags li.tag")
    tag = first.get_attribute("data-tag")
    accept = first.find_element(By.CSS_SELECTOR, "button.accept")
    assert accept.get_attribute("aria-label") == f"accept {tag}"

    add = browser.find_element(By.ID, "add-tag")
    add.send_keys(tag.upper())  # the listed tag in another case: accepted, not added twice
    browser.find_element(By.ID, "add-btn").click()
    assert first.get_attribute("data-verdict") == "accepted"
    assert not browser.find_elements(By.CSS_SELECTOR, '#tags li[data-verdict="added"]')
    add.send_keys("brand:Nowhere")
    browser.find_element(By.ID, "add-btn").click()
    added = browser.find_element(By.CSS_SELECTOR, '#tags li[data-verdict="added"]')
    added.find_element(By.CSS_SELECTOR, "button.remove").click()
    assert not browser.find_elements(By.CSS_SELECTOR, '#tags li[data-verdict="added"]')

    # Suggest again: the accepted tag is not saved, so the first press only warns.
    browser.find_element(By.ID, "suggest-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "review-status"), "are not saved"))
    assert first.get_attribute("data-verdict") == "accepted"

    # The service cannot be reached for the next product: its list is empty, Save is off, and
    # Ctrl+Enter stores nothing under the new title.
    browser.execute_script(
        "const f = window.fetch; window.__fetch = f;"
        "window.fetch = (u, o) => /\\/(suggest|similar)$/.test(String(u))"
        " ? Promise.reject(new TypeError('Failed to fetch')) : f(u, o);"
    )
    before = saved()
    title = browser.find_element(By.ID, "title")
    title.clear()
    title.send_keys("plush teddy bear")
    browser.find_element(By.ID, "suggest-btn").click()
    wait.until(ec.visibility_of_element_located((By.ID, "error")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    assert "/suggest: the service cannot be reached" in browser.find_element(By.ID, "error").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#tags li.tag")
    assert not browser.find_element(By.ID, "save-btn").is_enabled()
    title.send_keys(Keys.CONTROL, Keys.ENTER)
    assert saved() == before

    # A full-width "｜" separates filters, as a Chinese keyboard types it.
    browser.execute_script("window.fetch = window.__fetch;")
    browser.find_element(By.ID, "search-input").send_keys("jigsaw puzzle")
    browser.find_element(By.ID, "search-tags").send_keys("Toys｜Toys > Puzzles")
    browser.find_element(By.ID, "search-btn").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#search-results li.product")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    assert not browser.find_element(By.ID, "error").is_displayed()

    # Past the queue's end nothing replaced the verdicts: the next Next warns again.
    title.clear()
    title.send_keys("wooden jigsaw puzzle")
    browser.find_element(By.ID, "suggest-btn").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#tags li.tag")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    browser.find_element(By.CSS_SELECTOR, "#tags li.tag button.accept").click()
    total = httpx.get(f"{server.url}/queue?position=0").json()["total"]
    browser.execute_script(f"localStorage.setItem('labelrec-queue', '{total}')")
    browser.find_element(By.ID, "next-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "review-status"), "are not saved"))
    browser.find_element(By.ID, "next-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "queue-status"), "end of the queue"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    browser.execute_script("document.getElementById('review-status').textContent = ''")
    browser.find_element(By.ID, "next-btn").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "review-status"), "are not saved"))
    assert browser.find_element(By.ID, "title").get_attribute("value") == "wooden jigsaw puzzle"
