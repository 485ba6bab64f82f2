"""The admission review (pure): a schedule refused with exactly the message its status would
show, an accepted one previewed in short lines; and the webhook's HTTPS server in process."""

from __future__ import annotations

import copy
import datetime as dt
import json
import ssl
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_contract.cron import next_runs, spread
from ingestion_dev.pki import PKI
from ingestion_dev.workspace import free_ports
from ingestion_operator.admission import MAX_WARNING, MAX_WARNINGS, response, review
from ingestion_operator.resource import ScheduleResource
from ingestion_operator.status import derive_status
from ingestion_operator.webhook import PATH, WebhookServer

from ..samples import SCHEDULE

NOW = dt.datetime(2026, 12, 6, 13, 0, tzinfo=dt.timezone.utc)
U = dt.timezone.utc


def body(name="binance-um-klines", namespace="data", **spec) -> dict:
    b = copy.deepcopy(SCHEDULE)
    b["metadata"].update(name=name, namespace=namespace)
    for key, value in spec.items():
        b["spec"][key] = value
    return b


def request(obj: dict, operation="CREATE", old: dict | None = None) -> dict:
    return {"uid": "4b1c-uid", "operation": operation, "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"], "object": obj, "oldObject": old, "dryRun": False}


def berlin(**target) -> dict:
    b = body(schedule="17 2 * * *", timezone="Europe/Berlin")
    b["spec"]["target"] = {**b["spec"]["target"], "symbols": [f"S{i}" for i in range(8)], "lookbackDays": 2, **target}
    return b


def test_an_accepted_schedule_is_previewed_in_short_lines():
    verdict = review(request(berlin()), NOW)
    assert verdict.allowed
    assert verdict.warnings == (
        "next run: 2026-12-07 02:17 Europe/Berlin (01:17 UTC)",
        "next run: 2026-12-08 02:17 Europe/Berlin (01:17 UTC)",
        "next run: 2026-12-09 02:17 Europe/Berlin (01:17 UTC)",
        "DST: 2027-03-28 02:17 Europe/Berlin does not exist; that run is skipped",
        "DST: 2027-10-31 02:17 Europe/Berlin occurs twice; it runs at 00:17 and 01:17 UTC",
        # 8 listings (3 days of objects and sidecars fit one page each) + 24 GETs + 24 sidecars
        "a run expects 24 cells (8 symbols x 3 days), about 56 requests",
    )


def test_the_next_runs_are_the_ones_status_will_show():
    obj = berlin()
    status = derive_status(ScheduleResource.from_body(obj), None, [], NOW)
    shown = [w for w in review(request(obj), NOW).warnings if w.startswith("next run:")]
    assert [s.split("(")[1].rstrip(" UTC)") for s in shown] == [t[11:16] for t in status["nextRuns"][:3]]
    assert [s.split()[2] for s in shown] == [t[:10] for t in status["nextRuns"][:3]]


def test_the_dst_lines_say_what_the_controller_will_do():
    # skipped: no fire at 02:17 local on 2027-03-28 (the next is the 29th's)
    assert next_runs("17 2 * * *", "Europe/Berlin", dt.datetime(2027, 3, 27, 12, tzinfo=U), 1) == [dt.datetime(2027, 3, 29, 0, 17, tzinfo=U)]
    # repeated: 02:17 local on 2027-10-31 fires at 00:17 and 01:17 UTC
    assert next_runs("17 2 * * *", "Europe/Berlin", dt.datetime(2027, 10, 30, 12, tzinfo=U), 2) == [
        dt.datetime(2027, 10, 31, 0, 17, tzinfo=U), dt.datetime(2027, 10, 31, 1, 17, tzinfo=U)]
    every = review(request(body(schedule="*/15 2 * * *", timezone="Europe/Berlin")), NOW).warnings
    assert "DST: 2027-03-28 02:00 to 02:45 Europe/Berlin do not exist; 4 runs are skipped" in every
    assert "DST: 2027-10-31 02:00 to 02:45 Europe/Berlin occur twice; 4 runs happen twice" in every
    quiet = review(request(body(schedule="0 12 * * *", timezone="Europe/Berlin")), NOW).warnings
    assert not [w for w in quiet if w.startswith("DST")]  # noon is never skipped nor repeated
    utc = review(request(body(schedule="0 2 * * *", timezone="UTC")), NOW).warnings
    assert utc[0] == "next run: 2026-12-07 02:00 UTC" and not [w for w in utc if w.startswith("DST")]


