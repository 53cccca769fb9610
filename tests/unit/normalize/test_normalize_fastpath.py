"""The compiled fast path (``Schema.fast_path``) agrees with the full path, or steps aside.

The full path is what a Kafka ``pangea`` message takes without it: ``orjson.loads``, the
``{"event": {...}}`` wrapper or a bare event, :meth:`Schema.normalize`, ``encode_item``.  For
any JSON value, the fast path must either answer ``None`` or give an item equal to the full
path's; and it must not step aside for the common valid event (else it is no fast path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.event import encode_item
from gateway.normalize.config import SchemaFieldConfig, SchemaPolicy
from gateway.normalize.schema import EventInvalid, Schema

STANDARD = Schema.standard()
CUSTOM = Schema.from_fields(
    [
        SchemaFieldConfig(id="message", type="text", required=True, size=64),
        SchemaFieldConfig(id="count", type="integer"),
        SchemaFieldConfig(id="ok", type="boolean"),
        SchemaFieldConfig(id="at", type="datetime", required=True),
        SchemaFieldConfig(id="class", type="string", size=8),  # a Python keyword as a field id
        SchemaFieldConfig(id="note", type="string-unindexed"),
    ]
)
FOLDING = Schema.from_fields(
    list(STANDARD.fields), SchemaPolicy(on_unknown_field="fold", fold_into="old", on_oversize="truncate")
)
SCHEMAS = [STANDARD, CUSTOM, FOLDING]
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vendors"


def full_path(schema: Schema, value: bytes) -> bytes | None:
    """The item the full path gives, or None where it refuses the value."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(decoded) is not dict or "events" in decoded:
        return None
    inner = decoded.get("event")
    event = inner if type(inner) is dict else decoded
    try:
        return encode_item(schema.normalize(event))
    except EventInvalid:
        return None


def agree(schema: Schema, value: bytes) -> bytes | None:
    fast = schema.fast_path().item(value)
    if fast is not None:
        slow = full_path(schema, value)
        assert slow is not None, f"fast path accepted what the full path refuses: {value!r}"
        assert orjson.loads(fast) == orjson.loads(slow), value
    return fast


# -- the common event takes the fast path --------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b'{"event":{"message":"m","actor":"a","timestamp":"2026-11-22T03:04:05.123Z"}}',
        b'{"message":"m","actor":"a","timestamp":"2026-11-22T03:04:05Z"}',
        b'{"event":{"message":"m","actor":null,"timestamp":"2026-11-22 03:04:05.1234567z"}}',
        '{"event":{"message":"caf\u00e9 \u2603","tenant_id":"t"}}'.encode(),
    ],
)
def test_valid_events_take_the_fast_path_with_the_full_paths_item(value: bytes) -> None:
    assert agree(STANDARD, value) is not None


def test_fast_path_spells_datetimes_and_drops_nulls_as_normalize_does() -> None:
    item = STANDARD.fast_path().item(
        b'{"event":{"message":"m","actor":null,"timestamp":"2026-11-22T05:04:05.1+02:00"}}'
    )
    assert item is not None
    assert orjson.loads(item) == {"event": {"message": "m", "timestamp": "2026-11-22T03:04:05.100000Z"}}


def test_custom_schema_with_keyword_field_ids_takes_the_fast_path() -> None:
    value = b'{"message":"m","count":-5,"ok":false,"at":"2024-06-11T08:15:12Z","class":"c","note":"n"}'
    item = agree(CUSTOM, value)
    assert item is not None
    assert orjson.loads(item)["event"]["class"] == "c"


# -- what needs coercion, or is invalid, steps aside -----------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b'{"event":{"message":"m","actor":42}}',  # coerced to "42" by the full path
        b'{"event":{"message":"m","timestamp":1718093712}}',  # epoch: coerced
        b'{"event":{"message":"m","timestamp":"yesterday"}}',  # invalid
        b'{"event":{"message":"m","colour":"red"}}',  # unknown member: the policy decides
        b'{"event":{"actor":"a"}}',  # message missing
        b'{"event":{"message":null}}',
        b'{"event":{"message":"m","status":"' + b"x" * 33 + b'"}}',  # oversize
        b'{"event":{"message":"m\\ud800"}}',  # lone surrogate
        b'{"event":{"message":"m"},"signature":"s"}',  # producer-signed: not a plain item
        b'{"events":[{"event":{"message":"m"}}]}',
        b'[{"message":"m"}]',
        b'{"event":{"message":"m"}',  # truncated
        b'\xef\xbb\xbf{"message":"m"}',  # BOM
        b"",
    ],
)
def test_values_needing_more_than_validation_leave_the_fast_path(value: bytes) -> None:
    assert agree(STANDARD, value) is None


