"""BentoML service: online and batch tag recommendation (``bentoml serve`` from the repo root).

The model named by ``LABELREC_MODEL_URI`` is loaded once at start-up: a registry URI
(``models:/labelrec@champion``, the default, read from the configured MLflow tracking URI through
:mod:`labelrec.mlflow`) or a local model directory written by ``labelrec train``.

Endpoints: ``POST /suggest`` (one product) and ``POST /suggest_batch`` (a list), whose concurrent
requests share forward passes (:class:`labelrec.serving.MicroBatcher`); ``POST /suggest_items``
(products each with its own options, BentoML's adaptive batching); ``POST /suggest_file`` (an
uploaded catalog, streamed back with tags); ``GET /tags``, ``GET /model``, ``POST /reload``;
BentoML's own ``/healthz``, ``/livez``, ``/readyz`` (ready once a model is loaded) and ``/metrics``
(Prometheus). The API page is at ``/`` (``/docs`` redirects there).

Products (with a product index): ``POST /similar``, ``POST /search``, ``POST /recommend`` and the
review page ``GET /ui``. The index comes from ``LABELREC_INDEX`` (a directory written by
``labelrec product-index``), else is built from ``LABELREC_CATALOG`` with each model version as it
loads, else is the index logged in MLflow with the registered version being served
(``labelrec product-index models:/labelrec@champion ... --log-mlflow``). ``LABELREC_INTERACTIONS``
(``user_id,product_id[,weight,timestamp]``) feeds ``/recommend``.

Model updates (:mod:`labelrec.serving`): :class:`ModelHolder` keeps one immutable :class:`Snapshot`
(recommender, registry info, extras such as a similarity index) and swaps it atomically after the
new model has loaded and passed a probe. A request pins the snapshot it started with, so it finishes
on that model even when a reload lands meanwhile; a new version that fails to load or to score is
refused and the old one keeps serving. ``POST /reload`` checks now; ``LABELREC_POLL_SECONDS`` polls
(default 60 s for registry URIs, off for local directories; 0 turns it off).

Settings: :class:`ServiceSettings`, ``LABELREC_*`` environment variables read at start-up (the
table in docs/serving.md).

Feedback: ``POST /feedback`` (``product``, ``accepted``, ``rejected``, ``added``, ``reviewer``,
``model_version``) stores a reviewer's verdict with the version that made the suggestions (else
the one served) (:mod:`labelrec.feedback`) in the
database ``LABELREC_FEEDBACK_URI`` names (a SQLAlchemy URL; default ``sqlite:///feedback.db`` in
the working directory, opened at the first review).

Descriptions: ``POST /describe`` (a list of products with ``title`` and optional ``tags``, ``id``;
one ``{id, description}`` each, adaptive batching through ``POST /describe_items``) when
``LABELREC_DESCRIBER`` names a describer directory (``labelrec train --config
configs/describe.yaml``) or an MLflow URI of one; 404 without it, 503 when it failed to load.

This is the only module that imports ``bentoml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import functools
import hmac
import inspect
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import bentoml
from bentoml.exceptions import BentoMLException
from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_settings import BaseSettings, SettingsConfigDict

from labelrec.batch import (
    MEDIA_TYPES,
    OUTPUT_SUFFIXES,
    check_catalog,
    gunzip_capped,
    parquet_capped,
    stream_scored,
    upload_suffix,
)
from labelrec.data import MAX_TAG_CHARS, Product, clean_text, has_visible_text, split_tag_string
from labelrec.describe import as_product, named_as
from labelrec.errors import ModelError
from labelrec.feedback import (
    DEFAULT_FEEDBACK_URI,
    FeedbackError,
    FeedbackStore,
    Review,
    ReviewConflict,
)
from labelrec.modeldir import jsonable
from labelrec.opener import downloads_in, open_describer
from labelrec.recommend import (
    UI_PAGE,
    InteractionsUnavailable,
    ProductSearch,
    UnknownProductError,
)
from labelrec.runtime import BACKENDS
from labelrec.serving import (
    DEFAULT_MODEL_URI,
    FileJobs,
    MicroBatcher,
    ModelHolder,
    ServiceError,
    Snapshot,
    data_config_for,
    index_extension,
    load_reviewers,
    public_text,
    public_uri,
)

logger = logging.getLogger("labelrec.service")

# The logger of BentoML's "Exception on /suggest [POST]" records (http_app.log_exception), which
# api_endpoint_wrapper writes, traceback and all, for every request it answers with an error.
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"


def _client_error(exc: BaseException | None) -> str | None:
    """A one-line summary of a rejected request's error (a pydantic ``ValidationError``, a
    BentoML 4xx error such as ``BadInput``), None for anything else. The rejected input is left
    out: it is the client's data."""
    if isinstance(exc, ValidationError):
        where = [
            f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['type']}"
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        shown = "; ".join(where[:5]) + ("; ..." if len(where) > 5 else "")
        return f"{exc.error_count()} validation error(s) for {exc.title} ({shown})"
    if isinstance(exc, BentoMLException) and exc.error_code.value < 500:
        return f"{type(exc).__name__} ({exc.error_code.value})"
    if isinstance(exc, _BodyTooLarge):  # BodyLimit answers 413
        return "request body over its cap (413)"
    return None


