"""User-product interactions (``user_id, product_id[, weight, timestamp]``) and the per-user
signals built from them: weighted histories, item popularity and item-item co-occurrence."""

from __future__ import annotations

import csv
import io
import math
import numbers
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

REQUIRED = ("user_id", "product_id")
OPTIONAL = ("weight", "timestamp")
SECONDS_PER_DAY = 86400.0
EXPECTED = (
    "expected a CSV/TSV file with a header row user_id,product_id[,weight,timestamp] and one"
    " interaction per line, or a Parquet file with those columns"
)


@dataclass
class Interactions:
    """Parallel arrays, one entry per interaction; ``timestamps`` in seconds since the epoch."""

    user_ids: np.ndarray
    product_ids: np.ndarray
    weights: np.ndarray
    timestamps: np.ndarray | None = None
    source: str = "<records>"

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def read(cls, path: str | Path) -> Interactions:
        """Read a CSV/TSV (optionally .gz) with a header row, or a Parquet file (by its
        extension or its first bytes)."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(
                f"interactions file {path} is a directory; give a CSV, TSV or Parquet file"
            )
        if not path.is_file():
            raise FileNotFoundError(f"interactions file {path} does not exist")
        suffixes = [s.lower() for s in path.suffixes]
        parquet = bool(suffixes) and suffixes[-1] in (".parquet", ".pq")
        try:
            with path.open("rb") as fh:
                head = fh.read(4)
        except OSError as err:  # unreadable (permissions): one error, as a bad file gets
            raise ValueError(f"{path}: cannot read interactions ({err.strerror or err})") from None
        parquet = parquet or head == b"PAR1"  # a Parquet file named otherwise: by its magic
        if not parquet and _looks_like_json(path):
            raise ValueError(f"{path}, line 1: this looks like JSON, not a header row; {EXPECTED}")
        sep = "\t" if ".tsv" in suffixes else ","
        if not parquet:
            _check_first_record(path, sep)
        try:
            if parquet:
                frame = pd.read_parquet(path)
                first_line = 1  # Parquet rows are numbered from 1
            else:
                frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
                first_line = 2  # header on line 1
        except UnicodeDecodeError as err:
            raise ValueError(_not_utf8(path, err)) from None
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: no interactions (the file is empty); {EXPECTED}") from None
        except pd.errors.ParserError as err:
            raise ValueError(_unparsable(path, err)) from None
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read interactions ({err})") from None
        if len(frame) == 0:
            what = "no rows" if parquet else "only a header"
            raise ValueError(f"{path}: no interactions ({what}); {EXPECTED}")
        lines = None if parquet else (lambda: _record_lines(path, sep))
        return cls._from_frame(frame, str(path), first_line, lines)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> Interactions:
        """From dicts with ``user_id``, ``product_id`` and optional ``weight``/``timestamp``."""
        rows = list(records)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"interaction {i}: expected an object, got {type(row).__name__}")
        frame = pd.DataFrame(rows, columns=list(REQUIRED + OPTIONAL)).dropna(axis=1, how="all")
        return cls._from_frame(frame, "<records>", 0)

    @classmethod
    def _from_frame(
        cls,
        frame: pd.DataFrame,
        source: str,
        first_line: int,
        lines: Any = None,
    ) -> Interactions:
        """``lines``: a function giving each record's physical line (read only for an error)."""
        unit = "line" if first_line == 2 else ("row" if first_line == 1 else "interaction")
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{source}: missing column(s) {', '.join(missing)}; found "
                f"{', '.join(map(str, frame.columns)) or 'none'} (expected user_id, product_id"
                "[, weight, timestamp])"
            )

        def where(i: int, column: str) -> str:
            number = int(i) + first_line
            if lines is not None:  # blank lines and quoted line breaks: count the file's lines
                found = lines()
                number = found[int(i)] if int(i) < len(found) else number
            return f"{source}, {unit} {number}, field '{column}'"

        ids = {}
        for column in REQUIRED:
            values = frame[column]
            text = values.astype(str).str.strip()
            bad = values.isna() | (text == "")  # a missing cell; "nan" is an id like any other
            if bad.any():
                raise ValueError(f"{where(np.flatnonzero(bad.to_numpy())[0], column)}: empty id")
            ids[column] = text.to_numpy(dtype=object)
        n = len(frame)
        weights = np.ones(n, dtype=np.float64)
        if "weight" in frame.columns:
            raw = frame["weight"]
            weights = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(weights) | (weights < 0)
            if bad.any():
                i = np.flatnonzero(bad)[0]
                value = raw.iloc[i]
                value = value.item() if isinstance(value, np.generic) else value  # not np.float64()
                raise ValueError(f"{where(i, 'weight')}: {value!r} is not a number >= 0")
        timestamps = None
        if "timestamp" in frame.columns:
            timestamps = _parse_timestamps(frame["timestamp"], where)
        return cls(ids["user_id"], ids["product_id"], weights, timestamps, source)

    def users(self) -> list[str]:
        return sorted(set(self.user_ids.tolist()))


