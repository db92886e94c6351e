"""Reviewer feedback in a database: which suggested tags people accepted, rejected or added.

A :class:`FeedbackStore` keeps one row per review through SQLAlchemy: a SQLite file by default
(write-ahead log, so readers never block the writer and a killed process loses nothing
committed), or any database SQLAlchemy reaches (``postgresql+psycopg://...``). The store exports a
catalog that ``labelrec train`` reads: accepted and added tags become labels, rejected ones are
kept beside them as known negatives.

The schema carries a version (table ``labelrec_meta``); a store opened by an older labelrec is
upgraded in place by the steps in ``_UPGRADES``, and a newer one is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from labelrec.data import (
    TagVocab,
    clean_tag,
    clean_text,
    fold_width,
    has_visible_text,
    tag_key,
    unicode_problem,
)
from labelrec.modeldir import shared_mode
from labelrec.runs import REVIEW_ID_PREFIX

FEEDBACK_URI_ENV = "LABELREC_FEEDBACK_URI"
DEFAULT_FEEDBACK_URI = "sqlite:///feedback.db"
SCHEMA_VERSION = 2

_metadata = sa.MetaData()
_meta = sa.Table(
    "labelrec_meta",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
_reviews = sa.Table(
    "labelrec_feedback",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("product_id", sa.String(256), nullable=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("accepted", sa.JSON, nullable=False),
    sa.Column("rejected", sa.JSON, nullable=False),
    sa.Column("added", sa.JSON, nullable=False),
    sa.Column("unknown", sa.JSON, nullable=False),  # tags the model did not know, flagged
    sa.Column("reviewer", sa.String(256), nullable=True),
    sa.Column("model_version", sa.String(256), nullable=True),
    # the client's Idempotency-Key: a review sent again under it is stored once
    sa.Column("request_key", sa.String(128), nullable=True),
)
_request_key_index = sa.Index(
    "ix_labelrec_feedback_request_key", _reviews.c.request_key, unique=True
)


def _add_request_key(conn: sa.Connection) -> None:
    """Version 1 to 2: the ``request_key`` column and its unique index, each added where it is
    missing (SQLite commits each DDL statement at once: an upgrade cut short between the two
    is finished by the next open)."""
    inspector = sa.inspect(conn)
    if "request_key" not in {c["name"] for c in inspector.get_columns(_reviews.name)}:
        kind = _reviews.c.request_key.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {_reviews.name} ADD COLUMN request_key {kind}"))
    if _request_key_index.name not in {i["name"] for i in inspector.get_indexes(_reviews.name)}:
        _request_key_index.create(conn)


# version -> function(connection) bringing it to version + 1
_UPGRADES: dict[int, Any] = {1: _add_request_key}


class FeedbackError(ValueError):
    """A review that cannot be stored, or a store that cannot be opened."""


class ReviewConflict(FeedbackError):
    """A request key that is already a different review's."""


# An Idempotency-Key: visible ASCII, at most 128; unique to a review across every client (a
# UUID), since one key names one review in the whole store.
_REQUEST_KEY = re.compile(r"[!-~]{1,128}")


# The longest text a review keeps per field: ids, reviewers and model versions fit their
# columns (String(256), which PostgreSQL enforces), a title or a description is far above any
# catalog's yet keeps one review from filling the disk.
MAX_REVIEW_CHARS = {
    "product.title": 2_000,
    "product.description": 100_000,
    "product.id": 256,
    "reviewer": 256,
    "model_version": 256,
}


def _check_text(value: Any, name: str) -> None:
    """Refuse a string with a lone surrogate (U+D800..U+DFFF): not Unicode text, no database
    stores it."""
    if isinstance(value, str) and (problem := unicode_problem(value)) is not None:
        raise FeedbackError(f"{name}: {problem}")


def _tag_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise FeedbackError(f"{name}: expected a list of tags, got {value!r}")
    out: list[str] = []
    for i, tag in enumerate(value):
        _check_text(tag, f"{name}[{i}]")
        if not isinstance(tag, str) or not has_visible_text(tag):
            raise FeedbackError(f"{name}[{i}]: expected a non-empty tag, got {tag!r}")
        tag = clean_tag(tag)  # 品牌：华为 is 品牌:华为, Books\u00ad is Books, as in catalogs
        if tag not in out:
            out.append(tag)
    return out


