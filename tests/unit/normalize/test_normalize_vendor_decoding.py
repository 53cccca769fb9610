"""Vendor decoders and mappers on shapes the samples do not cover: variants, edge cases, garbage."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from typing import Any

import pytest

from gateway.normalize.schema import EventInvalid, Schema
from gateway.normalize.vendors import VENDORS, DecodeError, auth0, github, okta, pangea, raw, splunk_hec
from gateway.normalize.vendors import json as json_format

STANDARD = Schema.standard()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_vendor_registry_has_every_format_with_the_same_shape() -> None:
    assert set(VENDORS) == {
        "auth0", "okta", "github", "gitlab", "splunk_hec", "cloudtrail", "onepassword", "firehose", "pangea", "raw",
        "json"
    }  # fmt: skip
    for name, vendor in VENDORS.items():
        assert vendor.name == name
        assert callable(vendor.decode)
        assert callable(vendor.to_event)


# -- auth0 ------------------------------------------------------------------------------------

AUTH0 = {"log_id": "L1", "data": {"type": "s", "date": "2024-06-11T08:15:12.345Z", "user_name": "u", "ip": "1.2.3.4"}}


def test_auth0_accepts_a_single_record_object() -> None:
    [record] = auth0.decode(dumps(AUTH0))
    fields, dedup = auth0.to_event(record)
    assert dedup == "L1"
    assert STANDARD.normalize(fields)["actor"] == "u"


def test_auth0_refuses_bodies_it_cannot_split() -> None:
    for body in (b"", b"{", b'{"logs": "nope"}', b"42", b'"text"', b'{"log_id":"a"}\n{bad json}', b"\xff\xfe"):
        with pytest.raises(DecodeError):
            auth0.decode(body)


def test_auth0_reports_the_bad_json_line() -> None:
    body = dumps(AUTH0) + b"\n" + dumps(AUTH0) + b"\n{oops\n"
    with pytest.raises(DecodeError, match="line 3"):
        auth0.decode(body)


def test_auth0_records_that_cannot_map_fail_alone() -> None:
    records = auth0.decode(dumps([AUTH0, {"log_id": "x"}, {"data": {"date": "d"}}, "str"]))
    assert len(records) == 4
    assert auth0.to_event(records[0])[1] == "L1"
    for bad in records[1:]:
        with pytest.raises(EventInvalid):
            auth0.to_event(bad)


def test_auth0_long_values_are_fitted_to_the_standard_limits() -> None:
    data = {
        "type": "zz_future_event_code_that_is_very_long",
        "user_name": "u" * 300,
        "client_name": "c" * 300,
        "ip": "i" * 300,
        "details": {"blob": "x" * 40000},
    }
    fields, dedup = auth0.to_event({"data": data})
    out = STANDARD.normalize(fields)  # the default policy rejects oversize: nothing is over
    assert dedup is None
    assert len(out["action"]) <= 32
    assert len(out["actor"]) == len(out["target"]) == len(out["source"]) == 128
    assert len(out["new"]) == 32766
    assert out["new"].endswith("...")
    assert out["message"] == "Auth0 event zz_future_event_code_that_is_very_long"
    assert out["status"] == "info"


def test_auth0_status_rules() -> None:
    cases = {"s": "success", "fp": "failure", "w": "warning", "limit_mu": "failure", "du": "success",
             "gd_auth_succeed": "success", "gd_auth_failed": "failure", "api_limit_warning": "warning",
             "oidc_backchannel_logout_failed": "failure", "sys_os_update_start": "info", "pla": "info"}  # fmt: skip
    assert {code: auth0.status_of(code) for code in cases} == cases


def test_auth0_tenant_is_mapped_when_present() -> None:
    fields, _ = auth0.to_event({"log_id": "x", "data": {"type": "s", "tenant_name": "acme-prod"}})
    assert fields["tenant_id"] == "acme-prod"


# -- okta -------------------------------------------------------------------------------------

OKTA_EVENT = {
    "uuid": "u-1",
    "published": "2024-06-11T08:20:01.123Z",
    "eventType": "application.user_membership.change_username",
    "displayMessage": None,
    "actor": {"alternateId": "unknown", "displayName": "Okta System"},
    "outcome": {"result": "SUCCESS"},
    "target": [{"alternateId": "x" * 100, "displayName": "X"}, {"alternateId": "y" * 100}],
}


def test_okta_accepts_bare_events_and_arrays() -> None:
    assert okta.decode(dumps(OKTA_EVENT)) == [OKTA_EVENT]
    assert okta.decode(dumps([OKTA_EVENT, OKTA_EVENT])) == [OKTA_EVENT, OKTA_EVENT]
    assert okta.decode(dumps({"eventType": "com.okta.event_hook", "data": {"events": []}})) == []


def test_okta_refuses_hook_bodies_without_events() -> None:
    for body in ({"eventType": "com.okta.event_hook"}, {"eventType": "com.okta.event_hook", "data": {"events": {}}}):
        with pytest.raises(DecodeError):
            okta.decode(dumps(body))


def test_okta_long_event_type_keeps_its_verb_and_full_name_in_new() -> None:
    fields, uuid = okta.to_event(OKTA_EVENT)
    out = STANDARD.normalize(fields)
    assert uuid == "u-1"
    assert out["action"] == "application.use~.change_username"
    assert len(out["action"]) == 32
    assert out["message"] == "application.user_membership.change_username"  # no displayMessage
    assert json.loads(out["new"])["eventType"] == "application.user_membership.change_username"
    assert out["actor"] == "Okta System"  # alternateId "unknown" skipped
    assert len(out["target"]) == 128


def test_okta_event_without_type_cannot_map() -> None:
    with pytest.raises(EventInvalid):
        okta.to_event({"uuid": "x"})
    with pytest.raises(EventInvalid):
        okta.to_event(["not", "an", "event"])


# -- github -----------------------------------------------------------------------------------

GH_PAYLOAD = {"action": "edited", "changes": {"name": {"from": "old-name"}},
              "repository": {"full_name": "o/r", "owner": {"login": "o"}}, "sender": {"login": "octo"}}  # fmt: skip


def test_github_form_encoded_body_is_decoded() -> None:
    body = ("payload=" + urllib.parse.quote_plus(json.dumps(GH_PAYLOAD))).encode()
    assert github.decode(body, "application/x-www-form-urlencoded") == [GH_PAYLOAD]
    assert github.decode(body, None) == [GH_PAYLOAD]  # sniffed
    assert github.decode(dumps(GH_PAYLOAD), None) == [GH_PAYLOAD]


def test_github_refuses_non_object_or_broken_bodies() -> None:
    for body, ct in [(b"[]", "application/json"), (b"", None), (b"payload=", "application/x-www-form-urlencoded"),
                     (b"other=1", "application/x-www-form-urlencoded"), (b"payload=%ff", None),
                     (b"{", "application/json")]:  # fmt: skip
        with pytest.raises(DecodeError):
            github.decode(body, ct)


def test_github_edited_event_puts_previous_values_in_old() -> None:
    fields, delivery = github.to_event({"event": "repository", "delivery": "d-1", "payload": GH_PAYLOAD})
    out = STANDARD.normalize(fields)
    assert delivery == "d-1"
    assert out["action"] == "repository.edited"
    assert out["target"] == "o/r"
    assert out["tenant_id"] == "o"  # no organization: the repository owner
    assert json.loads(out["old"]) == {"name": {"from": "old-name"}}
    # Nothing left of the payload: `new` holds the delivery's headers as received.
    assert json.loads(out["new"]) == {"X-GitHub-Delivery": "d-1", "X-GitHub-Event": "repository"}


def test_github_bare_payload_maps_with_its_action_only() -> None:
    fields, delivery = github.to_event(GH_PAYLOAD)
    assert delivery is None
    assert fields["action"] == "edited"
    with pytest.raises(EventInvalid):
        github.to_event({"sender": {"login": "x"}})


def test_github_long_event_names_fit_32_keeping_the_verb() -> None:
    payload = {"action": "auto_reopened", "sender": {"login": "x"}}
    fields, _ = github.to_event({"event": "repository_vulnerability_alert", "delivery": "d", "payload": payload})
    assert fields["action"] == "repository_vulner~.auto_reopened"
    assert len(fields["action"]) == 32


# -- splunk HEC -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "number"),
    [
        (b"", 5, None),
        (b"  \n\t ", 5, None),
        (b'{"event": "a"} {"time": 1}', 12, 1),
        (b'{"event": ""}', 13, 0),
        (b'{"event": "a"}{"event": "   "}', 13, 1),
        (b'{"event": null}', 13, 0),
        (b'{"event": {}}', 13, 0),
        (b'[{"event": "a"}]', 6, 0),
        (b'{"event": "a"}, {"event": "b"}', 6, 1),
        (b'{"event": "a"} {"event": ', 6, 1),
        (b'{"event": "a", "time": "soon"}', 6, 0),
        (b'{"event": "a", "time": true}', 6, 0),
        (b'{"event": NaN}', 6, 0),
        (b'{"event": "a"} {"event": "b", "x": Infinity}', 6, 1),
        (b"\xff\xfe", 6, 0),
        (b"42", 6, 0),
    ],
)
def test_hec_errors_carry_the_hec_code_and_event_number(body: bytes, code: int, number: int | None) -> None:
    with pytest.raises(DecodeError) as info:
        splunk_hec.decode(body)
    assert info.value.hec_code == code
    assert info.value.event_number == number


def test_hec_objects_may_be_glued_or_separated_by_any_whitespace() -> None:
    body = b'\xef\xbb\xbf {"event":"a"}{"event":"b"}\r\n\t{"event":{"k":1},"time":"12.5"}  '
    records = splunk_hec.decode(body)
    assert [r["event"] for r in records] == ["a", "b", {"k": 1}]
    fields, _ = splunk_hec.to_event(records[2])
    assert fields == {"message": '{"k":1}', "timestamp": "1970-01-01T00:00:12.500000Z"}


def test_hec_generic_event_source_is_host_then_source() -> None:
    fields, _ = splunk_hec.to_event({"event": "x", "host": "web-1", "source": "/var/log/app"})
    assert fields["source"] == "web-1"
    fields, _ = splunk_hec.to_event({"event": 5, "source": "/var/log/app"})
    assert fields == {"message": "5", "source": "/var/log/app"}


def test_hec_raw_lines_drop_blank_lines_and_carriage_returns() -> None:
    assert splunk_hec.decode_raw(b"a\r\n\r\n  \nb\n") == ["a", "b"]
    assert splunk_hec.decode_raw(b"bad \xff byte") == ["bad \\xff byte"]
    with pytest.raises(DecodeError) as info:
        splunk_hec.decode_raw(b" \r\n \n")
    assert info.value.hec_code == 5


# -- pangea, raw, json ------------------------------------------------------------------------


def test_pangea_records_are_passed_through_unmapped() -> None:
    event = {"message": "m", "actor": "a"}
    assert pangea.to_event({"event": event, "signature": "s"}) == (event, None)
    assert pangea.to_event(event) == (event, None)
    assert pangea.decode(dumps({"config_id": "c", "events": [{"event": event}]})) == [{"event": event}]
    assert pangea.decode(dumps({"event": event})) == [{"event": event}]
    with pytest.raises(EventInvalid):
        pangea.to_event("text")


def test_pangea_to_event_returns_a_copy() -> None:
    event = {"message": "m"}
    fields, _ = pangea.to_event({"event": event})
    fields["actor"] = "changed"
    assert event == {"message": "m"}


def test_raw_body_is_one_message() -> None:
    [record] = raw.decode(b"hello \xff world\n")
    assert raw.to_event(record) == ({"message": "hello \\xff world"}, None)
    assert raw.to_event("text") == ({"message": "text"}, None)
    with pytest.raises(DecodeError):
        raw.decode(b"  \n")
    with pytest.raises(EventInvalid):
        raw.to_event(5)


def test_json_bodies_split_into_records() -> None:
    assert json_format.decode(b'{"a": 1}') == [{"a": 1}]
    assert json_format.decode(b'[{"a": 1}, {"b": 2}]') == [{"a": 1}, {"b": 2}]
    assert json_format.decode(b'{"a": 1}\n\n{"b": 2}\n[{"c": 3}]\n') == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert json_format.to_event({"a": 1}) == ({"a": 1}, None)
    for body in (b"1", b"null", b'{"a": 1}\n2'):
        with pytest.raises(DecodeError):
            json_format.decode(body)
    with pytest.raises(EventInvalid):
        json_format.to_event([1])


def test_deeply_nested_bodies_are_decode_errors_not_crashes() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    for vendor in VENDORS.values():
        with contextlib.suppress(DecodeError):
            vendor.decode(deep, "application/json")
    with pytest.raises(DecodeError):
        splunk_hec.decode(b'{"event": "a"} {"event": ' + deep + b"}")


@pytest.mark.parametrize(
    ("vendor", "body", "records", "error"),
    [
        (auth0, b'{"logs":[{"log_id":"a"},{"log_id":"b"}]}', [{"log_id": "a"}, {"log_id": "b"}], None),
        (auth0, b'{"logs":{"log_id":"a"}}', None, '"logs" must be an array of log records'),
        (auth0, b'{"logs":[1],"data":{}}', [{"logs": [1], "data": {}}], None),  # a record, not an envelope
        (pangea, b'{"events":[{"event":{"message":"m"}}]}', [{"event": {"message": "m"}}], None),
        (pangea, b'{"events":"x"}', None, '"events" must be an array of {"event": {...}} items'),
        (pangea, b'{"event":{"message":"m"},"events":1}', [{"event": {"message": "m"}, "events": 1}], None),
    ],
)
def test_envelopes_give_their_records_and_a_non_array_envelope_is_refused(
    vendor: Any, body: bytes, records: list[Any] | None, error: str | None
) -> None:
    if error is None:
        assert vendor.decode(body) == records
    else:
        with pytest.raises(DecodeError, match=re.escape(error)):
            vendor.decode(body)


_ENVELOPE_BODIES = [
    b'[{"log_id": "1", "data": {}}, {"log_id": "2", "data": {}}]',
    b'{"logs": [{"log_id": "1"}, {"log_id": "2"}]}',
    b'{"logs": [{"log_id": "1"}], "data": {}}',
    b'[["logs", "x"], "logs", "a logs b", 7, null, true, {"logs": "not a list", "data": 1}]',
    b'{"log_id": "1", "data": {}}\n{"logs": [{"log_id": "2"}]}\n[{"log_id": "3"}, 4]',
    b'[{"logs": [{"log_id": "1"}]}, {"log_id": "2"}]',
    b'[1.5, "x", []]',
    b'[{"logs": 3}]',
]


@pytest.mark.parametrize("body", _ENVELOPE_BODIES)
def test_enveloped_splits_bodies_as_the_loop_over_every_document_does(body: bytes) -> None:
    """enveloped's check of all documents at once (issue 18) against the loop over each one."""
    from gateway.normalize.vendors.json import documents, enveloped

    def by_loop() -> list[Any]:
        out: list[Any] = []
        for doc in documents(body):
            if isinstance(doc, dict) and "logs" in doc and "data" not in doc:
                if not isinstance(doc["logs"], list):
                    raise DecodeError('"logs" must be an array of log records')
                out.extend(doc["logs"])
            else:
                out.append(doc)
        return out

    try:
        expected: Any = by_loop()
    except DecodeError as exc:
        expected = str(exc)
    try:
        got: Any = enveloped(body, "logs", unless="data", what="log records")
    except DecodeError as exc:
        got = str(exc)
    assert got == expected
