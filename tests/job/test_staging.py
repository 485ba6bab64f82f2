"""stage: a repaired object's table data as a local file, or a one-line refusal."""

import io
import zipfile

import pytest

from ingestion_job.staging import StagingError, stage


def zipped(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


def test_csv_zip_stages_the_csv_inside(tmp_path):
    path, fmt = stage(zipped({"BTC-1m-2026-11-22.csv": "a,b\n1,2\n"}), "k.zip", "csv-zip", tmp_path / "BTC-2026-11-22")
    assert fmt == "csv" and open(path).read() == "a,b\n1,2\n"


@pytest.mark.parametrize("body,problem", [(b"not a zip", "k.zip: not a zip file"),
                                          (zipped({"readme.txt": "x"}), "k.zip: the zip holds no .csv file")])
def test_csv_zip_refuses_what_it_cannot_read(tmp_path, body, problem):
    with pytest.raises(StagingError, match=problem):
        stage(body, "k.zip", "csv-zip", tmp_path / "c")


@pytest.mark.parametrize("load,fmt", [("csv", "csv"), ("parquet", "parquet")])
def test_csv_and_parquet_are_staged_as_they_are(tmp_path, load, fmt):
    path, got = stage(b"raw bytes", "k", load, tmp_path / "c")
    assert got == fmt and path.endswith(f".{fmt}") and open(path, "rb").read() == b"raw bytes"


def test_unknown_mode(tmp_path):
    with pytest.raises(StagingError, match="unknown load mode 'xml'"):
        stage(b"", "k", "xml", tmp_path / "c")
