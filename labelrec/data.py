"""Catalog ingestion: JSON Lines, CSV/TSV and Parquet product catalogs, tag vocabulary, splits.

A catalog row becomes a :class:`Product` (id, title, description, tags). Which columns hold what
is set by :class:`~labelrec.config.DataConfig`; tags can come from several columns (a list or a
delimited string each), get a facet prefix per column (``brand:``) and category paths expand into
one tag per path prefix (``Toys``, ``Toys > Puzzles``, ...).

Every format goes through the same per-row code (:func:`iter_catalog`, which
:func:`read_catalog` collects). A bad row raises :class:`CatalogError` naming the file, the
1-based physical line (JSONL/CSV, header line included; a quoted CSV field spanning several lines
is counted correctly) or the 1-based row (Parquet) and the field, or with ``on_error="skip"`` is
left out and recorded in :attr:`Catalog.skipped`. A configured column that is missing altogether
(from the header, or from every JSON object) is always an error.
"""

from __future__ import annotations

import ast
import codecs
import csv
import functools
import gzip
import hashlib
import io
import json
import logging
import math
import random
import re
import sys
import tokenize
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import scipy.sparse as sp

from .config import DataConfig

logger = logging.getLogger(__name__)

__all__ = [
    "Catalog",
    "CatalogError",
    "Product",
    "TagVocab",
    "expand_hierarchy",
    "iter_catalog",
    "read_catalog",
    "read_texts",
    "split_products",
]

_JSON_EXTS = {".jsonl", ".json", ".ndjson"}
_CSV_EXTS = {".csv", ".tsv"}
_PARQUET_EXTS = {".parquet", ".pq"}
_TEXT_EXTS = {".txt"}
_SNIFF_DELIMITERS = (",", "\t", ";", "|")
_SAMPLE_CHARS = 1 << 16
_PARQUET_BATCH = 4096


class _Missing:
    """Marks a column absent from a row (a short CSV row, a JSON object without the key)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


@dataclass
class Product:
    """One catalog item."""

    id: str
    title: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # tags a reviewer rejected: known negatives


class CatalogError(ValueError):
    """A catalog file or one of its rows is invalid.

    ``path`` is the file, ``line`` the 1-based physical line (JSONL/CSV, counting the header) or
    row (Parquet; ``unit`` says which), None for file-level problems, and ``field`` the column
    concerned (None when the row as a whole is bad). The message reads like
    ``catalog.csv, line 17, field 'title': empty title``.
    """

    def __init__(
        self,
        path: str | Path,
        line: int | None,
        field: str | None,
        reason: str,
        unit: str = "line",
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        self.unit = unit
        where = [self.path]
        if line is not None:
            where.append(f"{unit} {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.field, self.reason, self.unit))


class _RowError(Exception):
    """A bad row, before it is located (turned into a CatalogError or a skip message)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass
class Catalog:
    """Products read from one file, with the messages of the rows left out (``on_error=skip``)."""

    products: list[Product]
    source: str
    skipped: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.products)