def test_a_local_time_on_another_utc_day_shows_the_utc_date():
    (first, *_) = review(request(body(schedule="30 0 * * *", timezone="Asia/Tokyo")), NOW).warnings
    assert first == "next run: 2026-12-07 00:30 Asia/Tokyo (2026-12-06 15:30 UTC)"


def test_h_shows_the_concrete_expression_of_this_name():
    obj = body(name="spread-me", schedule="H(0-29) */6 * * *")
    concrete = spread("H(0-29) */6 * * *", "data/spread-me")
    warnings = review(request(obj), NOW).warnings
    assert warnings[0] == f"H: 'H(0-29) */6 * * *' fires as {concrete!r} for data/spread-me"
    first = next_runs(concrete, "UTC", NOW, 1)[0]
    assert warnings[1] == f"next run: {first:%Y-%m-%d %H:%M} UTC"


def test_cells_of_discovered_and_ranged_symbols():
    obj = berlin()
    obj["spec"]["target"].pop("symbols")
    obj["spec"]["target"]["discover"] = True
    assert review(request(obj), NOW).warnings[-1] == (
        "a run expects 3 days x each symbol it discovers (unknown until a run lists them); requests: unknown too")
    obj = berlin(symbols=["A"], symbolRanges=[{"name": "B", "from": "2026-01-01"}], lookbackDays=0, checksumSuffix=None)
    assert review(request(obj), NOW).warnings[-1] == "a run expects at most 2 cells (2 symbols x 1 day), about 4 requests"
    obj = berlin(symbols=["A", "B"], lookbackDays=0, checksumSuffix=None, dimensions={"interval": ["1m", "1h", "1d"]},
                 keyTemplate="d/{symbol}/{interval}/{symbol}-{interval}-{date}.zip")
    # a listing and a GET for each of 2 symbols x 3 intervals x 1 day
    assert review(request(obj), NOW).warnings[-1] == "a run expects 6 cells (2 symbols x 3 interval x 1 day), about 12 requests"


def test_disabled_and_paused_schedules_say_their_runs_do_not_start():
    assert "spec.enabled is false: the CronJob is suspended and none of these runs starts" in \
        review(request(body(enabled=False)), NOW).warnings
    assert "paused until 2027-01-01T00:00:00Z: no run starts before then" in \
        review(request(body(pause={"reason": "upstream migration", "until": "2027-01-01T00:00:00Z"})), NOW).warnings
    assert "paused (spec.pause, no end): no run starts until the pause is removed" in \
        review(request(body(pause={"reason": "upstream migration"})), NOW).warnings


REFUSED = {
    "bad cron": dict(schedule="61 2 * * *"),
    "H range": dict(schedule="H(30-70) * * * *"),
    "not a form of H": dict(schedule="Hx * * * *"),
    "zone": dict(timezone="Mars/Olympus_Mons"),
    "never fires": dict(schedule="0 2 30 2 *"),
    "placeholders": dict(target={**SCHEDULE["spec"]["target"], "keyTemplate": "data/{symbol}.zip"}),
}


@pytest.mark.parametrize("spec", REFUSED.values(), ids=REFUSED.keys())
def test_a_refusal_says_what_status_would_say(spec):
    obj = body(**spec)
    verdict = review(request(obj), NOW)
    resource = ScheduleResource.from_body(obj)
    ready = next(c for c in derive_status(resource, None, [], NOW, resource.problem)["conditions"] if c["type"] == "Ready")
    assert not verdict.allowed and verdict.warnings == ()
    assert (verdict.reason, verdict.message) == (ready["reason"], ready["message"])
    field = "spec.target.keyTemplate" if "target" in spec else f"spec.{next(iter(spec))}"
    assert verdict.message.startswith(f"{field}=")


def test_never_fires_and_bad_names_carry_their_reasons():
    assert review(request(body(schedule="0 2 30 2 *")), NOW).reason == "NeverFires"
    long = review(request(body(name="x" * 53)), NOW)
    assert not long.allowed and long.message.startswith("metadata.name=") and "at most 52 characters" in long.message