@dataclass
class Review:
    """One reviewer's verdict on the tags suggested for one product."""

    title: str
    description: str = ""
    product_id: str | None = None
    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    reviewer: str | None = None
    model_version: str | None = None
    unknown: list[str] = field(default_factory=list)
    id: int | None = None
    created: dt.datetime | None = None
    request_key: str | None = None  # the client's Idempotency-Key, if it sent one
    # read back from the store: the size limits are for new reviews (a review stored before
    # a limit existed stays readable), and an empty id reads as none
    stored: InitVar[bool] = False

    def __post_init__(self, stored: bool = False) -> None:
        if self.request_key is not None and not (
            isinstance(self.request_key, str) and _REQUEST_KEY.fullmatch(self.request_key)
        ):
            raise FeedbackError(
                "Idempotency-Key: 1 to 128 visible ASCII characters (a UUID, say),"
                f" got {self.request_key!r}"
            )
        if not isinstance(self.title, str) or not self.title.strip():
            raise FeedbackError("product.title: must be a non-empty string")
        if not isinstance(self.description, str):
            raise FeedbackError("product.description: must be a string")
        # read as a catalog reads them: "K1 " is the product "K1", and a NUL or a zero-width
        # space is no part of a title (nor storable in PostgreSQL's text)
        if self.product_id is not None:
            self.product_id = " ".join(str(self.product_id).split())
            if not self.product_id and stored:
                self.product_id = None
            elif not self.product_id:  # a catalog row needs a real id (train refuses "")
                raise FeedbackError("product.id: empty; leave it out for a product without one")
        self.title = clean_text(self.title)
        if not self.title:
            raise FeedbackError("product.title: no visible text")
        self.description = clean_text(self.description)
        if isinstance(self.reviewer, str):  # "ana " is ana; blanks are no one
            self.reviewer = " ".join(self.reviewer.split()) or None
        for name, value in (
            ("product.title", self.title),
            ("product.description", self.description),
            ("product.id", self.product_id),
            ("reviewer", self.reviewer),
            ("model_version", self.model_version),
        ):
            _check_text(value, name)
            if not stored and isinstance(value, str) and len(value) > MAX_REVIEW_CHARS[name]:
                raise FeedbackError(
                    f"{name}: {len(value):,} characters, over the {MAX_REVIEW_CHARS[name]:,}"
                    " a review keeps"
                )
        for name in ("accepted", "rejected", "added", "unknown"):
            setattr(self, name, _tag_list(getattr(self, name), name))
        self._check_verdicts()
        if not (self.accepted or self.rejected or self.added):
            raise FeedbackError("accepted, rejected, added: give at least one tag")

    def _check_verdicts(self, key: Callable[[str], str] = str) -> None:
        kept = {key(t) for t in self.accepted + self.added}
        both = sorted(t for t in self.rejected if key(t) in kept)
        if both:
            raise FeedbackError(f"rejected: {', '.join(both)} also accepted or added")

    def check_verdicts(self) -> None:
        """Refuse a tag both accepted (or added) and rejected in any case or width: a new
        review is checked so (``FeedbackStore.add``, the service); a stored one, read back,
        only for one spelling (those of labelrec before this check stay readable)."""
        self._check_verdicts(tag_key)

    def match_vocabulary(self, vocab: TagVocab, separator: str | None = None) -> None:
        """Write each tag as the model's vocabulary does where it differs only in case or width
        (a reviewer's ``品牌:IPHONE`` is the model's ``品牌:iphone``: one tag in training, not
        two), then flag the others as unknown. With category paths (``separator``), a new path
        under a known category takes that category's spelling (``toys > building > technic``
        under ``Toys > Building``). A tag both accepted and rejected once spelt alike is
        refused as before."""
        sep = fold_width(separator) if separator else ""
        for name in ("accepted", "rejected", "added"):
            spelt: list[str] = []
            for tag in getattr(self, name):
                j = vocab.find(tag)
                tag = tag if j is None else vocab.tags[j]
                if j is None and sep and sep in tag:
                    tag = _under_known(tag, sep, vocab)
                if tag not in spelt:
                    spelt.append(tag)
            setattr(self, name, spelt)
        self.check_verdicts()
        self.flag_unknown(vocab.index)

    def check_hierarchy(self, separator: str | None) -> None:
        """Refuse a rejected category above an accepted or added one (``Toys`` rejected,
        ``Toys > Building Sets`` added): with category paths (``data.hierarchy_separator``) the
        narrower one implies it, and training would keep it."""
        if not separator:
            return
        below = {r: tag_key(r + fold_width(separator)) for r in self.rejected}
        for tag in self.tags:
            for rejected, prefix in below.items():
                if tag_key(tag).startswith(prefix):  # in any case or width, as tags match
                    raise FeedbackError(
                        f"rejected: {rejected} is the category above {tag}, which is accepted"
                        " or added; reject the narrower one, or keep both"
                    )

    @property
    def tags(self) -> list[str]:
        """The product's tags after review: accepted, then added."""
        return self.accepted + [t for t in self.added if t not in self.accepted]

    def flag_unknown(self, known: Container[str]) -> None:
        """Record which of the review's tags are outside ``known`` (the model's vocabulary: a
        set, or ``TagVocab.index``)."""
        self.unknown = [t for t in self.accepted + self.added + self.rejected if t not in known]

    @property
    def product_key(self) -> str:
        """What identifies the reviewed product: its id, else its title and description (two
        reviews of one product pasted without an id are one product)."""
        if self.product_id is not None:
            return f"id:{self.product_id}"
        return f"text:{' '.join(self.title.split())}\x00{' '.join(self.description.split())}"

    def to_catalog_row(self) -> dict[str, Any]:
        """A training catalog row: id, title, description, tags, and the rejected tags."""
        row_id = self.product_id if self.product_id is not None else f"{REVIEW_ID_PREFIX}{self.id}"
        return {
            "id": row_id,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "rejected": self.rejected,
        }


