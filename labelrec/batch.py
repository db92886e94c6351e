"""Score catalog files in chunks: read, suggest tags, write, without holding the file in memory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from labelrec.config import DataConfig
from labelrec.data import Product, iter_catalog

Scorer = Callable[[list[Product]], list[list[dict[str, Any]]]]


class TagWriter:
    """Streams rows to .jsonl, .csv or .parquet by the output file's extension."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.suffix = path.suffix.lower()
        if self.suffix not in (".jsonl", ".json", ".ndjson", ".csv", ".parquet"):
            raise ValueError(f"{path}: output must be .jsonl, .csv or .parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: Any = None
        self._csv: Any = None
        self._pq: Any = None

    def write(self, rows: list[dict[str, Any]]) -> None:
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
                self._csv.writerow(["id", "title", "tags", "scores"])
            for row in rows:
                self._csv.writerow(
                    [
                        row["id"],
                        row["title"],
                        "|".join(t["tag"] for t in row["tags"]),
                        "|".join(f"{t['score']:.4f}" for t in row["tags"]),
                    ]
                )
        else:
            for row in rows:
                self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
        if self._pq is None and self._fh is None:
            self.write([])  # an empty input still gives a valid (empty) output file
            self.close()


def _ARROW_SCHEMA() -> Any:
    import pyarrow as pa

    tag = pa.struct([("tag", pa.string()), ("score", pa.float64())])
    return pa.schema([("id", pa.string()), ("title", pa.string()), ("tags", pa.list_(tag))])


def iter_scored(
    path: str | Path, cfg: DataConfig, scorer: Scorer, chunk_size: int = 1000
) -> Iterator[list[dict[str, Any]]]:
    """Chunks of ``{"id", "title", "tags": [{"tag", "score"}, ...]}`` rows, in input order."""
    for chunk in iter_catalog(path, cfg, require_tags=False, chunk_size=chunk_size):
        suggestions = scorer(chunk)
        yield [
            {"id": p.id, "title": p.title, "tags": tags}
            for p, tags in zip(chunk, suggestions, strict=True)
        ]


def score_file(
    in_path: str | Path,
    out_path: str | Path,
    cfg: DataConfig,
    scorer: Scorer,
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score every product of ``in_path`` into ``out_path`` chunk by chunk; returns the count.

    Rows already written stay written if a later chunk fails. An output that is the input (also
    through a link) is refused before anything is opened: writing it would truncate the input.
    """
    src, dst = Path(in_path), Path(out_path)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise ValueError(f"{out_path}: the output is the input {in_path}; write to another file")
    writer = TagWriter(dst)
    n = 0
    try:
        for rows in iter_scored(in_path, cfg, scorer, chunk_size):
            writer.write(rows)
            n += len(rows)
            if progress is not None:
                progress(len(rows))
    finally:
        writer.close()
    return n