def test_custom_schema_coercions_leave_the_fast_path() -> None:
    for value in (
        b'{"message":"m","at":"2024-06-11T08:15:12Z","count":"12"}',
        b'{"message":"m","at":"2024-06-11T08:15:12Z","count":3.0}',
        b'{"message":"m","at":"2024-06-11T08:15:12Z","count":9223372036854775808}',
        b'{"message":"m","at":"2024-06-11T08:15:12Z","ok":"true"}',
        b'{"message":"m","at":"2024-06-11T08:15:12Z","count":true}',
        b'{"message":"m","at":null}',
    ):
        assert agree(CUSTOM, value) is None, value


def test_a_schema_with_an_events_field_leaves_bare_events_to_the_full_path() -> None:
    schema = Schema.from_fields(
        [SchemaFieldConfig(id="message", type="text", required=True), SchemaFieldConfig(id="events", type="text")]
    )
    assert schema.fast_path().item(b'{"message":"m","events":"x"}') is None
    assert schema.fast_path().item(b'{"event":{"message":"m","events":"x"}}') is not None


# -- generated: the two paths never disagree -----------------------------------------------

_keys = st.sampled_from(
    ["message", "actor", "action", "status", "source", "tenant_id", "timestamp", "old", "count", "ok", "at",
     "class", "note", "event", "events", "colour"]
)  # fmt: skip
_datetimes = st.sampled_from(
    ["2024-06-11T08:15:12Z", "2024-06-11T08:15:12.345Z", "2024-06-11t08:15:12.5z", "2024-06-11 08:15:12.123456789Z",
     "2024-06-11T10:15:12+02:00", "2024-02-30T08:15:12Z", "2024-06-11T24:00:00Z", " 2024-06-11T08:15:12Z",
     "2024-06-11", "1718093712", "1718093712345"]
)  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.text(alphabet="ab", min_size=30, max_size=140),
    st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3),  # lone surrogates
    _datetimes,
)
_values = st.one_of(
    _scalars, st.lists(_scalars, max_size=2), st.dictionaries(st.text(max_size=3), _scalars, max_size=2)
)


def _fitting(f: SchemaFieldConfig) -> st.SearchStrategy[Any]:
    """Values that mostly fit the field as they are (the fast path's business), some that do not."""
    if f.type == "integer":
        return st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(), st.floats())
    if f.type == "boolean":
        return st.one_of(st.booleans(), st.sampled_from(["true", "False", 1]))
    if f.type == "datetime":
        return _datetimes
    size = f.size or 200
    at_the_limit = st.builds(
        lambda c, n: c * n, st.sampled_from(["x", "\u00e9", "\U0001f600"]), st.sampled_from([size, size + 1])
    )
    return st.one_of(st.text(max_size=min(size + 2, 200)), at_the_limit)


@st.composite
def _json_objects(draw: st.DrawFn, schema: Schema) -> bytes:
    """JSON text of an object, duplicate keys and escapes included (so not via a dict)."""
    fitting = st.sampled_from(schema.fields).flatmap(lambda f: st.tuples(st.just(f.id), _fitting(f)))
    anything = st.tuples(_keys, _values)
    members = draw(st.lists(st.one_of(fitting, fitting, fitting, anything), max_size=8))
    if draw(st.booleans()):
        members.insert(0, ("message", draw(st.text(max_size=10))))
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in members)
    obj = "{" + body + "}"
    wrap = draw(st.sampled_from(["bare", "event", "event+"]))
    if wrap == "event":
        obj = '{"event":' + obj + "}"
    elif wrap == "event+":
        obj = '{"event":' + obj + ',"x":1}'
    return obj.encode("utf-8", "surrogatepass")


@st.composite
def _cases(draw: st.DrawFn) -> tuple[Schema, bytes]:
    schema = draw(st.sampled_from(SCHEMAS))
    return schema, draw(_json_objects(schema))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases())
def test_fast_path_never_disagrees_with_the_full_path(case: tuple[Schema, bytes]) -> None:
    agree(*case)


def test_items_answers_each_value_in_its_place() -> None:
    values: list[bytes | None] = [b'{"event":{"message":"a"}}', None, b'{"message":7}', b"{", b'{"message":"b"}']
    items = STANDARD.fast_path().items(values)
    assert [orjson.loads(i)["event"] if i is not None else None for i in items] == [
        {"message": "a"}, None, None, None, {"message": "b"},
    ]  # fmt: skip


@st.composite
def _batches(draw: st.DrawFn) -> tuple[Schema, list[bytes | None]]:
    schema = draw(st.sampled_from(SCHEMAS))
    values = draw(st.lists(st.one_of(_json_objects(schema), st.none()), min_size=1, max_size=6))
    return schema, values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_batches())