# --------------------------------------------------------------------------- text and tag cells


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA / NaT: a cell a table leaves empty."""
    return value is None or _is_nan(value) or type(value).__name__ in ("NAType", "NaTType")


def _is_empty(value: Any) -> bool:
    return value is _MISSING or is_missing(value)


def _norm_ws(text: str) -> str:
    """Collapse runs of (Unicode) whitespace into one space and strip; other characters stay."""
    return " ".join(text.split())


# Texts are cut to these lengths before scoring (labelrec.predict, labelrec.describe): the models
# read a few hundred tokens at most, and the text-only taggers' work grows with the text, so a
# hostile 1 MB title must not hold the model for seconds.
MAX_TITLE_CHARS = 1_000
MAX_DESCRIPTION_CHARS = 10_000
# A tag sent to a front end (reviews, the describer) is refused above this: longer than any tag a
# catalog has, so a longer one is a pasted text.
MAX_TAG_CHARS = 512

# zero-width space, non-joiner, joiner, word joiner, BOM, soft hyphen and the control characters
# that are not whitespace (NUL, DEL ...): they show nothing, and a title's spans or a tag's
# position would hold them
_INVISIBLE = dict.fromkeys(
    [*map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), *range(0x09), *range(0x0E, 0x1C), 0x7F]
)


def clean_text(text: str) -> str:
    """A title or description as labelrec reads it everywhere (catalogs, ``TagRecommender``,
    the CLI, the service, the MLflow model): zero-width characters, soft hyphens and control
    characters (NUL ...) removed, runs of whitespace one space, the ends stripped, full-width
    letters and digits as ASCII (``Ａｐｐｌｅ　ｉＰｈｏｎｅ１５`` is ``Apple iPhone15``, as a CJK
    keyboard may type it; full-width punctuation, which Chinese text writes, stays). The same
    product gets the same tags from every front end only if all of them see the same text."""
    return " ".join(text.translate(_INVISIBLE).split()).translate(_WIDE_ALNUM_TO_ASCII)


_WIDE_TO_ASCII = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_WIDE_TO_ASCII[0x3000] = 0x20  # the ideographic space
_WIDE_ALNUM_TO_ASCII = {  # full-width digits and Latin letters
    code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F) if chr(code - 0xFEE0).isalnum()
}
# Characters read one by one (no spaces between words), for a regex class: kana, CJK ideographs
# with extension A, compatibility ideographs, Hangul syllables, and the supplementary
# ideographs of extensions B to H (𠮷).
CJK_RANGES = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U000323af"
)


def fold_width(text: str) -> str:
    """Full-width ASCII forms as ASCII (``品牌：Ａｐｐｌｅ`` -> ``品牌:Apple``; ``＞``, ``１２``)
    and the ideographic space as a space, character for character: positions in ``text`` hold.

    CJK keyboards type both widths; a tag is the same tag in either (rules, reviews and a title's
    spans meet the catalog's tags this way). Narrower than NFKC, which also rewrites ``™``,
    ``½`` and ligatures."""
    return text.translate(_WIDE_TO_ASCII)


def clean_tag(tag: str) -> str:
    """A tag as labelrec reads it everywhere (catalogs, reviews, rules, the describer's prompt):
    the text cleaning of titles (``clean_text``: invisible characters dropped, whitespace
    collapsed), full-width forms folded and Unicode's composed form (NFC), so ``Books\u00ad``,
    ``品牌：华为`` or a ``Café`` typed as ``e`` and a combining accent is the tag it looks like."""
    return unicodedata.normalize("NFC", fold_width(clean_text(tag)))


def tag_key(tag: str) -> str:
    """What the spellings of one tag share: width, Unicode form and case folded
    (``brand:LEGO``, ``brand：Lego`` and ``brand:Lego`` have one key; ``Straße``, ``STRASSE``)."""
    return unicodedata.normalize("NFC", fold_width(tag)).casefold()


def _type_name(value: Any) -> str:
    return "dict" if isinstance(value, dict) else type(value).__name__


_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not Unicode text that a tokenizer, file or database takes (a lone
    surrogate, e.g. from JSON's ``"\\ud800"``), or None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"holds a lone surrogate U+{ord(found.group()):04X} at character {found.start() + 1},"
        " which is not valid Unicode text"
    )


def has_visible_text(text: str) -> bool:
    """Whether ``text`` has a character that shows: not only spaces, zero-width characters or
    controls."""
    return any(ch.isprintable() and not ch.isspace() for ch in text)


def _valid_text(text: str, column: str) -> str:
    if (problem := unicode_problem(text)) is not None:
        raise _RowError(column, problem)
    return text


def _text_value(value: Any, column: str) -> str:
    """A title or description cell as normalised text; None/NaN/missing give ""."""
    if _is_empty(value):
        return ""
    if isinstance(value, str):
        return _valid_text(clean_text(value), column)
    raise _RowError(column, f"expected a string, got {_type_name(value)}")


def _id_value(value: Any, column: str) -> str:
    if isinstance(value, bool):
        raise _RowError(column, f"expected a string or an integer, got {_type_name(value)}")
    if isinstance(value, (int, np.integer)):
        try:
            return str(int(value))
        except ValueError as err:  # more digits than Python prints (sys.set_int_max_str_digits)
            raise _RowError(column, f"an integer id too long to print: {err}") from None
    if isinstance(value, (float, np.floating)) and not math.isnan(value) and value.is_integer():
        if abs(value) >= 2**53:  # past it a float holds the nearest even number, not the id
            raise _RowError(
                column, f"{value!r}: a float id this large is not exact; write ids as strings"
            )
        return str(int(value))  # integer ids that went through a float column (pandas with NaN)
    if _is_empty(value):
        return ""
    if isinstance(value, str):
        return _valid_text(_norm_ws(value), column)
    raise _RowError(column, f"expected a string or an integer, got {_type_name(value)}")


def _tag_items(value: Any, column: str, delimiter: str) -> list[str]:
    """The raw tags of one cell: a list (JSON, Parquet), a JSON list in a string, a Python list
    of strings in a string (pandas' ``to_csv`` of a list column), or a string split on
    ``delimiter``."""
    if _is_empty(value):
        return []
    if isinstance(value, str):
        text = _valid_text(value.strip(), column)
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                parsed = _python_list(text)
            if isinstance(parsed, list):
                return _tag_items(parsed, column, delimiter)
        return split_tag_string(text, delimiter, keep_blank=True) if delimiter else [text]
    if isinstance(value, (list, tuple, np.ndarray)):
        items = []
        for item in value:
            if _is_empty(item):
                continue
            if isinstance(item, str):
                items.append(_valid_text(item, column))
            elif isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(
                item, bool
            ):
                items.append(str(item))
            else:
                raise _RowError(column, f"tags must be strings, got {_type_name(item)}")
        return items
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [str(int(value))]
    raise _RowError(column, f"expected a list of tags or a string, got {_type_name(value)}")


def _python_list(text: str) -> list[str] | None:
    """A list of strings written as Python writes it, ``"['a', 'b']"`` (pandas' ``to_csv`` of a
    list column) or as numpy does, ``"['a' 'b']"`` (of an array column, as Parquet lists are
    read into pandas), None and nan items dropped; None for anything else (``[Sale]``: a tag)."""
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
    try:
        tokens = [
            t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in skip
        ]
    except (tokenize.TokenError, SyntaxError):
        return None
    if len(tokens) < 2 or tokens[0].string != "[" or tokens[-1].string != "]":
        return None
    items = []
    for token in tokens[1:-1]:
        if token.type == tokenize.STRING:  # each literal alone: numpy's are not comma-separated
            try:
                value = ast.literal_eval(token.string)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
            if not isinstance(value, str):
                return None
            items.append(value)
        elif not (token.string == "," or token.string in ("None", "nan")):
            return None
    return items


def split_tag_string(text: str, delimiter: str = "|", *, keep_blank: bool = False) -> list[str]:
    """A string of tags split on ``delimiter`` in either width (``｜`` is ``|``, ``，`` is ``,``:
    ``fold_width``), as the tags themselves are read, each tag as written; blank items dropped
    unless ``keep_blank``."""
    folded, sep = fold_width(text), fold_width(delimiter)
    items, start = [], 0
    while (at := folded.find(sep, start)) >= 0:  # folding keeps every character in its place
        items.append(text[start:at])
        start = at + len(sep)
    items.append(text[start:])
    return items if keep_blank else [t for t in items if t.strip()]


def tag_string(tags: Sequence[str]) -> str:
    """Tags as one string (a CSV cell): joined by ``|``, or a JSON list where a tag holds ``|``;
    ``tag_cell`` reads either back as the same tags."""
    if any("|" in fold_width(tag) for tag in tags) or "|".join(tags).startswith("["):
        return json.dumps(list(tags), ensure_ascii=False)  # joined, it would read otherwise
    return "|".join(tags)


def tag_cell(value: Any, delimiter: str | None = "|") -> list[str]:
    """The tags of one cell as a catalog's tag column reads them: a list, a JSON or Python list
    in a string, or a string split on ``delimiter``; each read by ``clean_tag``, empty tags
    dropped. A ValueError says what the cell holds instead."""
    try:
        raw = _tag_items(value, "tags", delimiter or "")
    except _RowError as err:
        raise ValueError(err.reason) from None
    return [tag for tag in map(clean_tag, raw) if tag]


_FACET = re.compile(r"^[^\s:>]{1,20}:")


def is_facet(tag: str, separator: str | None = None) -> bool:
    """``key:value`` facet tags (``brand:Hornby``, ``品牌:华为``), as opposed to category paths:
    a separator in a facet's value (``brand:Anagram/MD``) makes no path of it, where one in the
    key (``Computers/Laptops:Gaming`` with ``/``) makes it a path."""
    found = _FACET.match(tag)
    if not found or not separator or not separator.strip():
        return bool(found)
    return separator.strip() not in found.group(0)


def expand_hierarchy(tag: str, sep: str) -> list[str]:
    """One tag per prefix of a category path.

    >>> expand_hierarchy("Toys > Puzzles > Jigsaw", " > ")
    ['Toys', 'Toys > Puzzles', 'Toys > Puzzles > Jigsaw']

    Levels are stripped and empty levels dropped, also where the tag's whitespace was trimmed
    or collapsed around a separator at an end or one given twice (``"> Toys >  > Puzzles >"``
    is ``Toys > Puzzles``); a tag without ``sep`` is returned alone.
    """
    if not sep:
        raise ValueError("expand_hierarchy: the separator must not be empty")
    core = sep.strip() if sep.strip() != sep else ""  # ">" of " > ", left at a trimmed end
    levels = []
    for part in tag.split(sep):
        part = part.strip()
        while core and (part == core or part.startswith(core + " ")):  # "> Toys": a stray mark
            part = part[len(core) :].lstrip()
        while core and part.endswith(" " + core):  # "Toys >"; "C++" and ">3 years" stay
            part = part[: -len(core)].rstrip()
        if part:
            levels.append(part)
    return [sep.join(levels[: i + 1]) for i in range(len(levels))]


def path_separator(cfg: Any) -> str:
    """The separator of category path tags under ``cfg`` (a whole config):
    ``lexical.path_separator``, else ``data.hierarchy_separator`` (whose paths the catalog's tags
    become), else ``" > "``, in folded width as tags are read."""
    return fold_width(cfg.lexical.path_separator or cfg.data.hierarchy_separator or " > ")


def category_separator(cfg: Any) -> str | None:
    """``path_separator(cfg)`` where the taggers use category paths; None when
    ``lexical.ancestor_consistency`` is off."""
    return path_separator(cfg) if cfg.lexical.ancestor_consistency else None


def _product_tags(record: dict[str, Any], cfg: DataConfig) -> list[str]:
    prefixes = [fold_width(p) for p in cfg.tag_prefixes or [""] * len(cfg.tag_columns)]
    tags: list[str] = []
    seen: set[str] = set()
    for column, prefix in zip(cfg.tag_columns, prefixes, strict=True):
        for raw in _tag_items(record.get(column, _MISSING), column, cfg.tag_delimiter):
            tag = clean_tag(raw)
            if not tag:
                continue
            sep = fold_width(cfg.hierarchy_separator) if cfg.hierarchy_separator else None
            if not prefix and sep and not is_facet(tag, sep):
                expanded = expand_hierarchy(tag, sep)
            else:
                expanded = [tag]
            for item in expanded:
                if prefix and not item.startswith(prefix):
                    # a value that holds its prefix in another case (Brand:Lego) is not prefixed
                    # twice: it takes the prefix as the config writes it
                    same = tag_key(item[: len(prefix)]) == tag_key(prefix)
                    item = prefix + (item[len(prefix) :] if same else item)
                if item == prefix or item in seen:
                    continue
                seen.add(item)
                tags.append(item)
    return tags


def _parse_product(record: dict[str, Any], cfg: DataConfig, require_tags: bool) -> Product:
    """The one place a row becomes a Product (or a _RowError)."""
    raw_id = record.get(cfg.id_column, _MISSING)
    if raw_id is _MISSING:
        raise _RowError(cfg.id_column, "missing value")
    pid = _id_value(raw_id, cfg.id_column)
    if not pid:
        raise _RowError(cfg.id_column, "empty id")
    raw_title = record.get(cfg.title_column, _MISSING)
    if raw_title is _MISSING:
        raise _RowError(cfg.title_column, "missing value")
    title = _text_value(raw_title, cfg.title_column)
    if not title:
        raise _RowError(cfg.title_column, "empty title")
    description = ""
    if cfg.description_column:
        description = _text_value(
            record.get(cfg.description_column, _MISSING), cfg.description_column
        )
    tags = _product_tags(record, cfg)
    if require_tags and not tags:
        raise _RowError(", ".join(cfg.tag_columns), "no tags")
    rejected: list[str] = []
    if cfg.rejected_column:
        raw = record.get(cfg.rejected_column, _MISSING)
        if raw is not _MISSING:
            items = map(clean_tag, _tag_items(raw, cfg.rejected_column, cfg.tag_delimiter))
            rejected = [t for t in dict.fromkeys(items) if t and t not in tags]
    return Product(id=pid, title=title, description=description, tags=tags, rejected=rejected)


# --------------------------------------------------------------------------- files and formats


def _format_of(path: Path) -> tuple[str, bool]:
    """(extension without .gz, gzip-compressed)."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    ext = Path(name[:-3]).suffix if gz else path.suffix.lower()
    return ext, gz


def _open_text(path: Path, gz: bool, errors: str = "strict") -> IO[str]:
    """``path`` as UTF-8 text; ``errors="surrogateescape"``: bytes that are not UTF-8 come as
    lone surrogates (``undecoded`` finds them), so the rows around them are read."""
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors=errors, newline="")
    return open(path, encoding="utf-8-sig", errors=errors, newline="")


_UNDECODED = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8 (surrogateescape)


def undecoded(text: str) -> str | None:
    """Why text read with ``surrogateescape`` (a file, stdin) is not UTF-8 text, or None."""
    found = _UNDECODED.search(text)
    if found is None:
        return None
    byte = ord(found.group()) - 0xDC00
    return f"not valid UTF-8 (byte 0x{byte:02x} at character {found.start() + 1}); save it as UTF-8"


def _first_row_undecoded(path: Path, line: int, reason: str) -> CatalogError:
    """The error of a file whose first row is not UTF-8: the file is in another encoding (its
    rows that happen to be ASCII would be all that reads), whatever ``data.on_error`` says."""
    return CatalogError(
        path, line, None, f"{reason} (the first row: a file in another encoding, GBK or Latin-1?)"
    )


def _utf16_error(path: Path) -> CatalogError | None:
    """The error of a file that begins with a UTF-16 byte order mark, else None."""
    if not _starts_with(path, (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None
    return CatalogError(
        path,
        None,
        None,
        "UTF-16 text (Excel's 'Unicode Text'), not UTF-8: save it as UTF-8 (Excel: 'CSV"
        " UTF-8'), e.g. iconv -f UTF-16 -t UTF-8",
    )


def _not_utf8(path: Path, last_good_line: int, err: UnicodeDecodeError) -> CatalogError:
    # Text is decoded in blocks, so the reader does not know the line: the raw bytes tell it.
    line = _first_bad_utf8_line(path)
    if line == 1 and (utf16 := _utf16_error(path)) is not None:
        return utf16
    if line is not None:
        return CatalogError(path, line, None, f"not valid UTF-8 ({err.reason}); save it as UTF-8")
    where = f" after line {last_good_line}" if last_good_line else ""
    return CatalogError(
        path, None, None, f"not valid UTF-8{where} ({err.reason}); save it as UTF-8"
    )


def _starts_with(path: Path, marks: tuple[bytes, ...]) -> bool:
    """Whether ``path`` (gunzipped for ``.gz``) begins with one of ``marks``."""
    try:
        with (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb") as fh:
            return fh.read(4).startswith(marks)
    except (OSError, EOFError, zlib.error):
        return False


def _first_bad_utf8_line(path: Path, block: int = 1 << 20) -> int | None:
    """The 1-based line of the first byte of ``path`` (gunzipped for ``.gz``) that is not
    UTF-8, None when every byte is (or the file cannot be read again)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb") as fh:
            while chunk := fh.read(block):
                pending = decoder.getstate()[0]  # an unfinished character of the last block
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    return line + (pending + chunk).count(b"\n", 0, err.start)
                line += chunk.count(b"\n")
    except OSError:
        return None
    return None


def count_records(path: str | Path, block: int = 1 << 20) -> int | None:
    """How many products a catalog file holds at most, where that is cheap to know (a progress
    bar's total): a Parquet file's row count, or the lines of an uncompressed JSON Lines file;
    None for other formats (a CSV record may span lines), a JSON array or a file that cannot be
    read."""
    path = Path(path)
    ext, gz = _format_of(path)
    try:
        if ext in _PARQUET_EXTS and not gz:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        if ext not in _JSON_EXTS or gz:
            return None
        lines, last = 0, b"\n"
        with open(path, "rb") as fh:
            if fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                return None  # one JSON array
            fh.seek(0)
            while chunk := fh.read(block):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        return lines + (last != b"\n")  # a last line without its newline
    except Exception:  # noqa: BLE001 - a total is a nicety: the reader reports the real error
        return None


def check_input_files(data: DataConfig, names: Sequence[str]) -> None:
    """A ``FileNotFoundError`` or ``CatalogError`` naming the setting when a file that one of
    ``data``'s settings ``names`` (``train``, ``holdout``: each of its files...) gives is not
    there: a command stops before it locks its output, opens a run or loads a backbone."""
    for name in names:
        value = getattr(data, name)
        for path in value if isinstance(value, list) else [value] if value else []:
            try:
                check_catalog_file(path)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"data.{name}: {err}") from None
            except CatalogError as err:
                raise CatalogError(path, None, None, f"{err.reason} (data.{name})") from None


def check_catalog_file(path: str | Path) -> None:
    """``FileNotFoundError`` or ``CatalogError`` unless ``path`` is an existing file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"catalog {path} does not exist")
    if not path.is_file():
        raise CatalogError(path, None, None, "not a file")


def _list_names(names: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _wanted_columns(
    cfg: DataConfig, need_id: bool, need_title: bool, need_tags: bool
) -> dict[str, bool]:
    """Configured column -> whether it must exist in the file."""
    wanted: dict[str, bool] = {}

    def add(column: str | None, required: bool) -> None:
        if column:
            wanted[column] = wanted.get(column, False) or required

    add(cfg.id_column, need_id)
    add(cfg.title_column, need_title)
    add(cfg.description_column, False)
    for column in cfg.tag_columns:
        add(column, need_tags)
    add(cfg.rejected_column, False)
    return wanted


def _resolve_columns(
    names: Sequence[str],
    wanted: dict[str, bool],
    allow_index: bool,
    fail: Callable[[str, str], CatalogError],
    hint: str = "",
) -> dict[str, int]:
    """Configured column -> position in ``names`` (exact name, else the only case-insensitive
    match, else a 0-based index when ``allow_index``). Missing required columns -> ``fail``."""
    positions: dict[str, int] = {}
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        folded.setdefault(name.casefold(), []).append(i)
    missing = []
    for column, required in wanted.items():
        same = [i for i, name in enumerate(names) if name == column]
        if len(same) > 1:  # which one holds the data cannot be told: neither is dropped unseen
            raise fail(column, f"column {column!r} appears {len(same)} times: rename or drop one")
        if same:
            positions[column] = same[0]
        elif len(folded.get(column.casefold(), [])) == 1:
            positions[column] = folded[column.casefold()][0]
        elif len(folded.get(column.casefold(), [])) > 1:
            found = ", ".join(repr(names[i]) for i in folded[column.casefold()])
            raise fail(column, f"column {column!r}: {found} all match it; rename it to one")
        elif allow_index and column.isdigit() and int(column) < len(names):
            positions[column] = int(column)
        elif required:
            missing.append(column)
    if missing:
        what = "column" if len(missing) == 1 else "columns"
        raise fail(
            missing[0],
            f"missing {what} {', '.join(repr(m) for m in missing)}"
            f" (available: {_list_names(names)}){hint}",
        )
    return positions


class _Pairs(dict):
    """A JSON object that gives keys more than once (``json`` keeps the last value of such a
    key without a word), with those keys."""

    repeated: tuple[str, ...] = ()


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json``'s ``object_pairs_hook``: a plain dict, or a ``_Pairs`` where a key repeats."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    repeated = _Pairs(obj)
    repeated.repeated = tuple(key for key, n in Counter(k for k, _ in pairs).items() if n > 1)
    return repeated


@functools.lru_cache(maxsize=64)
def _read_keys(keys: tuple[str, ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    r"""Where a JSON line writes one of ``keys`` (as a key or as a string: a cheap first look),
    as written or as ``json.dumps`` escapes it (``"\u6807\u9898"``), and the key each written
    form is."""
    forms = {f'"{k}"': k for k in keys} | {json.dumps(k): k for k in keys}
    return re.compile("|".join(map(re.escape, forms))), forms


def _key_written_twice(text: str, keys: tuple[str, ...]) -> bool:
    r"""Whether a JSON line may give one of ``keys`` twice: it writes one of them twice, or it
    holds a ``\u`` escape, which may spell a key another way (``"\u0074ags"``): such a line
    is read again with the keys counted (a file written with ASCII escapes, each line)."""
    if not keys:  # none of the columns is in this object: nothing read twice
        return False
    pattern, forms = _read_keys(keys)
    found = [forms[m] for m in pattern.findall(text)]
    return len(found) > len(set(found)) or "\\u" in text


# A source yields (unit, number, record or _RowError); a record maps configured columns to values.
_Source = Iterator[tuple[str, int, "dict[str, Any] | _RowError"]]


def _json_source(path: Path, gz: bool, wanted: dict[str, bool]) -> _Source:
    # Each object's keys are its own: the columns are resolved per object (a few keys each), so
    # an object without a required key is one bad row. A required column that no object has is
    # an error of the file, whatever data.on_error says.
    keymaps: dict[tuple[str, ...], dict[str, str] | _RowError] = {}
    first_missing: CatalogError | None = None
    any_found = False

    def located(
        unit: str, number: int, obj: Any, text: str | None = None
    ) -> dict[str, Any] | _RowError:
        nonlocal first_missing, any_found
        if not isinstance(obj, dict):
            return _RowError(None, f"expected a JSON object, got {_type_name(obj)}")
        names = tuple(str(k) for k in obj)
        keymap = keymaps.get(names)
        if keymap is None:
            try:
                found = _resolve_columns(
                    names,
                    wanted,
                    allow_index=False,
                    fail=lambda col, msg: CatalogError(path, number, col, msg, unit),
                )
                keymap = {col: names[found[col]] for col in found}
            except CatalogError as err:
                first_missing = first_missing or err
                keymap = _RowError(err.field, err.reason)
            if len(keymaps) < 1024:  # catalogs repeat a few key orders
                keymaps[names] = keymap
        if isinstance(keymap, _RowError):
            return keymap
        any_found = True
        if text is not None and _key_written_twice(text, tuple(keymap.values())):
            obj = json.loads(text, object_pairs_hook=_json_object)  # read again, keys counted
        for col, key in keymap.items() if isinstance(obj, _Pairs) else ():
            if key in obj.repeated:
                return _RowError(
                    col, f"key {key!r} given twice: the second would replace the first"
                )
        return {col: obj.get(keymap.get(col, col), _MISSING) for col in wanted}

    number = 0
    try:
        with _open_text(path, gz, "surrogateescape") as fh:
            is_array = fh.read(4096).lstrip().startswith("[")
        if is_array:  # a .json file holding one array of objects
            with _open_text(path, gz) as fh:
                try:
                    items = json.load(fh, object_pairs_hook=_json_object)
                except json.JSONDecodeError as err:
                    raise CatalogError(path, err.lineno, None, f"invalid JSON: {err.msg}") from None
                except RecursionError:
                    raise CatalogError(
                        path, None, None, "invalid JSON: nested too deeply"
                    ) from None
            for number, obj in enumerate(items, 1):
                yield "item", number, located("item", number, obj)
        else:
            if (utf16 := _utf16_error(path)) is not None:
                raise utf16
            with _open_text(path, gz, "surrogateescape") as fh:
                first = True
                for number, line in enumerate(fh, 1):
                    text = line.strip()
                    if not text:
                        continue
                    if (bad := undecoded(text)) is not None:  # one bad row, as others are
                        if first:
                            raise _first_row_undecoded(path, number, bad)
                        yield "line", number, _RowError(None, bad)
                        continue
                    first = False
                    try:
                        obj = json.loads(text)  # a repeated key: looked for in located()
                    except json.JSONDecodeError as err:
                        msg = f"invalid JSON: {err.msg}"
                        if err.pos >= len(text):  # e.g. a pretty-printed object
                            msg += " (the line ends inside a JSON value: JSON Lines holds one whole"
                            msg += " product a line; a .json file may also hold one array of them)"
                        yield "line", number, _RowError(None, msg)
                        continue
                    except RecursionError:  # e.g. [[[[...]]]] thousands deep
                        yield "line", number, _RowError(None, "invalid JSON: nested too deeply")
                        continue
                    yield "line", number, located("line", number, obj, text)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, number, err) from None
    if first_missing is not None and not any_found:
        raise first_missing


def _csv_delimiter(cfg: DataConfig) -> str | None:
    if cfg.csv_delimiter is None:
        return None
    delim = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(cfg.csv_delimiter, cfg.csv_delimiter)
    if len(delim) != 1:
        raise CatalogError("data.csv_delimiter", None, None, f"must be one character: {delim!r}")
    return delim


def _complete_sample(sample: str, truncated: bool) -> str:
    if truncated and "\n" in sample:
        return sample[: sample.rindex("\n") + 1]
    return sample


def _sniff_delimiter(sample: str, truncated: bool, wanted: dict[str, bool], tsv: bool) -> str:
    """The candidate delimiter giving the most consistent field counts (ties: the configured
    column names in the first row, then more fields, then the usual order)."""
    sample = _complete_sample(sample, truncated)
    order = ("\t", ",", ";", "|") if tsv else _SNIFF_DELIMITERS
    best: tuple[Any, ...] | None = None
    best_delim = order[0]
    for rank, delim in enumerate(order):
        try:
            rows = [r for r in csv.reader(io.StringIO(sample), delimiter=delim) if r]
        except csv.Error:
            continue
        if truncated and len(rows) > 1:
            rows = rows[:-1]  # may be cut inside a quoted multi-line field
        if not rows:
            continue
        counts = Counter(len(r) for r in rows)
        width, n = counts.most_common(1)[0]
        if width < 2:
            continue
        header = {c.strip() for c in rows[0]}
        names = sum(1 for col in wanted if col in header)
        score = (names, round(n / len(rows), 2), width, -rank)
        if best is None or score > best:
            best, best_delim = score, delim
    return best_delim


class _KnownDialectSniffer(csv.Sniffer):
    """csv.Sniffer.has_header with the delimiter already known (its own sniffing is unreliable)."""

    def __init__(self, dialect: type[csv.Dialect]) -> None:
        super().__init__()
        self._dialect = dialect

    def sniff(self, sample: str, delimiters: str | None = None) -> type[csv.Dialect]:
        return self._dialect


def _guess_header(
    first: list[str], sample: str, truncated: bool, delim: str, wanted: dict[str, bool]
) -> bool:
    cells = {c.strip() for c in first}
    required = [col for col, req in wanted.items() if req] or list(wanted)
    if all(col in cells for col in required):
        return True
    if not all(col.isdigit() for col in required):
        return True  # names can only be found in a header: resolving them reports what is there
    if any(not c.strip() for c in first) or len(cells) < len(first):
        return False  # empty or repeated cells: data, not column names
    dialect = type("_Dialect", (csv.excel,), {"delimiter": delim})
    try:
        return _KnownDialectSniffer(dialect).has_header(_complete_sample(sample, truncated))
    except csv.Error:
        return False


def _csv_source(path: Path, gz: bool, cfg: DataConfig, wanted: dict[str, bool]) -> _Source:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # very long descriptions are kept
    ext, _ = _format_of(path)
    if (utf16 := _utf16_error(path)) is not None:
        raise utf16
    with _open_text(path, gz, "surrogateescape") as fh:  # a row that is not UTF-8: a bad row
        sample = fh.read(_SAMPLE_CHARS)
        truncated = bool(fh.read(1))
    # Excel's first line "sep=;" names the delimiter; it is not a row
    declared = re.match(r"sep=([^\r\n])\r?\n", sample)
    if declared:
        sample = sample[declared.end() :]
    delim = (
        _csv_delimiter(cfg)
        or (declared and declared.group(1))
        or _sniff_delimiter(sample, truncated, wanted, ext == ".tsv")
    )

    with _open_text(path, gz, "surrogateescape") as fh:
        lines: list[str] = []  # the physical lines of the record being read
        if declared:
            fh.readline()

        def kept() -> Iterator[str]:
            for text in fh:
                lines.append(text)
                yield text

        reader = csv.reader(kept(), delimiter=delim)
        offset = 1 if declared else 0  # lines before the reader's first
        end = offset  # physical line on which the previous record ended

        def records() -> Iterator[tuple[int, list[str]]]:
            # A record is yielded once the next one is read: the file's last record may hold a
            # quote that the file ends inside, which is reported instead of that record.
            nonlocal end
            last: tuple[int, list[str]] | None = None  # the last record and its physical lines
            pending: tuple[int, list[str]] | None = None
            while True:
                lines.clear()
                try:
                    row = next(reader)
                except StopIteration:
                    if last is not None and _runs_to_the_end(last[1], delim):
                        raise CatalogError(
                            path,
                            last[0],
                            None,
                            "a quoted field is not closed before the end of"
                            " the file (a stray quote mark?): the rows after it would be its text",
                        ) from None
                    if pending is not None:
                        yield pending
                    return
                except csv.Error as err:
                    raise CatalogError(
                        path, reader.line_num + offset, None, f"bad CSV: {err}"
                    ) from None
                start, end = end + 1, reader.line_num + offset
                last = (start, list(lines))
                if pending is not None:
                    yield pending
                    pending = None
                problem = _strict_error(lines, delim) if end > start else None
                if problem and _OPEN_AT_THE_END not in problem:  # that one: reported below
                    # a quoted field the lenient reader ran over line breaks, and not closed
                    # as CSV closes one: a stray quote mark took the rows up to the next quote
                    raise CatalogError(
                        path,
                        start,
                        None,
                        f"a quoted field runs from line {start} to line {end} and is not closed"
                        " as CSV closes one (a stray quote mark?): the rows in between would be"
                        " its text",
                    )
                if row and any(cell.strip() for cell in row):
                    pending = (start, row)

        rows = records()
        first = next(rows, None)
        if first is None:
            return
        first_line, first_row = first
        if (bad := undecoded("".join(first_row))) is not None:
            raise _first_row_undecoded(path, first_line, bad)
        header = cfg.csv_header
        if header is None:
            header = _guess_header(first_row, sample, truncated, delim, wanted)
        if header:
            names = [cell.strip() for cell in first_row]
            hint = (
                "; if the first row is data, not a header: data.csv_header=false, and the"
                " columns by 0-based index (data.id_column=0 ...)"
                if cfg.csv_header is None
                else ""
            )
        else:
            names = [str(i) for i in range(len(first_row))]
            hint = (
                "; no header row: columns are 0-based indexes"
                " (set data.csv_header=true if the first row is one)"
            )
        positions = _resolve_columns(
            names,
            wanted,
            allow_index=True,
            fail=lambda col, msg: CatalogError(path, first_line, col, msg),
            hint=hint,
        )
        width = len(first_row)

        def data_rows() -> Iterator[tuple[int, list[str]]]:
            if not header:
                yield first_line, first_row
            yield from rows

        first_data = True
        for line, row in data_rows():
            bad_cells = (
                (col, bad)
                for col, i in positions.items()
                if i < len(row) and (bad := undecoded(row[i])) is not None
            )  # a column that is not read may hold anything
            if (found := next(bad_cells, None)) is not None:
                if first_data:
                    raise _first_row_undecoded(path, line, found[1])
                yield "line", line, _RowError(*found)
                continue
            first_data = False
            if header and [cell.strip().lstrip("\ufeff").strip() for cell in row] == names:
                msg = "the header row again (files joined end to end?)"
                yield "line", line, _RowError(None, msg)
                continue
            if len(row) > width and any(cell.strip() for cell in row[width:]):
                what = "the header has" if header else "the first row has"
                msg = f"{len(row)} fields where {what} {width} (a delimiter in an unquoted field?)"
                yield "line", line, _RowError(None, msg)
                continue
            yield (
                "line",
                line,
                {col: (row[i] if i < len(row) else _MISSING) for col, i in positions.items()},
            )


_OPEN_AT_THE_END = "unexpected end of data"  # csv's error for a quoted field never closed


def _strict_error(lines: list[str], delimiter: str) -> str | None:
    """What strict CSV finds wrong in the record of these physical lines (each quoted field
    closed by a quote before a delimiter or the line end); None when nothing."""
    try:
        for _ in csv.reader(lines, delimiter=delimiter, strict=True):
            pass
    except csv.Error as err:
        return str(err)
    return None


def _runs_to_the_end(lines: list[str], delimiter: str) -> bool:
    """Whether the record of these physical lines (the last of a file) holds a quoted field that
    the file ends inside: a lenient reader takes everything after the quote as that field."""
    return _OPEN_AT_THE_END in (_strict_error(lines, delimiter) or "")


def _parquet_source(path: Path, wanted: dict[str, bool]) -> _Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(path, None, None, f"cannot read Parquet: {err}") from None
    names = [n for n in pfile.schema_arrow.names if not n.startswith("__index_level_")]
    positions = _resolve_columns(
        names, wanted, allow_index=True, fail=lambda col, msg: CatalogError(path, None, col, msg)
    )
    columns = {col: names[i] for col, i in positions.items()}
    read = sorted(set(columns.values()))
    number = 0
    batches = pfile.iter_batches(batch_size=_PARQUET_BATCH, columns=read)
    while True:
        try:  # a file damaged inside: the rows before it are read, then this names where
            batch = next(batches, None)
            if batch is None:
                return
            data = batch.to_pydict()
        except (pa.ArrowException, OSError) as err:
            where = f"cannot read Parquet from this row on: {err}"
            raise CatalogError(path, number + 1, None, where, "row") from None
        for i in range(batch.num_rows):
            number += 1
            yield "row", number, {col: data[name][i] for col, name in columns.items()}


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _gzip_error(path: Path, last_line: int, err: Exception) -> CatalogError:
    """A ``CatalogError`` for a .gz file that gzip cannot read to its end."""
    if isinstance(err, EOFError):
        where = f" after line {last_line}" if last_line else ""
        return CatalogError(path, None, None, f"the compressed file ends early{where} (truncated?)")
    return CatalogError(
        path, None, None, f"not a readable gzip file ({err}): compress it, or drop the .gz"
    )


def _gzip_checked(source: _Source, path: Path) -> _Source:
    """``source`` with gzip's own errors (a truncated or not-gzip file) as ``CatalogError``."""
    number = 0
    try:
        for unit, number, record in source:
            yield unit, number, record
    except _GZIP_ERRORS as err:
        raise _gzip_error(path, number, err) from None


def _source(path: Path, cfg: DataConfig, wanted: dict[str, bool]) -> _Source:
    check_catalog_file(path)
    ext, gz = _format_of(path)
    if ext in _JSON_EXTS or ext in _CSV_EXTS:
        source = (
            _json_source(path, gz, wanted)
            if ext in _JSON_EXTS
            else _csv_source(path, gz, cfg, wanted)
        )
        return _gzip_checked(source, path) if gz else source
    if ext in _PARQUET_EXTS and not gz:
        return _parquet_source(path, wanted)
    if ext in _TEXT_EXTS:
        reason = "plain text is not a catalog format (read_texts reads it); rename a CSV to .csv"
    else:
        reason = "unknown catalog format (use .jsonl/.json/.ndjson, .csv/.tsv (.gz) or .parquet)"
    raise CatalogError(path, None, None, reason)


def _iter_parsed(
    path: Path,
    cfg: DataConfig,
    wanted: dict[str, bool],
    parse: Callable[[dict[str, Any], str, int], Any],
    skipped: list[str] | None,
) -> Iterator[Any]:
    """Run ``parse`` over every record, applying ``on_error`` and ``max_products``; results that
    are None are dropped silently."""
    limit = cfg.max_products
    if limit is not None and limit <= 0:
        return
    produced = n_skipped = 0
    first_skip = ""
    for unit, number, record in _source(path, cfg, wanted):
        try:
            if isinstance(record, _RowError):
                raise record
            item = parse(record, unit, number)
        except _RowError as err:
            error = CatalogError(path, number, err.field, err.reason, unit)
            if cfg.on_error == "raise":
                raise error from None
            n_skipped += 1
            first_skip = first_skip or str(error)
            if skipped is not None:
                skipped.append(str(error))
            continue
        if item is None:
            continue
        yield item
        produced += 1
        if limit is not None and produced >= limit:
            break
    if n_skipped:
        logger.warning("%s: skipped %d bad rows (first: %s)", path, n_skipped, first_skip)


def _iter_products(
    path: Path, cfg: DataConfig, require_tags: bool, skipped: list[str] | None
) -> Iterator[Product]:
    seen: dict[str, str] = {}

    def parse(record: dict[str, Any], unit: str, number: int) -> Product:
        product = _parse_product(record, cfg, require_tags)
        first = seen.get(product.id)
        if first is not None:
            raise _RowError(cfg.id_column, f"duplicate id {product.id!r} (first at {first})")
        seen[product.id] = f"{unit} {number}"
        return product

    wanted = _wanted_columns(cfg, need_id=True, need_title=True, need_tags=require_tags)
    return _iter_parsed(path, cfg, wanted, parse, skipped)


# --------------------------------------------------------------------------- public readers


def iter_catalog(
    path: str | Path,
    cfg: DataConfig | None = None,
    require_tags: bool = False,
    chunk_size: int = 1000,
    *,
    skipped: list[str] | None = None,
) -> Iterator[list[Product]]:
    """Stream a catalog in lists of at most ``chunk_size`` products (JSONL/CSV line by line,
    Parquet by record batches), e.g. for batch scoring without loading the whole file.

    Bad rows raise :class:`CatalogError` or, with ``cfg.on_error == "skip"``, are left out and
    their messages appended to ``skipped`` when given. Duplicate ids are detected across chunks.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    check_catalog_file(path)  # fail now, not at the first next()
    products = _iter_products(path, cfg or DataConfig(), require_tags, skipped)
    return _chunked(products, chunk_size)


def _chunked(products: Iterator[Product], chunk_size: int) -> Iterator[list[Product]]:
    """Lists of ``chunk_size`` products; at a bad row, the products read before it come out as
    a last (short) chunk, then the ``CatalogError`` is raised: a consumer keeps all it could."""
    chunk: list[Product] = []
    try:
        for product in products:
            chunk.append(product)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    except CatalogError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


def read_catalog(
    path: str | Path, cfg: DataConfig | None = None, require_tags: bool = True
) -> Catalog:
    """Read a whole catalog (.jsonl/.json/.ndjson, .csv/.tsv, optionally .gz, or .parquet)."""
    cfg = cfg or DataConfig()
    skipped: list[str] = []
    products = list(_iter_products(Path(path), cfg, require_tags, skipped))
    if hint := delimiter_hint(products, cfg):
        logger.warning("%s: %s", path, hint)
    return Catalog(products=products, source=str(path), skipped=skipped)


_LIST_PUNCTUATION = re.compile(r"[,;，；、]\s*\S")


def delimiter_hint(products: Sequence[Product], cfg: DataConfig) -> str | None:
    """What to set when most tagged products hold a tag that reads as a list of tags joined by
    a comma or semicolon, which ``data.tag_delimiter`` does not split (Shopify and WooCommerce
    write tags so); None otherwise."""
    tagged = [p for p in products if p.tags]
    joined = [next((t for t in p.tags if _LIST_PUNCTUATION.search(t)), None) for p in tagged]
    found = [t for t in joined if t is not None]
    if len(tagged) < 10 or len(found) * 2 < len(tagged):
        return None
    return (
        f"{len(found)} of {len(tagged)} tagged products have a tag like {found[0]!r}: if a"
        f" cell lists tags with commas or semicolons, set data.tag_delimiter to that character"
        f" (it is {cfg.tag_delimiter!r})"
    )


def read_texts(path: str | Path, cfg: DataConfig | None = None) -> list[str]:
    """Unlabelled texts (e.g. for pretraining): ``title + " " + description`` per catalog row
    (either column may be missing), or one text per line of a ``.txt`` file. Ids and tags are
    not needed; empty texts are dropped."""
    cfg = cfg or DataConfig()
    path = Path(path)
    check_catalog_file(path)
    ext, gz = _format_of(path)
    limit = cfg.max_products
    texts: list[str] = []
    if ext in _TEXT_EXTS:
        if limit is not None and limit <= 0:
            return texts
        number = 0
        try:
            with _open_text(path, gz) as fh:
                for line in fh:
                    number += 1
                    text = _norm_ws(line)
                    if text:
                        texts.append(text)
                        if limit is not None and len(texts) >= limit:
                            break
        except UnicodeDecodeError as err:
            raise _not_utf8(path, number, err) from None
        except _GZIP_ERRORS as err:
            raise _gzip_error(path, number, err) from None
        return texts

    def parse(record: dict[str, Any], unit: str, number: int) -> str | None:
        title = _text_value(record.get(cfg.title_column, _MISSING), cfg.title_column)
        description = ""
        if cfg.description_column:
            description = _text_value(
                record.get(cfg.description_column, _MISSING), cfg.description_column
            )
        return " ".join(part for part in (title, description) if part) or None

    # a file of descriptions alone is texts enough: the title is needed only without them
    need_title = not cfg.description_column
    wanted = _wanted_columns(cfg, need_id=False, need_title=need_title, need_tags=False)
    wanted = {
        col: req for col, req in wanted.items() if col in (cfg.title_column, cfg.description_column)
    }
    return list(_iter_parsed(path, cfg, wanted, parse, None))


# --------------------------------------------------------------------------- splits and vocabulary


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_products(
    products: Sequence[Product], valid_fraction: float, seed: int = 0, by_title: bool = False
) -> tuple[list[Product], list[Product]]:
    """(train, valid): a product goes to valid when a hash of (seed, id) falls below
    ``valid_fraction``, so the split depends neither on the order nor on the other products.
    ``by_title``: a hash of its title's ``near_duplicate_key`` instead (of its id when the key
    is empty), so that variants of one product (sizes, packs, colours in digits) fall on one
    side and valid does not measure the memory of their twins in train. Each part keeps the
    input order."""
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    train: list[Product] = []
    valid: list[Product] = []
    for product in products:
        key = (near_duplicate_key(product.title) or product.id) if by_title else product.id
        (valid if _unit_hash(seed, key) < valid_fraction else train).append(product)
    return train, valid


class TagVocab:
    """Tags and their training counts; row ``i`` of an encoded matrix marks ``tags[i]``."""

    def __init__(
        self,
        tags: Sequence[str],
        counts: Sequence[int] | np.ndarray,
        n_products: int | None = None,
    ) -> None:
        self.tags = [str(t) for t in tags]
        #: products the counts come from (for propensities); None when unknown
        self.n_products = n_products
        self.counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        if len(self.counts) != len(self.tags):
            raise ValueError(f"{len(self.tags)} tags but {len(self.counts)} counts")
        self.index = {tag: i for i, tag in enumerate(self.tags)}
        if len(self.index) != len(self.tags):
            dups = [t for t, n in Counter(self.tags).items() if n > 1]
            raise ValueError(f"repeated tags in the vocabulary: {dups[:5]}")

    @classmethod
    def from_products(cls, products: Iterable[Product], min_count: int = 1) -> TagVocab:
        """Tags of at least ``min_count`` products, by count (descending) then tag."""
        counts: Counter[str] = Counter()
        n_products = 0
        for product in products:
            counts.update(set(product.tags))
            n_products += 1
        kept = sorted(
            ((tag, n) for tag, n in counts.items() if n >= min_count), key=lambda x: (-x[1], x[0])
        )
        return cls([t for t, _ in kept], [n for _, n in kept], n_products)

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, tag: object) -> bool:
        return tag in self.index

    @functools.cached_property
    def folded(self) -> dict[str, int]:
        """``tag_key`` -> its column (the first, most frequent, of the tags that fold alike)."""
        out: dict[str, int] = {}
        for j, tag in enumerate(self.tags):
            out.setdefault(tag_key(tag), j)
        return out

    @functools.cached_property
    def keys(self) -> list[str]:
        """``tag_key`` of each tag, in vocabulary order."""
        return [tag_key(tag) for tag in self.tags]

    def matching(self, text: str) -> list[int]:
        """Columns of the tags that contain ``text`` in any case, width or Unicode form, in
        vocabulary order (most frequent first)."""
        key = tag_key(text)
        return [j for j, k in enumerate(self.keys) if key in k]

    def find(self, tag: str) -> int | None:
        """The column of ``tag``, else of a tag that differs from it only in case, width or
        Unicode form (a title's ``brand:HORNBY`` is the vocabulary's ``brand:Hornby``, a
        reviewer's ``品牌：华为`` its ``品牌:华为``), else None."""
        j = self.index.get(tag)
        return self.folded.get(tag_key(tag)) if j is None else j

    def variants(self) -> list[list[str]]:
        """Groups of tags that differ only in case (``brand:TOYLAND``, ``brand:Toyland``): to a
        reader one tag, to training as many, each learnt from its own products."""
        groups: dict[str, list[str]] = {}
        for tag in self.tags:
            groups.setdefault(tag_key(tag), []).append(tag)
        return [g for g in groups.values() if len(g) > 1]

    def __repr__(self) -> str:
        return f"TagVocab({len(self)} tags)"

    def encode(self, products: Iterable[Product | Sequence[str]]) -> sp.csr_matrix:
        """Multi-hot float32 matrix (products x tags); tags outside the vocabulary are ignored.
        Items may be Products or plain lists of tags."""
        indptr = [0]
        indices: list[int] = []
        for item in products:
            if isinstance(item, str):
                raise TypeError("encode takes Products or lists of tags, not a single string")
            tags = item.tags if isinstance(item, Product) else item
            row = sorted({self.index[t] for t in tags if t in self.index})
            indices.extend(row)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        return sp.csr_matrix(
            (data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
            shape=(len(indptr) - 1, len(self.tags)),
            dtype=np.float32,
        )

    def decode(self, row_indices: Iterable[int]) -> list[str]:
        return [self.tags[int(i)] for i in row_indices]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "tags": self.tags,
            "counts": [int(n) for n in self.counts],
            "n_products": self.n_products,
        }
        path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TagVocab:
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return cls(payload["tags"], payload["counts"], payload.get("n_products"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a tag vocabulary ({err})") from None


def bucketed_batches(
    lengths: list[int], batch_size: int, bucket_size: int, seed: int
) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within buckets, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * bucket_size
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def near_duplicate_key(title: str) -> str:
    """Titles that differ only in case, digits, punctuation or spacing share a key: such
    products (variants, sizes, packs) belong on one side of any split."""
    return " ".join(re.sub(r"[\W\d_]+", " ", title.lower()).split())


def title_groups(products: Sequence[Product]) -> int:
    """How many groups of near-duplicate titles ``products`` make: the most folds they split
    into (``grouped_folds``)."""
    return len({near_duplicate_key(p.title) for p in products})


def grouped_folds(products: Sequence[Product], k: int, seed: int) -> list[np.ndarray]:
    """Held-out indices of ``k`` folds, near-duplicate titles grouped (scikit-learn's
    GroupKFold); a ValueError when the titles make fewer than ``k`` groups."""
    from sklearn.model_selection import GroupKFold

    groups = [near_duplicate_key(p.title) for p in products]
    if (n_groups := len(set(groups))) < k:
        raise ValueError(f"{k} folds need {k} title groups; these products have {n_groups}")
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(products)), groups=groups)]
