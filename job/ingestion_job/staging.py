"""Load staging: a repaired object's table data, checked and written to a local Parquet file.

Every cell is parsed here, alone, before the run's transaction: a cell whose data cannot be
read is refused with a one-line reason and its gap stays open, while the rest of the run is
committed. The store then reads only files that parsed.

CSV (``csv``, and ``csv-zip``: the zip must hold exactly one ``.csv`` member, named after the
key's file: ``BTCUSDT-1m-2026-11-30.csv`` in ``.../BTCUSDT-1m-2026-11-30.zip``):

* A UTF-8 byte-order mark is dropped. With a header row (no field of the first line is a
  number), the header names the columns, normalised (surrounding spaces and quotes
  dropped, lower case), so one file's odd header cannot add a column to ``loaded``.
  Binance's kline header gets the kline types below.
* Without one, the file must have Binance's 12 kline columns (its older daily files have no
  header): they get the kline names and types. Any other headerless shape is refused.
* Every row must have as many fields as the first; values must fit their column's type.

Parquet (``parquet``) must be a readable Parquet file.

A table with an ``open_time`` column (klines) is checked against its cell: every row's
``open_time`` (milliseconds, or microseconds as Binance's spot files since 2025) falls on
the cell's date (UTC), and is unique and increasing; with ``expect_rows`` (the spec's
``repair.expectRows``, or from the interval in the key's file name), the row count is
exactly that. An object that fails any check here is **quarantined** (:class:`StagingError`):
nothing of it is loaded, and its gap stays open with the check that failed.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import re
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import first_line

# Binance Vision kline CSV columns (spot and futures, daily and monthly files).
KLINE_COLUMNS = {
    "open_time": pa.int64(), "open": pa.float64(), "high": pa.float64(), "low": pa.float64(), "close": pa.float64(),
    "volume": pa.float64(), "close_time": pa.int64(), "quote_volume": pa.float64(), "count": pa.int64(),
    "taker_buy_volume": pa.float64(), "taker_buy_quote_volume": pa.float64(), "ignore": pa.float64(),
}


# Rows per day of a kline file, by the interval in its name (SYMBOL-1m-2026-11-30.zip).
INTERVAL_MINUTES = {"1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "2h": 120, "4h": 240, "6h": 360,
                    "8h": 480, "12h": 720, "1d": 1440}
_INTERVAL = re.compile(r"-(\d+[mhd])-\d{4}-\d{2}(-\d{2})?\.[A-Za-z]+$")  # a day's file or a month's
DAY_MS = 86_400_000


class StagingError(RuntimeError):
    """The object (fetched and verified) does not hold its cell's data as its load mode
    expects: it is quarantined. Nothing of it is loaded, and its gap stays open with cause
    ``quarantined`` and this reason."""


def rows_per_day(key: str) -> int | None:
    """The rows a full day of the kline file ``key`` holds, from the interval in its name
    (1440 for ``-1m-``); None when the name holds no interval."""
    m = _INTERVAL.search(key.rsplit("/", 1)[-1])
    return 1440 // INTERVAL_MINUTES[m.group(1)] if m and m.group(1) in INTERVAL_MINUTES else None


def expected_rows(key: str, exact: int | None, from_interval: bool, days: int = 1) -> int | None:
    """The row count the object ``key`` must have (the spec's ``repair.expectRows``, or with
    ``repair.expectRowsFromInterval`` the one its file name's interval gives for its ``days``:
    a month's archive holds every day of its month), or None."""
    if exact is not None:
        return exact
    per_day = rows_per_day(key) if from_interval else None
    return per_day * days if per_day is not None else None


def stage(body: bytes, key: str, load: str, base: Path, date: dt.date | None = None,
          expect_rows: int | None = None, last: dt.date | None = None) -> tuple[str, str]:
    """Check the object's table data and write it as ``<base>.parquet``: (path, "parquet").
    ``date``: the cell's date (``last``: its last day, for a month), which kline rows must fall
    on; ``expect_rows``: the exact row count."""
    path = base.with_suffix(".parquet")
    if load == "csv-zip":
        table = read_csv(_csv_in_zip(body, key), key)
    elif load == "csv":
        table = read_csv(body, key)
    elif load == "parquet":
        try:
            table = pq.read_table(io.BytesIO(body))
        except (pa.ArrowException, OSError) as e:
            raise StagingError(f"{key}: not a readable Parquet file: {first_line(e)}") from None
    else:
        raise StagingError(f"unknown load mode {load!r}")
    check_cell(table, key, date, expect_rows, last)
    pq.write_table(table, path)
    return str(path), "parquet"


def check_cell(table: pa.Table, key: str, date: dt.date | None, expect_rows: int | None,
               last: dt.date | None = None) -> None:
    """The checks of a table against its cell (module docstring): its rows on ``date`` (to
    ``last``, a monthly cell's last day)."""
    if expect_rows is not None and table.num_rows != expect_rows:
        raise StagingError(f"{key}: holds {table.num_rows} rows, expected {expect_rows}")
    if date is None or "open_time" not in table.column_names or table.num_rows == 0:
        return
    times = table.column("open_time")
    if not pa.types.is_integer(times.type):
        raise StagingError(f"{key}: open_time is {times.type}, not an integer time")
    if times.null_count:
        raise StagingError(f"{key}: open_time is empty in {times.null_count} row(s)")
    values = times.to_pylist()
    start = int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    scale = 1000 if max(values) >= 10**14 else 1  # microseconds (Binance spot since 2025) or milliseconds
    days = (last - date).days + 1 if last else 1
    lo, hi = start * scale, (start + days * DAY_MS) * scale
    outside = [v for v in values if not lo <= v < hi]
    if outside:
        first = dt.datetime.fromtimestamp(outside[0] / (1000 * scale), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        span = f"{date}..{last}" if last and last != date else str(date)
        raise StagingError(f"{key}: {len(outside)} row(s) have an open_time outside {span} (UTC), the first {first}")
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            what = "repeated" if values[i] == values[i - 1] else "out of order"
            raise StagingError(f"{key}: open_time {what} at row {i + 1} ({values[i]} after {values[i - 1]})")


def _csv_in_zip(body: bytes, key: str) -> bytes:
    expected = key.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".csv"
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            members = [n for n in zf.namelist() if not n.endswith("/")]
            csvs = [n for n in members if n.lower().endswith(".csv")]
            if len(csvs) != 1 or csvs[0].rsplit("/", 1)[-1] != expected:
                held = ", ".join(members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
                raise StagingError(f"{key}: the zip must hold exactly one .csv member, {expected}; it holds "
                                      f"{held or 'nothing'}")
            return zf.read(csvs[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise StagingError(f"{key}: not a zip file") from None


def read_csv(data: bytes, key: str) -> pa.Table:
    """The CSV as a typed Arrow table, by the rules in the module's docstring."""
    data = data.removeprefix(codecs.BOM_UTF8)
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not first.strip():
        raise StagingError(f"{key}: empty CSV")
    fields = [f.strip().strip('"').strip() for f in first.decode("utf-8", errors="replace").split(",")]
    header = not any(_is_number(f) for f in fields)
    if header:
        names = [f.lower() for f in fields]
        if len(set(names)) != len(names) or not all(names):
            raise StagingError(f"{key}: the header row has empty or repeated column names: {first[:120].decode(errors='replace')}")
        types = {n: KLINE_COLUMNS[n] for n in names if n in KLINE_COLUMNS}
    elif len(fields) == len(KLINE_COLUMNS):
        names, types = list(KLINE_COLUMNS), dict(KLINE_COLUMNS)
    else:
        raise StagingError(f"{key}: no header row and {len(fields)} columns: only Binance's {len(KLINE_COLUMNS)}-column "
                           "kline shape is read without a header")
    try:
        return pacsv.read_csv(io.BytesIO(data),
                              read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
                              convert_options=pacsv.ConvertOptions(column_types=types))
    except (pa.ArrowException, OSError) as e:  # name the column Arrow gives by number
        text = re.sub(r"In CSV column #(\d+)", lambda m: f"column {names[int(m.group(1))]}", first_line(e))
        raise StagingError(f"{key}: {text}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
