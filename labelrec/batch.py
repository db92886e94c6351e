"""Score catalog files in chunks: read, suggest tags, write, without holding the file in memory.

``score_file`` serves ``labelrec index`` and the MLflow ``batch`` step; the upload helpers below
serve ``POST /suggest_file`` (they raise ``ServiceError`` with the HTTP status to answer)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any

from labelrec.config import DataConfig
from labelrec.data import CatalogError, Product, check_catalog_file, iter_catalog, tag_string
from labelrec.errors import ServiceError
from labelrec.modeldir import disk_room, output_lock

logger = logging.getLogger(__name__)

Scorer = Callable[[list[Product]], list[list[dict[str, Any]]]]


def check_output_name(path: Path) -> None:
    """Refuse an output whose extension names no format ``TagWriter`` writes."""
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson", ".csv", ".parquet"):
        raise ValueError(
            f"{path}: output must be .jsonl (JSON Lines; also .json, .ndjson), .csv or .parquet"
        )


class TagWriter:
    """Streams rows to .jsonl, .csv or .parquet by the output file's extension."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.suffix = path.suffix.lower()
        check_output_name(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: Any = None
        self._csv: Any = None
        self._pq: Any = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        rows = [  # every tag says whether it is in the vocabulary, whoever scored it
            {**r, "tags": [{**t, "known": t.get("known", True)} for t in r["tags"]]} for r in rows
        ]
        if self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(rows, schema=_ARROW_SCHEMA())
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table)
            return
        if self._fh is None:
            self._fh = self.path.open("w", encoding="utf-8", newline="")
        if self.suffix == ".csv":
            import csv

            if self._csv is None:
                self._csv = csv.writer(self._fh)
                self._csv.writerow(["id", "title", "tags", "scores", "known"])
            for row in rows:
                self._csv.writerow(
                    [
                        row["id"],
                        row["title"],
                        tag_string([t["tag"] for t in row["tags"]]),
                        "|".join(f"{t['score']:.4f}" for t in row["tags"]),
                        "|".join("true" if t["known"] else "false" for t in row["tags"]),
                    ]
                )
        else:
            for row in rows:
                self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()

    @property
    def opened(self) -> bool:
        """Whether the file exists: written to at least once."""
        return self._pq is not None or self._fh is not None

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
        if not self.opened:
            self.write([])  # an empty input still gives a valid (empty) output file
            self.close()

    def abandon(self) -> None:
        """Close what was written, without creating the file when nothing was."""
        if self.opened:
            self.close()


def _ARROW_SCHEMA() -> Any:
    import pyarrow as pa

    tag = pa.struct([("tag", pa.string()), ("score", pa.float64()), ("known", pa.bool_())])
    return pa.schema([("id", pa.string()), ("title", pa.string()), ("tags", pa.list_(tag))])


def iter_scored(
    path: str | Path, cfg: DataConfig, scorer: Scorer, chunk_size: int = 1000
) -> Generator[list[dict[str, Any]], None, None]:
    """Chunks of ``{"id", "title", "tags": [{"tag", "score", "known"}, ...]}`` rows, in input
    order (``known`` false: a tag outside the model's vocabulary)."""
    for chunk in iter_catalog(path, cfg, require_tags=False, chunk_size=chunk_size):
        suggestions = scorer(chunk)
        yield [
            {"id": p.id, "title": p.title, "tags": tags}
            for p, tags in zip(chunk, suggestions, strict=True)
        ]


def check_score_paths(in_path: str | Path, out_path: str | Path) -> None:
    """What ``score_file`` refuses before it reads anything: a missing input, an output (or
    the partial file written before it) that is the input, also through a link, a directory or
    an unknown extension as the output."""
    src, dst = Path(in_path), Path(out_path)
    check_catalog_file(src)
    if dst.exists() and os.path.samefile(src, dst):
        raise ValueError(f"{out_path}: the output is the input {in_path}; write to another file")
    partial = partial_path(dst)
    if partial.exists() and os.path.samefile(src, partial):
        raise ValueError(
            f"{out_path}: its rows are written to {partial} until the last one, which is the "
            f"input {in_path}; write to another file"
        )
    if dst.is_dir():
        raise ValueError(f"{out_path}: is a directory; give the output file's name")
    check_output_name(dst)


