"""Schema.normalize: the standard schema's limits, custom-schema coercions, and misfit policies."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.normalize.config import SchemaFieldConfig, SchemaPolicy
from gateway.normalize.schema import (
    _NOT_COMMON,
    STANDARD_FIELDS,
    EventInvalid,
    Schema,
    _parse_common_utc,
    _parse_datetime_general,
    epoch_to_rfc3339,
)

STANDARD = Schema.standard()


def errors_of(schema: Schema, event: Any) -> list[dict[str, str]]:
    with pytest.raises(EventInvalid) as info:
        schema.normalize(event)
    return info.value.errors


def codes(schema: Schema, event: Any) -> list[tuple[str, str]]:
    return [(e["code"], e["source"]) for e in errors_of(schema, event)]


def custom(*fields: SchemaFieldConfig, **policy: Any) -> Schema:
    return Schema.from_fields(list(fields), SchemaPolicy(**policy) if policy else None)


# -- standard schema --------------------------------------------------------------------------


def test_standard_schema_fields_are_exactly_the_upstream_event() -> None:
    sizes = {f.id: f.size for f in STANDARD_FIELDS}
    assert sizes == {
        "message": 32766, "actor": 128, "action": 32, "target": 128, "status": 32, "source": 128,
        "old": 32766, "new": 32766, "tenant_id": 128, "timestamp": None,
    }  # fmt: skip


def test_standard_event_passes_unchanged() -> None:
    event = {"message": "m", "actor": "a", "action": "login", "target": "t", "status": "success", "source": "1.2.3.4",
             "old": "o", "new": "n", "tenant_id": "acme", "timestamp": "2024-06-11T08:15:12.345000Z"}  # fmt: skip
    assert STANDARD.normalize(event) == event


@pytest.mark.parametrize(
    ("field", "limit"),
    [("action", 32), ("status", 32), ("actor", 128), ("target", 128), ("source", 128), ("tenant_id", 128)],
)
def test_standard_limits_accept_the_limit_and_reject_one_more(field: str, limit: int) -> None:
    assert STANDARD.normalize({"message": "m", field: "x" * limit})[field] == "x" * limit
    [error] = errors_of(STANDARD, {"message": "m", field: "x" * (limit + 1)})
    assert error["code"] == "AboveMaxLength"
    assert error["source"] == f"/{field}"


def test_message_old_new_limit_is_32766_characters_not_bytes() -> None:
    text = "é" * 32766  # 65532 UTF-8 bytes, 32766 characters
    assert STANDARD.normalize({"message": text, "old": text, "new": text})["message"] == text
    assert codes(STANDARD, {"message": "x" * 32767, "old": "x" * 32767, "new": "x" * 32767}) == [
        ("AboveMaxLength", "/message"),
        ("AboveMaxLength", "/old"),
        ("AboveMaxLength", "/new"),
    ]


def test_message_is_required_and_null_counts_as_absent() -> None:
    assert codes(STANDARD, {"actor": "a"}) == [("FieldRequired", "/message")]
    assert codes(STANDARD, {"message": None}) == [("FieldRequired", "/message")]
    assert STANDARD.normalize({"message": "m", "actor": None}) == {"message": "m"}


def test_unknown_fields_are_rejected_by_default_each_with_a_pointer() -> None:
    assert codes(STANDARD, {"message": "m", "user": "x", "a/b~c": 1}) == [
        ("UnexpectedProperty", "/user"),
        ("UnexpectedProperty", "/a~1b~0c"),
    ]


def test_all_errors_of_an_event_are_reported_together() -> None:
    event = {"actor": "x" * 129, "action": "y" * 33, "timestamp": "yesterday", "extra": 1}
    assert sorted(codes(STANDARD, event)) == sorted(
        [
            ("AboveMaxLength", "/actor"),
            ("AboveMaxLength", "/action"),
            ("BadFormatDateTime", "/timestamp"),
            ("UnexpectedProperty", "/extra"),
            ("FieldRequired", "/message"),
        ]
    )
    for error in errors_of(STANDARD, event):
        assert set(error) == {"code", "detail", "source"}
        assert error["detail"]


def test_a_non_object_event_is_invalid_object() -> None:
    assert codes(STANDARD, ["message"]) == [("InvalidObject", "")]
    assert codes(STANDARD, "message") == [("InvalidObject", "")]


def test_objects_become_sorted_compact_json_like_the_sdk() -> None:
    out = STANDARD.normalize({"message": {"b": 1, "a": [1, {"d": None, "c": "é"}]}, "new": {"z": True}})
    assert out["message"] == '{"a":[1,{"c":"é","d":null}],"b":1}'
    sdk = json.dumps(
        {"b": 1, "a": [1, {"d": None, "c": "é"}]}, ensure_ascii=False, separators=(",", ":"), sort_keys=True
    )
    assert out["message"] == sdk
    assert out["new"] == '{"z":true}'


def test_numbers_and_booleans_become_their_json_text_in_string_fields() -> None:
    out = STANDARD.normalize({"message": 42, "actor": 1.5, "status": True, "target": -7})
    assert out == {"message": "42", "actor": "1.5", "status": "true", "target": "-7"}


def test_strings_with_lone_surrogates_are_refused() -> None:
    assert codes(STANDARD, {"message": "bad \ud800 text"}) == [("InvalidString", "/message")]


def test_non_json_values_in_string_fields_are_refused() -> None:
    assert codes(STANDARD, {"message": b"bytes"}) == [("InvalidString", "/message")]
    assert codes(STANDARD, {"message": float("nan")}) == [("InvalidString", "/message")]


# -- datetime ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("2024-06-11T08:15:12Z", "2024-06-11T08:15:12.000000Z"),
        ("2024-06-11T08:15:12.345Z", "2024-06-11T08:15:12.345000Z"),
        ("2024-06-11t08:15:12.123456789z", "2024-06-11T08:15:12.123456Z"),
        ("2024-06-11 08:15:12Z", "2024-06-11T08:15:12.000000Z"),
        ("2024-06-11T10:15:12.5+02:00", "2024-06-11T08:15:12.500000Z"),
        ("2024-06-10T23:15:12-09:00", "2024-06-11T08:15:12.000000Z"),
        ("2024-06-11T08:15:12", "2024-06-11T08:15:12.000000Z"),  # no offset: UTC, as the service takes it
        ("2024-06-11T08:15:12.708025", "2024-06-11T08:15:12.708025Z"),  # the SDK's datetime.now()
        (1718093712, "2024-06-11T08:15:12.000000Z"),  # seconds
        (1718093712.345, "2024-06-11T08:15:12.345000Z"),
        (1718093712345, "2024-06-11T08:15:12.345000Z"),  # milliseconds
        ("1718093712345", "2024-06-11T08:15:12.345000Z"),
        ("1718093712.5", "2024-06-11T08:15:12.500000Z"),
        (1718093712345678, "2024-06-11T08:15:12.345678Z"),  # microseconds
        (1718093712345678901, "2024-06-11T08:15:12.345678Z"),  # nanoseconds
        (0, "1970-01-01T00:00:00.000000Z"),
    ],
)
def test_timestamps_are_sent_as_utc_in_the_sdk_spelling(given: Any, sent: str) -> None:
    assert STANDARD.normalize({"message": "m", "timestamp": given})["timestamp"] == sent


@pytest.mark.parametrize(
    "given",
    [
        "2024-06-11",
        "2024-13-11T08:15:12Z",
        "2024-02-30T08:15:12Z",
        "2024-06-11T24:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "20240611T081512Z",
        "yesterday",
        "١٧١٨٠٩٣٧١٢",  # Arabic-Indic digits are not a number here
        True,
        {"t": 1},
        1e30,
    ],
)
def test_bad_timestamps_are_bad_format_datetime(given: Any) -> None:
    assert codes(STANDARD, {"message": "m", "timestamp": given}) == [("BadFormatDateTime", "/timestamp")]


def test_epoch_units_can_be_given_explicitly() -> None:
    assert epoch_to_rfc3339(1718093712, "ms") == "1970-01-20T21:14:53.712000Z"
    assert epoch_to_rfc3339(1, "s") == "1970-01-01T00:00:01.000000Z"
    with pytest.raises(ValueError):
        epoch_to_rfc3339(float("inf"))


# -- custom schemas ---------------------------------------------------------------------------


def test_custom_schema_coerces_numeric_strings_booleans_and_datetimes() -> None:
    schema = custom(
        SchemaFieldConfig(id="count", type="integer"),
        SchemaFieldConfig(id="ok", type="boolean"),
        SchemaFieldConfig(id="at", type="datetime"),
        SchemaFieldConfig(id="note", type="string-unindexed", size=10),
    )
    out = schema.normalize({"count": "42", "ok": "TRUE", "at": "1718093712", "note": 12345})
    assert out == {"count": 42, "ok": True, "at": "2024-06-11T08:15:12.000000Z", "note": "12345"}
    assert schema.normalize({"count": -7, "ok": False}) == {"count": -7, "ok": False}
    assert schema.normalize({"count": 3.0, "ok": " false "}) == {"count": 3, "ok": False}


def test_custom_schema_refuses_what_is_not_safe_to_coerce() -> None:
    schema = custom(SchemaFieldConfig(id="count", type="integer"), SchemaFieldConfig(id="ok", type="boolean"))
    assert codes(schema, {"count": "4.5", "ok": "yes"}) == [("InvalidInteger", "/count"), ("InvalidBool", "/ok")]
    assert codes(schema, {"count": True, "ok": 1}) == [("InvalidInteger", "/count"), ("InvalidBool", "/ok")]
    assert codes(schema, {"count": 2**63}) == [("InvalidInteger", "/count")]
    assert codes(schema, {"count": "9223372036854775808"}) == [("InvalidInteger", "/count")]
    assert schema.normalize({"count": "-9223372036854775808"}) == {"count": -(2**63)}
    assert codes(schema, {"count": 1.5}) == [("InvalidInteger", "/count")]
    assert codes(schema, {"count": "٤٢"}) == [("InvalidInteger", "/count")]


def test_custom_required_fields_are_enforced() -> None:
    schema = custom(
        SchemaFieldConfig(id="who", type="string", required=True), SchemaFieldConfig(id="n", type="integer")
    )
    assert codes(schema, {"n": 1}) == [("FieldRequired", "/who")]
    # A present but invalid required field reports its own error, not a second "required" one.
    schema2 = custom(SchemaFieldConfig(id="n", type="integer", required=True))
    assert codes(schema2, {"n": "x"}) == [("InvalidInteger", "/n")]


def test_string_fields_without_size_have_no_local_limit() -> None:
    schema = custom(SchemaFieldConfig(id="body", type="text"))
    assert schema.normalize({"body": "x" * 100_000}) == {"body": "x" * 100_000}


def test_size_on_non_string_fields_is_ignored() -> None:
    schema = custom(SchemaFieldConfig(id="n", type="integer", size=2))
    assert schema.normalize({"n": 123456}) == {"n": 123456}


# -- policies ---------------------------------------------------------------------------------


def test_oversize_truncate_cuts_to_the_size_in_characters() -> None:
    schema = Schema.standard(SchemaPolicy(on_oversize="truncate"))
    out = schema.normalize({"message": "é" * 40000, "action": "a" * 33, "actor": {"k": "v" * 200}})
    assert out["message"] == "é" * 32766
    assert out["action"] == "a" * 32
    assert out["actor"] == ('{"k":"' + "v" * 200)[:128]


def test_unknown_drop_removes_them() -> None:
    schema = Schema.standard(SchemaPolicy(on_unknown_field="drop"))
    assert schema.normalize({"message": "m", "user": "x", "n": None}) == {"message": "m"}


def test_unknown_fold_writes_them_as_json_into_the_fold_field() -> None:
    schema = Schema.standard(SchemaPolicy(on_unknown_field="fold", fold_into="new"))
    out = schema.normalize({"message": "m", "user": "x", "n": 1, "gone": None})
    assert json.loads(out["new"]) == {"user": "x", "n": 1}
    assert out["new"] == '{"n":1,"user":"x"}'
    # Without unknown fields the fold field is left as given.
    assert schema.normalize({"message": "m", "new": "v"}) == {"message": "m", "new": "v"}
    # When the event also gives the fold field, its value is kept in the JSON under its own name.
    out = schema.normalize({"message": "m", "new": "v", "user": "x"})
    assert json.loads(out["new"]) == {"new": "v", "user": "x"}


def test_fold_respects_the_oversize_policy_of_the_fold_field() -> None:
    schema = Schema.standard(SchemaPolicy(on_unknown_field="fold", fold_into="status"))
    assert codes(schema, {"message": "m", "user": "x" * 40}) == [("AboveMaxLength", "/status")]
    schema = Schema.standard(SchemaPolicy(on_unknown_field="fold", fold_into="status", on_oversize="truncate"))
    assert len(schema.normalize({"message": "m", "user": "x" * 40})["status"]) == 32


@pytest.mark.parametrize(
    ("policy", "fields"),
    [
        (SchemaPolicy(on_unknown_field="fold"), STANDARD_FIELDS),  # no fold_into
        (SchemaPolicy(on_unknown_field="fold", fold_into="nope"), STANDARD_FIELDS),
        (SchemaPolicy(on_unknown_field="fold", fold_into="timestamp"), STANDARD_FIELDS),
        (None, (SchemaFieldConfig(id="a", type="text"), SchemaFieldConfig(id="a", type="integer"))),
        (None, (SchemaFieldConfig(id="received_at", type="datetime"),)),
        (None, ()),
    ],
)
def test_unusable_schemas_raise_value_error_at_construction(
    policy: SchemaPolicy | None, fields: tuple[SchemaFieldConfig, ...]
) -> None:
    with pytest.raises(ValueError):
        Schema.from_fields(list(fields), policy)


def test_output_is_what_the_pipeline_can_encode() -> None:
    out = STANDARD.normalize({"message": {"nested": ["é", 1, None]}, "timestamp": 1718093712})
    assert orjson.loads(orjson.dumps({"event": out})) == {"event": out}


# -- signed events ----------------------------------------------------------------------------


def test_normalize_signed_accepts_events_already_in_sent_form() -> None:
    event = {"message": "m", "timestamp": "2024-06-11T08:15:12.345000Z", "actor": None}
    assert STANDARD.normalize_signed(event) == {"message": "m", "timestamp": "2024-06-11T08:15:12.345000Z"}


def test_normalize_signed_refuses_any_change_that_would_break_the_signature() -> None:
    with pytest.raises(EventInvalid) as info:
        STANDARD.normalize_signed({"message": 5, "timestamp": "2024-06-11T08:15:12Z"})
    assert [(e["code"], e["source"]) for e in info.value.errors] == [
        ("BadState", "/message"),
        ("BadState", "/timestamp"),
    ]


def test_errors_about_keys_with_lone_surrogates_can_still_be_sent() -> None:
    [error] = errors_of(STANDARD, {"message": "m", "\ud800": []})
    assert error["code"] == "UnexpectedProperty"
    assert error["source"] == "/\\ud800"
    orjson.dumps(error)


_COMMON_SHAPES = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{3}|\.[0-9]{6})?Z"


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
    st.sampled_from(["%Y-%m-%dT%H:%M:%S.{ms}Z", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"]),
    st.sampled_from(["", " ", "\t"]),
)
def test_common_utc_spellings_get_the_general_parsers_canonical_text(dt: datetime, fmt: str, pad: str) -> None:
    text = pad + f"{dt.year:04d}" + dt.strftime(fmt[2:]).replace("{ms}", f"{dt.microsecond // 1000:03d}") + pad
    common = _parse_common_utc(text)
    assert common is not _NOT_COMMON
    assert common == _parse_datetime_general(text) is not None


@settings(max_examples=500, deadline=None)
@given(st.from_regex(_COMMON_SHAPES, fullmatch=True) | st.from_regex(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[Zz]"))
def test_anything_shaped_like_a_common_utc_spelling_parses_as_the_general_parser_does(text: str) -> None:
    # Impossible dates (month 13, 30 February), other fraction lengths and non-ASCII digits
    # included: the shortcut answers as the general parser does, or leaves the string to it.
    common = _parse_common_utc(text)
    assert common is _NOT_COMMON or common == _parse_datetime_general(text)
