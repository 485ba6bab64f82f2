"""The CRD is the contract with users: every field is described and well-formed."""

import yaml

from ingestion_operator import names

from ..conftest import CRD

SCHEMA_KEYS = {"type", "description", "properties", "items", "required", "default", "enum", "format", "minimum",
               "maximum", "minLength", "maxLength", "maxItems", "nullable", "pattern", "x-kubernetes-validations",
               "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
               "additionalProperties", "maxProperties", "minItems"}


def walk(node, path):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):  # a map's values
        yield from walk(node["additionalProperties"], f"{path}.*")


def crd():
    return yaml.safe_load(CRD.read_text())


def test_names_match_the_operator():
    doc = crd()
    assert doc["spec"]["group"] == names.GROUP
    assert doc["spec"]["names"]["plural"] == names.PLURAL and doc["spec"]["names"]["kind"] == names.KIND
    assert doc["spec"]["names"]["shortNames"] == ["isched"]
    assert [v["name"] for v in doc["spec"]["versions"]] == [names.VERSION]


def test_every_schema_node_uses_known_keys_and_every_field_is_described():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = []
    for path, node in walk(schema, ""):
        unknown = set(node) - SCHEMA_KEYS
        assert not unknown, f"{path or '<root>'}: unknown schema keys {unknown} (a comma in a flow-style description?)"
        is_item_of_scalars = path.endswith(("[]", ".*")) and node.get("type") != "object"
        if path and path != ".metadata" and not is_item_of_scalars and "description" not in node:
            undocumented.append(path)
    assert undocumented == []


def test_printer_columns():
    cols = [c["name"] for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == ["Schedule", "Timezone", "Enabled", "Next Run", "Paused", "Last Run", "Last Success", "Ready", "Coverage", "Gaps", "Stale", "Age"]


def test_readme_reference_matches_the_crd():
    """The reference pages in docs/reference/ (once in the README) hold the tables the CRDs generate."""
    from ingestion_dev.crdref import PAGES, render

    for page, *_ in PAGES:
        text = page.read_text()
        assert render(page, text) == text, f"docs/reference/{page.name} (IngestionSchedule or IngestionBackfill reference) is stale: ingestion-dev crd-reference --write"


def test_every_printer_column_of_both_crds_uses_known_keys():
    """A comma in a flow-style description makes a key of its tail, which the API server warns
    about and drops (the backfill's Failed column did: "unknown field ...in done units.")."""
    for path in sorted(CRD.parent.glob("*.yaml")):
        for version in yaml.safe_load(path.read_text())["spec"]["versions"]:
            for col in version.get("additionalPrinterColumns") or []:
                assert set(col) <= {"name", "type", "jsonPath", "description", "priority", "format"}, (path.name, col)


def test_the_upstream_crd_names_match_the_operator_and_every_field_is_described():
    from ..conftest import UPSTREAM_CRD

    doc = yaml.safe_load(UPSTREAM_CRD.read_text())
    assert (doc["spec"]["group"], doc["spec"]["names"]["plural"], doc["spec"]["names"]["kind"]) == (
        names.GROUP, names.UPSTREAM_PLURAL, names.UPSTREAM_KIND)
    assert doc["spec"]["names"]["shortNames"] == ["iup"] and doc["spec"]["names"]["categories"] == ["ingestion"]
    version = doc["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Source", "Budget", "Sharers", "Split", "Ready", "Age"]
    undocumented = []
    for path, node in walk(version["schema"]["openAPIV3Schema"], ""):
        assert not set(node) - SCHEMA_KEYS, path
        if path and path != ".metadata" and not (path.endswith("[]") and node.get("type") != "object") and "description" not in node:
            undocumented.append(path)
    assert undocumented == []


def test_the_upstream_reference_page_holds_the_table_its_crd_generates():
    """docs/reference/ingestionupstream.md, between its markers (crdref's table of any CRD)."""
    from ingestion_dev.crdref import REFERENCE, table

    from ..conftest import UPSTREAM_CRD

    text = (REFERENCE / "ingestionupstream.md").read_text()
    inside = text.split("<!-- upstream-reference:begin -->\n", 1)[1].split("\n<!-- upstream-reference:end -->", 1)[0]
    assert inside == table(UPSTREAM_CRD), "docs/reference/ingestionupstream.md is stale: see the command on that page"
