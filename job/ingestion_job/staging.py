"""Load staging: a repaired object's table data written to a local file for DuckDB.

The store reads the staged file in the run's one transaction, so a load that fails
leaves nothing behind. Each mode refuses what it cannot read with a one-line reason.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path


class StagingError(RuntimeError):
    """The object does not hold what its load mode expects; the gap stays open with this reason."""


def stage(body: bytes, key: str, load: str, base: Path) -> tuple[str, str]:
    """Write the object's table data next to ``base``: (path, "csv" | "parquet")."""
    if load == "csv-zip":
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
                if not names:
                    raise StagingError(f"{key}: the zip holds no .csv file")
                path = base.with_suffix(".csv")
                path.write_bytes(zf.read(names[0]))
        except zipfile.BadZipFile:
            raise StagingError(f"{key}: not a zip file") from None
        return str(path), "csv"
    if load == "csv":
        path = base.with_suffix(".csv")
        path.write_bytes(body)
        return str(path), "csv"
    if load == "parquet":
        path = base.with_suffix(".parquet")
        path.write_bytes(body)
        return str(path), "parquet"
    raise StagingError(f"unknown load mode {load!r}")
