"""stage: a repaired object's table data checked and written as Parquet, or a one-line refusal."""

import datetime as dt
import io
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion_dev import sampledata
from ingestion_job.staging import KLINE_COLUMNS, StagingError, expected_rows, rows_per_day, stage

DAY = dt.date(2026, 11, 22)


zipped = sampledata.zipped


def kline_csv(header: bool, rows: int = 5) -> str:
    """Binance's kline CSV, as its newer files (header row) and older ones (none) hold it."""
    with zipfile.ZipFile(io.BytesIO(sampledata.kline_zip("BTCUSDT", DAY, rows))) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    return text if header else text.split("\n", 1)[1]


@pytest.mark.parametrize("header", [True, False], ids=["with-header", "without-header"])
def test_both_binance_kline_shapes_stage_to_the_same_typed_table(tmp_path, header):
    path, fmt = stage(zipped({"BTCUSDT-1m-2026-11-22.csv": kline_csv(header)}), "x/BTCUSDT-1m-2026-11-22.zip", "csv-zip",
                      tmp_path / "c", DAY)
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
                                          (zipped({"readme.txt": "x"}), "k.zip: the zip must hold exactly one .csv member, k.csv; it holds readme.txt")])
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


# A load is checked against its cell: the zip's member, the header, the rows' dates ------------
KEY = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2026-11-22.zip"


def kline_rows(day: dt.date, times: list[int] | None = None, rows: int = 5) -> str:
    """Kline CSV text (with header) whose open_time values are ``times`` (ms), else the day's first minutes."""
    text = kline_csv(True, rows) if day == DAY else \
        zipfile.ZipFile(io.BytesIO(sampledata.kline_zip("BTCUSDT", day, rows))).read(f"BTCUSDT-1m-{day}.csv").decode()
    if times is None:
        return text
    header, *lines = text.strip().split("\n")
    return "\n".join([header, *(",".join([str(t), *line.split(",")[1:]]) for t, line in zip(times, lines))]) + "\n"


@pytest.mark.parametrize("members,held", [
    ({"BTCUSDT-1m-2026-11-21.csv": kline_rows(DAY)}, "BTCUSDT-1m-2026-11-21.csv"),
    ({"BTCUSDT-1m-2026-11-22.csv": kline_rows(DAY), "BTCUSDT-1m-2026-11-23.csv": kline_rows(DAY)},
     "BTCUSDT-1m-2026-11-22.csv, BTCUSDT-1m-2026-11-23.csv"),
], ids=["another-days-member", "two-members"])
def test_a_zip_must_hold_exactly_its_cells_member(tmp_path, members, held):
    with pytest.raises(StagingError) as e:
        stage(zipped(members), KEY, "csv-zip", tmp_path / "c", DAY)
    assert str(e.value) == f"{KEY}: the zip must hold exactly one .csv member, BTCUSDT-1m-2026-11-22.csv; it holds {held}"


def test_rows_of_another_day_are_quarantined_even_under_the_right_name(tmp_path):
    yesterday = kline_rows(DAY - dt.timedelta(days=1))
    with pytest.raises(StagingError, match=r"5 row\(s\) have an open_time outside 2026-11-22 \(UTC\), the first 2026-11-21T00:00:00Z"):
        stage(zipped({"BTCUSDT-1m-2026-11-22.csv": yesterday}), KEY, "csv-zip", tmp_path / "c", DAY)


def test_open_time_must_be_unique_and_increasing(tmp_path):
    start = int(dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc).timestamp() * 1000)
    for times, problem in (([start, start + 60_000, start + 60_000, start + 180_000, start + 240_000], "repeated at row 3"),
                           ([start, start + 120_000, start + 60_000, start + 180_000, start + 240_000], "out of order at row 3")):
        with pytest.raises(StagingError, match=f"open_time {problem}"):
            stage(zipped({"BTCUSDT-1m-2026-11-22.csv": kline_rows(DAY, times)}), KEY, "csv-zip", tmp_path / "c", DAY)


def test_microsecond_open_times_of_the_day_are_accepted(tmp_path):
    start = int(dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    times = [start + i * 60_000_000 for i in range(5)]
    path, _ = stage(zipped({"BTCUSDT-1m-2026-11-22.csv": kline_rows(DAY, times)}), KEY, "csv-zip", tmp_path / "c", DAY)
    assert pq.read_table(path).column("open_time").to_pylist() == times


def test_a_bom_and_an_odd_header_name_the_same_columns(tmp_path):
    text = kline_rows(DAY)
    header, rest = text.split("\n", 1)
    odd = "\ufeff" + ",".join(f' "{n.upper()}" ' for n in header.split(",")) + "\n" + rest
    path, _ = stage(odd.encode(), "k.csv", "csv", tmp_path / "c", DAY)
    table = pq.read_table(path)
    assert table.schema == pa.schema(list(KLINE_COLUMNS.items())) and table.num_rows == 5


def test_the_row_count_is_checked_when_the_spec_says_what_to_expect(tmp_path):
    assert [rows_per_day(k) for k in (KEY, "x/ETHUSDT-1h-2026-11-22.zip", "x/ETHUSDT-1d-2026-11-22.zip", "x/2026-11-22.zip")] == [
        1440, 24, 1, None]
    assert expected_rows(KEY, None, True) == 1440 and expected_rows(KEY, 5, False) == 5 and expected_rows(KEY, None, False) is None
    body = zipped({"BTCUSDT-1m-2026-11-22.csv": kline_rows(DAY)})
    with pytest.raises(StagingError, match="holds 5 rows, expected 1440"):
        stage(body, KEY, "csv-zip", tmp_path / "c", DAY, expected_rows(KEY, None, True))
    path, _ = stage(body, KEY, "csv-zip", tmp_path / "d", DAY, expected_rows(KEY, 5, False))
    assert pq.read_table(path).num_rows == 5
