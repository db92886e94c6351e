"""Reviewer feedback: the database, its export as a training catalog, the CLI and POST /feedback."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SYSTEM_TMP

from labelrec.cli import main
from labelrec.data import read_catalog
from labelrec.feedback import (
    SCHEMA_VERSION,
    FeedbackError,
    FeedbackStore,
    Review,
    ReviewConflict,
)


def store_at(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}")


def open_at_once(uri: str, n: int = 4) -> list[Exception]:
    """Open the store at ``uri`` from ``n`` threads at once (each its own engine, as workers
    have); the errors they met."""
    import threading

    start, errors = threading.Barrier(n), []

    def open_store() -> None:
        start.wait()
        try:
            FeedbackStore(uri).engine.dispose()
        except Exception as err:  # noqa: BLE001 (reported by the caller)
            errors.append(err)

    threads = [threading.Thread(target=open_store) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_reviews_round_trip_and_export_as_a_catalog(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    assert store.schema_version == SCHEMA_VERSION and len(store) == 0
    first = Review(
        title="Brickton police station",
        product_id="p1",
        accepted=["Toys", "brand:Brickton"],
        rejected=["Books"],
        added=["Toys > Building Sets", "Toys"],  # a repeat of an accepted tag counts once
        reviewer="ana",
        model_version="3",
    )
    first.flag_unknown({"Toys", "Books", "brand:Brickton"})
    assert first.unknown == ["Toys > Building Sets"]
    assert store.add(first) == 1
    store.add(Review(title="Plush bear", accepted=["Toys"], model_version="3"))
    store.add(Review(title="Brickton police station v2", product_id="p1", accepted=["Toys"]))
    assert len(store) == 3

    back = list(store.reviews(batch=2))  # batches join up in order
    assert [r.id for r in back] == [1, 2, 3]
    assert back[0].accepted == ["Toys", "brand:Brickton"] and back[0].rejected == ["Books"]
    assert back[0].added == ["Toys > Building Sets", "Toys"] and back[0].reviewer == "ana"
    assert back[0].unknown == ["Toys > Building Sets"] and back[0].created is not None

    out = tmp_path / "reviewed.jsonl"
    # p1's reviews merge tag by tag: the later one said nothing of the first's other verdicts,
    # so they stay; its title is the later one's, and p1 moves after the bear
    assert store.export(out) == 2
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {"id": "feedback-2", "title": "Plush bear", "description": "", "tags": ["Toys"],
         "rejected": []},
        {"id": "p1", "title": "Brickton police station v2", "description": "",
         "tags": ["Toys", "brand:Brickton", "Toys > Building Sets"], "rejected": ["Books"]},
    ]  # fmt: skip
    catalog = read_catalog(out)  # labelrec's own reader takes it as a training catalog
    assert [p.tags for p in catalog.products] == [
        ["Toys"],
        ["Toys", "brand:Brickton", "Toys > Building Sets"],
    ]

    stats = store.stats()
    assert stats["reviews"] == 3 and stats["products"] == 2 and stats["reviewers"] == 1
    assert (stats["accepted"], stats["rejected"], stats["added"], stats["unknown"]) == (4, 1, 2, 1)
    assert stats["acceptance_rate"] == pytest.approx(4 / 5)
    assert stats["model_versions"] == {"3": 2, "-": 1}
    assert stats["most_rejected"] == [("Books", 1)]
    assert stats["overruled"] == 0  # p1's second review kept Toys and said nothing of Books
    store.add(Review(title="Brickton police station v2", product_id="p1", rejected=["Toys"]))
    store.add(Review(title="Plush bear", accepted=["Books"]))  # another product, no id
    assert store.stats()["overruled"] == 1
    assert store.export(out) == 2  # a later verdict on a tag wins: p1's Toys is now rejected
    last = json.loads(out.read_text(encoding="utf-8").splitlines()[-1])
    assert (last["id"], last["tags"]) == ("feedback-5", ["Toys", "Books"])  # the bear's last
    p1 = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert p1["tags"] == ["brand:Brickton", "Toys > Building Sets"]
    assert p1["rejected"] == ["Toys", "Books"]
    # no tag accepted or rejected: no rate, and JSON null rather than NaN (invalid JSON)
    assert store_at(tmp_path / "empty").stats()["acceptance_rate"] is None
    only_added = store_at(tmp_path / "added")
    only_added.add(Review(title="Wooden puzzle", added=["Toys"]))
    assert only_added.stats()["acceptance_rate"] is None


def test_reviews_of_one_product_without_an_id_are_one_product(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.add(Review(title="Plush  bear", accepted=["Toys"]))
    store.add(Review(title="Plush bear", accepted=["Toys", "Baby"]))  # the same, pasted again
    store.add(Review(title="Plush bear", description="soft", accepted=["Toys"]))  # another
    out = tmp_path / "reviewed.jsonl"
    assert store.export(out) == 2 and store.stats()["products"] == 2
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["tags"]) for r in rows] == [
        ("feedback-2", ["Toys", "Baby"]),
        ("feedback-3", ["Toys"]),
    ]


def test_export_to_a_directory_is_refused_before_writing(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.add(Review(title="Plush bear", accepted=["Toys"]))
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"{folder} is a directory"):
        store.export(folder)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "fb", folder]  # no out.tmp left
    with pytest.raises(ValueError, match="JSON Lines; name it .jsonl"):
        store.export(tmp_path / "reviewed.csv")
    assert not (tmp_path / "reviewed.csv").exists()


def test_a_failed_export_removes_its_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_at(tmp_path)
    store.add(Review(title="Plush bear", accepted=["Toys"]))
    out = tmp_path / "out" / "catalog.jsonl"

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.export(out)
    assert list(out.parent.iterdir()) == []


def test_a_read_only_open_does_not_create_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nodir" / "deeper" / "fb.db"
    with pytest.raises(FileNotFoundError) as err:
        FeedbackStore(f"sqlite:///{missing}", create=False)
    assert str(err.value) == (
        f"no feedback database at {missing} (set --uri or LABELREC_FEEDBACK_URI)"
    )
    monkeypatch.setenv("LABELREC_FEEDBACK_URI", f"sqlite:///{missing}")
    with pytest.raises(FileNotFoundError, match="no feedback database at"):
        FeedbackStore.from_env(create=False)
    assert not (tmp_path / "nodir").exists()
    store_at(tmp_path).add(Review(title="Plush bear", accepted=["Toys"]))  # creates fb/feedback.db
    existing = FeedbackStore(f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}", create=False)
    assert len(existing) == 1
    assert len(FeedbackStore.from_env()) == 0  # create=True stays the default
    other = tmp_path / "other.db"  # a SQLite file of something else: read, not written to
    with sqlite3.connect(other) as conn:
        conn.execute("create table notes (text)")
    with pytest.raises(FeedbackError, match="holds no labelrec feedback"):
        FeedbackStore(f"sqlite:///{other}", create=False)
    with sqlite3.connect(other) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
    assert tables == ["notes"]
    assert missing.is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"title": "  "}, "product.title: must be a non-empty string"),
        ({"accepted": []}, "give at least one tag"),
        ({"accepted": ["a"], "rejected": ["a"]}, "rejected: a also accepted or added"),
        ({"accepted": "a"}, "accepted: expected a list of tags"),
        ({"accepted": ["a", 3]}, r"accepted\[1\]: expected a non-empty tag"),
        ({"added": [" "]}, r"added\[0\]: expected a non-empty tag"),
        ({"accepted": ["\u200b"]}, r"accepted\[0\]: expected a non-empty tag"),
        ({"accepted": ["品牌:华为"], "rejected": ["品牌：华为"]}, "rejected: 品牌:华为 also"),
        ({"title": "x" * 2001}, "product.title: 2,001 characters, over the 2,000"),
        ({"description": "x" * 100_001}, "product.description: 100,001 characters"),
        ({"product_id": "7" * 257}, "product.id: 257 characters, over the 256"),
        ({"reviewer": "r" * 257}, "reviewer: 257 characters"),
    ],
)
def test_bad_reviews_name_the_field(kwargs: dict, message: str) -> None:
    values = {"title": "x", "accepted": ["a"], **kwargs}
    with pytest.raises(FeedbackError, match=message):
        Review(**values)


def test_a_locked_database_refuses_the_review_and_takes_it_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the write lock past the busy timeout (a backup, an admin shell):
    a ``FeedbackError`` that says to send the review again (the service's 503), nothing half
    stored; once the lock is gone the same review is stored."""
    from labelrec import feedback

    monkeypatch.setattr(feedback, "SQLITE_BUSY_MS", 50)
    path = tmp_path / "fb.db"
    store = FeedbackStore(f"sqlite:///{path}")
    review = Review(title="x", accepted=["a"])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(FeedbackError, match="nothing was stored, send it again") as err:
            store.add(review)
        assert str(tmp_path) not in str(err.value)  # the service answers it to clients
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.add(review) == 1 and len(list(store.reviews())) == 1