def _open_text_bytes(path: Path) -> Any:
    """The file as binary lines, decompressed as pandas would (by extension)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    if suffix == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    if suffix == ".xz":
        import lzma

        return lzma.open(path, "rb")
    return path.open("rb")


def _csv_records(path: Path, sep: str) -> Iterable[tuple[int, list[str]]]:
    """(the physical line a record ends on, its fields) of each non-blank record, as pandas
    reads them (a quoted field may hold line breaks; blank lines are skipped)."""
    with _open_text_bytes(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter=sep)
        for record in reader:
            if record:
                yield reader.line_num, record


def _record_lines(path: Path, sep: str) -> list[int]:
    """The physical line of each data record (the header left out)."""
    return [line for line, _ in _csv_records(path, sep)][1:]


def _check_first_record(path: Path, sep: str) -> None:
    """A first data line with more fields than the header: pandas would take its first column
    for a row index and shift every column silently (later lines are its tokenizer's error)."""
    header = first = None
    try:
        for line, record in _csv_records(path, sep):
            if header is None:
                header = record
                continue
            first = (line, record)
            break
    except (csv.Error, UnicodeDecodeError):
        return  # pandas' own reading names it
    if header is not None and first is not None and len(first[1]) > len(header):
        raise ValueError(
            f"{path}, line {first[0]}: {len(first[1])} fields where the header has"
            f" {len(header)}; {EXPECTED}"
        )


def _not_utf8(path: Path, err: UnicodeDecodeError) -> str:
    """Name the first line that is not UTF-8 (decoding line by line)."""
    try:
        with _open_text_bytes(path) as f:
            for number, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    byte = line[bad.start : bad.start + 1].hex()
                    return (
                        f"{path}, line {number}: not UTF-8 text (byte 0x{byte} at byte"
                        f" {bad.start + 1} of the line); save the file as UTF-8"
                    )
    except OSError:
        pass
    return f"{path}: not UTF-8 text ({err}); save the file as UTF-8"


def _looks_like_json(path: Path) -> bool:
    """Whether the file starts like JSON or JSON Lines (``{`` or ``[``)."""
    try:
        with _open_text_bytes(path) as f:
            head = f.read(64)
    except (OSError, EOFError, ValueError):
        return False
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith((b"{", b"["))


def _unparsable(path: Path, err: Exception) -> str:
    """pandas' tokenizer error as the file, the line and the expected columns."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if found:
        expected, line, saw = found.groups()
        return f"{path}, line {line}: {saw} fields where the header has {expected}; {EXPECTED}"
    return f"{path}: cannot read interactions ({err}); {EXPECTED}"


def _parse_timestamps(values: pd.Series, where: Any) -> np.ndarray:
    """Epoch seconds from numbers (seconds; by their size milliseconds above 1e11, microseconds
    above 1e14, nanoseconds above 1e17; eight-digit numbers that are all dates are YYYYMMDD),
    date-time strings (ISO 8601, else the one format
    pandas reads in the column's first date, month first where a date could be either) or a
    date-time column (Parquet). A missing or unreadable time is an error naming its line."""
    epoch = pd.Timestamp(0, tz="UTC")
    if pd.api.types.is_datetime64_any_dtype(values):  # to_numeric would give its raw ticks
        parsed = pd.to_datetime(values, utc=True)
        missing = np.flatnonzero(parsed.isna().to_numpy())
        if missing.size:
            raise ValueError(f"{where(int(missing[0]), 'timestamp')}: no time (null)")
        return (parsed - epoch).dt.total_seconds().to_numpy(dtype=np.float64)
    missing = np.flatnonzero((values.isna() | (values.astype(str).str.strip() == "")).to_numpy())
    if missing.size:
        raise ValueError(f"{where(int(missing[0]), 'timestamp')}: no time (empty)")
    numeric = pd.to_numeric(values, errors="coerce")
    is_number = numeric.notna().to_numpy()
    out = numeric.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)  # written below
    if is_number.any():
        given = out[is_number]
        if np.all((given >= 1e7) & (given < 1e8) & (given == np.floor(given))):
            # eight digits: dates written YYYYMMDD (as epoch seconds they would all fall in
            # 1970-1973), when every one of them is such a date
            days = pd.to_datetime(
                pd.Series(given.astype(np.int64).astype(str)),
                format="%Y%m%d",
                errors="coerce",
                utc=True,
            )
            if days.notna().all():
                out[is_number] = (days - epoch).dt.total_seconds().to_numpy(dtype=np.float64)
    size = np.abs(out)
    out = np.select([size > 1e17, size > 1e14, size > 1e11], [out / 1e9, out / 1e6, out / 1e3], out)
    if not is_number.all():
        dates = values[~is_number].astype(str)
        parsed = pd.to_datetime(dates, errors="coerce", utc=True, format="ISO8601")
        if parsed.isna().any():  # one format for the whole column: no date read two ways
            with warnings.catch_warnings():  # "could not infer format": the error below says
                warnings.simplefilter("ignore", UserWarning)
                parsed = pd.to_datetime(dates, errors="coerce", utc=True)
        bad = parsed.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(~is_number)[np.flatnonzero(bad)[0]])
            raise ValueError(
                f"{where(i, 'timestamp')}: {values.iloc[i]!r} is neither epoch seconds nor a date"
                " in the column's format (ISO 8601, or that of its first date)"
            )
        out[~is_number] = (parsed - epoch).dt.total_seconds().to_numpy(dtype=np.float64)
    infinite = np.flatnonzero(~np.isfinite(out))
    if infinite.size:
        i = int(infinite[0])
        raise ValueError(f"{where(i, 'timestamp')}: {values.iloc[i]!r} is no time")
    return out


class UserSignals:
    """Interactions mapped onto index rows: per-user histories, popularity, co-occurrence.

    Interactions with products missing from the index are dropped (``n_dropped``). With
    ``half_life_days`` each interaction's weight halves every that many days: before the newest
    interaction in the data for popularity, before the user's own newest in a history (whose
    relative weights are what counts: a history years old keeps them, where decay from the
    data's newest would take them below the smallest float).
    """

    def __init__(
        self,
        interactions: Interactions,
        row_of: dict[str, int],
        n_products: int,
        half_life_days: float | None = None,
    ) -> None:
        self.interactions = interactions
        rows = np.asarray([row_of.get(p, -1) for p in interactions.product_ids], dtype=np.int64)
        known = rows >= 0
        self.n_dropped = int((~known).sum())
        weights = interactions.weights.astype(np.float64)[known]
        users = interactions.user_ids[known]
        self.user_index: dict[str, int] = {}
        user_rows = np.fromiter(
            (self.user_index.setdefault(u, len(self.user_index)) for u in users),
            dtype=np.int64,
            count=len(users),
        )
        n_users = len(self.user_index)

        def summed(values: np.ndarray) -> sp.csr_matrix:
            matrix = sp.csr_matrix((values, (user_rows, rows[known])), shape=(n_users, n_products))
            matrix.sum_duplicates()
            return matrix

        #: users x products, summed (decayed) weights
        self.matrix = summed(weights)
        #: the same, each user's decayed from their own newest interaction (``history``)
        self.histories = self.matrix
        if half_life_days is not None:
            if (
                isinstance(half_life_days, bool)
                or not isinstance(half_life_days, numbers.Real)
                or not math.isfinite(half_life_days)
                or half_life_days <= 0
            ):
                raise ValueError(
                    f"half_life_days must be a finite number > 0, got {half_life_days}"
                )
            if interactions.timestamps is None:
                raise ValueError(f"{interactions.source}: time decay needs a 'timestamp' column")
            stamps = interactions.timestamps[known]
            user_newest = np.full(n_users, -np.inf)
            np.maximum.at(user_newest, user_rows, stamps)
            days = SECONDS_PER_DAY * half_life_days
            data_age = stamps.max(initial=0) - stamps
            self.matrix = summed(weights * np.power(0.5, data_age / days))
            user_age = user_newest[user_rows] - stamps
            self.histories = summed(weights * np.power(0.5, user_age / days))
        binary = self.matrix.copy()
        binary.data[:] = 1.0
        self.binary = binary
        self.binary_t = binary.T.tocsr()
        self.popularity = np.asarray(self.matrix.sum(axis=0)).ravel().astype(np.float32)
        self.n_users_of = np.asarray(binary.sum(axis=0)).ravel()

    def history(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, weights) of a user's products; empty for unknown users. The weights stay in
        float64: decayed over years they are far below float32's smallest number."""
        u = self.user_index.get(str(user))
        if u is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        lo, hi = self.histories.indptr[u], self.histories.indptr[u + 1]
        return self.histories.indices[lo:hi].astype(np.int64), self.histories.data[lo:hi].copy()

    def cooccurrence(
        self, rows: Sequence[int], weights: Sequence[float], user: str | None = None
    ) -> tuple[np.ndarray, int]:
        """Item-item co-occurrence scores of all products for a history, and how many other
        users support them. Products bought by the same users score higher; each product's
        count is divided by sqrt(its number of users) to damp sheer popularity."""
        n_products = self.matrix.shape[1]
        h = np.zeros(n_products, dtype=np.float64)
        np.add.at(h, np.asarray(rows, dtype=np.int64), np.asarray(weights, dtype=np.float64))
        shared = self.binary @ h  # per user: how much of the history they share
        u = self.user_index.get(str(user)) if user is not None else None
        if u is not None:
            shared[u] = 0.0
        support = int(np.count_nonzero(shared))
        if support == 0:
            return np.zeros(n_products, dtype=np.float32), 0
        scores = self.binary_t @ shared
        scores = scores / np.sqrt(np.maximum(self.n_users_of, 1.0))
        return scores.astype(np.float32), support