class ClientErrorLogFilter(logging.Filter):
    """Demotes BentoML's log record of a rejected request (HTTP 4xx: bad JSON, a failed
    validation) from ERROR with a traceback to a one-line WARNING; server errors keep their
    ERROR and traceback, so an ERROR still means a bug or an outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        summary = _client_error(exc)
        if summary is None or record.levelno < logging.ERROR:
            return True
        message = record.getMessage().replace("Exception on ", "Rejected ", 1)
        record.msg, record.args = f"{message}: {summary}", None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info = record.exc_text = None
        return True


def _install_log_filter() -> None:
    target = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in target.filters):
        target.addFilter(ClientErrorLogFilter())


_install_log_filter()

MAX_LIMIT = 100
MAX_HISTORY = 1000  # product ids in one /recommend history
MAX_POLL_SECONDS = 7 * 86_400  # a week: a chosen bound, far below what the poller's timer takes
ENV_PREFIX = "LABELREC_"


class ServiceSettings(BaseSettings):
    """The service's settings, from the environment: field ``x`` is ``LABELREC_X`` (an empty
    variable counts as unset). Read when the service starts; a bad value stops it, naming the
    variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        protected_namespaces=(),
        str_strip_whitespace=True,
    )

    model_uri: str = Field(DEFAULT_MODEL_URI, description="registry URI or model directory")
    poll_seconds: float | None = Field(
        None,
        ge=0,
        le=MAX_POLL_SECONDS,
        allow_inf_nan=False,
        description="how often to look for a new version; default 60 for a registry "
        "URI, off for a directory (60 with several workers); 0: off; at most a week",
    )
    num_threads: int = Field(
        0,
        ge=0,
        description="inference threads per pass; 0: the cores shared among the workers' passes",
    )
    workers: int = Field(
        1,
        ge=1,
        description="service processes, each with its own model and micro-batcher (BentoML "
        "workers; 2 with 2 cores: more requests/s at high concurrency, a lone request slower)",
    )
    passes: int = Field(
        1,
        ge=1,
        description="model passes side by side (2 with 2 cores: more products/s under load, "
        "a lone request a little slower)",
    )
    backend: str = Field(
        "auto", description="what runs the model: auto (ONNX Runtime where it can), torch, onnx"
    )
    quantize: bool = Field(False, description="dynamic int8 on the CPU; 1/true/on")
    generate: bool = Field(
        True,
        description="0/false/off: leave out a model's tag generator (slow on a CPU); a product"
        " index is then one built with `labelrec product-index --no-generate`, as one built with"
        " the generator is refused (queries would be tagged otherwise than its products)",
    )
    rules: str | None = Field(None, description="rules file replacing the model's own")
    index: str | None = Field(
        None,
        description="product index directory (built with the served model, and with or without"
        " its tag generator as `LABELREC_GENERATE` loads it)",
    )
    catalog: str | None = Field(None, description="catalog to index with each model version")
    interactions: str | None = Field(None, description="user interactions for /recommend")
    half_life_days: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="time decay of interaction weights for /recommend: a weight halves every"
        " that many days (unset: no decay; as `labelrec recommend --half-life-days`)",
    )
    feedback_uri: str | None = Field(
        None, description=f"reviewer feedback database (default {DEFAULT_FEEDBACK_URI})"
    )
    describer: str | None = Field(None, description="describer directory or MLflow URI")
    admin_token: SecretStr | None = Field(
        None, description="bearer token POST /reload requires (force=true needs it set)"
    )
    review_token: SecretStr | None = Field(
        None,
        description="bearer token POST /feedback requires (401 without; the review page has a"
        " field for it): set it where people who are not reviewers reach the service, since"
        " reviews become training data",
    )
    reviewers: str | None = Field(
        None,
        description="YAML file of reviewers' tokens (name: token): POST /feedback then needs one"
        " of them as a bearer token, and stores the review under that reviewer's name",
    )
    max_batch_products: int = Field(256, ge=1, description="products per /suggest_batch request")
    max_batch_size: int = Field(64, ge=1, description="products per shared forward pass")
    max_latency_ms: int = Field(10_000, ge=1, description="adaptive batching wait (_items)")
    max_upload_mb: int = Field(
        512, ge=1, description="/suggest_file upload cap (a 413 past it: `labelrec index` then)"
    )
    max_file_jobs: int = Field(
        2,
        ge=1,
        description="/suggest_file uploads handled at once, each keeping its file and output on "
        "disk until its answer has streamed (a 429 with Retry-After past it)",
    )
    max_body_mb: int = Field(
        32,
        ge=1,
        description="cap of any other request body (a 413, from its Content-Length "
        "or as soon as a chunked body passes it)",
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _known_backend(cls, value: Any) -> Any:
        value = str(value).strip().lower()
        if value not in BACKENDS:
            raise ValueError(f"expected one of {', '.join(BACKENDS)}")
        return value

    @field_validator("admin_token", "review_token")
    @classmethod
    def _header_token(cls, value: SecretStr | None) -> SecretStr | None:
        # sent in an Authorization header, which carries visible ASCII
        text = value.get_secret_value() if value is not None else ""
        if text and not re.fullmatch(r"[!-~]+", text):
            raise ValueError("a token is visible ASCII characters without spaces")
        return value

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{ENV_PREFIX}{field.upper()}"


def load_settings() -> ServiceSettings:
    """``ServiceSettings`` from the environment; a bad value is a ValueError naming it."""
    try:
        return ServiceSettings()
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = ServiceSettings.env_name(str(e["loc"][0])) if e["loc"] else ENV_PREFIX
            message = e["msg"].removeprefix("Value error, ")
            secret = name.endswith("_TOKEN")  # a token's value is not shown
            problems.append(f"{name}{'' if secret else '=' + repr(e['input'])}: {message}")
        text = "; ".join(problems)
        # BentoML, loading a built Bento, reports a failed import as a missing attribute: the
        # reason goes to stderr first
        print(f"labelrec service settings: {text}", file=sys.stderr, flush=True)
        raise ValueError(text) from None


SETTINGS = load_settings()  # what the endpoints' declarations need when the module loads
MAX_BATCH_PRODUCTS = SETTINGS.max_batch_products
MAX_BATCH_SIZE = SETTINGS.max_batch_size
MAX_LATENCY_MS = SETTINGS.max_latency_ms
ADMIN_TOKEN_ENV = ServiceSettings.env_name("admin_token")
REVIEW_TOKEN_ENV = ServiceSettings.env_name("review_token")
REVIEWERS_ENV = ServiceSettings.env_name("reviewers")


def load_reviewer_tokens(path: str | None) -> dict[str, str]:
    """``LABELREC_REVIEWERS``'s tokens (token -> reviewer); a bad file is a ValueError naming
    the setting."""
    if not path:
        return {}
    try:
        return load_reviewers(path)
    except ValueError as err:
        text = f"{REVIEWERS_ENV}: {err}"
        print(f"labelrec service settings: {text}", file=sys.stderr, flush=True)
        raise ValueError(text) from None


REVIEWER_TOKENS = load_reviewer_tokens(SETTINGS.reviewers)
MAX_UPLOAD_BYTES = SETTINGS.max_upload_mb << 20
UPLOAD_SETTING = ServiceSettings.env_name("max_upload_mb")
MAX_BODY_BYTES = SETTINGS.max_body_mb << 20
UPLOAD_PATHS = ("/suggest_file",)  # multipart uploads: their own cap, MAX_UPLOAD_BYTES
FILE_CHUNK = 256  # products scored per step of /suggest_file


class _BodyTooLarge(Exception):
    pass


async def _send_json(
    send: Any, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None
) -> None:
    """Answer an ASGI request from a middleware: ``payload`` as JSON with ``status`` (and the
    ``extra`` headers)."""
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: 413 for a request body over its cap, told by its Content-Length before
    anything is read, or counted while it streams (chunked bodies): reading stops there. Caps:
    ``max_bytes`` (``LABELREC_MAX_BODY_MB``), and per path in ``per_path`` (path -> bytes and the
    setting that sets them): uploads, whose decompressed size is capped again as they expand."""

    def __init__(
        self, app: Any, max_bytes: int, per_path: dict[str, tuple[int, str]] | None = None
    ) -> None:
        self.app, self.max_bytes, self.per_path = app, max_bytes, per_path or {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, setting = self.per_path.get(
            scope.get("path", ""), (self.max_bytes, "LABELREC_MAX_BODY_MB")
        )
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap:
            await self._reject(send, cap, setting)
            return
        received, over, started = 0, False, False

        async def counted() -> dict:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: dict) -> None:
            nonlocal started
            if over:  # the app's own answer to the interrupted read gives way to the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._reject(send, cap, setting)

    @staticmethod
    async def _reject(send: Any, cap: int, setting: str) -> None:
        message = f"request body over the cap of {cap / 2**20:.0f} MB ({setting})"
        await _send_json(send, 413, {"error": message})


# A request a page of another site may send without asking first (a CORS "simple request"):
# these content types, or a body without one.
SIMPLE_CONTENT_TYPES = (b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data")


class NeedsToken:
    """ASGI middleware: a POST to one of ``paths`` needs ``Authorization: Bearer <token>``
    (401 otherwise, compared in constant time with each token): ``token``, or one of
    ``named``'s (token -> name), whose name goes into the request's state as ``reviewer``.
    Without any token every request goes through.

    Reviews become training data: where the service is reachable by people who are not
    reviewers, the token keeps them from posting labels (``LABELREC_REVIEW_TOKEN``,
    ``LABELREC_REVIEWERS``)."""

    def __init__(
        self,
        app: Any,
        paths: tuple[str, ...],
        token: SecretStr | None,
        setting: str,
        named: dict[str, str] | None = None,
    ):
        self.app, self.paths, self.setting = app, paths, setting
        secret = token.get_secret_value() if token is not None else ""
        self.accepted: list[tuple[bytes, str | None]] = [
            (t.encode(), name) for t, name in (named or {}).items()
        ]
        if secret:
            self.accepted.append((secret.encode(), None))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            self.accepted
            and scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path") in self.paths
        ):
            given = bearer_token(dict(scope.get("headers") or []).get(b"authorization"))
            found = False
            for expected, name in self.accepted:  # every one compared: the time tells nothing
                if hmac.compare_digest(given, expected):
                    found = True
                    if name is not None:
                        scope.setdefault("state", {})["reviewer"] = name
            if not found:
                message = f"{scope['path']} needs the header Authorization: Bearer <{self.setting}>"
                await _send_json(send, 401, {"error": message}, CHALLENGE)
                return
        await self.app(scope, receive, send)


class JsonBodies:
    """ASGI middleware: 415 for a POST whose body does not say it is JSON, uploads
    (``exempt`` paths, multipart forms) aside.

    BentoML reads a body as JSON whatever its Content-Type, so a page of any other site, open in
    a reviewer's browser, could post reviews (``/feedback``) or anything else as a plain-text
    "simple request". A body sent as ``application/json`` needs the browser to ask first (a CORS
    preflight), which the service does not grant to other sites. A POST without a body
    (``/reload``) passes."""

    def __init__(self, app: Any, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.exempt = app, exempt

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path") not in self.exempt
        ):
            headers = dict(scope.get("headers") or [])
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            has_body = headers.get(b"content-length", b"0") != b"0" or (
                b"transfer-encoding" in headers
            )
            if media in SIMPLE_CONTENT_TYPES or (not media and has_body):
                shown = media.decode("latin-1") or "none"
                message = f"send the body as JSON: Content-Type application/json, not {shown}"
                await _send_json(send, 415, {"error": message})
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- request/response


class ProductIn(BaseModel):
    """One product to tag. Long texts are truncated by tokens, never rejected."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"title": "LEGO City Police Station 60316", "description": "Building set"}
        },
    )

    title: Annotated[
        str,
        Field(
            min_length=1,
            description="Product title (required, not blank).",
            json_schema_extra={"example": "LEGO City Police Station 60316"},
        ),
    ]
    description: Annotated[
        str,
        Field(
            description="Optional description.",
            json_schema_extra={"example": "Police station building set, 6+"},
        ),
    ] = ""
    id: Annotated[
        StrictStr | StrictInt | None,
        Field(description="Optional id, echoed back.", json_schema_extra={"example": "B08HVZ8Q1C"}),
    ] = None

    @field_validator("description", mode="before")
    @classmethod
    def _no_description(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        value = clean_text(value)
        if not value:
            raise ValueError("title must not be empty")
        return value


Limit = Annotated[
    StrictInt,
    Field(
        ge=1, le=MAX_LIMIT, description="Most tags per product.", json_schema_extra={"example": 5}
    ),
]
ProductLimit = Annotated[
    StrictInt,
    Field(
        ge=1, le=MAX_LIMIT, description="Most products returned.", json_schema_extra={"example": 10}
    ),
]


Threshold = Annotated[
    StrictFloat | None,  # JSON's true and "0.5" are no numbers (a lax float takes both)
    Field(
        ge=0.0,
        le=1.0,
        description="Global score cut-off; null uses the per-tag thresholds tuned in training, "
        "0 returns the top `limit` whatever their scores.",
    ),
]


def _visible_pattern(pattern: str) -> str:
    if not has_visible_text(pattern):
        raise ValueError("a pattern of spaces or invisible characters matches no tag")
    return pattern


Patterns = Annotated[
    # an empty pattern would match no tag (a rules file refuses one too)
    list[
        Annotated[
            StrictStr,
            Field(min_length=1, max_length=MAX_TAG_CHARS),
            AfterValidator(_visible_pattern),
        ]
    ]
    | None,
    Field(
        max_length=MAX_LIMIT,
        description="Tag patterns (`brand:*`, `Toys > *`): only tags matching one (include) or"
        f" none (exclude) of them; at most {MAX_LIMIT}, each at most {MAX_TAG_CHARS} characters.",
        json_schema_extra={"example": []},  # as sent, it narrows nothing
    ),
]


class ReviewedProductIn(ProductIn):
    """The product of a review: a review keeps its id, title and description only, so another
    field (``product_id``, ``desc``) is refused rather than dropped unseen."""

    model_config = ConfigDict(extra="forbid")


class ItemIn(ProductIn):
    """A product with its own options, as batched by ``/suggest_items``."""

    limit: Limit = 10
    threshold: Threshold = None
    # internal (the model generation a request started on), not part of the public schema
    pin: SkipJsonSchema[int | None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_misspelt_option(cls, value: Any) -> Any:
        """A product's own fields are ignored (a catalog's ``price``, ``"limited": true``), but
        one spelt like an option, in any case, and holding what that option takes (``"limt":
        3``, ``"LIMIT": 3``) is a mistake the answer would hide: it is refused."""
        if not isinstance(value, dict):
            return value
        for key, given in value.items():
            if key in cls.model_fields or not isinstance(key, str):
                continue
            close = difflib.get_close_matches(
                key.casefold(), ["limit", "threshold"], n=1, cutoff=0.75
            )
            if not close or isinstance(given, bool):
                continue
            if close[0] == "limit":
                takes = isinstance(given, int)
            else:  # a number, or null for the tuned thresholds
                takes = given is None or isinstance(given, (int, float))
            if takes:
                raise ValueError(f"unknown field {key!r}: did you mean {close[0]!r}?")
        return value


TagFilter = Annotated[
    list[str] | None,
    Field(
        max_length=MAX_LIMIT,
        description="Only products carrying all these tags (tags of the model, as /tags lists"
        " them).",
        json_schema_extra={"example": []},  # one that works with every model: no filter
    ),
]
TagWeight = Annotated[
    StrictFloat | None,
    Field(
        ge=0.0,
        le=1.0,
        description="Blend of tag similarity (1) and embedding similarity (0); null: the "
        "index default.",
    ),
]


class Neighbour(BaseModel):
    """A training product that carries a suggested tag, among the product's nearest."""

    id: str
    title: str
    similarity: float


class TagScore(BaseModel):
    tag: str
    score: float
    known: bool = True  # False: a new tag (a span of the title) outside the vocabulary
    # with "explain": what gave the score (shares, a rule, nearest training products)
    evidence: dict[str, float | str | list[Neighbour]] | None = None

    @model_serializer(mode="wrap")
    def _without_empty_evidence(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if out.get("evidence") is None:
            out.pop("evidence", None)
        return out


class Suggestions(BaseModel):
    """Ranked tags for one product."""

    id: str | None = None
    tags: list[TagScore]
    model_version: str


class BatchSuggestions(BaseModel):
    """Ranked tags for each product, in input order."""

    results: list[Suggestions]
    model_version: str


class TagsOut(BaseModel):
    model_version: str
    count: int = Field(description="Tags that match `q` (all tags without it), over all pages.")
    offset: int = Field(0, description="Position of the first tag of this page among them.")
    tags: list[str] = Field(description="The page of tags, most frequent first.")
    counts: list[int] = Field(description="Training products of each tag of the page.")


class ProductHit(BaseModel):
    """A catalog product of an answer of /similar, /search or /recommend."""

    # /recommend adds `cooccurrence` (history ranking) or `popularity` (popular products)
    model_config = ConfigDict(extra="allow")
    id: str = Field(description="The product's id in the index.")
    title: str
    score: float = Field(description="`tag_weight` x tag_similarity + the rest x text's.")
    tag_similarity: float = Field(description="Cosine of the tag vectors (IDF-weighted).")
    embedding_similarity: float = Field(description="Cosine of the model's text embeddings.")
    shared_tags: list[str] = Field(description="Tags shared with the query, biggest part first.")
    tags: list[str] = Field(description="Tags it carries: gold ones, then predicted ones.")


class ProductsOut(BaseModel):
    """Products for a query (/similar, /search): the query as the model read it, the results."""

    query: dict[str, Any] = Field(
        description="The query product (`id`, `title`) or text, with its `tags` as the model"
        " tagged it (`tag`, `score`; `gold` for an indexed product's own)."
    )
    results: list[ProductHit]
    model_version: str


class RecommendOut(BaseModel):
    """Products for a user or a history (/recommend)."""

    user: str | None = None
    strategy: str = Field(description="history+cooccurrence, history or popular.")
    history: list[str] = Field(description="The indexed products of the history, as used.")
    profile_tags: list[str] = Field(description="The history's strongest tags.")
    cooccurrence_weight: float = Field(description="Share of co-occurrence in the ranking.")
    results: list[ProductHit]
    model_version: str


TagList = Annotated[
    list[Annotated[StrictStr, Field(max_length=MAX_TAG_CHARS)]],
    Field(
        max_length=MAX_LIMIT,
        description=f"Tags (at most {MAX_LIMIT}, each at most {MAX_TAG_CHARS} characters).",
        json_schema_extra={"example": []},
    ),
]


class FeedbackOut(BaseModel):
    id: int  # the stored review
    model_version: str | None  # the version that made the suggestions (else the one served)
    unknown: list[str]  # tags the model being served does not know (stored, flagged)
    reviewer: str | None = None  # as stored: with LABELREC_REVIEWERS, the token's reviewer


class DescribeIn(BaseModel):
    """One product to describe: its title and the tags it has (facets such as color:Blue)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"id": "P1", "title": "Hornby railway train set", "tags": ["color:Red"]}
        },
    )

    title: Annotated[str, Field(min_length=1, description="Product title (required).")]
    tags: Annotated[
        list[Annotated[StrictStr, Field(max_length=MAX_TAG_CHARS)]],
        Field(
            description="Its tags: categories and key:value attributes (a list, or one string"
            f" with '|' between tags; each at most {MAX_TAG_CHARS} characters)."
        ),
    ] = []
    id: Annotated[
        StrictStr | StrictInt | None,
        Field(description="Optional id, echoed back.", json_schema_extra={"example": "P1"}),
    ] = None

    @field_validator("tags", mode="before")
    @classmethod
    def _no_tags(cls, value: Any) -> Any:
        if isinstance(value, str):  # "Toys > Trains|color:Red", as catalogs write tags
            return split_tag_string(value)
        return [] if value is None else value

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        value = clean_text(value)
        if not value:
            raise ValueError("title must not be empty")
        return value

    @model_validator(mode="after")
    def _read_as_the_describer_reads(self) -> DescribeIn:
        """The describer's own checks (tags read as catalogs read them, then measured; text a
        tokenizer takes), made here: a 400 naming the field, not a batch that fails."""
        as_product({"title": self.title, "tags": self.tags}, where="the product")
        return self


MAX_DESCRIBE_BEAMS = 8  # a request's decoding settings: beams and length multiply its cost
MAX_DESCRIBE_TOKENS = 512


class DecodingIn(BaseModel):
    """Decoding settings for one /describe request (absent or null: the describer's own)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"num_beams": 2, "max_new_tokens": 64}}
    )

    num_beams: Annotated[StrictInt | None, Field(ge=1, le=MAX_DESCRIBE_BEAMS)] = None
    max_new_tokens: Annotated[StrictInt | None, Field(ge=1, le=MAX_DESCRIBE_TOKENS)] = None
    min_new_tokens: Annotated[StrictInt | None, Field(ge=0, le=MAX_DESCRIBE_TOKENS)] = None
    length_penalty: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    repetition_penalty: Annotated[float | None, Field(ge=1, allow_inf_nan=False)] = None
    no_repeat_ngram_size: Annotated[StrictInt | None, Field(ge=0)] = None


class DescriptionOut(BaseModel):
    """The written description of one product."""

    id: str | None = None
    description: str


class ReloadOut(BaseModel):
    status: str  # "reloaded", "unchanged" or "refused"
    model_version: str | None
    previous_version: str | None = None
    error: str | None = None


@functools.cache
def _ui_page() -> str:
    return UI_PAGE.read_text(encoding="utf-8")


def index_engine(snap: Snapshot) -> Any:
    """The product search of ``snap``'s index; a 503 saying why there is none, or how to add one
    (the product endpoints and the review queue need it)."""
    engine = snap.extras.get("index")
    if engine is None and "index" in snap.extra_errors:
        raise ServiceError(503, f"no product index: {snap.extra_errors['index']}")
    if engine is None:
        raise ServiceError(
            503,
            "no product index: start the service with LABELREC_INDEX (a directory "
            "written by `labelrec product-index`) or LABELREC_CATALOG (a catalog to "
            "index), or log an index with the registered model (product-index "
            "--log-mlflow)",
        )
    return engine


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


CHALLENGE = {"www-authenticate": 'Bearer realm="labelrec"'}  # with each 401 (RFC 6750)


def bearer_token(authorization: bytes | str | None) -> bytes:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, as
    RFC 7235 has it); empty for any other header."""
    raw = authorization.encode() if isinstance(authorization, str) else (authorization or b"")
    scheme, _, token = raw.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


def rank_items(
    snap: Snapshot,
    scores: Any,
    new_tags: list[dict[str, float]],
    items: list[Any],
    limit: int,
    threshold: float | None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
) -> list[Suggestions]:
    """Suggestions for scored ``items`` (each with its ``id``), ranked with ``limit``,
    ``threshold`` and the ``include`` / ``exclude`` patterns: the per-request options, applied
    after the shared forward pass (with the model's rules)."""
    ranked = snap.recommender.rank(scores, limit, threshold, new_tags, include, exclude)
    return [
        Suggestions(
            id=None if item.id is None else str(item.id),
            tags=[TagScore(**s.to_dict()) for s in tags],
            model_version=snap.version,
        )
        for tags, item in zip(ranked, items, strict=True)
    ]


def score_items(
    snap: Snapshot, items: list[ItemIn], busy: contextlib.AbstractContextManager[Any] | None = None
) -> list[Suggestions]:
    """Rank tags for each item with its own limit and threshold on one model snapshot
    (holding ``busy`` while the model runs)."""
    texts = [{"title": i.title, "description": i.description} for i in items]
    with busy or contextlib.nullcontext():
        scores, new_tags = snap.recommender.score(texts)
    out: list[Suggestions] = []
    for i, item in enumerate(items):
        row, new = scores[i : i + 1], new_tags[i : i + 1]
        out += rank_items(snap, row, new, [item], item.limit, item.threshold)
    return out


# --------------------------------------------------------------------------- file scoring


def file_scorer(
    snap: Snapshot,
    limit: int,
    threshold: float | None,
    busy: contextlib.AbstractContextManager[Any],
) -> Callable[[list[Product]], list[list[dict[str, Any]]]]:
    """What ``/suggest_file`` scores a chunk with: the pinned model, the request's options."""
    rec = snap.recommender

    def scorer(products: list[Product]) -> list[list[dict[str, Any]]]:
        with busy:
            scores, new_tags = rec.score(products)
        ranked = rec.rank(scores, limit, threshold, new_tags)
        return [[s.to_dict() for s in row] for row in ranked]

    return scorer


# --------------------------------------------------------------------------- descriptions

NO_DESCRIBER = (
    "no describer: start the service with LABELREC_DESCRIBER set to a describer directory"
    " (labelrec train --config configs/describe.yaml) or its MLflow URI"
)


def load_describer(uri: str) -> Any:
    """The ``Describer`` of a directory or of an MLflow URI (``models:/name@alias``)."""
    return open_describer(uri)


def with_request_decoding(describer: Any, decoding: DecodingIn | None) -> Any:
    """``describer`` writing with a request's decoding settings (the same one without any);
    a ``ServiceError`` (400) naming the setting the describer cannot take."""
    settings = decoding.model_dump(exclude_none=True) if decoding is not None else {}
    if not settings:
        return describer
    try:
        return describer.with_decoding(**settings)
    # a ConfigError naming describe.<setting>, or a ModelError: a length past the backbone's
    except (ValueError, ModelError) as err:
        raise ServiceError(400, named_as(err, lambda name: f"decoding.{name}")) from None


def describe_items(
    describer: Any,
    items: list[DescribeIn],
    busy: contextlib.AbstractContextManager[Any] | None = None,
) -> list[DescriptionOut]:
    """Descriptions of ``items`` (holding ``busy`` while the decoder runs)."""
    products = [{"title": i.title, "tags": i.tags} for i in items]
    with busy or contextlib.nullcontext():
        texts = describer.describe(products)
    return [
        DescriptionOut(id=None if i.id is None else str(i.id), description=t)
        for i, t in zip(items, texts, strict=True)
    ]


# --------------------------------------------------------------------------- the service

PAGES = ("/ui", "/docs")  # what a browser opens: links to pages carry their own query fields


async def _known_query_fields(request: Request) -> None:
    """A query field that a route of ``http_app`` does not take is a 400 (``/queue?positon=3``
    would otherwise answer for position 0), as an unknown body field is. Pages take any
    (``?utm_source=...``), and every route takes ``_``, the cache buster of browser clients.
    The BentoML APIs (``/suggest``...) take their settings in the body alone."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or getattr(route, "path", None) in PAGES:
        return
    known = {param.alias for param in dependant.query_params} | {"_"}
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
    if unknown:
        raise RequestValidationError(
            [
                {"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown query field"}
                for name in unknown
            ]
        )


http_app = FastAPI(
    dependencies=[Depends(_known_query_fields)],
    title="labelrec",
    docs_url=None,  # BentoML's API page at / documents the FastAPI routes too
    redoc_url=None,
    openapi_url=None,
)


def read_route(path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``http_app.get(path, ...)`` that answers HEAD too (uptime checks, link checkers: the
    headers, no body); the HEAD route stays out of the API spec, where it would repeat the GET
    route's operation id."""

    def register(endpoint: Any) -> Any:
        http_app.head(path, include_in_schema=False, **kwargs)(endpoint)
        return http_app.get(path, **kwargs)(endpoint)

    return register


@http_app.exception_handler(RequestValidationError)
async def _bad_request(_: Any, exc: RequestValidationError) -> JSONResponse:
    """400 with the same shape as BentoML's validation errors: {"error", "detail"}."""
    detail = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
    return JSONResponse(
        {"error": f"{len(detail)} validation error(s)", "detail": jsonable(detail)},
        status_code=400,
    )


@http_app.exception_handler(Exception)
async def _unexpected(_: Any, exc: Exception) -> JSONResponse:
    """A bug in a plain route answers 500 in the shape of every other error (Starlette still
    logs its traceback)."""
    return _error(500, "An unexpected error has occurred, please check the server log.")


def bento_store_warnings(settings: Any, cwd: Path, environ: Any) -> list[str]:
    """What goes into a built bento's own folder when its databases are left to their defaults.

    ``bentoml serve <tag>`` (and a container) runs in the bento's ``src`` folder, so the default
    ``feedback.db`` and ``mlruns.db`` (relative to the working directory) would be there: inside
    BentoML's store, lost with ``bentoml delete`` or a new build, and empty at the first start."""
    if not (cwd.parent / "bento.yaml").is_file():
        return []
    out = []
    if not settings.feedback_uri:
        out.append(
            f"serving a built bento from {cwd}: {settings.env_name('feedback_uri')} is not set,"
            f" so reviews go to {DEFAULT_FEEDBACK_URI} inside the bento, lost with it; set it"
            " to a database outside (e.g. sqlite:////data/feedback.db)"
        )
    if settings.model_uri.startswith("models:/") and not environ.get("MLFLOW_TRACKING_URI"):
        out.append(
            f"serving a built bento from {cwd}: MLFLOW_TRACKING_URI is not set, so"
            f" {settings.model_uri} is looked up in mlruns.db inside the bento; set it to your"
            " tracking server or database"
        )
    for name in (
        "model_uri",
        "index",
        "catalog",
        "interactions",
        "rules",
        "describer",
        "reviewers",
    ):
        value = getattr(settings, name)
        if value and ":/" not in value and not Path(value).expanduser().is_absolute():
            where = cwd / value
            missing = "" if where.exists() else ", where nothing is"
            out.append(
                f"serving a built bento from {cwd}: {settings.env_name(name)}={value} is read"
                f" from there ({where}{missing}); give an absolute path"
            )
    return out


def strict_api(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``bentoml.api`` whose request body refuses fields the endpoint does not take: a misspelt
    ``limt`` is a 400 that names it, where BentoML's input model derived from the signature
    ignores it and answers with the defaults."""

    def wrap(endpoint: Callable[..., Any]) -> Any:
        # `ctx` (bentoml.Context) is BentoML's to pass, not a field of the body
        spec = bentoml.IODescriptor.from_input(endpoint, skip_self=True, skip_names=("ctx",))
        strict = type(
            spec.__name__,
            (spec,),
            {"model_config": ConfigDict(extra="forbid"), "__module__": endpoint.__module__},
        )
        return bentoml.api(input_spec=strict, **options)(endpoint)

    return wrap


def bentoml_error(err: ServiceError) -> Exception:
    """``err`` as the BentoML exception that answers its status, for batchable endpoints,
    which BentoML calls in batches and answers itself."""
    from bentoml.exceptions import BadInput, InternalServerError, NotFound, ServiceUnavailable

    kinds = {400: BadInput, 404: NotFound, 503: ServiceUnavailable}
    return kinds.get(err.status, InternalServerError)(err.message)


async def _prepended(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """``first``, then the pieces of ``rest``, which is closed with this stream (a client gone
    mid-stream)."""
    try:
        if first:
            yield first
        async for piece in rest:
            yield piece
    finally:
        await rest.aclose()


def answers_errors(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A ``ServiceError`` raised in an endpoint (BentoML's or a plain route, sync or async)
    answers its status with ``{"error": message}``. BentoML's own exception classes answer 4xx
    as a list and hide 5xx messages, which here say what to fix (e.g. no model loaded yet)."""
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def answer(*args: Any, **kwargs: Any) -> Any:
            try:
                return await endpoint(*args, **kwargs)
            except ServiceError as err:
                if kwargs.get("ctx") is not None:  # BentoML answers with the context's status
                    kwargs["ctx"].response.status_code = err.status
                return _error(err.status, err.message, err.headers)

        return answer

    @functools.wraps(endpoint)
    def answer_sync(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        except ServiceError as err:
            return _error(err.status, err.message, err.headers)

    return answer_sync


# traffic.timeout (time to the first byte of an answer; BentoML's default 60 s): BentoML 1.4.40's
# TimeoutMiddleware never cancels its per-request timer, which keeps each request's tracing
# context alive that long, so memory grows for `timeout` seconds, then stays flat.
# runner_connection: BentoML >= 1.4.31 renews the session behind self-calls (/describe ->
# /describe_items) every 100 requests and 300 s by closing it under the requests still in flight,
# which fail with 500 "Server disconnected" (bentoml/BentoML#5540); never renew it.
@bentoml.service(
    name="labelrec",
    workers=SETTINGS.workers,
    traffic={"timeout": 60},
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
@bentoml.asgi_app(http_app, path="/")
class LabelRec:
    """Product tag recommendation (labelrec)."""

    def __init__(self) -> None:
        from labelrec.rules import RulesError

        self.settings = s = load_settings()
        for warning in bento_store_warnings(s, Path.cwd(), os.environ):
            logger.warning(warning)
        try:
            self.holder = ModelHolder.configured(
                s.model_uri,
                s.poll_seconds,
                s.quantize,
                s.num_threads or None,
                s.backend,
                s.generate,
                s.rules,
                s.passes,
                s.workers,
            )
        except RulesError as err:
            raise RuntimeError(f"{s.env_name('rules')}: {err}") from None
        self.holder.extensions["index"] = index_extension(
            s.index, s.catalog, s.interactions, s.half_life_days
        )
        self.holder.start()
        # /suggest and /suggest_batch: concurrent requests share forward passes
        self.batcher = MicroBatcher(self.holder.busy, MAX_BATCH_SIZE, s.passes)
        self.describer: Any = None
        self.describer_error: str | None = None
        # Reviewer feedback: opened now when LABELREC_FEEDBACK_URI names a database (one that
        # cannot be opened stops the start-up), else feedback.db here at the first review.
        self._feedback: FeedbackStore | None = None
        self._feedback_opening = asyncio.Lock()  # the first reviews at once open it once
        if s.feedback_uri:
            try:
                self._feedback = FeedbackStore(s.feedback_uri)
            except FeedbackError as err:
                raise RuntimeError(f"{s.env_name('feedback_uri')}: {err}") from None
        self.describer_uri = s.describer
        # a describer in a remote MLflow store is downloaded into a folder removed at shutdown
        self._describer_downloads: Path | None = None
        if self.describer_uri:  # a describer that cannot load leaves tagging up (503 there)
            self._describer_downloads = Path(tempfile.mkdtemp(prefix="labelrec-describer-"))
            try:
                with downloads_in(self._describer_downloads):
                    self.describer = load_describer(self.describer_uri)
            except Exception as err:
                self.describer_error = f"{type(err).__name__}: {err}"
                logger.error(
                    "describer %s not loaded: %s", self.describer_uri, self.describer_error
                )
            if self.describer is None or not any(self._describer_downloads.iterdir()):
                shutil.rmtree(self._describer_downloads, ignore_errors=True)  # nothing kept
        self._describing = 0  # /describe requests being answered
        self.file_jobs = FileJobs(s.max_file_jobs, s.env_name("max_file_jobs"))

    def __is_ready__(self) -> bool:
        return self.holder.ready

    @bentoml.on_shutdown
    def _shut_down(self) -> None:
        """Stop polling, remove the downloaded models, and close the feedback database (on
        SQLite its file then holds every review, without its write-ahead log beside it)."""
        self.holder.stop()
        if self._describer_downloads is not None:
            shutil.rmtree(self._describer_downloads, ignore_errors=True)
        if self._feedback is not None:
            self._feedback.close()

    def _pin(self) -> Snapshot:
        return self.holder.get(None)

    @strict_api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def suggest_items(
        self,
        items: Annotated[
            list[ItemIn],
            Field(max_length=MAX_BATCH_PRODUCTS, description=f"Up to {MAX_BATCH_PRODUCTS} items."),
        ],
    ) -> list[Suggestions]:
        """Products each with its own `limit` and `threshold` (at most 256 a request, as
        /suggest_batch). Concurrent calls are merged into one model batch."""
        out: list[Suggestions | None] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        snaps: dict[int, Snapshot] = {}
        for i, item in enumerate(items):
            try:
                snap = self.holder.get(item.pin)
            except ServiceError as err:  # no model loaded yet: a 503, as /suggest answers
                raise bentoml_error(err) from None
            snaps[snap.generation] = snap
            groups.setdefault(snap.generation, []).append(i)
        for generation, idx in groups.items():
            results = score_items(snaps[generation], [items[i] for i in idx], self.holder.busy)
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return out  # type: ignore[return-value]

    async def _suggest(
        self,
        products: list[ProductIn],
        limit: int,
        threshold: float | None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> tuple[Snapshot, list[Suggestions]]:
        snap = self._pin()  # held until the answer is back: a reload meanwhile does not touch it
        if not products:
            return snap, []
        texts = [{"title": p.title, "description": p.description} for p in products]
        scores, new_tags = await self.batcher.score(snap, texts)
        # off the event loop: a batch with many patterns takes a while to rank
        ranked = await asyncio.to_thread(
            rank_items, snap, scores, new_tags, products, limit, threshold, include, exclude
        )
        return snap, ranked

    @strict_api()
    @answers_errors
    async def suggest(
        self,
        product: ProductIn,
        limit: Limit = 10,
        threshold: Threshold = None,
        include: Patterns = None,
        exclude: Patterns = None,
        explain: StrictBool = False,
    ) -> Suggestions:
        """Ranked tags with scores for one product (`include` / `exclude`: tag patterns such as
        `brand:*` that narrow the service's rules for this request; `explain`: each tag with the
        `evidence` of what gave its score)."""
        if explain:
            return await self._explain(product, limit, threshold, include, exclude)
        _, results = await self._suggest([product], limit, threshold, include, exclude)
        return results[0]

    async def _explain(
        self,
        product: ProductIn,
        limit: int,
        threshold: float | None,
        include: list[str] | None,
        exclude: list[str] | None,
    ) -> Suggestions:
        snap = self._pin()
        text = {"title": product.title, "description": product.description}

        def run() -> list[dict[str, Any]]:
            with self.holder.busy:
                rec = snap.recommender
                return rec.explain([text], limit, threshold, include, exclude)[0]

        tags = await asyncio.to_thread(run)
        return Suggestions(
            id=None if product.id is None else str(product.id),
            tags=[TagScore(**t) for t in tags],
            model_version=snap.version,
        )

    @strict_api()
    @answers_errors
    async def suggest_batch(
        self,
        products: Annotated[
            list[ProductIn],
            Field(
                max_length=MAX_BATCH_PRODUCTS,
                description=f"Up to {MAX_BATCH_PRODUCTS} products.",
                json_schema_extra={
                    "example": [{"title": "Hornby railway train set"}, {"title": "Plush bear"}]
                },
            ),
        ],
        limit: Limit = 10,
        threshold: Threshold = None,
        include: Patterns = None,
        exclude: Patterns = None,
    ) -> BatchSuggestions:
        """Ranked tags for each of a list of products, in input order."""
        snap, results = await self._suggest(products, limit, threshold, include, exclude)
        return BatchSuggestions(results=results, model_version=snap.version)

    # -- descriptions (need LABELREC_DESCRIBER)

    def _describer(self) -> Any:
        if self.describer is not None:
            return self.describer
        if self.describer_uri:
            raise ServiceError(
                503,
                public_text(
                    f"describer {self.describer_uri} failed to load: {self.describer_error}"
                ),
            )
        raise ServiceError(404, NO_DESCRIBER)

    @strict_api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def describe_items(
        self,
        items: Annotated[
            list[DescribeIn],
            Field(max_length=MAX_BATCH_PRODUCTS, description=f"Up to {MAX_BATCH_PRODUCTS} items."),
        ],
    ) -> list[DescriptionOut]:
        """Adaptive-batching core of /describe: concurrent calls share one generation batch
        (as /describe, at most its number of products a request)."""
        try:
            describer = self._describer()
        except ServiceError as err:
            raise bentoml_error(err) from None
        return describe_items(describer, items, self.holder.busy)

    @strict_api()
    @answers_errors
    async def describe(
        self,
        products: Annotated[
            list[DescribeIn],
            Field(
                max_length=MAX_BATCH_PRODUCTS,
                description=f"Up to {MAX_BATCH_PRODUCTS} products.",
                json_schema_extra={
                    "example": [
                        {"id": "P1", "title": "Hornby railway train set", "tags": ["Trains"]},
                        {"title": "Plush bear", "tags": ["color:Brown"]},
                    ]
                },
            ),
        ],
        decoding: Annotated[
            DecodingIn | None,
            Field(
                description="Decoding settings for this request (num_beams up to"
                f" {MAX_DESCRIBE_BEAMS}, max_new_tokens up to {MAX_DESCRIBE_TOKENS}, ...);"
                " absent or null: the describer's own."
            ),
        ] = None,
    ) -> list[DescriptionOut]:
        """A written description for each product (title and tags), in input order."""
        describer = self._describer()
        other = with_request_decoding(describer, decoding)  # 400 before any work
        if not products:
            return []
        self._describing += 1
        try:
            if other is not describer:  # its own settings: a batch of its own
                return await asyncio.to_thread(describe_items, other, products, self.holder.busy)
            if self._describing == 1:  # nothing to batch with: skip the batcher's extra hop
                return await asyncio.to_thread(
                    describe_items, describer, products, self.holder.busy
                )
            return list(await self.to_async.describe_items(products))
        finally:
            self._describing -= 1

    # -- reviewer feedback

    @strict_api()
    @answers_errors
    async def feedback(
        self,
        product: ReviewedProductIn,
        accepted: TagList = [],  # noqa: B006 (pydantic copies defaults)
        rejected: TagList = [],  # noqa: B006
        added: Annotated[TagList, Field(json_schema_extra={"example": ["gift"]})] = [],  # noqa: B006
        reviewer: Annotated[StrictStr | None, Field(max_length=256)] = None,
        model_version: Annotated[
            StrictStr | None,
            Field(
                max_length=256,
                description="The `model_version` of the `/suggest` answer reviewed (default:"
                " the version being served now).",
            ),
        ] = None,
        ctx: bentoml.Context = None,  # type: ignore[assignment]  # BentoML passes it
    ) -> FeedbackOut:
        """Record a reviewer's verdict on the tags suggested for a product: `accepted` and
        `rejected` suggestions, tags `added` by hand. Stored with the model version that made
        the suggestions (`model_version`, as `/suggest` answered it; else the version being
        served); tags the model does not know are kept and listed in `unknown`. With
        LABELREC_REVIEWERS the reviewer is the one whose token came with the request. A review
        sent again with the same `Idempotency-Key` header (a client retrying) is stored once
        and answered with the stored review's id; another review under that key is a 422."""
        state = ctx.request.scope.get("state") if ctx is not None else None
        request_key = ctx.request.headers.get("idempotency-key") if ctx is not None else None
        if state and state.get("reviewer"):
            reviewer = state["reviewer"]  # the token's reviewer, whatever the body says
        snap = self.holder.current
        try:
            review = Review(
                title=product.title,
                description=product.description,
                product_id=product.id,
                accepted=accepted,
                rejected=rejected,
                added=added,
                reviewer=reviewer,
                model_version=(model_version or "").strip()
                or (snap.version if snap is not None else None),
                request_key=request_key,
            )
            review.check_verdicts()
            if snap is not None:
                data = (snap.recommender.info.get("config") or {}).get("data") or {}
                review.match_vocabulary(snap.recommender.vocab, data.get("hierarchy_separator"))
                review.check_hierarchy(data.get("hierarchy_separator"))
        except FeedbackError as err:
            raise ServiceError(400, str(err)) from None
        try:
            async with self._feedback_opening:
                if self._feedback is None:
                    self._feedback = await asyncio.to_thread(FeedbackStore, DEFAULT_FEEDBACK_URI)
            review_id = await asyncio.to_thread(self._feedback.add, review)
        except ReviewConflict as err:
            raise ServiceError(422, str(err)) from None
        except FeedbackError as err:  # the database, not the review: the client may retry
            raise ServiceError(503, str(err)) from None
        return FeedbackOut(
            id=review_id,
            model_version=review.model_version,
            unknown=review.unknown,
            reviewer=review.reviewer,
        )

    # -- products: similar, search, recommend (need a product index)

    async def _products(
        self, call: Callable[[ProductSearch], dict[str, Any]], out: type[BaseModel]
    ) -> Any:
        """Run ``call`` on the pinned snapshot's product search, its answer as ``out`` (which
        BentoML writes as JSON, or pickles for a service that depends on this one); errors
        become 4xx/503."""
        try:
            snap = self._pin()
            engine = index_engine(snap)

            def run() -> dict[str, Any]:
                with self.holder.busy:
                    return call(engine)

            result = await asyncio.to_thread(run)
        except UnknownProductError as err:
            raise ServiceError(404, str(err)) from None
        except InteractionsUnavailable as err:
            raise ServiceError(503, str(err)) from None
        except ValueError as err:
            raise ServiceError(400, str(err)) from None
        result["model_version"] = snap.version
        return out.model_validate(jsonable(result))

    @strict_api()
    @answers_errors
    async def similar(
        self,
        id: Annotated[  # noqa: A002 - the JSON field
            StrictStr | StrictInt | None,
            Field(
                description="An indexed product's id (or give `product`); a number is read as"
                " its text, as catalog ids are.",
                examples=[None],  # the example asks with `product`, which every index takes
            ),
        ] = None,
        product: Annotated[
            ProductIn | None, Field(description="A new product, tagged by the model.")
        ] = None,
        limit: ProductLimit = 10,
        tags: TagFilter = None,
        tag_weight: TagWeight = None,
    ) -> ProductsOut:
        """Products similar to an indexed product or to a new one, each with the tags it
        shares with the query."""
        new = None if product is None else product.model_dump(include={"title", "description"})
        key = None if id is None else str(id)
        return await self._products(
            lambda e: e.similar(key, new, limit=limit, tags=tags, tag_weight=tag_weight),
            ProductsOut,
        )

    @strict_api()
    @answers_errors
    async def search(
        self,
        query: Annotated[
            str, Field(description="Free text, tagged by the model.", examples=["wooden train"])
        ],
        limit: ProductLimit = 10,
        tags: TagFilter = None,
        tag_weight: TagWeight = None,
    ) -> ProductsOut:
        """Products for a free-text query, ranked by tag and embedding similarity; `tags` are
        exact filters."""
        return await self._products(
            lambda e: e.search(query, limit=limit, tags=tags, tag_weight=tag_weight), ProductsOut
        )

    @strict_api()
    @answers_errors
    async def recommend(
        self,
        user: Annotated[
            str | None,
            Field(min_length=1, description="User id in LABELREC_INTERACTIONS.", examples=["U123"]),
        ] = None,
        history: Annotated[
            list[StrictStr | StrictInt] | None,
            Field(
                max_length=MAX_HISTORY,
                description="Product ids the user interacted with (added to their history);"
                f" up to {MAX_HISTORY}; a number is read as its text, as catalog ids are.",
            ),
        ] = None,
        limit: ProductLimit = 10,
        tags: TagFilter = None,
        tag_weight: TagWeight = None,
    ) -> RecommendOut:
        """Products for a user from the tags of what they interacted with, blended with
        co-occurrence; users without history get popular products."""
        if user is None and not history:
            raise ServiceError(400, "give a `user` or a `history` of product ids")
        history = None if history is None else [str(h) for h in history]
        return await self._products(
            lambda e: e.recommend(
                user, history=history, limit=limit, tags=tags, tag_weight=tag_weight
            ),
            RecommendOut,
        )

    @read_route("/ui", response_class=HTMLResponse, tags=["labelrec"])
    def ui(self) -> HTMLResponse:
        """The tag review page: suggested tags, similar products, search."""
        # not inside another site's frame, where its buttons could be clicked unseen
        headers = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
        return HTMLResponse(_ui_page(), headers=headers)

    # -- plain HTTP routes (FastAPI): GET endpoints, uploads, admin

    @read_route("/tags", response_model=TagsOut, tags=["labelrec"])
    @answers_errors
    def tags(
        self, q: str | None = None, offset: int = 0, limit: int | None = None
    ) -> TagsOut | JSONResponse:
        """The tag vocabulary of the model being served, with training counts, most frequent
        first: all of it, or the tags containing `q` in any case or width (`brand:lego` finds
        `brand:Lego`), a page of `limit` from `offset` (`count`: how many match in all)."""
        if offset < 0:
            raise ServiceError(400, f"offset must be >= 0, got {offset}")
        if limit is not None and limit < 1:
            raise ServiceError(400, f"limit must be >= 1, got {limit}")
        snap = self._pin()
        vocab = snap.recommender.vocab
        q = (q or "").strip()
        columns = vocab.matching(q) if q else range(len(vocab))
        page = columns[offset : None if limit is None else offset + limit]
        return TagsOut(
            model_version=snap.version,
            count=len(columns),
            offset=offset,
            tags=[vocab.tags[j] for j in page],
            counts=[int(vocab.counts[j]) for j in page],
        )

    @read_route("/queue", tags=["labelrec"], response_model=None)
    @answers_errors
    def queue(self, position: int = 0) -> dict[str, Any] | JSONResponse:
        """The catalog product at `position` of the product index, for review in order:
        `{"position", "total", "product": {"id", "title", "description"}, "model_version"}`
        (404 past the end, 503 without a product index)."""
        snap = self._pin()
        index = index_engine(snap).index
        if not 0 <= position < len(index):
            raise ServiceError(404, f"position {position}: the queue has {len(index)} products")
        product = {
            "id": index.ids[position],
            "title": index.titles[position],
            "description": index.descriptions[position],
        }
        return {
            "position": position,
            "total": len(index),
            "product": product,
            "model_version": snap.version,
        }

    @read_route("/model", tags=["labelrec"])
    def model(self) -> dict[str, Any]:
        """Model name, version, aliases, run, metrics, reload status, and this worker's shared
        passes so far (``passes`` run, ``products`` scored in them, how many run
        ``side_by_side``; ``worker`` of ``workers`` answered)."""
        out = self.holder.describe()
        out["shared_passes"] = {
            "passes": self.batcher.passes,
            "products": self.batcher.products,
            "side_by_side": self.batcher.max_passes,
            "worker": bentoml.server_context.worker_index,
            "workers": self.holder.workers,
        }
        if self.describer_uri:
            out["describer"] = {
                "uri": public_uri(self.describer_uri),
                "error": public_text(self.describer_error),
            }
            if self.describer is not None:
                meta = self.describer.meta
                out["describer"]["backbone"] = public_uri(meta.get("backbone"))
                out["describer"]["valid_metrics"] = jsonable(meta.get("valid_metrics") or {})
        return out

    @http_app.post("/reload", response_model=ReloadOut, tags=["labelrec"])
    @answers_errors
    async def reload(
        self, force: bool = False, authorization: Annotated[str | None, Header()] = None
    ) -> ReloadOut | JSONResponse:
        """Load the version the model URI names now (registry alias or directory) if it changed,
        and build the product search again if its index, catalog or interactions file changed.

        With `LABELREC_ADMIN_TOKEN` set, the header `Authorization: Bearer <token>` is required
        (401 otherwise); `force=true` (load even an unchanged version) needs that token. 409 when
        the new version fails to load or to score (the old one keeps serving), 429 while another
        reload runs."""
        secret = self.settings.admin_token
        token = secret.get_secret_value() if secret is not None else ""
        if token and not hmac.compare_digest(bearer_token(authorization), token.encode()):
            raise ServiceError(
                401,
                f"POST /reload needs the header Authorization: Bearer <{ADMIN_TOKEN_ENV}>",
                CHALLENGE,
            )
        if force and not token:
            raise ServiceError(
                403,
                f"force=true needs {ADMIN_TOKEN_ENV} set on the service and sent as a bearer token",
            )
        done = await asyncio.to_thread(self.holder.reload, force, False)
        result = ReloadOut(**dataclasses.asdict(done))
        if result.status in ("refused", "busy"):
            return JSONResponse(
                result.model_dump(), status_code=409 if result.status == "refused" else 429
            )
        return result

    @http_app.get("/docs", include_in_schema=False, response_model=None)
    def docs(self) -> RedirectResponse:
        return RedirectResponse("/")

    @http_app.post("/suggest_file", response_model=None, tags=["labelrec"])
    @answers_errors
    async def suggest_file(
        self,
        file: Annotated[UploadFile, File(description="A .jsonl, .csv, .tsv or .parquet catalog")],
        limit: Annotated[int, Form(ge=1, le=MAX_LIMIT)] = 10,
        threshold: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
        title_column: Annotated[str | None, Form()] = None,
        description_column: Annotated[str | None, Form()] = None,
        id_column: Annotated[str | None, Form()] = None,
    ) -> StreamingResponse | JSONResponse:
        """Tag every product of an uploaded catalog; the answer streams back in the same format
        (.parquet, .csv; JSON Lines otherwise) with columns id, title, tags (and scores)."""
        shown = file.filename or "upload"
        release = self.file_jobs.take()  # a 429 while the cap's jobs run
        workdir = Path(tempfile.mkdtemp(prefix="labelrec-upload-"))
        try:
            snap = self._pin()
            suffix = upload_suffix(shown)
            path = workdir / f"upload{suffix}"
            size = file.size
            if size is None:
                file.file.seek(0, os.SEEK_END)
                size = file.file.tell()
                file.file.seek(0)
            if size > MAX_UPLOAD_BYTES:
                raise ServiceError(
                    413,
                    f"{shown}: {size / 2**20:.0f} MB is over the upload cap of "
                    f"{MAX_UPLOAD_BYTES >> 20} MB ({UPLOAD_SETTING}); split the catalog "
                    "or use `labelrec index` for large files",
                )
            if suffix.endswith(".gz"):  # the cap counts what the file expands to
                path = workdir / f"upload{suffix.removesuffix('.gz')}"
                await asyncio.to_thread(
                    gunzip_capped, file.file, path, shown, MAX_UPLOAD_BYTES, UPLOAD_SETTING
                )
            else:
                with path.open("wb") as fh:
                    await asyncio.to_thread(shutil.copyfileobj, file.file, fh, 1 << 20)
            # the spooled upload is copied: free it now, not when the answer has streamed
            await file.close()
            if suffix in (".parquet", ".pq"):  # the cap counts what its pages decode to
                await asyncio.to_thread(
                    parquet_capped, path, shown, MAX_UPLOAD_BYTES, UPLOAD_SETTING
                )
            cfg = data_config_for(
                snap.recommender,
                {
                    "title_column": title_column,
                    "description_column": description_column,
                    "id_column": id_column,
                },
            )
            await asyncio.to_thread(check_catalog, path, cfg, shown)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            release()
            raise
        out_suffix = OUTPUT_SUFFIXES.get(suffix.removesuffix(".gz"), ".jsonl")
        name = Path(shown.removesuffix(".gz")).stem + ".tags" + out_suffix
        ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        if ascii_name.startswith(("_.", ".")):  # nothing of the name was ASCII
            ascii_name = "catalog" + ascii_name.lstrip("_")
        disposition = f'attachment; filename="{ascii_name}"'
        if ascii_name != name:  # RFC 6266: the name itself for clients that read UTF-8
            disposition += f"; filename*=UTF-8''{quote(name, safe='')}"
        stream = stream_scored(
            path,
            workdir,
            cfg,
            out_suffix,
            file_scorer(snap, limit, threshold, self.holder.busy),
            FILE_CHUNK,
            on_close=release,
        )
        # a stream never started (the client gone before the first byte) runs no `finally`:
        # its slot and files are freed when it is dropped
        weakref.finalize(stream, release)
        weakref.finalize(stream, shutil.rmtree, workdir, ignore_errors=True)
        # the first chunk is scored before the answer starts: a failure there is an error
        # answer now (the stream's `finally` has freed its slot and files), not a 500 after
        # the first-byte timeout with nothing logged
        first = await anext(stream, b"")
        return StreamingResponse(
            _prepended(first, stream),
            media_type=MEDIA_TYPES.get(out_suffix, "application/jsonl"),
            headers={
                "content-disposition": disposition,
                "x-labelrec-model-version": snap.version,
            },
        )


# uploads: the raw body may be the capped size plus the multipart framing and form fields
UPLOAD_CAPS = {p: (MAX_UPLOAD_BYTES + (1 << 20), UPLOAD_SETTING) for p in UPLOAD_PATHS}
LabelRec.add_asgi_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, per_path=UPLOAD_CAPS)
# answers of more than 1 KB are compressed for a client that accepts gzip (big batches, files)
LabelRec.add_asgi_middleware(GZipMiddleware, minimum_size=1024)
LabelRec.add_asgi_middleware(JsonBodies, exempt=UPLOAD_PATHS)
LabelRec.add_asgi_middleware(
    NeedsToken,
    paths=("/feedback",),
    token=SETTINGS.review_token,
    setting=" or ".join(
        [REVIEW_TOKEN_ENV] * bool(SETTINGS.review_token)
        + [f"a token of {REVIEWERS_ENV}"] * bool(REVIEWER_TOKENS)
    ),
    named=REVIEWER_TOKENS,
)