def test_reviews_take_the_vocabularys_spelling() -> None:
    from labelrec.data import TagVocab

    vocab = TagVocab(["品牌:华为", "品牌:iphone", "品类:手机"], [1, 1, 1])
    review = Review(
        title="x",
        accepted=["品牌：华为", "品牌:IPHONE"],  # a full-width colon, another case
        rejected=["品类:全网通"],
        added=["型号:mate40", "品牌:iPhone"],
    )
    assert review.accepted == ["品牌:华为", "品牌:IPHONE"]  # the width folds at once
    review.match_vocabulary(vocab)
    assert review.accepted == ["品牌:华为", "品牌:iphone"]
    assert review.added == ["型号:mate40", "品牌:iphone"]
    assert review.tags == ["品牌:华为", "品牌:iphone", "型号:mate40"]
    assert review.unknown == ["型号:mate40", "品类:全网通"]
    both = Review(title="x", accepted=["品牌:IPHONE"], rejected=["品牌:iphone"])  # one tag
    with pytest.raises(FeedbackError, match="rejected: 品牌:iphone also accepted"):
        both.match_vocabulary(vocab)


def test_a_review_sent_again_under_its_request_key_is_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_at(tmp_path)
    review = {"title": "Kite", "product_id": "k1", "accepted": ["Toys"], "reviewer": "ana"}
    first = store.add(Review(**review, request_key="5f0c-1"))
    again = Review(**review, request_key="5f0c-1")
    assert store.add(again) == first and again.id == first and len(store) == 1
    assert store.add(Review(**review)) == first + 1  # no key: a second review, as before
    with pytest.raises(ReviewConflict, match=f"5f0c-1: review #{first} was stored under it"):
        store.add(Review(**{**review, "accepted": ["Books"]}, request_key="5f0c-1"))
    for bad in ("", "a b", "x" * 129, "ключ"):
        with pytest.raises(FeedbackError, match="Idempotency-Key: 1 to 128 visible ASCII"):
            Review(**review, request_key=bad)
    # two requests with one key at once: the one that loses the race at the unique index
    # answers with the winner's id
    checks = iter([None])
    original = FeedbackStore._keyed
    monkeypatch.setattr(
        FeedbackStore, "_keyed", lambda self, conn, r: next(checks, original(self, conn, r))
    )
    assert store.add(Review(**review, request_key="5f0c-1")) == first
    assert len(store) == 2 and [r.request_key for r in store.reviews()] == ["5f0c-1", None]
    monkeypatch.undo()
    # writers at once, each review sent twice: SQLite's busy wait covers them all, as without keys
    from concurrent.futures import ThreadPoolExecutor

    def send(i: int) -> int:
        kite = Review(title=f"kite {i // 2}", accepted=["Toys"], request_key=f"k{i // 2}")
        return store.add(kite)

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(send, range(64)))
    assert ids[::2] == ids[1::2] and len(set(ids)) == 32 and len(store) == 2 + 32