def _utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC; a naive one is taken as UTC. SQLite keeps no offset, so a review's
    time is stored and read back in UTC on every database."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def _review_of(row: Any) -> Review:
    """The :class:`Review` a stored row holds (an error names the review)."""
    try:
        return _stored_review(row)
    except FeedbackError as err:
        raise FeedbackError(f"review {row['id']} in the feedback database: {err}") from None


def _stored_review(row: Any) -> Review:
    return Review(
        title=row["title"],
        description=row["description"] or "",
        product_id=row["product_id"],
        accepted=list(row["accepted"]),
        rejected=list(row["rejected"]),
        added=list(row["added"]),
        reviewer=row["reviewer"],
        model_version=row["model_version"],
        unknown=list(row["unknown"]),
        id=int(row["id"]),
        created=_utc(row["created"]),
        request_key=row["request_key"],
        stored=True,
    )


SQLITE_BUSY_MS = 10_000  # how long a SQLite writer waits for another's lock


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers and one writer at once; crash-safe
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")  # writers wait for each other
    cursor.close()


MIGRATE_ATTEMPTS = 10  # tries at creating the tables while other connections create them


def _created_meanwhile(err: Exception) -> bool:
    """Whether ``err`` says another connection created the tables or the version row first,
    or holds SQLite's write lock: a transaction that read before it writes gets SQLITE_BUSY at
    once, without the busy timeout's wait, when another wrote meanwhile."""
    text = str(err).lower()
    return any(
        words in text
        for words in ("already exists", "unique constraint", "duplicate", "database is locked")
    )


def _under_known(path: str, sep: str, vocab: TagVocab) -> str:
    """``path`` with its longest prefix that the vocabulary knows in another case or width
    spelt as the vocabulary spells it."""
    levels = path.split(sep)
    for n in range(len(levels) - 1, 0, -1):
        j = vocab.find(sep.join(levels[:n]))
        if j is not None:
            return sep.join([vocab.tags[j], *levels[n:]])
    return path


def _verdicts(review: Review) -> list[tuple[str, bool]]:
    """A review's tags with their verdicts: accepted and added kept, rejected not."""
    return [(t, True) for t in review.tags] + [(t, False) for t in review.rejected]