def test_an_update_that_keeps_an_invalid_spec_is_let_through_with_the_problem():
    bad = body(timezone="Nowhere/Zone")
    relabelled = copy.deepcopy(bad)
    relabelled["metadata"]["labels"] = {"team": "data"}
    verdict = review(request(relabelled, "UPDATE", old=bad), NOW)
    assert verdict.allowed and verdict.warnings[0].startswith("the spec is invalid (InvalidSpec), unchanged by this update: "
                                                              "spec.timezone='Nowhere/Zone'")
    assert not review(request(bad, "UPDATE", old=body()), NOW).allowed  # an update that makes it invalid is refused
    deleting = copy.deepcopy(bad)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-06T13:00:00Z"
    assert review(request(deleting, "UPDATE", old=bad), NOW).allowed


def test_the_response_is_an_admission_review_for_the_request():
    ok = response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request(berlin())}, NOW)
    assert ok["apiVersion"] == "admission.k8s.io/v1" and ok["kind"] == "AdmissionReview"
    assert ok["response"]["uid"] == "4b1c-uid" and ok["response"]["allowed"] is True and len(ok["response"]["warnings"]) == 6
    no = response({"request": request(body(schedule="0 2 30 2 *"))}, NOW)["response"]
    assert no["allowed"] is False and "warnings" not in no
    assert no["status"] == {"code": 422, "reason": "Invalid", "message": "spec.schedule='0 2 30 2 *': never fires: no date "
                            "matches its day-of-month and month (e.g. 30 February)"}


ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Argentina/ComodRivadavia",
                         "Pacific/Chatham", "Asia/Kolkata"])
MINUTES = st.sampled_from(["*", "*/5", "0", "17", "H", "0-59/7"])
HOURS = st.sampled_from(["*", "2", "1-3", "H", "H(0-5)/2", "0,2,4,6,8,10,12,14,16,18,20,22"])


@settings(max_examples=60, deadline=None)
@given(ZONES, MINUTES, HOURS, st.integers(0, 500), st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=40))
def test_every_warning_fits_a_line_and_all_fit_the_api_servers_limit(zone, minute, hour, days, name):
    name = name.strip("-") or "x"
    obj = body(name=name, schedule=f"{minute} {hour} * * *", timezone=zone)
    obj["spec"]["target"]["lookbackDays"] = days
    verdict = review(request(obj), NOW)
    assert verdict.allowed
    assert 0 < len(verdict.warnings) <= MAX_WARNINGS and all(len(w) <= MAX_WARNING for w in verdict.warnings)
    assert len(json.dumps(list(verdict.warnings))) < 4096


# -- the server --------------------------------------------------------------------------------
def _post(port: int, ca, payload: bytes, path: str = PATH):
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_server_answers_over_tls_and_takes_a_new_certificate_without_a_restart(tmp_path):
    pki = PKI(tmp_path)
    pki.issue("tls", "ingestion-webhook", ips=["127.0.0.1"], server=True)
    server = WebhookServer(tmp_path)
    (port,) = free_ports(1)
    server.serve("127.0.0.1", port)
    try:
        payload = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request(berlin())})
        code, answer = _post(port, pki.ca, payload.encode())
        assert code == 200 and answer["response"]["allowed"] is True and answer["response"]["uid"] == "4b1c-uid"
        assert _post(port, pki.ca, b"{}", path="/other")[0] == 404
        assert _post(port, pki.ca, b"[1]")[0] == 400
        first = ssl.get_server_certificate(("127.0.0.1", port))
        time.sleep(0.01)  # a new modification time
        pki.issue("tls", "ingestion-webhook", ips=["127.0.0.1"], server=True)  # the Secret's volume, updated in place
        assert ssl.get_server_certificate(("127.0.0.1", port)) != first
        assert _post(port, pki.ca, payload.encode())[0] == 200
    finally:
        server.close()


def test_a_monthly_schedule_counts_its_cells_in_months():
    obj = berlin(symbols=["A"], lookbackDays=100, checksumSuffix=None, period="monthly", dimensions={"interval": ["1m", "1h"]},
                 keyTemplate="m/{symbol}/{interval}/{symbol}-{interval}-{month}.zip")
    # 101 days hold 3 or 4 month ends: at most 4 months x 2 intervals, a listing and a GET each
    assert review(request(obj), NOW).warnings[-1] == "a run expects at most 8 cells (1 symbol x 2 interval x 4 months), about 10 requests"
