"""ingestion-dev is the one command line for the dev tools."""

from ingestion_dev import crdref
from ingestion_dev.cli import main


def test_crd_reference_prints_the_table_generated_from_the_crd(capsys):
    assert main(["crd-reference"]) == 0
    assert capsys.readouterr().out == crdref.table() + "\n"