def test_a_rejected_category_above_a_kept_one_is_refused_with_category_paths() -> None:
    review = Review(title="Kite", rejected=["Toys", "Books"], added=["Toys > Kites", "Toyshop"])
    review.check_hierarchy(None)  # without category paths they are unrelated tags
    with pytest.raises(FeedbackError, match="rejected: Toys is the category above Toys > Kites"):
        review.check_hierarchy(" > ")
    Review(title="Kite", rejected=["Toys > Dolls"], accepted=["Toys"]).check_hierarchy(" > ")
    fullwidth = Review(title="Kite", rejected=["Toys"], added=["Toys ＞ Kites"])  # as read
    with pytest.raises(FeedbackError, match="category above"):
        fullwidth.check_hierarchy(" ＞ ")
    other_case = Review(title="Kite", rejected=["Toys > Kites"], added=["toys > kites > box"])
    with pytest.raises(FeedbackError, match="Toys > Kites is the category above toys > kites"):
        other_case.check_hierarchy(" > ")  # one category in any case, as tags match


def test_a_verdict_on_a_category_reaches_the_paths_under_it_in_the_export(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """With the catalog's separator, a later rejection of a category takes the paths kept
    under it by earlier reviews, and a later kept path clears the rejections above it; the
    stats count both as overruled. Without it, only the verdicts on one tag meet."""
    store = store_at(tmp_path)
    store.add(Review(title="Kite", product_id="k1", added=["Toys > Kites"], accepted=["Gift"]))
    store.add(Review(title="Kite", product_id="k1", rejected=["toys"]))  # later, any case
    store.add(Review(title="Ball", product_id="b1", rejected=["Toys", "Books"]))
    store.add(Review(title="Ball", product_id="b1", accepted=["Toys > Balls"]))
    out = tmp_path / "reviewed.jsonl"

    def rows(*args: str) -> dict[str, tuple[list[str], list[str]]]:
        assert main(["feedback", "export", "--uri", store.uri, "--output", str(out), *args]) == 0
        lines = out.read_text(encoding="utf-8").splitlines()
        return {r["id"]: (r["tags"], r["rejected"]) for r in map(json.loads, lines)}

    assert rows("--hierarchy-separator", " > ") == {
        "k1": (["Gift"], ["toys"]),
        "b1": (["Toys > Balls"], ["Books"]),
    }
    assert rows() == {
        "k1": (["Gift", "Toys > Kites"], ["toys"]),
        "b1": (["Toys > Balls"], ["Toys", "Books"]),
    }
    assert store.stats(" > ")["overruled"] == 2 and store.stats()["overruled"] == 0
    capsys.readouterr()
    assert main(["feedback", "stats", "--uri", store.uri, "--hierarchy-separator", " > "]) == 0
    assert "overruled       2 products" in capsys.readouterr().out


def test_a_review_keeps_the_catalogs_text_and_its_spelling_of_a_tag() -> None:
    """A review judges tags: the catalog's title and description stay (the review page shows a
    description cut short), and a tag accepted in another case is the catalog's tag."""
    from labelrec.data import Product
    from labelrec.runs import reviewed_product

    original = Product("t1", "LEGO Police Station", "a" * 1000, tags=["Toys", "brand:Lego"])
    review = Product("t1", "LEGO Police Station", "a" * 300, tags=["brand:LEGO", "toys", "Gift"])
    after = reviewed_product(original, review)
    assert (after.title, after.description) == (original.title, original.description)
    assert after.tags == ["Toys", "brand:Lego", "Gift"]
    bare = Product("t1", "LEGO Police Station", "", tags=["Toys"])
    assert reviewed_product(bare, review).description == review.description
    assert reviewed_product(original, review, text_of_review=True).description == "a" * 300


def test_a_version_1_store_is_upgraded_and_keeps_its_reviews(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    with sqlite3.connect(db) as conn:  # the tables as labelrec's schema version 1 made them
        conn.executescript(
            """
            CREATE TABLE labelrec_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) NOT NULL);
            INSERT INTO labelrec_meta VALUES ('schema_version', '1');
            CREATE TABLE labelrec_feedback (
                id INTEGER PRIMARY KEY AUTOINCREMENT, created DATETIME NOT NULL,
                product_id VARCHAR(256), title TEXT NOT NULL, description TEXT NOT NULL,
                accepted JSON NOT NULL, rejected JSON NOT NULL, added JSON NOT NULL,
                unknown JSON NOT NULL, reviewer VARCHAR(256), model_version VARCHAR(256));
            INSERT INTO labelrec_feedback VALUES (1, '2026-11-02 10:00:00.000000', 'p1', 'Kite',
                '', '["Toys"]', '[]', '[]', '[]', 'ana', '3');
            """
        )
    store = FeedbackStore(f"sqlite:///{db}")
    assert store.schema_version == SCHEMA_VERSION == 2
    (old,) = store.reviews()
    assert (old.id, old.tags, old.reviewer, old.request_key) == (1, ["Toys"], "ana", None)
    review = {"title": "Ball", "accepted": ["Toys"]}
    assert store.add(Review(**review, request_key="k")) == 2
    assert store.add(Review(**review, request_key="k")) == 2 and len(store) == 2
    with sqlite3.connect(db) as conn:
        with pytest.raises(sqlite3.IntegrityError):  # the index the upgrade made is unique
            conn.execute("UPDATE labelrec_feedback SET request_key = 'k' WHERE id = 1")
    store.engine.dispose()
    # an upgrade cut short after its column (SQLite commits each DDL statement at once)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX ix_labelrec_feedback_request_key")
        conn.execute("UPDATE labelrec_meta SET value = '1' WHERE key = 'schema_version'")
    ro = f"sqlite:///file:{db}?mode=ro&uri=true"
    with pytest.raises(FeedbackError, match="upgraded to 2 when it is opened, .* write access"):
        FeedbackStore(ro, create=False)
    again = FeedbackStore(f"sqlite:///{db}")  # finished: the index added, the version moved
    assert again.schema_version == 2 and len(again) == 2
    assert FeedbackStore(ro, create=False).schema_version == 2  # read-only, once upgraded


def test_reviews_stored_before_a_size_limit_stay_readable(tmp_path: Path) -> None:
    """The size limits are for new reviews: a row stored before one existed is exported, and
    a row no review can be is an error naming its number."""
    store = store_at(tmp_path)
    store.add(Review(title="Kite", product_id="k1", accepted=["Toys"], reviewer=" ana  b "))
    store.add(Review(title="Ball", accepted=["Toys"], reviewer="  "))
    assert [r.reviewer for r in store.reviews()] == ["ana b", None]
    db = tmp_path / "fb" / "feedback.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE labelrec_feedback SET title = ? WHERE id = 1", ("long " * 700,))
    out = tmp_path / "reviewed.jsonl"
    assert store.export(out) == 2 and store.stats()["reviews"] == 2
    assert len(json.loads(out.read_text(encoding="utf-8").splitlines()[0])["title"]) > 2_000
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE labelrec_feedback SET title = ' ' WHERE id = 2")
    with pytest.raises(FeedbackError, match="review 2 in the feedback database: product.title"):
        store.export(out)


def test_a_database_whose_driver_is_missing_is_one_error_naming_it() -> None:
    import importlib.util

    if importlib.util.find_spec("pymysql") is not None:
        pytest.skip("pymysql is installed: its driver is not missing")
    with pytest.raises(FeedbackError, match="its driver pymysql is not installed"):
        FeedbackStore("mysql+pymysql://ana@127.0.0.1:1/reviews")


def test_schema_versions_newer_stores_and_bad_urls_are_refused(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    db = tmp_path / "fb" / "feedback.db"
    store.engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE labelrec_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(FeedbackError, match="schema version 99 is newer"):
        FeedbackStore(f"sqlite:///{db}")
    with pytest.raises(FeedbackError, match="not a database URL"):
        FeedbackStore("no database here")
    (tmp_path / "a-file.txt").write_text("not a folder", encoding="utf-8")
    with pytest.raises(FeedbackError, match="cannot be opened"):
        FeedbackStore(f"sqlite:///{tmp_path / 'a-file.txt'}/inside.db")  # parent is a file
    # The store keeps SQLite in write-ahead-log mode.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _write_forever(uri: str, ready: multiprocessing.synchronize.Event) -> None:
    store = FeedbackStore(uri)
    i = 0
    while True:
        store.add(Review(title=f"product {i}", accepted=["Toys"]))
        i += 1
        if i == 20:
            ready.set()


def test_committed_reviews_survive_a_killed_writer(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}"
    store = FeedbackStore(uri)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    writer = ctx.Process(target=_write_forever, args=(uri, ready))
    writer.start()
    assert ready.wait(120)
    os.kill(writer.pid, signal.SIGKILL)  # mid-stream, as kill -9 of a server would
    writer.join()
    count = len(store)
    assert count >= 20
    ids = [r.id for r in store.reviews()]
    assert ids == list(range(1, count + 1))  # every committed review, none half-written
    store.add(Review(title="after", accepted=["Toys"]))  # and the store still takes writes
    assert len(store) == count + 1


def test_feedback_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(uri)
    store.add(Review(title="Plush bear", product_id="b1", accepted=["Toys"], rejected=["Books"]))
    out = tmp_path / "out.jsonl"
    assert main(["feedback", "export", "--uri", uri, "--output", str(out)]) == 0
    assert "wrote 1 reviewed products" in capsys.readouterr().out
    assert json.loads(out.read_text(encoding="utf-8"))["tags"] == ["Toys"]
    assert main(["feedback", "stats", "--uri", uri, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rejected"] == 1
    assert main(["feedback", "stats", "--uri", uri]) == 0
    assert "most rejected: Books (1)" in capsys.readouterr().out
    assert main(["feedback", "stats", "--uri", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "labelrec feedback: error: feedback database 'nonsense'" in err
    assert "Traceback" not in err


def test_post_feedback_stores_the_review_with_the_served_version(
    make_service, trained_model_dir: Path, tmp_path: Path
) -> None:
    import asyncio

    from labelrec.service import ProductIn

    uri = f"sqlite:///{tmp_path / 'svc.db'}"
    svc = make_service(trained_model_dir, LABELREC_FEEDBACK_URI=uri)
    known = svc.holder.current.recommender.vocab.tags[0]
    out = asyncio.run(
        svc.feedback(
            product=ProductIn(title="Brickton police station", id="p1"),
            accepted=[known],
            rejected=[],
            added=["brand:Brandnew"],
            reviewer="ana",
        )
    )
    assert out.id == 1 and out.model_version == svc.holder.current.version
    assert out.unknown == ["brand:Brandnew"]
    stored = next(FeedbackStore(uri).reviews())
    assert stored.tags == [known, "brand:Brandnew"] and stored.reviewer == "ana"
    assert stored.model_version == svc.holder.current.version
    bad = asyncio.run(
        svc.feedback(product=ProductIn(title="x"), accepted=["a"], rejected=["a"], added=[])
    )
    assert bad.status_code == 400 and b"also accepted" in bad.body
    no_id = asyncio.run(svc.feedback(product=ProductIn(title="x", id=" "), accepted=["a"]))
    assert no_id.status_code == 400 and b"product.id: empty" in no_id.body
    # a model trained on category paths refuses a rejected category above an added one
    data = svc.holder.current.recommender.info.setdefault("config", {}).setdefault("data", {})
    data["hierarchy_separator"] = " > "
    parent = asyncio.run(
        svc.feedback(product=ProductIn(title="x"), rejected=["Toys"], added=["Toys > Kites"])
    )
    assert parent.status_code == 400 and b"Toys is the category above Toys > Kites" in parent.body
    with pytest.raises(RuntimeError, match="LABELREC_FEEDBACK_URI: feedback database"):
        make_service(trained_model_dir, LABELREC_FEEDBACK_URI="nonsense")


def test_the_first_reviews_at_once_are_all_stored(
    make_service, trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No LABELREC_FEEDBACK_URI: feedback.db is made here by the first reviews, arriving
    together; and two stores opening one new database at once (two workers) both work."""
    import asyncio

    from labelrec.service import ProductIn

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LABELREC_FEEDBACK_URI", raising=False)
    svc = make_service(trained_model_dir)

    async def post_all() -> list:
        return await asyncio.gather(
            *(
                svc.feedback(product=ProductIn(title=f"kite {i}", id=f"k{i}"), accepted=["Toys"])
                for i in range(8)
            )
        )

    outs = asyncio.run(post_all())
    assert sorted(o.id for o in outs) == list(range(1, 9))
    assert len(list(FeedbackStore("sqlite:///feedback.db").reviews())) == 8

    uri = f"sqlite:///{tmp_path / 'two.db'}"
    assert open_at_once(uri) == [] and FeedbackStore(uri).schema_version >= 1


# ------------------------------------------------------------------ training from feedback


def test_catalogs_read_rejected_tags_as_known_negatives(tmp_path: Path) -> None:
    rows = [
        {"id": "1", "title": "bear", "tags": ["Toys"], "rejected": ["Books", "Toys", "Books"]},
        {"id": "2", "title": "kite", "tags": "Toys|Outdoor", "rejected": "Books|Garden"},
        {"id": "3", "title": "ball", "tags": ["Toys"]},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    products = read_catalog(path).products
    assert [p.rejected for p in products] == [["Books"], ["Books", "Garden"], []]
    from labelrec.config import DataConfig

    assert read_catalog(path, DataConfig(rejected_column=None)).products[0].rejected == []
    path.write_text(json.dumps({**rows[0], "rejected": [{"x": 1}]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1, field 'rejected'"):
        read_catalog(path)


def test_feedback_merges_into_train_but_never_into_valid(tmp_path: Path) -> None:
    from labelrec.data import Product
    from labelrec.train import Splits, merge_feedback, refit_products

    train = [
        Product("t1", "bear", tags=["Toys"]),
        Product("t2", "kite", tags=["Toys", "brand:Kitey", "Books"]),
    ]
    valid = [Product("v1", "ball", tags=["Toys"])]
    reviewed = tmp_path / "reviewed.jsonl"
    rows = [
        {"id": "t2", "title": "kite", "tags": ["Toys > Outdoor"], "rejected": ["Books"]},
        {"id": "n1", "title": "new one", "tags": ["Garden > Hoses"], "rejected": []},
        {"id": "v1", "title": "ball", "tags": ["Books"], "rejected": ["Toys"]},
    ]
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    merged = merge_feedback(Splits(train, valid, "train.jsonl", "valid.jsonl"), reviewed, " > ")
    assert [p.id for p in merged.train] == ["t1", "t2", "n1"]
    # merged into the product: its gold tags the reviewer did not reject stay (brand:Kitey was
    # not among the suggestions), the rejected one goes, the accepted ones join, paths expanded
    assert merged.train[1].tags == ["Toys", "brand:Kitey", "Toys > Outdoor"]
    assert merged.train[1].rejected == ["Books"]
    assert merged.train[2].tags == ["Garden", "Garden > Hoses"]  # a new product's path too
    assert merged.valid == valid and [p.id for p in merged.feedback] == ["t2", "n1"]
    assert merged.train_source == f"train.jsonl + feedback {reviewed}"
    # the valid product's review waits for a refit, which trains on valid
    (refit_valid,) = [p for p in refit_products(merged) if p.id == "v1"]
    assert (refit_valid.tags, refit_valid.rejected) == (["Books"], ["Toys"])


def test_a_review_overrules_the_catalogs_own_rejections(tmp_path: Path) -> None:
    from labelrec.data import Product
    from labelrec.runs import reviewed_product

    original = Product(
        "t1", "kite", tags=["Toys", "Toys > Outdoor"], rejected=["color:Red", "Books"]
    )
    review = Product("t1", "kite", tags=["color:Red"], rejected=["Toys"])
    after = reviewed_product(original, review, " ＞ ")  # a separator typed full-width
    assert after.tags == ["color:Red"]  # Toys and the category under it go
    assert after.rejected == ["Books", "Toys"]  # color:Red accepted: a positive, not a negative


def test_one_tag_in_another_case_is_one_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_at(tmp_path)
    both = Review(title="kite", accepted=["gift idea"], rejected=["Gift Idea"])
    with pytest.raises(FeedbackError, match="rejected: Gift Idea also accepted"):
        store.add(both)
    with monkeypatch.context() as m:  # stored by a labelrec before this check...
        m.setattr(Review, "check_verdicts", lambda self: None)
        store.add(both)
    assert [r.rejected for r in store.reviews()] == [["Gift Idea"]]  # ...it is read back
    assert store.stats()["reviews"] == 1
    store = store_at(tmp_path / "next")
    store.add(Review(title="kite", product_id="p1", added=["brand:Duplo"]))
    store.add(Review(title="kite", product_id="p1", rejected=["brand:DUPLO"]))
    out = tmp_path / "reviewed.jsonl"
    store.export(out)
    row = json.loads(out.read_text(encoding="utf-8"))
    assert (row["tags"], row["rejected"]) == ([], ["brand:DUPLO"])  # the later verdict wins
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # as a plain open makes it
    assert store.stats()["overruled"] == 1


def test_a_closed_store_leaves_every_review_in_its_database_file(tmp_path: Path) -> None:
    import shutil

    with store_at(tmp_path) as store:
        for i in range(20):
            store.add(Review(title=f"kite {i}", accepted=["Toys"]))
        assert (tmp_path / "fb" / "feedback.db-wal").stat().st_size > 0  # written ahead
    wal = tmp_path / "fb" / "feedback.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    alone = tmp_path / "copy" / "feedback.db"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "fb" / "feedback.db", alone)  # the database file, nothing beside it
    with FeedbackStore(f"sqlite:///{alone}", create=False) as copy:
        assert len(copy) == 20


def test_a_new_path_under_a_known_category_takes_its_spelling() -> None:
    from labelrec.data import TagVocab

    vocab = TagVocab(["Toys", "Toys > Building"], [2, 1])
    review = Review(title="kite", added=["toys > building > technic", "garden > hoses"])
    review.match_vocabulary(vocab, " ＞ ")  # the model's separator, typed full-width
    assert review.added == ["Toys > Building > technic", "garden > hoses"]
    assert review.unknown == review.added
    alone = Review(title="kite", added=["toys > building > technic"])
    alone.match_vocabulary(vocab)  # no category paths: a tag as typed
    assert alone.added == ["toys > building > technic"]


def test_reviews_of_held_out_products_stay_out_of_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from labelrec.config import load_config
    from labelrec.data import Product
    from labelrec.train import Splits, load_splits, merge_feedback

    train = [Product("t1", "bear", tags=["Toys"])]
    test = tmp_path / "test.csv"  # a held-out catalog in the training catalog's columns
    test.write_text("sku,name,cat\nh1,Kite 2m,Toys\nh2,Plush dog,Toys\n", encoding="utf-8")
    reviewed = tmp_path / "reviewed.jsonl"
    rows = [
        {"id": "h1", "title": "kite", "tags": ["Outdoor"]},  # the same id
        {"id": "x9", "title": "plush DOG!", "tags": ["Plush"]},  # a near-duplicate title
        {"id": "n1", "title": "plush cat", "tags": ["Plush"]},
        {"id": "t1", "title": "bear", "tags": ["Plush"]},
    ]
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    columns = ["data.id_column=sku", "data.title_column=name", "data.tag_columns=[cat]"]
    cfg = load_config(None, columns).data
    splits = Splits(train, [], "train.jsonl", "valid.jsonl")
    with caplog.at_level("WARNING", logger="labelrec.runs"):
        merged = merge_feedback(splits, reviewed, None, [test], cfg)
    assert [p.id for p in merged.train] == ["t1", "n1"] and merged.held_out == 2
    assert merged.train[0].tags == ["Toys", "Plush"]
    assert [p.id for p in merged.feedback] == ["n1", "t1"]
    assert "2 of 4 reviews are of products in data.holdout" in caplog.text
    assert merge_feedback(splits, reviewed).held_out == 0  # no holdout: every review joins

    # from a config: data.holdout names the files
    train_file = tmp_path / "train.csv"
    train_file.write_text("sku,name,cat\nt1,bear,Toys\nt2,ball,Toys\n", encoding="utf-8")
    overrides = [
        *columns, f"data.train={train_file}", f"data.valid={train_file}",
        f"data.feedback={reviewed}", f"data.holdout={test}",
    ]  # fmt: skip
    assert load_splits(load_config(None, overrides)).held_out == 2
    # quick runs read at most data.max_products a file: the held-out files are read whole
    quick = load_config(None, [*overrides, "data.max_products=1"])
    assert load_splits(quick).held_out == 2


def test_rejected_tags_weigh_more_in_the_loss() -> None:
    import torch

    from labelrec.train import weighted_bce

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    plain = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    reference = torch.nn.BCEWithLogitsLoss()(logits, plain)
    torch.testing.assert_close(weighted_bce(logits, plain, 3.0), reference)  # no -1: the same
    with_rejected = plain.clone()
    with_rejected[0, 2] = -1.0  # product 0 rejected tag 2
    each = torch.nn.functional.binary_cross_entropy_with_logits(logits, plain, reduction="none")
    expected = (each.sum() + 2.0 * each[0, 2]) / each.numel()
    torch.testing.assert_close(weighted_bce(logits, with_rejected, 3.0), expected)


def test_train_with_feedback(tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    from conftest import tiny_config

    from labelrec.data import TagVocab
    from labelrec.train import train

    base = read_catalog(toy_data_dir / "train.jsonl").products
    rows = [
        {"id": base[0].id, "title": base[0].title, "tags": base[0].tags + ["reviewed:yes"],
         "rejected": [t for p in base[1:] for t in p.tags if t not in base[0].tags][:2]},
        {"id": "fb-new", "title": "hand-tagged plush bear", "tags": ["reviewed:yes"],
         "rejected": []},
    ]  # fmt: skip
    reviewed = tmp_path / "reviewed.jsonl"
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "m"
    cfg = tiny_config(
        tiny_backbone, toy_data_dir, out, f"data.feedback={reviewed}", "train.negative_weight=4"
    )
    result = train(cfg, progress=False)
    vocab = TagVocab.load(out / "tags.json")
    assert "reviewed:yes" in vocab.index  # an added tag becomes part of the vocabulary
    assert math.isfinite(result.history[-1]["train_loss"])
    with pytest.raises(ValueError, match="train.negative_weight: must be > 0"):
        tiny_config(tiny_backbone, toy_data_dir, out, "train.negative_weight=0")


def test_the_refit_trains_on_the_reviews_of_valid_products(
    tiny_backbone: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    """A review of a valid product stays out of the tuning run (valid measures it) and joins
    the refit, which trains on valid: its added tag is in the saved model's vocabulary only."""
    from conftest import tiny_config

    from labelrec.data import TagVocab
    from labelrec.train import train

    product = read_catalog(toy_data_dir / "valid.jsonl").products[0]
    row = {"id": product.id, "title": product.title, "tags": [*product.tags, "reviewed:valid"]}
    reviewed = tmp_path / "reviewed.jsonl"
    reviewed.write_text(json.dumps(row) + "\n", encoding="utf-8")
    out = tmp_path / "m"
    cfg = tiny_config(
        tiny_backbone, toy_data_dir, out, f"data.feedback={reviewed}", "train.refit=true",
        "train.epochs=2",
    )  # fmt: skip
    train(cfg, progress=False)
    assert "reviewed:valid" in TagVocab.load(out / "tags.json").index
    assert "reviewed:valid" not in TagVocab.load(out / "tuning" / "tags.json").index


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server from Debian's packages, started in a temporary folder for these tests
    (as the ``postgres`` user when the tests run as root: initdb refuses root); skipped, saying
    how to get one, where there is none."""
    import pwd
    import shutil as sh
    import socket
    import subprocess
    import tempfile

    import psycopg  # noqa: F401  (required: its absence fails the tests)

    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdbs:
        pytest.skip("no PostgreSQL server here: apt-get install postgresql")
    bindir = initdbs[-1].parent
    # in the system's temporary folder, which the server's user can enter, and short, so that
    # the server's socket path in it fits; removed however the start ends
    root = Path(tempfile.mkdtemp(prefix="labelrec-pg-", dir=SYSTEM_TMP))
    data, as_user, started = root / "data", [], False
    try:
        if os.geteuid() == 0:
            try:
                pg = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root without a postgres user to run the server as")
            os.chown(root, pg.pw_uid, pg.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
             "-w", "-o", f"-p {port} -k {root} -h 127.0.0.1", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                capture_output=True,
            )
        sh.rmtree(root, ignore_errors=True)


def test_postgresql_store(postgres_url: str, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = FeedbackStore(postgres_url)
    assert store.engine.dialect.name == "postgresql" and store.schema_version == SCHEMA_VERSION
    start = len(store)

    def write(i: int) -> int:
        return store.add(
            Review(title=f"продукт {i} 玩具", product_id=f"pg{i}", accepted=["Toys"], added=["新"])
        )

    with ThreadPoolExecutor(8) as pool:  # concurrent writers, one transaction each
        ids = list(pool.map(write, range(80)))
    assert len(set(ids)) == 80 and len(store) == start + 80
    rows = [r for r in store.reviews(batch=25) if r.product_id and r.product_id.startswith("pg")]
    assert {r.title for r in rows} == {f"продукт {i} 玩具" for i in range(80)}
    assert all(r.tags == ["Toys", "新"] for r in rows)
    assert store.export(tmp_path / "pg.jsonl") >= 80
    assert FeedbackStore(postgres_url).schema_version == SCHEMA_VERSION  # opened again as is
    with pytest.raises(FeedbackError, match="cannot be opened"):
        FeedbackStore(postgres_url.rsplit(":", 1)[0] + ":1/postgres")  # nothing listens there


def test_postgresql_upgrade_and_one_review_per_request_key(postgres_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    server = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE labelrec_v1"))
    server.dispose()
    url = postgres_url.rsplit("/", 1)[0] + "/labelrec_v1"
    old = sa.create_engine(url)
    with old.begin() as conn:  # the tables as labelrec's schema version 1 made them
        for statement in (
            "CREATE TABLE labelrec_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) NOT NULL)",
            "INSERT INTO labelrec_meta VALUES ('schema_version', '1')",
            "CREATE TABLE labelrec_feedback (id SERIAL PRIMARY KEY,"
            " created TIMESTAMP WITH TIME ZONE NOT NULL, product_id VARCHAR(256),"
            " title TEXT NOT NULL, description TEXT NOT NULL, accepted JSON NOT NULL,"
            " rejected JSON NOT NULL, added JSON NOT NULL, unknown JSON NOT NULL,"
            " reviewer VARCHAR(256), model_version VARCHAR(256))",
            "INSERT INTO labelrec_feedback (created, product_id, title, description, accepted,"
            " rejected, added, unknown) VALUES (now(), 'p1', 'Kite', '', '[\"Toys\"]', '[]',"
            " '[]', '[]')",
        ):
            conn.execute(sa.text(statement))
    old.dispose()
    # several workers open it at once after the upgrade of labelrec: one upgrades, the others
    # wait for its ALTER TABLE, find the column made and open the upgraded store
    assert open_at_once(url) == []
    store = FeedbackStore(url)
    assert store.schema_version == SCHEMA_VERSION
    assert [r.tags for r in store.reviews()] == [["Toys"]]

    def send(_: int) -> int:  # a client's retries arriving together
        return store.add(Review(title="Ball", accepted=["Toys"], request_key="retry-1"))

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(send, range(16)))
    assert len(ids) == 1 and len(store) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"title": "bad \ud800 title"}, r"product.title: holds a lone surrogate U\+D800 at char"),
        ({"description": "x\udfff"}, r"product.description: holds a lone surrogate U\+DFFF"),
        ({"product_id": "p\udc80"}, r"product.id: holds a lone surrogate"),
        ({"accepted": ["ok", "b\ud83d"]}, r"accepted\[1\]: holds a lone surrogate"),
        ({"rejected": ["\udc00"]}, r"rejected\[0\]: holds a lone surrogate"),
        ({"added": ["\ud800x"]}, r"added\[0\]: holds a lone surrogate"),
        ({"unknown": ["\ud800"]}, r"unknown\[0\]: holds a lone surrogate"),
        ({"reviewer": "ann\ud800"}, r"reviewer: holds a lone surrogate"),
        ({"model_version": "\udfff"}, r"model_version: holds a lone surrogate"),
    ],
)
def test_lone_surrogates_are_a_feedback_error_naming_the_field(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    store = store_at(tmp_path)
    with pytest.raises(FeedbackError, match=message):
        store.add(Review(**{"title": "x", "accepted": ["a"], **kwargs}))
    assert len(store) == 0
    # real non-BMP characters (a surrogate pair in UTF-16, one code point here) are fine
    assert store.add(Review(title="Rocket 🚀 火箭", accepted=["toy 🧸"], reviewer="李")) == 1


def test_a_review_reads_ids_texts_and_tags_as_a_catalog_does(tmp_path: Path) -> None:
    """ "K1 " is the product K1; a NUL in a description (which PostgreSQL refuses) and an
    invisible character in a tag (a look-alike of a real tag) are dropped, as catalogs drop
    them."""
    from labelrec.data import TagVocab

    store = store_at(tmp_path)
    store.add(Review(title="Kite", product_id="K1 ", rejected=["Books"]))
    review = Review(
        title="Kite\u200b", product_id="K1", description="a\x00b", accepted=["Toys\u00ad"]
    )
    assert (review.product_id, review.title, review.description) == ("K1", "Kite", "ab")
    review.match_vocabulary(TagVocab(["Toys", "Books"], [1, 1]))
    assert review.accepted == ["Toys"] and review.unknown == []
    store.add(review)
    out = tmp_path / "r.jsonl"
    assert store.export(out) == 1 and store.stats()["products"] == 1
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert (row["id"], row["tags"], row["rejected"]) == ("K1", ["Toys"], ["Books"])
    assert read_catalog(out).products[0].id == "K1"  # no duplicate id for training to refuse
    with pytest.raises(FeedbackError, match="rejected: Toys also accepted"):  # once cleaned
        Review(title="Kite", accepted=["Toys"], rejected=["Toys\u200b"])
    with pytest.raises(FeedbackError, match=r"added\[0\]"):
        Review(title="Kite", added=["\u200b"])


def test_review_times_are_utc_on_every_database(tmp_path: Path) -> None:
    import datetime as dt

    store = store_at(tmp_path)
    paris = dt.timezone(dt.timedelta(hours=1))
    store.add(
        Review(title="Kite", accepted=["Toys"], created=dt.datetime(2024, 3, 1, 12, tzinfo=paris))
    )
    store.add(Review(title="Ball", accepted=["Toys"], created=dt.datetime(2024, 3, 1, 12)))
    first, second = store.reviews()
    assert first.created == dt.datetime(2024, 3, 1, 11, tzinfo=dt.timezone.utc)
    assert second.created == dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)  # naive: UTC


def test_a_read_only_database_can_be_exported(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.add(Review(title="Kite", product_id="K1", accepted=["Toys"]))
    store.engine.dispose()
    path = tmp_path / "fb" / "feedback.db"
    uri = f"sqlite:///file:{path}?mode=ro&uri=true"  # SQLite's read-only URI filename
    read_only = FeedbackStore(uri, create=False)
    assert read_only.export(tmp_path / "r.jsonl") == 1 and read_only.stats()["reviews"] == 1
    with pytest.raises(FeedbackError, match="did not take the review"):
        read_only.add(Review(title="Ball", accepted=["Toys"]))
    with pytest.raises(FileNotFoundError, match="no feedback database at"):
        FeedbackStore(f"sqlite:///file:{tmp_path / 'none.db'}?mode=ro&uri=true", create=False)


def test_a_sqlite_path_in_the_home_folder_is_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///~/feedback.db`` is the file in the home folder, for the service that creates
    it and for stats and export, which open it as it is."""
    monkeypatch.setenv("HOME", str(tmp_path))
    uri = "sqlite:///~/reviews/feedback.db"
    with FeedbackStore(uri) as store:
        store.add(Review(title="Ball", accepted=["Toys"]))
    assert (tmp_path / "reviews" / "feedback.db").is_file() and not Path("~").exists()
    with FeedbackStore(uri, create=False) as store:
        assert store.stats()["reviews"] == 1


def test_reviews_meet_the_catalog_by_title_and_by_category(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A catalog product reviewed without an id is that product; a rejected category takes
    the categories under it along; a new product with only rejected tags stays out."""
    from labelrec.data import Product
    from labelrec.train import Splits, merge_feedback, refit_products

    train = [
        Product("t1", "LEGO City Police Station", tags=["Toys", "Toys > Building Sets"]),
        Product("t2", "Puzzle", tags=["Toys", "Toys > Puzzles", "Toys > Puzzles > Jigsaw"]),
        Product("t3", "Twin", tags=["Toys"]),
        Product("t4", "twin", tags=["Toys"]),
        Product("feedback-1", "Kite", tags=["Toys"]),  # a catalog's own id, not an export's
    ]
    valid = [Product("v1", "Ball", tags=["Toys", "Toys > Balls", "Toys > Balls > Soft"])]
    store = store_at(tmp_path)
    store.add(Review(title="lego city police station", accepted=["brand:LEGO"], rejected=["Books"]))
    store.add(Review(title="Puzzle", product_id="t2", rejected=["Toys > Puzzles"]))
    store.add(Review(title="Twin", accepted=["Gift"]))  # two catalog products have this title
    store.add(Review(title="Garden hose", product_id="n1", rejected=["Books"]))
    store.add(Review(title="Ball", rejected=["Toys > Balls"]))  # a valid product, no id
    store.add(Review(title="Puzzle", product_id="feedback-1", accepted=["Kites"]))
    reviewed = tmp_path / "reviewed.jsonl"
    store.export(reviewed)
    with caplog.at_level("INFO", logger="labelrec.runs"):
        merged = merge_feedback(Splits(train, valid, "train", "valid"), str(reviewed), " > ")
    by_id = {p.id: p for p in merged.train}
    assert list(by_id) == ["t1", "t2", "t3", "t4", "feedback-1", "feedback-3"]
    assert by_id["feedback-1"].tags == ["Toys", "Kites"]  # its id, not t2's title
    assert (by_id["t1"].tags, by_id["t1"].rejected) == (
        ["Toys", "Toys > Building Sets", "brand:LEGO"],
        ["Books"],
    )
    assert (by_id["t2"].tags, by_id["t2"].rejected) == (["Toys"], ["Toys > Puzzles"])
    assert by_id["feedback-3"].tags == ["Gift"]  # no one product to be: a product of its own
    assert "2 products reviewed without an id are catalog products" in caplog.text
    assert "1 reviewed products are in no catalog and have no tag" in caplog.text
    (ball,) = [p for p in refit_products(merged) if p.id == "v1"]
    assert (ball.tags, ball.rejected) == (["Toys"], ["Toys > Balls"])


def test_a_product_reviewed_with_and_without_its_id_keeps_both_reviews(tmp_path: Path) -> None:
    """Two rows of the export that are one product (one review gave its id, a later one only
    its title) merge as the export merges reviews: the later verdict on each tag wins."""
    from labelrec.data import Product
    from labelrec.train import Splits, merge_feedback, refit_products

    train = [Product("K1", "LEGO City Police Station", tags=["Toys", "Books"])]
    valid = [Product("v1", "Soft Ball", tags=["Toys"])]
    store = store_at(tmp_path)
    store.add(Review(title="LEGO City Police Station", product_id="K1", accepted=["brand:Lego"]))
    store.add(Review(title="lego city police station", accepted=["Toys"], rejected=["Books"]))
    store.add(Review(title="Soft Ball", product_id="v1", accepted=["Balls"], rejected=["Gift"]))
    store.add(Review(title="soft ball", accepted=["Gift"]))  # later: Gift accepted after all
    reviewed = tmp_path / "reviewed.jsonl"
    assert store.export(reviewed) == 4
    merged = merge_feedback(Splits(train, valid, "train", "valid"), str(reviewed))
    (lego,) = merged.train
    assert (lego.id, lego.tags, lego.rejected) == ("K1", ["Toys", "brand:Lego"], ["Books"])
    (ball,) = [p for p in refit_products(merged) if p.id == "v1"]
    assert (ball.tags, ball.rejected) == (["Toys", "Balls", "Gift"], [])
