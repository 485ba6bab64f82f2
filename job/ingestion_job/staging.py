"""Load staging: a repaired object's table data, checked and written to a local Parquet file.

Every cell is parsed here, alone, before the run's transaction: a cell whose data cannot be
read is refused with a one-line reason and its gap stays open, while the rest of the run is
committed. The store then reads only files that parsed.

CSV (``csv``, and ``csv-zip``: the one ``.csv`` inside a zip):

* With a header row (no field of the first line is a number), the header names the
  columns. Binance's kline header gets the kline types below.
* Without one, the file must have Binance's 12 kline columns (its older daily files have no
  header): they get the kline names and types. Any other headerless shape is refused.
* Every row must have as many fields as the first; values must fit their column's type.

Parquet (``parquet``) must be a readable Parquet file.
"""

from __future__ import annotations

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


class StagingError(RuntimeError):
    """The object does not hold what its load mode expects; the gap stays open with this reason."""


def stage(body: bytes, key: str, load: str, base: Path) -> tuple[str, str]:
    """Check the object's table data and write it as ``<base>.parquet``: (path, "parquet")."""
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
    pq.write_table(table, path)
    return str(path), "parquet"


def _csv_in_zip(body: bytes, key: str) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if not names:
                raise StagingError(f"{key}: the zip holds no .csv file")
            return zf.read(names[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise StagingError(f"{key}: not a zip file") from None


def read_csv(data: bytes, key: str) -> pa.Table:
    """The CSV as a typed Arrow table, by the rules in the module's docstring."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not first.strip():
        raise StagingError(f"{key}: empty CSV")
    fields = [f.strip().strip('"') for f in first.decode("utf-8", errors="replace").split(",")]
    header = not any(_is_number(f) for f in fields)
    if header:
        names = fields
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