def score_file(
    in_path: str | Path,
    out_path: str | Path,
    cfg: DataConfig,
    scorer: Scorer,
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score every product of ``in_path`` into ``out_path`` chunk by chunk; returns the count.

    The rows go to ``partial_path(out_path)`` first, which replaces ``out_path`` when every
    product is scored: a run that fails leaves an existing ``out_path`` as it was, and the rows
    scored before the error in the partial file (logged), or no partial file when there are none.
    An output that is the input (also through a link) is refused before anything is opened.
    """
    check_score_paths(in_path, out_path)
    dst = Path(out_path)
    with output_lock(dst):  # one writer of the partial file
        partial = partial_path(dst)
        writer = TagWriter(partial)
        n = 0
        try:
            for rows in iter_scored(in_path, cfg, scorer, chunk_size):
                # a full disk said as such, with the file (Python's and pyarrow's errno alone)
                with disk_room(partial, "the scored products"):
                    writer.write(rows)
                n += len(rows)
                if progress is not None:
                    progress(len(rows))
            with disk_room(partial, "the scored products"):  # parquet's footer
                writer.close()
        except BaseException:
            unclosed = ""
            try:
                writer.abandon()
            except Exception as err:  # the first error is the one raised; on a full disk the
                # close fails too, and the file's last rows (or parquet's footer) are missing
                unclosed = f" (not closed: {err}; its end may be cut off)"
            if n:
                logger.warning(
                    "%d products scored before the error are in %s%s; %s is unchanged",
                    n,
                    partial,
                    unclosed,
                    dst,
                )
            else:
                partial.unlink(missing_ok=True)
            raise
        os.replace(partial, dst)
    return n


def partial_path(path: Path) -> Path:
    """Where ``score_file`` writes ``path``'s rows until the last one: ``tags.partial.jsonl``."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


# ----------------------------------------------------------------------------- uploads

INPUT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet", ".pq")
OUTPUT_SUFFIXES = {".parquet": ".parquet", ".pq": ".parquet", ".csv": ".csv", ".tsv": ".csv"}
MEDIA_TYPES = {".parquet": "application/vnd.apache.parquet", ".csv": "text/csv"}


def upload_suffix(filename: str) -> str:
    """The catalog format of an uploaded file's name (``.csv``, ``.jsonl.gz``, ...); 415 for
    any other."""
    name = filename.lower()
    gz = name.endswith(".gz")
    suffix = Path(name[:-3] if gz else name).suffix
    if suffix not in INPUT_SUFFIXES or (gz and suffix in (".parquet", ".pq")):
        raise ServiceError(
            415,
            f"{filename or 'the upload'}: expected a .jsonl, .json, .csv, .tsv or .parquet file "
            "(.gz allowed for text formats)",
        )
    return suffix + (".gz" if gz else "")


def gunzip_capped(source: Any, path: Path, shown: str, max_bytes: int, setting: str = "") -> int:
    """Decompress the gzip stream ``source`` into ``path``, counting bytes as they come: past
    ``max_bytes`` is a 413 before more is written (a small .gz can expand a thousandfold; the
    message names ``setting``, the cap's). Returns the decompressed size."""
    total = 0
    named = f" ({setting})" if setting else ""
    try:
        with gzip.GzipFile(fileobj=source, mode="rb") as gz, path.open("wb") as out:
            while chunk := gz.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise ServiceError(
                        413,
                        f"{shown}: over the upload cap of {max_bytes >> 20} MB{named} once"
                        " decompressed; split the catalog or use `labelrec index` for large files",
                    )
                out.write(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ServiceError(400, f"{shown}: not a valid gzip file ({err})") from None
    return total


def parquet_capped(path: Path, shown: str, max_bytes: int, setting: str = "") -> int:
    """The bytes a Parquet upload's data take once decoded; past ``max_bytes`` a 413 (naming
    ``setting``), told before any column is decoded in full. A few KB of Parquet can stand for
    gigabytes: compressed pages (their uncompressed sizes are in the footer) and dictionary
    pages, where one long value is repeated by index in every row (counted here from the
    dictionary and its indices, read without expanding them)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    named = f" ({setting})" if setting else ""

    def over(total: int) -> ServiceError:
        return ServiceError(
            413,
            f"{shown}: over the upload cap of {max_bytes >> 20} MB{named} once decoded"
            f" ({total >> 20} MB or more); split the catalog or use `labelrec index` for large"
            " files",
        )

    def decoded(array: pa.Array) -> int:
        if pa.types.is_dictionary(array.type):
            values = array.dictionary
            if pa.types.is_string(values.type) or pa.types.is_binary(values.type):
                counts = pc.take(pc.binary_length(values), array.indices)
                return int(pc.sum(counts).as_py() or 0) + array.indices.nbytes
            return decoded(array.dictionary_decode())
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            return decoded(array.flatten()) + array.offsets.nbytes
        return array.nbytes

    try:
        meta = pq.read_metadata(path)  # the footer alone
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        total = sum(g.total_byte_size for g in groups)
        if total > max_bytes:
            raise over(total)
        texts = [
            meta.schema.column(j).path
            for j in range(meta.num_columns)
            if meta.schema.column(j).physical_type == "BYTE_ARRAY"
        ]
        pfile = pq.ParquetFile(path, read_dictionary=texts)
        total = 0
        for i in range(meta.num_row_groups):
            for column in pfile.read_row_group(i).columns:
                total += sum(decoded(chunk) for chunk in column.chunks)
                if total > max_bytes:
                    raise over(total)
    except (pa.ArrowException, OSError) as err:
        raise ServiceError(400, f"{shown}: cannot read Parquet: {err}") from None
    return total


def check_catalog(path: Path, cfg: DataConfig, shown: str) -> int:
    """Parse the whole upload once so a bad row is a 400 before any output is sent; returns
    the number of products."""
    n = 0
    try:
        for chunk in iter_catalog(path, cfg, require_tags=False, chunk_size=4096):
            n += len(chunk)
    except (CatalogError, ValueError, UnicodeDecodeError, OSError) as err:
        raise ServiceError(400, str(err).replace(str(path), shown)) from None
    except Exception as err:  # pyarrow and csv raise their own types on garbage
        raise ServiceError(
            400, f"{shown}: unreadable catalog ({type(err).__name__}: {err})"
        ) from None
    return n


async def stream_scored(
    path: Path,
    workdir: Path,
    cfg: DataConfig,
    suffix: str,
    scorer: Scorer,
    chunk_size: int,
    on_close: Callable[[], Any] | None = None,
) -> AsyncIterator[bytes]:
    """Score ``path`` chunk by chunk and yield the output file's bytes (format by ``suffix``)
    as they are written; ``workdir`` is removed at the end, also when the client goes away,
    and then ``on_close`` is called."""
    out_path = workdir / f"scored{suffix}"
    writer = TagWriter(out_path)
    chunks = iter_scored(path, cfg, scorer, chunk_size=chunk_size)
    done = object()
    reader = None
    writer_open, writing = True, False
    try:
        while True:
            rows = await asyncio.to_thread(next, chunks, done)
            if rows is done:
                break
            try:
                await asyncio.to_thread(writer.write, rows)
            except asyncio.CancelledError:
                writing = True  # the client went away: the write runs on in its thread
                raise
            if reader is None and out_path.exists():
                reader = out_path.open("rb")
            if reader is not None:
                data = reader.read()
                if data:
                    yield data
        writer.close()
        writer_open = False
        if reader is None:
            reader = out_path.open("rb")
        data = reader.read()
        if data:
            yield data
    finally:  # also when the client goes away mid-stream
        try:
            # a client gone while a chunk is scored in its thread: the generator is still running
            # there ("generator already executing"); it ends when garbage-collected
            with contextlib.suppress(ValueError):
                chunks.close()
            if reader is not None:
                reader.close()
            if writer_open and not writing:  # the file is deleted below: its handle goes first
                with contextlib.suppress(Exception):
                    writer.abandon()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if on_close is not None:
                on_close()
