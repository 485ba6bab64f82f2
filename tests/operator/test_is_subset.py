"""is_subset: the compare that decides whether the live CronJob needs a write (pure)."""

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_contract import parse_spec
from ingestion_operator.reconcile import is_subset
from ingestion_operator.render import render_cronjob

from ..samples import SCHEDULE

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=12)


def with_server_defaults(obj, extra):
    """``obj`` as the API server might return it: extra keys in every object, values untouched."""
    if isinstance(obj, dict):
        out = {k: with_server_defaults(v, extra) for k, v in obj.items()}
        for k, v in extra.items():
            out.setdefault(k, v)
        return out
    if isinstance(obj, list):
        return [with_server_defaults(v, extra) for v in obj]
    return obj


def test_the_rendered_cronjob_with_server_defaults_needs_no_write():
    desired = render_cronjob("daily", "data", parse_spec(SCHEDULE["spec"]))
    live = with_server_defaults(desired, {"uid": "u-1", "resourceVersion": "42", "terminationMessagePolicy": "File"})
    assert is_subset(desired, live)


def test_a_hand_edit_or_a_lost_item_needs_a_write():
    desired = render_cronjob("daily", "data", parse_spec(SCHEDULE["spec"]))
    edited = copy.deepcopy(desired)
    edited["spec"]["concurrencyPolicy"] = "Allow"
    assert not is_subset(desired, edited)
    shorter = copy.deepcopy(desired)
    shorter["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"].pop()
    assert not is_subset(desired, shorter)
    assert not is_subset(desired, None) and not is_subset({"a": 1}, {"a": {"b": 1}}) and not is_subset({"a": {}}, {"a": 1})


def test_a_boolean_is_not_a_number():
    assert not is_subset({"suspend": False}, {"suspend": 0}) and not is_subset({"n": 1}, {"n": True})
    assert is_subset({"suspend": False}, {"suspend": False})


def test_empty_desired_values_match_what_the_server_leaves_out():
    assert is_subset({"a": {}, "b": [], "c": None}, {}) and is_subset([], None)


@settings(max_examples=300, deadline=None)
@given(desired=JSON, extra=st.dictionaries(st.text(min_size=5, max_size=6), JSON, max_size=2))
def test_extra_server_fields_never_count(desired, extra):
    assert is_subset(desired, with_server_defaults(desired, extra))


@settings(max_examples=300, deadline=None)
@given(desired=st.dictionaries(st.text(max_size=4), JSON, min_size=1, max_size=4), key=st.integers(0, 3), data=st.data())
def test_a_changed_value_is_always_seen(desired, key, data):
    k = sorted(desired)[key % len(desired)]
    changed = data.draw(JSON.filter(lambda v: (v != desired[k] or type(v) is not type(desired[k])) and not (desired[k] in ({}, [], None) and v is None)))
    live = {**desired, k: changed}
    if isinstance(desired[k], (dict, list)) and is_subset(desired[k], changed):
        return  # a container that the changed value still holds (e.g. {} in {"x": 1}): not a change
    assert not is_subset(desired, live)
