"""stage: a repaired object's table data checked and written as Parquet, or a one-line refusal."""

import datetime as dt
import io
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion_dev import sampledata
from ingestion_job.staging import KLINE_COLUMNS, StagingError, stage

DAY = dt.date(2026, 11, 22)


def zipped(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


def kline_csv(header: bool, rows: int = 5) -> str:
    """Binance's kline CSV, as its newer files (header row) and older ones (none) hold it."""
    with zipfile.ZipFile(io.BytesIO(sampledata.kline_zip("BTCUSDT", DAY, rows))) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    return text if header else text.split("\n", 1)[1]


@pytest.mark.parametrize("header", [True, False], ids=["with-header", "without-header"])
def test_both_binance_kline_shapes_stage_to_the_same_typed_table(tmp_path, header):
    path, fmt = stage(zipped({"BTCUSDT-1m-2026-11-22.csv": kline_csv(header)}), "k.zip", "csv-zip", tmp_path / "c")
    table = pq.read_table(path)
    assert fmt == "parquet" and table.num_rows == 5
    assert table.schema == pa.schema(list(KLINE_COLUMNS.items()))
    assert table.column("open_time")[0].as_py() == int(dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc).timestamp() * 1000)


def test_a_csv_with_a_header_names_its_own_columns(tmp_path):
    path, _ = stage(b"price,qty\n1.5,1\n2.5,2\n", "k.csv", "csv", tmp_path / "c")
    assert pq.read_table(path).to_pydict() == {"price": [1.5, 2.5], "qty": [1, 2]}


@pytest.mark.parametrize("body,problem", [
    (b"1700000000000,1,2,3,4,5,1700000059999,6,7,8,9\n", "no header row and 11 columns: only Binance's 12-column kline shape"),
    (b"1.5,2\n", "no header row and 2 columns"),
    (b"price,qty\n1.5,1\n2.5\n", "Expected 2 columns, got 1"),
    (b"open_time,open\nyesterday,1.5\n", "column open_time: CSV conversion error to int64: invalid value .yesterday."),
    (b"price,,qty\n1,2,3\n", "empty or repeated column names"),
    (b"\n", "empty CSV"),
], ids=["kline-11-columns", "two-columns-no-header", "ragged", "not-a-number-in-a-kline-column", "blank-header", "empty"])
def test_anything_else_is_refused_in_one_line(tmp_path, body, problem):
    with pytest.raises(StagingError, match=problem) as e:
        stage(body, "k.csv", "csv", tmp_path / "c")
    assert "\n" not in str(e.value) and str(e.value).startswith("k.csv: ")


@pytest.mark.parametrize("body,problem", [(b"not a zip", "k.zip: not a zip file"),
                                          (zipped({"readme.txt": "x"}), "k.zip: the zip holds no .csv file")])
def test_csv_zip_refuses_what_it_cannot_read(tmp_path, body, problem):
    with pytest.raises(StagingError, match=problem):
        stage(body, "k.zip", "csv-zip", tmp_path / "c")


def test_parquet_is_read_and_rewritten(tmp_path):
    buf = io.BytesIO()
    pq.write_table(pa.table({"price": [1.0], "qty": [3]}), buf)
    path, fmt = stage(buf.getvalue(), "k.parquet", "parquet", tmp_path / "c")
    assert fmt == "parquet" and pq.read_table(path).to_pydict() == {"price": [1.0], "qty": [3]}
    with pytest.raises(StagingError, match="k.parquet: not a readable Parquet file") as e:
        stage(b"raw bytes", "k.parquet", "parquet", tmp_path / "d")
    assert "\n" not in str(e.value)


def test_unknown_mode(tmp_path):
    with pytest.raises(StagingError, match="unknown load mode 'xml'"):
        stage(b"", "k", "xml", tmp_path / "c")