def test_items_of_a_list_are_the_items_of_each_value(batch: tuple[Schema, list[bytes | None]]) -> None:
    schema, values = batch
    fast = schema.fast_path()
    singly = [None if v is None else agree(schema, v) for v in values]
    assert fast.items(values) == singly


def test_a_list_of_valid_values_with_one_bad_date_time_declines_only_that_one() -> None:
    values: list[bytes | None] = [
        b'{"event":{"message":"a","timestamp":"2024-06-11T08:15:12Z"}}',
        b'{"event":{"message":"b","timestamp":"not a date"}}',
        b'{"event":{"message":"c"}}',
    ]
    items = STANDARD.fast_path().items(values)
    assert items[1] is None
    assert [orjson.loads(i)["event"] for i in (items[0], items[2]) if i is not None] == [
        {"message": "a", "timestamp": "2024-06-11T08:15:12.000000Z"},
        {"message": "c"},
    ]


# -- mapped events (vendor routes, HEC): dicts through the compiled path -----------------------

_field_values = st.one_of(
    _scalars,
    st.just(float("nan")),
    st.just(float("inf")),
    st.integers(min_value=2**63, max_value=2**70),
    st.lists(_scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2),
)
_event_keys = st.one_of(_keys, st.sampled_from(["message", "message", "actor", "timestamp"]))


@st.composite
def _mapped(draw: st.DrawFn, schema: Schema) -> dict[Any, Any]:
    """An event dict as a mapper may build it: mostly fitting values, any others too."""
    fitting = st.sampled_from(schema.fields).flatmap(lambda f: st.tuples(st.just(f.id), _fitting(f)))
    members = draw(st.lists(st.one_of(fitting, fitting, st.tuples(_event_keys, _field_values)), max_size=6))
    out: dict[Any, Any] = dict(members)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        out[draw(st.sampled_from([1, "event", "events"]))] = "x"
    return out


def full_item(schema: Schema, fields: dict[str, Any]) -> bytes | None:
    try:
        return encode_item(schema.normalize(fields))
    except EventInvalid:
        return None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mapped_events_the_compiled_path_takes_get_the_full_paths_item(data: st.DataObject) -> None:
    """Admitter.prepare's compiled step (_compiled_items) against normalize + encode_item, per event."""
    from gateway.sources.intake import Candidate, _compiled_items

    schema = data.draw(st.sampled_from(SCHEMAS))
    events = data.draw(st.lists(_mapped(schema), min_size=1, max_size=5))
    cands = [Candidate(e, f"/{i}", e) for i, e in enumerate(events)]
    for fields, item in zip(events, _compiled_items(schema.fast_path(), cands), strict=True):
        if item is not None:
            slow = full_item(schema, fields)
            assert slow is not None, f"compiled path accepted what normalize refuses: {fields!r}"
            assert orjson.loads(item) == orjson.loads(slow), fields


def test_mapped_auth0_records_take_the_compiled_path_and_odd_values_leave_it() -> None:
    from gateway.normalize.vendors import auth0
    from gateway.sources.intake import Candidate, _compiled_items

    record = json.loads((FIXTURES / "auth0_batch1_jsonarray.json").read_text())[0]
    fields, _id = auth0.to_event(record)
    odd = [
        {"message": "m", "actor": float("nan")},  # a float: normalize decides
        {"message": "m", "actor": "a\ud800"},  # not encodable
        {"message": "m", 7: "x"},  # a key that is no string
        {"event": {"message": "m"}},  # never read as a wrapped item
    ]
    cands = [Candidate(f, "/0", f) for f in [fields, *odd]]
    cands.append(Candidate(fields, "/9", fields, extras={"signature": "s"}))  # signed: normalize_signed
    items = _compiled_items(STANDARD.fast_path(), cands)
    assert items[0] is not None and orjson.loads(items[0]) == orjson.loads(encode_item(STANDARD.normalize(fields)))
    assert items[1:] == [None] * (len(cands) - 1)


def test_a_batch_of_mapped_events_gets_each_events_full_path_item_in_order() -> None:
    """fields_items converts a batch in one call (issue 18): each item is its own event's, as
    normalize + encode_item give it, and one declined event leaves the others theirs."""
    from gateway.bench import auth0_body
    from gateway.normalize.vendors import auth0

    events = [auth0.to_event(r)[0] for r in orjson.loads(auth0_body(20, 5))]
    events[7]["message"] = "another"
    fast = STANDARD.fast_path()
    assert fast is not None
    expected = [orjson.loads(encode_item(STANDARD.normalize(e))) for e in events]
    assert [orjson.loads(i) for i in fast.fields_items(events) if i is not None] == expected
    declined = [*events[:3], {"message": "m", "actor": 1.5}, *events[3:6]]
    items = fast.fields_items(declined)
    assert items[3] is None
    assert [orjson.loads(i) for i in items if i is not None] == expected[:6]