def _judge(
    verdicts: dict[str, tuple[str, bool]], review: Review, separator: str | None = None
) -> bool:
    """Apply ``review``'s verdicts over the earlier ones of its product (tag key -> (the tag as
    last spelt, kept)): the later verdict on a tag wins. With category paths (``separator``) a
    rejected category also takes the kept ones under it (``Toys`` rejected after ``Toys >
    Kites`` was added), and a kept path clears the rejections of the categories above it,
    which it implies. Returns whether an earlier verdict was reversed."""
    sep = tag_key(separator) if separator else ""
    reversed_ = False
    for tag, kept in _verdicts(review):
        key = tag_key(tag)
        if sep:
            if kept:
                levels = key.split(sep)
                above = [sep.join(levels[:n]) for n in range(1, len(levels))]
            else:
                above = [k for k, (_, was) in verdicts.items() if was and k.startswith(key + sep)]
            for other in above:
                if other in verdicts and verdicts[other][1] != kept:
                    del verdicts[other]
                    reversed_ = True
        if verdicts.get(key, (tag, kept))[1] != kept:
            reversed_ = True
        verdicts[key] = (tag, kept)
    return reversed_


class FeedbackStore:
    """Reviews in a database named by a SQLAlchemy URL (``sqlite:///feedback.db``...)."""

    def __init__(self, uri: str = DEFAULT_FEEDBACK_URI, *, create: bool = True) -> None:
        """Open the store at ``uri``; ``create=False`` (read-only uses such as stats and export)
        refuses a SQLite file that does not exist rather than create it and its folders, and a
        database without labelrec's tables rather than add them."""
        self.uri = uri
        try:
            url = sa.engine.make_url(uri)
        except sa.exc.ArgumentError as err:
            raise FeedbackError(f"feedback database {uri!r}: not a database URL ({err})") from None
        shown = url.render_as_string(hide_password=True)
        sqlite_file = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            name = url.database
            if str(url.query.get("uri", "")).lower() in ("true", "1") and name.startswith("file:"):
                # SQLite's URI filenames (file:/srv/feedback.db?mode=ro&uri=true): the file's path
                memory = url.query.get("mode") == "memory"
                name = "" if memory else urllib.parse.urlparse(name).path
            sqlite_file = Path(name).expanduser() if name else None
            if name == url.database and sqlite_file is not None and str(sqlite_file) != name:
                url = url.set(database=str(sqlite_file))  # SQLite would read ~ as a folder
        if not create and sqlite_file is not None and not sqlite_file.exists():
            raise FileNotFoundError(
                f"no feedback database at {sqlite_file} (set --uri or {FEEDBACK_URI_ENV})"
            )
        try:
            if sqlite_file is not None:
                sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            if url.get_backend_name() == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            if not create and not sa.inspect(self.engine).has_table(_meta.name):
                raise FeedbackError(f"{shown} holds no labelrec feedback (no {_meta.name} table)")
            self._migrate()
        except (sa.exc.SQLAlchemyError, OSError) as err:
            raise FeedbackError(
                f"feedback database {shown} cannot be opened:"
                f" {type(err).__name__}: {str(err).splitlines()[0]}"
            ) from None
        except ImportError as err:  # the URL's database driver (psycopg2, pymysql...)
            raise FeedbackError(
                f"feedback database {shown}: its driver {err.name or ''} is not installed"
                f" ({err}); install it, or name an installed one in the URL"
                " (postgresql+psycopg://...)"
            ) from None

    def close(self) -> None:
        """Close the store's connections. On SQLite the last one to close writes the
        write-ahead log into the database file, which then holds every review on its own (a
        copy of the file alone is whole)."""
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_env(cls, *, create: bool = True) -> FeedbackStore:
        """The store named by ``LABELREC_FEEDBACK_URI`` (default: ``feedback.db`` here);
        ``create`` as for the constructor."""
        uri = os.environ.get(FEEDBACK_URI_ENV, "").strip() or DEFAULT_FEEDBACK_URI
        return cls(uri, create=create)

    def _migrate(self) -> None:
        """Create or upgrade labelrec's tables. Two processes (or threads) creating or
        upgrading the same database at once: the one that loses the race finds the tables or
        the column made (PostgreSQL: a DuplicateColumn once the winner commits), or (SQLite) its
        read turned write refused at once, and tries again."""
        for attempt in range(MIGRATE_ATTEMPTS):
            try:
                self._migrate_once()
                return
            except (sa.exc.IntegrityError, sa.exc.OperationalError, sa.exc.ProgrammingError) as err:
                if attempt == MIGRATE_ATTEMPTS - 1 or not _created_meanwhile(err):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _migrate_once(self) -> None:
        with self.engine.begin() as conn:
            _metadata.create_all(conn)
            row = conn.execute(
                sa.select(_meta.c.value).where(_meta.c.key == "schema_version")
            ).first()
            version = int(row[0]) if row else None
            if version is None:
                conn.execute(_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            if version > SCHEMA_VERSION:
                raise FeedbackError(
                    f"feedback database {self.uri}: schema version {version} is newer than this"
                    f" labelrec ({SCHEMA_VERSION}); upgrade labelrec"
                )
            if version == SCHEMA_VERSION:  # nothing to write: a read-only database opens
                return
            try:
                while version < SCHEMA_VERSION:
                    _UPGRADES[version](conn)
                    version += 1
                conn.execute(
                    _meta.update().where(_meta.c.key == "schema_version").values(value=str(version))
                )
            except sa.exc.OperationalError as err:
                if "readonly" not in str(err).lower().replace("-", ""):
                    raise
                raise FeedbackError(
                    f"feedback database {self.uri}: its schema version {row[0]} is upgraded to"
                    f" {SCHEMA_VERSION} when it is opened, which writes; open it once with write"
                    " access (labelrec feedback stats, or the service)"
                ) from None

    @property
    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(_meta.c.value).where(_meta.c.key == "schema_version")
            ).scalar_one()
        return int(value)

    def add(self, review: Review) -> int:
        """Store ``review`` (one committed transaction); returns its id. A review sent again
        under its ``request_key`` (a client retrying) is stored once: the stored one's id comes
        back, and a different review under a stored key is a :class:`ReviewConflict`. A
        database that cannot take it now (locked past its busy timeout, unreachable) is a
        ``FeedbackError``: nothing was stored, and the same review may be sent again."""
        review.check_verdicts()
        created = _utc(review.created or dt.datetime.now(dt.timezone.utc))
        try:
            if review.request_key is not None:
                # looked up before the insert's transaction, whose first statement stays the
                # write that SQLite's busy wait covers; two tries at once meet at the unique
                # index (the IntegrityError below)
                with self.engine.connect() as conn:
                    if stored := self._keyed(conn, review):
                        return stored
            with self.engine.begin() as conn:
                result = conn.execute(
                    _reviews.insert().values(
                        created=created,
                        product_id=review.product_id,
                        title=review.title,
                        description=review.description,
                        accepted=review.accepted,
                        rejected=review.rejected,
                        added=review.added,
                        unknown=review.unknown,
                        reviewer=review.reviewer,
                        model_version=review.model_version,
                        request_key=review.request_key,
                    )
                )
                review.id = int(result.inserted_primary_key[0])
        except sa.exc.IntegrityError:
            if review.request_key is None:
                raise
            with self.engine.connect() as conn:  # the same key, stored meanwhile by another
                if stored := self._keyed(conn, review):
                    return stored
            raise
        except sa.exc.OperationalError as err:
            reason = str(err.orig).splitlines()[0] if err.orig is not None else "unavailable"
            raise FeedbackError(
                f"the feedback database did not take the review ({reason}); nothing was stored,"
                " send it again"
            ) from None
        review.created = created
        return review.id

    def _keyed(self, conn: sa.Connection, review: Review) -> int | None:
        """The id of the review stored under ``review.request_key`` (None: none is), after
        checking that it is the same review."""
        row = conn.execute(
            sa.select(_reviews).where(_reviews.c.request_key == review.request_key)
        ).mappings().first()  # fmt: skip
        if row is None:
            return None
        stored = _review_of(row)

        def content(r: Review) -> tuple[Any, ...]:
            return (
                r.product_key,
                r.title,
                r.description,
                r.accepted,
                r.rejected,
                r.added,
                r.reviewer,
            )

        if content(stored) != content(review):
            raise ReviewConflict(
                f"Idempotency-Key {review.request_key}: review #{stored.id} was stored under it"
                " with other content; a new review needs a new key"
            )
        review.id, review.created = stored.id, stored.created
        return stored.id

    def reviews(self, batch: int = 1000) -> Iterator[Review]:
        """Every review, oldest first, read in batches."""
        last = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(_reviews).where(_reviews.c.id > last).order_by(_reviews.c.id)
                    .limit(batch)
                ).mappings().all()  # fmt: skip
            if not rows:
                return
            yield from map(_review_of, rows)
            last = int(rows[-1]["id"])

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_reviews)).scalar_one())

    def export(self, path: str | Path, hierarchy_separator: str | None = None) -> int:
        """Write the reviewed products as a JSON Lines catalog; returns the number of products.
        A product's reviews are merged tag by tag: the last verdict on each tag wins (one
        reviewer's added tag stays when another later accepts other tags; with category paths,
        ``hierarchy_separator``, a verdict on a category reaches the paths under it, see
        ``_judge``), and the product's title and description are its last review's. Products
        come in the order of their last reviews. Read in two passes, keeping only each
        product's verdicts between them, so memory does not grow with the texts; reviews stored
        meanwhile wait for the next export. Written to a temporary file, then renamed; the
        temporary file is removed when the export fails."""
        out = Path(path)
        if out.is_dir():  # checked first: os.replace would fail only after the whole export
            raise ValueError(f"{out} is a directory: give the catalog file to write")
        if out.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
            raise ValueError(f"{out}: the export is JSON Lines; name it .jsonl")
        # product key -> (last review, tag_key -> (the tag as last spelt, kept))
        merged: dict[str, tuple[int, dict[str, tuple[str, bool]]]] = {}
        for review in self.reviews():
            _, verdicts = merged.pop(review.product_key, (0, {}))
            _judge(verdicts, review, hierarchy_separator)
            merged[review.product_key] = (int(review.id or 0), verdicts)
        last = {review_id: key for key, (review_id, _) in merged.items()}
        named = {key[3:] for key in merged if key.startswith("id:")}  # ids reviewers gave
        out.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two exports at once each write a whole file, the last one stays
        handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        tmp = Path(name)
        shared_mode(tmp)
        written = 0
        try:
            with open(handle, "w", encoding="utf-8") as fh:
                for review in self.reviews() if last else ():
                    key = last.get(int(review.id or 0))
                    if key is None:
                        continue
                    verdicts = merged[key][1]
                    row = review.to_catalog_row()
                    while review.product_id is None and row["id"] in named:
                        row["id"] += "-"  # a catalog's own id looks like this one: not the same
                    row["tags"] = [t for t, kept in verdicts.values() if kept]
                    row["rejected"] = [t for t, kept in verdicts.values() if not kept]
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    written += 1
                    if written == len(last):
                        break
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(OSError):  # keep the export's own error, not the cleanup's
                tmp.unlink(missing_ok=True)
            raise
        return written

    def stats(self, hierarchy_separator: str | None = None) -> dict[str, Any]:
        """Counts: reviews, products, reviewers, tags accepted / rejected / added / unknown
        (verdicts summed over reviews: a product reviewed twice counts both reviews'),
        products where a later review reversed a tag's verdict (``overruled``; with category
        paths, ``hierarchy_separator``, also one reaching it through a category above or
        below, as the export merges them), reviews per model version, and the most rejected
        tags. ``acceptance_rate`` (accepted
        of accepted + rejected) is None when no tag was accepted or rejected."""
        counts: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        products, reviewers = set(), set()
        # product -> tag_key -> (tag, kept), as the export merges them
        verdicts: dict[str, dict[str, tuple[str, bool]]] = {}
        overruled: set[str] = set()
        for review in self.reviews():
            key = review.product_key
            if _judge(verdicts.setdefault(key, {}), review, hierarchy_separator):
                overruled.add(key)
            counts["reviews"] += 1
            counts["accepted"] += len(review.accepted)
            counts["rejected"] += len(review.rejected)
            counts["added"] += len(review.added)
            counts["unknown"] += len(review.unknown)
            products.add(key)
            if review.reviewer:
                reviewers.add(review.reviewer)
            versions[review.model_version or "-"] += 1
            rejected.update(review.rejected)
        shown = counts["accepted"] + counts["rejected"]
        return {
            "reviews": counts["reviews"],
            "products": len(products),
            "reviewers": len(reviewers),
            "accepted": counts["accepted"],
            "rejected": counts["rejected"],
            "added": counts["added"],
            "unknown": counts["unknown"],
            "acceptance_rate": counts["accepted"] / shown if shown else None,  # JSON null
            # products on which a later review reversed a tag's verdict (the export keeps
            # the last verdict on each tag)
            "overruled": len(overruled),
            "model_versions": dict(versions),
            "most_rejected": rejected.most_common(10),
        }
