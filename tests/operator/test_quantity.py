"""quantity: resource quantities written as the API server stores them, so a rendered
CronJob compares equal to the one read back (no write on every reconcile)."""

import pytest
from hypothesis import given, strategies as st

from ingestion_operator.quantity import QuantityError, canonical, value

# Each pair is what apimachinery v0.36.3's ParseQuantity(...).String() printed for the input
# (a 20-line Go program over the module cache; 3,000 random quantities also agreed).
SERVER = [
    ("1024Mi", "1Gi"), ("1000Mi", "1000Mi"), ("0.5", "500m"), ("2000m", "2"), ("1.5Gi", "1536Mi"), ("100m", "100m"),
    ("250m", "250m"), ("1e3", "1e3"), ("1k", "1k"), ("12e6", "12e6"), ("1Ki", "1Ki"), ("0.5Ki", "512"),
    ("1023Ki", "1023Ki"), ("1536", "1536"), ("0.1Gi", "107374182400m"), ("2Gi", "2Gi"), ("512Mi", "512Mi"), ("1", "1"),
    ("0", "0"), ("0Mi", "0"), ("1.5", "1500m"), ("3.25", "3250m"), ("1n", "1n"), ("0.0000000001", "1n"), ("1E3", "1E3"),
    ("1e-3", "1e-3"), ("+1Gi", "+1Gi"), ("-1Gi", "-1Gi"), ("1.", "1."), (".5", "500m"), ("10G", "10G"), ("1000k", "1M"),
    ("1000000", "1M"), ("1048576", "1048576"), ("128974848", "128974848"), ("129e6", "129e6"), ("1G", "1G"),
    ("1500M", "1500M"), ("0.25Mi", "256Ki"), ("7Ti", "7Ti"), ("1024", "1024"), ("999", "999"), ("1000", "1k"),
    ("1001m", "1001m"), ("2.5e3", "2500"), ("1.5Ki", "1536"), ("+1024Mi", "1Gi"), ("1024.Mi", "1Gi"), ("2E3", "2E3"),
    ("1000E0", "1e3"), ("1000e0", "1e3"), ("1.Gi", "1.Gi"), ("-1024Mi", "-1Gi"), ("+0.5", "500m"), ("1.0", "1"),
    ("1.50Gi", "1536Mi"), ("0.5E3", "500"), ("100.", "100."), ("007", "007"), ("0100m", "0100m"), ("1000m", "1"),
    ("10000", "10k"), ("1e-9", "1e-9"), ("1e-10", "1e-9"), ("5e-1", "500e-3"), ("0.500", "500m"), ("00.100", "100m"),
    ("000", "0"), ("0.250", "250m"), ("0.001", "1m"), ("0.0010", "1m"), ("00", "0"), ("0.100k", "100"),
]


@pytest.mark.parametrize("written, stored", SERVER)
def test_canonical_is_what_the_api_server_stores(written, stored):
    assert canonical(written) == stored


def test_numbers_from_yaml_read_as_their_text():
    assert (canonical(2), canonical(0.5), canonical(1024)) == ("2", "500m", "1024")


@pytest.mark.parametrize("bad", ["", "1x", "Gi", "1 Gi", "1.2.3", "--1", True, None, [], float("nan")])
def test_what_is_not_a_quantity_is_refused(bad):
    with pytest.raises(QuantityError):
        canonical(bad)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "e-3"]))
def test_the_canonical_form_keeps_the_value_and_is_stable(n, suffix):
    text = f"{n}{suffix}"
    assert value(canonical(text)) == value(text)
    assert canonical(canonical(text)) == canonical(text)
