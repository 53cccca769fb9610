"""Property tests: normalize and decode fail only in their own error types, on anything."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.normalize.config import SchemaFieldConfig, SchemaPolicy
from gateway.normalize.limits import check_depth
from gateway.normalize.mapping import Mapping
from gateway.normalize.schema import STANDARD_FIELDS, EventInvalid, Schema
from gateway.normalize.vendors import VENDORS, DecodeError, splunk_hec

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # lone surrogates too
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
    | st.sampled_from(
        [
            "true",
            "FALSE",
            "42",
            "-7",
            "1718093712.5",
            "2024-06-11T08:15:12Z",
            "2024-06-11T10:00:00+02:00",
            "2024-02-30T00:00:00Z",
            "1e5",
            "",
            " 12 ",
        ]
    )
)
json_ish = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)

CUSTOM_FIELDS = [
    SchemaFieldConfig(id="message", type="text", required=True, size=50),
    SchemaFieldConfig(id="who", type="string", size=5),
    SchemaFieldConfig(id="raw", type="string-unindexed"),
    SchemaFieldConfig(id="count", type="integer", required=True),
    SchemaFieldConfig(id="ok", type="boolean"),
    SchemaFieldConfig(id="at", type="datetime"),
]
POLICIES = [
    SchemaPolicy(),
    SchemaPolicy(on_oversize="truncate", on_unknown_field="drop"),
    SchemaPolicy(on_oversize="truncate", on_unknown_field="fold", fold_into="message"),
]
SCHEMAS = [
    *(Schema.standard(p) for p in POLICIES),
    Schema.standard(SchemaPolicy(on_unknown_field="fold", fold_into="new")),
    *(Schema.from_fields(CUSTOM_FIELDS, p) for p in POLICIES),
    Schema.from_fields(CUSTOM_FIELDS, SchemaPolicy(on_unknown_field="fold", fold_into="raw")),
]
KEYS = sorted({f.id for f in STANDARD_FIELDS} | {f.id for f in CUSTOM_FIELDS} | {"extra", "a/b", "~"})
events = st.dictionaries(st.sampled_from(KEYS) | any_text, json_ish, max_size=8)
CANONICAL_DT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def assert_satisfies(schema: Schema, out: dict[str, Any]) -> None:
    """An independent check of the output against the schema's fields."""
    fields = {f.id: f for f in schema.fields}
    assert set(out) <= set(fields)
    for f in schema.fields:
        if f.required:
            assert f.id in out
    for key, value in out.items():
        f = fields[key]
        if f.type in ("string", "string-unindexed", "text"):
            assert type(value) is str
            value.encode("utf-8")  # valid text
            if f.size is not None:
                assert len(value) <= f.size
        elif f.type == "integer":
            assert type(value) is int
            assert -(2**63) <= value < 2**63
        elif f.type == "boolean":
            assert type(value) is bool
        else:
            assert type(value) is str and CANONICAL_DT.fullmatch(value)
    orjson.dumps({"event": out})  # what Destination.encode does


@SETTINGS
@given(event=events, which=st.sampled_from(range(len(SCHEMAS))))
def test_normalize_raises_only_event_invalid_and_output_satisfies_the_schema(event: dict[Any, Any], which: int) -> None:
    schema = SCHEMAS[which]
    try:
        out = schema.normalize(event)
    except EventInvalid as exc:
        assert exc.errors
        for error in exc.errors:
            assert set(error) == {"code", "detail", "source"}
            assert error["source"] == "" or error["source"].startswith("/")
            orjson.dumps(error)  # the error itself can be sent back
        return
    assert_satisfies(schema, out)
    assert schema.normalize(out) == out  # idempotent


@SETTINGS
@given(value=json_ish)
def test_normalize_of_non_objects_is_event_invalid(value: Any) -> None:
    if isinstance(value, dict):
        return
    try:
        Schema.standard().normalize(value)
    except EventInvalid:
        return
    raise AssertionError("a non-object was accepted")


@SETTINGS
@given(body=st.binary(max_size=300), vendor=st.sampled_from(sorted(VENDORS)), ct=st.sampled_from(
    [None, "application/json", "application/x-www-form-urlencoded", "text/plain"]))  # fmt: skip
def test_decode_raises_only_decode_error_on_any_bytes(body: bytes, vendor: str, ct: str | None) -> None:
    v = VENDORS[vendor]
    try:
        records = v.decode(body, ct)
    except DecodeError as exc:
        assert isinstance(exc.detail, str)
        return
    assert isinstance(records, list)
    for record in records:
        try:
            fields, dedup = v.to_event(record)
        except EventInvalid:
            continue
        assert dedup is None or isinstance(dedup, str)
        with contextlib.suppress(EventInvalid):
            Schema.standard().normalize(fields)


# JSON text as any writer may produce it: big integers, NaN/Infinity, escaped lone surrogates.
json_texts = st.builds(
    lambda v, ascii_only: json.dumps(v, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | any_text,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
        max_leaves=10,
    ),
    st.booleans(),
)


@SETTINGS
@given(
    docs=st.lists(
        json_texts
        | st.sampled_from([b'{"event":"x"}', b'{"logs":[{"data":{"type":"s"}}]}', b'{"data":{"events":[1]}}']),
        min_size=1,
        max_size=4,
    ),
    sep=st.sampled_from([b"", b"\n", b" ", b"\r\n", b","]),
    vendor=st.sampled_from(sorted(VENDORS)),
)
def test_decode_and_map_json_shaped_bodies_fail_only_in_their_own_errors(
    docs: list[bytes], sep: bytes, vendor: str
) -> None:
    v = VENDORS[vendor]
    body = sep.join(docs)
    try:
        records = v.decode(body, "application/json")
    except DecodeError:
        return
    for record in records:
        try:
            fields, _ = v.to_event(record)
            Schema.standard().normalize(fields)
        except EventInvalid:
            pass


@SETTINGS
@given(body=st.binary(max_size=300))
def test_hec_raw_decode_raises_only_decode_error(body: bytes) -> None:
    try:
        lines = splunk_hec.decode_raw(body)
    except DecodeError as exc:
        assert exc.hec_code == 5
        return
    for line in lines:
        assert line.strip()
        Schema.standard().normalize(splunk_hec.to_event(line)[0])


@SETTINGS
@given(record=json_ish, path=st.lists(st.sampled_from(["a", "0", "b", "-1", "$x"]), min_size=1, max_size=4))
def test_mapping_apply_never_raises(record: Any, path: list[str]) -> None:
    m = Mapping({"actor": ".".join(path), "target": [".".join(path), "a"], "status": {"path": "b", "default": "d"}})
    out = m.apply(record)
    assert set(out) <= {"actor", "target", "status"}


@SETTINGS
@given(obj=json_ish, limit=st.integers(min_value=0, max_value=6))
def test_check_depth_agrees_with_a_recursive_definition(obj: Any, limit: int) -> None:
    def depth(o: Any) -> int:
        if isinstance(o, dict):
            return 1 + max((depth(v) for v in o.values()), default=0)
        if isinstance(o, list):
            return 1 + max((depth(v) for v in o), default=0)
        return 0

    assert check_depth(obj, limit) == (depth(obj) <= limit)
